// store::Admin's side of jobs that wait for other jobs (docs/workflows.md): a job with `after`
// submitted through the protocol's three steps, a flow written whole in one transaction, and what
// a waiting job still waits for.
#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/units.hpp"
#include "job/id.hpp"
#include "store/admin.hpp"
#include "store/admin_calls.hpp"
#include "store/after.hpp"
#include "store/marker.hpp"
#include "store/transaction.hpp"

namespace jq::store {
namespace {

using admin_calls::call;
using admin_calls::call_all;
using admin_calls::must;
using Kind = AdminError::Kind;

// How often a flow is tried again when a key it watched changed before its EXEC: the keys are
// its own jobs' states and its queues' waiting hashes, which few writes touch (a larger flow's:
// its queues' waiting and live hashes, which a busy queue's claims write).
constexpr int kFlowTries = 10;
// The most jobs whose states a flow watches one by one: Redis looks through a client's watched
// keys at each WATCH (50,000 took 13 s), so a larger flow watches its queues' waiting and live
// hashes instead, which is what after_wait.lua refuses by.
constexpr std::size_t kWatchEach = 2000;

// Whether the job of an id is not over, from its state's status, whether it is in its queue's
// waiting hash and whether a daemon's claim names it: a flow's job may not take that id (stricter
// than after_wait.lua, which looks at the claim only with a busy status: a flow is all or
// nothing, so a refusal inside its transaction must not be possible).
bool not_over(const std::string& status, bool waits, bool claimed) {
  if (waits || status == "active" || status == "queued" || status == "retrying" ||
      status == "waiting") {
    return true;
  }
  return claimed && !is_final(status);
}

// call_all in slices of 1,000 calls (a flow's reads and writes are one call per job): what one
// write holds stays bounded, and `between` runs after each slice (a flow written on a cluster
// renews its lease there).
template <class T>
std::vector<T> call_sliced(redis::SyncClient& c, const std::vector<Call<T>>& calls,
                           const std::function<void()>& between = {}) {
  constexpr std::size_t kSlice = 1000;
  std::vector<T> out;
  out.reserve(calls.size());
  for (std::size_t from = 0; from < calls.size(); from += kSlice) {
    const auto first = calls.begin() + static_cast<std::ptrdiff_t>(from);
    const auto last =
        calls.begin() + static_cast<std::ptrdiff_t>(std::min(calls.size(), from + kSlice));
    auto slice = call_all(c, std::vector<Call<T>>(first, last));
    out.insert(out.end(), slice.begin(), slice.end());
    if (between) between();
  }
  return out;
}

// What says whether each job of a flow may take its id: its state's status, whether it waits,
// whether a daemon's claim names it (not_over), read for every job in slices.
class IdReads {
 public:
  void add(const Keys& k, const std::string& id) {
    statuses_.push_back(job_status(k, id));
    claims_.push_back(read_claim(k, id));
    waiting_.push_back(is_waiting(k, id));
  }
  /// The positions of the jobs whose id names a job not over.
  std::vector<std::size_t> taken(redis::SyncClient& c) const {
    const auto status = call_sliced(c, statuses_);
    const auto claim = call_sliced(c, claims_);
    const auto waits = call_sliced(c, waiting_);
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < status.size(); ++i) {
      if (not_over(status[i], waits[i], !claim[i].empty())) out.push_back(i);
    }
    return out;
  }

