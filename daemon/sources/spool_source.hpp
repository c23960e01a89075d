// The spool source: files dropped in a watched directory become jobs, claimed by rename, and each
// one's end is made durable in the directory (the spool implementation of Delivery).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "async/async.hpp"
#include "job/job.hpp"
#include "redis/client.hpp"
#include "sources/delivery.hpp"
#include "sources/spool_dir.hpp"
#include "store/queue_store.hpp"

struct inotify_event;

namespace jq::sources {

/// One watched directory (docs/spool.md):
/// - inotify through the loop: a file closed after writing or renamed in is a name to claim;
///   when the kernel's queue overflows, or the directory comes back after it was removed, the
///   directory is scanned instead; a scan also runs at start and every so often, as a safety net;
/// - claims happen only while the queue's buffer has room (backpressure: names wait, and past a
///   bound they are dropped and found again by a scan), in batches on the thread pool, so a
///   rename or a read never blocks the loop;
/// - a claimed file's state is written to Redis (status, wait) before it runs, and its end is
///   written there before the file is deleted or moved: a file leaves the work folder only once
///   its final state is recorded, and a crash anywhere before that runs it again;
/// - files other daemons claimed and left when they died are taken over (their lock is free).
class SpoolSource final : public Source, public Delivery {
 public:
  struct Options {
    SpoolDir::Options dir;
    Millis quiet{1000};
  };
  SpoolSource(redis::Client& main, store::Settings settings, const job::Rules& rules, Sink& sink,
              Options options);
  SpoolSource(const SpoolSource&) = delete;
  SpoolSource& operator=(const SpoolSource&) = delete;
  ~SpoolSource() override;

  // Source
  void start() override;
  async::Task<void> stop_taking() override;
  async::Task<void> finish(Millis limit) override;
  std::uint64_t backlog() const noexcept override { return changes_.size() + sending_; }
  void retune(const store::Settings& s) override;

  // Delivery
  void succeed(std::uint64_t ticket, const std::string& id, long long attempt, std::string result,
               store::Recorded* done) override;
  void retry(std::uint64_t ticket, const std::string& id, Millis delay, std::string error,
             job::ErrorKind kind, store::Recorded* done) override;
  void dead(std::uint64_t ticket, const std::string& id, bool started, std::string error,
            job::ErrorKind kind, store::Recorded* done) override;
  void cancel(std::uint64_t ticket, const std::string& id, std::string error,
              store::Recorded* done) override;
  void give_back(std::uint64_t ticket, const std::string& id, store::Recorded* done) override;
  void forget(std::uint64_t ticket) noexcept override;

  /// Files claimed and not finished (for tests and metrics).
  std::size_t claimed() const noexcept { return files_.size(); }
  /// Files seen in the directory and not claimed yet (those a scan has still to find aside).
  std::size_t waiting() const noexcept { return names_.size(); }
  const std::string& dir() const noexcept { return o_.dir.dir; }

 private:
  /// A claimed file, from its claim to its end.
  struct File {
    SpoolDir::Claim claim;
    std::string id;       // the job's (its JSON's own, else the claim's jid)
    std::string handler;  // for the state
    std::string raw;      // the job's JSON
    std::int64_t claimed_ms = 0;
    bool ran = false;  // an attempt of it started here (a stop leaves a waiting retry counted)
  };
  /// A change of state: written to Redis, then (for an end) made on disk.
  struct Change {
    enum class Code : std::uint8_t { start, ok, retry, dead, back, cancel } code = Code::start;
    std::uint64_t ticket = 0;
    std::string a, b;
    job::ErrorKind kind = job::ErrorKind::none;  // retry, dead, cancel
    Millis delay{0};                             // retry
    store::Recorded* notify = nullptr;
  };
  enum class Later : std::uint8_t { retry, wait };

  async::Task<void> watcher();
  async::Task<void> producer();
  async::Task<void> feeder();
  async::Task<void> writer();
  async::Task<void> claim_batch(std::size_t n);
  /// The whole directory (""), or the subfolder `sub` (relative) and what is below it.
  async::Task<void> rescan(std::string sub);
  void on_event(const inotify_event& ev);
  void forget_watch(int wd);
  void record_watches(const std::vector<std::pair<int, std::string>>& watched);
  async::Task<void> recover(bool own);
  async::Task<void> run_due();
  async::Task<redis::Reply> send(const std::vector<std::string>& args);
  void adopt(SpoolDir::Claim claim);
  void push(Change c);
  void push(Change::Code code, std::uint64_t ticket, std::string text, job::ErrorKind kind,
            store::Recorded* done, Millis delay = Millis(0));
  /// `created`: known only from IN_CREATE (a hard link, a symlink, or a file still being
  /// written): taken only if SpoolDir::settled says so.
  void add_name(std::string name, bool created = false);
  std::size_t avail() const noexcept;
  void wake() { wake_.set(); }
  std::string error_json(const File& f, const std::string& error, job::ErrorKind kind) const;

  redis::Client& main_;
  store::Settings s_;
  store::Keys keys_;
  const job::Rules& rules_;
  Sink& sink_;
  Options o_;
  std::shared_ptr<SpoolDir> dir_;  // shared with work on the thread pool
  /// The inotify descriptor (empty when inotify_init1 failed: scans only). Shared with a scan
  /// on the thread pool, which adds watches with it: a scan still running when this source goes
  /// keeps it open, so it never adds them to a number reused by another open meanwhile.
  std::shared_ptr<const async::Fd> inotify_;
  int wd_ = -1;                               // the directory's own watch
  std::unordered_map<int, std::string> wds_;  // every watch: its folder, relative ("" DIR)
  std::deque<std::string> subscans_;          // new subfolders to scan (recursive)
  async::Clock::time_point last_watch_log_{};
  bool lost_dir_ = false;   // the directory is gone: the watcher waits for it
  bool reopen_ = false;     // it came back: make the work folder again
  bool work_lost_ = false;  // the work folder was removed: let go of the lock, then see

  std::uint64_t next_ticket_ = 1;
  std::unordered_map<std::uint64_t, File> files_;
  std::deque<std::string> names_;
  /// The names in names_, each with whether only its IN_CREATE is known (a close or a rename
  /// after it, or a scan, says it is whole).
  std::unordered_map<std::string, bool> named_;
  bool scan_wanted_ = true;
  async::Clock::time_point scan_at_{};
  async::Clock::time_point housekeeping_at_{};
  std::multimap<async::Clock::time_point, std::pair<std::uint64_t, Later>> later_;
  std::size_t transit_ = 0;  // claimed, not yet in the sink
  std::deque<std::uint64_t> ready_;
  async::Event wake_, ready_ev_, work_, progress_;
  std::vector<Change> changes_;
  std::size_t sending_ = 0;
  bool taking_ = true;
  bool opened_ = false;
  async::JoinHandle<void> watch_task_, produce_task_, feed_task_, write_task_;
};

}  // namespace jq::sources
