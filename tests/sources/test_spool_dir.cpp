// The spool directory on disk, called directly: claims and their races, recovery after a daemon
// died, the moves to done/ and failed/, and files that are not what they seem.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sources/spool_dir.hpp"
#include "tests/support/files.hpp"
#include "tests/support/redis_server.hpp"

using namespace jq;
using jq::sources::SpoolDir;
namespace fs = std::filesystem;
using jq::test::read_file;
using jq::test::write_file;

namespace {

SpoolDir::Options opts(const jq::test::TempDir& d, const std::string& owner) {
  SpoolDir::Options o;
  o.dir = d.str();
  o.owner = owner;
  o.ignore = {"*.tmp", "*.part"};
  return o;
}

// Files under `dir`, relative, sorted ("" entries for none).
std::vector<std::string> tree(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_directory()) out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Files an old mtime, so that the quiet time does not hold them back.
void age(const fs::path& p) {
  fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::seconds(10));
}

}  // namespace

TEST_CASE("SpoolDir: names taken and names left", "[spool][dir]") {
  jq::test::TempDir d;
  auto o = opts(d, "w1");
  o.pattern = "*.txt";
  SpoolDir s(o);
  CHECK(s.wanted("a.txt"));
  CHECK(s.wanted("with\nnewline.txt"));
  CHECK(s.wanted("bad\xff\xfe.txt"));
  CHECK_FALSE(s.wanted(".hidden.txt"));
  CHECK_FALSE(s.wanted("a.json"));
  CHECK_FALSE(s.wanted("a.txt.tmp"));
  CHECK_FALSE(s.wanted(""));
  o.pattern = "*";
  SpoolDir all(o);
  CHECK(all.wanted("a.json"));
  CHECK_FALSE(all.wanted("x.part"));
  CHECK_FALSE(all.wanted(".x"));
}

TEST_CASE("SpoolDir: a scan lists what waits, bounded, and not what is still written",
          "[spool][dir]") {
  jq::test::TempDir d;
  SpoolDir s(opts(d, "w1"));
  s.open();
  for (int i = 0; i < 5; ++i) {
    write_file(d.path() / ("f" + std::to_string(i)), "x");
    age(d.path() / ("f" + std::to_string(i)));
  }
  write_file(d.path() / "skip.tmp", "x");
  fs::create_directory(d.path() / "sub");
  auto all = s.scan(100, 1000);
  CHECK(all.names.size() == 5);
  CHECK_FALSE(all.more);
  CHECK_FALSE(all.error);
  auto some = s.scan(2, 1000);
  CHECK(some.names.size() == 2);
  CHECK(some.more);
  // Fresh: left for the next scan.
  write_file(d.path() / "fresh", "x");
  auto with_fresh = s.scan(100, 5000);
  CHECK(with_fresh.names.empty() == false);
  CHECK(std::find(with_fresh.names.begin(), with_fresh.names.end(), "fresh") ==
        with_fresh.names.end());
  CHECK(with_fresh.more);
  // Still open for writing, however old: not taken until closed.
  const auto open_path = d.path() / "open";
  int fd = ::open(open_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "abc", 3) == 3);
  age(open_path);
  auto during = s.scan(100, 0);
  CHECK(std::find(during.names.begin(), during.names.end(), "open") == during.names.end());
  CHECK_FALSE(during.more);  // its close is an event
  ::close(fd);
  auto after = s.scan(100, 0);
  CHECK(std::find(after.names.begin(), after.names.end(), "open") != after.names.end());
  // Known only from its creation: taken when it is not a regular file, or has content and no
  // writer; left when empty (it may be just created) or open for writing.
  fd = ::open((d.path() / "created").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  REQUIRE(fd >= 0);
  CHECK_FALSE(s.settled("created"));
  REQUIRE(::write(fd, "abc", 3) == 3);
  CHECK_FALSE(s.settled("created"));
  ::close(fd);
  CHECK(s.settled("created"));
  write_file(d.path() / "empty", "");
  CHECK_FALSE(s.settled("empty"));
  fs::create_symlink("/etc/passwd", d.path() / "sym");
  CHECK(s.settled("sym"));
  CHECK_FALSE(s.settled("sub"));
  CHECK_FALSE(s.settled("missing"));
  // A file dated ahead of the clock is taken (not fresh for ever).
  write_file(d.path() / "future", "x");
  fs::last_write_time(d.path() / "future",
                      fs::file_time_type::clock::now() + std::chrono::hours(24 * 365));
  auto later = s.scan(100, 1000);
  CHECK(std::find(later.names.begin(), later.names.end(), "future") != later.names.end());
  // The directory gone: an error naming it.
  jq::test::TempDir other;
  auto o = opts(other, "w2");
  o.dir += "/missing";
  SpoolDir gone(o);
  auto err = gone.scan(10, 0);
  REQUIRE(err.error);
  CHECK(err.error->find(o.dir) != std::string::npos);
}

