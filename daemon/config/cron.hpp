// Cron expressions and time zones for periodic jobs: when a schedule's next tick is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace date {
class time_zone;
}

namespace jq::config {

/// Why an expression or a zone was refused. `column` is the 1-based byte offset in the
/// expression text of what is wrong (one past its end when a field is missing); 0 when the
/// problem is the zone, not the expression. `message` names the field ("minute: 61 is out of
/// range 0-59"); any byte of the input it quotes that is not printable ASCII is written \xNN.
struct CronProblem {
  std::size_t column = 0;
  std::string message;
};

/// A parsed schedule: a cron expression in a time zone, or a fixed period.
///
/// Expressions:
/// - Five fields "minute hour day-of-month month day-of-week" separated by spaces or tabs:
///   minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT
///   (0 and 7 are Sunday). Names are three letters in any case, and may be range ends (SUN
///   ending a range is 7: FRI-SUN is 5-7).
/// - Each field is a list `a,b,...` of `*`, `a`, `a-b` (not backwards), each optionally with a
///   step `/n`: `*/n` from the field's minimum, `a-b/n`, `a/n` (a to the field's maximum). A step
///   is 1 up to the field's span (59 for minutes, 7 for days of week...): a larger one would
///   select only its start, a likely mistake.
/// - Day of month and day of week (Vixie cron's rule, as cronie has it): when both are
///   restricted, a day matches if either does; when either is unrestricted, both must match.
///   A field is unrestricted when its text starts with `*`, so `*/2` counts as unrestricted
///   ("0 0 */2 * MON" is the odd-numbered days that are Mondays), as in Vixie cron and cronie.
/// - An expression that can never match ("0 0 30 2 *") is refused.
/// - Macros (any case): @yearly and @annually "0 0 1 1 *", @monthly "0 0 1 * *", @weekly
///   "0 0 * * 0", @daily and @midnight "0 0 * * *", @hourly "0 * * * *".
/// - "@every DURATION" (config::parse_duration: "30s", "5m", "1h", "1d"): at least 1s, whole
///   seconds. Its ticks are the whole multiples of the period since the unix epoch, in UTC and
///   whatever the zone, so that every daemon computes the same ticks without asking the others.
///
/// Times: field expressions match the zone's local wall time at second 0, mapped to real
/// instants thus:
/// - A local time that does not exist (the hour a clock skips going forward: 02:00-03:00 in
///   Europe/Berlin on 2026-03-29) fires once at the first instant after the gap (03:00 CEST). All
///   ticks in one gap collapse into that instant, which is one tick even if a real local time
///   (03:00) falls on it too.
/// - A local time that happens twice (the hour a clock repeats going back: 02:00-03:00 in
///   Europe/Berlin on 2026-10-25): when the hour field matches every hour (`*`, `*/1`, `0-23`)
///   the expression follows real time and fires in both occurrences; otherwise (a fixed hour:
///   "30 2 * * *") only in the first.
/// - The zone data is the machine's (/usr/share/zoneinfo, Debian's tzdata) as read by
///   libdate-tz, which takes each file's list of transitions and not its footer rule: Debian's
///   files list them up to 2037, so later instants keep the offset of the last one (no DST
///   changes after 2037: Europe/Berlin stays on CET from October 2037).
/// - Instants are unix milliseconds. For field expressions those before 1900-01-01Z count as
///   just before it (zones' early history is local mean time). No tick comes after
///   9999-12-31T23:59:59.999Z: next_after says kNever.
///
/// A Cron is immutable: every method is const, pure and safe to call from any number of threads.
/// Its zone is looked up and read once, by parse; next_after jumps field by field (no loop over
/// minutes) and allocates nothing.
class Cron {
 public:
  /// What next_after says when no tick comes before the year 10000.
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

  /// `zone`: an IANA name ("Europe/Berlin") from this machine's time zone database; "" or "UTC"
  /// is UTC (without the database). The zone is part of the schedule even for @every, which
  /// ignores it.
  static std::variant<Cron, CronProblem> parse(std::string_view expr, std::string_view zone);

  /// The first tick strictly after `unix_ms`.
  std::int64_t next_after(std::int64_t unix_ms) const;

  /// The ticks in (from_ms, to_ms], oldest first, at most `limit` of them (a catch-up).
  std::vector<std::int64_t> ticks_between(std::int64_t from_ms, std::int64_t to_ms,
                                          std::size_t limit) const;

  const std::string& text() const { return text_; }
  const std::string& zone() const { return zone_; }

 private:
  Cron() = default;
  // The first wall-clock minute in [from, until) that the fields match, in seconds on the wall
  // clock (as if it were UTC); a value far past the year 9999 if none.
  std::int64_t next_local(std::int64_t from, std::int64_t until) const;
  // The first tick at or after the second `after` (unix seconds) in the zone; same if none.
  std::int64_t next_in_zone(std::int64_t after) const;

  std::string text_;
  std::string zone_;
  const date::time_zone* tz_ = nullptr;  // null: UTC
  std::int64_t every_ms_ = 0;            // >0: "@every"
  std::uint64_t minutes_ = 0;            // bit n: minute n
  std::uint32_t hours_ = 0;              // bit n: hour n
  std::uint32_t days_ = 0;               // bit n: day of month n (1-31)
  std::uint32_t months_ = 0;             // bit n: month n (1-12)
  std::uint32_t weekdays_ = 0;           // bit n: day of week n (0-6, Sunday 0)
  bool days_star_ = false;               // the day-of-month field starts with `*`
  bool weekdays_star_ = false;           // the day-of-week field starts with `*`
};

/// "" when `zone` names a time zone ("" and "UTC" always do); otherwise what is wrong, for the
/// config layer to put after the key: "unknown time zone 'Europe/Berln' (did you mean
/// 'Europe/Berlin'?)". "localtime" is refused: it is whatever the machine is set to.
std::string zone_problem(std::string_view zone);

}  // namespace jq::config
