// Cron expressions and time zones: what each field means, DST gaps and overlaps, errors, limits.
//
// Every instant below is a literal in unix milliseconds followed by the wall time it is, e.g.
// `1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */`, computed with GNU date and not with the
// code under test: `TZ=Europe/Berlin date -d '2026-03-29 03:00' +%s`. Where a wall time happens
// twice (a DST overlap) the comment gives the UTC offset instead, `/* 2026-10-25 02:00 +0100 */`:
// `date -d '2026-10-25 02:00 +0100' +%s`. @every's ticks are arithmetic, written out as such.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "config/cron.hpp"

using namespace jq::config;

namespace {

Cron cron(std::string_view expr, std::string_view zone = "") {
  auto parsed = Cron::parse(expr, zone);
  if (auto* p = std::get_if<CronProblem>(&parsed)) {
    FAIL("'" << expr << "' in '" << zone << "' refused at column " << p->column << ": "
             << p->message);
  }
  return std::get<Cron>(std::move(parsed));
}

CronProblem problem_of(std::string_view expr, std::string_view zone = "") {
  auto parsed = Cron::parse(expr, zone);
  if (!std::holds_alternative<CronProblem>(parsed)) FAIL("'" << expr << "' was accepted");
  return std::get<CronProblem>(parsed);
}

// The next `n` ticks after `from`, each from the one before.
std::vector<std::int64_t> next(const Cron& c, std::int64_t from, std::size_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t t = from; out.size() < n;) out.push_back(t = c.next_after(t));
  return out;
}

using Ticks = std::vector<std::int64_t>;

}  // namespace