 private:
  std::vector<Call<std::string>> statuses_, claims_;
  std::vector<Call<bool>> waiting_;
};

// `w` with its queue's bounds from the config, when it has them: whoever delivers its outcomes
// releases or ends it by them (store::Waiting).
Waiting bounded(const Layout& layout, Waiting w) {
  if (layout.keep_failed_ms) w.keep_failed_ms = layout.keep_failed_ms(w.queue);
  if (layout.max_job_bytes) w.max_job_bytes = layout.max_job_bytes(w.queue);
  return w;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

Millis Admin::after_timeout(const std::string& queue) const {
  const std::int64_t ms = layout_.after_timeout_ms ? layout_.after_timeout_ms(queue) : 0;
  return ms > 0 ? Millis(ms) : kDefaultAfterTimeout;
}

SubmitResult Admin::submit_waiting(const std::string& queue, const job::Job& job, std::int64_t now,
                                   std::optional<std::int64_t> run_at) {
  if (!job.unique_key.empty()) {
    throw AdminError(Kind::bad_input,
                     "unique_key: a job that waits for others (after) takes no unique key in "
                     "this version");
  }
  if (run_at) {
    throw AdminError(Kind::bad_input,
                     "a job that waits for others (after) is not delayed in this version: it "
                     "runs once they are final");
  }
  SubmitResult out{"waiting", job.id, "", ""};
  const Waiting w = bounded(layout_, waiting_of(job, queue, now, after_timeout(queue)));
  const Keys k = home_keys(queue, job.id);
  // The job first, then its dependencies' slots: an end between the two finds it to be told.
  if (!call(c_, after_wait(k, w))) {
    out.what = "taken";
    return out;
  }
  out.waits_for = w.refs.size();
  const HomeOf home = [this](const std::string& q, const std::string& id) {
    return home_keys(q, id);
  };
  for (const long long told : call_all(c_, after_registers(w, home))) {
    out.final_already += static_cast<std::size_t>(told);
  }
  call(c_, after_registered(k, job.id));
  return out;
}

FlowResult Admin::submit_flow(const std::string& queue, const job::Flow& flow, std::int64_t now) {
  auto name = [&](const std::string& q, const std::string& id) {
    return q == queue ? id : q + "/" + id;
  };
  std::vector<std::string> keyed;
  for (const auto& f : flow.jobs) {
    check_queue(f.queue);
    if (!f.job.unique_key.empty()) keyed.push_back(name(f.queue, f.job.id));
  }
  if (!keyed.empty()) {
    throw AdminError(
        Kind::bad_input,
        "unique_key: a flow's jobs take no unique key in this version: " + joined(keyed));
  }
  FlowResult out;
  // What it waits for outside it: a job of that queue seen (a state) or held (a claim) now.
  for (const auto& d : flow.outside) {
    if (!knows(d.queue, d.id)) out.unknown.push_back(name(d.queue, d.id));
  }
  if (!out.unknown.empty()) return out;
  // A cluster's slots take no transaction together: the flow is written in steps, gated.
  if (c_.url().kind == redis::Url::Kind::cluster) return write_flow_in_steps(queue, flow, now);

  // The transaction, built once: each job in the flow's order (what it waits for in the flow
  // before it), a plain submission or the three steps of a job that waits.
  const HomeOf home = [this](const std::string& q, const std::string& id) {
    return home_keys(q, id);
  };
  Transaction t;
  std::vector<std::pair<std::size_t, Call<bool>>> submits, waits;
  std::vector<std::pair<std::size_t, Call<long long>>> registers, registered;
  IdReads reads;
  std::vector<std::string> watched;
  std::set<std::string> hashes;  // the waiting (and live) hashes watched
  const bool each = flow.jobs.size() <= kWatchEach;
  for (const auto& f : flow.jobs) {
    const job::Job& j = f.job;
    const Keys k = home(f.queue, j.id);
    reads.add(k, j.id);
    if (each) watched.push_back(k.job(j.id));
    if (hashes.insert(k.waiting).second) watched.push_back(k.waiting);
    if (!each && hashes.insert(k.live).second) watched.push_back(k.live);
    if (j.after.empty()) {
      auto c = store::submit(k, j.id, f.queue, marked_submission(j.raw, j.id, now), now,
                             std::nullopt, j.priority);
      const std::size_t at = t.add(c);
      submits.emplace_back(at, std::move(c));
      continue;
    }
    const Waiting w = bounded(layout_, waiting_of(j, f.queue, now, after_timeout(f.queue)));
    auto c = after_wait(k, w);
    const std::size_t at = t.add(c);
    waits.emplace_back(at, std::move(c));
    for (auto& r : after_registers(w, home)) {
      const std::size_t r_at = t.add(r);
      registers.emplace_back(r_at, std::move(r));
    }
    auto done = after_registered(k, j.id);
    const std::size_t done_at = t.add(done);
    registered.emplace_back(done_at, std::move(done));
  }

  for (int attempt = 0; attempt < kFlowTries; ++attempt) {
    // Read under WATCH: a job of one of these ids that begins meanwhile (its state written, or
    // it enters waiting) voids the EXEC, and the reading is done again.
    must(watch(c_, watched));
    for (const std::size_t i : reads.taken(c_)) {
      out.taken.push_back(name(flow.jobs[i].queue, flow.jobs[i].job.id));
    }
    if (!out.taken.empty()) {
      must(unwatch(c_));
      return out;
    }
    const Executed ran = must(exec(c_, t));
    if (ran.aborted) continue;
    // Redis does not roll a transaction back: a step that failed as it ran is said, with what
    // the rest did.
    auto failed = [&](const OpError& e) {
      return AdminError(admin_calls::kind_of(e),
                        "the flow was written but one of its steps failed: " + e.message);
    };
    for (const auto& [at, c] : submits) {
      if (auto r = ran.get(at, c); !r.ok()) throw failed(r.error());
    }
    for (const auto& [at, c] : waits) {
      auto r = ran.get(at, c);
      if (!r.ok()) throw failed(r.error());
      if (!*r) {
        throw AdminError(Kind::redis,
                         "the flow was written but a job of it did not enter "
                         "waiting: another job of its id began meanwhile");
      }
    }
    for (const auto& [at, c] : registers) {
      auto r = ran.get(at, c);
      if (!r.ok()) throw failed(r.error());
      out.final_already += static_cast<std::size_t>(*r);
    }
    for (const auto& [at, c] : registered) {
      if (auto r = ran.get(at, c); !r.ok()) throw failed(r.error());
    }
    out.jobs = flow.jobs.size();
    out.waiting = waits.size();
    return out;
  }
  throw AdminError(Kind::redis,
                   "the flow's jobs or their queues' waiting jobs changed at each of " +
                       std::to_string(kFlowTries) +
                       " tries to write it; nothing was written: try again");
}

FlowResult Admin::write_flow_in_steps(const std::string& queue, const job::Flow& flow,
                                      std::int64_t now) {
  auto name = [&](const std::string& q, const std::string& id) {
    return q == queue ? id : q + "/" + id;
  };
  FlowResult out;
  // Ids whose job is not over, read first (no WATCH spans a cluster's slots: a job of such an id
  // that begins meanwhile is caught by its own step, after_wait.lua, and the flow is given up).
  IdReads reads;
  std::vector<Keys> homes;
  std::string members;
  for (const auto& f : flow.jobs) {
    homes.push_back(home_keys(f.queue, f.job.id));
    reads.add(homes.back(), f.job.id);
    members += f.queue + "/" + f.job.id + "\n";
  }
  for (const std::size_t i : reads.taken(c_)) {
    out.taken.push_back(name(flow.jobs[i].queue, flow.jobs[i].job.id));
  }
  if (!out.taken.empty()) return out;

  // 1. The record, in the queue's own slot (shard 0's): a daemon of the queue gives the flow up
  // if a step does not come within kFlowLease.
  out.flow = job::new_id();
  const Keys record(layout_.prefix, queue);
  if (call(c_, flow_step(record, FlowStep::begin, out.flow, members)) != 1) {
    throw AdminError(Kind::redis, "flow " + out.flow + ": its record exists already");
  }
  auto touch = [&] {
    if (call(c_, flow_step(record, FlowStep::touch, out.flow)) != 1) {
      throw AdminError(Kind::redis, "it took over " + config::format_duration(kFlowLease) +
                                        " between two steps, and a daemon of queue " + queue +
                                        " gave it up");
    }
  };
  try {
    // 2. Every job waits for the flow's gate (and what it names), a slice at a time.
    std::vector<Waiting> waits;
    std::vector<Call<bool>> enter;
    waits.reserve(flow.jobs.size());
    for (std::size_t i = 0; i < flow.jobs.size(); ++i) {
      const auto& f = flow.jobs[i];
      waits.push_back(bounded(layout_, waiting_of(f.job, f.queue, now, after_timeout(f.queue))));
      waits.back().flow = out.flow;
      enter.push_back(after_wait(homes[i], waits.back()));
    }
    const auto began = call_sliced(c_, enter, touch);
    for (std::size_t i = 0; i < began.size(); ++i) {
      if (!began[i]) out.taken.push_back(name(flow.jobs[i].queue, flow.jobs[i].job.id));
    }
    if (!out.taken.empty()) {
      // Another job of such an id began after the first reading: nothing of the flow runs.
      call(c_, flow_step(record, FlowStep::abort, out.flow,
                         "given up: " + std::to_string(out.taken.size()) +
                             " of its ids began as other jobs while it was written: " +
                             joined(out.taken)));
      out.given_up = true;
      return out;
    }
    // 3. What each job waits for learns of it, then it leaves `registering`.
    const HomeOf home = [this](const std::string& q, const std::string& id) {
      return home_keys(q, id);
    };
    std::vector<Call<long long>> registers, registered;
    for (std::size_t i = 0; i < waits.size(); ++i) {
      for (auto& r : after_registers(waits[i], home)) registers.push_back(std::move(r));
      registered.push_back(after_registered(homes[i], waits[i].id));
      if (!flow.jobs[i].job.after.empty()) ++out.waiting;
    }
    for (const long long told : call_sliced(c_, registers, touch)) {
      out.final_already += static_cast<std::size_t>(told);
    }
    call_sliced(c_, registered);
    // 4. The gate opens: each job is told through the queue's outbox (a daemon drains it).
    if (call(c_, flow_step(record, FlowStep::done, out.flow)) != 1) {
      throw AdminError(Kind::redis, "a daemon of queue " + queue +
                                        " gave it up before its last step (it took over " +
                                        config::format_duration(kFlowLease) + " between two)");
    }
  } catch (const AdminError& e) {
    // Given up now rather than at the lease's end (when Redis can be told at all).
    try {
      call(c_, flow_step(record, FlowStep::abort, out.flow, std::string("given up: ") + e.what()));
    } catch (const AdminError&) {
    }
    throw AdminError(e.kind, "flow " + out.flow + " not written whole: " + e.what() +
                                 "; none of its jobs runs (those written end cancelled)");
  }
  out.jobs = flow.jobs.size();
  return out;
}

std::optional<AfterLeft> Admin::waiting_for(const std::string& queue, const std::string& id) {
  return call(c_, after_left(home_keys(queue, id), id));
}

}  // namespace jq::store
