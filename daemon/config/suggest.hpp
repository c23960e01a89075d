// "Did you mean": the known word closest to a mistyped one, for config keys and command lines.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace jq::config {

/// Levenshtein distance between two words.
std::size_t distance(std::string_view a, std::string_view b);

/// The word of `known` closest to `word`, if it is close enough to be what was meant (at most a
/// third of the word's letters off); "" otherwise.
std::string closest(std::string_view word, const std::vector<std::string>& known);

}  // namespace jq::config
