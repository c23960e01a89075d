// Parsing and printing of config durations and sizes.
#include "config/units.hpp"

#include <cctype>
#include <charconv>
#include <cmath>

namespace jq::config {
namespace {

// Splits "12.5ms" into 12.5 and "ms". The number must be non-negative and finite.
bool split(std::string_view text, double& number, std::string_view& unit) {
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    ++i;
  }
  if (i == 0) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc() || end != text.data() + i || !std::isfinite(number)) return false;
  unit = text.substr(i);
  return true;
}

}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
  if (text == "0") return Millis(0);  // zero needs no unit
  double n;
  std::string_view unit;
  if (!split(text, n, unit)) return std::nullopt;
  double ms;
  if (unit == "ms") {
    ms = n;
  } else if (unit == "s") {
    ms = n * 1000;
  } else if (unit == "m") {
    ms = n * 60'000;
  } else if (unit == "h") {
    ms = n * 3'600'000;
  } else if (unit == "d") {
    ms = n * 86'400'000;
  } else {
    return std::nullopt;
  }
  if (ms > 1e15) return std::nullopt;
  return Millis(static_cast<std::int64_t>(std::llround(ms)));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  double n;
  std::string_view unit;
  if (!split(text, n, unit)) return std::nullopt;
  double mult;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "KB") {
    mult = 1e3;
  } else if (unit == "MB") {
    mult = 1e6;
  } else if (unit == "GB") {
    mult = 1e9;
  } else if (unit == "KiB") {
    mult = 1024.0;
  } else if (unit == "MiB") {
    mult = 1024.0 * 1024;
  } else if (unit == "GiB") {
    mult = 1024.0 * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  double bytes = n * mult;
  if (bytes > 1e18 || bytes != std::floor(bytes)) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

std::string format_duration(Millis d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 1000 != 0) return std::to_string(ms) + "ms";
  auto s = ms / 1000;
  std::string out;
  if (s >= 2 * 86400 && s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s >= 3600) {
    out += std::to_string(s / 3600) + "h";
    s %= 3600;
  }
  if (s >= 60) {
    out += std::to_string(s / 60) + "m";
    s %= 60;
  }
  if (s > 0) out += std::to_string(s) + "s";
  return out;
}

std::string format_size(std::uint64_t bytes) {
  const char* units[] = {"GiB", "MiB", "KiB"};
  std::uint64_t scale = 1024ull * 1024 * 1024;
  for (const char* u : units) {
    if (bytes >= scale && bytes % scale == 0) return std::to_string(bytes / scale) + u;
    scale /= 1024;
  }
  return std::to_string(bytes);
}

}  // namespace jq::config
