// Reading and writing jobqd's marker on held copies of a job.
#include "store/marker.hpp"

#include <charconv>

namespace jq::store {
namespace {

constexpr std::string_view kField = "\"_jobq\":\"";
// The marker is always last; only the end of a copy is searched (ids and nonces are short).
constexpr std::size_t kSearch = 600;

bool blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::optional<long long> number(std::string_view s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// `a|m|s|n|id` into a Marker, or nullopt when it is not one.
std::optional<Marker> parse_fields(std::string_view v) {
  std::string_view part[5];
  for (int i = 0; i < 4; ++i) {
    auto bar = v.find('|');
    if (bar == std::string_view::npos) return std::nullopt;
    part[i] = v.substr(0, bar);
    v.remove_prefix(bar + 1);
  }
  part[4] = v;
  if (part[4].find('|') != std::string_view::npos) return std::nullopt;
  auto a = number(part[0]), m = number(part[1]);
  if (!a || !m) return std::nullopt;
  if (!part[2].empty() && !number(part[2])) return std::nullopt;
  Marker out;
  out.attempts = *a;
  out.max = *m;
  out.submitted_at = std::string(part[2]);
  out.nonce = std::string(part[3]);
  out.id = std::string(part[4]);
  return out;
}

}  // namespace

std::string Marker::field() const {
  return std::string(kField) + std::to_string(attempts) + "|" + std::to_string(max) + "|" +
         submitted_at + "|" + nonce + "|" + id + "\"";
}

Copy split(std::string_view copy) {
  Copy out;
  std::size_t end = copy.size();
  while (end > 0 && blank(copy[end - 1])) --end;
  if (end == 0 || copy[end - 1] != '}') {
    out.body = std::string(copy);
    out.cut = copy.size();
    return out;
  }
  out.object_end = true;
  const std::size_t close = end - 1;
  // `..."_jobq":"<fields>"}` at the very end: the field's value holds no quote.
  if (close >= 1 && copy[close - 1] == '"') {
    const std::size_t from = close > kSearch ? close - kSearch : 0;
    const std::size_t at = copy.rfind(kField, close);
    if (at != std::string_view::npos && at >= from) {
      const std::string_view value =
          copy.substr(at + kField.size(), close - 1 - (at + kField.size()));
      std::size_t before = at;
      while (before > 0 && blank(copy[before - 1])) --before;
      const bool comma = before > 0 && copy[before - 1] == ',';
      const bool opens = before > 0 && copy[before - 1] == '{';
      auto m = value.find('"') == std::string_view::npos ? parse_fields(value) : std::nullopt;
      if (m && (comma || opens)) {
        out.marker = std::move(m);
        out.cut = comma ? before - 1 : before;
        out.empty_object = opens;
        out.body = std::string(copy.substr(0, out.cut)) + "}";
        return out;
      }
    }
  }
  out.body = std::string(copy);
  out.cut = close;
  std::size_t p = close;
  while (p > 0 && blank(copy[p - 1])) --p;
  out.empty_object = p > 0 && copy[p - 1] == '{';
  return out;
}

std::string Copy::tail(const Marker& m) const {
  return (empty_object ? "" : ",") + m.field() + "}";
}

std::string marked_submission(std::string_view object, const std::string& id,
                              std::int64_t submitted_at_ms) {
  Marker m;
  m.submitted_at = std::to_string(submitted_at_ms);
  m.id = id;
  Copy c = split(object);
  return std::string(object.substr(0, c.cut)) + c.tail(m);
}

}  // namespace jq::store
