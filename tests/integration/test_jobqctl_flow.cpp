// jobqctl flow ID (docs/workflows.md, "Flows") against a real Redis: the graph around a job as two
// trees (what it waits for, what waits on it) with states and times, a diamond's shared job shown
// once, a reference nobody submitted, the walk's bounds, --json, a job that ran under a real
// daemon (its times and errors), and flows over sharded queues (each job read at its id's home
// shard) and over a Redis Cluster's primaries (a job held by its flow's gate says so).
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "store/after.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"
#include "store/shards.hpp"
#include "tests/support/cluster.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"
#include "tests/support/half_flow.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

void served(SyncRedis& r, std::initializer_list<const char*> queues) {
  for (const char* q : queues) r.cmd({"SADD", "jobq:queues", q});
}

void submit(const RedisServer& redis, const std::string& id, const std::string& after = "",
            const std::string& queue = "q") {
  std::vector<std::string> args{"submit", queue, "{}", "--id", id};
  if (!after.empty()) args.insert(args.end(), {"--after", after});
  const auto ran = jobqctl(redis, args);
  INFO(ran.out);
  REQUIRE(ran.code == 0);
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The line of `text` that holds `what` ("" when none).
std::string line_of(const std::string& text, const std::string& what) {
  const auto at = text.find(what);
  if (at == std::string::npos) return "";
  const auto from = text.rfind('\n', at);
  const auto to = text.find('\n', at);
  return text.substr(from == std::string::npos ? 0 : from + 1,
                     to == std::string::npos ? std::string::npos
                                             : to - (from == std::string::npos ? 0 : from + 1));
}

// The first id `prefix`N whose home is shard `k` of `n` (store::home_shard, as jobqd homes it).
std::string id_at(const std::string& prefix, std::size_t n, std::size_t k) {
  for (int i = 0;; ++i) {
    std::string id = prefix + std::to_string(i);
    if (jq::store::home_shard(id, n) == k) return id;
  }
}

// A handler that holds its job until `flag` exists: what depends on it stays waiting meanwhile.
std::string held_until(const std::string& flag) {
  return R"({type: exec, command: ["/bin/sh", "-c", "while [ ! -e )" + flag +
         R"( ]; do sleep 0.05; done"], timeout: 60s})";
}

// A flow file written to `dir`, its path.
std::string flow_file(const TempDir& dir, const std::string& text) {
  const auto path = dir.path() / "flow.json";
  write_file(path, text);
  return path.string();
}

}  // namespace

TEST_CASE("jobqctl flow: a chain shows what it waits for up to its first job, and back down",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  submit(redis, "a");
  submit(redis, "b", "a");
  submit(redis, "c", "b");

  const auto up = jobqctl(redis, {"flow", "c", "-q", "q"});
  INFO(up.out);
  REQUIRE(up.code == 0);
  // c, then b under it, then a under b: each with its status and when it was submitted.
  const auto c_at = up.out.find("q/c  waiting  submitted ");
  const auto b_at = up.out.find("└─ q/b  waiting  submitted ");
  const auto a_at = up.out.find("   └─ q/a  queued  submitted ");
  CHECK(c_at == 0);
  CHECK(b_at != std::string::npos);
  CHECK(a_at != std::string::npos);
  CHECK(b_at < a_at);
  CHECK(count(up.out, "waits for 1 of 1") == 2);
  CHECK(up.out.find("dependents (what waits on it): none") != std::string::npos);
  // Found without -q, as status finds it.
  const auto found = jobqctl(redis, {"flow", "c"});
  CHECK(found.code == 0);
  CHECK(found.out.find("   └─ q/a  queued  submitted ") != std::string::npos);

  // From a: what waits on it, two levels down.
  const auto down = jobqctl(redis, {"flow", "a"});
  INFO(down.out);
  REQUIRE(down.code == 0);
  CHECK(down.out.find("after (what it waits for): none") != std::string::npos);
  const auto b_down = down.out.find("└─ q/b  waiting");
  const auto c_down = down.out.find("   └─ q/c  waiting");
  CHECK(b_down != std::string::npos);
  CHECK(c_down != std::string::npos);
  CHECK(b_down < c_down);
  CHECK(down.out.find("(cut") == std::string::npos);
}

