// jobqctl queues and stats show each queue's limits (rate and its tokens left, global
// concurrency, priorities, weight, group_by and the groups held back) from the live daemons'
// heartbeats, else from the config given; a plain queue shows nothing of them.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <regex>

#include "tests/support/daemon.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// 1/m refills a token a minute: the tokens a few jobs took stay gone while the test looks. Tenant
// a's jobs sleep 30 s: the one running holds its group back throughout.
const std::string kQueues = R"(
handlers:
  echo: {type: builtin, name: echo}
  nap: {type: builtin, name: sleep}
queues:
  limited: {handler: echo, rate: 1/m, rate_burst: 5, global_concurrency: 20}
  ordered: {handler: echo, priorities: {order: weighted, high: 5, normal: 2, low: 1}, weight: 3}
  tenants: {handler: nap, concurrency: 4, group_by: {key: payload.tenant, concurrency: 1}}
)";

const char* const kLimitFields[] = {
    "rate",     "rate_burst", "rate_tokens",       "global_concurrency", "priorities",   "weight",
    "group_by", "group_rate", "group_concurrency", "groups_held_back",   "limits_differ"};

// jobqctl queues --json (more arguments before it: -c FILE), by queue name.
std::map<std::string, json> queues_json(const RedisServer& redis,
                                        std::vector<std::string> args = {}) {
  args.insert(args.end(), {"--json", "queues"});
  const Ran ran = jobqctl(redis, args);
  INFO(ran.out);
  REQUIRE(ran.code == 0);
  std::map<std::string, json> by;
  for (const auto& q : json::parse(ran.out)) by[q["name"].get<std::string>()] = q;
  return by;
}

// The table row of `queue`: from its name to the end of its line.
std::string row_of(const std::string& table, const std::string& queue) {
  const auto at = table.find("\n" + queue + " ");
  if (at == std::string::npos) return "";
  return table.substr(at + 1, table.find('\n', at + 1) - at - 1);
}

}  // namespace

