// jobqd and jobqctl on a Redis reached over TLS (rediss:// with redis.tls), and what they say
// when the certificate is wrong.
#include <catch2/catch.hpp>

#include "tests/support/daemon.hpp"
#include "tests/support/tls_certs.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

Ran jobqctl_with(const Daemon& d, std::vector<std::string> args) {
  std::vector<std::string> argv{(build_dir() / "jobqctl").string(), "-c", d.config_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

}  // namespace

TEST_CASE("rediss://: jobqd runs jobs and jobqctl submits and waits over TLS; a wrong CA is said",
          "[integration][tls]") {
  TempDir pki;
  const auto ca = make_ca(pki.path(), "ca");
  const auto other = make_ca(pki.path(), "other");
  const auto cert = issue_cert(ca, pki.path(), "server", "DNS:localhost");
  RedisServer redis(RedisServer::Tls{cert.cert, cert.key, ca.cert});

  Daemon d(redis.tls_url(), kEchoQueue, "", "  tls: {ca_file: " + ca.cert + "}\n");
  d.start_and_wait(redis);
  auto r = redis.client();
  const auto all = ids("j", 200);
  push(r, "q", jobs_for(all, "{}"));
  CHECK(eventually([&] { return count_status(r, "q", all, "succeeded") == all.size(); }, 15s));

  // jobqctl takes the URL and the CA from the same config.
  auto submitted = jobqctl_with(d, {"submit", "q", R"({"n": 1})", "--id", "over-tls", "--wait"});
  INFO(submitted.out);
  CHECK(submitted.code == 0);
  CHECK(submitted.out == "{\"n\":1}\n");  // the echo handler's result
  auto status = jobqctl_with(d, {"status", "over-tls", "-q", "q"});
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("succeeded") != std::string::npos);

  // Given the URL alone, jobqctl trusts the system's CAs, which do not know this one.
  auto untrusted =
      run_program({(build_dir() / "jobqctl").string(), "--redis", redis.tls_url(), "queues"});
  CHECK(untrusted.code == 1);
  CHECK(untrusted.out.find("TLS certificate rejected") != std::string::npos);

  // A daemon that does not trust the server's CA says why, and keeps trying.
  Daemon wrong(redis.tls_url(), kEchoQueue, "", "  tls: {ca_file: " + other.cert + "}\n");
  wrong.start();
  CHECK(eventually(
      [&] { return wrong.log().find("TLS certificate rejected") != std::string::npos; }, 10s));
  CHECK(wrong.running());

  // A CA file that is not there stops the start (and --check-config), naming it.
  Daemon missing(redis.tls_url(), kEchoQueue, "", "  tls: {ca_file: " + pki.str() + "/nope.pem}\n");
  auto checked = run_program(
      {(build_dir() / "jobqd").string(), "--check-config", "-c", missing.config_path()});
  INFO(checked.out);
  CHECK(checked.code == 78);
  CHECK(checked.out.find("redis.tls: TLS: cannot load CA certificates from " + pki.str() +
                         "/nope.pem") != std::string::npos);
}
