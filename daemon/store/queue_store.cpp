// The queue store: script calls with their arguments, reconciliation, and the batching writer.
#include "store/queue_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "job/job.hpp"
#include "store/scripts.hpp"

namespace jq::store {
namespace {

constexpr std::size_t kMaxOpsPerBatch = 1000;
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

Recovered counts(const redis::Reply& r) {
  Recovered out;
  if (!r.is_array() || r.elements.size() < 3) {
    throw redis::ReplyError("lease recovery: unexpected reply " + r.describe());
  }
  out.returned = r.elements[0].as_int();
  out.dead = r.elements[1].as_int();
  if (auto in = r.elements[2].as_int(); in >= 0) out.next_expiry_in = Millis(in);
  for (std::size_t i = 3; i < r.elements.size(); ++i) out.workers.push_back(r.elements[i].str);
  return out;
}

}  // namespace

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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

async::Task<std::optional<std::vector<Leased>>> QueueStore::fetch(std::size_t n) {
  // The tokens are ours from now on, whatever becomes of the reply: a fetch sent again after a
  // lost reply must never reuse them (it would overwrite the jobs the first one leased).
  const std::uint64_t first = next_token_;
  next_token_ += n;
  fetching_from_ = first;
  fetching_to_ = first + n;
  std::vector<std::string> keys{keys_.pending, keys_.leases, keys_.inflight(s_.worker)};
  // Jobs a little over the limit still come: parse() has the exact rule (an id jobqd added to
  // a job does not count against it).
  std::vector<std::string> args{s_.worker, std::to_string(n), std::to_string(first),
                                std::to_string(s_.max_job_bytes + job::kAssignedIdAllowance)};
  redis::Reply r;
  try {
    r = co_await scripts::fetch().run(main_, keys, args);
  } catch (...) {
    fetching_from_ = fetching_to_ = 0;  // lost or refused: reconcile may take these tokens back
    throw;
  }
  fetching_from_ = fetching_to_ = 0;
  if (r.is_nil()) co_return std::nullopt;
  // {Redis' clock, job...}; a job too large to transfer is {size, id or ""}.
  if (!r.is_array() || r.elements.empty()) {
    throw redis::ReplyError("script fetch: unexpected reply " + r.describe());
  }
  const std::int64_t now = r.elements[0].as_int();
  std::vector<Leased> out;
  out.reserve(r.elements.size() - 1);
  for (std::size_t i = 1; i < r.elements.size(); ++i) {
    // Every token is held from here, whatever the element looks like: a job is never dropped.
    const std::uint64_t token = first + i - 1;
    held_.insert(token);
    Leased l;
    l.token = std::to_string(token);
    l.fetched_at = now;
    auto& e = r.elements[i];
    if (e.is_array()) {
      const bool sized = !e.elements.empty() && e.elements[0].type == redis::Reply::Type::integer;
      l.oversized = sized ? static_cast<std::uint64_t>(std::max(1LL, e.elements[0].integer)) : 1;
      if (e.elements.size() > 1) l.oversized_id = e.elements[1].str;
    } else {
      l.raw = std::move(e.str);
    }
    out.push_back(std::move(l));
  }
  co_return out;
}

void QueueStore::released(const std::string& token) {
  if (auto t = token_of(token)) held_.erase(*t);
}

async::Task<bool> QueueStore::wait_for_pending(Millis block) {
  std::string secs = std::to_string(block.count() / 1000.0);
  redis::Reply r = co_await blocking_.blocking_command(block, "BLMOVE", keys_.pending,
                                                       keys_.pending, "RIGHT", "RIGHT", secs);
  r.check();
  co_return !r.is_nil();
}

async::Task<Recovered> QueueStore::recover(std::size_t max_workers) {
  std::vector<std::string> keys{keys_.leases, keys_.pending, keys_.dead};
  std::vector<std::string> args{keys_.base,
                                s_.queue,
                                std::to_string(max_workers),
                                std::to_string(s_.max_attempts),
                                s_.worker,
                                std::to_string(s_.dead_max),
                                num(s_.dead_ttl.count())};
  redis::Reply r = co_await scripts::recover().run(main_, keys, args);
  co_return counts(r);
}

async::Task<Recovered> QueueStore::reconcile() {
  redis::Reply fields = co_await main_.command("HKEYS", keys_.inflight(s_.worker));
  fields.check();
  std::vector<std::uint64_t> unknown;
  for (const auto& f : fields.elements) {
    auto t = token_of(f.str);  // `<token>:a` companions are not tokens
    if (!t || held_.count(*t)) continue;
    if (*t >= fetching_from_ && *t < fetching_to_) continue;  // its fetch reply is on its way
    unknown.push_back(*t);
  }
  if (unknown.empty()) co_return Recovered{};
  // Newest first onto the consuming end, so the oldest is taken first again.
  std::sort(unknown.rbegin(), unknown.rend());
  std::vector<std::string> keys{keys_.inflight(s_.worker), keys_.pending, keys_.dead};
  std::vector<std::string> args{keys_.base, s_.queue, std::to_string(s_.max_attempts)};
  for (auto t : unknown) args.push_back(std::to_string(t));
  redis::Reply r = co_await scripts::reclaim().run(main_, keys, args);
  co_return counts(r);
}

async::Task<Promoted> QueueStore::promote(std::size_t limit) {
  std::vector<std::string> keys{keys_.delayed, keys_.pending};
  std::vector<std::string> args{std::to_string(limit), keys_.base};
  redis::Reply r = co_await scripts::promote().run(main_, keys, args);
  Promoted out;
  if (r.is_array() && r.elements.size() == 3) {
    out.moved = r.elements[0].as_int();
    if (!r.elements[1].is_nil()) {
      // Scores are whatever a submitter wrote (even "+inf"): clamp while still a double.
      double due = std::strtod(r.elements[1].str.c_str(), nullptr);
      double now = std::strtod(r.elements[2].str.c_str(), nullptr);
      double in = std::isfinite(due) ? std::clamp(due - now, 0.0, 1e12) : 1e12;
      out.next_in = Millis(static_cast<std::int64_t>(in));
    }
  }
  co_return out;
}

// ---- Writer ----

Writer::Writer(redis::Client& client, const Keys& keys, const Settings& settings, Released released)
    : client_(client), keys_(keys), s_(settings), released_(std::move(released)) {}

Writer::~Writer() {
  if (task_.valid()) task_.abort();
}

void Writer::start() {
  if (!task_.valid()) task_ = async::spawn(run(), "writer " + s_.queue);
}

async::Task<void> Writer::stop() {
  if (task_.valid()) {
    task_.cancel();
    co_await task_.wait();
  }
}

void Writer::push(Op op) {
  queued_.push_back(std::move(op));
  ++enqueued_;
  work_.set();
}

async::Future<long long> Writer::start_job(const std::string& token, const std::string& id,
                                           const std::string& handler, std::string normalized,
                                           std::int64_t fetched_at) {
  Op op{{"start", token, id, handler, std::move(normalized), num(fetched_at)}, {}};
  op.result.emplace();
  async::Future<long long> f = *op.result;
  push(std::move(op));
  return f;
}

void Writer::succeeded(const std::string& token, const std::string& id, std::string result) {
  push(Op{{"ok", token, id, std::move(result), "", ""}, {}});
}

void Writer::retry(const std::string& token, const std::string& id, Millis delay, std::string error,
                   const char* kind) {
  push(Op{{"retry", token, id, num(delay.count()), std::move(error), kind}, {}});
}

void Writer::dead(const std::string& token, const std::string& id, std::string error,
                  const char* kind, const std::string& handler) {
  push(Op{{"dead", token, id, std::move(error), kind, handler}, {}});
}

void Writer::put_back(const std::string& token, const std::string& id, bool started) {
  push(Op{{"return", token, id, started ? "1" : "0", "", ""}, {}});
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

async::Task<void> Writer::run() {
  const std::vector<std::string> keys{keys_.inflight(s_.worker), keys_.delayed, keys_.dead,
                                      keys_.pending, keys_.leases};
  auto last_error_log = async::Clock::now() - kErrorLogEvery;
  auto last_op_error_log = last_error_log;
  for (;;) {
    if (queued_.empty()) {
      work_.clear();
      co_await work_.wait();
      continue;
    }
    // A batch: every queued op, up to a count and a size.
    std::size_t take = 0, bytes = 0;
    while (take < queued_.size() && take < kMaxOpsPerBatch) {
      std::size_t b = 0;
      for (const auto& f : queued_[take].f) b += f.size();
      if (take > 0 && bytes + b > kMaxBatchBytes) break;
      bytes += b;
      ++take;
    }
    std::vector<Op> batch(std::make_move_iterator(queued_.begin()),
                          std::make_move_iterator(queued_.begin() + take));
    queued_.erase(queued_.begin(), queued_.begin() + take);
    std::vector<std::string> args;
    args.reserve(6 + 6 * batch.size());
    args.push_back(keys_.base);
    args.push_back(s_.queue);
    args.push_back(s_.worker);
    args.push_back(std::to_string(std::max<long long>(1, s_.result_ttl.count() / 1000)));
    args.push_back(std::to_string(s_.dead_max));
    args.push_back(num(s_.dead_ttl.count()));
    for (auto& op : batch) {
      for (std::size_t i = 0; i < op.f.size(); ++i) {
        // The op name, token and id are needed again below; the payload-sized fields are not.
        args.push_back(i < 3 ? op.f[i] : std::move(op.f[i]));
      }
    }
    redis::Reply reply;
    for (;;) {
      std::string error;
      bool lost_connection = false;
      try {
        reply = co_await scripts::apply().run(client_, keys, args);
        break;
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
            "queue {}: cannot write {} job state change(s) to Redis ({}); keeping them "
            "and retrying",
            s_.queue, batch.size(), error);
      }
      if (lost_connection) {
        co_await client_.wait_connected();
      } else {
        co_await async::sleep(1s);  // e.g. Redis out of memory: give it time
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& op = batch[i];
      const redis::Reply* r =
          reply.is_array() && i < reply.elements.size() ? &reply.elements[i] : nullptr;
      bool refused = !r || r->type != redis::Reply::Type::integer;
      if (refused) {
        auto t = async::Clock::now();
        if (t - last_op_error_log >= kErrorLogEvery) {
          last_op_error_log = t;
          spdlog::error("queue {}: Redis refused to record '{}' for job {}: {}", s_.queue, op.f[0],
                        op.f[2], r ? r->str : "no reply for it");
        }
      }
      if (op.result) op.result->set_value(refused ? -1 : r->integer);
      if (op.f[0] != "start" && released_) released_(op.f[1]);
    }
    written_ += batch.size();
    progress_.set();
    progress_.clear();
  }
}

}  // namespace jq::store
