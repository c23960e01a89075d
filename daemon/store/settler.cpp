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
    case Settlement::Op::wait:
      return "wait";
    case Settlement::Op::claim:
      return "claim";
    case Settlement::Op::unlock:
      return "unlock";
  }
  return "?";
}

std::string num(long long v) {
  return std::to_string(v);
}

std::string cut_of(std::size_t cut) {
  return cut == Copy::npos ? std::string("-1") : std::to_string(cut);
}

// One change other than a success, as the settle script takes it (by its code: see the script's
// header). A `dead` change's fresh key, and the priority list a `back` change goes to, go after
// every change's own. `payloads`: the batch says it carries them (retain.payload), and a dead or
// cancel change ends with its own. `levels`: the queue has priorities (a job given back returns
// to its level's list; without, to pending: the fold moves it there anyway).
void push_other(Request& req, const Keys& k, Settlement& op, std::int64_t now, bool payloads,
                bool levels) {
  auto& a = req.args;
  a.emplace_back(op_name(op.op));
  a.push_back(op.token ? std::to_string(op.token) : std::string());
  a.push_back(op.id);
  a.push_back(op.nonce);
  auto meta = [&] {
    a.push_back(num(op.attempts));
    a.push_back(op.handler);
    a.push_back(op.submitted_at);
    a.push_back(op.started_at);
  };
  switch (op.op) {
    case Settlement::Op::ok:
      break;  // among the successes above
    case Settlement::Op::retry:
      meta();
      a.push_back(std::move(op.text));
      a.emplace_back(job::to_string(op.kind));
      a.push_back(num(now + op.delay.count()));
      a.push_back(cut_of(op.cut));
      a.push_back(std::move(op.tail));
      a.push_back(std::move(op.file));
      break;
    case Settlement::Op::dead:
      meta();
      a.push_back(std::move(op.text));
      a.emplace_back(job::to_string(op.kind));
      a.push_back(cut_of(op.cut));
      a.push_back(std::move(op.tail));
      if (op.fresh_id.empty()) {
        a.emplace_back();
        a.emplace_back();
      } else {
        req.keys.push_back(k.job(op.fresh_id));
        a.push_back(std::to_string(req.keys.size()));
        a.push_back(op.fresh_id);
      }
      a.push_back(std::move(op.file));
      if (payloads) a.push_back(std::move(op.payload));
      break;
    case Settlement::Op::cancel:
      meta();
      a.push_back(std::move(op.text));
      a.push_back(std::move(op.file));
      if (payloads) a.push_back(std::move(op.payload));
      break;
    case Settlement::Op::back:
      a.push_back(op.state ? num(op.attempts) : std::string());
      a.push_back(cut_of(op.cut));
      a.push_back(std::move(op.tail));
      if (levels && op.level != job::Priority::normal) {
        req.keys.push_back(k.pending_at(static_cast<std::size_t>(op.level)));
        a.push_back(std::to_string(req.keys.size()));
      } else {
        a.emplace_back();  // pending
      }
      break;
    case Settlement::Op::start:
      meta();
      a.emplace_back(op.fresh ? "1" : "0");
      a.push_back(cut_of(op.cut));
      a.push_back(std::move(op.tail));
      a.push_back(std::move(op.file));
      break;
    case Settlement::Op::wait:
      a.push_back(num(now + op.delay.count()));
      a.push_back(cut_of(op.cut));
      a.push_back(std::move(op.tail));
      break;
    case Settlement::Op::claim:
      a.push_back(op.claim);
      break;
    case Settlement::Op::unlock:
      break;  // its key (the lock) is all it needs
  }
}

