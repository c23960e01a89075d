// An HTTP/1.1 request as the status server reads it: the request line, the few headers it acts
// on, and a bounded body. Separate from the server (no loop, no sockets) so that it can be fuzzed
// alone.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace jq::ops {

struct HttpRequest {
  std::string method;  // GET, HEAD or POST (others are answered 405 before the handler)
  std::string path;    // without the query, as sent (percent escapes kept: split, then decode)
  std::string query;   // after '?', as sent
  // Headers, each given at most once (a second one of these is a 400), "" when absent.
  std::string authorization, host, origin, cookie, csrf_token, content_type;
  std::size_t content_length = 0;
  std::string body;  // content_length bytes, read by the server after the head

  /// Query parameter `name`, decoded (`+` as a space), or nullopt when absent or not decodable.
  std::optional<std::string> param(std::string_view name) const;
  /// Whether the query names parameter `name` at all (decodable or not).
  bool has_param(std::string_view name) const;
  /// The value of cookie `name` in the Cookie header, or "".
  std::string cookie_value(std::string_view name) const;
};

/// Parses a request head: `METHOD PATH HTTP/1.x` and header lines, each ending in CRLF. Returns
/// 0 with `out` filled (but its body), or the status to answer instead: 400 (not a request
/// line, a path that is not origin-form, a malformed or repeated header, a Content-Length that
/// is not a number), 405 (not GET, HEAD or POST), 411 (a POST without Content-Length), 413 (a
/// body over `max_body`), 501 (a Transfer-Encoding: bodies come with a length only).
int parse_request(std::string_view head, HttpRequest& out, std::size_t max_body = 65536);

/// `%XX` escapes decoded (and `+` as a space when `plus_is_space`); nullopt for a bad escape or
/// a decoded NUL byte.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = false);

}  // namespace jq::ops
