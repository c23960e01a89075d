// The http handler: POSTs each job's payload (or the whole job) to a configured URL.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "handlers/handler.hpp"

namespace jq::handlers {

/// libevent's HTTP client, over OpenSSL bufferevents for https (certificates verified unless
/// verify_tls is off; the system CAs or ca_file). A bounded pool of keep-alive connections.
/// 2xx succeeds with the head of the body as the result; 429, 5xx and connection failures are
/// retried (honouring Retry-After); any other status fails at once. Errors name the status, the
/// URL and the start of the body. Headers may come from the environment or a file (secrets stay
/// out of the config). Throws std::runtime_error at construction when a secret is missing or the
/// CA file cannot be read. Its pooled connections belong to the running loop's event_base: build
/// it on the loop, and destroy it before the loop.
std::unique_ptr<Handler> make_http(const config::HandlerConfig& cfg);

/// A Retry-After header's wait: delta-seconds, or an HTTP date in any of RFC 9110's three forms
/// (0 when past); either capped at ten years. nullopt when absent or unreadable.
std::optional<std::chrono::milliseconds> parse_retry_after(const char* value);

}  // namespace jq::handlers
