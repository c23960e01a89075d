// The operator's reads and actions (store/admin.hpp) over a blocking client: where a job is, the
// listings, cancel, dead jobs, pause and the queue rows, for jobqctl and the daemon's /api/ alike.
#include "store/admin.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <set>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

#include "config/config.hpp"
#include "config/cron.hpp"
#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"
#include "store/admin_calls.hpp"
#include "store/marker.hpp"
#include "store/queue_store.hpp"
#include "store/schedules.hpp"
#include "store/shards.hpp"

namespace jq::store {
namespace {

using json = nlohmann::json;
using Kind = AdminError::Kind;

using admin_calls::call;
using admin_calls::call_all;
using admin_calls::kind_of;
using admin_calls::must;

// `make(k)` for the keys `k` of each shard, run as call_all: the values in shard order.
template <class F>
auto call_each(redis::SyncClient& c, const std::vector<Keys>& shards, F make) {
  std::vector<decltype(make(shards.front()))> calls;
  calls.reserve(shards.size());
  for (const auto& k : shards) calls.push_back(make(k));
  return call_all(c, calls);
}

// The sum of a count every shard keeps (pending_length, delayed_count, dead_count).
template <class F>
std::size_t summed(redis::SyncClient& c, const std::vector<Keys>& shards, F count) {
  long long sum = 0;
  for (const auto n : call_each(c, shards, count)) sum += n;
  return static_cast<std::size_t>(std::max(0LL, sum));
}

// The shards in the order a job of `home` is looked for: its home, then the others from shard 0
// on (a job pushed without going through jobqctl lands in shard 0 before it is sent home).
std::vector<std::size_t> search_order(std::size_t home, std::size_t shards) {
  std::vector<std::size_t> out{home};
  for (std::size_t i = 0; i < shards; ++i) {
    if (i != home) out.push_back(i);
  }
  return out;
}

// An entry of a sorted set each shard keeps (delayed, dead): its member, its score, its shard.
struct Scored {
  std::string member, score;
  std::size_t shard = 0;
};
// A slice of such a set by rank: delayed_slice or dead_slice.
using SliceCall = Call<std::vector<std::pair<std::string, std::string>>> (*)(const Keys&, long long,
                                                                             long long);

// The first `count` entries over every shard's set in score order, lowest first, or highest first
// when `highest` (for one shard, as Redis orders them, or the reverse). Each shard gives its own
// first `count`: the merged first `count` are among them.
std::vector<Scored> ranked(redis::SyncClient& c, const std::vector<Keys>& shards, SliceCall slice,
                           std::size_t count, bool highest) {
  std::vector<Scored> out;
  if (count == 0) return out;
  const auto n = static_cast<long long>(count);
  std::size_t shard = 0;
  for (auto& entries : call_each(c, shards, [&](const Keys& k) {
         return highest ? slice(k, -n, -1) : slice(k, 0, n - 1);
       })) {
    // A slice by rank comes lowest first: the highest ones read backwards.
    if (highest) std::reverse(entries.begin(), entries.end());
    for (auto& [member, score] : entries) {
      out.push_back({std::move(member), std::move(score), shard});
    }
    ++shard;
  }
  // Stable: one shard's own order (ties by member) stays. Scores are numbers Redis wrote.
  std::stable_sort(out.begin(), out.end(), [&](const Scored& a, const Scored& b) {
    const double x = std::strtod(a.score.c_str(), nullptr);
    const double y = std::strtod(b.score.c_str(), nullptr);
    return highest ? y < x : x < y;
  });
  if (out.size() > count) out.resize(count);
  return out;
}

// The rows of every shard (each in its own order) as one list, `limit` at most: each shard's next
// in turn. Pending jobs carry no time to order them by.
std::vector<JobRow> interleaved(std::vector<std::vector<JobRow>> shards, std::size_t limit) {
  std::vector<JobRow> out;
  for (std::size_t i = 0; out.size() < limit; ++i) {
    bool more = false;
    for (auto& rows : shards) {
      if (i >= rows.size() || out.size() >= limit) continue;
      out.push_back(std::move(rows[i]));
      more = true;
    }
    if (!more) break;
  }
  return out;
}

// Rows [offset, offset + limit) of `rows`.
std::vector<JobRow> page_of(std::vector<JobRow> rows, std::size_t offset) {
  if (offset >= rows.size()) return {};
  rows.erase(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(offset));
  return rows;
}

// A held or waiting copy of a job as a row: its id (from its marker, else its own field) and its
// payload; what is not a job is said so.
JobRow describe(const std::string& raw) {
  JobRow row;
  Copy copy = split(raw);
  auto parsed = job::parse_json(copy.body);
  auto* j = std::get_if<json>(&parsed);
  if (!j || !j->is_object()) {
    row.readable = false;
    row.body = "(not a job: " + job::to_utf8(job::clip_utf8(raw, 40)) + ")";
    return row;
  }
  if (copy.marker) {
    row.id = copy.marker->id;
  } else if (j->contains("id") && (*j)["id"].is_string()) {
    row.id = (*j)["id"].get<std::string>();
  }
  row.body = j->contains("payload") ? (*j)["payload"] : json();
  return row;
}

std::optional<std::uint64_t> token_of(const std::string& s) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

// A copy of a job waiting in pending or delayed, found by cancel.
struct detail::Waiting {
  std::string where;  // pending, delayed
  std::string body;
  std::string score;  // delayed: when it is due
  bool away = false;  // in shard 0, not in its id's home shard (not forwarded there yet)
};

namespace {

using detail::Waiting;

// The id a copy names: its marker's, else its JSON's own.
std::string id_of(const std::string& copy) {
  Copy c = split(copy);
  if (c.marker) return c.marker->id;
  auto parsed = job::parse_json(c.body);
  auto* j = std::get_if<json>(&parsed);
  if (j && j->is_object() && j->contains("id") && (*j)["id"].is_string()) {
    return (*j)["id"].get<std::string>();
  }
  return "";
}

// The place of a list in kWaitingLists (high, normal, low).
std::size_t level_of(const std::string& where) {
  for (std::size_t i = 0; i < std::size(kWaitingLists); ++i) {
    if (where == kWaitingLists[i]) return i;
  }
  return std::size(kWaitingLists);
}

// Every copy of the jobs `ids` in the queue's pending list and delayed set, by id, each id's in
// the order cancel tries them: a retry waiting in delayed first, then the oldest in pending, then
// the rest. Read in slices, so that a long list never holds Redis in one reply; once for all the
// ids (a bulk cancel reads the list once, not once per job).
std::map<std::string, std::vector<Waiting>> copies_of(redis::SyncClient& c, const Keys& k,
                                                      const std::set<std::string>& ids) {
  constexpr long long kSlice = 1000;
  // One id: a plain substring test first, cheaper than reading each copy's JSON.
  const std::string* only = ids.size() == 1 ? &*ids.begin() : nullptr;
  auto which = [&](const std::string& raw) -> const std::string* {
    if (ids.empty() || (only && raw.find(*only) == std::string::npos)) return nullptr;
    auto it = ids.find(id_of(raw));
    return it == ids.end() ? nullptr : &*it;
  };
  struct Seen {
    std::vector<Waiting> pending, retries, delayed;
  };
  std::map<std::string, Seen> seen;
  // The lists of priorities too (docs/priorities.md); each list's oldest first, below.
  for (const char* list : kWaitingLists) {
    const long long n = ids.empty() ? 0 : call(c, pending_length(k, list));
    for (long long from = 0; from < n; from += kSlice) {
      for (auto& e : call(c, pending_slice(k, from, from + kSlice - 1, list))) {
        if (const auto* id = which(e)) seen[*id].pending.push_back({list, std::move(e), "", false});
      }
    }
  }
  const long long m = ids.empty() ? 0 : call(c, delayed_count(k));
  for (long long from = 0; from < m; from += kSlice) {
    for (auto& [e, score] : call(c, delayed_slice(k, from, from + kSlice - 1))) {
      const auto* id = which(e);
      if (!id) continue;
      Copy cut = split(e);
      auto& to = cut.marker && cut.marker->attempts > 0 ? seen[*id].retries : seen[*id].delayed;
      to.push_back({"delayed", std::move(e), std::move(score), false});
    }
  }
  std::map<std::string, std::vector<Waiting>> out;
  for (auto& [id, s] : seen) {
    std::vector<Waiting>& v = out[id] = std::move(s.retries);
    // Consumed from the right: oldest first within each list (the lists in kWaitingLists' order).
    std::stable_sort(s.pending.begin(), s.pending.end(), [](const Waiting& a, const Waiting& b) {
      return level_of(a.where) < level_of(b.where);
    });
    for (auto at = s.pending.begin(); at != s.pending.end();) {
      auto end =
          std::find_if(at, s.pending.end(), [&](const Waiting& w) { return w.where != at->where; });
      std::reverse(at, end);
      at = end;
    }
    for (auto* from : {&s.pending, &s.delayed}) {
      v.insert(v.end(), std::make_move_iterator(from->begin()),
               std::make_move_iterator(from->end()));
    }
  }
  return out;
}

// Moves a copy found away from its id's home shard (in shard 0) home, as a daemon fetching it
// would, so that the cancel script finds it there with the job's state and claim (one script
// touches one shard). Taken out first: false when a daemon took it meanwhile (look again), and
// never two copies of it. Were the process to die between the two steps, the job being cancelled
// would be lost, not run twice.
bool bring_home(redis::SyncClient& c, const Keys& from, const Keys& home, const Waiting& copy) {
  if (!call(c, take_copy(from, copy.where, copy.body))) return false;
  if (from.waiting_list(copy.where)) {
    call(c, push_pending(home, {copy.body}, copy.where));
  } else {
    call(c, put_delayed(home, copy.body, copy.score));
  }
  return true;
}

bool listable(const std::string& state) {
  return std::find(std::begin(kListStates), std::end(kListStates), state) != std::end(kListStates);
}

}  // namespace

const std::string& check_queue(const std::string& queue) {
  if (!config::valid_name(queue)) {
    throw AdminError(Kind::bad_input, "queue name '" + job::to_utf8(job::clip_utf8(queue, 80)) +
                                          "': use 1-64 characters of [A-Za-z0-9_.-]");
  }
  return queue;
}

const std::string& check_id(const std::string& id, const std::string& what) {
  if (!job::valid_id(id)) {
    throw AdminError(Kind::bad_input, what + " '" + job::to_utf8(job::clip_utf8(id, 80)) +
                                          "': use 1-128 characters of [A-Za-z0-9_.:-]");
  }
  return id;
}

Admin::Admin(redis::SyncClient& c, Layout layout) : c_(c), layout_(std::move(layout)) {}

std::vector<std::string> Admin::known_queues() {
  std::vector<std::string> out = layout_.config_queues;
  auto served = run(c_, registered_queues(layout_.prefix));
  if (!served.ok()) {
    const std::string why = Keys::registry(layout_.prefix) +
                            " is not the set of queues jobqd keeps (" + served.error().message +
                            "): delete it, and the daemons write it again at their next start";
    // Without the config's queues there is nothing to show: never an empty list that looks
    // like the truth.
    if (out.empty()) throw AdminError(kind_of(served.error()), why);
    if (layout_.warn) layout_.warn(why + "; only the config's queues are known");
    return out;
  }
  for (auto& name : *served) {
    if (config::valid_name(name) && std::find(out.begin(), out.end(), name) == out.end()) {
      out.push_back(std::move(name));
    }
  }
  return out;
}

std::size_t Admin::shard_count(const std::string& queue) {
  if (auto known = shard_counts_.find(queue); known != shard_counts_.end()) return known->second;
  auto value = run(c_, read_shards(Keys(layout_.prefix, queue)));
  if (!value.ok() && value.error().kind != OpError::Kind::shape) {
    throw AdminError(kind_of(value.error()), value.error().message);
  }
  if (!value.ok()) {
    throw AdminError(Kind::garbage, value.error().message +
                                        ": every jobqd serving the queue writes it at its start "
                                        "(queues." +
                                        queue +
                                        ".shards of its config); set it to that, or delete it "
                                        "and restart them");
  }
  // None written yet (no daemon has served the queue): the config's count fills in.
  std::size_t n = *value;
  if (n == 0 && layout_.config_shards) n = layout_.config_shards(queue);
  if (n == 0) n = 1;
  shard_counts_.emplace(queue, n);
  return n;
}

std::vector<Keys> Admin::shard_keys(const std::string& queue) {
  std::vector<Keys> out;
  for (const auto& tag : shard_tags(queue, shard_count(queue))) {
    out.emplace_back(layout_.prefix, queue, tag);
  }
  return out;
}

Keys Admin::home_keys(const std::string& queue, const std::string& id) {
  const std::size_t n = shard_count(queue);
  const std::size_t home = home_shard(id, n);
  if (home == 0) return Keys(layout_.prefix, queue);
  // Only the home's tag is needed, but shard k's tag depends on the windows before it.
  return Keys(layout_.prefix, queue, shard_tags(queue, n)[home]);
}

// The daemon holding a claimed job now ("" when none does): a claim names its hold
// (`nonce` or `nonce@worker:token`), and the hold is checked to be there still.
std::string Admin::holder(const Keys& k, const std::string& claim) {
  std::string_view v = claim;
  if (auto at = v.rfind('@'); at != std::string_view::npos) v.remove_prefix(at + 1);
  auto colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return "";
  const std::string worker(v.substr(0, colon)), token(v.substr(colon + 1));
  if (token.empty() || token.find_first_not_of("0123456789") != std::string::npos) return "";
  auto held = run(c_, holds(k, worker, token));
  return held.ok() && *held ? worker : "";
}

// Job `id` in one shard: its state, and whether a daemon holds it now.
JobView Admin::look(const Keys& k, const std::string& queue, const std::string& id) {
  JobView s;
  s.id = id;
  s.queue = queue;
  s.state = call(c_, read_state(k, id));
  s.status = s.state.count("status") ? s.state.at("status") : "";
  s.status = shown_status(k, s.status, call(c_, read_claim(k, id)), &s.held_by);
  return s;
}

std::string Admin::shown_status(const Keys& k, const std::string& status, const std::string& claim,
                                std::string* held_by) {
  if (claim.empty() || is_final(status)) return status;
  const std::string by = holder(k, claim);
  if (held_by) *held_by = by;
  // A short attempt's state is written only at its end: its hold says it runs.
  return by.empty() ? status : "active";
}

// At its home shard, else at the first other shard (search_order) holding a state for it: an id
// jobqd gave a job it could not read may live in the shard that job was fetched from.
JobView Admin::job(const std::string& queue, const std::string& id) {
  const auto shards = shard_keys(queue);
  const auto order = search_order(home_shard(id, shards.size()), shards.size());
  JobView home = look(shards[order.front()], queue, id);
  if (home.exists()) return home;
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (!call(c_, read_state(shards[order[i]], id)).empty()) {
      return look(shards[order[i]], queue, id);
    }
  }
  return home;
}

// Whether `queue` knows of job `id`: a state in any of its shards (its home first), or a claim at
// its home.
bool Admin::knows(const std::string& queue, const std::string& id) {
  const auto shards = shard_keys(queue);
  const std::size_t home = home_shard(id, shards.size());
  for (const auto i : search_order(home, shards.size())) {
    if (!call(c_, read_state(shards[i], id)).empty()) return true;
    if (i == home && !call(c_, read_claim(shards[i], id)).empty()) return true;
  }
  return false;
}

std::string Admin::find_queue(const std::string& id, const std::string& queue) {
  if (!queue.empty()) return check_queue(queue);
  check_id(id);
  const auto names = known_queues();
  for (const auto& q : names) {
    if (knows(q, id)) return q;
  }
  throw AdminError(Kind::not_found,
                   "no job " + id + " in any known queue (" +
                       (names.empty() ? std::string("none known") : std::to_string(names.size())) +
                       "; " + layout_.name_the_queue + " for a job that has no state yet)");
}

// The jobs daemons hold, running or buffered, told apart by what each daemon says it runs (its
// heartbeat); those from `offset` on, up to `limit`, into `rows`. Returns how many there are.
std::size_t Admin::held_rows(const std::vector<Keys>& shards, const std::string& queue,
                             bool running_ones, std::size_t offset, std::size_t limit,
                             std::vector<JobRow>& rows) {
  auto workers = call(c_, read_workers(layout_.prefix));
  std::map<std::string, std::set<std::uint64_t>> running;
  std::set<std::string> told;
  for (const auto& h : workers.live) {
    auto q = h.queues.find(queue);
    if (q == h.queues.end()) continue;
    told.insert(h.worker);
    running[h.worker].insert(q->second.running_tokens.begin(), q->second.running_tokens.end());
  }
  std::size_t total = 0;
  // Each shard has its leases and holds (a daemon holds a lease in every shard it fetches from).
  for (const auto& k : shards) {
    for (const auto& w : call(c_, lease_holders(k))) {
      auto held = run(c_, held_copies(k, w));
      if (!held.ok()) continue;
      for (const auto& [token, copy] : *held) {
        const auto tok = token_of(token);
        // A daemon that does not say (gone, or another version): its jobs count as running.
        const bool runs = !told.count(w) || (tok && running[w].count(*tok));
        if (runs != running_ones) continue;
        if (total++ < offset || rows.size() >= limit) continue;
        JobRow row = describe(copy);
        row.worker = w;
        rows.push_back(std::move(row));
      }
    }
  }
  return total;
}

JobPage Admin::list(const std::string& queue, const std::string& state, std::size_t offset,
                    std::size_t limit, bool newest) {
  check_queue(queue);
  if (!listable(state)) {
    throw AdminError(Kind::bad_input, "state '" + job::to_utf8(job::clip_utf8(state, 40)) +
                                          "': use pending, delayed, running, buffered or dead");
  }
  const auto shards = shard_keys(queue);
  JobPage page;
  page.queue = queue;
  page.state = state;
  page.offset = offset;
  // The first offset + limit of the merged order come from the first offset + limit of each
  // shard's own.
  const std::size_t reach = limit == 0 ? 0 : offset + limit;
  if (state == "running" || state == "buffered") {
    page.total = held_rows(shards, queue, state == "running", offset, limit, page.jobs);
  } else if (state == "pending") {
    // Every list jobs wait in (docs/priorities.md), in the order a queue with priorities
    // takes them: high, normal, low (newest first: the other way round).
    page.total = 0;
    for (const char* list : kWaitingLists) {
      page.total += summed(c_, shards, [list](const Keys& k) { return pending_length(k, list); });
    }
    if (reach == 0) return page;
    // Pushed on the left, taken from the right: the oldest is the last element.
    const auto n = static_cast<long long>(reach);
    std::vector<std::vector<JobRow>> found(shards.size());
    std::vector<const char*> lists(std::begin(kWaitingLists), std::end(kWaitingLists));
    if (newest) std::reverse(lists.begin(), lists.end());
    for (const char* list : lists) {
      std::size_t shard = 0;
      for (const auto& items : call_each(c_, shards, [&](const Keys& k) {
             return newest ? pending_slice(k, 0, n - 1, list) : pending_slice(k, -n, -1, list);
           })) {
        auto& into = found[shard++];
        if (newest) {
          for (const auto& item : items) into.push_back(describe(item));
        } else {
          for (auto it = items.rbegin(); it != items.rend(); ++it) into.push_back(describe(*it));
        }
      }
    }
    page.jobs = page_of(interleaved(std::move(found), reach), offset);
  } else if (state == "delayed") {
    page.total = summed(c_, shards, delayed_count);
    auto entries = ranked(c_, shards, delayed_slice, reach, newest);
    for (std::size_t i = offset; i < entries.size(); ++i) {
      JobRow row = describe(entries[i].member);
      row.when = std::move(entries[i].score);
      page.jobs.push_back(std::move(row));
    }
  } else {  // dead
    page.total = summed(c_, shards, dead_count);
    auto entries = ranked(c_, shards, dead_slice, reach, newest);
    for (std::size_t i = offset; i < entries.size(); ++i) {
      JobRow row;
      row.id = std::move(entries[i].member);
      row.when = std::move(entries[i].score);
      // Its state in the shard it died in.
      row.state = call(c_, read_state(shards[entries[i].shard], row.id));
      row.body = row.state["error_kind"] + ": " + row.state["error"];
      page.jobs.push_back(std::move(row));
    }
  }
  return page;
}

std::int64_t Admin::keep_failed_ms(const std::string& queue) const {
  const std::int64_t keep = layout_.keep_failed_ms ? layout_.keep_failed_ms(queue) : 0;
  return keep > 0 ? keep : config::QueueConfig{}.retain.failed.count();
}

// The request to the daemon holding the job (the cancel script's `request`): it stands until
// that daemon reads it, or the claim it names is gone.
CancelStep Admin::request_cancel(const Keys& k, const std::string& queue, const std::string& id,
                                 const JobView& seen, bool asked) {
  const Millis keep(keep_failed_ms(queue));
  auto r = call(c_, cancel(k, queue, id, "request", "", keep, ""));
  CancelStep step{"", seen.status, ""};
  if (asked) {
    // Asked before: what it answers now changes nothing; the job's state tells its end.
    step.what = seen.exists() ? "requested" : "gone";
  } else if (r.what == "requested") {
    step.what = "requested";
    step.was = seen.held_by.empty() ? "held by a daemon" : "running";
  } else if (r.what == "final") {
    step = {"final", r.status, "over"};
  } else {
    step.what = "unheld";  // no claim stands, yet its state is not over: look again
  }
  return step;
}

// A job waiting in pending, delayed or for its dependencies is taken out and cancelled here; one
// a daemon holds (running, or in its buffer) gets a request that every jobqd reads within a
// second, and the one holding it stops it as at a timeout.
CancelStep Admin::cancel_step(const std::string& queue, const std::string& id,
                              const std::string& why, bool asked) {
  check_queue(queue);
  check_id(id);
  const auto shards = shard_keys(queue);
  if (asked) {
    const Keys& k = shards[home_shard(id, shards.size())];
    const JobView seen = look(k, queue, id);
    if (is_final(seen.status)) return {"final", seen.status, ""};
    return request_cancel(k, queue, id, seen, true);
  }
  // Its copies at its home, and in shard 0, where a plain LPUSH lands before a daemon sends it
  // home.
  const auto copies = [&] {
    const std::size_t home = home_shard(id, shards.size());
    const std::set<std::string> one{id};
    auto at_home = copies_of(c_, shards[home], one);
    std::vector<Waiting> out = std::move(at_home[id]);
    if (home != 0) {
      auto away = copies_of(c_, shards.front(), one);
      for (auto& copy : away[id]) {
        copy.away = true;
        out.push_back(std::move(copy));
      }
    }
    return out;
  };
  return cancel_found(shards, queue, id, why, copies);
}

// The request and the state at the job's home; its copies only when no daemon holds it.
UniqueRule unique_rule(const config::UniqueConfig& u) {
  UniqueRule r;
  r.mode = u.mode == "debounce"   ? UniqueRule::Mode::debounce
           : u.mode == "throttle" ? UniqueRule::Mode::throttle
                                  : UniqueRule::Mode::lock;
  r.hold = u.hold;
  r.queued = std::find(u.during.begin(), u.during.end(), "queued") != u.during.end();
  r.running = std::find(u.during.begin(), u.during.end(), "running") != u.during.end();
  return r;
}

SubmitResult Admin::submit(const std::string& queue, const job::Job& job, std::int64_t now,
                           std::optional<std::int64_t> run_at) {
  check_queue(queue);
  if (!job.after.empty()) return submit_waiting(queue, job, now, run_at);
  SubmitResult out{"queued", job.id, job.unique_key, ""};
  // Into the id's home shard, where its state and claim are: no daemon needs to send it there.
  const Keys k = home_keys(queue, job.id);
  const std::string copy = marked_submission(job.raw, job.id, now);
  if (job.unique_key.empty()) {
    if (!call(c_, store::submit(k, job.id, queue, copy, now, run_at, job.priority))) {
      out.what = "waits";
    }
    return out;
  }
  if (const std::size_t n = shard_count(queue); n > 1) {
    throw AdminError(Kind::bad_input, "unique_key: queue " + queue + " has " + std::to_string(n) +
                                          " shards; unique jobs need a queue of one shard");
  }
  UniqueAsk ask;
  ask.key = job.unique_key;
  if (layout_.unique_rule) ask.rule = layout_.unique_rule(queue);
  ask.keep_failed = Millis(keep_failed_ms(queue));
  // Debounce names the holder it may replace: the script says who holds it when that is not the
  // one named (none at first), and the submission goes again naming it.
  for (int tries = 0; tries < 20; ++tries) {
    const Submitted s =
        call(c_, store::submit(k, job.id, queue, copy, now, run_at, ask, job.priority));
    switch (s.what) {
      case Submitted::What::queued:
        out.replaced = s.other;
        return out;
      case Submitted::What::waits:
        out.what = "waits";
        return out;
      case Submitted::What::duplicate:
        out.what = "duplicate";
        out.id = s.other;
        return out;
      case Submitted::What::again:
        ask.expected = s.other;
        break;
      case Submitted::What::garbage: {
        auto moved = call(c_, repair_lock(k, job.unique_key, unix_ms()));
        for (const auto& m : moved) {
          if (layout_.warn) {
            layout_.warn(m.key + ", the lock of unique key '" + job::clip_utf8(job.unique_key, 80) +
                         "', held a " + m.type +
                         ", which is not what jobqd keeps there; moved it aside to " + m.moved_to);
          }
        }
        if (moved.empty())
          throw AdminError(Kind::garbage, k.unique(job.unique_key) + ": " + s.other);
        break;
      }
    }
  }
  throw AdminError(Kind::redis, "the holder of unique key '" + job::clip_utf8(job.unique_key, 80) +
                                    "' kept changing while submitting; try again");
}

CancelStep Admin::cancel_found(const std::vector<Keys>& shards, const std::string& queue,
                               const std::string& id, const std::string& why,
                               const std::function<std::vector<Waiting>()>& copies_now) {
  const Keys& k = shards[home_shard(id, shards.size())];
  const JobView seen = look(k, queue, id);
  if (!seen.held_by.empty()) return request_cancel(k, queue, id, seen, false);
  const Millis keep(keep_failed_ms(queue));
  const bool payload = layout_.retain_payload && layout_.retain_payload(queue);
  // Waiting for its dependencies: taken out of `waiting` and cancelled there; its dependents are
  // told. One released meanwhile is looked for again (it is in pending now, or held).
  if (seen.status == "waiting") {
    const std::string copy = call(c_, waiting_copy(k, id));
    if (!copy.empty()) {
      const std::string was = "waiting for its dependencies";
      auto r = call(c_, cancel(k, queue, id, "waiting", copy, keep, why + " while " + was,
                               payload ? retained_payload(copy) : std::string()));
      if (r.what == "cancelled") return {"cancelled", "cancelled", was};
      return {"raced", seen.status, ""};
    }
  }
  for (const auto& copy : copies_now()) {
    if (copy.away && !bring_home(c_, shards.front(), k, copy)) return {"raced", seen.status, ""};
    const std::string was = k.waiting_list(copy.where) ? "queued" : "waiting in delayed";
    // Its lock goes with it (the key its submission or claim recorded in its state), unless
    // the queue keeps locks for their window.
    std::string unique_key;
    const bool throttled =
        layout_.unique_rule && layout_.unique_rule(queue).mode == UniqueRule::Mode::throttle;
    if (auto it = seen.state.find("unique_key"); it != seen.state.end() && !throttled) {
      unique_key = it->second;
    }
    auto r = call(c_, cancel(k, queue, id, copy.where, copy.body, keep, why + " while " + was,
                             payload ? retained_payload(copy.body) : std::string(), unique_key));
    if (r.what == "cancelled") return {"cancelled", "cancelled", was};
    // A daemon took it meanwhile: look again.
    if (r.what == "gone") return {"raced", seen.status, ""};
  }
  if (is_final(seen.status)) return {"final", seen.status, "over"};
  if (seen.state.empty()) throw AdminError(Kind::not_found, "no job " + id + " in queue " + queue);
  // Queued or retrying, yet in neither place: a daemon holds it.
  return request_cancel(k, queue, id, seen, false);
}

std::vector<CancelDone> Admin::cancel_many(const std::string& queue,
                                           const std::vector<std::string>& ids,
                                           const std::string& why,
                                           std::chrono::steady_clock::time_point until) {
  check_queue(queue);
  for (const auto& id : ids) check_id(id);
  const auto shards = shard_keys(queue);
  // Each id once, in the order given; what each shard is read for: the ids whose home it is,
  // and in shard 0 every id (a plain LPUSH lands there before a daemon sends a job home).
  std::vector<std::string> order;
  std::map<std::size_t, std::set<std::string>> reads;
  for (const auto& id : ids) {
    const std::size_t home = home_shard(id, shards.size());
    if (!reads[home].insert(id).second) continue;
    order.push_back(id);
    if (home != 0) reads[0].insert(id);
  }
  // The waiting copies, each shard read once for all of its ids: those at the id's home first,
  // then those away from it (as cancel_step orders them).
  std::map<std::string, std::vector<Waiting>> copies, away;
  for (const auto& [shard, these] : reads) {
    for (auto& [id, found] : copies_of(c_, shards[shard], these)) {
      const bool at_home = home_shard(id, shards.size()) == shard;
      for (auto& copy : found) {
        copy.away = !at_home;
        (at_home ? copies : away)[id].push_back(std::move(copy));
      }
    }
  }
  for (auto& [id, found] : away) {
    auto& to = copies[id];
    to.insert(to.end(), std::make_move_iterator(found.begin()),
              std::make_move_iterator(found.end()));
  }
  std::vector<CancelDone> out;
  out.reserve(order.size());
  for (const auto& id : order) {
    if (std::chrono::steady_clock::now() >= until) {
      out.push_back({id, {"late", "", ""}});
      continue;
    }
    CancelStep step;
    try {
      const auto known = [&] { return std::move(copies[id]); };
      step = cancel_found(shards, queue, id, why, known);
      // A daemon took it between the read and the cancel: once more, as jobqctl cancel would.
      if (step.what == "raced") step = cancel_step(queue, id, why);
    } catch (const AdminError& e) {
      if (e.kind != Kind::not_found) throw;
      step = {"missing", "", ""};
    }
    out.push_back({id, std::move(step)});
  }
  return out;
}

// Dead jobs are kept per shard: retry and purge act in each.
long long Admin::dead_action(const std::string& queue, const std::vector<std::string>& ids,
                             bool all, bool retry) {
  check_queue(queue);
  const auto shards = shard_keys(queue);
  if (ids.empty() != all) {
    throw AdminError(Kind::bad_input, "give the ids of dead jobs, or all (not both)");
  }
  for (const auto& id : ids) check_id(id);
  long long done = 0;
  for (const auto& k : shards) {
    // The ids given: in every shard (the scripts leave a shard where one is not dead alone); a
    // dead job is usually at its id's home, but one jobqd could not read stays where it was
    // fetched.
    std::vector<std::string> in_shard;
    if (all) {
      const long long total = call(c_, dead_count(k));
      for (long long from = 0; from < total; from += 10000) {
        for (auto& [dead_id, score] : call(c_, dead_slice(k, from, from + 9999))) {
          in_shard.push_back(std::move(dead_id));
        }
      }
    }
    const std::vector<std::string>& these = all ? in_shard : ids;
    // In slices, so that a large dead set does not hold Redis in one long script.
    for (std::size_t i = 0; i < these.size(); i += 500) {
      const std::vector<std::string> slice(
          these.begin() + static_cast<std::ptrdiff_t>(i),
          these.begin() + static_cast<std::ptrdiff_t>(std::min(these.size(), i + 500)));
      if (!retry) {
        done += call(c_, drop_dead(k, slice));
        continue;
      }
      // Each back to its priority's list, as a submission of it would go (the script reads no
      // job: the one parse is ours). One read of the copies, one call per level present.
      const auto copies = call(c_, dead_bodies(k, slice));
      std::array<std::vector<std::string>, job::kPriorities> by_level;
      for (std::size_t j = 0; j < slice.size(); ++j) {
        const std::string_view copy = j < copies.size() ? copies[j] : std::string_view();
        by_level[static_cast<std::size_t>(job::priority_of_text(copy))].push_back(slice[j]);
      }
      for (std::size_t level = 0; level < by_level.size(); ++level) {
        if (!by_level[level].empty()) done += call(c_, requeue_dead(k, by_level[level], level));
      }
    }
  }
  if (!all && done == 0) {
    // Five named at most: a list from a page's bulk action may hold thousands.
    std::string named;
    for (std::size_t i = 0; i < ids.size() && i < 5; ++i) named += (i ? ", " : "") + ids[i];
    if (ids.size() > 5) named += " and " + std::to_string(ids.size() - 5) + " more";
    throw AdminError(Kind::not_found, "no dead job " + named + " in queue " + queue);
  }
  return done;
}

long long Admin::retry_dead(const std::string& queue, const std::vector<std::string>& ids,
                            bool all) {
  return dead_action(queue, ids, all, true);
}

long long Admin::purge_dead(const std::string& queue, const std::vector<std::string>& ids,
                            bool all) {
  return dead_action(queue, ids, all, false);
}

std::vector<ScheduleView> Admin::schedules() {
  std::vector<ScheduleView> out;
  for (const auto& queue : known_queues()) {
    const Keys k(layout_.prefix, queue);
    auto defs = run(c_, schedule_defs(k));
    if (!defs.ok()) {
      throw AdminError(kind_of(defs.error()), k.schedules + ": " + defs.error().message);
    }
    // HGETALL's order is the hash's (it moves as definitions are written again): by name, as
    // promised, so that jobqctl's table and the dashboard's rows keep their places.
    std::sort(defs->begin(), defs->end());
    // Every state of the queue's schedules in one round trip.
    std::vector<Call<ScheduleState>> reads;
    for (const auto& d : *defs) reads.push_back(schedule_state(k, d.first));
    auto states = pipelined(c_, reads);
    for (std::size_t i = 0; i < defs->size(); ++i) {
      const auto& [name, text] = (*defs)[i];
      ScheduleView v;
      auto decoded = decode_schedule(name, queue, text);
      if (auto* why = std::get_if<std::string>(&decoded)) {
        v.def.name = name;
        v.def.queue = queue;
        v.problem = *why;
      } else {
        v.def = std::move(std::get<config::ScheduleConfig>(decoded));
      }
      if (states[i].ok()) {
        v.state = std::move(*states[i]);
      } else if (v.problem.empty()) {
        // Another type at the state key: said, not shown as a schedule that never ran.
        v.problem = k.schedule(name) + ": " + states[i].error().message;
      }
      v.def.origin = v.state.origin.empty() ? "runtime" : v.state.origin;
      if (!v.state.last_id.empty()) {
        const JobView j = job(queue, v.state.last_id);
        if (j.exists()) v.last_status = j.status;
      }
      out.push_back(std::move(v));
    }
  }
  return out;
}

ScheduleView Admin::add_schedule(const config::ScheduleConfig& given) {
  check_queue(given.queue);
  if (!config::valid_name(given.name)) {
    throw AdminError(Kind::bad_input, "schedule name '" + given.name +
                                          "': use 1-64 characters of A-Z a-z 0-9 _ . -");
  }
  // Read back as the daemons will read it: one check for both.
  auto decoded = decode_schedule(given.name, given.queue, encode_schedule(given));
  if (auto* why = std::get_if<std::string>(&decoded)) {
    throw AdminError(Kind::bad_input, "schedule " + given.name + ": " + *why);
  }
  const auto& s = std::get<config::ScheduleConfig>(decoded);
  const auto cron = std::get<config::Cron>(config::Cron::parse(s.cron, s.timezone));
  const std::int64_t now = must(run(c_, redis_time()));
  const Keys k(layout_.prefix, s.queue);
  const Defined d = must(run(c_, define_schedule(k, s.name, encode_schedule(s), schedule_timing(s),
                                                 cron.next_after(now), true)));
  if (d.kind == Defined::Kind::config) {
    throw AdminError(Kind::bad_input, "schedule " + s.name + " of queue " + s.queue +
                                          " is defined in a daemon's config file: change it there");
  }
  if (d.kind == Defined::Kind::garbage) {
    throw AdminError(Kind::garbage, d.key + " holds what jobqd never writes there: delete it");
  }
  ScheduleView v;
  v.def = s;
  v.def.origin = "runtime";
  v.state = must(run(c_, schedule_state(k, s.name)));
  return v;
}

std::string Admin::control_schedule(const std::string& name, const std::string& queue,
                                    const std::string& op) {
  std::vector<std::string> where;
  if (!queue.empty()) {
    check_queue(queue);
    where.push_back(queue);
  } else {
    // Every known queue asked in one round trip.
    const auto queues = known_queues();
    std::vector<Call<bool>> asks;
    for (const auto& q : queues) asks.push_back(schedule_exists(Keys(layout_.prefix, q), name));
    const auto found = call_all(c_, asks);
    for (std::size_t i = 0; i < queues.size(); ++i) {
      if (found[i]) where.push_back(queues[i]);
    }
    if (where.empty()) throw AdminError(Kind::not_found, "no schedule " + name);
    if (where.size() > 1) {
      throw AdminError(Kind::bad_input, "schedule " + name + " is in queues " + where[0] + " and " +
                                            where[1] + ": " + layout_.name_the_queue);
    }
  }
  const Keys k(layout_.prefix, where[0]);
  const std::string r = must(run(c_, store::control_schedule(k, op, name)));
  if (r == "missing") {
    throw AdminError(Kind::not_found, "no schedule " + name + " in queue " + where[0]);
  }
  if (r == "config") {
    throw AdminError(Kind::bad_input, "schedule " + name +
                                          " is defined in a daemon's config file: remove it there "
                                          "(pause and resume work here)");
  }
  if (r == "garbage") {
    throw AdminError(Kind::garbage, k.schedules + " or " + k.schedule(name) +
                                        " holds what jobqd never writes there: delete it");
  }
  return where[0];
}

bool Admin::set_paused(const std::string& queue, bool paused) {
  check_queue(queue);
  // Every shard's flag (each shard's fetch checks its own): changed when any one did.
  const std::int64_t now = unix_ms();
  bool changed = false;
  for (const bool one : call_each(c_, shard_keys(queue), [&](const Keys& k) {
         return store::set_paused(k, paused, now);
       })) {
    changed = changed || one;
  }
  return changed;
}

// Summed over the queue's shards; it is paused when any shard is (that shard's jobs wait).
QueueView Admin::queue_view(const std::string& queue,
                            const std::map<std::string, Activity>& active) {
  QueueView v;
  v.name = queue;
  const auto shards = shard_keys(queue);
  v.shards = shards.size();
  if (auto a = active.find(queue); a != active.end()) v.activity = a->second;
  // What the daemons serving it run by, else what the config given says (a queue no daemon
  // serves now). With a rate, depths.lua reads each shard's bucket as a fetch would find it.
  const Rate rate = take_limits(
      v, layout_.config_limits ? layout_.config_limits(queue) : std::optional<QueueLimits>());
  const auto depths_of = [&rate](const Keys& k) { return depths(k, rate); };
  for (const auto& s : call_each(c_, shards, depths_of)) add_depths(v.depths, s);
  for (const bool p : call_each(c_, shards, is_paused)) v.paused = v.paused || p;
  // group_by lives in one shard's slot (a sharded queue has none): a ZCARD when it has no groups.
  if (shards.size() == 1) v.groups = group_depths(c_, shards.front());
  return v;
}

// The live daemons. `strict`: garbage at the workers key is an error; else it is warned of, and
// no daemon is known (the depths still show what Redis holds).
Workers Admin::read_live(bool strict) {
  auto w = run(c_, read_workers(layout_.prefix));
  if (!w.ok()) {
    const std::string why = Keys::workers(layout_.prefix) +
                            " is not the hash of workers jobqd keeps (" + w.error().message +
                            "): delete it, and the daemons write it again within a second";
    if (strict || w.error().connection()) throw AdminError(kind_of(w.error()), why);
    if (layout_.warn) layout_.warn(why);
    return {};
  }
  w->keep_live(call(c_, redis_time()));
  return std::move(*w);
}

Workers Admin::live_workers() {
  return read_live(true);
}

std::map<std::string, Activity> Admin::activity() {
  return store::activity(read_live(false).live);
}

// ---- search ----

namespace {

// Where `needle` (lower case) is in `hay`, ASCII letters in any case; npos when it is not.
std::size_t find_folded(const std::string& hay, const std::string& needle) {
  const auto fold = [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == static_cast<unsigned char>(b);
  };
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), fold);
  return it == hay.end() ? std::string::npos : static_cast<std::size_t>(it - hay.begin());
}

