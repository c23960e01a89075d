// Queue rows for every view: the quantiles of the last minute's run times, and the row itself.
#include "store/views.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <vector>

namespace jq::store {
namespace {

// The run time below which a share `q` of the last minute's attempts ended (a bucket's upper
// bound; infinity past the last), or nullopt when there were none.
std::optional<double> quantile(const std::vector<double>& le, const std::vector<std::uint64_t>& n,
                               double q) {
  std::uint64_t total = 0;
  for (auto v : n) total += v;
  if (total == 0) return std::nullopt;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < n.size(); ++i) {
    seen += n[i];
    if (static_cast<double>(seen) >= q * static_cast<double>(total)) {
      return i < le.size() ? le[i] : std::numeric_limits<double>::infinity();
    }
  }
  return std::nullopt;
}

std::string seconds_text(std::optional<double> s) {
  if (!s) return "-";
  if (std::isinf(*s)) return ">5m";
  char buf[32];
  if (*s < 1) {
    std::snprintf(buf, sizeof buf, "<%gms", *s * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "<%gs", *s);
  }
  return buf;
}

}  // namespace

void add_depths(Depths& sum, const Depths& part) {
  auto add = [](long long& s, long long p) { s = s < 0 || p < 0 ? -1 : s + p; };
  add(sum.pending, part.pending);
  add(sum.delayed, part.delayed);
  add(sum.dead, part.dead);
}

nlohmann::json queue_row(const QueueView& v) {
  const Activity& a = v.activity;
  const auto p50 = quantile(a.le, a.counts, 0.5), p99 = quantile(a.le, a.counts, 0.99);
  auto num = [](std::optional<double> x) {
    return x && !std::isinf(*x) ? nlohmann::json(*x) : nlohmann::json();
  };
  return {{"name", v.name},
          {"pending", v.depths.pending},
          {"delayed", v.depths.delayed},
          {"running", a.running},
          {"buffered", a.buffered},
          {"dead", v.depths.dead},
          {"paused", v.paused},
          {"shards", v.shards},
          {"daemons", a.daemons},
          {"succeeded_per_min", a.succeeded_1m},
          {"failed_per_min", a.failed_1m},
          {"retried_per_min", a.retried_1m},
          {"p50_s", num(p50)},
          {"p99_s", num(p99)},
          {"p50", seconds_text(p50)},
          {"p99", seconds_text(p99)}};
}

}  // namespace jq::store
