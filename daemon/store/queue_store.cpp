// The queue store: script calls with their arguments, reply decoding, reconciliation, and the
// batching writer.
#include "store/queue_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "job/id.hpp"
#include "job/job.hpp"
#include "store/scripts.hpp"

namespace jq::store {
namespace {

// A settle holds Redis ~12 us per outcome, while no other client's command runs: 100 keep a
// batch near a millisecond, and cost a round trip per 100 jobs at most.
constexpr std::size_t kMaxOpsPerBatch = 100;
// Well under Redis' 1 GB query buffer, and small enough not to hold Redis for long.
constexpr std::size_t kMaxBatchBytes = 16 * 1024 * 1024;
constexpr auto kErrorLogEvery = std::chrono::seconds(30);

std::string num(std::int64_t v) {
  return std::to_string(v);
}

std::optional<std::uint64_t> token_of(const std::string& s) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

[[noreturn]] void bad_reply(const char* script, const redis::Reply& r) {
  throw redis::ReplyError(std::string("script ") + script + ": unexpected reply " + r.describe());
}

const char* op_name(Settlement::Op op) {
  switch (op) {
    case Settlement::Op::ok:
      return "ok";
    case Settlement::Op::retry:
      return "retry";
    case Settlement::Op::dead:
      return "dead";
    case Settlement::Op::back:
      return "back";
    case Settlement::Op::cancel:
      return "cancel";
  }
  return "?";
}

bool wrong_type(const std::string& error) {
  return error.find("WRONGTYPE") != std::string::npos;
}

}  // namespace

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

FetchBatch decode_fetch(redis::Reply r, std::uint64_t first, std::size_t n) {
  // {Redis' clock, waiting, then (index, attempt, id, text) per held job}.
  if (!r.is_array() || r.elements.size() < 2 || (r.elements.size() - 2) % 4 != 0) {
    bad_reply("fetch", r);
  }
  FetchBatch out;
  out.now = r.elements[0].as_int();
  out.waiting = r.elements[1].as_int();
  if (out.waiting == -1 && r.elements.size() == 2) {
    out.paused = true;
    out.waiting = 0;
  } else if (out.waiting < 0) {
    bad_reply("fetch", r);
  }
  out.jobs.reserve((r.elements.size() - 2) / 4);
  for (std::size_t i = 2; i + 3 < r.elements.size(); i += 4) {
    const auto& idx = r.elements[i];
    const auto& attempt = r.elements[i + 1];
    auto& id = r.elements[i + 2];
    auto& text = r.elements[i + 3];
    if (idx.type != redis::Reply::Type::integer || idx.integer < 1 ||
        static_cast<std::uint64_t>(idx.integer) > n ||
        attempt.type != redis::Reply::Type::integer || id.type != redis::Reply::Type::string ||
        text.type != redis::Reply::Type::string ||
        (attempt.integer > 0 && !job::valid_id(id.str))) {
      bad_reply("fetch", r);
    }
    Fetched f;
    f.token = first + static_cast<std::uint64_t>(idx.integer) - 1;
    f.id = job::valid_id(id.str) ? std::move(id.str) : std::string();
    if (attempt.integer < 0) {
      // -size; written so that no value overflows while negating.
      f.oversized = static_cast<std::uint64_t>(-(attempt.integer + 1)) + 1;
    } else {
      f.attempt = attempt.integer;
      f.raw = std::move(text.str);
    }
    out.jobs.push_back(std::move(f));
  }
  return out;
}

Recovered decode_recovered(const redis::Reply& r) {
  if (!r.is_array() || r.elements.size() < 3) bad_reply("recover", r);
  Recovered out;
  out.returned = r.elements[0].as_int();
  out.dead = r.elements[1].as_int();
  if (auto in = r.elements[2].as_int(); in >= 0) out.next_expiry_in = Millis(in);
  for (std::size_t i = 3; i < r.elements.size(); ++i) out.workers.push_back(r.elements[i].str);
  return out;
}

Promoted decode_promoted(const redis::Reply& r) {
  Promoted out;
  if (r.is_array() && r.elements.size() == 3) {
    out.moved = r.elements[0].as_int();
    if (!r.elements[1].is_nil()) {
      // Scores are whatever a submitter wrote (even "+inf"): clamp while still a double.
      double due = std::strtod(r.elements[1].str.c_str(), nullptr);
      double now = std::strtod(r.elements[2].str.c_str(), nullptr);
      double in =
          std::isfinite(due) && std::isfinite(now) ? std::clamp(due - now, 0.0, 1e12) : 1e12;
      out.next_in = Millis(static_cast<std::int64_t>(in));
    }
  }
  return out;
}

QueueStore::QueueStore(redis::Client& main, redis::Client& blocking, Settings settings)
    : main_(main), blocking_(blocking), s_(std::move(settings)), keys_(s_.prefix, s_.queue) {}

async::Task<void> QueueStore::register_lease() {
  std::vector<std::string> keys{keys_.leases};
  std::vector<std::string> args{s_.worker, num(s_.lease.count())};
  redis::Reply r = co_await scripts::acquire().run(main_, keys, args);
  (void)r;
}

async::Task<bool> QueueStore::renew_lease() {
  std::vector<std::string> keys{keys_.leases};
  std::vector<std::string> args{s_.worker, num(s_.lease.count())};
  redis::Reply r = co_await scripts::renew().run(main_, keys, args);
  co_return r.as_int() == 1;
}

async::Task<bool> QueueStore::release_lease() {
  std::vector<std::string> keys{keys_.leases, keys_.inflight(s_.worker)};
  std::vector<std::string> args{s_.worker};
  redis::Reply r = co_await scripts::release().run(main_, keys, args);
  co_return r.as_int() == 1;
}

QueueStore::FetchCall QueueStore::begin_fetch(std::size_t n) {
  // The tokens are ours from now on, whatever becomes of the reply: a fetch sent again after a
  // lost reply must never reuse them (it would overwrite the jobs the first one leased).
  FetchCall c;
  c.first = next_token_;
  c.n = n;
  next_token_ += n;
  fetching_from_ = c.first;
  fetching_to_ = c.first + n;
  c.keys = {keys_.pending, keys_.leases,  keys_.inflight(s_.worker),
            keys_.live,    keys_.delayed, keys_.paused};
  // Jobs a little over the limit still come: parse() has the exact rule (an id jobqd added to
  // a job does not count against it).
  auto& args = c.args;
  args.reserve(8 + 2 * n);
  args.push_back(s_.worker);
  args.push_back(std::to_string(n));
  args.push_back(std::to_string(c.first));
  args.push_back(std::to_string(s_.max_job_bytes + job::kAssignedIdAllowance));
  args.push_back(keys_.base);
  args.push_back(s_.queue);
  args.push_back(s_.default_handler);
  args.push_back(std::to_string(s_.max_attempts));
  // Ids for the jobs that bring none (the script takes them as it needs: time-ordered, made
  // here because Redis cannot make a ULID without formatting in Lua).
  for (std::size_t i = 0; i < n; ++i) args.push_back(job::new_id());
  // The tokens as text, which Lua would format as doubles (a printf each).
  for (std::size_t i = 0; i < n; ++i) args.push_back(std::to_string(c.first + i));
  return c;
}

std::optional<FetchBatch> QueueStore::end_fetch(const FetchCall& call, redis::Reply r) {
  fetching_from_ = fetching_to_ = 0;
  if (r.is_nil()) return std::nullopt;
  FetchBatch batch = decode_fetch(std::move(r), call.first, call.n);
  // Every token handed over is held from here: a job is never dropped.
  for (const auto& f : batch.jobs) held_.insert(f.token);
  return batch;
}

async::Task<std::optional<FetchBatch>> QueueStore::fetch(std::size_t n) {
  const FetchCall call = begin_fetch(n);
  redis::Reply r;
  try {
    r = co_await scripts::fetch().run(main_, call.keys, call.args);
  } catch (...) {
    fetching_from_ = fetching_to_ = 0;  // lost or refused: reconcile may take these tokens back
    throw;
  }
  co_return end_fetch(call, std::move(r));
}

async::Task<QueueStore::Waited> QueueStore::fetch_when_pending(std::size_t n, Millis block) {
  // From the call on, not from when the task first runs: unblock() right after must know.
  waiting_ = true;
  return wait_and_fetch(n, block);
}

async::Task<QueueStore::Waited> QueueStore::wait_and_fetch(std::size_t n, Millis block) {
  const FetchCall call = begin_fetch(n);
  const std::string secs = std::to_string(block.count() / 1000.0);
  // The connection's id, for unblock(): asked once per connection, in the same write.
  const bool ask_id = blocking_generation_ != blocking_.generation() || blocking_id_.empty();
  const std::uint64_t generation = blocking_.generation();
  std::optional<redis::PendingReply> id;
  if (ask_id) id.emplace(blocking_.command("CLIENT", "ID"));
  redis::PendingReply wait = blocking_.blocking_command(block, "BLMOVE", keys_.pending,
                                                        keys_.pending, "RIGHT", "RIGHT", secs);
  // Its reply comes after the wait's: the same allowance.
  redis::PendingReply fetched = scripts::fetch().send(blocking_, call.keys, call.args, block);
  Waited out;
  redis::Reply r;
  try {
    if (id) {
      redis::Reply got_id = co_await *id;
      if (got_id.type == redis::Reply::Type::integer) {
        blocking_id_ = std::to_string(got_id.integer);
        blocking_generation_ = generation;
      }
    }
    redis::Reply waited = co_await wait;
    if (waited.is_error()) out.wait_error = waited.str;
    r = co_await fetched;
    waiting_ = false;
    if (redis::Script::not_cached(r)) {
      // Redis lost its script cache (a restart, SCRIPT FLUSH): this one did not run.
      r = co_await scripts::fetch().run(blocking_, call.keys, call.args);
    } else if (r.is_error()) {
      throw redis::ReplyError("script fetch: " + r.str);
    }
  } catch (...) {
    waiting_ = false;
    fetching_from_ = fetching_to_ = 0;  // lost or refused: reconcile may take these tokens back
    throw;
  }
  out.got = end_fetch(call, std::move(r));
  co_return out;
}

async::Task<void> QueueStore::unblock() {
  // The UNBLOCK may reach Redis before the BLMOVE it is meant for (they travel on different
  // connections): then it finds nothing blocked, and is sent again shortly.
  for (int tries = 0; tries < 20 && waiting_; ++tries) {
    if (blocking_id_.empty() || blocking_generation_ != blocking_.generation()) {
      co_await async::sleep(5ms);
      continue;
    }
    long long unblocked = 0;
    try {
      redis::Reply r = co_await main_.command("CLIENT", "UNBLOCK", blocking_id_);
      if (r.is_error()) {
        spdlog::debug("queue {}: cannot end the wait for jobs early: {}", s_.queue, r.str);
        co_return;
      }
      unblocked = r.integer;
    } catch (const std::exception&) {
      co_return;  // Redis away: the wait fails with the connection, or ends by its timeout
    }
    if (unblocked == 1) co_return;
    co_await async::sleep(5ms);
  }
}

async::Task<Recovered> QueueStore::recover(std::size_t max_workers) {
  std::vector<std::string> keys{keys_.leases, keys_.pending, keys_.dead, keys_.live,
                                keys_.dead_bodies};
  std::vector<std::string> args{keys_.base,
                                s_.queue,
                                std::to_string(max_workers),
                                s_.worker,
                                std::to_string(s_.dead_max),
                                num(s_.dead_ttl.count())};
  redis::Reply r = co_await scripts::recover().run(main_, keys, args);
  co_return decode_recovered(r);
}

async::Task<Depths> read_depths(redis::Client& client, const Keys& keys) {
  const std::vector<std::string> k{keys.pending, keys.delayed, keys.dead};
  const std::vector<std::string> none;
  redis::Reply r = co_await scripts::depths().run(client, k, none);
  r.check();
  if (!r.is_array() || r.elements.size() != 3) {
    throw redis::ReplyError("depths: expected 3 numbers, got " + r.describe());
  }
  Depths d;
  d.pending = r.elements[0].integer;
  d.delayed = r.elements[1].integer;
  d.dead = r.elements[2].integer;
  co_return d;
}

async::Task<Recovered> QueueStore::reconcile() {
  redis::Reply fields = co_await main_.command("HKEYS", keys_.inflight(s_.worker));
  fields.check();
  // Tokens Redis holds for us that we do not know of, and fields that are no token at all
  // (garbage: reclaim returns whatever they hold to pending).
  std::vector<std::pair<std::uint64_t, std::string>> unknown;
  for (auto& f : fields.elements) {
    auto t = token_of(f.str);
    if (t && held_.count(*t)) continue;
    if (t && *t >= fetching_from_ && *t < fetching_to_) continue;  // its fetch reply is coming
    unknown.emplace_back(t.value_or(0), std::move(f.str));
  }
  if (unknown.empty()) co_return Recovered{};
  // Newest first onto the consuming end, so the oldest is taken first again.
  std::sort(unknown.rbegin(), unknown.rend());
  std::vector<std::string> keys{keys_.inflight(s_.worker), keys_.pending, keys_.dead, keys_.live,
                                keys_.dead_bodies};
  std::vector<std::string> args{keys_.base, s_.queue};
  for (auto& [t, field] : unknown) args.push_back(std::move(field));
  redis::Reply r = co_await scripts::reclaim().run(main_, keys, args);
  co_return decode_recovered(r);
}

async::Task<Promoted> QueueStore::promote(std::size_t limit) {
  std::vector<std::string> keys{keys_.delayed, keys_.pending};
  std::vector<std::string> args{std::to_string(limit), keys_.base};
  redis::Reply r = co_await scripts::promote().run(main_, keys, args);
  co_return decode_promoted(r);
}

async::Task<std::vector<Repaired>> QueueStore::repair() {
  std::vector<std::string> keys{keys_.pending,
                                keys_.delayed,
                                keys_.leases,
                                keys_.live,
                                keys_.dead,
                                keys_.dead_bodies,
                                keys_.inflight(s_.worker)};
  std::vector<std::string> types{"list", "zset", "zset", "hash", "zset", "hash", "hash"};
  redis::Reply r = co_await scripts::repair().run(main_, keys, types);
  std::vector<Repaired> out;
  for (std::size_t i = 0; r.is_array() && i + 2 < r.elements.size(); i += 3) {
    Repaired x{r.elements[i].str, r.elements[i + 1].str, r.elements[i + 2].str};
    spdlog::error(
        "queue {}: {} held a {}, which is not what jobqd keeps there (garbage written by hand?); "
        "moved it aside to {} so that the queue goes on: look at it, then delete it",
        s_.queue, x.key, x.type, x.moved_to);
    out.push_back(std::move(x));
  }
  co_return out;
}

// ---- Writer ----

Writer::Writer(redis::Client& client, QueueStore& store) : client_(client), store_(store) {}

Writer::~Writer() {
  if (task_.valid()) task_.abort();
}

void Writer::start() {
  if (!task_.valid()) task_ = async::spawn(run(), "writer " + store_.settings().queue);
}

async::Task<void> Writer::stop() {
  if (task_.valid()) {
    task_.cancel();
    co_await task_.wait();
  }
}

void Writer::push(Settlement s) {
  queued_.push_back(std::move(s));
  ++enqueued_;
  work_.set();
}

async::Task<bool> Writer::flush(Millis timeout) {
  const std::uint64_t target = enqueued_;
  const auto deadline = async::Clock::now() + timeout;
  while (written_ < target) {
    auto left = deadline - async::Clock::now();
    if (left <= async::Duration::zero()) co_return false;
    bool in_time = true;
    try {
      co_await async::wait_for(progress_.wait(), left);
    } catch (const async::TimeoutError&) {
      in_time = false;
    }
    if (!in_time) co_return written_ >= target;
  }
  co_return true;
}

// Sends one batch until Redis has answered it: a lost connection is waited out, a foreign value at
// one of the queue's keys is moved aside, anything else (Redis out of memory) retried after a
// pause. Every settlement is idempotent, so sending a batch twice changes nothing twice.
async::Task<redis::Reply> Writer::send(const std::vector<std::string>& args, std::size_t count) {
  const auto& k = store_.keys();
  const std::vector<std::string> keys{
      k.inflight(store_.settings().worker), k.delayed, k.dead, k.pending, k.live, k.dead_bodies};
  auto last_error_log = async::Clock::now() - kErrorLogEvery;
  for (;;) {
    std::string error;
    bool lost_connection = false;
    try {
      co_return co_await scripts::settle().run(client_, keys, args);
    } catch (const redis::ConnectionError& e) {
      error = e.what();
      lost_connection = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
    auto t = async::Clock::now();
    if (t - last_error_log >= kErrorLogEvery) {
      last_error_log = t;
      spdlog::error(
          "queue {}: cannot write {} job outcome(s) to Redis ({}); keeping them and retrying",
          store_.settings().queue, count, error);
    }
    bool repaired = false;
    if (lost_connection) {
      co_await client_.wait_connected();
    } else if (wrong_type(error)) {
      try {
        repaired = !(co_await store_.repair()).empty();
      } catch (const std::exception&) {
      }
    }
    if (!lost_connection && !repaired) co_await async::sleep(1s);  // e.g. out of memory
  }
}

async::Task<void> Writer::run() {
  const Settings& s = store_.settings();
  auto last_op_error_log = async::Clock::now() - kErrorLogEvery;
  for (;;) {
    if (queued_.empty()) {
      work_.clear();
      co_await work_.wait();
      continue;
    }
    // A batch: every queued settlement, up to a count and a size.
    std::size_t take = 0, bytes = 0;
    while (take < queued_.size() && take < kMaxOpsPerBatch) {
      std::size_t b = queued_[take].text.size() + queued_[take].id.size() + 64;
      if (take > 0 && bytes + b > kMaxBatchBytes) break;
      bytes += b;
      ++take;
    }
    std::vector<Settlement> batch(std::make_move_iterator(queued_.begin()),
                                  std::make_move_iterator(queued_.begin() + take));
    queued_.erase(queued_.begin(), queued_.begin() + take);
    std::vector<std::string> args;
    args.reserve(7 + 6 * batch.size());
    args.push_back(store_.keys().base);
    args.push_back(s.queue);
    args.push_back(s.worker);
    args.push_back(num(s.keep_succeeded.count() == 0
                           ? 0
                           : std::max<long long>(1, s.keep_succeeded.count() / 1000)));
    args.push_back(std::to_string(s.dead_max));
    args.push_back(num(s.dead_ttl.count()));
    args.push_back(s.default_handler);
    for (auto& op : batch) {
      args.push_back(op_name(op.op));
      args.push_back(std::to_string(op.token));
      args.push_back(op.id);
      switch (op.op) {
        case Settlement::Op::ok:
          args.push_back(std::to_string(op.attempt));
          args.push_back(std::move(op.text));
          args.emplace_back();
          break;
        case Settlement::Op::retry:
          args.push_back(num(op.delay.count()));
          args.push_back(std::move(op.text));
          args.emplace_back(job::to_string(op.kind));
          break;
        case Settlement::Op::dead:
          args.push_back(std::move(op.text));
          args.emplace_back(job::to_string(op.kind));
          args.push_back(op.fresh_id);
          break;
        case Settlement::Op::back:
          args.emplace_back();
          args.emplace_back();
          args.emplace_back();
          break;
        case Settlement::Op::cancel:
          args.push_back(std::move(op.text));
          args.emplace_back();
          args.emplace_back();
          break;
      }
    }
    redis::Reply reply = co_await send(args, batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& op = batch[i];
      const redis::Reply* r =
          reply.is_array() && i < reply.elements.size() ? &reply.elements[i] : nullptr;
      Written how = Written::written;
      if (!r || r->type != redis::Reply::Type::integer) {
        how = Written::refused;
        auto t = async::Clock::now();
        if (t - last_op_error_log >= kErrorLogEvery) {
          last_op_error_log = t;
          spdlog::error("queue {}: Redis refused to record '{}' for job {}: {}", s.queue,
                        op_name(op.op), op.id, r ? r->str : "no reply for it");
        }
      } else if (r->integer == 0) {
        how = Written::not_held;
      } else if (r->integer == 2) {
        how = Written::renamed;
      }
      // A refused one stays held in Redis: reconcile returns it to pending.
      store_.released(op.token);
      if (op.notify) op.notify->recorded(how);
    }
    written_ += batch.size();
    progress_.set();
    progress_.clear();
  }
}

}  // namespace jq::store