TEST_CASE("SpoolDir: of two daemons claiming one file, one gets it", "[spool][dir]") {
  jq::test::TempDir d;
  SpoolDir a(opts(d, "a.1.x")), b(opts(d, "b.2.y"));
  a.open();
  b.open();
  for (int i = 0; i < 200; ++i) write_file(d.path() / ("f" + std::to_string(i)), "x");
  int won_a = 0, won_b = 0, gone = 0;
  std::thread ta([&] {
    for (int i = 0; i < 200; ++i) {
      auto r = a.claim("f" + std::to_string(i), "A" + std::to_string(i));
      won_a += r.how == SpoolDir::Taken::claimed;
    }
  });
  for (int i = 0; i < 200; ++i) {
    auto r = b.claim("f" + std::to_string(i), "B" + std::to_string(i));
    won_b += r.how == SpoolDir::Taken::claimed;
    gone += r.how == SpoolDir::Taken::gone;
  }
  ta.join();
  CHECK(won_a + won_b == 200);
  CHECK(gone == 200 - won_b);
  auto files = tree(d.path());
  CHECK(files.size() == 202);  // 200 claims and two locks
  for (const auto& f : files) CHECK(f.rfind(".jobqd/", 0) == 0);
  // A claim is one name: <owner>/<jid>.1.<name>.
  auto r = a.claim("nothing-here", "Z");
  CHECK(r.how == SpoolDir::Taken::gone);
  write_file(d.path() / "one", "1");
  r = a.claim("one", "J1");
  REQUIRE(r.how == SpoolDir::Taken::claimed);
  CHECK(r.claim.attempt == 1);
  CHECK(a.path_of(r.claim) == d.str() + "/.jobqd/a.1.x/J1.1.one");
  CHECK(read_file(a.path_of(r.claim)) == "1");
}

TEST_CASE("SpoolDir: a second daemon of one worker id is refused; close removes what is empty",
          "[spool][dir]") {
  jq::test::TempDir d;
  SpoolDir a(opts(d, "w1"));
  a.open();
  SpoolDir again(opts(d, "w1"));
  CHECK_THROWS_WITH(again.open(), Catch::Contains("cannot lock") && Catch::Contains("w1.lock"));
  a.close();
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "w1"));
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "w1.lock"));
  // A folder that still holds a claim stays for a later daemon to recover.
  SpoolDir b(opts(d, "w2"));
  b.open();
  write_file(d.path() / "x", "x");
  REQUIRE(b.claim("x", "J").how == SpoolDir::Taken::claimed);
  b.close();
  CHECK(fs::exists(d.path() / ".jobqd" / "w2" / "J.1.x"));
}

