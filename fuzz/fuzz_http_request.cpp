// Fuzzes the status server's request head parser (ops::parse_request): any bytes a client sends.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

#include "fuzz/finding.hpp"
#include "ops/http_request.hpp"

using jq::fuzz::finding;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view head(reinterpret_cast<const char*>(data), size);
  jq::ops::HttpRequest req;
  int status = 0;
  try {
    status = jq::ops::parse_request(head, req);
  } catch (const std::exception& e) {
    finding("an exception escaped parse_request", e.what());
  }
  if (status != 0 && status != 400 && status != 405 && status != 411 && status != 413 &&
      status != 501) {
    finding("parse_request: a status it does not answer", std::to_string(status));
  }
  if (status == 0) {
    // What the handler sees: a GET, HEAD or POST of an origin-form path without its query,
    // headers of one line each, a body length within the bound.
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
      finding("method", req.method);
    }
    if (req.content_length > 65536) finding("content length", std::to_string(req.content_length));
    for (const auto* h :
         {&req.host, &req.origin, &req.cookie, &req.csrf_token, &req.content_type}) {
      if (h->find_first_of("\r\n") != std::string::npos) finding("a header spans lines", *h);
    }
    if (req.query.find_first_of("\r\n ") != std::string::npos) finding("query", req.query);
    (void)req.param("q");
    (void)req.cookie_value("jobqd_session");
    if (req.path.empty() || req.path[0] != '/') finding("path not origin-form", req.path);
    if (req.path.find_first_of("?\r\n ") != std::string::npos) finding("path", req.path);
    if (req.path.size() > size) finding("path longer than the input", req.path);
    if (req.authorization.find_first_of("\r\n") != std::string::npos) {
      finding("authorization spans lines", req.authorization);
    }
  }
  return 0;
}