TEST_CASE(
    "jobqctl queues and stats: each queue's limits from the live daemons, else from the config; "
    "a plain queue shows none",
    "[integration][cli]") {
  RedisServer redis;
  Daemon d(redis, kQueues + "  plain: {handler: echo}\n");
  d.start_and_wait(redis, "plain");
  auto r = redis.client();

  // A full bucket first: no job has taken a token yet.
  std::map<std::string, json> by;
  REQUIRE(eventually(
      [&] {
        by = queues_json(redis);
        return by["limited"].value("rate_tokens", json()) == 5;
      },
      10s));
  // Three jobs take three tokens (one comes back a minute later).
  push(r, "limited", jobs_for(ids("l", 3), "1"));
  REQUIRE(
      eventually([&] { return count_status(r, "limited", ids("l", 3), "succeeded") == 3; }, 10s));
  // Tenant a's jobs run one at a time: the others wait in its group, held back by its limit.
  push(r, "tenants", jobs_for(ids("a", 4), R"({"tenant":"a","ms":30000})"));
  REQUIRE(eventually(
      [&] {
        by = queues_json(redis);
        const json held = by["tenants"].value("groups_held_back", json::array());
        return by["tenants"]["running"] == 1 && !held.empty() && held[0]["group"] == "a" &&
               held[0]["waiting"] == 3;
      },
      10s));
  INFO(json(by).dump());
  const json& limited = by["limited"];
  CHECK(limited["rate"] == "1/m");
  CHECK(limited["rate_burst"] == 5);
  CHECK(limited["rate_tokens"] == 2);
  CHECK(limited["global_concurrency"] == 20);
  CHECK_FALSE(limited.contains("priorities"));
  CHECK_FALSE(limited.contains("weight"));
  CHECK_FALSE(limited.contains("group_by"));
  const json& ordered = by["ordered"];
  CHECK(ordered["priorities"] ==
        json({{"order", "weighted"}, {"high", 5}, {"normal", 2}, {"low", 1}, {"aging_ms", 60000}}));
  CHECK(ordered["weight"] == 3);
  CHECK_FALSE(ordered.contains("rate"));
  const json& tenants = by["tenants"];
  CHECK(tenants["group_by"] == "payload.tenant");
  CHECK(tenants["group_concurrency"] == 1);
  CHECK(tenants["groups_held_back"] == json::parse(R"([{"group":"a","waiting":3}])"));
  CHECK_FALSE(tenants.contains("group_rate"));
  CHECK_FALSE(tenants.contains("global_concurrency"));
  // The existing fields stay as they were.
  CHECK(tenants["groups"] == 1);
  CHECK(tenants["pending"] == 0);
  for (const char* field : kLimitFields) {
    INFO(field);
    CHECK_FALSE(by["plain"].contains(field));
  }

  // The table: a LIMITS column, and the held-back groups under it. Held back is as the last
  // fetches saw it: looked at until the table shows it.
  Ran table;
  REQUIRE(eventually(
      [&] {
        table = jobqctl(redis, {"queues"});
        return table.out.find("tenants: held back") != std::string::npos;
      },
      10s));
  INFO(table.out);
  CHECK(table.out.rfind("QUEUE ", 0) == 0);
  CHECK(std::regex_search(table.out, std::regex(R"(^QUEUE .* STATE +LIMITS\n)")));
  CHECK(std::regex_search(
      row_of(table.out, "limited"),
      std::regex(R"(^limited +0 +0 +0 +0 +0  serving  1/m \(2 left\) · 20 at once$)")));
  CHECK(std::regex_search(row_of(table.out, "ordered"),
                          std::regex(R"(  serving  weighted priorities 5/2/1 · weight 3$)")));
  CHECK(std::regex_search(row_of(table.out, "tenants"),
                          std::regex(R"(  serving  per payload\.tenant \(1 at once each\)$)")));
  CHECK(std::regex_search(row_of(table.out, "plain"), std::regex(R"(  serving  -$)")));
  CHECK_THAT(table.out,
             Catch::Contains("\ntenants: held back by a group's limit: a (3 waiting)\n"));

  // stats: the same column, and its --json rows the same fields.
  const Ran stats = jobqctl(redis, {"stats"});
  INFO(stats.out);
  CHECK(std::regex_search(stats.out, std::regex(R"(^QUEUE .* P99 +LIMITS\n)")));
  CHECK(std::regex_search(row_of(stats.out, "limited"),
                          std::regex(R"(  1/m \(2 left\) · 20 at once$)")));
  const Ran stats_json = jobqctl(redis, {"stats", "--json"});
  CHECK_THAT(stats_json.out, Catch::Contains(R"("global_concurrency":20)") &&
                                 Catch::Contains(R"("group_by":"payload.tenant")"));

  // A second daemon with another weight for plain: the newest daemon's shows, and that they
  // differ.
  Daemon two(redis, kQueues + "  plain: {handler: echo, weight: 2}\n");
  two.start_and_wait(redis, "plain");
  REQUIRE(eventually([&] { return queues_json(redis)["plain"].value("weight", 0) == 2; }, 10s));
  by = queues_json(redis);
  CHECK(by["plain"]["limits_differ"] == true);
  CHECK_FALSE(by["limited"].contains("limits_differ"));
  const Ran both = jobqctl(redis, {"queues"});
  INFO(both.out);
  CHECK(std::regex_search(row_of(both.out, "plain"),
                          std::regex(R"(  weight 2 \(daemons differ\)$)")));

  // No daemon left: jobqctl without a config knows no limits (no LIMITS column, no fields);
  // with one, the config's show, the bucket read as a daemon would.
  d.kill9();
  two.kill9();
  r.cmd({"DEL", "jobq:workers"});
  by = queues_json(redis);
  for (const auto& name : {"limited", "ordered", "tenants", "plain"}) {
    for (const char* field : kLimitFields) {
      INFO(name << " " << field);
      CHECK_FALSE(by[name].contains(field));
    }
  }
  const Ran bare = jobqctl(redis, {"queues"});
  INFO(bare.out);
  CHECK(bare.out.find("LIMITS") == std::string::npos);
  CHECK(std::regex_search(row_of(bare.out, "plain"), std::regex(R"(  no daemon$)")));
  by = queues_json(redis, {"-c", d.config_path()});
  CHECK(by["limited"]["rate"] == "1/m");
  CHECK(by["limited"]["rate_tokens"].is_number_integer());
  CHECK(by["limited"]["rate_tokens"].get<long long>() >= 2);
  CHECK(by["limited"]["rate_tokens"].get<long long>() <= 5);
  CHECK(by["ordered"]["weight"] == 3);
  CHECK(by["tenants"]["groups_held_back"] == json::array());
  const Ran with_config = jobqctl(redis, {"-c", d.config_path(), "queues"});
  INFO(with_config.out);
  CHECK(std::regex_search(row_of(with_config.out, "ordered"),
                          std::regex(R"(  no daemon  weighted priorities 5/2/1 · weight 3$)")));
  CHECK(std::regex_search(row_of(with_config.out, "plain"), std::regex(R"(  no daemon  -$)")));
}
