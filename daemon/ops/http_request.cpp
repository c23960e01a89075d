// The status server's request head: the request line, the headers it acts on, the body's length.
#include "ops/http_request.hpp"

#include <cctype>
#include <charconv>

namespace jq::ops {
namespace {

bool token_char(unsigned char ch) {
  return std::isalnum(ch) ||
         std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(ch)) != std::string_view::npos;
}

int hex(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// The parameter `name`'s raw value in a query, or nullopt.
std::optional<std::string_view> raw_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char ch = s[i];
    if (ch == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      ch = static_cast<char>(hi * 16 + lo);
      if (ch == '\0') return std::nullopt;
      i += 2;
    } else if (ch == '+' && plus_is_space) {
      ch = ' ';
    }
    out += ch;
  }
  return out;
}

std::optional<std::string> HttpRequest::param(std::string_view name) const {
  auto raw = raw_param(query, name);
  if (!raw) return std::nullopt;
  return percent_decode(*raw, true);
}

bool HttpRequest::has_param(std::string_view name) const {
  return raw_param(query, name).has_value();
}

std::string HttpRequest::cookie_value(std::string_view name) const {
  std::string_view rest = cookie;
  while (!rest.empty()) {
    const auto semi = rest.find(';');
    std::string_view pair = rest.substr(0, semi);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      return std::string(pair.substr(eq + 1));
    }
    if (semi == std::string_view::npos) break;
    rest.remove_prefix(semi + 1);
  }
  return "";
}

int parse_request(std::string_view head, HttpRequest& out, std::size_t max_body) {
  const auto line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    return 400;
  }
  out.method = std::string(line.substr(0, sp1));
  out.path = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  if (out.path.empty() || out.path[0] != '/') return 400;  // origin-form only
  // No control bytes (a bare CR or LF would end up in a 404's text), no DEL.
  for (unsigned char ch : out.path) {
    if (ch < 0x21 || ch == 0x7f) return 400;
  }
  for (unsigned char ch : out.method) {
    if (ch < 'A' || ch > 'Z') return 400;
  }
  if (auto q = out.path.find('?'); q != std::string::npos) {
    out.query = out.path.substr(q + 1);
    out.path.resize(q);
  }
  if (out.method != "GET" && out.method != "HEAD" && out.method != "POST") return 405;
  // The headers: every line `name: value`, the name a token (no folded lines, no space before
  // the colon: a proxy may read those otherwise). The ones acted on may come once each.
  struct Wanted {
    std::string_view name;
    std::string* into;
    bool seen = false;
  };
  std::string content_length, transfer_encoding;
  Wanted wanted[] = {{"authorization", &out.authorization},
                     {"host", &out.host},
                     {"origin", &out.origin},
                     {"cookie", &out.cookie},
                     {"x-csrf-token", &out.csrf_token},
                     {"content-type", &out.content_type},
                     {"content-length", &content_length},
                     {"transfer-encoding", &transfer_encoding}};
  std::size_t at = line_end;
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view h =
        head.substr(start, end == std::string_view::npos ? end : end - start);
    at = end;
    for (unsigned char ch : h) {
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 400;  // a bare CR or LF, a NUL
    }
    const auto colon = h.find(':');
    if (colon == 0 || colon == std::string_view::npos) return 400;
    std::string name;
    for (std::size_t i = 0; i < colon; ++i) {
      const auto ch = static_cast<unsigned char>(h[i]);
      if (!token_char(ch)) return 400;
      name += static_cast<char>(std::tolower(ch));
    }
    std::size_t v = colon + 1, e = h.size();
    while (v < e && (h[v] == ' ' || h[v] == '\t')) ++v;
    while (e > v && (h[e - 1] == ' ' || h[e - 1] == '\t')) --e;
    for (auto& w : wanted) {
      if (w.name != name) continue;
      if (w.seen) return 400;
      w.seen = true;
      *w.into = std::string(h.substr(v, e - v));
    }
  }
  if (!transfer_encoding.empty()) return 501;
  if (!content_length.empty()) {
    std::size_t n = 0;
    const auto* first = content_length.data();
    const auto* last = first + content_length.size();
    auto [p, ec] = std::from_chars(first, last, n);
    if (ec != std::errc() || p != last) return 400;
    if (n > max_body) return 413;
    out.content_length = n;
  } else if (out.method == "POST") {
    return 411;
  }
  return 0;
}

}  // namespace jq::ops