TEST_CASE("jobqctl flow: a diamond's shared job is shown once, then as (above)",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q", "images"});
  submit(redis, "top");
  submit(redis, "left", "top");
  submit(redis, "right", "q/top", "images");
  submit(redis, "bottom", "left,images/right");

  const auto up = jobqctl(redis, {"flow", "bottom", "-q", "q"});
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("waits for 2 of 2") != std::string::npos);
  CHECK(count(up.out, "q/top  queued  submitted") == 1);
  CHECK(count(up.out, "q/top  queued  (above)") == 1);
  CHECK(up.out.find("q/top  queued  submitted") < up.out.find("q/top  queued  (above)"));
  CHECK(count(up.out, "images/right  waiting  submitted") == 1);

  const auto down = jobqctl(redis, {"flow", "top", "-q", "q"});
  INFO(down.out);
  REQUIRE(down.code == 0);
  CHECK(count(down.out, "q/bottom  waiting  submitted") == 1);
  CHECK(count(down.out, "q/bottom  waiting  (above)") == 1);

  // The same as data: bottom's after holds left and right, top below each, the second time as
  // above (no times, no after of its own).
  const auto as_json = jobqctl(redis, {"--json", "flow", "bottom", "-q", "q"});
  INFO(as_json.out);
  REQUIRE(as_json.code == 0);
  const json j = json::parse(as_json.out);
  CHECK(j["job"] == "bottom");
  CHECK(j["queue"] == "q");
  CHECK(j["status"] == "waiting");
  CHECK(j["submitted_at"].is_number_integer());
  CHECK(j["waiting_for"] == 2);
  CHECK(j["waits_for_total"] == 2);
  CHECK(j["dependents"] == json::array());
  CHECK(j["dependents_known"] == true);
  CHECK(j["cut"] == false);
  REQUIRE(j["after"].size() == 2);
  CHECK(j["after"][0]["job"] == "left");
  CHECK(j["after"][1]["queue"] == "images");
  CHECK(j["after"][1]["job"] == "right");
  const json& first = j["after"][0]["after"][0];
  const json& second = j["after"][1]["after"][0];
  CHECK(first["job"] == "top");
  CHECK(first["status"] == "queued");
  CHECK(first["submitted_at"].is_number_integer());
  CHECK(first["after"] == json::array());
  CHECK_FALSE(first.contains("above"));
  CHECK(second["job"] == "top");
  CHECK(second["above"] == true);
  CHECK_FALSE(second.contains("submitted_at"));
  CHECK_FALSE(second.contains("after"));
  // Downward nodes carry dependents, not after.
  const json top = json::parse(jobqctl(redis, {"--json", "flow", "top", "-q", "q"}).out);
  REQUIRE(top["dependents"].size() == 2);
  CHECK(top["after"] == json::array());
  CHECK(top["dependents"][0]["dependents"][0]["job"] == "bottom");
  CHECK_FALSE(top["dependents"][0].contains("after"));
}

TEST_CASE("jobqctl flow: a reference nobody submitted is not seen yet; an unknown id as status",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  submit(redis, "x", "ghost");
  const auto out = jobqctl(redis, {"flow", "x", "-q", "q"});
  INFO(out.out);
  REQUIRE(out.code == 0);
  CHECK(out.out.find("└─ q/ghost  not seen yet") != std::string::npos);
  const json j = json::parse(jobqctl(redis, {"--json", "flow", "x", "-q", "q"}).out);
  REQUIRE(j["after"].size() == 1);
  CHECK(j["after"][0] == json({{"job", "ghost"}, {"queue", "q"}, {"status", nullptr}}));
  // ghost itself: no job, exactly as status says it (with and without -q).
  const std::vector<std::vector<std::string>> places{{"-q", "q"}, {}};
  for (const auto& where : places) {
    std::vector<std::string> flow{"flow", "ghost"}, status{"status", "ghost"};
    flow.insert(flow.end(), where.begin(), where.end());
    status.insert(status.end(), where.begin(), where.end());
    const auto f = jobqctl(redis, flow);
    const auto s = jobqctl(redis, status);
    INFO(f.out);
    CHECK(f.code == 1);
    CHECK(f.code == s.code);
    CHECK(f.out.find("no job ghost") != std::string::npos);
    CHECK(f.out == s.out);
  }
  // A bad id is a usage error, as for status.
  CHECK(jobqctl(redis, {"flow", "a b"}).code == jobqctl(redis, {"status", "a b"}).code);
}

