// Every: "at most once per period", for a log line that a retry loop would otherwise repeat.
#pragma once

#include "async/loop.hpp"

namespace jq::async {

/// `if (errors_.due()) spdlog::error(...)`: true the first time, then at most once per period.
class Every {
 public:
  explicit Every(Duration period) noexcept : period_(period) {}
  bool due() noexcept {
    const auto now = Clock::now();
    if (fired_ && now - last_ < period_) return false;
    fired_ = true;
    last_ = now;
    return true;
  }
  /// The next due() is true again (a new episode: its first occurrence is said at once).
  void reset() noexcept { fired_ = false; }

 private:
  Duration period_;
  Clock::time_point last_{};
  bool fired_ = false;
};

}  // namespace jq::async
