// The Redis client against a real redis-server: pipelining, auth, timeouts, failure, reconnect.
#include <catch2/catch.hpp>

#include "redis/client.hpp"
#include "redis/script.hpp"
#include "redis/sync_client.hpp"
#include "redis/url.hpp"
#include "tests/support/mute_server.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace jq::redis;
using namespace std::chrono_literals;
using jq::test::ms_since;
using jq::test::run_test;

namespace {

ConnectOptions options_for(const std::string& url, Millis command_timeout = 2s) {
  ConnectOptions o;
  o.url = parse_url(url);
  o.connect_timeout = 2s;
  o.command_timeout = command_timeout;
  return o;
}

// What a PING on `conn` fails with: the ConnectionError's message, or "" if it succeeded.
async::Task<std::string> ping_error(Connection& conn) {
  try {
    co_await conn.command("PING");
  } catch (const ConnectionError& e) {
    co_return e.what();
  }
  co_return "";
}

// asyncio.sleep(0): back to the end of the ready queue, without a poll of libevent in between
// unless the drain's budget is spent.
struct NextStep {
  bool await_ready() const noexcept { return false; }
  template <async::HasContext P>
  void await_suspend(std::coroutine_handle<P> h) noexcept {
    async::Loop::current().schedule(h, h.promise().ctx);
  }
  void await_resume() const noexcept {}
};

}  // namespace

TEST_CASE("redis URLs", "[redis][url]") {
  auto u = parse_url("redis://alice:s%40cret@cache.local:6380/3");
  CHECK(u.kind == Url::Kind::tcp);
  CHECK(u.user == "alice");
  CHECK(u.password == "s@cret");
  CHECK(u.host == "cache.local");
  CHECK(u.port == 6380);
  CHECK(u.db == 3);
  CHECK(u.display() == "redis://alice:***@cache.local:6380/3");
  auto p = parse_url("redis://:pw@[::1]:7000");
  CHECK(p.user.empty());
  CHECK(p.password == "pw");
  CHECK(p.host == "::1");
  CHECK(p.port == 7000);
  auto s = parse_url("unix:///run/redis/redis.sock?db=2");
  CHECK(s.kind == Url::Kind::unix_socket);
  CHECK(s.path == "/run/redis/redis.sock");
  CHECK(s.db == 2);
  CHECK(parse_url("redis://localhost").port == 6379);
  CHECK_THROWS_WITH(parse_url("redis://h:99999/0"),
                    "redis URL 'redis://h:99999/0': bad port '99999'");
  CHECK_THROWS_WITH(parse_url("unix://relative.sock"), Catch::Contains("needs an absolute path"));
  CHECK_THROWS_WITH(parse_url("http://x"),
                    Catch::Contains("must start with redis://, rediss://, redis-sentinel://, "
                                    "redis-cluster:// or unix://"));
  auto sen = parse_url("redis-sentinel://:pw@10.0.0.1:26379,sentinel-b,[::1]:5000/mymaster/2");
  CHECK(sen.kind == Url::Kind::sentinel);
  CHECK(sen.service == "mymaster");
  CHECK(sen.db == 2);
  CHECK(sen.password == "pw");
  REQUIRE(sen.seeds.size() == 3);
  CHECK(sen.seeds[0] == std::pair<std::string, int>("10.0.0.1", 26379));
  CHECK(sen.seeds[1] == std::pair<std::string, int>("sentinel-b", 26379));
  CHECK(sen.seeds[2] == std::pair<std::string, int>("::1", 5000));
  CHECK(sen.display() ==
        "redis-sentinel://:***@10.0.0.1:26379,sentinel-b:26379,[::1]:5000/mymaster/2");
  CHECK_THROWS_WITH(parse_url("redis-sentinel://h:1"), Catch::Contains("no service name"));
  CHECK_THROWS_WITH(parse_url("redis-sentinel:///m"), Catch::Contains("no sentinel address"));
  CHECK_THROWS_WITH(parse_url("redis-sentinel://h:1,,h:2/m"), Catch::Contains("empty sentinel"));
  CHECK_FALSE(u.tls);
  auto t = parse_url("rediss://bob:pw@cache.example:6380/1");
  REQUIRE(t.tls);
  CHECK(t.tls->ca_file.empty());  // the system's CAs unless redis.tls says otherwise
  CHECK(t.host == "cache.example");
  CHECK(t.port == 6380);
  CHECK(t.display() == "rediss://bob:***@cache.example:6380/1");

  // The config's redis.tls: a rediss:// URL takes it; cluster and sentinel URLs go over TLS
  // when it says anything; redis:// never.
  async::TlsOptions ca;
  ca.ca_file = "/ca.pem";
  apply_tls(t, ca);
  CHECK(t.tls->ca_file == "/ca.pem");
  for (const char* over : {"redis-cluster://h:1", "redis-sentinel://h:1/m"}) {
    auto c = parse_url(over);
    apply_tls(c, {});
    CHECK_FALSE(c.tls);
    apply_tls(c, ca);
    REQUIRE(c.tls);
    CHECK(c.tls->ca_file == "/ca.pem");
  }
  auto plain = parse_url("redis://h:1/0");
  apply_tls(plain, ca);
  CHECK_FALSE(plain.tls);
}

