// Spool sources in the real daemon: files dropped in a watched directory run once each, through
// inotify overflow, kill -9, a second daemon, slow writers, a removed directory and bad files.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The queues section for one spool queue on `dir`, with the noop handler unless told.
std::string spool_yaml(const std::string& dir, const std::string& extra = "",
                       const std::string& handlers = "  h: {type: builtin, name: noop}\n") {
  return "handlers:\n" + handlers + "queues:\n  q:\n    handler: h\n    concurrency: 8\n" + extra +
         "    sources:\n      - spool: {dir: " + dir + ", on_success: move}\n";
}

// Starts `d` and waits until its spool source watches (the first scan comes right after).
void start_watching(Daemon& d) {
  d.start();
  bool up = eventually(
      [&] { return d.log().find("taking files matching") != std::string::npos || !d.running(); },
      15s, 10ms);
  if (!up || !d.running()) throw std::runtime_error("jobqd did not come up:\n" + d.log());
}

// Entries of a directory that are not directories.
std::size_t count_files(const fs::path& dir) {
  std::size_t n = 0;
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) n += e->d_type != DT_DIR;
  closedir(d);
  return n;
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Files left in the work folder (claimed, not finished).
std::size_t claimed_files(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir / ".jobqd", ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory() && it->path().extension() != ".lock") ++n;
  }
  return n;
}

// Whether job `id` of queue q reaches `succeeded` within `timeout`.
bool succeeds(SyncRedis& r, const std::string& id, std::chrono::milliseconds timeout) {
  return eventually(
      [&] { return job_states(r, "q", {id}, {"status"})[0]["status"] == "succeeded"; }, timeout);
}

std::string job_file(const std::string& id) {
  return R"({"id":")" + id + R"(","payload":{}})";
}

// Drops job files `<prefix><i>.json` (id `<prefix><i>`) written in place, as fast as possible.
std::vector<std::string> drop_jobs(const fs::path& dir, const std::string& prefix, std::size_t n) {
  std::vector<std::string> ids;
  ids.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    ids.push_back(prefix + std::to_string(i));
    const std::string text = job_file(ids.back());
    int fd = ::open((dir / (ids.back() + ".json")).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0640);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    ::close(fd);
  }
  return ids;
}

long read_proc_long(const char* path, long fallback) {
  std::ifstream in(path);
  long v = fallback;
  in >> v;
  return in ? v : fallback;
}

}  // namespace

TEST_CASE("Spool: more files at once than the inotify queue holds each run exactly once",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, spool_yaml(spool.str(), "    buffer: 512\n"));
  start_watching(d);
  // Stopped while the files land, the daemon cannot read the events: the kernel's queue
  // overflows for certain, and only the rescan can find the rest.
  const long queue_max = read_proc_long("/proc/sys/fs/inotify/max_queued_events", 16384);
  const std::size_t n = static_cast<std::size_t>(std::clamp(queue_max + 3616, 20000L, 100000L));
  d.signal(SIGSTOP);
  auto ids = drop_jobs(spool.path(), "o", n);
  d.signal(SIGCONT);
  const auto done = spool.path() / "done";
  bool all = eventually([&] { return count_files(done) >= n; }, 120s, 100ms);
  INFO("done " << count_files(done) << " of " << n << "\n" << d.log().substr(0, 4000));
  REQUIRE(all);
  CHECK(d.log().find("the kernel dropped file events") != std::string::npos);
  auto r = redis.client();
  auto states = job_states(r, "q", ids, {"status", "attempts"});
  std::size_t ok = 0;
  for (auto& s : states) ok += s["status"] == "succeeded" && s["attempts"] == "1";
  CHECK(ok == n);
  CHECK(count_files(done) == n);  // none twice (a second file of a name gets a suffix)
  CHECK(count_files(spool.path()) == 0);
  CHECK(claimed_files(spool.path()) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: kill -9 again and again mid-run, then a restart: none lost, none doubled",
          "[integration][spool][crash]") {
  RedisServer redis(/*aof=*/true);
  TempDir spool;
  const std::string yaml = spool_yaml(spool.str(), "    buffer: 64\n");
  const std::size_t n = 6000;
  auto ids = drop_jobs(spool.path(), "k", n);
  const auto done = spool.path() / "done";
  std::size_t kills = 0;
  for (int round = 0; round < 3; ++round) {
    Daemon d(redis, yaml);
    start_watching(d);
    const std::size_t before = count_files(done);
    // Killed once it has made some progress, in the middle of the files.
    eventually([&] { return count_files(done) >= before + 400; }, 20s, 2ms);
    d.kill9();
    ++kills;
  }
  INFO("after " << kills << " kills: " << count_files(done) << " done");
  CHECK(count_files(done) < n);  // the kills did land mid-run
  Daemon last(redis, yaml);
  start_watching(last);
  bool all = eventually([&] { return count_files(done) >= n; }, 60s, 50ms);
  INFO(last.log().substr(0, 4000));
  REQUIRE(all);
  CHECK(last.log().find("left claimed") != std::string::npos);
  auto r = redis.client();
  auto states = job_states(r, "q", ids, {"status", "attempts"});
  std::size_t ok = 0, again = 0;
  for (auto& s : states) {
    ok += s["status"] == "succeeded";
    again += s["attempts"] != "1";
  }
  CHECK(ok == n);
  // At least once: a file whose run a kill cut off runs again; few do.
  CHECK(again <= kills * 400);  // at most what one daemon holds claimed
  CHECK(count_files(done) == n);
  for (const auto& name : names_in(done)) CHECK(name.size() - name.rfind(".json") == 5);
  CHECK(claimed_files(spool.path()) == 0);
  CHECK(last.stop() == 0);
}

