// Flow files: each job read by its queue's rules, ids given twice and cycles named, the order
// a flow is written in, what it waits for outside the file.
#include <catch2/catch.hpp>

#include "job/flow.hpp"

using namespace jq;

namespace {

const std::set<std::string> kHandlers{"noop", "echo"};

// Queues "q" and "images" may be named; any other is refused.
const job::Rules* rules_for(const std::string& queue) {
  static const job::Rules rules = [] {
    job::Rules r;
    r.default_handler = "noop";
    r.handlers = &kHandlers;
    r.max_bytes = 1 << 20;
    return r;
  }();
  return queue == "q" || queue == "images" ? &rules : nullptr;
}

std::variant<job::Flow, std::string> read(const std::string& text) {
  return job::read_flow(text, "q", rules_for);
}

std::string error_of(const std::string& text) {
  auto f = read(text);
  auto* e = std::get_if<std::string>(&f);
  return e ? *e : std::string("(valid)");
}

// The flow's jobs in the order it is written, as QUEUE/ID.
std::string order_of(const job::Flow& f) {
  std::string out;
  for (const auto& j : f.jobs) out += (out.empty() ? "" : " ") + j.queue + "/" + j.job.id;
  return out;
}

}  // namespace

TEST_CASE("a flow is written in an order where each job follows what it waits for", "[flow]") {
  // A fan-out and fan-in across two queues, listed with the fan-in first.
  auto f = read(R"([
    {"id": "all", "payload": {}, "after": ["r1", "images/r2", "q/r3"]},
    {"id": "r1", "payload": 1, "after": ["split"]},
    {"id": "r2", "queue": "images", "payload": 2, "after": ["q/split"]},
    {"id": "r3", "payload": 3, "after": ["split"], "on_dependency_failure": "skip"},
    {"id": "split", "payload": 0}
  ])");
  REQUIRE(std::holds_alternative<job::Flow>(f));
  const auto& flow = std::get<job::Flow>(f);
  CHECK(order_of(flow) == "q/split q/r1 images/r2 q/r3 q/all");
  CHECK(flow.outside.empty());
  // Every reference names its queue, whatever the file wrote.
  const auto& all = flow.jobs.back().job;
  REQUIRE(all.after.size() == 3);
  CHECK(all.after[0].ref() == "q/r1");
  CHECK(all.after[1].ref() == "images/r2");
  CHECK(all.after[2].ref() == "q/r3");
  CHECK(flow.jobs[1].job.after[0].ref() == "q/split");  // images/r2 waits for q's split
  CHECK(flow.jobs[3].job.on_dependency_failure == job::DependencyPolicy::skip);
}

TEST_CASE("what a flow waits for outside the file is listed once, for the caller to find",
          "[flow]") {
  auto f = read(R"([{"id": "a", "payload": 1, "after": ["old", "images/older"]},
                    {"id": "b", "payload": 1, "after": ["a", "q/old"]}])");
  REQUIRE(std::holds_alternative<job::Flow>(f));
  const auto& flow = std::get<job::Flow>(f);
  CHECK(order_of(flow) == "q/a q/b");
  REQUIRE(flow.outside.size() == 2);
  CHECK(flow.outside[0].ref() == "q/old");
  CHECK(flow.outside[1].ref() == "images/older");
}

TEST_CASE("a flow with a cycle is refused, the cycle named whole", "[flow]") {
  CHECK(error_of(R"([{"id": "a", "payload": 1, "after": ["b"]},
                     {"id": "b", "payload": 1, "after": ["images/c"]},
                     {"id": "c", "queue": "images", "payload": 1, "after": ["q/a"]}])") ==
        "the flow has a cycle (each waits for the next): a -> b -> images/c -> a");
  // A cycle behind a job that is fine, and a job outside it that waits on it.
  CHECK(error_of(R"([{"id": "ok", "payload": 1},
                     {"id": "x", "payload": 1, "after": ["ok", "y"]},
                     {"id": "y", "payload": 1, "after": ["x"]},
                     {"id": "z", "payload": 1, "after": ["x"]}])") ==
        "the flow has a cycle (each waits for the next): x -> y -> x");
  // Two jobs that wait for each other within one entry's list.
  CHECK_THAT(error_of(R"([{"id": "a", "payload": 1, "after": ["b"]},
                          {"id": "b", "payload": 1, "after": ["a"]}])"),
             Catch::EndsWith("a -> b -> a"));
  // A job that waits for itself is refused at its entry.
  CHECK(error_of(R"([{"id": "a", "payload": 1, "after": ["q/a"]}])") ==
        "job 1 of the flow (id 'a'): field after[0]: a job cannot wait for itself ('a')");
}