TEST_CASE("SpoolDir: a dead daemon's claims are taken over; a live one's are not", "[spool][dir]") {
  jq::test::TempDir d;
  SpoolDir me(opts(d, "me"));
  me.open();
  {
    SpoolDir live(opts(d, "live"));
    live.open();
    write_file(d.path() / "held", "h");
    REQUIRE(live.claim("held", "H").how == SpoolDir::Taken::claimed);
    CHECK(me.recover(false).empty());  // its lock is held
    CHECK(fs::exists(d.path() / ".jobqd" / "live" / "H.1.held"));
    // It dies without closing: the kernel lets go of its lock when the descriptor closes.
  }
  // A long name's claim half made (the folder, no file yet), a long name given back at a stop
  // (attempt 0), and a failure's reason half written.
  fs::create_directories(d.path() / ".jobqd" / "live" / "EMPTY.1");
  fs::create_directories(d.path() / ".jobqd" / "live" / "B.0");
  write_file(d.path() / ".jobqd" / "live" / "B.0" / "back", "b");
  write_file(d.path() / ".jobqd" / "live" / ".H.error.json", "{");
  auto got = me.recover(false);
  REQUIRE(got.size() == 2);
  std::sort(got.begin(), got.end(), [](auto& x, auto& y) { return x.jid < y.jid; });
  CHECK(got[0].jid == "B");
  CHECK(got[0].attempt == 0);
  CHECK(got[0].name == "back");
  CHECK(got[1].jid == "H");
  CHECK(got[1].attempt == 1);
  CHECK(got[1].name == "held");
  CHECK(read_file(me.path_of(got[1])) == "h");
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "live"));  // its folder and lock are gone
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "live.lock"));
  // Its own folder only with `own` (at start: what this worker id left before a restart).
  CHECK(me.recover(false).empty());
  CHECK(me.recover(true).size() == 2);
  // Renumbered for the next attempt: the folder's name carries it.
  auto c = got[1];
  CHECK(me.renumber(c, 2).empty());
  CHECK(c.attempt == 2);
  CHECK(fs::exists(d.path() / ".jobqd" / "me" / "H.2.held"));
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "me" / "H.1.held"));
  auto b = got[0];
  CHECK(b.nested);
  CHECK(me.renumber(b, 1).empty());
  CHECK(read_file(d.path() / ".jobqd" / "me" / "B.1" / "back") == "b");
  auto stale = got[1];  // still says attempt 1: its folder is gone
  CHECK(me.renumber(stale, 3).find("cannot rename") != std::string::npos);
  CHECK(stale.attempt == 1);
}

TEST_CASE("SpoolDir: success deletes or moves to done/; failure moves to failed/ with the reason",
          "[spool][dir]") {
  jq::test::TempDir d;
  auto o = opts(d, "w");
  o.keep_done = true;
  SpoolDir s(o);
  s.open();
  auto claim = [&](const std::string& name, const std::string& jid) {
    write_file(d.path() / name, name);
    auto r = s.claim(name, jid);
    REQUIRE(r.how == SpoolDir::Taken::claimed);
    return r.claim;
  };
  CHECK(s.finish_done(claim("a", "J1")).empty());
  CHECK(s.finish_done(claim("a", "J2")).empty());  // the same name again: beside it
  CHECK(read_file(d.path() / "done" / "a") == "a");
  CHECK(fs::exists(d.path() / "done" / "a.J2"));
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "w" / "J1.1.a"));
  // A name too long to carry the id and attempt has a folder of its own, gone at the end.
  const std::string long_name(250, 'n');
  auto lc = claim(long_name, "J9");
  CHECK(lc.nested);
  CHECK(s.path_of(lc) == d.str() + "/.jobqd/w/J9.1/" + long_name);
  CHECK(fs::exists(s.path_of(lc)));
  CHECK(s.finish_done(lc).empty());
  CHECK(fs::exists(d.path() / "done" / long_name));
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "w" / "J9.1"));
  const std::string why = R"({"error":"boom"})";
  CHECK(s.finish_failed(claim("b", "J3"), why).empty());
  CHECK(s.finish_failed(claim("b", "J4"), why).empty());
  CHECK(read_file(d.path() / "failed" / "b") == "b");
  CHECK(read_file(d.path() / "failed" / "b.error.json") == why);
  CHECK(fs::exists(d.path() / "failed" / "b.J4"));
  CHECK(read_file(d.path() / "failed" / "b.J4.error.json") == why);
  CHECK(tree(d.path() / ".jobqd") == std::vector<std::string>{"w.lock"});
  // Without keep_done the file is deleted.
  auto o2 = opts(d, "w2");
  SpoolDir del(o2);
  del.open();
  write_file(d.path() / "c", "c");
  auto r = del.claim("c", "J5");
  REQUIRE(r.how == SpoolDir::Taken::claimed);
  CHECK(del.finish_done(r.claim).empty());
  CHECK_FALSE(fs::exists(d.path() / "c"));
  CHECK_FALSE(fs::exists(d.path() / "done" / "c"));
  // failed/ cannot be made (a file in its place): an error naming it, the file stays claimed.
  jq::test::TempDir e;
  SpoolDir f(opts(e, "w"));
  f.open();
  write_file(e.path() / "failed", "in the way");
  write_file(e.path() / "x", "x");
  auto rx = f.claim("x", "J6");
  REQUIRE(rx.how == SpoolDir::Taken::claimed);
  auto err = f.finish_failed(rx.claim, why);
  CHECK(err.find(e.str() + "/failed") != std::string::npos);
  CHECK(fs::exists(f.path_of(rx.claim)));
  // done/ a link to elsewhere: never followed.
  jq::test::TempDir elsewhere;
  fs::create_directory_symlink(elsewhere.path(), e.path() / "done");
  auto of = opts(e, "w2");
  of.keep_done = true;
  SpoolDir g(of);
  g.open();
  write_file(e.path() / "y", "y");
  auto ry = g.claim("y", "J7");
  REQUIRE(ry.how == SpoolDir::Taken::claimed);
  CHECK(g.finish_done(ry.claim).find("Not a directory") != std::string::npos);
  CHECK(fs::is_empty(elsewhere.path()));
  // .jobqd a link: refused at open.
  jq::test::TempDir h;
  fs::create_directory_symlink(elsewhere.path(), h.path() / ".jobqd");
  SpoolDir linked(opts(h, "w"));
  CHECK_THROWS_WITH(linked.open(), Catch::Contains("is not a directory"));
  CHECK(fs::is_empty(elsewhere.path()));
}

