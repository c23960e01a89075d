// Durations ("250ms", "30s", "5m", "1h") and byte sizes ("64KiB", "1MB", "1048576") in config.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace jq::config {

using Millis = std::chrono::milliseconds;

/// Parses a duration written as a number and a unit: ms, s, m, h or d ("250ms", "1.5s", "5m",
/// "7d"), or a bare 0. Returns nullopt for anything else (another bare number is refused: its
/// unit would be a guess).
std::optional<Millis> parse_duration(std::string_view text);

/// Parses a size: a plain number of bytes, or a number with B, KB, MB, GB (powers of 1000) or
/// KiB, MiB, GiB (powers of 1024).
std::optional<std::uint64_t> parse_size(std::string_view text);

/// "250ms", "30s", "5m", "1h", "1h30m": the shortest exact form, for messages and docs.
std::string format_duration(Millis d);

/// "64KiB", "10MiB", or a plain number of bytes: the shortest exact form.
std::string format_size(std::uint64_t bytes);

}  // namespace jq::config
