// UTF-8 validation and repair, and the JSON nesting scan that runs before any parse.
#include "job/text.hpp"

namespace jq::job {
namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0 if the bytes there are not one.
std::size_t sequence_at(std::string_view s, std::size_t i) noexcept {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  const std::size_t left = s.size() - i;
  auto cont = [&](std::size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(1) > 0x9F) return 0;  // a surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

std::optional<std::size_t> nesting_over(std::string_view text, std::size_t max) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // whatever is escaped cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max) return i;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return std::nullopt;
}

std::variant<nlohmann::json, std::string> parse_json(std::string_view text, std::size_t max) {
  if (auto at = nesting_over(text, max)) {
    return "nested deeper than " + std::to_string(max) + " levels (at byte " + std::to_string(*at) +
           " of " + std::to_string(text.size()) + ")";
  }
  // No JSON text holds a raw NUL (inside strings it must be escaped), and nlohmann would stop
  // reading at one and ignore the rest: a job whose id or payload sits past it would change on
  // every parse (fuzz/regress/job/id_after_nul.json).
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    return "not JSON: a NUL byte (at byte " + std::to_string(nul) + " of " +
           std::to_string(text.size()) + ")";
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is where the parser stopped; what() carries nlohmann's explanation, which quotes
    // the bytes it last read: those may be anything, so they are repaired before going on.
    std::string why = e.what();
    if (auto p = why.find("syntax error"); p != std::string::npos) why = why.substr(p);
    // e.byte counts from 1; text that ends too early puts it one past the last byte.
    const std::string where =
        e.byte <= text.size()
            ? "at byte " + std::to_string(e.byte) + " of " + std::to_string(text.size())
            : (text.empty() ? "the text is empty"
                            : "at the end, after byte " + std::to_string(text.size()));
    return "not JSON: " + to_utf8(clip_utf8(why, 300)) + " (" + where + ")";
  } catch (const nlohmann::json::exception& e) {
    // Not a syntax error but as fatal: a number too large for any type (1e400).
    std::string why = e.what();
    if (auto p = why.find("] "); p != std::string::npos) why = why.substr(p + 2);
    return "not usable JSON: " + to_utf8(clip_utf8(why, 300));
  }
}

bool is_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_at(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string to_utf8(std::string s) {
  if (is_utf8(s)) return s;
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(s.size() + 16);
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_at(s, i);
    if (n == 0) {
      out.append(kReplacement);
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

std::string clip_utf8(std::string_view s, std::size_t n) {
  if (s.size() <= n) return std::string(s);
  std::size_t cut = n;
  // Back up over continuation bytes so that no character is split.
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return std::string(s.substr(0, cut)) + "...";
}

}  // namespace jq::job
