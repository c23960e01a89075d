// Measurements the protocol and the engine keep for /metrics: fixed-bucket histograms, and a
// queue's depths as Redis reports them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace jq::store {

/// Counts of observations at or below each bound (Prometheus' cumulative `le` buckets are
/// summed when written out), their sum and their count. Fixed size: observing never allocates.
template <std::size_t N>
class Histogram {
 public:
  explicit constexpr Histogram(const std::array<double, N>& bounds) : bounds_(bounds) {}
  void observe(double v) noexcept {
    std::size_t i = 0;
    while (i < N && v > bounds_[i]) ++i;
    ++counts_[i];  // counts_[N]: above every bound (+Inf)
    sum_ += v;
    ++count_;
  }
  const std::array<double, N>& bounds() const noexcept { return bounds_; }
  /// Observations in bucket i alone (i == N: above the last bound).
  std::uint64_t in_bucket(std::size_t i) const noexcept { return counts_[i]; }
  double sum() const noexcept { return sum_; }
  std::uint64_t count() const noexcept { return count_; }

 private:
  std::array<double, N> bounds_;
  std::array<std::uint64_t, N + 1> counts_{};
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

/// How long attempts ran, in seconds: from a few milliseconds to the longest timeouts.
using DurationHistogram = Histogram<14>;
inline DurationHistogram duration_histogram() {
  return DurationHistogram({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300});
}

/// Jobs a fetch took (up to fetch_batch).
using BatchHistogram = Histogram<10>;
inline BatchHistogram batch_histogram() {
  return BatchHistogram({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000});
}

/// A queue's jobs in Redis (scripts::depths); -1 where the key holds something else.
struct Depths {
  long long pending = 0;
  long long delayed = 0;
  long long dead = 0;
  /// With a rate: the tokens its bucket(s) hold now (-1: garbage at the bucket).
  std::optional<long long> tokens;
};

}  // namespace jq::store
