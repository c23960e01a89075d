// The queue store: script calls with their arguments, and the batching write loop.
#include "store/queue_store.hpp"

#include <spdlog/spdlog.h>

#include "store/scripts.hpp"

namespace jq::store {
namespace {

constexpr std::size_t kMaxOpsPerBatch = 1000;
constexpr auto kErrorLogEvery = std::chrono::seconds(30);

std::string ms_str(std::int64_t v) {
  return std::to_string(v);
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
  std::string expiry = ms_str(unix_ms() + s_.lease.count());
  redis::Reply r = co_await main_.command("ZADD", keys_.leases, expiry, s_.worker);
  r.check();
}

async::Task<bool> QueueStore::renew_lease() {
  std::vector<std::string> keys{keys_.leases};
  std::vector<std::string> args{s_.worker, ms_str(unix_ms() + s_.lease.count())};
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
  std::vector<std::string> keys{keys_.pending, keys_.leases, keys_.inflight(s_.worker)};
  std::vector<std::string> args{s_.worker, std::to_string(n), std::to_string(next_token_),
                                std::to_string(s_.max_job_bytes)};
  redis::Reply r = co_await scripts::fetch().run(main_, keys, args);
  if (r.is_nil()) co_return std::nullopt;
  if (!r.is_array()) throw redis::ReplyError("script fetch: unexpected reply " + r.describe());
  std::int64_t now = unix_ms();
  std::vector<Leased> out;
  out.reserve(r.elements.size());
  for (auto& e : r.elements) {
    Leased l;
    l.token = std::to_string(next_token_++);
    l.fetched_at = now;
    std::string& raw = e.str;
    if (raw.size() > 5 && raw.compare(0, 5, std::string_view("\0big:", 5)) == 0) {
      l.oversized = std::stoull(raw.substr(5));
    } else {
      l.raw = std::move(raw);
    }
    out.push_back(std::move(l));
  }
  co_return out;
}

async::Task<bool> QueueStore::wait_for_pending(Millis block) {
  // BLMOVE takes whole seconds before Redis 6.0 and decimals since; we need 6.2+ anyway.
  std::string secs = std::to_string(block.count() / 1000.0);
  redis::Reply r = co_await blocking_.blocking_command(block, "BLMOVE", keys_.pending,
                                                       keys_.pending, "RIGHT", "RIGHT", secs);
  r.check();
  co_return !r.is_nil();
}

async::Task<Recovered> QueueStore::recover(std::size_t max_workers) {
  std::vector<std::string> keys{keys_.leases, keys_.pending, keys_.dead};
  std::vector<std::string> args{ms_str(unix_ms()), keys_.base, s_.queue,
                                std::to_string(max_workers), std::to_string(s_.max_attempts)};
  redis::Reply r = co_await scripts::recover().run(main_, keys, args);
  Recovered out;
  if (r.is_array() && r.elements.size() >= 2) {
    out.returned = r.elements[0].as_int();
    out.dead = r.elements[1].as_int();
    for (std::size_t i = 2; i < r.elements.size(); ++i) out.workers.push_back(r.elements[i].str);
  }
  co_return out;
}

async::Task<Promoted> QueueStore::promote(std::size_t limit) {
  std::vector<std::string> keys{keys_.delayed, keys_.pending};
  std::vector<std::string> args{ms_str(unix_ms()), std::to_string(limit), keys_.base};
  redis::Reply r = co_await scripts::promote().run(main_, keys, args);
  Promoted out;
  if (r.is_array() && r.elements.size() == 2) {
    out.moved = r.elements[0].as_int();
    if (!r.elements[1].is_nil()) {
      // Scores come back as strings ("1700000000000" or "1.7e12" for odd inputs).
      out.next_due = static_cast<std::int64_t>(std::stod(r.elements[1].str));
    }
  }
  co_return out;
}

// ---- Writer ----

Writer::Writer(redis::Client& client, const Keys& keys, const Settings& settings)
    : client_(client), keys_(keys), s_(settings) {}

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
  Op op{{"start", token, id, handler, std::move(normalized), ms_str(fetched_at), ""}, {}};
  op.result.emplace();
  async::Future<long long> f = *op.result;
  push(std::move(op));
  return f;
}

void Writer::succeeded(const std::string& token, const std::string& id, std::string result) {
  push(Op{{"ok", token, id, std::move(result), "", "", ""}, {}});
}

void Writer::retry(const std::string& token, const std::string& id, std::int64_t run_at,
                   std::string error, const char* kind) {
  push(Op{{"retry", token, id, ms_str(run_at), std::move(error), kind, ""}, {}});
}

void Writer::dead(const std::string& token, const std::string& id, std::string error,
                  const char* kind, const std::string& handler) {
  push(Op{{"dead", token, id, std::move(error), kind, handler, ""}, {}});
}

void Writer::put_back(const std::string& token, const std::string& id, bool started) {
  push(Op{{"return", token, id, started ? "1" : "0", "", "", ""}, {}});
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
                                      keys_.pending};
  auto last_error_log = async::Clock::now() - kErrorLogEvery;
  for (;;) {
    if (queued_.empty()) {
      work_.clear();
      co_await work_.wait();
      continue;
    }
    std::vector<Op> batch;
    if (queued_.size() <= kMaxOpsPerBatch) {
      batch.swap(queued_);
    } else {
      batch.assign(std::make_move_iterator(queued_.begin()),
                   std::make_move_iterator(queued_.begin() + kMaxOpsPerBatch));
      queued_.erase(queued_.begin(), queued_.begin() + kMaxOpsPerBatch);
    }
    std::int64_t now = unix_ms();
    std::vector<std::string> args;
    args.reserve(7 + 7 * batch.size());
    args.push_back(ms_str(now));
    args.push_back(keys_.base);
    args.push_back(s_.queue);
    args.push_back(s_.worker);
    args.push_back(std::to_string(std::max<long long>(1, s_.result_ttl.count() / 1000)));
    args.push_back(std::to_string(s_.dead_max));
    args.push_back(ms_str(now - s_.dead_ttl.count()));
    for (auto& op : batch) {
      for (auto& field : op.f) args.push_back(std::move(field));
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
      if (!batch[i].result) continue;
      long long v = -1;
      if (reply.is_array() && i < reply.elements.size()) v = reply.elements[i].integer;
      batch[i].result->set_value(v);
    }
    written_ += batch.size();
    progress_.set();
    progress_.clear();
  }
}

}  // namespace jq::store