TEST_CASE("Spool: two daemons on one directory never run a file twice", "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  const std::string yaml = spool_yaml(spool.str());
  Daemon a(redis, yaml), b(redis, yaml);
  start_watching(a);
  start_watching(b);
  const std::size_t n = 3000;
  auto ids = drop_jobs(spool.path(), "t", n);
  const auto done = spool.path() / "done";
  bool all = eventually([&] { return count_files(done) >= n; }, 60s, 50ms);
  INFO(a.log().substr(0, 3000) << "\n---\n" << b.log().substr(0, 3000));
  REQUIRE(all);
  auto r = redis.client();
  auto states = job_states(r, "q", ids, {"status", "attempts", "worker"});
  std::set<std::string> workers;
  std::size_t once = 0;
  for (auto& s : states) {
    once += s["status"] == "succeeded" && s["attempts"] == "1";
    workers.insert(s["worker"]);
  }
  CHECK(once == n);
  CHECK(count_files(done) == n);
  CHECK(workers.size() == 2);  // both took a share
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("Spool: a file is taken once closed or renamed in; hidden and *.tmp files are not",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  // Written in place and still open at the start, however old it looks: left alone.
  const auto slow = spool.path() / "slow.json";
  // O_CLOEXEC: the daemon started below must not hold it open too.
  int fd = ::open(slow.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  REQUIRE(fd >= 0);
  const std::string head = R"({"id":"slow",)";
  REQUIRE(::write(fd, head.data(), head.size()) == static_cast<ssize_t>(head.size()));
  const timespec old[2] = {{std::time(nullptr) - 60, 0}, {std::time(nullptr) - 60, 0}};
  REQUIRE(::futimens(fd, old) == 0);
  write_file(spool.path() / ".hidden.json", job_file("hidden"));
  write_file(spool.path() / "partial.json.tmp", job_file("tmp"));
  fs::create_directory(spool.path() / "sub");  // not recursive: left alone
  write_file(spool.path() / "sub" / "nested.json", job_file("nested"));
  Daemon d(redis, spool_yaml(spool.str()));
  start_watching(d);
  auto r = redis.client();
  // Renamed in from a hidden name (how careful writers publish a file).
  write_file(spool.path() / ".incoming", job_file("renamed"));
  fs::rename(spool.path() / ".incoming", spool.path() / "renamed.json");
  REQUIRE(succeeds(r, "renamed", 10s));
  // A spool job's state is there for jobqctl, as a Redis job's.
  auto st = jobqctl(redis, {"--json", "status", "renamed", "-q", "q"});
  CHECK(st.code == 0);
  CHECK(nlohmann::json::parse(st.out)["status"] == "succeeded");
  CHECK(jobqctl(redis, {"wait", "renamed", "-q", "q", "--wait-timeout", "5s"}).code == 0);
  // Linked in (as Maildir writers do), the first name then removed: no close event either.
  write_file(spool.path() / ".linked-tmp", job_file("linked"));
  REQUIRE(::link((spool.path() / ".linked-tmp").c_str(), (spool.path() / "linked.json").c_str()) ==
          0);
  fs::remove(spool.path() / ".linked-tmp");
  REQUIRE(succeeds(r, "linked", 4s));
  // Written in pieces with pauses longer than the quiet time, while the daemon watches.
  const auto pieces = spool.path() / "pieces.json";
  {
    int p = ::open(pieces.c_str(), O_WRONLY | O_CREAT, 0640);
    REQUIRE(p >= 0);
    for (const std::string part : {R"({"id":)", R"("pieces",)", R"("payload":{}})"}) {
      REQUIRE(::write(p, part.data(), part.size()) == static_cast<ssize_t>(part.size()));
      std::this_thread::sleep_for(600ms);
    }
    ::close(p);
  }
  REQUIRE(succeeds(r, "pieces", 10s));
  // The slow file is still where it was, whole, and nothing failed.
  CHECK(fs::exists(slow));
  CHECK_FALSE(fs::exists(spool.path() / "failed"));
  const std::string tail = R"("payload":{"n":1}})";
  REQUIRE(::write(fd, tail.data(), tail.size()) == static_cast<ssize_t>(tail.size()));
  ::close(fd);
  REQUIRE(succeeds(r, "slow", 10s));
  CHECK(eventually([&] { return read_file(spool.path() / "done" / "slow.json") == head + tail; },
                   5s));
  CHECK(fs::exists(spool.path() / ".hidden.json"));
  CHECK(fs::exists(spool.path() / "partial.json.tmp"));
  auto never = job_states(r, "q", {"hidden", "tmp", "nested"});
  for (auto& n : never) CHECK(n["status"].empty());
  CHECK(fs::exists(spool.path() / "sub" / "nested.json"));
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: bad files go to failed/ with the reason; failures retry, then fail for good",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool, outside;
  const std::string handlers =
      "  h: {type: builtin, name: noop}\n"
      "  boom: {type: builtin, name: fail}\n";
  Daemon d(redis, spool_yaml(spool.str(), "    max_attempts: 2\n    retry_base: 50ms\n", handlers));
  start_watching(d);
  write_file(spool.path() / "bad.json", R"({"id":"bad","payload":)");
  write_file(spool.path() / "who.json", R"({"id":"who","handler":"nope","payload":{}})");
  write_file(spool.path() / "fails.json", R"({"id":"fails","handler":"boom","payload":{}})");
  // A job that waits for others: nothing would hold a file while it waits; it must not run as if
  // it had no dependencies (nor as if it had been released, with outcomes of its own).
  write_file(spool.path() / "waits.json",
             R"({"id":"waits","payload":{},"after":["x"],"dependencies":[]})");
  write_file(outside.path() / "secret", "secret");
  fs::create_symlink(outside.path() / "secret", spool.path() / "link.json");
  const auto failed = spool.path() / "failed";
  // The link makes no close event, only its creation: taken at once all the same (well before
  // the 10 s rescan).
  REQUIRE(eventually([&] { return count_files(failed) == 10; }, 4s, 20ms));
  auto why = [&](const std::string& name) {
    return nlohmann::json::parse(read_file(failed / (name + ".error.json")));
  };
  auto bad = why("bad.json");
  CHECK(bad["error_kind"] == "invalid_job");
  CHECK(bad["file"] == "bad.json");
  CHECK(bad["attempts"] == 0);
  CHECK(bad["error"].get<std::string>().find("bad.json") != std::string::npos);
  CHECK(why("who.json")["error"].get<std::string>().find("nope") != std::string::npos);
  CHECK(why("waits.json")["error_kind"] == "invalid_job");
  CHECK(why("waits.json")["error"].get<std::string>().find("cannot wait for other jobs") !=
        std::string::npos);
  auto fails = why("fails.json");
  CHECK(fails["error_kind"] == "exception");
  CHECK(fails["attempts"] == 2);
  CHECK(fails["id"] == "fails");
  CHECK(fails["failed_at"].get<long long>() >= fails["claimed_at"].get<long long>());
  CHECK(why("link.json")["error"].get<std::string>().find("symbolic link") != std::string::npos);
  CHECK(read_file(outside.path() / "secret") == "secret");
  CHECK(fs::is_symlink(failed / "link.json"));
  // A file that is no job has no id of its own: the one given at the claim is in the reason.
  auto r = redis.client();
  const std::string bad_id = bad["id"];
  CHECK(bad_id != "bad");
  auto s = job_states(r, "q", {bad_id, "fails"}, {"status", "error_kind", "attempts"});
  CHECK(s[0]["status"] == "failed");
  CHECK(s[0]["error_kind"] == "invalid_job");
  CHECK(s[1]["status"] == "failed");
  CHECK(s[1]["attempts"] == "2");
  CHECK(claimed_files(spool.path()) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: other files reach the handler by path; vanishing files cost nothing",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool, out;
  const std::string handlers =
      "  h: {type: exec, command: [/bin/cp, \"{file}\", \"" + out.str() + "/\"]}\n";
  Daemon d(redis, spool_yaml(spool.str(), "", handlers));
  start_watching(d);
  // Files that vanish between their event and their claim, among ones that stay.
  for (int i = 0; i < 200; ++i) {
    write_file(spool.path() / ("gone" + std::to_string(i)), "x");
    fs::remove(spool.path() / ("gone" + std::to_string(i)));
    if (i % 20 == 0) write_file(spool.path() / ("stay" + std::to_string(i) + ".txt"), "s");
  }
  const std::string odd = "odd name \xff\n.bin";
  write_file(spool.path() / odd, "payload bytes");
  // (A file may also be claimed before it is removed: then it runs like any other.)
  std::vector<std::string> stay{odd};
  for (int i = 0; i < 200; i += 20) stay.push_back("stay" + std::to_string(i) + ".txt");
  // The handler's {file} is the claimed file: `<id>.<attempt>.<name>`, its extension kept.
  auto copied = [&](const std::string& name) -> std::optional<fs::path> {
    for (const auto& n : names_in(out.path())) {
      if (n.size() > name.size() &&
          n.compare(n.size() - name.size() - 1, std::string::npos, "." + name) == 0) {
        return out.path() / n;
      }
    }
    return std::nullopt;
  };
  auto all_in = [&] {
    return std::all_of(stay.begin(), stay.end(), [&](const std::string& n) {
      return copied(n) && fs::exists(spool.path() / "done" / n);
    });
  };
  REQUIRE(eventually(all_in, 15s, 20ms));
  CHECK(read_file(*copied(odd)) == "payload bytes");
  CHECK(read_file(*copied("stay0.txt")) == "s");
  CHECK(copied("stay0.txt")->filename().string().find(".1.stay0.txt") != std::string::npos);
  CHECK(eventually(
      [&] { return count_files(spool.path()) == 0 && claimed_files(spool.path()) == 0; }, 5s));
  CHECK(d.log().find(" error ") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: results, errors and the log name a file as it was dropped, not as claimed",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  // The handler names the path it gets, on stdout and (for bad.txt) on stderr.
  const std::string handlers =
      "  h: {type: exec, command: [/bin/sh, -c, 'wc -c \"$0\"; case \"$0\" in *bad.txt) echo "
      "\"cannot use $0\" >&2; exit 3;; esac', \"{file}\"]}\n";
  Daemon d(redis, spool_yaml(spool.str(), "    max_attempts: 1\n", handlers));
  start_watching(d);
  write_file(spool.path() / "good.txt", "hello\n");
  write_file(spool.path() / "bad.txt", "worse\n");
  const auto good = (spool.path() / "good.txt").string();
  const auto bad = (spool.path() / "bad.txt").string();
  const auto why_file = spool.path() / "failed" / "bad.txt.error.json";
  REQUIRE(eventually([&] { return fs::exists(spool.path() / "done" / "good.txt"); }, 10s));
  REQUIRE(eventually([&] { return fs::exists(why_file); }, 10s));
  // In Redis: each file's job by the id it was given at the claim.
  auto r = redis.client();
  std::map<std::string, std::map<std::string, std::string>> by_status;
  for (const auto& key : r.cmd({"KEYS", "jobq:{q}:job:*"}).elements) {
    const std::string id = key.str.substr(key.str.rfind(':') + 1);
    auto st = job_states(r, "q", {id}, {"status", "result", "error", "file"})[0];
    by_status[st["status"]] = st;
  }
  REQUIRE(by_status.count("succeeded") == 1);
  REQUIRE(by_status.count("failed") == 1);
  // Its state names its file as dropped (what the dashboard's job page shows).
  CHECK(by_status["succeeded"]["file"] == good);
  CHECK(by_status["failed"]["file"] == bad);
  CHECK(by_status["succeeded"]["result"] == "6 " + good + "\n");
  const std::string error = by_status["failed"]["error"];
  CHECK_THAT(error, Catch::Contains("cannot use " + bad));
  CHECK(error.find(".jobqd") == std::string::npos);
  const auto why = nlohmann::json::parse(read_file(why_file));
  CHECK(why["error"] == error);
  CHECK(d.log().find("failed for good") != std::string::npos);
  CHECK(d.log().find("cannot use " + bad) != std::string::npos);
  CHECK(d.log().find("cannot use " + spool.str() + "/.jobqd") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: the watched directory removed and made again is watched again",
          "[integration][spool]") {
  RedisServer redis;
  TempDir parent;
  const auto dir = parent.path() / "in";
  fs::create_directory(dir);
  Daemon d(redis, spool_yaml(dir.string()));
  start_watching(d);
  auto r = redis.client();
  write_file(dir / "a.json", job_file("a"));
  REQUIRE(succeeds(r, "a", 10s));
  // As `rm -rf` again: the daemon may write in it (its work folder) while it is being removed.
  REQUIRE(eventually(
      [&] {
        std::error_code ec;
        fs::remove_all(dir, ec);
        return !ec && !fs::exists(dir);
      },
      5s));
  REQUIRE(eventually([&] { return d.log().find("is gone") != std::string::npos; }, 5s));
  fs::create_directory(dir);
  // Dropped before the watch is back: found by the scan that follows it.
  write_file(dir / "b.json", job_file("b"));
  const bool back = eventually([&] { return d.log().find("is back") != std::string::npos; }, 5s);
  INFO(d.log());
  REQUIRE(back);
  REQUIRE(succeeds(r, "b", 10s));
  write_file(dir / "c.json", job_file("c"));
  REQUIRE(succeeds(r, "c", 10s));
  // Only the work folder removed: made again, and files still run.
  fs::remove_all(dir / ".jobqd");
  REQUIRE(eventually([&] { return d.log().find("was removed") != std::string::npos; }, 5s));
  write_file(dir / "e.json", job_file("e"));
  REQUIRE(succeeds(r, "e", 10s));
  REQUIRE(eventually([&] { return fs::exists(dir / ".jobqd"); }, 5s));
  CHECK(d.running());
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: a graceful stop gives back what did not run and finishes what did",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  const std::string handlers = "  h: {type: builtin, name: sleep}\n";
  Daemon d(redis, spool_yaml(spool.str(), "", handlers), "  shutdown_grace: 10s\n");
  start_watching(d);
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back("g" + std::to_string(i));
    write_file(spool.path() / (ids.back() + ".json"),
               R"({"id":")" + ids.back() + R"(","payload":{"ms":700}})");
  }
  auto r = redis.client();
  REQUIRE(eventually([&] { return count_status(r, "q", ids, "active") >= 8; }, 10s));
  CHECK(d.stop() == 0);
  auto states = job_states(r, "q", ids, {"status", "attempts"});
  std::size_t ran = 0, back = 0;
  for (auto& s : states) {
    ran += s["status"] == "succeeded";
    back += s["status"] != "succeeded";
  }
  CHECK(ran >= 8);
  CHECK(ran + back == ids.size());
  // What did not run waits where a restart finds it, its attempt not counted.
  CHECK(count_files(spool.path() / "done") == ran);
  CHECK(claimed_files(spool.path()) == back);
  Daemon again(redis, spool_yaml(spool.str(), "", handlers));
  start_watching(again);
  REQUIRE(eventually([&] { return count_files(spool.path() / "done") == ids.size(); }, 15s));
  states = job_states(r, "q", ids, {"status", "attempts"});
  for (auto& s : states) {
    CHECK(s["status"] == "succeeded");
    CHECK(s["attempts"] == "1");
  }
  CHECK(again.stop() == 0);
}

TEST_CASE("Spool: recursive: subfolders are watched as they appear; files keep their place",
          "[integration][spool]") {
  RedisServer redis;
  TempDir spool, outside;
  fs::create_directories(spool.path() / "a");
  write_file(spool.path() / "a" / "one.json", job_file("one"));
  std::string yaml = spool_yaml(spool.str());
  yaml.replace(yaml.find("on_success: move}"), 17, "on_success: move, recursive: true}");
  Daemon d(redis, yaml);
  start_watching(d);
  auto r = redis.client();
  REQUIRE(succeeds(r, "one", 10s));  // waiting in a subfolder at start
  // A new folder with a file made at once, before a watch on it can exist.
  fs::create_directory(spool.path() / "b");
  write_file(spool.path() / "b" / "two.json", job_file("two"));
  REQUIRE(succeeds(r, "two", 5s));
  fs::create_directories(spool.path() / "c" / "d" / "e");
  write_file(spool.path() / "c" / "d" / "e" / "three.json", job_file("three"));
  REQUIRE(succeeds(r, "three", 5s));
  // A tree moved in with its files.
  fs::create_directories(outside.path() / "t" / "u");
  write_file(outside.path() / "t" / "u" / "four.json", job_file("four"));
  fs::rename(outside.path() / "t", spool.path() / "t");
  REQUIRE(succeeds(r, "four", 5s));
  // Watched after a move inside the directory, at its new place; and later files there.
  write_file(spool.path() / "t" / "u" / "five.json", job_file("five"));
  REQUIRE(succeeds(r, "five", 5s));
  fs::rename(spool.path() / "t", spool.path() / "moved");
  write_file(spool.path() / "moved" / "u" / "six.json", job_file("six"));
  REQUIRE(succeeds(r, "six", 5s));
  // Hidden folders and done/ are not looked into.
  fs::create_directories(spool.path() / ".git");
  write_file(spool.path() / ".git" / "seven.json", job_file("seven"));
  write_file(spool.path() / "done" / "eight.json", job_file("eight"));
  write_file(spool.path() / "b" / "nine.json", job_file("nine"));
  REQUIRE(succeeds(r, "nine", 5s));
  const auto done = spool.path() / "done";
  for (auto p : {"a/one.json", "b/two.json", "c/d/e/three.json", "t/u/four.json", "t/u/five.json",
                 "moved/u/six.json", "b/nine.json"}) {
    INFO(p);
    CHECK(eventually([&] { return fs::exists(done / p); }, 5s));  // moved after the state
  }
  CHECK(fs::exists(spool.path() / ".git" / "seven.json"));
  CHECK(fs::exists(done / "eight.json"));
  auto never = job_states(r, "q", {"seven", "eight"}, {"status"});
  CHECK(never[0]["status"].empty());
  CHECK(never[1]["status"].empty());
  CHECK(claimed_files(spool.path()) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: two files of one job id run one after the other", "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, spool_yaml(spool.str(), "", "  h: {type: builtin, name: sleep}\n"));
  start_watching(d);
  const std::string job = R"({"id":"dup","payload":{"ms":400}})";
  write_file(spool.path() / "first.json", job);
  write_file(spool.path() / "second.json", job);
  auto r = redis.client();
  REQUIRE(eventually([&] { return count_files(spool.path() / "done") == 2; }, 10s));
  auto s = job_states(r, "q", {"dup"}, {"status", "attempts"});
  CHECK(s[0]["status"] == "succeeded");
  CHECK(s[0]["attempts"] == "1");  // the second is a new job, with fresh attempts
  // Never two at once: the second started after the first had finished.
  const auto log = d.log();
  auto first = log.find("job dup succeeded");
  REQUIRE(first != std::string::npos);
  CHECK(log.find("job dup succeeded", first + 1) != std::string::npos);
  CHECK(log.find("job dup: buffered -> running", log.find("job dup: buffered -> running") + 1) >
        first);
  CHECK(d.stop() == 0);
}

TEST_CASE("Spool: Redis restarted mid-run: files wait, then all run; none lost",
          "[integration][spool][reconnect]") {
  RedisServer redis(/*aof=*/true);
  TempDir spool;
  Daemon d(redis, spool_yaml(spool.str(), "", "  h: {type: builtin, name: sleep}\n"));
  start_watching(d);
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    ids.push_back("r" + std::to_string(i));
    write_file(spool.path() / (ids.back() + ".json"),
               R"({"id":")" + ids.back() + R"(","payload":{"ms":5}})");
  }
  const auto done = spool.path() / "done";
  REQUIRE(eventually([&] { return count_files(done) >= 30; }, 10s, 2ms));
  redis.kill();
  // Without Redis nothing ends on disk: an end is written in Redis before the file moves. Once a
  // write has failed, the moves of ends written before it finish, and then nothing moves.
  REQUIRE(eventually(
      [&] { return d.log().find("writing job outcomes failed") != std::string::npos; }, 10s));
  std::size_t frozen = count_files(done);
  REQUIRE(eventually(
      [&] {
        const auto before = count_files(done);
        std::this_thread::sleep_for(300ms);  // a window with no move in it
        frozen = count_files(done);
        return frozen == before;
      },
      5s));
  std::this_thread::sleep_for(1200ms);  // the stillness itself is what is measured
  CHECK(count_files(done) == frozen);
  CHECK(frozen < ids.size());
  CHECK(d.running());
  redis.start();
  auto r = redis.client();
  REQUIRE(eventually([&] { return count_files(done) == ids.size(); }, 30s, 20ms));
  auto states = job_states(r, "q", ids, {"status"});
  std::size_t ok = 0;
  for (auto& s : states) ok += s["status"] == "succeeded";
  CHECK(ok == ids.size());
  CHECK(claimed_files(spool.path()) == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE(
    "Spool: a claim's rename that fails (disk full, permissions) leaves the file; it runs later",
    "[integration][spool]") {
  RedisServer redis;
  TempDir spool;
  Daemon d(redis, spool_yaml(spool.str()));
  start_watching(d);
  // The daemon's own folder made immutable: every rename into it fails (as on a full disk, the
  // same path through the code), even for root.
  std::string owner;
  for (const auto& e : fs::directory_iterator(spool.path() / ".jobqd")) {
    if (e.is_directory()) owner = e.path().string();
  }
  REQUIRE_FALSE(owner.empty());
  auto lock = run_program({"/usr/bin/chattr", "+i", owner});
  if (lock.code != 0) {
    WARN("chattr +i is not available here (" << lock.out << "): the failing rename is not tried");
    return;
  }
  write_file(spool.path() / "stuck.json", job_file("stuck"));
  const bool logged = eventually(
      [&] {
        return d.log().find("cannot move " + spool.str() + "/stuck.json") != std::string::npos;
      },
      5s);
  auto unlock = run_program({"/usr/bin/chattr", "-i", owner});
  REQUIRE(unlock.code == 0);
  CHECK(logged);
  auto r = redis.client();
  REQUIRE(succeeds(r, "stuck", 10s));  // tried again a second later, and taken
  // (The state is written before the file moves.)
  CHECK(eventually([&] { return fs::exists(spool.path() / "done" / "stuck.json"); }, 5s));
  CHECK(d.stop() == 0);
}
