// ULID-style ids: a millisecond clock and randomness, incremented within the same millisecond.
#include "job/id.hpp"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>

namespace jq::job {
namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

struct State {
  std::uint64_t last_ms = 0;
  std::array<std::uint8_t, 10> random{};  // 80 bits, big-endian
};

thread_local State state;

void fill_random(std::array<std::uint8_t, 10>& r) {
  if (getrandom(r.data(), r.size(), 0) != static_cast<ssize_t>(r.size())) {
    // getrandom cannot fail for 10 bytes once the pool is up; mix the clock in just in case.
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    for (std::size_t i = 0; i < r.size(); ++i) r[i] ^= static_cast<std::uint8_t>(t >> (i * 6));
  }
}

}  // namespace

std::string new_id() {
  auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  if (ms > state.last_ms) {
    state.last_ms = ms;
    fill_random(state.random);
  } else {
    // Same (or an earlier, stepped-back) millisecond: keep the time, increment the random part
    // so ids from this process stay strictly increasing.
    ms = state.last_ms;
    for (int i = 9; i >= 0 && ++state.random[i] == 0; --i) {
    }
  }
  // 128 bits: 48 of time then 80 of randomness, as 26 base32 digits (the first carries 3 bits).
  std::array<std::uint8_t, 16> bytes{};
  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
  std::copy(state.random.begin(), state.random.end(), bytes.begin() + 6);
  std::string out(26, '0');
  // Read the 128-bit number 5 bits at a time from the least significant end.
  unsigned __int128 v = 0;
  for (auto b : bytes) v = (v << 8) | b;
  for (int i = 25; i >= 0; --i) {
    out[i] = kAlphabet[static_cast<int>(v & 31)];
    v >>= 5;
  }
  return out;
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
  });
}

}  // namespace jq::job
