// The queue store's group_by fetch (docs/groups.md): pending sorted into groups, jobs taken round
// robin across them, then read and claimed as every fetch's are.
#include <algorithm>
#include <map>

#include "job/job.hpp"
#include "store/queue_store.hpp"

namespace jq::store {
namespace {

using namespace std::chrono_literals;

// The longest a group queue waits on pending: jobs another daemon sorted into the groups wake no
// wait on pending, so an idle daemon looks at the groups this often.
constexpr Millis kGroupBlock = 250ms;

// How long a group held back by its limit is shown so (metrics, dashboard) after its last turn.
constexpr auto kHeldBackShownFor = 5s;

// How many groups of the ring's head a fetch of `n` jobs looks at: more than it takes, so that
// groups held back by a limit (they pass their turn) do not leave it short.
std::size_t head_size(std::size_t n) {
  return std::min<std::size_t>(2 * n + 8, 200);
}

}  // namespace

async::Task<QueueStore::Waited> QueueStore::fetch_grouped(std::size_t n, Unclaimed claim) {
  Waited out;
  Fetched ready;
  if (!claim.empty()) {
    // The last fetch's jobs first, alone (as fetch(0, claim) always goes).
    Waited c = co_await fetch(0, std::move(claim));
    if (!c.got.ok()) {
      out.got = c.got.error();
      co_return out;
    }
    ready = std::move(*c.got);
  }
  // The groups may have jobs whatever became of the sort: take them; its error shows when
  // nothing else comes.
  std::optional<OpError> sort_error;
  const bool sorting = sort_due_;
  if (sorting) sort_error = co_await sort_pending();
  OpResult<Fetched> got = take(co_await take_from_groups(n, sorting), out.unclaimed);
  const bool none = ready.jobs.empty() && ready.waits.empty() && ready.duplicates.empty();
  if (!got.ok() || (sort_error && none && got->jobs.empty() && out.unclaimed.empty())) {
    if (none) {
      out.got = got.ok() ? *sort_error : got.error();
    } else {
      out.got = std::move(ready);
    }
    co_return out;
  }
  ready.append(std::move(*got));
  if (!out.unclaimed.empty() && !ready.lease_lost) {
    // Claimed now, not with the next fetch: a group queue's daemon fetches no more than it can
    // start, so a claim left for the next fetch would go alone anyway, a turn of the loop later.
    Waited c = co_await fetch(0, std::move(out.unclaimed));
    out.unclaimed = {};
    if (c.got.ok()) {
      for (auto& r : c.got->jobs) ready.jobs.push_back(std::move(r));
      for (auto& w : c.got->waits) ready.waits.push_back(std::move(w));
      for (auto& d : c.got->duplicates) ready.duplicates.push_back(std::move(d));
    }
  }
  out.got = std::move(ready);
  co_return out;
}

async::Task<QueueStore::Waited> QueueStore::wait_grouped(std::size_t n, Millis block) {
  // Nothing is pipelined behind this wait: it holds no job, so a stop meanwhile loses none.
  Wait wait = begin_wait(std::min(block, kGroupBlock));
  bool woke = false;
  const std::string error = co_await end_wait(wait, &woke);
  waiting_ = false;
  // A wait that ran out saw pending empty: nothing to sort, only the groups to look at.
  sort_due_ = woke || !error.empty();
  Unclaimed none;
  Waited out = co_await fetch_grouped(n, std::move(none));
  out.wait_error = error;
  co_return out;
}

async::Task<std::optional<OpError>> QueueStore::sort_pending() {
  // Held like any fetch's (fetch.lua without limits: those apply as jobs leave their groups), so
  // that nothing popped is ever unheld.
  const std::uint64_t first = next_token_;
  next_token_ += kSortBatch;
  fetching_from_ = first;
  fetching_to_ = first + kSortBatch;
  const auto hold = store::fetch(keys_, s_.worker, first, kSortBatch, s_.max_job_bytes + 600);
  OpResult<FetchBatch> held = co_await run(main_, hold);
  if (!held.ok()) {
    fetching_from_ = fetching_to_ = 0;
    co_return held.error();
  }
  if (held->lease_lost || held->paused || held->jobs.empty()) {
    fetching_from_ = fetching_to_ = 0;
    if (!held->lease_lost && !held->paused) sort_due_ = false;
    co_return std::nullopt;
  }
  // Each job's group, read by the daemon's parser (a script never parses a job); a job too large
  // to read here is in the default group (it goes dead when its turn comes).
  std::vector<std::string> groups;
  std::map<std::string, std::size_t> index;
  std::vector<std::pair<std::uint64_t, std::size_t>> jobs;
  jobs.reserve(held->jobs.size());
  for (const auto& h : held->jobs) {
    const std::string g = h.oversized ? std::string(job::kDefaultGroup)
                                      : job::group_of(split(h.copy).body, s_.groups.path);
    auto [it, added] = index.try_emplace(g, groups.size());
    if (added) groups.push_back(g);
    jobs.emplace_back(h.token, it->second);
  }
  std::optional<OpError> error;
  for (int attempt = 0; attempt < 2 && !jobs.empty(); ++attempt) {
    const auto sort = group_sort(keys_, s_.worker, groups, jobs);
    OpResult<GroupSorted> sorted = co_await run(main_, sort);
    if (!sorted.ok()) {
      error = sorted.error();
      break;
    }
    // A group whose list held garbage: moved aside, and its jobs (still held) sorted again.
    std::vector<std::pair<std::uint64_t, std::size_t>> again;
    for (std::size_t b : sorted->bad) {
      co_await repair_group(groups[b]);
      for (const auto& j : jobs) {
        if (j.second == b) again.push_back(j);
      }
    }
    jobs = std::move(again);
  }
  fetching_from_ = fetching_to_ = 0;
  // A full batch: more may wait in pending. The group fetch says how many are left.
  sort_due_ = held->jobs.size() == kSortBatch;
  co_return error;
}

async::Task<OpResult<FetchBatch>> QueueStore::take_from_groups(std::size_t n, bool sorted_now) {
  FetchBatch all;
  // Every try's tokens are in flight until take() holds them: reconcile leaves them alone.
  const std::uint64_t from = next_token_;
  fetching_from_ = from;
  bool sorted = sorted_now;
  for (int attempt = 0; attempt < 4 && n > 0; ++attempt) {
    const std::uint64_t first = next_token_;
    next_token_ += n;
    fetching_to_ = next_token_;
    const std::vector<std::string> named = group_head_;
    // Jobs that came to pending since the last sort first (their groups may be due before the
    // ones known), unless this fetch just sorted.
    const auto call =
        group_fetch(keys_, s_.worker, first, n, s_.max_job_bytes + 600, s_.rate, s_.global_slots,
                    s_.groups, named, head_size(n), others_, !sorted);
    OpResult<GroupFetched> got = co_await run(main_, call);
    if (!got.ok()) {
      if (attempt == 0) co_return got.error();
      break;  // what the earlier tries held runs; the error shows in the next fetch
    }
    if (got->sort_first) {
      (void)co_await sort_pending();
      sorted = true;
      fetching_from_ = from;  // the sort's own range ended; this fetch's goes on
      fetching_to_ = next_token_;
      continue;
    }
    FetchBatch& b = got->batch;
    all.now = b.now;
    all.lease_lost = b.lease_lost;
    all.paused = b.paused;
    all.limited_ms = b.limited_ms;
    all.limited_by = b.limited_by;
    if (b.lease_lost || b.paused) break;
    group_head_ = std::move(got->head);
    sort_due_ = got->pending > 0;
    group_view_.with_work = got->groups;
    note_held_back(got->waiting);
    for (auto& h : b.jobs) all.jobs.push_back(std::move(h));
    n -= std::min(n, b.jobs.size());
    // Workers holding a group's slots (or, with a global concurrency, any live worker) that
    // were not named: named from now on.
    for (auto& w : got->live) {
      if (w != s_.worker && std::find(others_.begin(), others_.end(), w) == others_.end()) {
        others_.push_back(std::move(w));
      }
    }
    bool again = !got->live.empty();
    for (std::size_t i : got->bad) {
      co_await repair_group(named[i]);
      again = true;
    }
    // The head had groups this call did not name (new ones, or another daemon's turns): ask
    // again, naming them (a limit that held the named ones back does not hold those).
    for (const auto& g : group_head_) {
      if (std::find(named.begin(), named.end(), g) == named.end()) again = true;
    }
    // Jobs came to pending meanwhile: sorted now, their groups' turns in this same fetch (not a
    // poll later, when a limit has this daemon looking every 50 ms).
    if (sort_due_ && n > 0 && attempt < 2) {
      (void)co_await sort_pending();
      sorted = true;
      fetching_from_ = from;  // the sort's own range ended; this fetch's goes on
      fetching_to_ = next_token_;
      again = true;
    }
    if (!again) break;
  }
  co_return all;
}

void QueueStore::note_held_back(const std::vector<std::pair<std::string, long long>>& waiting) {
  const auto now = async::Clock::now();
  for (const auto& [g, count] : waiting) held_back_seen_[g] = {count, now};
  // A group not held back again within this long is shown no more; the map stays small: only
  // the groups shown, and those seen since.
  std::vector<std::pair<std::string, long long>> shown;
  for (auto it = held_back_seen_.begin(); it != held_back_seen_.end();) {
    if (now - it->second.second > kHeldBackShownFor) {
      it = held_back_seen_.erase(it);
      continue;
    }
    shown.emplace_back(it->first, it->second.first);
    ++it;
  }
  std::stable_sort(shown.begin(), shown.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (shown.size() > kGroupsShown) {
    for (std::size_t i = kGroupsShown; i < shown.size(); ++i) held_back_seen_.erase(shown[i].first);
    shown.resize(kGroupsShown);
  }
  group_view_.held_back = std::move(shown);
}

async::Task<OpResult<long long>> QueueStore::ungroup() {
  // Named as the ring's head reads now (a script touches only the keys it is given), a bounded
  // call at a time: Redis is never held long, whatever the groups hold. Bounded per poll too:
  // a daemon of the queue that still has group_by (every daemon should have the same) sorts
  // pending into groups again meanwhile.
  constexpr std::size_t kGroupsPerCall = 100, kJobsPerCall = 1000;
  long long moved = 0, left = -1;
  for (int call = 0; call < 100; ++call) {
    const auto read = ring_head(keys_, kGroupsPerCall);
    OpResult<std::vector<std::string>> head = co_await run(main_, read);
    if (!head.ok()) co_return head.error();
    if (head->empty()) break;
    const auto move = store::ungroup(keys_, *head, kJobsPerCall);
    OpResult<Ungrouped> done = co_await run(main_, move);
    if (!done.ok()) co_return done.error();
    moved += done->moved;
    for (std::size_t b : done->bad) co_await repair_group((*head)[b]);
    // Done, or no progress (a foreign value moving aside failed: said by repair_group).
    if (done->left == 0 || (done->moved == 0 && left >= 0 && done->left >= left)) break;
    left = done->left;
  }
  co_return moved;
}

async::Task<void> QueueStore::repair_group(const std::string& group) {
  const auto fix = store::repair_group(keys_, group, unix_ms());
  OpResult<std::vector<Repaired>> fixed = co_await run(main_, fix);
  if (!fixed.ok()) {
    if (upkeep_errors_.due()) {
      spdlog::error("queue {}: group '{}' holds a foreign value, and moving it aside failed: {}",
                    s_.queue, group, fixed.error().message);
    }
    co_return;
  }
  for (const auto& x : *fixed) {
    spdlog::error(
        "queue {}: {}, of group '{}', held a {}, which is not what jobqd keeps there (garbage "
        "written by hand?); moved it aside to {} so that the group goes on: look at it, then "
        "delete it",
        s_.queue, x.key, group, x.type, x.moved_to);
  }
}

}  // namespace jq::store