// One batch as the settle script takes it (its header is documented there): the successes
// first, then the others, each in the order pushed (the caller ordered `batch` so).
Request settle_request(const QueueStore& store, std::vector<Settlement>& batch, std::size_t oks) {
  const Keys& k = store.keys();
  const Settings& s = store.settings();
  const std::int64_t now = store.redis_now();
  const bool keep = s.keep_succeeded.count() != 0;
  // Only a queue that retains payloads sends them: one without pays an empty argument a batch.
  const bool payloads = s.retain_payload;
  Request req;
  req.script = &scripts::settle();
  req.keys = {k.inflight(s.worker), k.delayed, k.dead, k.pending, k.live, k.dead_bodies};
  req.keys.reserve(6 + batch.size());
  for (const auto& op : batch) {
    req.keys.push_back(op.op == Settlement::Op::unlock ? k.unique(op.unique_key) : k.job(op.id));
  }
  auto& a = req.args;
  a.reserve(8 + (payloads ? 10 : 9) * batch.size());
  a.push_back(s.worker);
  a.push_back(s.queue);
  a.push_back(k.events);
  a.push_back(num(keep ? std::max<long long>(1, s.keep_succeeded.count() / 1000) : 0));
  a.push_back(num(s.dead_ttl.count()));
  a.push_back(num(now));
  a.push_back(std::to_string(oks));
  a.emplace_back(payloads ? "1" : "");
  for (std::size_t i = 0; i < oks; ++i) {
    auto& op = batch[i];
    a.push_back(op.token ? std::to_string(op.token) : std::string());
    a.push_back(op.id);
    if (!keep) continue;  // nothing of it is kept
    a.push_back(num(op.attempts));
    a.push_back(op.handler);
    a.push_back(op.submitted_at);
    a.push_back(op.started_at);
    a.push_back(std::move(op.text));
    a.push_back(std::move(op.file));
    if (payloads) a.push_back(std::move(op.payload));
  }
  const bool levels = s.order.on();
  for (std::size_t i = oks; i < batch.size(); ++i) {
    push_other(req, k, batch[i], now, payloads, levels);
  }
  // Last, after the keys push_other added: where the jobs waiting on these are noted and told.
  req.keys.push_back(k.dependents);
  req.keys.push_back(k.outbox);
  return req;
}

// The batch in the order the script takes it: successes first, then the rest, each kept in the
// order pushed. A `start` whose job's end is in the same batch is left out (its end says more,
// and would otherwise be written first); it is answered done with the batch. Returns the number
// of successes.
std::size_t arrange(std::vector<Settlement>& batch, std::vector<Settlement>& superseded) {
  auto ends = [](const Settlement& s) {
    return s.op != Settlement::Op::start && s.op != Settlement::Op::claim &&
           s.op != Settlement::Op::unlock;
  };
  std::vector<Settlement> oks, others;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& op = batch[i];
    if (op.op == Settlement::Op::start) {
      bool later_end = false;
      for (std::size_t j = i + 1; j < batch.size() && !later_end; ++j) {
        later_end = ends(batch[j]) && batch[j].id == op.id && batch[j].token == op.token;
      }
      if (later_end) {
        superseded.push_back(std::move(op));
        continue;
      }
    }
    (op.op == Settlement::Op::ok ? oks : others).push_back(std::move(op));
  }
  const std::size_t n = oks.size();
  batch = std::move(oks);
  for (auto& op : others) batch.push_back(std::move(op));
  return n;
}

// The settle reply, read: how each change went, and what Redis said of it when it said more
// than done (an error message for a refused change).
struct Answers {
  std::vector<Settled> how;
  std::vector<const redis::Reply*> said;
  bool readable = true;  // false: a reply of another shape, every change refused
  bool foreign = false;  // a change failed on a key holding what jobqd does not keep there
  long long told = 0;    // outcomes put in the outbox for jobs that wait on these
};

