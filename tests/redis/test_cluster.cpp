// Redis Cluster in the transport: key slots, redirect replies, CLUSTER SLOTS, URLs, and routed
// connections and the blocking client against a real 3-primary cluster (one slot migrated).
#include <catch2/catch.hpp>

#include "redis/client.hpp"
#include "redis/cluster.hpp"
#include "redis/sync_client.hpp"
#include "redis/url.hpp"
#include "tests/support/cluster.hpp"
#include "tests/support/run.hpp"

using namespace jq;
using namespace jq::redis;
using namespace std::chrono_literals;
using jq::test::run_test;

namespace {

Reply error(const std::string& text) {
  Reply r;
  r.type = Reply::Type::error;
  r.str = text;
  return r;
}

Reply integer(long long v) {
  Reply r;
  r.type = Reply::Type::integer;
  r.integer = v;
  return r;
}

Reply string(const std::string& s) {
  Reply r;
  r.type = Reply::Type::string;
  r.str = s;
  return r;
}

Reply array(std::vector<Reply> e) {
  Reply r;
  r.type = Reply::Type::array;
  r.elements = std::move(e);
  return r;
}

}  // namespace

TEST_CASE("key slots are the cluster specification's CRC16 of the hash tag", "[redis][cluster]") {
  // The specification's own example, and values redis-server gives (CLUSTER KEYSLOT).
  CHECK(slot_of("123456789") == (0x31C3 & 16383));
  CHECK(slot_of("foo") == 12182);
  CHECK(slot_of("bar") == 5061);
  CHECK(slot_of("") == 0);
  // The tag is what is between the first { and the next }, when not empty.
  CHECK(slot_of("jobq:{q}:pending") == slot_of("q"));
  CHECK(slot_of("jobq:{q}:job:{x}") == slot_of("q"));
  CHECK(slot_of("{user1000}.following") == slot_of("{user1000}.followers"));
  CHECK(slot_of("foo{}{bar}") == slot_of("foo{}{bar}"));
  CHECK(slot_of("foo{}{bar}") != slot_of("bar"));  // {} is empty: the whole key counts
  CHECK(slot_of("foo{{bar}}zap") == slot_of("{bar"));
  CHECK(slot_of("foo{bar}{zap}") == slot_of("bar"));
  CHECK(slot_of("no{close") == slot_of(std::string_view("no{close")));
}

TEST_CASE("redirect replies are read; anything else is not one", "[redis][cluster]") {
  using K = Detour::Kind;
  auto moved = detour_of(error("MOVED 3999 127.0.0.1:6381"));
  CHECK(moved.kind == K::moved);
  CHECK(moved.slot == 3999);
  CHECK(moved.host == "127.0.0.1");
  CHECK(moved.port == 6381);
  CHECK_FALSE(moved.wait());
  auto ask = detour_of(error("ASK 12 ::1:7000"));
  CHECK(ask.kind == K::ask);
  CHECK(ask.host == "::1");
  CHECK(ask.port == 7000);
  CHECK(ask.wait());
  CHECK(detour_of(error("TRYAGAIN Multiple keys request during rehashing of slot")).kind ==
        K::tryagain);
  CHECK(detour_of(error("CLUSTERDOWN The cluster is down")).kind == K::down);
  CHECK(detour_of(error("LOADING Redis is loading the dataset in memory")).kind == K::loading);
  CHECK(detour_of(error("READONLY You can't write against a read only replica.")).kind ==
        K::readonly);
  CHECK(detour_of(error("UNBLOCKED force unblock from blocking operation")).kind == K::unblocked);
  // Garbage is not a redirect: it stays an error the caller sees.
  for (const char* bad :
       {"MOVED", "MOVED x 1.2.3.4:5", "MOVED 99999 h:1", "MOVED 1 h:0", "MOVED 1 nocolon",
        "ASKED 1 h:2", "MOVEDX 1 h:2", "ERR MOVED 1 h:2", "WRONGTYPE Operation against a key"}) {
    INFO(bad);
    CHECK(detour_of(error(bad)).kind == K::none);
  }
  CHECK(detour_of(string("MOVED 1 h:2")).kind == K::none);
}

TEST_CASE("CLUSTER SLOTS replies are read, odd entries passed over", "[redis][cluster]") {
  auto node = [](const std::string& host, long long port) {
    return array({string(host), integer(port), string("id")});
  };
  Reply r = array({
      array({integer(0), integer(5460), node("10.0.0.1", 7000), node("10.0.0.4", 7003)}),
      array({integer(5461), integer(10922), node("", 7001)}),    // "": where it was asked
      array({integer(10923), integer(16383), node("?", 7002)}),  // no endpoint: skipped
      array({integer(5), integer(1), node("h", 1)}),             // first > last
      array({integer(0), integer(99999), node("h", 1)}),         // past the last slot
      array({integer(0), integer(1), node("h", 0)}),             // bad port
      array({integer(0)}),                                       // too short
      string("junk"),
  });
  auto ranges = SlotMap::parse_slots(r, "seed.local");
  REQUIRE(ranges.size() == 2);
  CHECK(ranges[0].first == std::pair<int, int>(0, 5460));
  CHECK(ranges[0].second.host == "10.0.0.1");
  CHECK(ranges[0].second.port == 7000);
  CHECK(ranges[1].second.host == "seed.local");
  CHECK(SlotMap::parse_slots(string("x"), "h").empty());
  CHECK(SlotMap::parse_slots(error("ERR This instance has cluster support disabled"), "h").empty());
}

