// UTF-8 validation and repair, and the JSON nesting scan that runs before any parse.
#include "job/text.hpp"

#include <vector>

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

namespace {

using nlohmann::json;

// nlohmann's SAX events built into a document as its own DOM parser does, with one rule more: a
// key given twice in one object is an error (nlohmann would keep the last, and another reader of
// the same text, the first). Where it is wrong is said as a path: `payload.items[2]`.
class StrictBuilder final : public nlohmann::json_sax<json> {
 public:
  json root;
  std::string error;  // set when the text is refused
  std::size_t at = 0;
  bool syntax = true;  // the error is a syntax error (else: JSON nlohmann cannot hold)

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(json(v)); }
  bool string(string_t& v) override { return put(json(std::move(v))); }
  bool binary(binary_t& v) override { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    Level& top = levels_.back();
    if (top.value->contains(k)) {
      error = "a key given twice: \"" + clip_utf8(k, 40) + "\" in " + path() +
              " (readers disagree on which one counts)";
      return false;
    }
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    at = position;
    syntax = ex.id >= 100 && ex.id < 200;
    error = ex.what();
    return false;
  }

 private:
  struct Level {
    json* value;
    std::string name;  // how its parent names it: `.key` or `[i]`
  };

  std::string path() const {
    std::string p;
    for (std::size_t i = 1; i < levels_.size(); ++i) p += levels_[i].name;
    if (p.empty()) return "the top-level object";
    return p[0] == '.' ? p.substr(1) : p;
  }
  // Places a value where the parser is: the root, the next element, or under the last key.
  json* place(json&& v, std::string& name) {
    if (levels_.empty()) {
      root = std::move(v);
      return &root;
    }
    json* top = levels_.back().value;
    if (top->is_array()) {
      name = "[" + std::to_string(top->size()) + "]";
      top->push_back(std::move(v));
      return &top->back();
    }
    name = "." + key_;
    auto [it, added] = top->emplace(std::move(key_), std::move(v));
    return &it.value();
  }
  bool put(json&& v) {
    std::string name;
    place(std::move(v), name);
    return true;
  }
  bool open(json&& v) {
    std::string name;
    json* at_ = place(std::move(v), name);
    levels_.push_back({at_, std::move(name)});
    return true;
  }
  bool close() {
    levels_.pop_back();
    return true;
  }

  std::vector<Level> levels_;
  std::string key_;
};

}  // namespace

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
  StrictBuilder b;
  if (json::sax_parse(text, &b)) return std::move(b.root);
  if (b.error.rfind("a key given twice", 0) == 0) return "not usable JSON: " + b.error;
  // nlohmann's explanation quotes the bytes it last read: those may be anything, so they are
  // repaired before going on.
  std::string why = b.error;
  if (!b.syntax) {
    // Not a syntax error but as fatal: a number too large for any type (1e400).
    if (auto p = why.find("] "); p != std::string::npos) why = why.substr(p + 2);
    return "not usable JSON: " + to_utf8(clip_utf8(why, 300));
  }
  if (auto p = why.find("syntax error"); p != std::string::npos) why = why.substr(p);
  // Text that ends too early puts the position one past the last byte.
  const std::string where =
      b.at <= text.size()
          ? "at byte " + std::to_string(b.at) + " of " + std::to_string(text.size())
          : (text.empty() ? "the text is empty"
                          : "at the end, after byte " + std::to_string(text.size()));
  return "not JSON: " + to_utf8(clip_utf8(why, 300)) + " (" + where + ")";
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
