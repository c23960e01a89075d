// Host names resolved off the loop (getaddrinfo blocks), for the Redis client and webhooks.
#pragma once

#include <string>

#include "async/task.hpp"

namespace jq::async {

/// True for an IPv4 or IPv6 address written as text.
bool is_ip_literal(const std::string& host);

/// The host's address as text: an IP literal as it is, a name through getaddrinfo on the thread
/// pool (IPv4 preferred: a server bound to 127.0.0.1 answers "localhost" there). Throws
/// std::runtime_error "cannot resolve NAME: reason".
Task<std::string> resolve_host(std::string host);

}  // namespace jq::async