TEST_CASE("jobqctl flow: the walk stops at 50 levels and says so",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  auto r = redis.client();
  served(r, {"q"});
  // A chain of 60 states, each waiting for the one before (as after_wait.lua writes them).
  for (int i = 0; i < 60; ++i) {
    std::vector<std::string> cmd{"HSET",         "jobq:{q}:job:j" + std::to_string(i),
                                 "status",       i ? "waiting" : "queued",
                                 "queue",        "q",
                                 "submitted_at", "1000"};
    if (i) cmd.insert(cmd.end(), {"after", "q/j" + std::to_string(i - 1), "waiting_for", "1"});
    r.cmd(cmd);
  }
  const auto out = jobqctl(redis, {"flow", "j59", "-q", "q"});
  INFO(out.out);
  REQUIRE(out.code == 0);
  CHECK(out.out.find("q/j9  waiting") != std::string::npos);  // 50 levels up
  CHECK(out.out.find("q/j8  (not read: the walk stops at 1000 jobs and 50 levels)") !=
        std::string::npos);
  CHECK(out.out.find("q/j7") == std::string::npos);
  CHECK(out.out.find("(cut: the walk stops at 1000 jobs and 50 levels each way)") !=
        std::string::npos);
  const json j = json::parse(jobqctl(redis, {"--json", "flow", "j59", "-q", "q"}).out);
  CHECK(j["cut"] == true);
  json n = j;
  int depth = 0;
  while (n.contains("after") && !n["after"].empty()) {
    n = json(n["after"][0]);
    ++depth;
  }
  CHECK(depth == 51);  // 50 read, and the one named but not read
  CHECK(n == json({{"job", "j8"}, {"queue", "q"}, {"cut", true}}));
  // The whole chain is shown from nearer its start: nothing cut.
  CHECK(jobqctl(redis, {"flow", "j30", "-q", "q"}).out.find("cut") == std::string::npos);
}