TEST_CASE("cron: lists, ranges and steps, matched at second 0 (UTC)", "[cron]") {
  const std::int64_t jan1 = 1767225600'000 /* 2026-01-01 00:00 UTC */;
  CHECK(next(cron("*/15 * * * *"), jan1, 2) == Ticks{
                                                   1767226500'000 /* 2026-01-01 00:15 UTC */,
                                                   1767227400'000 /* 2026-01-01 00:30 UTC */,
                                               });
  CHECK(next(cron("5,10-20/5 * * * *"), jan1, 5) == Ticks{
                                                        1767225900'000 /* 2026-01-01 00:05 UTC */,
                                                        1767226200'000 /* 2026-01-01 00:10 UTC */,
                                                        1767226500'000 /* 2026-01-01 00:15 UTC */,
                                                        1767226800'000 /* 2026-01-01 00:20 UTC */,
                                                        1767229500'000 /* 2026-01-01 01:05 UTC */,
                                                    });
  // a/n: from a to the field's maximum.
  CHECK(next(cron("50/4 * * * *"), jan1, 4) == Ticks{
                                                   1767228600'000 /* 2026-01-01 00:50 UTC */,
                                                   1767228840'000 /* 2026-01-01 00:54 UTC */,
                                                   1767229080'000 /* 2026-01-01 00:58 UTC */,
                                                   1767232200'000 /* 2026-01-01 01:50 UTC */,
                                               });
  CHECK(next(cron("0 9-17/4 * * *"), jan1, 4) == Ticks{
                                                     1767258000'000 /* 2026-01-01 09:00 UTC */,
                                                     1767272400'000 /* 2026-01-01 13:00 UTC */,
                                                     1767286800'000 /* 2026-01-01 17:00 UTC */,
                                                     1767344400'000 /* 2026-01-02 09:00 UTC */,
                                                 });
  // Blanks: any run of spaces and tabs, before, between and after.
  CHECK(cron(" \t0  9-17/4\t* *   *  ").next_after(jan1) ==
        1767258000'000 /* 2026-01-01 09:00 UTC */);
}

TEST_CASE("cron: names in any case; day of week 0 and 7 are Sunday", "[cron]") {
  const std::int64_t thursday = 1767225600'000 /* 2026-01-01 00:00 UTC */;
  for (const char* sunday : {"0 0 * * 7", "0 0 * * 0", "0 0 * * SUN", "0 0 * * sun", "@weekly"}) {
    INFO(sunday);
    CHECK(next(cron(sunday), thursday, 2) == Ticks{
                                                 1767484800'000 /* 2026-01-04 00:00 UTC */,
                                                 1768089600'000 /* 2026-01-11 00:00 UTC */,
                                             });
  }
  // SUN ending a range is 7.
  for (const char* weekend : {"0 0 * * FRI-SUN", "0 0 * * 5-7", "0 0 * * fri,Sat,0"}) {
    INFO(weekend);
    CHECK(next(cron(weekend), thursday, 4) == Ticks{
                                                  1767312000'000 /* 2026-01-02 00:00 UTC */,
                                                  1767398400'000 /* 2026-01-03 00:00 UTC */,
                                                  1767484800'000 /* 2026-01-04 00:00 UTC */,
                                                  1767916800'000 /* 2026-01-09 00:00 UTC */,
                                              });
  }
  // January and March (a step over names), Monday to Friday: February is skipped.
  CHECK(cron("0 12 * jan-Mar/2 Mon-fri").next_after(1769774400'000 /* 2026-01-30 12:00 UTC */) ==
        1772452800'000 /* 2026-03-02 12:00 UTC */);
}

TEST_CASE("cron: day of month or day of week when both are restricted (Vixie cron's rule)",
          "[cron]") {
  const std::int64_t thursday = 1767225600'000 /* 2026-01-01 00:00 UTC */;
  // The 13th, or a Friday.
  CHECK(next(cron("0 0 13 * FRI"), thursday, 4) == Ticks{
                                                       1767312000'000 /* 2026-01-02 00:00 UTC */,
                                                       1767916800'000 /* 2026-01-09 00:00 UTC */,
                                                       1768262400'000 /* 2026-01-13 00:00 UTC */,
                                                       1768521600'000 /* 2026-01-16 00:00 UTC */,
                                                   });
  // Either one unrestricted: the other alone decides.
  CHECK(next(cron("0 0 13 * *"), thursday, 2) == Ticks{
                                                     1768262400'000 /* 2026-01-13 00:00 UTC */,
                                                     1770940800'000 /* 2026-02-13 00:00 UTC */,
                                                 });
  CHECK(next(cron("0 0 * * FRI"), thursday, 2) == Ticks{
                                                      1767312000'000 /* 2026-01-02 00:00 UTC */,
                                                      1767916800'000 /* 2026-01-09 00:00 UTC */,
                                                  });
  // `*/2` starts with `*`: unrestricted for this rule, so both must match: odd days that are
  // Mondays (as in Vixie cron and cronie).
  CHECK(next(cron("0 0 */2 * MON"), thursday, 5) == Ticks{
                                                        1767571200'000 /* 2026-01-05 00:00 UTC */,
                                                        1768780800'000 /* 2026-01-19 00:00 UTC */,
                                                        1770595200'000 /* 2026-02-09 00:00 UTC */,
                                                        1771804800'000 /* 2026-02-23 00:00 UTC */,
                                                        1773014400'000 /* 2026-03-09 00:00 UTC */,
                                                    });
  // February has no 30th, but Mondays: accepted, and the Mondays fire.
  CHECK(next(cron("0 0 30 2 MON"), thursday, 2) == Ticks{
                                                       1769990400'000 /* 2026-02-02 00:00 UTC */,
                                                       1770595200'000 /* 2026-02-09 00:00 UTC */,
                                                   });
}

TEST_CASE("cron: month ends and the leap day", "[cron]") {
  CHECK(next(cron("0 0 31 * *"), 1769817600'000 /* 2026-01-31 00:00 UTC */, 4) ==
        Ticks{
            1774915200'000 /* 2026-03-31 00:00 UTC */,
            1780185600'000 /* 2026-05-31 00:00 UTC */,
            1785456000'000 /* 2026-07-31 00:00 UTC */,
            1788134400'000 /* 2026-08-31 00:00 UTC */,
        });
  CHECK(cron("59 23 30 * *").next_after(1769817540'000 /* 2026-01-30 23:59 UTC */) ==
        1774915140'000 /* 2026-03-30 23:59 UTC */);
  CHECK(next(cron("0 0 29 2 *"), 1767225600'000 /* 2026-01-01 00:00 UTC */, 2) ==
        Ticks{
            1835395200'000 /* 2028-02-29 00:00 UTC */,
            1961625600'000 /* 2032-02-29 00:00 UTC */,
        });
  // 2100 is no leap year.
  CHECK(cron("0 0 29 2 *").next_after(4007836800'000 /* 2097-01-01 00:00 UTC */) ==
        4233686400'000 /* 2104-02-29 00:00 UTC */);
  // The last day of February, leap year or not, is "28,29" only where 29 exists.
  CHECK(next(cron("0 0 28,29 2 *"), 1803859200'000 /* 2027-03-01 00:00 UTC */, 3) ==
        Ticks{
            1835308800'000 /* 2028-02-28 00:00 UTC */,
            1835395200'000 /* 2028-02-29 00:00 UTC */,
            1866931200'000 /* 2029-02-28 00:00 UTC */,
        });
}

TEST_CASE("cron: the macros", "[cron]") {
  const std::int64_t from = 1772625600'000 /* 2026-03-04 12:00 UTC */;  // a Wednesday
  for (const char* yearly : {"@yearly", "@annually", "@YEARLY"}) {
    CHECK(cron(yearly).next_after(from) == 1798761600'000 /* 2027-01-01 00:00 UTC */);
  }
  CHECK(cron("@monthly").next_after(from) == 1775001600'000 /* 2026-04-01 00:00 UTC */);
  CHECK(cron("@weekly").next_after(from) == 1772928000'000 /* 2026-03-08 00:00 UTC */);
  for (const char* daily : {"@daily", "@midnight", " @Daily "}) {
    CHECK(cron(daily).next_after(from) == 1772668800'000 /* 2026-03-05 00:00 UTC */);
  }
  CHECK(cron("@hourly").next_after(from) == 1772629200'000 /* 2026-03-04 13:00 UTC */);
  CHECK(cron("@hourly", "Asia/Kolkata").next_after(from) ==
        1772627400'000 /* 2026-03-04 12:30 UTC */);
}

TEST_CASE("cron: @every ticks at whole multiples of its period since the epoch, in any zone",
          "[cron]") {
  const auto every90 = cron("@every 90s");
  CHECK(next(every90, 1000, 2) == Ticks{90'000, 180'000});
  CHECK(every90.next_after(90'000) == 180'000);  // strictly after
  CHECK(every90.next_after(89'999) == 90'000);
  CHECK(every90.next_after(-1) == 0);
  CHECK(every90.next_after(-90'000) == 0);
  CHECK(every90.next_after(-90'001) == -90'000);
  // 1767225600 s / 660 s = 2677614.5...: the next multiple is 2677615 * 660 s.
  CHECK(cron("@every 11m").next_after(1767225600'000 /* 2026-01-01 00:00 UTC */) ==
        2677615LL * 660'000);
  // The zone changes nothing: whole hours since the epoch are whole UTC hours, across
  // Berlin's DST change as anywhere.
  for (const char* zone : {"", "UTC", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"}) {
    INFO(zone);
    CHECK(next(cron("@every 1h", zone), 1774744200'000 /* 2026-03-29 00:30 UTC */, 3) ==
          Ticks{
              1774746000'000 /* 2026-03-29 01:00 UTC */,
              1774749600'000 /* 2026-03-29 02:00 UTC */,
              1774753200'000 /* 2026-03-29 03:00 UTC */,
          });
    CHECK(cron("@every 1d", zone).next_after(1767268800'000 /* 2026-01-01 12:00 UTC */) ==
          1767312000'000 /* 2026-01-02 00:00 UTC */);
  }
  CHECK(cron("@every 30s").text() == "@every 30s");
  CHECK(cron("@every 30s", "Europe/Berlin").zone() == "Europe/Berlin");
}

TEST_CASE("cron: next_after is strictly after, from any millisecond", "[cron]") {
  const auto hourly = cron("0 * * * *");
  const std::int64_t tick = 1767243600'000 /* 2026-01-01 05:00 UTC */;
  const std::int64_t following = 1767247200'000 /* 2026-01-01 06:00 UTC */;
  CHECK(hourly.next_after(tick - 1000) == tick);
  CHECK(hourly.next_after(tick - 1) == tick);
  CHECK(hourly.next_after(tick) == following);
  CHECK(hourly.next_after(tick + 1) == following);
  CHECK(hourly.next_after(tick + 999) == following);
  CHECK(hourly.next_after(tick + 59'999) == following);
  // Ticks are at second 0; a zone with an offset of whole seconds keeps them so in UTC.
  const auto berlin = cron("0 * * * *", "Europe/Berlin");
  CHECK(berlin.next_after(tick - 1) == tick);
  CHECK(berlin.next_after(tick) == following);
  CHECK(berlin.next_after(tick + 1) == following);
  const auto every = cron("@every 30s");
  CHECK(every.next_after(29'999) == 30'000);
  CHECK(every.next_after(30'000) == 60'000);
  CHECK(every.next_after(30'001) == 60'000);
}

TEST_CASE("cron: ticks_between is (from, to], oldest first, at most limit", "[cron]") {
  const auto quarter = cron("*/15 * * * *");
  const std::int64_t from = 1767225600'000 /* 2026-01-01 00:00 UTC */;
  const std::int64_t to = 1767229200'000 /* 2026-01-01 01:00 UTC */;
  const Ticks all{
      1767226500'000 /* 2026-01-01 00:15 UTC */,
      1767227400'000 /* 2026-01-01 00:30 UTC */,
      1767228300'000 /* 2026-01-01 00:45 UTC */,
      1767229200'000 /* 2026-01-01 01:00 UTC */,
  };
  CHECK(quarter.ticks_between(from, to, 100) == all);
  CHECK(quarter.ticks_between(from, to, 4) == all);
  CHECK(quarter.ticks_between(from, to, 2) == Ticks(all.begin(), all.begin() + 2));
  CHECK(quarter.ticks_between(from, to - 1, 100) == Ticks(all.begin(), all.begin() + 3));
  CHECK(quarter.ticks_between(from - 1, to, 100).front() == from);
  CHECK(quarter.ticks_between(from, to, 0).empty());
  CHECK(quarter.ticks_between(from, from, 100).empty());
  CHECK(quarter.ticks_between(to, from, 100).empty());
  CHECK(quarter.ticks_between(from, from + 1000, 100).empty());
  CHECK(cron("@every 20m").ticks_between(from, to, 100) ==
        Ticks{
            1767226800'000 /* 2026-01-01 00:20 UTC */,
            1767228000'000 /* 2026-01-01 00:40 UTC */,
            1767229200'000 /* 2026-01-01 01:00 UTC */,
        });
  // Across a DST change, the same ticks as next_after gives one by one.
  const auto berlin = cron("*/15 * * * *", "Europe/Berlin");
  const std::int64_t night = 1774742400'000 /* 2026-03-29 00:00 UTC */;
  CHECK(berlin.ticks_between(night, night + 3 * 3'600'000, 100) == next(berlin, night, 12));
}

TEST_CASE("cron: Europe/Berlin in winter and summer time", "[cron]") {
  const auto three = cron("0 3 * * *", "Europe/Berlin");
  CHECK(three.next_after(1768435200'000 /* 2026-01-15 00:00 UTC */) ==
        1768442400'000 /* 2026-01-15 03:00 Europe/Berlin */);
  CHECK(three.next_after(1784073600'000 /* 2026-07-15 00:00 UTC */) ==
        1784077200'000 /* 2026-07-15 03:00 Europe/Berlin */);
  CHECK(three.next_after(1784077200'000 /* 2026-07-15 03:00 Europe/Berlin */) ==
        1784163600'000 /* 2026-07-16 03:00 Europe/Berlin */);
  CHECK(three.text() == "0 3 * * *");
  CHECK(three.zone() == "Europe/Berlin");
}

TEST_CASE("cron: a wall time DST skips fires once, at the end of the gap (Europe/Berlin)",
          "[cron]") {
  // 2026-03-29: at 02:00 CET (01:00 UTC) the clocks go to 03:00 CEST; 02:00-03:00 never is.
  const auto half_past_two = cron("30 2 * * *", "Europe/Berlin");
  CHECK(next(half_past_two, 1774612800'000 /* 2026-03-27 12:00 UTC */, 3) ==
        Ticks{
            1774661400'000 /* 2026-03-28 02:30 Europe/Berlin */,
            1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */,
            1774830600'000 /* 2026-03-30 02:30 Europe/Berlin */,
        });
  CHECK(next(cron("0 2 * * *", "Europe/Berlin"), 1774612800'000 /* 2026-03-27 12:00 UTC */, 3) ==
        Ticks{
            1774659600'000 /* 2026-03-28 02:00 Europe/Berlin */,
            1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */,
            1774828800'000 /* 2026-03-30 02:00 Europe/Berlin */,
        });
  // The four quarters of the missing hour collapse into 03:00 CEST, itself a tick: one tick.
  CHECK(cron("*/15 * * * *", "Europe/Berlin")
            .ticks_between(1774744200'000 /* 2026-03-29 00:30 UTC */,
                           1774747800'000 /* 2026-03-29 01:30 UTC */,
                           100) == Ticks{
                                       1774745100'000 /* 2026-03-29 01:45 Europe/Berlin */,
                                       1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */,
                                       1774746900'000 /* 2026-03-29 03:15 Europe/Berlin */,
                                       1774747800'000 /* 2026-03-29 03:30 Europe/Berlin */,
                                   });
  CHECK(next(cron("0 * * * *", "Europe/Berlin"), 1774740600'000 /* 2026-03-28 23:30 UTC */, 3) ==
        Ticks{
            1774742400'000 /* 2026-03-29 01:00 Europe/Berlin */,
            1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */,
            1774749600'000 /* 2026-03-29 04:00 Europe/Berlin */,
        });
  // From inside the gap's instant: the collapsed tick is behind, the next real one ahead.
  CHECK(half_past_two.next_after(1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */) ==
        1774830600'000 /* 2026-03-30 02:30 Europe/Berlin */);
  CHECK(half_past_two.next_after(1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */ - 1) ==
        1774746000'000 /* 2026-03-29 03:00 Europe/Berlin */);
}

TEST_CASE(
    "cron: a wall time DST repeats fires twice only when every hour is meant "
    "(Europe/Berlin)",
    "[cron]") {
  // 2026-10-25: at 03:00 CEST (01:00 UTC) the clocks go back to 02:00 CET; 02:00-03:00 is twice.
  // Every hour: real time, hourly, through both 02:00s.
  CHECK(next(cron("0 * * * *", "Europe/Berlin"), 1792881000'000 /* 2026-10-24 22:30 UTC */, 4) ==
        Ticks{
            1792882800'000 /* 2026-10-25 01:00 +0200 */,
            1792886400'000 /* 2026-10-25 02:00 +0200 */,
            1792890000'000 /* 2026-10-25 02:00 +0100 */,
            1792893600'000 /* 2026-10-25 03:00 +0100 */,
        });
  CHECK(cron("*/30 * * * *", "Europe/Berlin")
            .ticks_between(1792885500'000 /* 2026-10-24 23:45 UTC */,
                           1792892700'000 /* 2026-10-25 01:45 UTC */,
                           100) == Ticks{
                                       1792886400'000 /* 2026-10-25 02:00 +0200 */,
                                       1792888200'000 /* 2026-10-25 02:30 +0200 */,
                                       1792890000'000 /* 2026-10-25 02:00 +0100 */,
                                       1792891800'000 /* 2026-10-25 02:30 +0100 */,
                                   });
  // A fixed hour: the first 02:30 only.
  CHECK(next(cron("30 2 * * *", "Europe/Berlin"), 1792843200'000 /* 2026-10-24 12:00 UTC */, 2) ==
        Ticks{
            1792888200'000 /* 2026-10-25 02:30 +0200 */,
            1792978200'000 /* 2026-10-26 02:30 Europe/Berlin */,
        });
  // So are a list of hours: 01:30, the first 02:30, 03:30.
  CHECK(next(cron("30 1-3 * * *", "Europe/Berlin"), 1792843200'000 /* 2026-10-24 12:00 UTC */, 3) ==
        Ticks{
            1792884600'000 /* 2026-10-25 01:30 +0200 */,
            1792888200'000 /* 2026-10-25 02:30 +0200 */,
            1792895400'000 /* 2026-10-25 03:30 +0100 */,
        });
  // From within the second 02:00-03:00, a fixed hour's next is the next day's.
  CHECK(
      cron("45 2 * * *", "Europe/Berlin").next_after(1792890900'000 /* 2026-10-25 02:15 +0100 */) ==
      1792979100'000 /* 2026-10-26 02:45 Europe/Berlin */);
  // "Every hour" written otherwise is every hour too.
  for (const char* every_hour : {"0 */1 * * *", "0 0-23 * * *"}) {
    CHECK(
        cron(every_hour, "Europe/Berlin").next_after(1792886400'000 /* 2026-10-25 02:00 +0200 */) ==
        1792890000'000 /* 2026-10-25 02:00 +0100 */);
  }
}

TEST_CASE("cron: America/New_York on 2026-03-08 and 2026-11-01", "[cron]") {
  // 2026-03-08: 02:00 EST becomes 03:00 EDT.
  CHECK(next(cron("30 2 * * *", "America/New_York"), 1772841600'000 /* 2026-03-07 00:00 UTC */,
             3) == Ticks{
                       1772868600'000 /* 2026-03-07 02:30 America/New_York */,
                       1772953200'000 /* 2026-03-08 03:00 America/New_York */,
                       1773037800'000 /* 2026-03-09 02:30 America/New_York */,
                   });
  // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00-02:00 is twice.
  CHECK(next(cron("30 * * * *", "America/New_York"), 1793505600'000 /* 2026-11-01 04:00 UTC */,
             4) == Ticks{
                       1793507400'000 /* 2026-11-01 00:30 -0400 */,
                       1793511000'000 /* 2026-11-01 01:30 -0400 */,
                       1793514600'000 /* 2026-11-01 01:30 -0500 */,
                       1793518200'000 /* 2026-11-01 02:30 -0500 */,
                   });
  CHECK(next(cron("30 1 * * *", "America/New_York"), 1793505600'000 /* 2026-11-01 04:00 UTC */,
             2) == Ticks{
                       1793511000'000 /* 2026-11-01 01:30 -0400 */,
                       1793601000'000 /* 2026-11-02 01:30 America/New_York */,
                   });
}

TEST_CASE("cron: Australia/Lord_Howe's half-hour DST", "[cron]") {
  // 2026-10-04: 02:00 +1030 becomes 02:30 +11; 02:00 and 02:15 collapse into 02:30.
  CHECK(next(cron("*/15 * * * *", "Australia/Lord_Howe"), 1791039600'000 /* 2026-10-03 15:00 UTC */,
             3) == Ticks{
                       1791040500'000 /* 2026-10-04 01:45 Australia/Lord_Howe */,
                       1791041400'000 /* 2026-10-04 02:30 Australia/Lord_Howe */,
                       1791042300'000 /* 2026-10-04 02:45 Australia/Lord_Howe */,
                   });
  CHECK(next(cron("15 2 * * *", "Australia/Lord_Howe"), 1791028800'000 /* 2026-10-03 12:00 UTC */,
             2) == Ticks{
                       1791041400'000 /* 2026-10-04 02:30 Australia/Lord_Howe */,
                       1791126900'000 /* 2026-10-05 02:15 Australia/Lord_Howe */,
                   });
  // 2026-04-05: 02:00 +11 becomes 01:30 +1030; 01:30-02:00 is twice.
  CHECK(next(cron("*/15 * * * *", "Australia/Lord_Howe"), 1775312100'000 /* 2026-04-04 14:15 UTC */,
             5) == Ticks{
                       1775313000'000 /* 2026-04-05 01:30 +1100 */,
                       1775313900'000 /* 2026-04-05 01:45 +1100 */,
                       1775314800'000 /* 2026-04-05 01:30 +1030 */,
                       1775315700'000 /* 2026-04-05 01:45 +1030 */,
                       1775316600'000 /* 2026-04-05 02:00 +1030 */,
                   });
  CHECK(next(cron("45 1 * * *", "Australia/Lord_Howe"), 1775304000'000 /* 2026-04-04 12:00 UTC */,
             2) == Ticks{
                       1775313900'000 /* 2026-04-05 01:45 +1100 */,
                       1775402100'000 /* 2026-04-06 01:45 Australia/Lord_Howe */,
                   });
  // On the hour: 01:00 +11, then 02:00 +1030, an hour and a half later.
  CHECK(next(cron("0 * * * *", "Australia/Lord_Howe"), 1775309400'000 /* 2026-04-04 13:30 UTC */,
             2) == Ticks{
                       1775311200'000 /* 2026-04-05 01:00 +1100 */,
                       1775316600'000 /* 2026-04-05 02:00 +1030 */,
                   });
}

TEST_CASE("cron: Asia/Tokyo (no DST), UTC and the empty zone", "[cron]") {
  const auto nine = cron("0 9 * * *", "Asia/Tokyo");
  CHECK(next(nine, 1772884800'000 /* 2026-03-07 12:00 UTC */, 2) ==
        Ticks{
            1772928000'000 /* 2026-03-08 09:00 Asia/Tokyo */,
            1773014400'000 /* 2026-03-09 09:00 Asia/Tokyo */,
        });
  CHECK(nine.next_after(1793448000'000 /* 2026-10-31 12:00 UTC */) ==
        1793491200'000 /* 2026-11-01 09:00 Asia/Tokyo */);
  for (const char* utc : {"", "UTC", "Etc/UTC"}) {
    CHECK(cron("0 3 * * *", utc).next_after(1774742400'000 /* 2026-03-29 00:00 UTC */) ==
          1774753200'000 /* 2026-03-29 03:00 UTC */);
  }
}

TEST_CASE("cron: refused expressions say what and where", "[cron]") {
  struct Case {
    const char* expr;
    std::size_t column;
    const char* message;
  };
  const Case cases[] = {
      {"61 * * * *", 1, "minute: 61 is out of range 0-59"},
      {"0 24 * * *", 3, "hour: 24 is out of range 0-23"},
      {"0 0 0 * *", 5, "day-of-month: 0 is out of range 1-31"},
      {"0 0 * 13 *", 7, "month: 13 is out of range 1-12"},
      {"0 0 * * 8", 9, "day-of-week: 8 is out of range 0-7"},
      {"1,2,61 * * * *", 5, "minute: 61 is out of range 0-59"},
      {"0 3 * *", 8, "expected 5 fields, got 4 (minute hour day-of-month month day-of-week)"},
      {"0 0 3 * * *", 11, "expected 5 fields, got 6 (minute hour day-of-month month day-of-week)"},
      {"*/0 * * * *", 3, "minute: step 0 is out of range 1-59"},
      {"0 */24 * * *", 5, "hour: step 24 is out of range 1-23"},
      {"5-2 * * * *", 1, "minute: range 5-2 goes backwards"},
      {"0 0 * * FRI-MON", 9, "day-of-week: range FRI-MON goes backwards"},
      {"0 0 * * 5-0", 9, "day-of-week: range 5-0 goes backwards"},
      {"0 0 * FOO *", 7, "month: unknown name 'FOO' (JAN-DEC)"},
      {"0 0 * * MONDAY", 9, "day-of-week: unknown name 'MONDAY' (SUN-SAT)"},
      {"0 0 * * JAN", 9, "day-of-week: unknown name 'JAN' (SUN-SAT)"},
      {"0 MON * * *", 3, "hour: 'MON' is not a number"},
      {"0 0 * * 1x", 10, "day-of-week: unexpected 'x'"},
      {"5x * * * *", 2, "minute: unexpected 'x'"},
      {"*5 * * * *", 2, "minute: unexpected '5'"},
      {"1-2-3 * * * *", 4, "minute: unexpected '-'"},
      {"1,,2 * * * *", 3, "minute: unexpected ','"},
      {"1, * * * *", 3, "minute: expected a value after ','"},
      {"1- * * * *", 3, "minute: expected a value after '-'"},
      {"1/ * * * *", 3, "minute: expected a step after '/'"},
      {"*/x * * * *", 3, "minute: unexpected 'x'"},
      {"0 0 ? * *", 5, "day-of-month: unexpected '?'"},
      {"0 0 L * *", 5, "day-of-month: 'L' is not a number"},
      {"", 1, "empty cron expression"},
      {" \t ", 1, "empty cron expression"},
      {"0 0 30 2 *", 5, "day-of-month: no month given has a day 30 (29 days at most)"},
      {"0 0 31 4,6,9,11 *", 5, "day-of-month: no month given has a day 31 (30 days at most)"},
      {"@reboot", 1,
       "unknown macro '@reboot' (@yearly, @annually, @monthly, @weekly, @daily, @midnight, "
       "@hourly or @every DURATION)"},
      {"@dayly", 1, "unknown macro '@dayly' (did you mean '@daily'?)"},
      {"@daily x", 8, "unexpected 'x' after @daily"},
      {"@every", 7, "@every needs a duration (e.g. @every 30s)"},
      {"@every 5", 8, "@every: '5' is not a duration (e.g. 30s, 5m, 1h, 1d)"},
      {"@every 1.5s", 8, "@every: 1.5s is not whole seconds"},
      {"@every 500ms", 8, "@every: 500ms is shorter than 1s"},
      {"@every 0", 8, "@every: 0 is shorter than 1s"},
      {"@every 5m now", 11, "unexpected 'n' after @every 5m"},
  };
  for (const auto& c : cases) {
    INFO("'" << c.expr << "'");
    const auto p = problem_of(c.expr);
    CHECK(p.message == c.message);
    CHECK(p.column == c.column);
  }
}

TEST_CASE("cron: hostile input is refused quickly, with a printable message", "[cron]") {
  const auto started = std::chrono::steady_clock::now();
  // Huge numbers saturate instead of overflowing; the message quotes at most 24 bytes.
  CHECK(problem_of("*/99999999999999999999 * * * *").message ==
        "minute: step 99999999999999999999 is out of range 1-59");
  CHECK(problem_of("99999999999999999999999999999 * * * *").message ==
        "minute: 999999999999999999999999... is out of range 0-59");
  // Leading zeros are still the number.
  CHECK(cron("00000000000000000000000000005 * * * *").next_after(0) == 300'000);
  // NULs and other bytes are written \xNN.
  const std::string nul("0 0 * * 1\0", 10);
  const auto p = problem_of(nul);
  CHECK(p.message == "day-of-week: unexpected '\\x00'");
  CHECK(p.column == 10);
  CHECK(problem_of("0 0 * * \xe2\x80\x93").message == "day-of-week: unexpected '\\xe2'");
  CHECK(problem_of("0 0 * * *\n").message == "day-of-week: unexpected '\\x0a'");
  // Long input: a million commas, a million fields, a list of a million items, a long name.
  CHECK(problem_of("1" + std::string(1'000'000, ',') + " * * * *").column == 3);
  std::string fields;
  for (int i = 0; i < 500'000; ++i) fields += "* ";
  CHECK(problem_of(fields).message ==
        "expected 5 fields, got 500000 (minute hour day-of-month month day-of-week)");
  std::string list = "0";
  for (int i = 0; i < 500'000; ++i) list += ",59";
  CHECK(cron(list + " * * * *").next_after(0) == 59'000 * 60);
  CHECK(problem_of("0 0 * " + std::string(100'000, 'x') + " *").message ==
        "month: unknown name 'xxxxxxxxxxxxxxxxxxxxxxxx...' (JAN-DEC)");
  CHECK(problem_of("@every " + std::string(100'000, '9') + "s").message ==
        "@every: '999999999999999999999999...' is not a duration (e.g. 30s, 5m, 1h, 1d)");
  CHECK(zone_problem(std::string(100'000, 'x') + '\0') ==
        "unknown time zone 'xxxxxxxxxxxxxxxxxxxxxxxx...'");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
}

TEST_CASE("cron: time zones are checked by name, with a close match offered", "[cron]") {
  CHECK(zone_problem("") == "");
  CHECK(zone_problem("UTC") == "");
  CHECK(zone_problem("Europe/Berlin") == "");
  CHECK(zone_problem("America/Argentina/ComodRivadavia") == "");
  CHECK(zone_problem("Europe/Berln") ==
        "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)");
  CHECK(zone_problem("europe/berlin") ==
        "unknown time zone 'europe/berlin' (did you mean 'Europe/Berlin'?)");
  CHECK(zone_problem("Mars/Olympus_Mons") == "unknown time zone 'Mars/Olympus_Mons'");
  // Names of the database's files that are no zones, and paths out of it.
  for (const char* not_zone :
       {"posixrules", "right/UTC", "posix/Europe/Berlin", "zone.tab", "tzdata.zi",
        "../../../etc/passwd", "/usr/share/zoneinfo/Europe/Berlin", "Europe/", "Europe",
        "Europe/Berlin "}) {
    INFO(not_zone);
    CHECK(zone_problem(not_zone).rfind("unknown time zone '", 0) == 0);
  }
  CHECK(zone_problem("localtime").rfind("unknown time zone 'localtime' (name the zone", 0) == 0);
  // Cron::parse says the same, at column 0 (the zone, not the expression).
  const auto p = problem_of("0 3 * * *", "Europe/Berln");
  CHECK(p.column == 0);
  CHECK(p.message == "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)");
  // Even @every, which does not use it: a schedule's zone is checked wherever it is written.
  CHECK(problem_of("@every 1h", "Nowhere").column == 0);
  // The expression's own problem comes first.
  CHECK(problem_of("61 3 * * *", "Nowhere").column == 1);
}

TEST_CASE("cron: zones first used from two threads at once", "[cron]") {
  // Each thread parses (looking its zone up and reading its file, lazily, for the first time in
  // this process: no other case uses these zones) and computes ticks; both must agree with
  // what one thread alone computes after them.
  const char* zones[] = {"America/Sao_Paulo", "Pacific/Chatham", "Europe/Lisbon", "Asia/Kathmandu"};
  const std::int64_t from = 1767225600'000 /* 2026-01-01 00:00 UTC */;
  std::vector<std::int64_t> results[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 4; ++round) {
        // The two threads go through the zones in opposite orders.
        const char* zone = zones[t == 0 ? round : 3 - round];
        auto parsed = Cron::parse("*/7 1-5 * * *", zone);
        const auto* c = std::get_if<Cron>(&parsed);
        results[t].push_back(c == nullptr ? -1 : c->next_after(from));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::int64_t> alone;
  for (const char* zone : zones) alone.push_back(cron("*/7 1-5 * * *", zone).next_after(from));
  CHECK(results[0] == alone);
  CHECK(results[1] == std::vector<std::int64_t>(alone.rbegin(), alone.rend()));
  CHECK(alone == Ticks{
                     1767240000'000 /* 2026-01-01 01:00 America/Sao_Paulo */,
                     1767266100'000 /* 2026-01-02 01:00 Pacific/Chatham */,
                     1767229200'000 /* 2026-01-01 01:00 Europe/Lisbon */,
                     1767225840'000 /* 2026-01-01 05:49 Asia/Kathmandu */,
                 });
}

TEST_CASE("cron: next_after jumps, it does not walk (100,000 calls well under a second)",
          "[cron]") {
  // Under a sanitizer too: the bound is coarse, the measure is in the test's time line.
  const auto timed = [](const Cron& c, std::int64_t step_ms, int calls = 100'000) {
    const auto started = std::chrono::steady_clock::now();
    std::int64_t t = 1767225600'000 /* 2026-01-01 00:00 UTC */;
    std::int64_t sum = 0;
    for (int i = 0; i < calls; ++i, t += step_ms) sum += c.next_after(t) - t;
    CHECK(sum > 0);
    return std::chrono::steady_clock::now() - started;
  };
  // Across about two years, through four DST changes.
  CHECK(timed(cron("0 3 * * *", "Europe/Berlin"), 631'000) < std::chrono::seconds(2));
  // The every-hour path, across the same changes.
  CHECK(timed(cron("*/5 * * * *", "Europe/Berlin"), 631'000) < std::chrono::seconds(2));
  CHECK(timed(cron("0 0 * * *"), 631'000) < std::chrono::seconds(2));
  // A rare one: up to four years to the next tick, through eight DST changes.
  CHECK(timed(cron("0 0 29 2 *", "Europe/Berlin"), 631'000, 10'000) < std::chrono::seconds(2));
}

namespace {

// One field of a random expression: its text, and the values it means, written independently
// of the parser (a plain loop over each form).
struct RandomField {
  std::string text;
  std::set<int> values;
};

RandomField random_field(std::mt19937& rng, int min, int max) {
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  RandomField f;
  switch (pick(0, 5)) {
    case 0:
      f.text = "*";
      for (int v = min; v <= max; ++v) f.values.insert(v);
      break;
    case 1: {
      const int step = pick(1, std::min(max - min, 12));
      f.text = "*/" + std::to_string(step);
      for (int v = min; v <= max; v += step) f.values.insert(v);
      break;
    }
    case 2: {
      const int v = pick(min, max);
      f.text = std::to_string(v);
      f.values.insert(v);
      break;
    }
    case 3: {
      const int lo = pick(min, max);
      const int hi = pick(lo, max);
      const int step = pick(1, 4);
      f.text = std::to_string(lo) + "-" + std::to_string(hi) + "/" + std::to_string(step);
      for (int v = lo; v <= hi; v += step) f.values.insert(v);
      break;
    }
    case 4: {
      const int lo = pick(min, max);
      const int step = pick(1, max - min);
      f.text = std::to_string(lo) + "/" + std::to_string(step);
      for (int v = lo; v <= max; v += step) f.values.insert(v);
      break;
    }
    default:
      for (int n = pick(2, 4); n > 0; --n) {
        const int v = pick(min, max);
        f.text += (f.text.empty() ? "" : ",") + std::to_string(v);
        f.values.insert(v);
      }
  }
  return f;
}

}  // namespace

TEST_CASE("cron: random expressions agree with a day-by-day reference over gmtime (UTC)",
          "[cron]") {
  std::mt19937 rng(20260329);
  int checked = 0;
  for (int round = 0; round < 300; ++round) {
    RandomField f[5] = {random_field(rng, 0, 59), random_field(rng, 0, 23),
                        random_field(rng, 1, 31), random_field(rng, 1, 12),
                        random_field(rng, 0, 7)};
    const std::string expr =
        f[0].text + " " + f[1].text + " " + f[2].text + " " + f[3].text + " " + f[4].text;
    INFO(expr);
    auto parsed = Cron::parse(expr, "");
    if (std::holds_alternative<CronProblem>(parsed)) {
      // Only a day of month no month given has, under an unrestricted day of week.
      CHECK(std::get<CronProblem>(parsed).message.rfind("day-of-month: no month given", 0) == 0);
      continue;
    }
    const Cron& c = std::get<Cron>(parsed);
    const bool dom_star = f[2].text[0] == '*';
    const bool dow_star = f[4].text[0] == '*';
    // A start anywhere in 2000-2040, at any millisecond.
    const std::int64_t from =
        std::uniform_int_distribution<std::int64_t>(946'684'800'000, 2'208'988'800'000)(rng);
    // The reference: the first minute strictly after `from`, day by day, within ten years.
    std::int64_t want = -1;
    const std::int64_t first_minute = from / 60'000 + 1;  // from > 0
    for (std::int64_t day = first_minute / 1440; want < 0 && day < first_minute / 1440 + 3660;
         ++day) {
      const std::time_t midnight = static_cast<std::time_t>(day * 86400);
      std::tm tm{};
      gmtime_r(&midnight, &tm);
      const bool dom = f[2].values.count(tm.tm_mday) > 0;
      const bool dow =
          f[4].values.count(tm.tm_wday) > 0 || (tm.tm_wday == 0 && f[4].values.count(7) > 0);
      if (f[3].values.count(tm.tm_mon + 1) == 0) continue;
      if (!dom_star && !dow_star ? !(dom || dow) : !(dom && dow)) continue;
      for (int m = 0; m < 1440 && want < 0; ++m) {
        const std::int64_t minute = day * 1440 + m;
        if (minute >= first_minute && f[1].values.count(m / 60) && f[0].values.count(m % 60)) {
          want = minute * 60'000;
        }
      }
    }
    const std::int64_t got = c.next_after(from);
    if (want >= 0) {
      CHECK(got == want);
    } else {
      CHECK(got >= (first_minute / 1440 + 3660) * 1440 * 60'000);
    }
    ++checked;
  }
  CHECK(checked > 200);
}

TEST_CASE("cron: limits: before 1900, after 9999, and no DST after 2037", "[cron]") {
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  // Field expressions start at 1900 at the earliest.
  CHECK(cron("0 0 1 1 *").next_after(kMin) == -2208988800'000 /* 1900-01-01 00:00 UTC */);
  CHECK(cron("0 0 1 1 *").next_after(-2227478400'000 /* 1899-06-01 00:00 UTC */) ==
        -2208988800'000 /* 1900-01-01 00:00 UTC */);
  // 1900-01-01 00:00 in Berlin was 1899-12-31 23:00 UTC, before the start: 1901's.
  CHECK(cron("0 0 1 1 *", "Europe/Berlin").next_after(kMin) ==
        -2177456400'000 /* 1901-01-01 00:00 Europe/Berlin */);
  // Nothing after 9999.
  CHECK(cron("0 0 1 1 *").next_after(253352275200'000 /* 9998-06-01 00:00 UTC */) ==
        253370764800'000 /* 9999-01-01 00:00 UTC */);
  CHECK(cron("0 0 1 1 *").next_after(253370764800'000 /* 9999-01-01 00:00 UTC */) == Cron::kNever);
  // At +14, the year 10000 starts on 9999-12-31 at 10:00 UTC: a tick still.
  CHECK(cron("0 0 1 1 *", "Pacific/Kiritimati")
            .next_after(253370764800'000 /* 9999-01-01 00:00 UTC */) ==
        253402250400'000 /* 9999-12-31 10:00 UTC */);
  CHECK(cron("0 0 1 1 *").next_after(kMax) == Cron::kNever);
  CHECK(cron("@every 1s").next_after(kMax) == Cron::kNever);
  CHECK(cron("@every 1s").next_after(kMax - 1) == Cron::kNever);
  CHECK(cron("@every 1d").next_after(253402257600'000 /* 9999-12-31 12:00 UTC */) == Cron::kNever);
  // @every is arithmetic on any instant: floor(min / 1000) + 1 seconds.
  CHECK(cron("@every 1s").next_after(kMin) == -9'223'372'036'854'775'000);
  CHECK(cron("0 0 1 1 *").ticks_between(253352275200'000 /* 9998-06-01 00:00 UTC */, kMax, 10) ==
        Ticks{253370764800'000 /* 9999-01-01 00:00 UTC */});
  // Debian's zone files list transitions up to 2037 and libdate-tz reads no footer rule: after
  // the last one a zone keeps its offset. This pins that limit (see cron.hpp): if it changes,
  // cron.hpp's words on it should too.
  CHECK(cron("0 3 * * *", "Europe/Berlin").next_after(2130019200'000 /* 2037-07-01 00:00 UTC */) ==
        2130022800'000 /* 2037-07-01 03:00 Europe/Berlin */);
  CHECK(cron("0 3 * * *", "Europe/Berlin").next_after(2161555200'000 /* 2038-07-01 00:00 UTC */) ==
        2161562400'000 /* 2038-07-01 03:00 +0100 */);
}
