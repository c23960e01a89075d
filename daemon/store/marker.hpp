// The marker jobqd appends to the copies of a job it writes (scripts.cpp's prelude describes it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace jq::store {

/// A job as jobqctl submits it: its JSON object's text with a marker of no attempts and the
/// time of submission, so that the state written at submission (submitted_at) is the one the
/// daemon keeps. `object` must end with the object's closing brace.
inline std::string marked_submission(std::string_view object, const std::string& id,
                                     std::int64_t submitted_at_ms) {
  std::string out(object.substr(0, object.rfind('}')));
  out += ",\"_jobq\":\"0|0|" + std::to_string(submitted_at_ms) + "||" + id + "\"}";
  return out;
}

/// The attempts a copy's marker counts (0 for a job as submitted, or one without a marker).
inline long long marker_attempts(std::string_view raw) {
  const std::string_view tag = ",\"_jobq\":\"";
  auto at = raw.rfind(tag);
  if (at == std::string_view::npos) return 0;
  long long a = 0;
  for (std::size_t i = at + tag.size(); i < raw.size() && raw[i] >= '0' && raw[i] <= '9'; ++i) {
    if (a > 1'000'000'000) break;
    a = a * 10 + (raw[i] - '0');
  }
  return a;
}

}  // namespace jq::store