TEST_CASE("jobqctl flow: jobs that ran under a daemon show their times and errors",
          "[integration][cli][after][flow]") {
  RedisServer redis;
  Daemon d(redis, R"(
handlers:
  echo: {type: builtin, name: echo}
  fail: {type: builtin, name: fail}
queues:
  q: {handler: echo}
  f: {handler: fail, max_attempts: 1}
)");
  auto r = redis.client();
  served(r, {"q", "f"});
  d.start_and_wait(redis, "q");
  submit(redis, "ok");
  submit(redis, "bad", "", "f");
  submit(redis, "mid", "f/bad");
  submit(redis, "end", "mid,ok");
  auto status = [&](const std::string& id) {
    return r.str({"HGET", "jobq:{q}:job:" + id, "status"});
  };
  REQUIRE(
      eventually([&] { return status("end") == "failed" && status("ok") == "succeeded"; }, 20s));
  const auto out = jobqctl(redis, {"flow", "end", "-q", "q"});
  INFO(out.out);
  REQUIRE(out.code == 0);
  const std::string ok = line_of(out.out, "q/ok  succeeded");
  CHECK(ok.find("submitted ") != std::string::npos);
  CHECK(ok.find(", started ") != std::string::npos);
  CHECK(ok.find(", finished ") != std::string::npos);
  const std::string bad = line_of(out.out, "f/bad  failed");
  CHECK(bad.find(", finished ") != std::string::npos);
  // end's error and mid's: each says which dependency failed.
  CHECK(out.out.find("  error (dependency): dependency q/mid ") != std::string::npos);
  CHECK(out.out.find("│ error (dependency): dependency f/bad ") != std::string::npos);
  // Final: what waited on it is no longer noted, and that is said.
  const auto down = jobqctl(redis, {"flow", "bad", "-q", "f"});
  INFO(down.out);
  CHECK(down.out.find("dependents (what waits on it): not known once it is final") !=
        std::string::npos);
  const json j = json::parse(jobqctl(redis, {"--json", "flow", "end", "-q", "q"}).out);
  CHECK(j["status"] == "failed");
  CHECK(j["error_kind"] == "dependency");
  CHECK(j["finished_at"].is_number_integer());
  CHECK(j["dependents_known"] == false);
  REQUIRE(j["after"].size() == 2);
  CHECK(j["after"][1]["status"] == "succeeded");
  CHECK(j["after"][1]["started_at"].is_number_integer());
  const json& failed = j["after"][0]["after"][0];
  CHECK(failed["job"] == "bad");
  CHECK(failed["status"] == "failed");
  CHECK_FALSE(failed["error"].get<std::string>().empty());
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "jobqctl flow on sharded queues: a chain and a fan-in across two queues, each job read at its "
    "id's home shard, while its root is held and after it ran",
    "[integration][cli][flow][shards]") {
  RedisServer redis;
  TempDir dir;
  const std::string flag = (dir.path() / "go").string();
  Daemon d(redis, "handlers:\n  echo: {type: builtin, name: echo}\n  held: " + held_until(flag) +
                      "\nqueues:\n  q: {handler: echo, shards: 4}\n"
                      "  images: {handler: held, shards: 3}\n");
  d.start_and_wait(redis, "q");
  auto r = redis.client();
  // jobqctl homes ids by the counts the daemon wrote: without them it would write to shard 0.
  REQUIRE(eventually(
      [&] {
        return r.str({"GET", "jobq:{q}:shards"}) == "4" &&
               r.str({"GET", "jobq:{images}:shards"}) == "3";
      },
      10s));
  // Every job at home in a shard other than 0, no two of a queue in the same one: a job read at
  // the wrong shard (its queue's first, another's home) is not seen.
  const std::string root = id_at("root", 3, 1), tail = id_at("tail", 3, 2);
  const std::string mid = id_at("mid", 4, 1), side = id_at("side", 4, 2), fan = id_at("fan", 4, 3);
  const auto q_tags = jq::store::shard_tags("q", 4);
  const auto images_tags = jq::store::shard_tags("images", 3);
  const std::vector<std::pair<std::string, std::string>> homes{
      {images_tags[1], root}, {images_tags[2], tail}, {q_tags[1], mid},
      {q_tags[2], side},      {q_tags[3], fan},
  };
  // The chain images/root -> q/mid -> images/tail, and the fan-in q/fan after the chain's ends
  // and q/side, which runs at once. The root is held (its handler waits for the flag).
  const auto file = flow_file(
      dir,
      json::array(
          {{{"id", fan}, {"payload", "fan"}, {"after", {"images/" + tail, side, "images/" + root}}},
           {{"id", tail}, {"queue", "images"}, {"payload", "tail"}, {"after", {"q/" + mid}}},
           {{"id", mid}, {"payload", "mid"}, {"after", {"images/" + root}}},
           {{"id", side}, {"payload", "side"}},
           {{"id", root}, {"queue", "images"}, {"payload", "root"}}})
          .dump());
  const auto sub = jobqctl(redis, {"submit", "q", "--flow", file});
  INFO(sub.out);
  REQUIRE(sub.code == 0);
  CHECK(sub.out.find("submitted a flow of 5 job(s): 2 queued, 3 waiting for others") !=
        std::string::npos);
  // Each state where the homes chosen above say, none in shard 0: what makes the reads below
  // mean something (a jobqctl flow reading at shard 0 would find none of them).
  for (const auto& [tag, id] : homes) {
    INFO(tag << " / " << id);
    CHECK_FALSE(r.str({"HGET", "jobq:{" + tag + "}:job:" + id, "status"}).empty());
    CHECK(r.integer({"EXISTS", "jobq:{q}:job:" + id, "jobq:{images}:job:" + id}) == 0);
  }
  const std::string fan_ref = "q/" + fan, tail_ref = "images/" + tail, mid_ref = "q/" + mid,
                    side_ref = "q/" + side, root_ref = "images/" + root;

  // Held: the root runs, side has run, the rest wait. Read until the daemon has the root and
  // side's outcome has reached the fan-in.
  Ran up{};
  const bool held = eventually(
      [&] {
        up = jobqctl(redis, {"flow", fan, "-q", "q"});
        return up.out.find("waits for 2 of 3") != std::string::npos &&
               up.out.find(root_ref + "  active  submitted ") != std::string::npos;
      },
      20s);
  INFO(up.out);
  if (!held) {
    INFO(d.log());
    REQUIRE(held);
  }
  REQUIRE(up.code == 0);
  CHECK(up.out.find(fan_ref + "  waiting  submitted ") == 0);
  CHECK(up.out.find("\n  waits for 2 of 3\n") != std::string::npos);
  const std::vector<std::string> tree{
      "├─ " + tail_ref + "  waiting  submitted ",      "│  │ waits for 1 of 1",
      "│  └─ " + mid_ref + "  waiting  submitted ",    "│     │ waits for 1 of 1",
      "│     └─ " + root_ref + "  active  submitted ", "├─ " + side_ref + "  succeeded  submitted ",
      "└─ " + root_ref + "  active  (above)",          "dependents (what waits on it): none",
  };
  std::size_t at = 0;
  for (const auto& line : tree) {
    INFO(line);
    const auto found = up.out.find(line, at);
    REQUIRE(found != std::string::npos);
    at = found;
  }
  CHECK(line_of(up.out, side_ref + "  succeeded").find(", finished ") != std::string::npos);

  // The same graph from its root, downward (without -q: found as status finds it). The root's
  // dependents note is at its home: mid and fan, in whichever order they registered.
  const auto down = jobqctl(redis, {"flow", root});
  INFO(down.out);
  REQUIRE(down.code == 0);
  CHECK(down.out.find(root_ref + "  active  submitted ") == 0);
  CHECK(down.out.find("after (what it waits for): none") != std::string::npos);
  CHECK(count(down.out, mid_ref + "  waiting  submitted ") == 1);
  CHECK(count(down.out, tail_ref + "  waiting  submitted ") == 1);
  CHECK(count(down.out, fan_ref + "  waiting  submitted ") == 1);
  CHECK(count(down.out, fan_ref + "  waiting  (above)") == 1);
  CHECK(count(down.out, "waits for 1 of 1") == 2);
  CHECK(count(down.out, "waits for 2 of 3") == 1);
  CHECK(down.out.find("not seen yet") == std::string::npos);

  // As data, both ways.
  {
    const auto ran = jobqctl(redis, {"--json", "flow", fan, "-q", "q"});
    INFO(ran.out);
    REQUIRE(ran.code == 0);
    const json j = json::parse(ran.out);
    CHECK(j["status"] == "waiting");
    CHECK(j["waiting_for"] == 2);
    CHECK(j["waits_for_total"] == 3);
    CHECK(j["dependents"] == json::array());
    CHECK(j["cut"] == false);
    REQUIRE(j["after"].size() == 3);
    const json& t = j["after"][0];
    CHECK(t["job"] == tail);
    CHECK(t["queue"] == "images");
    CHECK(t["status"] == "waiting");
    CHECK(t["waiting_for"] == 1);
    REQUIRE(t["after"].size() == 1);
    CHECK(t["after"][0]["job"] == mid);
    CHECK(t["after"][0]["status"] == "waiting");
    REQUIRE(t["after"][0]["after"].size() == 1);
    CHECK(t["after"][0]["after"][0]["job"] == root);
    CHECK(t["after"][0]["after"][0]["status"] == "active");
    CHECK(t["after"][0]["after"][0]["after"] == json::array());
    CHECK(j["after"][1]["job"] == side);
    CHECK(j["after"][1]["status"] == "succeeded");
    CHECK(j["after"][1]["finished_at"].is_number_integer());
    CHECK(j["after"][2]["job"] == root);
    CHECK(j["after"][2]["above"] == true);
  }
  {
    const auto ran = jobqctl(redis, {"--json", "flow", root, "-q", "images"});
    INFO(ran.out);
    REQUIRE(ran.code == 0);
    const json j = json::parse(ran.out);
    CHECK(j["status"] == "active");
    CHECK(j["after"] == json::array());
    CHECK(j["dependents_known"] == true);
    REQUIRE(j["dependents"].size() == 2);
    std::map<std::string, json> by_id;
    for (const auto& n : j["dependents"]) by_id[n["job"].get<std::string>()] = n;
    REQUIRE(by_id.count(mid) == 1);
    REQUIRE(by_id.count(fan) == 1);
    const json& m = by_id[mid];
    CHECK(m["status"] == "waiting");
    REQUIRE(m["dependents"].size() == 1);
    CHECK(m["dependents"][0]["job"] == tail);
    CHECK(m["dependents"][0]["queue"] == "images");
    REQUIRE(m["dependents"][0]["dependents"].size() == 1);
    CHECK(m["dependents"][0]["dependents"][0]["job"] == fan);
    CHECK(m["dependents"][0]["dependents"][0]["status"] == "waiting");
    // fan is reached twice: in full once, then as above.
    const bool fan_first = !by_id[fan].contains("above");
    CHECK(by_id[fan].contains("above") != m["dependents"][0]["dependents"][0].contains("above"));
    CHECK((fan_first ? by_id[fan] : m["dependents"][0]["dependents"][0])["waiting_for"] == 2);
  }

  // Let it run: every job succeeds, and the graph says so with its times.
  write_file(flag, "");
  auto all_succeeded = [&] {
    for (const auto& [tag, id] : homes) {
      if (r.str({"HGET", "jobq:{" + tag + "}:job:" + id, "status"}) != "succeeded") return false;
    }
    return true;
  };
  REQUIRE(eventually(all_succeeded, 30s));
  const auto after = jobqctl(redis, {"flow", fan, "-q", "q"});
  INFO(after.out);
  REQUIRE(after.code == 0);
  CHECK(after.out.find(fan_ref + "  succeeded  submitted ") == 0);
  CHECK(after.out.find("waiting") == std::string::npos);
  for (const auto& ref : {fan_ref, tail_ref, mid_ref, side_ref, root_ref}) {
    INFO(ref);
    const std::string line = line_of(after.out, ref + "  succeeded  submitted ");
    CHECK(line.find(", started ") != std::string::npos);
    CHECK(line.find(", finished ") != std::string::npos);
  }
  CHECK(after.out.find("└─ " + root_ref + "  succeeded  (above)") != std::string::npos);
  CHECK(after.out.find("dependents (what waits on it): not known once it is final") !=
        std::string::npos);
  // In order, by the times the graph gives (Redis' clock, one machine): each started once what
  // it waits for had finished.
  const json j = json::parse(jobqctl(redis, {"--json", "flow", fan, "-q", "q"}).out);
  REQUIRE(j["after"].size() == 3);
  const json& t = j["after"][0];
  const json& m = t["after"][0];
  const json& rt = m["after"][0];
  auto ms = [](const json& n, const char* f) { return n[f].get<long long>(); };
  CHECK(ms(m, "started_at") + 5 >= ms(rt, "finished_at"));
  CHECK(ms(t, "started_at") + 5 >= ms(m, "finished_at"));
  CHECK(ms(j, "started_at") + 5 >= ms(t, "finished_at"));
  CHECK(ms(j, "started_at") + 5 >= ms(j["after"][1], "finished_at"));
  CHECK(j["after"][2]["above"] == true);
  CHECK(jobqctl(redis, {"flow", root, "-q", "images"})
            .out.find("dependents (what waits on it): not known once it is final") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "jobqctl flow on a cluster: a flow across three primaries while its root is held and after "
    "it ran; a job held by its flow's gate says so",
    "[integration][cli][flow][cluster]") {
  RedisCluster cluster(3, 0);
  const std::vector<std::string> qs = cluster.queues_on_primaries("fl", 3);
  const std::string a = qs[0], b = qs[1], c = qs[2];
  TempDir dir;
  const std::string flag = (dir.path() / "go").string();
  // a's jobs are held until the flag exists; b's and c's run at once.
  Daemon d(cluster.url(), "handlers:\n  echo: {type: builtin, name: echo}\n  held: " +
                              held_until(flag) + "\nqueues:\n  " + a + ": {handler: held}\n  " + b +
                              ": {handler: echo}\n  " + c + ": {handler: echo}\n");
  d.start();
  REQUIRE(eventually([&] { return cluster.leases_held(d.pid(), qs); }, 20s));
  auto jobqctl_on = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "--redis", cluster.url()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv);
  };
  auto status = [&](const std::string& q, const std::string& id) {
    SyncRedis r(cluster.owner_of_queue(q));
    return r.str({"HGET", "jobq:{" + q + "}:job:" + id, "status"});
  };

  // A root on a, a job on each of b and c after it, a fan-in on a after both: written in steps
  // behind the flow's gate, which the last step opens.
  const auto file = flow_file(
      dir, json::array({{{"id", "end"}, {"payload", "end"}, {"after", {b + "/m1", c + "/m2"}}},
                        {{"id", "m1"}, {"queue", b}, {"payload", 1}, {"after", {a + "/root"}}},
                        {{"id", "m2"}, {"queue", c}, {"payload", 2}, {"after", {a + "/root"}}},
                        {{"id", "root"}, {"payload", 0}}})
               .dump());
  const auto sub = jobqctl_on({"submit", a, "--flow", file});
  INFO(sub.out);
  REQUIRE(sub.code == 0);
  const std::string end = a + "/end", m1 = b + "/m1", m2 = c + "/m2", root = a + "/root";

  // Held: once the gate's outcomes are delivered, the root runs and the rest wait for it.
  Ran up{};
  const bool held = eventually(
      [&] {
        up = jobqctl_on({"flow", "end", "-q", a});
        return up.out.find(root + "  active  submitted ") != std::string::npos &&
               up.out.find("written whole") == std::string::npos;
      },
      20s);
  INFO(up.out);
  if (!held) {
    INFO(d.log());
    REQUIRE(held);
  }
  REQUIRE(up.code == 0);
  const std::vector<std::string> tree{
      end + "  waiting  submitted ",
      "\n  waits for 2 of 2\n",
      "├─ " + m1 + "  waiting  submitted ",
      "│  │ waits for 1 of 1\n",
      "│  └─ " + root + "  active  submitted ",
      "└─ " + m2 + "  waiting  submitted ",
      "   │ waits for 1 of 1\n",
      "   └─ " + root + "  active  (above)",
      "dependents (what waits on it): none",
  };
  std::size_t at = 0;
  for (const auto& line : tree) {
    INFO(line);
    const auto found = up.out.find(line, at);
    REQUIRE(found != std::string::npos);
    at = found;
  }
  CHECK(up.out.find(end + "  waiting  submitted ") == 0);
  // From the root, downward, its queue found as status finds it: each node read on its primary.
  const auto down = jobqctl_on({"flow", "root"});
  INFO(down.out);
  REQUIRE(down.code == 0);
  CHECK(down.out.find(root + "  active  submitted ") == 0);
  CHECK(down.out.find("after (what it waits for): none") != std::string::npos);
  CHECK(count(down.out, m1 + "  waiting  submitted ") == 1);
  CHECK(count(down.out, m2 + "  waiting  submitted ") == 1);
  CHECK(count(down.out, end + "  waiting  submitted ") == 1);
  CHECK(count(down.out, end + "  waiting  (above)") == 1);
  CHECK(down.out.find("not seen yet") == std::string::npos);
  {
    const auto ran = jobqctl_on({"--json", "flow", "root", "-q", a});
    INFO(ran.out);
    REQUIRE(ran.code == 0);
    const json j = json::parse(ran.out);
    CHECK(j["status"] == "active");
    REQUIRE(j["dependents"].size() == 2);
    std::set<std::string> seen, ends;
    for (const auto& n : j["dependents"]) {
      seen.insert(n["queue"].get<std::string>() + "/" + n["job"].get<std::string>());
      CHECK(n["status"] == "waiting");
      REQUIRE(n["dependents"].size() == 1);
      ends.insert(n["dependents"][0]["job"].get<std::string>() +
                  (n["dependents"][0].contains("above") ? " above" : ""));
    }
    CHECK(seen == std::set<std::string>{m1, m2});
    CHECK(ends == std::set<std::string>{"end", "end above"});
  }
  {
    const auto ran = jobqctl_on({"--json", "flow", "end", "-q", a});
    INFO(ran.out);
    REQUIRE(ran.code == 0);
    const json j = json::parse(ran.out);
    CHECK(j["waiting_for"] == 2);
    CHECK(j["waits_for_total"] == 2);
    REQUIRE(j["after"].size() == 2);
    CHECK(j["after"][0]["queue"] == b);
    CHECK(j["after"][0]["after"][0]["status"] == "active");
    CHECK(j["after"][1]["queue"] == c);
    CHECK(j["after"][1]["after"][0]["above"] == true);
  }

  // Let it run: all four succeed, and the graph says so with their times.
  write_file(flag, "");
  REQUIRE(eventually(
      [&] {
        return status(a, "root") == "succeeded" && status(b, "m1") == "succeeded" &&
               status(c, "m2") == "succeeded" && status(a, "end") == "succeeded";
      },
      30s));
  const auto after = jobqctl_on({"flow", "end", "-q", a});
  INFO(after.out);
  REQUIRE(after.code == 0);
  CHECK(after.out.find("waiting") == std::string::npos);
  for (const auto& ref : {end, m1, m2, root}) {
    INFO(ref);
    const std::string line = line_of(after.out, ref + "  succeeded  submitted ");
    CHECK(line.find(", started ") != std::string::npos);
    CHECK(line.find(", finished ") != std::string::npos);
  }
  CHECK(after.out.find("   └─ " + root + "  succeeded  (above)") != std::string::npos);
  {
    const json j = json::parse(jobqctl_on({"--json", "flow", "end", "-q", a}).out);
    REQUIRE(j["after"].size() == 2);
    auto ms = [](const json& n, const char* f) { return n[f].get<long long>(); };
    for (const auto& m : j["after"]) {
      CHECK(ms(j, "started_at") + 5 >= ms(m, "finished_at"));
      REQUIRE(m["after"].size() == 1);
      CHECK(m["after"][0]["status"] == "succeeded");
    }
    CHECK(ms(j["after"][0], "started_at") + 5 >= ms(j["after"][0]["after"][0], "finished_at"));
  }

  // A flow being written (as jobqctl leaves it between its steps): its record begun on a, x
  // written on b waiting for nothing but the gate, y on c waiting for b/x and the gate, x told
  // of y. Its lease is long enough that the daemon does not give it up meanwhile.
  write_half_flow(cluster.url(), "F2", a, b, c, 120s, jq::job::DependencyPolicy::fail, true);
  const std::string gated = ", and for its flow F2 to be written whole";
  {
    const auto fx = jobqctl_on({"flow", "x", "-q", b});
    INFO(fx.out);
    REQUIRE(fx.code == 0);
    CHECK(fx.out.find(b + "/x  waiting  submitted ") == 0);
    CHECK(fx.out.find("\n  waits for 0 of 0" + gated + "\n") != std::string::npos);
    CHECK(fx.out.find("after (what it waits for): none") != std::string::npos);
    CHECK(fx.out.find("└─ " + c + "/y  waiting  submitted ") != std::string::npos);
    CHECK(fx.out.find("\n     waits for 1 of 1" + gated + "\n") != std::string::npos);
    const auto fy = jobqctl_on({"flow", "y", "-q", c});
    INFO(fy.out);
    REQUIRE(fy.code == 0);
    CHECK(fy.out.find("\n  waits for 1 of 1" + gated + "\n") != std::string::npos);
    CHECK(fy.out.find("└─ " + b + "/x  waiting  submitted ") != std::string::npos);
    CHECK(fy.out.find("\n     waits for 0 of 0" + gated + "\n") != std::string::npos);
    const auto sx = jobqctl_on({"status", "x", "-q", b});
    INFO(sx.out);
    CHECK(sx.code == 0);
    CHECK(sx.out.find("\nwaits for its flow F2 to be written whole\n") != std::string::npos);
    // As data (the API's and the dashboard's too): the flow it waits for.
    const auto jx = jobqctl_on({"--json", "flow", "x", "-q", b});
    REQUIRE(jx.code == 0);
    CHECK(nlohmann::json::parse(jx.out)["flow"] == "F2");
    const auto sy = jobqctl_on({"status", "y", "-q", c});
    INFO(sy.out);
    CHECK(sy.out.find("\nwaits for 1 of 1: " + b + "/x; and for its flow F2 to be written whole") !=
          std::string::npos);
  }
  // The last step: the gate opens (through a's outbox, which the daemon drains), x runs, then y;
  // neither says its flow any more.
  {
    auto w = jq::redis::SyncClient::connect(jq::redis::parse_url(cluster.url())).value();
    REQUIRE(jq::store::run(w, jq::store::flow_step(jq::store::Keys("jobq", a),
                                                   jq::store::FlowStep::done, "F2"))
                .value() == 1);
  }
  REQUIRE(eventually([&] { return status(b, "x") == "succeeded" && status(c, "y") == "succeeded"; },
                     20s));
  const auto fy = jobqctl_on({"flow", "y", "-q", c});
  INFO(fy.out);
  CHECK(fy.out.find(c + "/y  succeeded  submitted ") == 0);
  CHECK(fy.out.find("└─ " + b + "/x  succeeded  submitted ") != std::string::npos);
  CHECK(fy.out.find("written whole") == std::string::npos);
  CHECK(d.stop() == 0);
}
