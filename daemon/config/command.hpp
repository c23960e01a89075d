// The exec command template: `{id}`, `{queue}`, `{attempt}`, `{file}`, `{payload.<field>}` per arg.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace jq::config {

/// One argument of an exec command, split into literal text and placeholders. `{{` and `}}`
/// stand for literal braces. Substitution happens per argument and never through a shell: a
/// payload value becomes exactly one argument, whatever characters it holds.
struct ArgPiece {
  enum class Kind { literal, id, queue, attempt, file, payload } kind = Kind::literal;
  std::string text;  // the literal text, or the payload path ("user.name")
};
using ArgTemplate = std::vector<ArgPiece>;

/// Parses one argument; on a syntax error returns a message saying what is wrong.
std::variant<ArgTemplate, std::string> parse_arg(std::string_view arg);

}  // namespace jq::config
