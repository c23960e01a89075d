// sd_notify via libsystemd: READY, STOPPING, RELOADING, STATUS and WATCHDOG pings.
#include "ops/systemd.hpp"

#include <systemd/sd-daemon.h>

namespace jq::ops {

void notify(const std::string& state) {
  sd_notify(0, state.c_str());
}

async::Task<void> watchdog() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) co_return;
  const auto every = std::chrono::microseconds(usec / 2);
  for (;;) {
    sd_notify(0, "WATCHDOG=1");
    co_await async::sleep(every);
  }
}

}  // namespace jq::ops
