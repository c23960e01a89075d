// systemd integration: sd_notify state changes and watchdog pings from the loop.
#pragma once

#include <string>

#include "async/async.hpp"

namespace jq::ops {

/// sd_notify(3); a no-op when not started by systemd with Type=notify.
void notify(const std::string& state);

/// While the loop runs, pings the systemd watchdog at half its interval (if WatchdogSec is set).
/// A loop stalled for longer stops the pings, and systemd restarts the daemon. Runs until
/// cancelled.
async::Task<void> watchdog();

}  // namespace jq::ops
