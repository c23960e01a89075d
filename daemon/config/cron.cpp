// Cron expressions: parsing with errors that point at the column, and the next tick in a zone.
#include "config/cron.hpp"

// libdate-tz is built with these (the Makefile's DATE_CFLAGS); without them date/tz.h declares
// a time_zone of another layout than the library's, and every call into it goes wrong.
#if !defined(USE_OS_TZDB) || USE_OS_TZDB != 1 || !defined(ONLY_C_LOCALE) || ONLY_C_LOCALE != 1
#error "date/tz.h needs the Makefile's DATE_CFLAGS (-DUSE_OS_TZDB=1 -DONLY_C_LOCALE=1 ...)"
#endif
#include <date/tz.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>

#include "config/suggest.hpp"
#include "config/units.hpp"

namespace jq::config {
namespace {

// Field expressions count instants before 1900-01-01Z as just before it (a zone's early
// history is local mean time, of no use to a schedule); nothing ticks after 9999.
constexpr std::int64_t kFirstSecond = -2'208'988'800;  // 1900-01-01T00:00:00Z
constexpr std::int64_t kLastMs = 253'402'300'799'999;  // 9999-12-31T23:59:59.999Z
constexpr std::int64_t kLastSecond = kLastMs / 1000;   // 9999-12-31T23:59:59Z
constexpr std::int64_t kNoTick = Cron::kNever / 4;     // far past kLastSecond, no overflow
constexpr std::uint32_t kEveryHour = (1u << 24) - 1;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

struct Field {
  const char* name;
  int min;
  int max;
  const char* const* names;  // three-letter names of the values from `min`, or null
  int name_count;
  const char* names_hint;
};

constexpr const char* kMonthNames[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                       "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kDayNames[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

constexpr Field kFields[5] = {
    {"minute", 0, 59, nullptr, 0, nullptr},         {"hour", 0, 23, nullptr, 0, nullptr},
    {"day-of-month", 1, 31, nullptr, 0, nullptr},   {"month", 1, 12, kMonthNames, 12, "JAN-DEC"},
    {"day-of-week", 0, 7, kDayNames, 7, "SUN-SAT"},
};

// Input quoted in a message: at most 24 bytes, each one that is not printable ASCII as \xNN
// (a message must print as one clean line whatever the input held, NULs included).
std::string clip(std::string_view text) {
  constexpr std::size_t kMax = 24;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (text.size() > kMax) out += "...";
  return out;
}

std::string quoted(std::string_view text) {
  return "'" + clip(text) + "'";
}

bool blank(char c) {
  return c == ' ' || c == '\t';
}
bool digit(char c) {
  return c >= '0' && c <= '9';
}
bool letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// One field's text, parsed into a bit set. `column` is the 1-based column of text[0].
class FieldParser {
 public:
  FieldParser(std::string_view text, std::size_t column, const Field& field)
      : t_(text), column_(column), f_(field) {}

  // The bit set, or false with problem() set.
  bool parse(std::uint64_t& bits) {
    bits = 0;
    for (;;) {
      const std::size_t item = i_;
      int lo = f_.min;
      int hi = f_.max;
      bool single = false;
      if (i_ < t_.size() && t_[i_] == '*') {
        ++i_;
      } else {
        if (!value(lo, item == 0 ? nullptr : ",")) return false;
        if (i_ < t_.size() && t_[i_] == '-') {
          ++i_;
          if (!value(hi, "-")) return false;
          // Sunday ends a week: FRI-SUN is 5-7.
          if (f_.max == 7 && hi == 0 && lo > 0 && letter(t_[i_ - 1])) hi = 7;
          if (hi < lo) {
            return fail(item, "range " + clip(t_.substr(item, i_ - item)) + " goes backwards");
          }
        } else {
          hi = lo;
          single = true;
        }
      }
      int step = 1;
      if (i_ < t_.size() && t_[i_] == '/') {
        ++i_;
        if (!step_value(step)) return false;
        if (single) hi = f_.max;  // "a/n": from a to the field's maximum
      }
      for (int v = lo; v <= hi; v += step) bits |= std::uint64_t{1} << v;
      if (i_ == t_.size()) return true;
      if (t_[i_] != ',') return unexpected();
      ++i_;
    }
  }

  CronProblem problem() { return std::move(problem_); }

 private:
  bool fail(std::size_t at, const std::string& what) {
    problem_ = {column_ + at, std::string(f_.name) + ": " + what};
    return false;
  }

  bool unexpected() {
    if (i_ == t_.size()) return fail(i_, "expected a value after " + quoted(t_.substr(i_ - 1, 1)));
    return fail(i_, "unexpected " + quoted(t_.substr(i_, 1)));
  }

  // A run of digits, saturated far above any field's range (no overflow, whatever its length).
  std::uint32_t digits() {
    std::uint32_t v = 0;
    for (; i_ < t_.size() && digit(t_[i_]); ++i_) {
      v = std::min<std::uint32_t>(v * 10 + static_cast<std::uint32_t>(t_[i_] - '0'), 1'000'000);
    }
    return v;
  }

  // A number or, in the month and day-of-week fields, a name. `after` is what came before it
  // (for the message when nothing does), null at the start of the field.
  bool value(int& out, const char* after) {
    const std::size_t start = i_;
    if (i_ < t_.size() && digit(t_[i_])) {
      const std::uint32_t v = digits();
      if (v < static_cast<std::uint32_t>(f_.min) || v > static_cast<std::uint32_t>(f_.max)) {
        return fail(start, clip(t_.substr(start, i_ - start)) + " is out of range " +
                               std::to_string(f_.min) + "-" + std::to_string(f_.max));
      }
      out = static_cast<int>(v);
      return true;
    }
    if (i_ < t_.size() && letter(t_[i_])) {
      while (i_ < t_.size() && letter(t_[i_])) ++i_;
      const std::string_view word = t_.substr(start, i_ - start);
      if (f_.names == nullptr) return fail(start, quoted(word) + " is not a number");
      for (int n = 0; n < f_.name_count; ++n) {
        if (word.size() == 3 && lower(word) == lower(f_.names[n])) {
          out = f_.min + n;
          return true;
        }
      }
      return fail(start, "unknown name " + quoted(word) + " (" + f_.names_hint + ")");
    }
    if (i_ == t_.size() && after != nullptr) {
      return fail(i_, std::string("expected a value after '") + after + "'");
    }
    return unexpected();
  }

  bool step_value(int& out) {
    const std::size_t start = i_;
    if (i_ == t_.size()) return fail(i_, "expected a step after '/'");
    if (!digit(t_[i_])) return unexpected();
    const std::uint32_t v = digits();
    const auto span = static_cast<std::uint32_t>(f_.max - f_.min);
    if (v < 1 || v > span) {
      return fail(start, "step " + clip(t_.substr(start, i_ - start)) + " is out of range 1-" +
                             std::to_string(span));
    }
    out = static_cast<int>(v);
    return true;
  }

  std::string_view t_;
  std::size_t column_;
  const Field& f_;
  std::size_t i_ = 0;
  CronProblem problem_;
};

struct Macro {
  const char* name;
  const char* fields;
};
constexpr Macro kMacros[] = {
    {"yearly", "0 0 1 1 *"}, {"annually", "0 0 1 1 *"}, {"monthly", "0 0 1 * *"},
    {"weekly", "0 0 * * 0"}, {"daily", "0 0 * * *"},    {"midnight", "0 0 * * *"},
    {"hourly", "0 * * * *"},
};

// Whether the zone file `name` has TZif headers where libdate-tz will look for them. Debian
// builds libdate-tz with its assertions on, and it asserts on these (aborting the daemon, say
// on a reload naming a damaged file) where a short file is only an exception: they are checked
// first. libdate-tz reads /usr/share/zoneinfo on Linux (unless a uclibc/ subdirectory exists).
bool tzif_headers(const std::string& name) {
  std::ifstream in("/usr/share/zoneinfo/" + name, std::ios::binary);
  unsigned char head[44];
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) return false;
  if (std::memcmp(head, "TZif", 4) != 0) return false;
  if (head[4] == 0) return true;  // version 1: one header
  // Version 2 and later: a second header after the first's data, whose size the six
  // big-endian counts give (ut, std, leap, time, type and char).
  std::uint64_t count[6];
  for (int k = 0; k < 6; ++k) {
    const unsigned char* p = head + 20 + 4 * k;
    count[k] =
        std::uint64_t{p[0]} << 24 | std::uint64_t{p[1]} << 16 | std::uint64_t{p[2]} << 8 | p[3];
  }
  const std::uint64_t data =
      count[0] + count[1] + 8 * count[2] + 5 * count[3] + 6 * count[4] + count[5];
  char magic[4];
  in.seekg(static_cast<std::streamoff>(sizeof head + data));
  return in.read(magic, 4) && std::memcmp(magic, "TZif", 4) == 0;
}

// The zone `zone` names (null: UTC, without the database), or what is wrong with the name. The
// zone's file is read here, once: next_after never touches the disk nor throws.
std::variant<const date::time_zone*, std::string> find_zone(std::string_view zone) {
  if (zone.empty() || zone == "UTC") return static_cast<const date::time_zone*>(nullptr);
  // The database lists /usr/share/zoneinfo/localtime, a link to /etc/localtime: the machine's
  // own setting, different on each machine (and absent in many containers).
  if (zone == "localtime") {
    return std::string(
        "unknown time zone 'localtime' (name the zone itself, e.g. 'Europe/Berlin': 'localtime' "
        "is whatever this machine is set to)");
  }
  // One lookup at a time, under a mutex of this file. libdate-tz lists the database and reads a
  // zone's file once each, under its own function-local static and std::call_once; but it is
  // built without the thread sanitizer, and its static's inline "already done" check is invisible
  // to it: a second thread that found the list made by the first was reported as racing with
  // its making (a TSan run of "zones first used from two threads at once", 5 in 60 under load).
  // Taken only when a schedule is parsed (config load, a runtime schedule), never per tick.
  static std::mutex lookup;
  const std::lock_guard held(lookup);
  try {
    // get_tzdb() lists the database once per process; its zones are sorted by name and never
    // change.
    const auto& zones = date::get_tzdb().zones;
    const auto it = std::lower_bound(
        zones.begin(), zones.end(), zone,
        [](const date::time_zone& z, std::string_view name) { return z.name() < name; });
    if (it != zones.end() && it->name() == zone) {
      if (!tzif_headers(it->name())) {
        return "time zone " + quoted(zone) + " cannot be read: /usr/share/zoneinfo/" + clip(zone) +
               " is not a TZif file";
      }
      // Reads the zone's file (under its own std::call_once, so two threads may do this).
      (void)it->get_info(date::sys_seconds{});
      return &*it;
    }
    std::string near;
    // A name far longer than any zone's (the longest is 32 bytes) is no typo of one.
    if (zone.size() <= 64) {
      const std::string folded = lower(zone);
      std::vector<std::string> names;
      names.reserve(zones.size());
      // closest() allows a third of the letters off: names whose length differs by more
      // cannot be within that (a cheap filter; the fuzz target sees many wrong names).
      const std::size_t allowed = std::max<std::size_t>(1, zone.size() / 3);
      for (const auto& z : zones) {
        if (lower(z.name()) == folded) near = z.name();
        const std::size_t n = z.name().size();
        if (n + allowed >= zone.size() && n <= zone.size() + allowed) names.push_back(z.name());
      }
      if (near.empty()) near = closest(zone, names);
    }
    return "unknown time zone " + quoted(zone) +
           (near.empty() ? "" : " (did you mean '" + near + "'?)");
  } catch (const std::exception& e) {
    std::string why = e.what();
    while (!why.empty() && std::isspace(static_cast<unsigned char>(why.back()))) why.pop_back();
    return "time zone " + quoted(zone) +
           " cannot be read from /usr/share/zoneinfo (tzdata): " + why;
  }
}

}  // namespace

std::variant<Cron, CronProblem> Cron::parse(std::string_view expr, std::string_view zone) {
  Cron c;
  c.text_ = std::string(expr);
  c.zone_ = std::string(zone);

  std::size_t i = 0;
  while (i < expr.size() && blank(expr[i])) ++i;
  if (i == expr.size()) return CronProblem{1, "empty cron expression"};

  std::string_view fields = expr;  // the five fields: the expression's or a macro's
  std::size_t fields_column = 1;   // the column of fields[0] in the expression (0: a macro's)
  if (expr[i] == '@') {
    const std::size_t at = i++;
    while (i < expr.size() && letter(expr[i])) ++i;
    const std::string name = lower(expr.substr(at + 1, i - at - 1));
    const std::size_t name_end = i;
    while (i < expr.size() && blank(expr[i])) ++i;
    if (name == "every") {
      if (i == name_end && i < expr.size()) {
        return CronProblem{i + 1, "unexpected " + quoted(expr.substr(i, 1)) + " after @every"};
      }
      if (i == expr.size()) {
        return CronProblem{i + 1, "@every needs a duration (e.g. @every 30s)"};
      }
      const std::size_t start = i;
      while (i < expr.size() && !blank(expr[i])) ++i;
      const std::string_view text = expr.substr(start, i - start);
      while (i < expr.size() && blank(expr[i])) ++i;
      if (i < expr.size()) {
        return CronProblem{
            i + 1, "unexpected " + quoted(expr.substr(i, 1)) + " after @every " + clip(text)};
      }
      const auto period = parse_duration(text);
      if (!period) {
        return CronProblem{start + 1,
                           "@every: " + quoted(text) + " is not a duration (e.g. 30s, 5m, 1h, 1d)"};
      }
      if (period->count() < 1000) {
        return CronProblem{start + 1, "@every: " + clip(text) + " is shorter than 1s"};
      }
      if (period->count() % 1000 != 0) {
        return CronProblem{start + 1, "@every: " + clip(text) + " is not whole seconds"};
      }
      c.every_ms_ = period->count();
    } else {
      const Macro* macro = nullptr;
      std::vector<std::string> known{"every"};
      for (const auto& m : kMacros) {
        if (name == m.name) macro = &m;
        known.push_back(m.name);
      }
      if (macro == nullptr) {
        const std::string near = name.empty() ? "" : closest(name, known);
        return CronProblem{at + 1,
                           "unknown macro " + quoted(expr.substr(at, name_end - at)) +
                               (near.empty() ? " (@yearly, @annually, @monthly, @weekly, @daily, "
                                               "@midnight, @hourly or @every DURATION)"
                                             : " (did you mean '@" + near + "'?)")};
      }
      if (i < expr.size()) {
        return CronProblem{i + 1, "unexpected " + quoted(expr.substr(i, 1)) + " after @" + name};
      }
      fields = macro->fields;
      fields_column = 0;
    }
  }

  if (c.every_ms_ == 0) {
    // Split on blanks: where each field starts and ends (all of them counted, not just five).
    std::size_t starts[5] = {};
    std::size_t ends[5] = {};
    std::size_t count = 0;
    std::size_t sixth = 0;
    for (std::size_t j = 0; j < fields.size();) {
      if (blank(fields[j])) {
        ++j;
        continue;
      }
      const std::size_t start = j;
      while (j < fields.size() && !blank(fields[j])) ++j;
      if (count < 5) {
        starts[count] = start;
        ends[count] = j;
      } else if (count == 5) {
        sixth = start;
      }
      ++count;
    }
    if (count != 5) {
      return CronProblem{(count < 5 ? fields.size() : sixth) + 1,
                         "expected 5 fields, got " + std::to_string(count) +
                             " (minute hour day-of-month month day-of-week)"};
    }
    std::uint64_t bits[5];
    for (int f = 0; f < 5; ++f) {
      FieldParser p(fields.substr(starts[f], ends[f] - starts[f]),
                    fields_column == 0 ? 0 : starts[f] + 1, kFields[f]);
      if (!p.parse(bits[f])) return p.problem();
    }
    c.minutes_ = bits[0];
    c.hours_ = static_cast<std::uint32_t>(bits[1]);
    c.days_ = static_cast<std::uint32_t>(bits[2]);
    c.months_ = static_cast<std::uint32_t>(bits[3]);
    // 7 is Sunday too.
    c.weekdays_ = static_cast<std::uint32_t>((bits[4] | (bits[4] >> 7)) & 0x7f);
    c.days_star_ = fields[starts[2]] == '*';
    c.weekdays_star_ = fields[starts[4]] == '*';
    // Both fields restricted: either matches, and every month has every day of the week. With
    // the day of week unrestricted the day of month alone decides: it must exist in one of the
    // months (a restricted day of week with `*/n` days always has day 1).
    if (c.weekdays_star_) {
      int longest = 0;
      for (int m = 1; m <= 12; ++m) {
        if (c.months_ >> m & 1) {
          longest = std::max(longest, m == 2                                    ? 29
                                      : (m == 4 || m == 6 || m == 9 || m == 11) ? 30
                                                                                : 31);
        }
      }
      const int first = std::countr_zero(c.days_);
      if (first > longest) {
        return CronProblem{fields_column == 0 ? 0 : starts[2] + 1,
                           "day-of-month: no month given has a day " + std::to_string(first) +
                               " (" + std::to_string(longest) + " days at most)"};
      }
    }
  }

  auto found = find_zone(zone);
  if (auto* problem = std::get_if<std::string>(&found)) return CronProblem{0, std::move(*problem)};
  c.tz_ = std::get<const date::time_zone*>(found);
  return c;
}

std::int64_t Cron::next_after(std::int64_t unix_ms) const {
  if (unix_ms >= kLastMs) return kNever;
  if (every_ms_ > 0) {
    // (q + 1) * period is in (unix_ms, unix_ms + period]: no overflow below kLastMs.
    const std::int64_t next = (floor_div(unix_ms, every_ms_) + 1) * every_ms_;
    return next > kLastMs ? kNever : next;
  }
  // Ticks are whole seconds: the first one strictly after unix_ms is at or after this second.
  const std::int64_t after = floor_div(std::max(unix_ms, kFirstSecond * 1000 - 1), 1000) + 1;
  const std::int64_t tick =
      tz_ == nullptr ? next_local(after, kLastSecond + 1) : next_in_zone(after);
  return tick > kLastSecond ? kNever : tick * 1000;
}

std::int64_t Cron::next_in_zone(std::int64_t after) const {
  using std::chrono::seconds;
  // Through the zone's periods of constant offset ([begin, end) in real time, [begin + offset,
  // end + offset) on the wall clock), from the one holding `after`: the first period with a
  // tick has the answer. Each search stops at its period's end, so the work is proportional
  // to the time until the tick, as without a zone.
  for (std::int64_t from = after;;) {
    const date::sys_info info = tz_->get_info(date::sys_seconds{seconds{from}});
    const std::int64_t begin = info.begin.time_since_epoch().count();
    const std::int64_t end = info.end.time_since_epoch().count();
    const std::int64_t offset = info.offset.count();
    std::int64_t before = offset;  // the previous period's offset
    if (begin > kFirstSecond) {
      before = tz_->get_info(date::sys_seconds{seconds{begin - 1}}).offset.count();
    }
    // The clock jumped forward at `begin`: wall times in [begin + before, begin + offset) never
    // happened; if any was a tick, it fires once, at begin (together with a tick at begin).
    if (before < offset && begin >= after &&
        next_local(begin + before, begin + offset) < begin + offset) {
      return begin;
    }
    // The clock went back at `begin`: wall times in [begin + offset, begin + before) come a
    // second time. A fixed hour fired in the first; "every hour" follows real time.
    std::int64_t wall = from + offset;
    if (before > offset && hours_ != kEveryHour) wall = std::max(wall, begin + before);
    // The last period lasts to the year 32767: the search stops after 9999.
    const std::int64_t stop = std::min(end, kLastSecond + 1) + offset;
    const std::int64_t local = next_local(wall, stop);
    if (local < stop) return local - offset;
    if (end > kLastSecond) return kNoTick;
    from = end;
  }
}

std::int64_t Cron::next_local(std::int64_t from, std::int64_t until) const {
  // Day by day through the matching months, hour and minute by bit scans: a field never
  // iterates over its own values.
  const std::int64_t minute = floor_div(from + 59, 60);
  std::int64_t day = floor_div(minute, 1440);
  int in_day = static_cast<int>(minute - day * 1440);
  for (; day * 86400 < until; ++day, in_day = 0) {
    const date::sys_days today{date::days{day}};
    const date::year_month_day ymd{today};
    const auto month = static_cast<unsigned>(ymd.month());
    if ((months_ >> month & 1) == 0) {
      // To the first of the next month the field allows (the loop's ++day is undone).
      const std::uint32_t later = months_ & ~((2u << month) - 1);
      const auto next =
          later != 0 ? ymd.year() / date::month{static_cast<unsigned>(std::countr_zero(later))} / 1
                     : (ymd.year() + date::years{1}) /
                           date::month{static_cast<unsigned>(std::countr_zero(months_))} / 1;
      day = date::sys_days{next}.time_since_epoch().count() - 1;
      continue;
    }
    const bool dom = days_ >> static_cast<unsigned>(ymd.day()) & 1;
    const bool dow = weekdays_ >> date::weekday{today}.c_encoding() & 1;
    if (!days_star_ && !weekdays_star_ ? !(dom || dow) : !(dom && dow)) continue;
    const int hour = in_day / 60;
    if (hours_ >> hour & 1) {
      const std::uint64_t later = minutes_ & (~std::uint64_t{0} << (in_day % 60));
      if (later != 0) {
        const std::int64_t t = day * 86400 + hour * 3600 + std::countr_zero(later) * 60;
        return t < until ? t : kNoTick;
      }
    }
    const std::uint32_t later_hours = hours_ & ~((2u << hour) - 1);
    if (later_hours != 0) {
      const std::int64_t t =
          day * 86400 + std::countr_zero(later_hours) * 3600 + std::countr_zero(minutes_) * 60;
      return t < until ? t : kNoTick;
    }
  }
  return kNoTick;
}

std::vector<std::int64_t> Cron::ticks_between(std::int64_t from_ms, std::int64_t to_ms,
                                              std::size_t limit) const {
  std::vector<std::int64_t> out;
  for (std::int64_t t = from_ms; out.size() < limit;) {
    t = next_after(t);
    if (t > to_ms || t == kNever) break;
    out.push_back(t);
  }
  return out;
}

std::string zone_problem(std::string_view zone) {
  auto found = find_zone(zone);
  auto* problem = std::get_if<std::string>(&found);
  return problem ? std::move(*problem) : std::string();
}

}  // namespace jq::config
