// Fuzzes cron schedules (config::Cron): the input's first line is the zone, the rest the
// expression; an accepted one is asked for ticks around instants taken from the input.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <variant>

#include "config/cron.hpp"
#include "fuzz/finding.hpp"

using jq::config::Cron;
using jq::config::CronProblem;
using jq::fuzz::finding;

namespace {

bool printable(std::string_view s) {
  for (const char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void check_ticks(const Cron& c, std::int64_t from) {
  const std::int64_t next = c.next_after(from);
  if (next == Cron::kNever) return;
  if (next <= from) finding("next_after not after its instant", std::to_string(from));
  if (next % 1000 != 0) finding("a tick not on a whole second", std::to_string(next));
  const std::int64_t again = c.next_after(next);
  if (again <= next) finding("next_after(a tick) not after it", std::to_string(next));
  // Three days of ticks, at most 100: increasing, within (from, to], the first being next.
  const std::int64_t to = from > Cron::kNever - 259'200'000 ? Cron::kNever : from + 259'200'000;
  const auto ticks = c.ticks_between(from, to, 100);
  if (ticks.size() > 100) finding("ticks_between over its limit");
  if (next <= to && (ticks.empty() || ticks.front() != next)) {
    finding("ticks_between does not start at next_after", std::to_string(from));
  }
  for (std::size_t i = 0; i < ticks.size(); ++i) {
    if (ticks[i] <= from || ticks[i] > to || (i > 0 && ticks[i] <= ticks[i - 1])) {
      finding("ticks_between out of order or bounds", std::to_string(ticks[i]));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string_view zone = newline == std::string_view::npos ? "" : input.substr(0, newline);
  const std::string_view expr =
      newline == std::string_view::npos ? input : input.substr(newline + 1);
  std::variant<Cron, CronProblem> parsed = CronProblem{};
  try {
    parsed = Cron::parse(expr, zone);
  } catch (const std::exception& e) {
    finding("an exception escaped Cron::parse", e.what());
  }
  if (const auto* p = std::get_if<CronProblem>(&parsed)) {
    if (p->message.empty() || !printable(p->message)) finding("message", p->message);
    if (p->column > expr.size() + 1) finding("column past the end", p->message);
    if (p->column == 0 && jq::config::zone_problem(zone) != p->message) {
      finding("a zone problem zone_problem does not give", p->message);
    }
    return 0;
  }
  const Cron& c = std::get<Cron>(parsed);
  if (c.text() != expr || c.zone() != zone) finding("text or zone not as given");
  // Instants from the input's own bytes, and the ends of the range.
  std::int64_t from = 0;
  std::memcpy(&from, data, std::min(size, sizeof from));
  for (const std::int64_t t :
       {from, from / 1024, from % 4'102'444'800'000, std::int64_t{1'774'746'000'000},
        std::int64_t{0}, std::numeric_limits<std::int64_t>::min(), Cron::kNever - 1}) {
    check_ticks(c, t);
  }
  return 0;
}