TEST_CASE("SpoolDir: links, pipes, directories and vanished files", "[spool][dir]") {
  jq::test::TempDir d, outside;
  SpoolDir s(opts(d, "w"));
  s.open();
  write_file(outside.path() / "secret", "secret");
  fs::create_symlink(outside.path() / "secret", d.path() / "link.json");
  REQUIRE(::mkfifo((d.path() / "pipe").c_str(), 0640) == 0);
  fs::create_directory(d.path() / "adir");
  // A link is claimed (moved, not followed) and invalid; its target is untouched.
  auto l = s.claim("link.json", "L");
  REQUIRE(l.how == SpoolDir::Taken::claimed);
  CHECK(l.claim.invalid.find("symbolic link") != std::string::npos);
  s.read_job(l.claim);
  CHECK(l.claim.json.empty());
  CHECK(read_file(outside.path() / "secret") == "secret");
  // A fifo is claimed and invalid; reading it never blocks.
  auto p = s.claim("pipe", "P");
  REQUIRE(p.how == SpoolDir::Taken::claimed);
  CHECK(p.claim.invalid.find("named pipe") != std::string::npos);
  // A directory is not a claim: it stays.
  CHECK(s.claim("adir", "D").how == SpoolDir::Taken::not_file);
  CHECK(fs::is_directory(d.path() / "adir"));
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "w" / "D.1.adir"));
  // Vanished between the event and the claim.
  CHECK(s.claim("never", "N").how == SpoolDir::Taken::gone);
  // Odd names are names like any other.
  const std::string odd = "new\nline \xff\xfe name";
  write_file(d.path() / odd, "odd");
  auto o = s.claim(odd, "O");
  REQUIRE(o.how == SpoolDir::Taken::claimed);
  CHECK(read_file(s.path_of(o.claim)) == "odd");
}

TEST_CASE("SpoolDir: job files are read whole, within max_job_bytes", "[spool][dir]") {
  jq::test::TempDir d;
  auto o = opts(d, "w");
  o.max_job_bytes = 100;
  SpoolDir s(o);
  s.open();
  write_file(d.path() / "ok.json", R"({"payload":{}})");
  write_file(d.path() / "big.json", std::string(101, ' '));
  auto ok = s.claim("ok.json", "A");
  REQUIRE(ok.how == SpoolDir::Taken::claimed);
  s.read_job(ok.claim);
  CHECK(ok.claim.invalid.empty());
  CHECK(ok.claim.json == R"({"payload":{}})");
  auto big = s.claim("big.json", "B");
  REQUIRE(big.how == SpoolDir::Taken::claimed);
  s.read_job(big.claim);
  CHECK(big.claim.json.empty());
  CHECK(big.claim.invalid.find("over max_job_bytes (100)") != std::string::npos);
  // Gone since the claim (removed by hand): unreadable, said so.
  fs::remove(s.path_of(ok.claim));
  ok.claim.json.clear();
  s.read_job(ok.claim);
  CHECK(ok.claim.invalid.find("cannot read the job file") != std::string::npos);
}

