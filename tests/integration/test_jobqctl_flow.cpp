// jobqctl flow ID (docs/workflows.md, "Flows") against a real Redis: the graph around a job as two
// trees (what it waits for, what waits on it) with states and times, a diamond's shared job shown
// once, a reference nobody submitted, the walk's bounds, --json, and a job that ran under a real
// daemon (its times and errors).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "tests/support/daemon.hpp"

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