TEST_CASE("commands, pipelining and replies copied into values", "[redis]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(options_for(server.url()));
    Reply ok = co_await conn->command("SET", "k", "v");
    CHECK(ok.as_string() == "OK");
    Reply v = co_await conn->command("GET", "k");
    CHECK(v.as_string() == "v");
    Reply nil = co_await conn->command("GET", "missing");
    CHECK(nil.is_nil());
    Reply err = co_await conn->command("INCR", "k");
    CHECK(err.is_error());
    CHECK_THROWS_AS(err.check(), ReplyError);

    // 2,000 commands in flight at once on one connection; replies in order.
    std::vector<PendingReply> pending;
    for (int i = 0; i < 2000; ++i) {
      std::string n = std::to_string(i);
      pending.push_back(conn->command("RPUSH", "list", n));
    }
    CHECK(conn->in_flight() > 0);
    long long last = 0;
    for (auto& p : pending) {
      Reply r = co_await p;
      CHECK(r.as_int() == last + 1);
      last = r.as_int();
    }
    Reply arr = co_await conn->command("LRANGE", "list", "0", "2");
    REQUIRE(arr.is_array());
    CHECK(arr.elements.size() == 3);
    CHECK(arr.elements[2].as_string() == "2");
    // Binary-safe arguments and replies.
    std::string bin("a\0b\r\n", 5);
    Reply set = co_await conn->command("SET", "bin", bin);
    set.check();
    Reply got = co_await conn->command("GET", "bin");
    CHECK(got.as_string() == bin);
  };
  run_test(body());
}

TEST_CASE("a command goes out when the step that sent it ends, not after the rest of the drain",
          "[redis][flush]") {
  test::RedisServer server;
  auto watcher = server.client();
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(options_for(server.url()));
    co_await conn->command("PING");  // a fresh drain starts with the reply
    PendingReply set = conn->command("SET", "early", "1");
    // The steps below stay within one drain (fewer than its budget), so libevent does not poll
    // for writes meanwhile: Redis can only see the SET if it was written when its step ended.
    // Each check is a blocking round trip of another client, time enough for Redis to run it.
    int seen_at = -1;
    NextStep next;
    for (int step = 0; step < 40 && seen_at < 0; ++step) {
      co_await next;
      if (watcher.cmd({"EXISTS", "early"}).as_int() == 1) seen_at = step;
    }
    CHECK(seen_at >= 0);
    CHECK(seen_at < 5);
    Reply r = co_await set;
    CHECK(r.as_string() == "OK");
  };
  run_test(body());
}

TEST_CASE("unix sockets, AUTH with a password or an ACL user, SELECT", "[redis]") {
  test::RedisServer server;
  auto sync = server.client();
  sync.cmd({"ACL", "SETUSER", "alice", "on", ">alicepw", "~*", "&*", "+@all"});
  sync.cmd({"SELECT", "4"});
  sync.cmd({"SET", "where", "db4"});
  auto body = [&]() -> async::Task<void> {
    auto over_unix =
        co_await Connection::open(options_for("unix://" + server.socket_path() + "?db=4"));
    Reply r = co_await over_unix->command("GET", "where");
    CHECK(r.as_string() == "db4");

    auto as_alice = co_await Connection::open(
        options_for("redis://alice:alicepw@127.0.0.1:" + std::to_string(server.port()) + "/4"));
    Reply who = co_await as_alice->command("ACL", "WHOAMI");
    CHECK(who.as_string() == "alice");

    std::string error;
    try {
      co_await Connection::open(
          options_for("redis://alice:wrong@127.0.0.1:" + std::to_string(server.port()) + "/0"));
    } catch (const ConnectionError& e) {
      error = e.what();
    }
    CHECK(error.find("AUTH failed") != std::string::npos);
    CHECK(error.find("redis://alice:***@127.0.0.1") != std::string::npos);  // no password in it
  };
  run_test(body());
}

