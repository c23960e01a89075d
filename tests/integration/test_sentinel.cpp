// redis-sentinel://: jobqd and jobqctl find the primary through Sentinel and follow it across a
// failover (the primary killed -9, its replica promoted).
#include <catch2/catch.hpp>

#include "tests/support/daemon.hpp"
#include "tests/support/sentinel.hpp"
#include "tests/support/tcp_proxy.hpp"
#include "tests/support/tls_certs.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

bool all_succeeded(int port, const std::vector<std::string>& ids) {
  try {
    SyncRedis r(port);
    return count_status(r, "q", ids, "succeeded") == ids.size();
  } catch (const std::exception&) {
    return false;
  }
}

// Pushes `n` jobs (ids prefix0...) to the primary on `port`; true once all of them succeeded.
bool ran_on(int port, const std::string& prefix, int n,
            std::chrono::milliseconds within = std::chrono::seconds(15)) {
  const auto jobs = ids(prefix, n);
  {
    SyncRedis r(port);
    push(r, "q", jobs_for(jobs, "{}"));
  }
  return eventually([&] { return all_succeeded(port, jobs); }, within);
}

// The primary the sentinels name once it is no longer `old` (0 if none within 30 s).
int next_primary(const SentinelGroup& group, int old) {
  int now = 0;
  eventually(
      [&] {
        now = group.primary_port();
        return now != 0 && now != old;
      },
      std::chrono::seconds(30));
  return now != old ? now : 0;
}

// A sentinel group, and a daemon serving queue q through it.
struct Served {
  SentinelGroup group;
  const int first = group.primary_port();
  Daemon d{group.url(), kEchoQueue};
  Served() {
    REQUIRE(first != 0);
    d.start();
  }
};

}  // namespace

TEST_CASE(
    "redis-sentinel://: jobs run on the primary the sentinels name, and on the new one "
    "after a failover",
    "[integration][sentinel]") {
  Served served;
  auto& [group, first, d] = served;
  CHECK(ran_on(first, "b", 50));
  CHECK(d.log().find("(the primary of " + group.url() + ")") != std::string::npos);

  // jobqctl finds it the same way.
  auto queues = run_program({(build_dir() / "jobqctl").string(), "--redis", group.url(), "queues"});
  INFO(queues.out);
  CHECK(queues.code == 0);
  CHECK(queues.out.find("q") != std::string::npos);

  // The primary dies; the sentinels promote the replica; the daemon follows without a restart.
  group.kill_redis(first);
  const int second = next_primary(group, first);
  REQUIRE(second != 0);
  CHECK(ran_on(second, "a", 50, 20s));
  CHECK(d.running());
  INFO(d.log());
  CHECK(d.log().find("127.0.0.1:" + std::to_string(second)) != std::string::npos);

  // A name the sentinels do not monitor: said, naming it.
  auto unknown =
      run_program({(build_dir() / "jobqctl").string(), "--redis", group.url("nope"), "queues"});
  CHECK(unknown.code == 1);
  CHECK(unknown.out.find("no sentinel named the primary of 'nope'") != std::string::npos);
  CHECK(unknown.out.find("that it monitors no 'nope'") != std::string::npos);
}

TEST_CASE(
    "redis.wait_replicas: outcomes and submissions wait for a replica, and say when none "
    "confirmed",
    "[integration][sentinel]") {
  SentinelGroup group({.sentinels = 0});  // a primary and a replica: no failover here
  const int primary = group.first_primary();
  Daemon d("redis://127.0.0.1:" + std::to_string(primary) + "/0", kEchoQueue, "",
           "  wait_replicas: 1\n  wait_timeout: 300ms\n");
  d.start();
  SyncRedis r(primary);
  const auto first = ids("w", 50);
  push(r, "q", jobs_for(first, "{}"));
  CHECK(eventually([&] { return all_succeeded(primary, first); }, 15s));
  // The outcomes went out with a WAIT, which the replica answered in time.
  CHECK(r.str({"INFO", "commandstats"}).find("cmdstat_wait:calls=") != std::string::npos);
  auto submit = [&](const std::string& id) {
    return run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", "q",
                        "{}", "--id", id});
  };
  auto replicated = submit("kept");
  INFO(replicated.out);
  INFO(r.str({"INFO", "replication"}));
  INFO(SyncRedis(group.first_replica()).str({"INFO", "replication"}));
  CHECK(replicated.code == 0);
  CHECK(replicated.out.find("warning") == std::string::npos);
  CHECK(d.log().find("not confirmed") == std::string::npos);

  // No replica: the job is queued all the same, with a warning; the daemon says so too.
  group.kill_redis(group.first_replica());
  auto alone = submit("alone");
  INFO(alone.out);
  CHECK(alone.code == 0);
  CHECK(alone.out.find("jobqctl: warning: job alone is queued, but 0 of 1 replicas "
                       "(redis.wait_replicas) acknowledged within 300ms: a failover now could "
                       "lose it") != std::string::npos);
  CHECK(eventually([&] { return all_succeeded(primary, {"alone"}); }, 10s));
  CHECK(eventually(
      [&] {
        return d.log().find(
                   "queue q: job outcomes not confirmed on redis.wait_replicas "
                   "replicas: 0 of 1 replicas acknowledged within 300 ms") != std::string::npos;
      },
      10s));
}

