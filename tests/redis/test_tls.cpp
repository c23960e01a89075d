// Redis over TLS (rediss://): the connection jobqd and jobqctl share, against redis-server's own
// TLS port with certificates the test makes: a good one, and each way one can be wrong.
#include <catch2/catch.hpp>

#include <string>

#include "redis/sync_client.hpp"
#include "redis/url.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/tls_certs.hpp"

using namespace jq;
using namespace jq::test;

namespace {

// One CA the clients trust, another they do not, and the server certificates each case needs.
struct Pki {
  TempDir dir;
  CertFiles ca = make_ca(dir.path(), "ca");
  CertFiles other_ca = make_ca(dir.path(), "other-ca");
  CertFiles server = issue_cert(ca, dir.path(), "server", "DNS:localhost,IP:127.0.0.1");
  CertFiles client = issue_cert(ca, dir.path(), "client", "DNS:jobqd", false, "clientAuth");
};

async::TlsOptions trust(const std::string& ca_file, const std::string& cert_file = "",
                        const std::string& key_file = "", const std::string& server_name = "") {
  async::TlsOptions o;
  o.ca_file = ca_file;
  o.cert_file = cert_file;
  o.key_file = key_file;
  o.server_name = server_name;
  return o;
}

redis::Url url_of(const RedisServer& s, async::TlsOptions tls,
                  const std::string& host = "localhost") {
  auto url = redis::parse_url("rediss://" + host + ":" + std::to_string(s.tls_port()) + "/0");
  *url.tls = std::move(tls);
  return url;
}

// PING over a new connection: "PONG", or why not.
std::string ping(const redis::Url& url,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto c = redis::SyncClient::connect(url, timeout);
  if (!c) return c.error().message;
  auto r = c->command("PING");
  return r ? r->str : r.error().message;
}

}  // namespace

TEST_CASE("rediss://: commands, pipelining and large replies over TLS", "[redis][tls]") {
  Pki pki;
  RedisServer server(RedisServer::Tls{pki.server.cert, pki.server.key, pki.ca.cert});
  auto c = redis::SyncClient::connect(url_of(server, trust(pki.ca.cert))).value();
  CHECK(c.command("PING")->str == "PONG");
  // A value larger than a TLS record and the socket buffers, both ways.
  const std::string big(3 << 20, 'x');
  REQUIRE(c.command("SET", "big", big));
  CHECK(c.command("GET", "big")->str == big);
  for (int i = 0; i < 2000; ++i) c.append({"INCR", "n"});
  long long last = 0;
  for (int i = 0; i < 2000; ++i) last = c.read()->integer;
  CHECK(last == 2000);
  // What was written over TLS is what the plain port reads.
  CHECK(server.client().str({"GET", "n"}) == "2000");
  // An IP literal is checked against the certificate's IP names.
  CHECK(ping(url_of(server, trust(pki.ca.cert), "127.0.0.1")) == "PONG");
}

TEST_CASE("rediss://: a certificate from an unknown CA, for another name, or expired is refused",
          "[redis][tls]") {
  Pki pki;
  RedisServer trusted(RedisServer::Tls{pki.server.cert, pki.server.key, pki.ca.cert});
  // Signed by a CA the client does not trust.
  CHECK_THAT(ping(url_of(trusted, trust(pki.other_ca.cert))),
             Catch::Contains("cannot connect: TLS certificate rejected"));
  // By default the system's CAs, which do not know the test's.
  CHECK_THAT(ping(url_of(trusted, {})), Catch::Contains("TLS certificate rejected"));

  auto elsewhere = issue_cert(pki.ca, pki.dir.path(), "elsewhere", "DNS:elsewhere.example");
  RedisServer wrong_name(RedisServer::Tls{elsewhere.cert, elsewhere.key, pki.ca.cert});
  CHECK_THAT(ping(url_of(wrong_name, trust(pki.ca.cert))), Catch::Contains("hostname mismatch"));
  // Unless the config names the server as its certificate does (redis.tls.server_name).
  CHECK(ping(url_of(wrong_name, trust(pki.ca.cert, "", "", "elsewhere.example"))) == "PONG");

  auto old = issue_cert(pki.ca, pki.dir.path(), "old", "DNS:localhost", true);
  RedisServer expired(RedisServer::Tls{old.cert, old.key, pki.ca.cert});
  CHECK_THAT(ping(url_of(expired, trust(pki.ca.cert))), Catch::Contains("certificate has expired"));

  // Not a TLS server at all (the plain port): it waits for a line that never comes, and the
  // connect timeout ends the handshake.
  auto plain = redis::parse_url("rediss://localhost:" + std::to_string(trusted.port()) + "/0");
  plain.tls->ca_file = pki.ca.cert;
  CHECK_THAT(ping(plain, std::chrono::milliseconds(300)),
             Catch::Contains("no connection within 300 ms (TCP connect and TLS handshake)"));
  // And a CA file that is not there: said at once, naming it.
  CHECK_THAT(ping(url_of(trusted, trust(pki.dir.str() + "/missing.pem"))),
             Catch::Contains("missing.pem"));
}

TEST_CASE("rediss://: a server that requires a client certificate gets the configured one",
          "[redis][tls]") {
  Pki pki;
  RedisServer server(RedisServer::Tls{pki.server.cert, pki.server.key, pki.ca.cert, true});
  // Without one the server ends the connection (TLS 1.3: after the handshake, at the first
  // command). Which the client sees first, the server's alert (certificate required), its reset
  // or its close, is a race; that the connection ends, and says so, is not.
  const std::string refused = ping(url_of(server, trust(pki.ca.cert)));
  INFO(refused);
  CHECK_THAT(refused, Catch::StartsWith("redis rediss://localhost:"));
  CHECK_THAT(refused, Catch::Contains("certificate required") ||
                          Catch::EndsWith("before any answer (does the server require a client "
                                          "certificate? redis.tls: cert_file, key_file)"));
  CHECK(ping(url_of(server, trust(pki.ca.cert, pki.client.cert, pki.client.key))) == "PONG");
  // A key that is not the certificate's: refused before connecting, naming both.
  CHECK_THAT(ping(url_of(server, trust(pki.ca.cert, pki.client.cert, pki.server.key))),
             Catch::Contains("server.key does not match the certificate") &&
                 Catch::Contains("client.crt"));
}
