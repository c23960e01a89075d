// The status server's request head: the request line and the Authorization header.
#include "ops/http_request.hpp"

#include <cctype>

namespace jq::ops {
namespace {

// The value of header `name` (lower case) in a request head, or "".
std::string header(std::string_view head, const std::string& name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string line(head.substr(start, end == std::string_view::npos ? end : end - start));
    const auto colon = line.find(':');
    if (colon == name.size()) {
      bool same = true;
      for (std::size_t i = 0; i < colon && same; ++i) {
        same = std::tolower(static_cast<unsigned char>(line[i])) == name[i];
      }
      if (same) {
        std::size_t v = colon + 1;
        while (v < line.size() && (line[v] == ' ' || line[v] == '\t')) ++v;
        std::size_t e = line.size();
        while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t')) --e;
        return line.substr(v, e - v);
      }
    }
    at = end;
  }
  return "";
}

}  // namespace

int parse_request(std::string_view head, HttpRequest& out) {
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
  if (auto q = out.path.find('?'); q != std::string::npos) out.path.resize(q);
  if (out.method != "GET" && out.method != "HEAD") return 405;
  out.authorization = header(head, "authorization");
  return 0;
}

}  // namespace jq::ops
