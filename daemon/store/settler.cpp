// The Settler's batches: each settlement as lua/settle.lua takes it, sent until Redis answers.
#include "store/settler.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "store/scripts.hpp"

namespace jq::store {
namespace {

// A settle holds Redis some microseconds per change, while no other client's command runs: 100
// keep a batch near a millisecond, and cost a round trip per 100 jobs at most.
constexpr std::size_t kMaxPerBatch = 100;
// Well under Redis' 1 GB query buffer, and small enough not to hold Redis for long.
constexpr std::size_t kMaxBatchBytes = 16 * 1024 * 1024;

const char* op_name(Settlement::Op op) {
  switch (op) {
    case Settlement::Op::start:
      return "start";
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
    case Settlement::Op::claim:
      return "claim";
  }
  return "?";
}

std::string num(long long v) {
  return std::to_string(v);
}

// One batch as the settle script takes it (its header is documented there).
Request settle_request(const QueueStore& store, std::vector<Settlement>& batch) {
  const Keys& k = store.keys();
  const Settings& s = store.settings();
  Request req;
  req.script = &scripts::settle();
  req.keys = {k.inflight(s.worker), k.delayed, k.dead, k.pending, k.live, k.dead_bodies};
  auto key_of = [&](const std::string& id) {
    req.keys.push_back(k.job(id));
    return std::to_string(req.keys.size());
  };
  auto& a = req.args;
  a.reserve(5 + 12 * batch.size());
  a.push_back(s.worker);
  a.push_back(s.queue);
  a.push_back(k.events);
  a.push_back(num(
      s.keep_succeeded.count() == 0 ? 0 : std::max<long long>(1, s.keep_succeeded.count() / 1000)));
  a.push_back(num(s.dead_ttl.count()));
  for (auto& op : batch) {
    a.emplace_back(op_name(op.op));
    a.push_back(op.token ? std::to_string(op.token) : std::string());
    a.push_back(key_of(op.id));
    a.push_back(op.id);
    a.push_back(op.nonce);
    auto meta = [&] {
      a.push_back(num(op.attempts));
      a.push_back(op.handler);
      a.push_back(op.submitted_at);
      a.push_back(op.started_at);
    };
    switch (op.op) {
      case Settlement::Op::start:
        meta();
        a.emplace_back(op.fresh ? "1" : "0");
        a.push_back(std::to_string(op.cut));
        a.push_back(std::move(op.tail));
        break;
      case Settlement::Op::ok:
        meta();
        a.push_back(std::move(op.text));
        break;
      case Settlement::Op::retry:
        meta();
        a.push_back(std::move(op.text));
        a.emplace_back(job::to_string(op.kind));
        a.push_back(num(op.delay.count()));
        a.push_back(std::to_string(op.cut));
        a.push_back(std::move(op.tail));
        break;
      case Settlement::Op::dead:
        meta();
        a.push_back(std::move(op.text));
        a.emplace_back(job::to_string(op.kind));
        a.push_back(op.cut == Copy::npos ? std::string("-1") : std::to_string(op.cut));
        a.push_back(std::move(op.tail));
        if (op.fresh_id.empty()) {
          a.emplace_back();
          a.emplace_back();
        } else {
          a.push_back(key_of(op.fresh_id));
          a.push_back(op.fresh_id);
        }
        break;
      case Settlement::Op::back:
        a.push_back(num(op.attempts));
        a.push_back(std::to_string(op.cut));
        a.push_back(std::move(op.tail));
        break;
      case Settlement::Op::cancel:
        meta();
        a.push_back(std::move(op.text));
        break;
      case Settlement::Op::claim:
        a.push_back(op.claim);
        break;
    }
  }
  return req;
}

}  // namespace

Settler::Settler(QueueStore& store) : store_(store) {}

Settler::~Settler() {
  if (task_.valid()) task_.abort();
}

void Settler::start() {
  if (!task_.valid()) task_ = async::spawn(run(), "settler " + store_.settings().queue);
}

async::Task<void> Settler::stop() {
  if (task_.valid()) {
    task_.cancel();
    co_await task_.wait();
  }
}

void Settler::disown(const OnSettled* n) noexcept {
  for (auto* v : {&queued_, &sending_}) {
    for (auto& s : *v) {
      if (s.notify == n) s.notify = nullptr;
    }
  }
}

void Settler::push(Settlement s) {
  queued_.push_back(std::move(s));
  ++enqueued_;
  work_.set();
}

async::Task<bool> Settler::flush(Millis timeout) {
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

async::Task<void> Settler::run() {
  const std::string& queue = store_.settings().queue;
  for (;;) {
    if (queued_.empty()) {
      work_.clear();
      co_await work_.wait();
      continue;
    }
    // A batch: every queued settlement, up to a count and a size.
    std::size_t take = 0, bytes = 0;
    while (take < queued_.size() && take < kMaxPerBatch) {
      const auto& q = queued_[take];
      std::size_t b = q.text.size() + q.tail.size() + q.id.size() + 128;
      if (take > 0 && bytes + b > kMaxBatchBytes) break;
      bytes += b;
      ++take;
    }
    sending_.assign(std::make_move_iterator(queued_.begin()),
                    std::make_move_iterator(queued_.begin() + take));
    queued_.erase(queued_.begin(), queued_.begin() + take);
    auto& batch = sending_;
    Call<redis::Reply> call{settle_request(store_, batch),
                            [](redis::Reply r) -> OpResult<redis::Reply> { return r; }};
    // Sent until Redis answers (every settlement can be made twice).
    redis::Reply reply = co_await store_.until_answered(call, "writing job outcomes");
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& op = batch[i];
      const redis::Reply* r =
          reply.is_array() && i < reply.elements.size() ? &reply.elements[i] : nullptr;
      Settled how = Settled::done;
      if (r && r->type == redis::Reply::Type::string && op.op == Settlement::Op::claim) {
        how = Settled::taken;
      } else if (!r || r->type != redis::Reply::Type::integer) {
        how = Settled::refused;
        if (refusals_.due()) {
          spdlog::error("queue {}: Redis refused to record '{}' for job {}: {}", queue,
                        op_name(op.op), op.id, r ? r->str : "no reply for it");
        }
      } else if (r->integer == 0) {
        how = Settled::not_held;
      } else if (r->integer == 2) {
        how = Settled::renamed;
      }
      if (op.op == Settlement::Op::dead && how != Settled::refused) deaths_ = true;
      // A refused one stays held in Redis: reconcile returns it to pending.
      const bool ends = op.op != Settlement::Op::start && op.op != Settlement::Op::claim;
      if (op.token && ends) store_.released(op.token);
      if (op.notify) op.notify->settled(how);
    }
    written_ += batch.size();
    batch.clear();
    progress_.set();
    progress_.clear();
  }
}

}  // namespace jq::store
