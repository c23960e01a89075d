// Parsing exec command templates, so that a bad placeholder is a config error at start.
#include "config/command.hpp"

namespace jq::config {

std::variant<ArgTemplate, std::string> parse_arg(std::string_view arg) {
  ArgTemplate out;
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) out.push_back({ArgPiece::Kind::literal, std::move(literal)});
    literal.clear();
  };
  for (std::size_t i = 0; i < arg.size(); ++i) {
    char c = arg[i];
    if (c == '}') {
      if (i + 1 < arg.size() && arg[i + 1] == '}') {
        literal += '}';
        ++i;
        continue;
      }
      return "unmatched '}' in '" + std::string(arg) + "' (write '}}' for a literal brace)";
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    if (i + 1 < arg.size() && arg[i + 1] == '{') {
      literal += '{';
      ++i;
      continue;
    }
    auto close = arg.find('}', i);
    if (close == std::string_view::npos) {
      return "unclosed '{' in '" + std::string(arg) + "' (write '{{' for a literal brace)";
    }
    std::string_view name = arg.substr(i + 1, close - i - 1);
    flush();
    if (name == "id") {
      out.push_back({ArgPiece::Kind::id, ""});
    } else if (name == "queue") {
      out.push_back({ArgPiece::Kind::queue, ""});
    } else if (name == "attempt") {
      out.push_back({ArgPiece::Kind::attempt, ""});
    } else if (name == "file") {
      out.push_back({ArgPiece::Kind::file, ""});
    } else if (name.rfind("payload.", 0) == 0 && name.size() > 8 &&
               name.find("..") == std::string_view::npos && name.back() != '.') {
      out.push_back({ArgPiece::Kind::payload, std::string(name.substr(8))});
    } else {
      return "unknown placeholder '{" + std::string(name) +
             "}' (use {id}, {queue}, {attempt}, {file} or {payload.<field>})";
    }
    i = close;
  }
  flush();
  return out;
}

}  // namespace jq::config
