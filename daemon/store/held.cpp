// Settlements of held jobs: each op's fields from the job's Reading.
#include "store/held.hpp"

#include "job/id.hpp"

namespace jq::store::held {
namespace {

Settlement base(const Reading& r, Settlement::Op op, const std::string& started_at) {
  Settlement s;
  s.op = op;
  s.token = r.token;
  s.id = r.id;
  s.nonce = r.claims ? r.nonce : std::string();
  s.attempts = r.attempt;
  s.handler = r.handler;
  s.submitted_at = r.submitted_at;
  s.started_at = started_at;
  return s;
}

// The held copy marked with `attempts` counted: copy[0, cut) + tail.
void mark(Settlement& s, const Reading& r, long long attempts) {
  if (!r.copy.object_end || r.id.empty()) {
    // Never read as a job: back exactly as it came.
    s.cut = Copy::npos;
    s.tail.clear();
    return;
  }
  Marker m;
  m.attempts = attempts;
  m.max = r.max_attempts;
  m.submitted_at = r.submitted_at;
  // A job with a unique key keeps its nonce even without a claim: its lock names it.
  m.nonce = r.claims || !r.unique_key.empty() ? r.nonce : std::string();
  m.id = r.id;
  s.cut = r.copy.cut;
  s.tail = r.copy.tail(m);
}

}  // namespace

Settlement start(const Reading& r, const std::string& started_at) {
  Settlement s = base(r, Settlement::Op::start, started_at);
  s.fresh = !r.copy.marker || r.copy.marker->attempts == 0;
  if (!r.claims && !r.copy.marker) mark(s, r, r.attempt - 1);
  return s;
}

Settlement ok(const Reading& r, const std::string& started_at, std::string result) {
  Settlement s = base(r, Settlement::Op::ok, started_at);
  s.text = std::move(result);
  s.payload = r.payload;
  return s;
}

Settlement retry(const Reading& r, const std::string& started_at, std::string error,
                 job::ErrorKind kind, Millis delay) {
  Settlement s = base(r, Settlement::Op::retry, started_at);
  s.text = std::move(error);
  s.kind = kind;
  s.delay = delay;
  mark(s, r, r.attempt);
  return s;
}

Settlement dead(const Reading& r, const std::string& started_at, std::string error,
                job::ErrorKind kind) {
  Settlement s = base(r, Settlement::Op::dead, started_at);
  s.text = std::move(error);
  s.kind = kind;
  s.payload = r.payload;
  // Kept as the job was submitted, without jobqd's marker.
  s.cut = r.copy.body_cut();
  s.tail = r.copy.body_tail();
  if (!r.invalid.empty()) {
    // Never started: no state of its own yet, and never over another job's state.
    s.attempts = 0;
    s.started_at.clear();
    s.fresh_id = job::new_id();
    if (s.id.empty()) s.id = s.fresh_id;
  }
  return s;
}

Settlement cancel(const Reading& r, const std::string& started_at, std::string error) {
  Settlement s = base(r, Settlement::Op::cancel, started_at);
  s.text = std::move(error);
  s.payload = r.payload;
  s.kind = job::ErrorKind::cancelled;
  return s;
}

Settlement back(const Reading& r, bool owns_id) {
  Settlement s = base(r, Settlement::Op::back, "");
  s.state = owns_id;
  s.level = r.level;
  s.attempts = r.attempt - 1;
  mark(s, r, r.attempt - 1);
  return s;
}

Settlement wait(const Reading& r) {
  Settlement s = base(r, Settlement::Op::wait, "");
  s.delay = std::chrono::seconds(1);
  mark(s, r, r.attempt - 1);
  return s;
}

Settlement unlock(const Reading& r) {
  Settlement s = base(r, Settlement::Op::unlock, "");
  s.unique_key = r.unique_key;
  return s;
}

}  // namespace jq::store::held
