// What the daemon checks before it starts, shared with --check-config so the two never disagree.
#pragma once

#include <string>
#include <vector>

#include "config/config.hpp"

namespace jq::ops {

/// Every check jobqd makes on a parsed config before serving, beyond the schema: each handler
/// can be built (its program exists and is executable, its user, group and secret files are
/// there), the Redis URL parses, the embedded redis-server can be found, no source is one this
/// version cannot run. Returns one message per problem, each starting with `file:line:column:`
/// (or `file:`) like the parser's; empty when the daemon can start.
std::vector<std::string> preflight(const config::Config& cfg);

}  // namespace jq::ops
