// Built-in handlers for tests, demos and benchmarks: noop, echo, sleep, fail.
#pragma once

#include <memory>
#include <string>

#include "handlers/handler.hpp"

namespace jq::handlers {

/// noop: succeeds at once. echo: the result is the payload. sleep: waits payload.ms (or a bare
/// number payload) milliseconds. fail: throws (payload.message, if any, is the message).
std::unique_ptr<Handler> make_builtin(const std::string& name);

}  // namespace jq::handlers
