// Logging setup: spdlog to stderr, with journald priorities when stderr is the journal.
#pragma once

#include <string>

namespace jq::ops {

/// Routes the default spdlog logger to stderr. Under systemd (stderr connected to the journal,
/// per $JOURNAL_STREAM) each line starts with its syslog priority (`<6>`) and no timestamp, the
/// journal adds its own; elsewhere lines read `2026-11-21T10:00:00.123+00:00 info message`.
/// `level`: trace, debug, info, warn or error. `json`: one JSON object a line instead,
/// `{"time": "...", "level": "info", "msg": "..."}` (under the journal too, after the priority).
void setup_logging(const std::string& level, bool json = false);

}  // namespace jq::ops
