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

}  // namespace jq::store
