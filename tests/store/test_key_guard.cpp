// Every script touches only the keys it is given, all of one hash tag: each one is run through
// the protocol's own calls with a guard in front that checks every redis.call (Redis Cluster and
// Dragonfly refuse undeclared keys; a key built inside Lua would break there).
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "redis/sync_client.hpp"
#include "store/after.hpp"
#include "store/calls.hpp"
#include "store/held.hpp"
#include "store/marker.hpp"
#include "store/queue_store.hpp"
#include "store/scripts.hpp"
#include "store/settler.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace std::chrono_literals;
using jq::test::run_test;

namespace {

// Lua put in front of every script. A violation is written to `guard:violation` (a plain error
// could be caught by the script's own pcall), and each script that ran is noted in `guard:ran`.
// The guard's own keys are the only undeclared ones it touches.
const char* kGuard = R"lua(
local __real = redis
local __declared, __tag = {}, nil
local function __violation(msg)
  __real.call('RPUSH', 'guard:violation', '$NAME: ' .. msg)
end
local function __tag_of(k)
  local open = string.find(k, '{', 1, true)
  if open then
    local close = string.find(k, '}', open + 1, true)
    if close and close > open + 1 then return string.sub(k, open + 1, close - 1) end
  end
  return k
end
for _, k in ipairs(KEYS) do
  __declared[k] = true
  local t = __tag_of(k)
  if __tag == nil then __tag = t elseif t ~= __tag then
    __violation('keys of two slots: ' .. table.concat(KEYS, ' '))
  end
end
__real.call('SADD', 'guard:ran', '$NAME')
-- Which arguments of each command are keys: 'first', 'two' (the first two), 'all', 'none'.
local __keys_of = {
  TIME = 'none', PUBLISH = 'none', PUBSUB = 'none', SCAN = 'none',
  EXISTS = 'all', DEL = 'all', RENAME = 'two',
  HSET = 'first', HGET = 'first', HMGET = 'first', HDEL = 'first', HEXISTS = 'first',
  HGETALL = 'first', HLEN = 'first', HKEYS = 'first', HVALS = 'first', HINCRBY = 'first',
  ZADD = 'first', ZREM = 'first', ZSCORE = 'first', ZCARD = 'first', ZRANGE = 'first',
  ZRANGEBYSCORE = 'first', LPUSH = 'first', RPUSH = 'first', RPOP = 'first', LREM = 'first',
  LLEN = 'first', LRANGE = 'first', LTRIM = 'first', TYPE = 'first', EXPIRE = 'first',
  PEXPIRE = 'first', PERSIST = 'first',
  SET = 'first', GET = 'first', SADD = 'first', PTTL = 'first',
}
local function __check(cmd, ...)
  local name = string.upper(cmd)
  local rule = __keys_of[name]
  local args = {...}
  local function need(k)
    if not __declared[k] then __violation(name .. ' on a key not in KEYS: ' .. tostring(k)) end
  end
  if rule == nil then
    __violation('the guard has no key rule for ' .. name)
  elseif rule == 'all' then
    for _, k in ipairs(args) do need(k) end
  elseif rule == 'two' then
    need(args[1]); need(args[2])
  elseif rule == 'first' then
    need(args[1])
  end
end
local redis = setmetatable({
  call = function(cmd, ...) __check(cmd, ...); return __real.call(cmd, ...) end,
  pcall = function(cmd, ...) __check(cmd, ...); return __real.pcall(cmd, ...) end,
}, {__index = __real})
)lua";

const std::set<std::string> kHandlers{"h"};

struct Guarded {
  Guarded() { store::scripts::set_guard(kGuard); }
  ~Guarded() { store::scripts::set_guard(""); }
};

std::string job_text(const std::string& id) {
  return R"({"id":")" + id + R"(","payload":1})";
}

}  // namespace