// The text around a match at `at` (as valid UTF-8: a cut through a character is replaced).
std::string excerpt(const std::string& text, std::size_t at, std::size_t n) {
  const std::size_t from = at > 40 ? at - 40 : 0;
  return job::to_utf8(text.substr(from, at - from + n + 40));
}

// Where a search stands: the phase (0 pending, 1 delayed, 2 dead, 3 retained states), the
// shard, and the position in it (an index, or phase 3's SCAN cursor), as "phase,shard,pos".
struct Spot {
  std::size_t phase = 0, shard = 0;
  std::string pos = "0";
};

Spot spot_of(const std::string& from, std::size_t shards) {
  Spot s;
  if (from.empty()) return s;
  const auto c1 = from.find(',');
  const auto c2 = c1 == std::string::npos ? c1 : from.find(',', c1 + 1);
  const auto digits = [](std::string_view v) {
    return !v.empty() && v.size() <= 20 && v.find_first_not_of("0123456789") == v.npos;
  };
  // The position: digits, or in phase 0 a priority's list before them (h, l).
  std::string_view pos = std::string_view(from).substr(c2 == std::string::npos ? 0 : c2 + 1);
  if (from.starts_with("0,") && (pos.starts_with('h') || pos.starts_with('l'))) {
    pos.remove_prefix(1);
  }
  if (c2 == std::string::npos || !digits(std::string_view(from).substr(0, c1)) ||
      !digits(std::string_view(from).substr(c1 + 1, c2 - c1 - 1)) || !digits(pos)) {
    throw AdminError(Kind::bad_input, "from: '" + job::to_utf8(job::clip_utf8(from, 40)) +
                                          "' is not where a search stopped (its `next`)");
  }
  s.phase = std::strtoull(from.c_str(), nullptr, 10);
  s.shard = std::strtoull(from.c_str() + c1 + 1, nullptr, 10);
  s.pos = from.substr(c2 + 1);
  if (s.phase > 3 || s.shard >= shards) {
    throw AdminError(Kind::bad_input, "from: '" + from + "' names no part of this queue");
  }
  return s;
}

}  // namespace

