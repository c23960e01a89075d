// Text hygiene for what jobqd writes: valid UTF-8 everywhere, JSON nesting bounded.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

namespace jq::job {

/// The deepest nesting of arrays and objects a job (or any JSON jobqd reads) may have. Deeper
/// documents are refused before they are built: nlohmann's dump() recurses once per level, so a
/// 100,000-level payload would overflow the stack of whoever serialises it.
inline constexpr std::size_t kMaxJsonDepth = 128;

/// The byte offset of the first bracket that opens level `max + 1`, if `text` nests deeper than
/// `max`. Linear and allocation-free; brackets inside strings do not count. Not a validator:
/// text that is not JSON at all is left for the parser to describe.
std::optional<std::size_t> nesting_over(std::string_view text, std::size_t max = kMaxJsonDepth);

/// Parses JSON no deeper than `max`: the document, or an error that says what is wrong and at
/// which byte (valid UTF-8, whatever the input). Never throws.
std::variant<nlohmann::json, std::string> parse_json(std::string_view text,
                                                     std::size_t max = kMaxJsonDepth);

/// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_utf8(std::string_view s) noexcept;

/// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD.
/// Returns `s` itself (no copy) when it is valid already, which is nearly always.
std::string to_utf8(std::string s);

/// At most `n` bytes of `s`, cut on a character boundary, with "..." when something was cut.
std::string clip_utf8(std::string_view s, std::size_t n);

}  // namespace jq::job