TEST_CASE("a flow's mistakes name the job and what is wrong", "[flow]") {
  CHECK_THAT(error_of("[{"), Catch::StartsWith("the flow file is not JSON: "));
  CHECK(error_of(R"({"id": "a"})") == "a flow file is a JSON list of jobs, got an object");
  CHECK(error_of("[]") == "the flow file lists no jobs");
  CHECK(error_of(R"([1])") ==
        "job 1 of the flow: a job must be a JSON object with a payload field");
  CHECK(error_of(R"([{"payload": 1}])") ==
        "job 1 of the flow: a job of a flow needs its own id (others name it in their after)");
  CHECK(error_of(R"([{"id": "a", "payload": 1}, {"id": "b", "queue": "video", "payload": 1}])") ==
        "job 2 of the flow: queue 'video' is not one this flow may name");
  CHECK(error_of(R"([{"id": "a", "queue": "a/b", "payload": 1}])") ==
        "job 1 of the flow: field queue must be a queue name (1-64 characters of A-Z a-z 0-9 _ . "
        "-)");
  CHECK(error_of(R"([{"id": "a", "payload": 1}, {"id": "b", "handler": "rm", "payload": 1}])") ==
        "job 2 of the flow (id 'b'): unknown handler 'rm' (configured: echo, noop)");
  CHECK_THAT(
      error_of(R"([{"id": "a", "payload": 1, "after": ["b c"]}])"),
      Catch::StartsWith("job 1 of the flow (id 'a'): field after[0]: 'b c' is not a job id"));
  // The same id twice in a queue; in two queues it is two jobs.
  CHECK(error_of(R"([{"id": "a", "payload": 1}, {"id": "b", "payload": 1},
                     {"id": "a", "queue": "q", "payload": 2}])") ==
        "job 'a' is given twice in the flow: jobs 1 and 3");
  CHECK(error_of(R"([{"id": "a", "payload": 1}, {"id": "a", "queue": "images", "payload": 2}])") ==
        "(valid)");
}

TEST_CASE("a long chain and a wide fan-in are read in one pass, without recursion", "[flow]") {
  // A chain of 20,000 listed last step first (a walk by recursion would run out of stack), and
  // a fan-in over 1,000 steps.
  nlohmann::json chain = nlohmann::json::array();
  for (int i = 20000; i >= 1; --i) {
    nlohmann::json j = {{"id", "s" + std::to_string(i)}, {"payload", i}};
    if (i > 1) j["after"] = {"s" + std::to_string(i - 1)};
    chain.push_back(j);
  }
  auto f = read(chain.dump());
  REQUIRE(std::holds_alternative<job::Flow>(f));
  const auto& flow = std::get<job::Flow>(f);
  REQUIRE(flow.jobs.size() == 20000);
  CHECK(flow.jobs.front().job.id == "s1");
  CHECK(flow.jobs.back().job.id == "s20000");
  // Closing it into a ring: the cycle is the whole chain, named by its ends.
  chain.back()["after"] = {"s20000"};
  CHECK(error_of(chain.dump()) ==
        "the flow has a cycle (each waits for the next): s20000 -> s19999 -> s19998 -> s19997 -> "
        "s19996 -> s19995 -> ... (19988 more) -> s6 -> s5 -> s4 -> s3 -> s2 -> s1 -> s20000");

  nlohmann::json fan = {{{"id", "all"}, {"payload", 0}, {"after", nlohmann::json::array()}}};
  for (int i = 0; i < 1000; ++i) {
    fan[0]["after"].push_back("images/p" + std::to_string(i));
    fan.push_back({{"id", "p" + std::to_string(i)}, {"queue", "images"}, {"payload", i}});
  }
  auto g = read(fan.dump());
  REQUIRE(std::holds_alternative<job::Flow>(g));
  CHECK(std::get<job::Flow>(g).jobs.back().job.id == "all");
  CHECK(std::get<job::Flow>(g).jobs.back().job.after.size() == 1000);
}