SearchStep Admin::search(const std::string& queue, const std::string& text, const std::string& from,
                         std::size_t budget, const std::string& status) {
  check_queue(queue);
  static const std::set<std::string> kStatuses = {"queued",    "active", "retrying", "waiting",
                                                  "succeeded", "failed", "cancelled"};
  if (!status.empty() && !kStatuses.count(status)) {
    throw AdminError(Kind::bad_input,
                     "status '" + job::to_utf8(job::clip_utf8(status, 40)) +
                         "': one of queued, active, retrying, waiting, succeeded, failed, "
                         "cancelled");
  }
  if ((text.empty() && status.empty()) || text.size() > 200) {
    throw AdminError(Kind::bad_input, "the text to find: 1 to 200 bytes");
  }
  std::string needle = text;
  for (auto& ch : needle) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const auto shards = shard_keys(queue);
  Spot at = spot_of(from, shards.size());
  // A status is in the job states alone: the waiting copies are not looked at.
  if (!status.empty() && at.phase < 3) at = Spot{3, 0, "0"};
  SearchStep out;
  const auto look = [&](const std::string& id, const std::string& where, const char* field,
                        const std::string& hay, const std::string& at = "") {
    const auto hit = find_folded(hay, needle);
    if (hit == std::string::npos) return false;
    out.found.push_back({id, where, field, excerpt(hay, hit, needle.size()), at});
    return true;
  };
  // What one answer carries at most, and how long a call goes on (its pauses included): it
  // answers well within the API's 5 s however slow the machine.
  constexpr std::size_t kMostFound = 100;
  const auto until = std::chrono::steady_clock::now() + kSearchTime;
  while (at.phase < 4 && out.examined < budget && out.found.size() < kMostFound &&
         std::chrono::steady_clock::now() < until) {
    // Paced: each slice is followed by a pause twice as long as it took, so that a search keeps
    // a third of a core at most and leaves Redis gaps between its reads (the queues' own work
    // goes first; a search is a person waiting, not a batch).
    const auto slice_began = std::chrono::steady_clock::now();
    // What one Redis command reads: 500 at most, and no more than the budget left.
    const long long slice =
        static_cast<long long>(std::min<std::size_t>(500, budget - out.examined));
    const Keys& k = shards[at.shard];
    const long long pos = at.phase < 3 ? std::strtoll(at.pos.c_str(), nullptr, 10) : 0;
    bool through = false;  // this shard's part of the phase is searched
    if (at.phase == 0 || at.phase == 1) {
      // Waiting jobs, newest first in pending, soonest first in delayed: the whole copy (its id
      // and payload, the rest of its JSON too).
      std::vector<std::string> copies;
      // Phase 0 reads pending, then the lists of priorities: "h<pos>" and "l<pos>" say which.
      const char* list = "pending";
      long long from = pos;
      if (at.phase == 0 && (at.pos.starts_with('h') || at.pos.starts_with('l'))) {
        list = at.pos.front() == 'h' ? "pending:high" : "pending:low";
        from = std::strtoll(at.pos.c_str() + 1, nullptr, 10);
      }
      if (at.phase == 0) {
        copies = call(c_, pending_slice(k, from, from + slice - 1, list));
      } else {
        for (auto& [copy, score] : call(c_, delayed_slice(k, pos, pos + slice - 1))) {
          copies.push_back(std::move(copy));
        }
      }
      for (const auto& raw : copies) {
        look(describe(raw).id, at.phase == 0 ? "pending" : "delayed", "job", raw);
      }
      out.examined += copies.size();
      const std::string prefix = list == std::string_view("pending:high")  ? "h"
                                 : list == std::string_view("pending:low") ? "l"
                                                                           : "";
      at.pos = prefix + std::to_string(from + static_cast<long long>(copies.size()));
      through = copies.size() < static_cast<std::size_t>(slice);
      if (through && at.phase == 0 && prefix != "l") {
        // On to the next list of the phase.
        at.pos = prefix.empty() ? "h0" : "l0";
        through = false;
      }
    } else if (at.phase == 2) {
      // Dead jobs: the JSON kept for retry, and the error they died of.
      std::vector<std::string> ids, died;
      for (auto& [id, score] : call(c_, dead_slice(k, pos, pos + slice - 1))) {
        ids.push_back(std::move(id));
        died.push_back(std::move(score));
      }
      if (!ids.empty()) {
        const auto bodies = call(c_, dead_bodies(k, ids));
        std::vector<Call<std::vector<std::string>>> errors;
        for (const auto& id : ids) errors.push_back(state_fields(k, id, {"error"}));
        const auto said = call_all(c_, errors);
        for (std::size_t i = 0; i < ids.size(); ++i) {
          if (i < bodies.size() && look(ids[i], "dead", "job", bodies[i], died[i])) continue;
          if (look(ids[i], "dead", "error", said[i].front(), died[i])) continue;
          look(ids[i], "dead", "id", ids[i], died[i]);
        }
      }
      out.examined += ids.size();
      at.pos = std::to_string(pos + static_cast<long long>(ids.size()));
      through = ids.size() < static_cast<std::size_t>(slice);
    } else {
      // Every job state the shard keeps (those that ended, within their retention, and those
      // running or waiting to again): its id, result, error and, where its queue retains it,
      // payload (the waiting and the dead were found by theirs above).
      // COUNT 250: a SCAN of 250 took ~0.4 ms at 1M keys, one of 500 0.7-1.6 ms (docs/search.md).
      ScanStep step = call(c_, scan_states(k, at.pos, std::min<long long>(slice, 250)));
      if (!step.ids.empty()) {
        std::vector<Call<std::vector<std::string>>> reads;
        for (const auto& id : step.ids)
          reads.push_back(
              state_fields(k, id, {"status", "result", "error", "finished_at", "payload"}));
        const auto states = call_all(c_, reads);
        const std::size_t before = out.found.size();
        for (std::size_t i = 0; i < step.ids.size(); ++i) {
          const auto& f = states[i];
          if (f[0].empty()) continue;  // gone meanwhile
          if (!status.empty() && f[0] != status) continue;
          if (needle.empty()) {
            // Every one of that status: the text it says most (its error, else its result).
            const bool error = !f[2].empty();
            const std::string& text = error ? f[2] : f[1];
            out.found.push_back({step.ids[i], f[0],
                                 text.empty() ? "" : (error ? "error" : "result"),
                                 job::to_utf8(job::clip_utf8(text, 160)), f[3]});
            continue;
          }
          if (look(step.ids[i], f[0], "id", step.ids[i], f[3])) continue;
          if (look(step.ids[i], f[0], "result", f[1], f[3])) continue;
          if (look(step.ids[i], f[0], "error", f[2], f[3])) continue;
          look(step.ids[i], f[0], "payload", f[4], f[3]);
        }
        // A dead job was searched with the dead ones (its JSON and error): not twice (unless
        // the dead ones were not searched: a status asked for).
        std::vector<Call<bool>> dead;
        for (std::size_t i = before; i < out.found.size() && status.empty(); ++i) {
          if (out.found[i].where == "failed") dead.push_back(is_dead(k, out.found[i].id));
        }
        if (!dead.empty()) {
          const auto was_dead = call_all(c_, dead);
          std::vector<Found> kept(
              std::make_move_iterator(out.found.begin()),
              std::make_move_iterator(out.found.begin() + static_cast<long>(before)));
          std::size_t j = 0;
          for (std::size_t i = before; i < out.found.size(); ++i) {
            if (out.found[i].where == "failed" && was_dead[j++]) continue;
            kept.push_back(std::move(out.found[i]));
          }
          out.found = std::move(kept);
        }
      }
      out.examined += step.ids.size();
      at.pos = step.next;
      through = step.next == "0";
    }
    std::this_thread::sleep_for(2 * (std::chrono::steady_clock::now() - slice_began));
    if (through) {
      at.pos = "0";
      if (++at.shard == shards.size()) {
        at.shard = 0;
        ++at.phase;
      }
    }
  }
  // Job states come in the order of Redis' SCAN, which is no order in time: a search by status
  // gives each answer's newest first (by when they ended; those without a time last).
  if (!status.empty()) {
    const auto when = [](const Found& f) { return whole_number(f.at).value_or(-1); };
    std::stable_sort(out.found.begin(), out.found.end(),
                     [&](const Found& a, const Found& b) { return when(a) > when(b); });
  }
  if (at.phase < 4) {
    out.next = std::to_string(at.phase) + "," + std::to_string(at.shard) + "," + at.pos;
  }
  return out;
}

}  // namespace jq::store