TEST_CASE("every script touches only the keys it is given, all of the queue's slot",
          "[store][keys]") {
  Guarded guard;
  test::RedisServer server;
  auto r = server.client();
  for (auto id : {"a", "b", "c", "d", "e"}) r.cmd({"LPUSH", "jobq:{q}:pending", job_text(id)});
  auto body = [&]() -> async::Task<void> {
    redis::Client::Options o;
    o.connect.url = redis::parse_url(server.url());
    redis::Client main(o), blocking(o);
    main.start();
    blocking.start();
    co_await main.wait_connected();
    co_await blocking.wait_connected();
    store::Settings s;
    s.queue = "q";
    s.worker = "w1";
    s.default_handler = "h";
    s.lease = 200ms;
    s.dead_max = 1;
    job::Rules rules;
    rules.default_handler = "h";
    rules.handlers = &kHandlers;
    store::QueueStore st(main, blocking, s, rules);
    store::Settler settler(st);
    settler.start();
    (void)(co_await st.register_lease()).value();
    (void)(co_await st.renew_lease()).value();
    auto got = (co_await st.fetch(5)).value();
    REQUIRE(got.jobs.size() == 5);
    // A waiting duplicate (claim, unclaim).
    r.cmd({"LPUSH", "jobq:{q}:pending", job_text("a")});
    auto dup = (co_await st.fetch(1)).value();
    REQUIRE(dup.waits.size() == 1);
    settler.push(store::held::wait(dup.waits[0].first));
    co_await st.check_claim(dup.waits[0].first.id, dup.waits[0].second);
    // Jobs with a unique key: a lock taken, a duplicate, the lock let go of.
    r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"u1","payload":1,"unique_key":"k"})",
           R"({"id":"u2","payload":1,"unique_key":"k"})"});
    auto locked = (co_await st.fetch(2)).value();
    REQUIRE(locked.jobs.size() == 1);
    REQUIRE(locked.duplicates.size() == 1);
    settler.push(store::held::unlock(locked.jobs[0]));
    // Every settlement.
    const auto& j = got.jobs;
    settler.push(store::held::start(j[0], "1"));
    settler.push(store::held::ok(j[0], "1", "r"));
    settler.push(store::held::retry(j[1], "1", "e", job::ErrorKind::exception, 0ms));
    settler.push(store::held::dead(j[2], "1", "e", job::ErrorKind::exception));
    settler.push(store::held::cancel(j[3], "1", "e"));
    settler.push(store::held::back(j[4]));
    store::Settlement spool;
    spool.op = store::Settlement::Op::claim;
    spool.id = "s1";
    spool.nonce = spool.claim = "spool:x";
    settler.push(std::move(spool));
    const bool flushed = co_await settler.flush(5s);
    CHECK(flushed);
    // Upkeep.
    co_await async::sleep(250ms);
    (void)(co_await st.promote()).value();
    (void)(co_await st.trim_dead()).value();
    (void)(co_await st.control()).value();
    (void)(co_await st.repair()).value();
    (void)(co_await st.reconcile()).value();
    // Another worker's expired lease, recovered.
    r.cmd({"ZADD", "jobq:{q}:leases", "1", "w9"});
    r.cmd({"HSET", "jobq:{q}:dependents", "y", "q/wt"});  // y, dead, tells it
    r.cmd({"HSET", "jobq:{q}:inflight:w9", "1", job_text("z"), "2",
           R"({"id":"y","payload":1,"unique_key":"k2","max_attempts":1})"});
    (void)(co_await st.recover_expired()).value();
    // group_by: jobs sorted into a group, taken within its rate and concurrency (the second
    // fetch finds the group full: its holds checked against the inflight hashes).
    store::Settings gs = s;
    gs.worker = "w2";
    gs.groups.path = {"payload", "tenant"};
    gs.groups.slots = 1;
    gs.groups.rate = {0.05, 5};
    gs.global_slots = 5;  // the queue-wide count too: the live workers' inflight hashes
    store::QueueStore grouped(main, blocking, gs, rules);
    (void)(co_await grouped.register_lease()).value();
    r.cmd({"LPUSH", "jobq:{q}:pending", R"({"id":"g1","payload":{"tenant":"t"}})",
           R"({"id":"g2","payload":{"tenant":"t"}})"});
    // (Jobs given back and recovered above are in the default group: taken too.)
    const auto of_t = [](const store::Fetched& f) {
      return std::count_if(f.jobs.begin(), f.jobs.end(),
                           [](const store::Reading& j) { return j.id[0] == 'g'; });
    };
    auto in_group = (co_await grouped.fetch(10)).value();
    CHECK(of_t(in_group) == 1);
    auto full = (co_await grouped.fetch(10)).value();
    CHECK(of_t(full) == 0);
    // A queue without group_by moves what the groups still hold back to pending.
    auto grouped_due = (co_await st.promote()).value();
    CHECK(grouped_due.grouped);
    (void)(co_await st.ungroup()).value();
    // A queue with priorities takes a dead worker's high job back to pending:high.
    store::Settings ps = s;
    ps.worker = "w3";
    ps.order.mode = store::Order::Mode::strict;
    store::QueueStore ordered(main, blocking, ps, rules);
    r.cmd({"ZADD", "jobq:{q}:leases", "1", "w8"});
    r.cmd({"HSET", "jobq:{q}:inflight:w8", "1", R"({"id":"hi","payload":1,"priority":"high"})"});
    (void)(co_await ordered.recover_expired()).value();
    CHECK(r.integer({"LLEN", "jobq:{q}:pending:high"}) == 1);
    (void)(co_await st.release_lease()).value();
    auto depth_call = store::depths(st.keys());
    (void)(co_await store::run(main, depth_call)).value();
    store::Heartbeat h;
    h.worker = "w1";
    auto beat = store::heartbeat("jobq", h);
    (void)(co_await store::run(main, beat)).value();
    store::MinuteCounts m;
    m.succeeded = 1;
    auto minute = store::add_history(st.keys(), 1000, m);
    (void)(co_await store::run(main, minute)).value();
    co_await settler.stop();
    co_await main.stop();
    co_await blocking.stop();
  };
  run_test(body());
  // jobqctl's calls.
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const store::Keys k("jobq", "q");
  const auto now = store::unix_ms();
  const std::string copy = store::marked_submission(job_text("m"), "m", now);
  (void)store::run(c, store::submit(k, "m", "q", copy, now, std::nullopt)).value();
  r.cmd({"HSET", "jobq:{q}:dependents", "m", "q/wt"});  // cancelled, it tells the job on it
  (void)store::run(c, store::cancel(k, "q", "m", "pending", copy, 1s, "test")).value();
  (void)store::run(c, store::cancel(k, "q", "m", "request", "", 1s, "test")).value();
  (void)store::run(c, store::submit(k, "n", "q", copy, now, now + 100000)).value();
  // Unique keys: debounce queued, then replacing it (its state declared), a lock refusing, a
  // cancel letting go of it, garbage moved aside.
  store::UniqueAsk ask;
  ask.key = "k9";
  ask.rule.mode = store::UniqueRule::Mode::debounce;
  auto u9 = store::run(c, store::submit(k, "u9", "q", copy, now, std::nullopt, ask)).value();
  CHECK(u9.what == store::Submitted::What::queued);
  ask.expected = "u9";
  r.cmd({"HSET", "jobq:{q}:dependents", "u9", "q/wt"});  // replaced, it tells the job on it
  auto u7 = store::run(c, store::submit(k, "u7", "q", copy, now, std::nullopt, ask)).value();
  CHECK(u7.other == "u9");
  ask.rule.mode = store::UniqueRule::Mode::lock;
  ask.expected.clear();
  r.cmd({"PERSIST", "jobq:{q}:unique:k9"});  // as if written by hand: given an expiry
  auto u8 = store::run(c, store::submit(k, "u8", "q", copy, now, std::nullopt, ask)).value();
  CHECK(u8.what == store::Submitted::What::duplicate);
  (void)store::run(c, store::cancel(k, "q", "u7", "pending", copy, 1s, "test", "k9")).value();
  r.cmd({"HSET", "jobq:{q}:unique:k9", "x", "1"});
  (void)store::run(c, store::repair_lock(k, "k9", now)).value();
  r.cmd({"ZADD", "jobq:{q}:dead", "1", "dd"});
  r.cmd({"HSET", "jobq:{q}:dead:bodies", "dd", job_text("dd")});
  (void)store::run(c, store::requeue_dead(k, {"dd"})).value();
  r.cmd({"ZADD", "jobq:{q}:dead", "1", "dd"});
  (void)store::run(c, store::drop_dead(k, {"dd"})).value();
  (void)store::run(c, store::scan_states(k, "0", 10)).value();
  // Schedules: defined, fired (twice: the second finds it moved), paused, removed.
  (void)store::run(c, store::define_schedule(k, "s", "{}", "@every 1s|", 1000, true)).value();
  (void)store::run(
      c, store::fire_schedule(k, "s", "@every 1s|", 1000, 2000,
                              {{"s:1", 0, job_text("s:1")}, {"s:2", now + 5000, job_text("s:2")}}))
      .value();
  (void)store::run(c, store::fire_schedule(k, "s", "@every 1s|", 1000, 2000, {})).value();
  (void)store::run(c, store::control_schedule(k, "pause", "s")).value();
  (void)store::run(c, store::control_schedule(k, "rm", "s")).value();
  // A fetch through a rate's bucket (and one the bucket holds back).
  (void)store::run(c, store::acquire(k, "wr", 5s)).value();
  (void)store::run(c, store::fetch(k, "wr", 900, 2, 100000, {0.05, 5})).value();
  (void)store::run(c, store::slow_down(k, now + 60000)).value();
  (void)store::run(c, store::fetch(k, "wr", 902, 2, 100000, {0.05, 5})).value();
  // Priorities: a submission to a level's list (with its wake), a fetch by weight and one
  // strict, a queue without them folding the lists into pending.
  (void)store::run(c, store::submit(k, "ph", "q", copy, now, std::nullopt, job::Priority::high))
      .value();
  r.cmd({"LPUSH", "jobq:{q}:pending:low", job_text("pl")});
  store::Order order;
  order.mode = store::Order::Mode::weighted;
  (void)store::run(c, store::fetch(k, "wr", 904, 1, 100000, {}, {}, order)).value();
  order.mode = store::Order::Mode::strict;
  (void)store::run(c, store::fetch(k, "wr", 905, 1, 100000, {}, {}, order)).value();
  r.cmd({"LPUSH", "jobq:{q}:pending:high", job_text("ph2")});
  (void)store::run(c, store::fold(k, 10)).value();
  // Jobs that wait for others: one waits for two, one of them final already (the outbox), the
  // other noted as its dependent; told of both, it is released; one decided by its policy tells
  // its own dependents.
  store::Waiting w;
  w.id = "wt";
  w.queue = "q";
  w.copy = job_text("wt");
  w.cut = w.copy.size() - 1;
  w.submitted_at = std::to_string(now);
  w.deadline = now + 60000;
  w.refs = {"q/d1", "q/d2"};
  (void)store::run(c, store::after_wait(k, w)).value();
  r.cmd({"HSET", "jobq:{q}:job:d1", "status", "succeeded", "result", "1"});
  (void)store::run(c, store::after_register(k, "q", "q/wt", {"d1", "d2"})).value();
  const auto outbox = store::run(c, store::outbox_head(k, 10)).value();
  for (const auto& text : outbox) {
    const auto entry = store::outbox_entry(text);
    REQUIRE(entry);
    (void)store::run(c, store::after_resolve(k, "q", "wt", entry->outcome, 1000, 1 << 20)).value();
    (void)store::run(c, store::outbox_done(k, text)).value();
  }
  store::Outcome d2;
  d2.queue = "q";
  d2.job = "d2";
  d2.status = "succeeded";
  (void)store::run(c, store::after_resolve(k, "q", "wt", d2, 1000, 1 << 20)).value();
  w.id = "wf";
  (void)store::run(c, store::after_wait(k, w)).value();
  (void)store::run(c, store::after_register(k, "q", "q/wg", {"wf"})).value();
  d2.status = "failed";
  (void)store::run(c, store::after_resolve(k, "q", "wf", d2, 1000, 1 << 20)).value();
  // One cancelled while it waits tells its own dependent; one past its deadline ends by it.
  w.id = "wc";
  (void)store::run(c, store::after_wait(k, w)).value();
  (void)store::run(c, store::after_register(k, "q", "q/wh", {"wc"})).value();
  const std::string waiting_copy = store::run(c, store::waiting_copy(k, "wc")).value();
  (void)store::run(c, store::cancel(k, "q", "wc", "waiting", waiting_copy, 1s, "test")).value();
  w.id = "we";
  w.deadline = 1000;
  (void)store::run(c, store::after_wait(k, w)).value();
  (void)store::run(c, store::after_register(k, "q", "q/wh", {"we"})).value();
  (void)store::run(c, store::after_expire(k, "q", "we", now, "24h", 1000, 1 << 20)).value();
  // A flow on a cluster: a job held by its gate, the flow done (the gate told through the
  // outbox); another given up, its job ended by the gate at its deadline.
  w.id = "wflow";
  w.refs.clear();
  w.flow = "F";
  w.deadline = now + 60000;
  (void)store::run(c, store::flow_step(k, store::FlowStep::begin, "F", "q/wflow\n")).value();
  (void)store::run(c, store::after_wait(k, w)).value();
  (void)store::run(c, store::flow_step(k, store::FlowStep::touch, "F")).value();
  (void)store::run(c, store::flow_step(k, store::FlowStep::done, "F")).value();
  const auto gates = store::run(c, store::outbox_head(k, 10)).value();
  for (const auto& text : gates) {
    const auto entry = store::outbox_entry(text);
    REQUIRE(entry);
    (void)store::run(
        c, store::after_resolve(k, entry->to_queue, entry->to_id, entry->outcome, 1000, 1 << 20))
        .value();
    (void)store::run(c, store::outbox_done(k, text)).value();
  }
  w.id = "wgiven";
  w.flow = "G";
  w.deadline = 1000;
  (void)store::run(c, store::flow_step(k, store::FlowStep::begin, "G", "q/wgiven\n")).value();
  (void)store::run(c, store::after_wait(k, w)).value();
  (void)store::run(c, store::flow_step(k, store::FlowStep::abort, "G", "test")).value();
  (void)store::run(c, store::after_expire(k, "q", "wgiven", now, "24h", 1000, 1 << 20)).value();

  auto violations = r.cmd({"LRANGE", "guard:violation", "0", "-1"});
  std::string said;
  for (const auto& v : violations.elements) said += v.str + "\n";
  INFO(said);
  CHECK(violations.elements.empty());
  // Every script was run under the guard.
  std::set<std::string> ran;
  for (const auto& e : r.cmd({"SMEMBERS", "guard:ran"}).elements) ran.insert(e.str);
  for (const auto* script : store::scripts::all()) {
    INFO(script->name());
    CHECK(ran.count(script->name()) == 1);
  }
}

TEST_CASE("the key guard catches a key a script builds itself", "[store][keys]") {
  // The guard is only worth its test if it fails where it should: a script that builds a key
  // from ARGV, run under it.
  test::RedisServer server;
  auto r = server.client();
  const std::string body = std::string(kGuard) +
                           "\nredis.call('HGET', ARGV[1] .. ':job:x', 'status')\n"
                           "redis.call('HGET', KEYS[1], 'status')\nreturn 1\n";
  std::string script = body;
  for (auto at = script.find("$NAME"); at != std::string::npos; at = script.find("$NAME", at)) {
    script.replace(at, 5, "bad");
  }
  r.cmd({"EVAL", script, "2", "jobq:{q}:live", "jobq:{other}:live", "jobq:{q}"});
  auto violations = r.cmd({"LRANGE", "guard:violation", "0", "-1"});
  REQUIRE(violations.elements.size() == 2);
  CHECK(violations.elements[0].str.find("two slots") != std::string::npos);
  CHECK(violations.elements[1].str.find("jobq:{q}:job:x") != std::string::npos);
}