TEST_CASE(
    "redis-sentinel:// over TLS (redis.tls): the sentinels and the primary they name are "
    "reached over TLS; jobqctl the same",
    "[integration][sentinel][tls]") {
  TempDir pki;
  const auto [ca, cert] = group_certs(pki.path());
  SentinelGroup group({.tls = RedisServer::Tls{cert.cert, cert.key, ca.cert}});
  Daemon d(group.url_tls(), kEchoQueue, "", "  tls: {ca_file: " + ca.cert + "}\n");
  d.start();
  CHECK(ran_on(group.first_primary(), "t", 30));
  INFO(d.log());
  // The primary as the sentinels named it (its TLS port), reached over TLS.
  CHECK(d.log().find("rediss://127.0.0.1:" + std::to_string(group.primary_port()) +
                     "/0 (the primary of " + group.url_tls() + ")") != std::string::npos);
  auto sub = run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", "q",
                          R"({"n":3})", "--wait", "--wait-timeout", "10s"});
  INFO(sub.out);
  CHECK(sub.code == 0);
  CHECK(sub.out == "{\"n\":3}\n");
}

TEST_CASE(
    "redis-sentinel:// whose sentinels require a password: asked with "
    "redis.sentinel_password_env; without it, said so",
    "[integration][sentinel]") {
  SentinelGroup group({.sentinel_password = "s3ntinel"});
  ::setenv("JOBQ_TEST_SENTINEL_PW", "s3ntinel", 1);
  Daemon d(group.url(), kEchoQueue, "", "  sentinel_password_env: JOBQ_TEST_SENTINEL_PW\n");
  d.start();
  CHECK(ran_on(group.first_primary(), "p", 20));
  auto queues = run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "queues"});
  INFO(queues.out);
  CHECK(queues.code == 0);
  // Without the password the sentinels refuse, and the error says so.
  auto refused =
      run_program({(build_dir() / "jobqctl").string(), "--redis", group.url(), "queues"});
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("NOAUTH") != std::string::npos);
}

TEST_CASE(
    "redis-sentinel://: a failover the sentinels announce (+switch-master) is followed at once, "
    "the old primary alive",
    "[integration][sentinel]") {
  Served served;
  auto& [group, first, d] = served;
  CHECK(ran_on(first, "b", 20));
  // A failover by hand: the old primary stays up and turns replica.
  {
    SyncRedis s(group.sentinel_ports().front());
    REQUIRE(s.str({"SENTINEL", "FAILOVER", SentinelGroup::kService}) == "OK");
  }
  const int second = next_primary(group, first);
  REQUIRE(second != 0);
  CHECK(eventually(
      [&] {
        return d.log().find("the sentinels switched the primary of 'mymaster' to 127.0.0.1:" +
                            std::to_string(second) + ": following it now") != std::string::npos;
      },
      10s));
  CHECK(ran_on(second, "a", 20));
  INFO(d.log());
  CHECK(d.running());
}

TEST_CASE(
    "redis-sentinel://: what a failover loses of what Redis acknowledged, with and without "
    "redis.wait_replicas: the same jobs, said only with it",
    "[integration][sentinel]") {
  const std::string wait = GENERATE("0", "1");
  // The replica replicates through a proxy the test freezes: what the primary acknowledges from
  // then on never reaches it, as when a primary dies with its last writes unsent.
  std::unique_ptr<TcpProxy> link;
  SentinelGroup group({.link = [&](int primary) {
    link = std::make_unique<TcpProxy>(primary);
    return link->port();
  }});
  const int first = group.primary_port();
  REQUIRE(first != 0);
  Daemon d(group.url(), kEchoQueue, "", "  wait_replicas: " + wait + "\n  wait_timeout: 300ms\n");
  d.start();
  auto submit = [&](const std::string& id) {
    return run_program({(build_dir() / "jobqctl").string(), "-c", d.config_path(), "submit", "q",
                        "{}", "--id", id});
  };
  // Before: replicated (and confirmed, with wait_replicas).
  const auto kept = ids("kept", 5);
  for (const auto& id : kept) {
    auto r = submit(id);
    INFO(r.out);
    CHECK(r.code == 0);
    CHECK(r.out.find("warning") == std::string::npos);
  }
  CHECK(eventually([&] { return all_succeeded(first, kept); }, 15s));

  link->freeze();
  const auto late = ids("late", 5);
  std::size_t warned = 0;
  for (const auto& id : late) {
    auto r = submit(id);
    INFO(r.out);
    CHECK(r.code == 0);  // Redis acknowledged each one
    warned +=
        r.out.find("warning: job " + id + " is queued, but 0 of 1 replicas") != std::string::npos;
  }
  CHECK(eventually([&] { return all_succeeded(first, late); }, 15s));
  group.kill_redis(first);
  link.reset();  // what it held for the replica is gone with the primary
  const int second = next_primary(group, first);
  REQUIRE(second != 0);

  // On the promoted replica: everything from before, nothing from after the cut. With
  // wait_replicas every lost submission was said to be unconfirmed; without, none was.
  SyncRedis r(second);
  INFO("wait_replicas " << wait);
  CHECK(count_status(r, "q", kept, "succeeded") == kept.size());
  std::size_t lost = 0;
  for (const auto& s : job_states(r, "q", late, {"status"})) lost += s.at("status").empty();
  CHECK(lost == late.size());
  CHECK(warned == (wait == "1" ? late.size() : 0));
  // The daemon follows the new primary: jobs submitted now run there.
  CHECK(ran_on(second, "after", 5));
}