TEST_CASE("a refused connection fails at once, naming the server", "[redis]") {
  int port = test::free_port();
  auto body = [&]() -> async::Task<void> {
    auto t0 = async::Clock::now();
    std::string error;
    try {
      co_await Connection::open(options_for("redis://127.0.0.1:" + std::to_string(port) + "/0"));
    } catch (const ConnectionError& e) {
      error = e.what();
    }
    CHECK(error.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
    CHECK(error.find("refused") != std::string::npos);
    CHECK(ms_since(t0) < 1000);
  };
  run_test(body());
}

TEST_CASE("host names are resolved off the loop; an unknown one fails naming it", "[redis]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(
        options_for("redis://localhost:" + std::to_string(server.port())));
    Reply pong = co_await conn->command("PING");
    CHECK(pong.as_string() == "PONG");
    std::string error;
    try {
      co_await Connection::open(options_for("redis://no-such-host.invalid:6379/0"));
    } catch (const ConnectionError& e) {
      error = e.what();
    }
    CHECK_THAT(error, Catch::Contains("cannot resolve no-such-host.invalid"));
  };
  run_test(body());
}

TEST_CASE("a server that never answers: the command times out and the connection is dropped",
          "[redis]") {
  jq::test::MuteServer silent;
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(
        options_for("redis://127.0.0.1:" + std::to_string(silent.port) + "/0", 200ms));
    auto t0 = async::Clock::now();
    std::string error = co_await ping_error(*conn);
    auto took = ms_since(t0);
    CHECK(error.find("no reply within 200 ms") != std::string::npos);
    CHECK(took >= 190);
    CHECK(took < 600);
    CHECK_FALSE(conn->alive());
    CHECK(conn->closed().is_set());
    Reply after;
    CHECK_THROWS_AS(after = co_await conn->command("PING"), ConnectionError);
  };
  run_test(body());
}

TEST_CASE("a reply declaring a huge array drops the connection instead of allocating it",
          "[redis][fuzz]") {
  // fuzz/regress/redis_reply/huge_array_header: hiredis 0.14 would allocate 8 bytes for each
  // of the 937,203,708 declared elements (7.5 GB) and then wait for them.
  jq::test::ScriptedServer liar("*937203708\r\n");
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(
        options_for("redis://127.0.0.1:" + std::to_string(liar.port()) + "/0", 2s));
    auto t0 = async::Clock::now();
    std::string error = co_await ping_error(*conn);
    INFO(error);
    CHECK(error.find("a reply declared an array of 937203708 elements, over the limit of "
                     "1048576") != std::string::npos);
    CHECK(ms_since(t0) < 1000);  // refused at once, not timed out
    CHECK_FALSE(conn->alive());
    // What the client logs when it reconnects says so too, not hiredis's "Out of memory".
    INFO(conn->error());
    CHECK(conn->error().find("over the limit of 1048576") != std::string::npos);
    CHECK(redis::refused_array() == 0);  // the connection's end took it
  };
  run_test(body());
  // An array at the limit is read as usual.
  std::string big = "*" + std::to_string(kMaxReplyElements) + "\r\n";
  for (long long i = 0; i < kMaxReplyElements; ++i) big += ":1\r\n";
  jq::test::ScriptedServer honest(big);
  auto at_limit = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(
        options_for("redis://127.0.0.1:" + std::to_string(honest.port()) + "/0", 5s));
    Reply r = co_await conn->command("PING");
    CHECK(r.elements.size() == static_cast<std::size_t>(kMaxReplyElements));
  };
  run_test(at_limit());
}

TEST_CASE("commands in flight fail when the server dies; the client reconnects",
          "[redis][reconnect]") {
  test::RedisServer server(/*aof=*/true);
  auto body = [&]() -> async::Task<void> {
    Client::Options o;
    o.connect = options_for(server.url());
    o.backoff_min = 20ms;
    o.backoff_max = 100ms;
    Client client(o);
    client.start();
    co_await client.wait_connected();
    CHECK(client.generation() == 1);
    Reply set = co_await client.command("SET", "survives", "yes");
    set.check();

    // A blocking command is in flight when the server goes away.
    auto blocked = client.blocking_command(5s, "BLPOP", "nothing", "5");
    server.kill();
    std::string error;
    try {
      co_await blocked;
    } catch (const ConnectionError& e) {
      error = e.what();
    }
    CHECK_FALSE(error.empty());
    bool failed_fast = false;
    try {
      co_await client.command("PING");
    } catch (const ConnectionError&) {
      failed_fast = true;
    }
    CHECK(failed_fast);  // while down: fail at once, do not hang

    server.start();
    co_await client.wait_connected();
    CHECK(client.generation() == 2);
    Reply got = co_await client.command("GET", "survives");
    CHECK(got.as_string() == "yes");  // AOF kept it
    co_await client.stop();
  };
  run_test(body());
}

