// The marker jobqd appends to the copies of a job it writes back (daemon/store/lua/prelude.lua
// describes it): read and written here only, by the daemon and jobqctl; scripts just cut a copy
// and append what they are given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace jq::store {

/// What a marked copy says of its job.
struct Marker {
  long long attempts = 0;    // attempts counted so far
  long long max = 0;         // the effective max attempts
  std::string submitted_at;  // unix ms by Redis' clock, as text ("" when unknown)
  std::string nonce;         // the claim it owns its id under
  std::string id;
  /// The field's text as it goes after the job's other fields: `"_jobq":"a|m|s|n|id"`.
  std::string field() const;
};

/// A copy of a job as it is held: the job's own text, and jobqd's marker if it has one.
struct Copy {
  /// The job without the marker (a view into the copy when it has none; else the copy up to the
  /// marker, closed again).
  std::string body;
  std::optional<Marker> marker;
  /// Where a new end goes: copy[0, cut) + tail() is the copy with another marker.
  std::size_t cut = 0;
  bool empty_object = false;  // `{}` (plus a marker): the marker needs no comma
  bool object_end = false;    // it ends like an object (a marker can be appended)

  /// What follows copy[0, cut) for the copy to carry `m` (with the comma it needs).
  std::string tail(const Marker& m) const;
  /// cut and tail that give the job as submitted (its marker dropped): for the dead ones.
  std::size_t body_cut() const noexcept { return marker ? cut : npos; }
  std::string body_tail() const { return marker ? "}" : ""; }
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

/// Splits a held copy. Never throws; a copy that does not end like an object gets
/// object_end == false (it cannot carry a marker: it is invalid, and goes to the dead ones as
/// it came).
Copy split(std::string_view copy);

/// A job as jobqctl submits it: its JSON object's text with a marker of no attempts, so that the
/// submitted_at written at submission is the one the daemon keeps. `object` must end with the
/// object's closing brace.
std::string marked_submission(std::string_view object, const std::string& id,
                              std::int64_t submitted_at_ms);

}  // namespace jq::store