// The reply lists only the changes whose answer is not plain done, as (index from 1, answer),
// then (0, outcomes put in the outbox) when there were any.
Answers read_answers(const redis::Reply& reply, const std::vector<Settlement>& batch) {
  Answers a;
  a.how.assign(batch.size(), Settled::done);
  a.said.assign(batch.size(), nullptr);
  a.readable = reply.is_array() && reply.elements.size() % 2 == 0;
  for (std::size_t i = 0; a.readable && i + 1 < reply.elements.size(); i += 2) {
    const auto& index = reply.elements[i];
    if (index.type == redis::Reply::Type::integer && index.integer == 0 &&
        reply.elements[i + 1].type == redis::Reply::Type::integer) {
      a.told = reply.elements[i + 1].integer;
      continue;
    }
    if (index.type != redis::Reply::Type::integer || index.integer < 1 ||
        static_cast<std::size_t>(index.integer) > batch.size()) {
      a.readable = false;
      break;
    }
    a.said[static_cast<std::size_t>(index.integer) - 1] = &reply.elements[i + 1];
  }
  using T = redis::Reply::Type;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const redis::Reply* r = a.said[i];
    if (!a.readable) {
      a.how[i] = Settled::refused;
    } else if (!r) {
      a.how[i] = Settled::done;
    } else if (r->type == T::integer && r->integer == 0) {
      a.how[i] = Settled::not_held;
    } else if (r->type == T::integer && r->integer == 2) {
      a.how[i] = Settled::renamed;
    } else if (r->type == T::string && batch[i].op == Settlement::Op::claim) {
      a.how[i] = Settled::taken;
    } else {
      a.how[i] = Settled::refused;
      if (r->str.rfind("WRONGTYPE", 0) == 0) a.foreign = true;
    }
  }
  return a;
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
      std::size_t b =
          q.text.size() + q.tail.size() + q.id.size() + q.file.size() + q.payload.size() + 128;
      if (take > 0 && bytes + b > kMaxBatchBytes) break;
      bytes += b;
      ++take;
    }
    // An unlock goes with the end before it: its guard (the job still held) is read as the
    // batch begins, so in a later batch it would find its job gone and leave the lock.
    while (take < queued_.size() && queued_[take].op == Settlement::Op::unlock) ++take;
    sending_.assign(std::make_move_iterator(queued_.begin()),
                    std::make_move_iterator(queued_.begin() + take));
    queued_.erase(queued_.begin(), queued_.begin() + take);
    auto& batch = sending_;
    std::vector<Settlement> superseded;
    const std::size_t oks = arrange(batch, superseded);
    // Said at once (nothing waits on a start but to know it is through).
    for (auto& op : superseded) {
      if (op.notify) op.notify->settled(Settled::done);
    }
    Call<redis::Reply> call{settle_request(store_, batch, oks),
                            [](redis::Reply r) -> OpResult<redis::Reply> { return r; }};
    // Sent until Redis answers (every settlement can be made twice).
    redis::Reply reply = co_await store_.until_answered(call, "writing job outcomes");
    // Only when asked for: no coroutine frame per batch on the default path.
    if (store_.settings().wait_replicas > 0) co_await store_.replicated("job outcomes");
    const Answers a = read_answers(reply, batch);
    if (a.told > 0 && told_) told_->set();
    if (!a.readable && refusals_.due()) {
      spdlog::error("queue {}: a settle reply of another shape ({}): its jobs stay held", queue,
                    reply.describe());
    }
    // A change refused for garbage at one of the queue's keys goes again once the garbage is
    // moved aside (a refused change did nothing that sending it again would do twice).
    std::vector<Settlement> again;
    if (a.foreign) {
      auto fixed = co_await store_.repair();
      if (fixed.ok() && !fixed->empty()) {
        for (std::size_t i = 0; i < batch.size(); ++i) {
          if (a.how[i] == Settled::refused) again.push_back(std::move(batch[i]));
        }
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& op = batch[i];
      const Settled how = a.how[i];
      if (how == Settled::refused && !again.empty()) continue;  // moved to `again`
      if (how == Settled::refused && a.said[i] && refusals_.due()) {
        spdlog::error("queue {}: Redis refused to record '{}' for job {}: {}", queue,
                      op_name(op.op), op.id, a.said[i]->str);
      }
      if (op.op == Settlement::Op::dead && how != Settled::refused) deaths_ = true;
      // A refused one stays held in Redis: reconcile returns it to pending.
      const bool ends = op.op != Settlement::Op::start && op.op != Settlement::Op::claim &&
                        op.op != Settlement::Op::unlock;
      if (op.token && ends) store_.released(op.token);
      if (op.notify) op.notify->settled(how);
    }
    queued_.insert(queued_.begin(), std::make_move_iterator(again.begin()),
                   std::make_move_iterator(again.end()));
    written_ += batch.size() + superseded.size() - again.size();
    batch.clear();
    progress_.set();
    progress_.clear();
  }
}

}  // namespace jq::store