TEST_CASE("SpoolDir: recursive: files in subfolders keep their place, through a crash",
          "[spool][dir]") {
  jq::test::TempDir d;
  auto o = opts(d, "w");
  o.recursive = true;
  o.keep_done = true;
  {
    SpoolDir s(o);
    s.open();
    fs::create_directories(d.path() / "a" / "b");
    fs::create_directories(d.path() / ".hidden");
    fs::create_directories(d.path() / "done" / "old");
    write_file(d.path() / "a" / "b" / "x.json", "x");
    write_file(d.path() / "a" / "50%.txt", "p");
    write_file(d.path() / ".hidden" / "h", "h");
    write_file(d.path() / "done" / "old" / "d", "d");
    write_file(d.path() / "top", "t");
    for (auto p : {"a/b/x.json", "a/50%.txt", "top"}) age(d.path() / p);
    auto got = s.scan(100, 1000);
    std::sort(got.names.begin(), got.names.end());
    CHECK(got.names == std::vector<std::string>{"a/50%.txt", "a/b/x.json", "top"});
    CHECK(s.scan(100, 1000, "a/b").names == std::vector<std::string>{"a/b/x.json"});
    CHECK(s.wanted_dir("a/b"));
    CHECK_FALSE(s.wanted_dir("done"));
    CHECK_FALSE(s.wanted_dir("failed"));
    CHECK_FALSE(s.wanted_dir(".jobqd"));
    CHECK_FALSE(s.wanted_dir("a/.git"));
    CHECK_FALSE(s.wanted("a/.x"));
    auto x = s.claim("a/b/x.json", "J1");
    REQUIRE(x.how == SpoolDir::Taken::claimed);
    CHECK(s.path_of(x.claim) == d.str() + "/.jobqd/w/J1.1.a%2Fb%2Fx.json");
    auto p = s.claim("a/50%.txt", "J2");
    REQUIRE(p.how == SpoolDir::Taken::claimed);
    CHECK(s.path_of(p.claim) == d.str() + "/.jobqd/w/J2.1.a%2F50%25.txt");
    CHECK(s.finish_done(x.claim).empty());
    CHECK(read_file(d.path() / "done" / "a" / "b" / "x.json") == "x");
    // Dies with a2 claimed: another daemon finds its name as it was.
  }
  SpoolDir other(opts(d, "v"));
  other.open();
  auto back = other.recover(false);
  REQUIRE(back.size() == 1);
  CHECK(back[0].name == "a/50%.txt");
  CHECK(read_file(other.path_of(back[0])) == "p");
  CHECK(other.finish_failed(back[0], "{}").empty());
  CHECK(read_file(d.path() / "failed" / "a" / "50%.txt") == "p");
  CHECK(fs::exists(d.path() / "failed" / "a" / "50%.txt.error.json"));
  // A long name from a subfolder: a folder of its own, found again after a crash.
  auto o2 = opts(d, "u");
  o2.recursive = true;
  const std::string long_rel = "a/" + std::string(250, 'l');
  write_file(d.path() / long_rel, "long");
  {
    SpoolDir s(o2);
    s.open();
    auto l = s.claim(long_rel, "J3");
    REQUIRE(l.how == SpoolDir::Taken::claimed);
    CHECK(l.claim.nested);
    CHECK(read_file(s.path_of(l.claim)) == "long");
  }
  auto again = other.recover(false);
  REQUIRE(again.size() == 1);
  CHECK(again[0].name == long_rel);
  CHECK(again[0].nested);
  CHECK(other.finish_done(again[0]).empty());
  CHECK_FALSE(fs::exists(d.path() / ".jobqd" / "v" / "J3.1"));
}