TEST_CASE("a client started while Redis is down connects when it comes up", "[redis][reconnect]") {
  int port = test::free_port();
  auto body = [&]() -> async::Task<void> {
    Client::Options o;
    o.connect = options_for("redis://127.0.0.1:" + std::to_string(port) + "/0");
    o.backoff_min = 20ms;
    o.backoff_max = 50ms;
    Client client(o);
    client.start();
    // Until it has tried (and failed) once.
    auto tried = [&] { return !client.last_error().empty(); };
    const bool failed = co_await test::poll_until(tried, 5s);
    REQUIRE(failed);
    CHECK_FALSE(client.connected());
    CHECK(client.last_error().find("refused") != std::string::npos);
    // Start a server on exactly that port now.
    test::TempDir dir;
    test::Child proc({"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                      "--dir", dir.str(), "--save", "", "--daemonize", "no", "--logfile",
                      (dir.path() / "log").string()});
    co_await async::wait_for(client.wait_connected(), 5s);
    Reply pong = co_await client.command("PING");
    CHECK(pong.as_string() == "PONG");
    co_await client.stop();
  };
  run_test(body());
}

TEST_CASE("scripts run by EVALSHA and survive SCRIPT FLUSH", "[redis][script]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    Client::Options o;
    o.connect = options_for(server.url());
    Client client(o);
    client.start();
    co_await client.wait_connected();
    Script add("add", "return redis.call('INCRBY', KEYS[1], ARGV[1])");
    CHECK(add.sha() == sha1_hex("return redis.call('INCRBY', KEYS[1], ARGV[1])"));
    std::vector<std::string> keys{"n"}, five{"5"}, two{"2"};
    Reply a = co_await add.run(client, keys, five);
    CHECK(a.as_int() == 5);
    server.client().cmd({"SCRIPT", "FLUSH"});
    Reply b = co_await add.run(client, keys, two);
    CHECK(b.as_int() == 7);
    Script broken("broken", "return redis.call('NOPE')");
    std::string error;
    try {
      std::vector<std::string> none;
      co_await broken.run(client, none, none);
    } catch (const ReplyError& e) {
      error = e.what();
    }
    CHECK(error.rfind("script broken:", 0) == 0);
    co_await client.stop();
  };
  run_test(body());
}

TEST_CASE("a cancelled waiter's reply is discarded when it arrives", "[redis][cancel]") {
  test::RedisServer server;
  auto body = [&]() -> async::Task<void> {
    auto conn = co_await Connection::open(options_for(server.url()));
    auto waiter = [&]() -> async::Task<void> {
      Reply r = co_await conn->blocking_command(2s, "BLPOP", "q", "2");
      (void)r;
    };
    auto h = async::spawn(waiter());
    // Cancelled once the BLPOP blocks in Redis: its reply must then come for nobody.
    auto r = server.client();
    auto blocked = [&] { return test::blocked_clients(r) >= 1; };
    const bool waiting = co_await test::poll_until(blocked, 5s);
    REQUIRE(waiting);
    h.cancel();
    co_await h.wait();
    CHECK_THROWS_AS(h.take_result().value(), async::Cancelled);
    server.client().cmd({"RPUSH", "q", "x"});  // now the BLPOP reply arrives for nobody
    Reply ping = co_await conn->command("PING");
    CHECK(ping.as_string() == "PONG");
    // Abandoning a handle without awaiting is fine too.
    { auto dropped = conn->command("SET", "a", "1"); }
    Reply a = co_await conn->command("GET", "a");
    CHECK(a.as_string() == "1");
  };
  run_test(body());
}

TEST_CASE("SyncClient: 50,000 commands appended in one go are all sent and answered",
          "[redis][sync]") {
  // jobqctl pipelines large batches (a flow of many jobs, --from): one write of more than the
  // socket takes at once must wait for room, not fail the connection.
  test::RedisServer server;
  auto c = redis::SyncClient::connect(redis::parse_url(server.url())).value();
  const std::string value(100, 'v');
  constexpr int n = 50000;
  for (int i = 0; i < n; ++i) c.append({"SET", "k" + std::to_string(i), value});
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    auto r = c.read();
    if (!r.ok()) {
      INFO("reply " << i << ": " << r.error().message);
      REQUIRE(r.ok());
    }
    ok += r->str == "OK";
  }
  CHECK(ok == n);
  CHECK(server.client().integer({"DBSIZE"}) == n);
}