TEST_CASE("redis-cluster:// URLs", "[redis][url][cluster]") {
  auto u = parse_url("redis-cluster://bob:pw@10.0.0.1:7000,node-b,[::1]:7002");
  CHECK(u.kind == Url::Kind::cluster);
  REQUIRE(u.seeds.size() == 3);
  CHECK(u.seeds[0] == std::pair<std::string, int>("10.0.0.1", 7000));
  CHECK(u.seeds[1] == std::pair<std::string, int>("node-b", 6379));
  CHECK(u.seeds[2] == std::pair<std::string, int>("::1", 7002));
  CHECK(u.user == "bob");
  CHECK(u.password == "pw");
  CHECK(u.display() == "redis-cluster://bob:***@10.0.0.1:7000,node-b:6379,[::1]:7002");
  CHECK(parse_url("redis-cluster://h:1/0").seeds.size() == 1);
  CHECK_THROWS_WITH(parse_url("redis-cluster://h:1/2"), Catch::Contains("database 0 only"));
  CHECK_THROWS_WITH(parse_url("redis-cluster://"), Catch::Contains("no cluster node address"));
  CHECK_THROWS_WITH(parse_url("redis-cluster://h:1,,h:2"),
                    Catch::Contains("an empty cluster node address"));
  CHECK_THROWS_WITH(parse_url("redis-cluster://h:70000"), Catch::Contains("bad port"));
}

TEST_CASE(
    "a routed client serves its slot's primary and follows the slot when it moves; the "
    "blocking client routes each command",
    "[redis][cluster]") {
  test::RedisCluster cluster(3, 0);
  const std::string key = "jobq:{moving}:pending";
  const int slot = slot_of(key);
  const int from = cluster.owner(slot);
  int to = 0;
  for (int p : cluster.primaries()) {
    if (p != from) to = p;
  }
  run_test([&]() -> async::Task<void> {
    Client::Options o;
    o.connect.url = parse_url(cluster.url());
    o.connect.slots = std::make_shared<SlotMap>();
    o.connect.route = key;
    o.connect.connect_timeout = o.connect.command_timeout = 2s;
    Client c(o);
    c.start();
    co_await c.wait_connected();
    Reply r = co_await c.command("RPUSH", key, "a");
    CHECK(r.integer == 1);
    CHECK(test::SyncRedis(from).integer({"LLEN", key}) == 1);

    // The slot moves: the next command fails as on a lost connection (it did not run), the
    // client reconnects to the new primary, and the one after runs there.
    cluster.migrate(slot, to, 10, [] {});
    auto moved = co_await c.command("RPUSH", key, "b").result();
    CHECK_FALSE(moved.ok());
    if (!moved.ok()) CHECK_THAT(moved.error().message, Catch::Contains("MOVED"));
    co_await c.wait_connected();
    Reply again = co_await c.command("RPUSH", key, "c");
    CHECK(again.integer == 2);
    CHECK(test::SyncRedis(to).integer({"LLEN", key}) == 2);
    co_await c.stop();
  }());

  // The blocking client: each command to its key's node, redirects followed, scripts loaded
  // into every primary; a key in another slot goes elsewhere.
  auto sc = SyncClient::connect(parse_url(cluster.url()), 2s);
  REQUIRE(sc.ok());
  auto n = sc->command("RPUSH", key, "d");
  REQUIRE(n.ok());
  CHECK(n->integer == 3);
  for (const char* other : {"jobq:{a}:x", "jobq:{b}:x", "jobq:{c}:x", "jobq:{d}:x"}) {
    auto set = sc->command("SET", other, "1");
    INFO(other);
    CHECK(set.ok());
    CHECK(test::SyncRedis(cluster.owner(slot_of(other))).str({"GET", other}) == "1");
  }
  sc->append(std::vector<std::string>{"LLEN", key});
  sc->append(std::vector<std::string>{"GET", "jobq:{a}:x"});
  auto len = sc->read();
  auto got = sc->read();
  REQUIRE(len.ok());
  REQUIRE(got.ok());
  CHECK(len->integer == 3);
  CHECK(got->str == "1");
  // A stale map: moved back behind the blocking client's back, it follows the MOVED.
  cluster.migrate(slot, from, 10, [] {});
  auto back = sc->command("LLEN", key);
  REQUIRE(back.ok());
  CHECK(back->integer == 3);
}
