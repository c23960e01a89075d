// The spool source: files dropped in a watched directory become jobs, claimed by rename, and each
// one's end is made durable in the directory (the spool implementation of Delivery).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "async/async.hpp"
#include "job/job.hpp"
#include "sources/delivery.hpp"
#include "sources/spool_dir.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

struct inotify_event;

namespace jq::sources {

/// One watched directory (docs/spool.md):
/// - inotify through the loop: a file closed after writing or renamed in is a name to claim;
///   when the kernel's queue overflows, or the directory comes back after it was removed, the
///   directory is scanned instead; a scan also runs at start and every so often, as a safety net;
/// - claims happen only while the queue's buffer has room (backpressure: names wait, and past a
///   bound they are dropped and found again by a scan), in batches on the thread pool, so a
///   rename or a read never blocks the loop;
/// - a claimed file's id is claimed in Redis (through the queue's Settler, like every state
///   change of its job) before it runs, and its end is written there before the file is deleted
///   or moved: a file leaves the work folder only once its final state is settled, and a crash
///   anywhere before that runs it again;
/// - files other daemons claimed and left when they died are taken over (their lock is free).
class SpoolSource final : public Source, public Delivery {
 public:
  struct Options {
    SpoolDir::Options dir;
    Millis quiet{1000};
  };
  /// `settlers`: the queue's, one per shard (shard 0 first); each job's go to its id's home.
  SpoolSource(store::QueueStore& store, std::vector<store::Settler*> settlers,
              const job::Rules& rules, Sink& sink, Options options);
  SpoolSource(const SpoolSource&) = delete;
  SpoolSource& operator=(const SpoolSource&) = delete;
  ~SpoolSource() override;

  // Source
  Delivery& delivery() noexcept override { return *this; }
  void start() override;
  async::Task<void> stop_taking() override;
  async::Task<void> finish(Millis limit) override;
  void set_taking(bool) override {}
  std::optional<SpoolView> spool() const override {
    return SpoolView{o_.dir.dir, names_.size(), files_.size()};
  }

  // Delivery
  void started(std::uint64_t ticket, bool show_active) override;
  void show_active(std::uint64_t ticket) override;
  void settle(std::uint64_t ticket, Outcome out, store::OnSettled* done) override;
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
    std::string id;               // the job's (its JSON's own, else the claim's jid)
    std::string handler;          // for the state
    std::optional<job::Job> job;  // the one parse of it (absent: invalid)
    long long max_attempts = 1;
    std::int64_t claimed_ms = 0;
    std::string submitted_at, started_at;  // Redis' clock
    bool ran = false;  // an attempt of it started here (a stop leaves a waiting retry counted)
    bool shown = false;
  };
  enum class Later : std::uint8_t { retry, wait };
  /// What a settlement of a file's job leads to once Redis has it.
  enum class Then : std::uint8_t { run, retry, finish_done, finish_failed, renumber, nothing };
  /// Told when a settlement is written, then does what follows from it (Then).
  struct Hook;
  /// A file's end made on disk once its settlement is written.
  struct Move {
    std::uint64_t ticket = 0;
    Then then = Then::nothing;
    SpoolDir::Claim claim;
    std::string error_json;  // finish_failed
    std::string result;      // filled by the thread: an error, empty on success
    store::Settled how = store::Settled::done;
    store::OnSettled* done = nullptr;
  };

  async::Task<void> watcher();
  async::Task<void> producer();
  /// The producer's start: the directory opened (retried every 5 s), watched, recovered.
  async::Task<void> begin();
  /// Opens the directory off the loop: the error, or "" once open.
  async::Task<std::string> open_dir();
  async::Task<void> feeder();
  async::Task<void> mover();
  async::Task<void> claim_batch(std::size_t n);
  /// The whole directory (""), or the subfolder `sub` (relative) and what is below it.
  async::Task<void> rescan(std::string sub);
  void on_event(const inotify_event& ev);
  void forget_watch(int wd);
  void record_watches(const std::vector<std::pair<int, std::string>>& watched);
  async::Task<void> recover(bool own);
  async::Task<void> run_due();
  void adopt(SpoolDir::Claim claim);
  /// Its id claimed before it runs (again after a wait or a retry).
  void claim_id(std::uint64_t ticket);
  void push(std::uint64_t ticket, store::Settlement s, Then then, store::OnSettled* done,
            Millis delay = Millis(0), std::string error_json = "");
  void on_settled(std::uint64_t ticket, Then then, store::Settled how, store::OnSettled* done,
                  Millis delay, std::string error_json);
  store::Settlement settlement_of(const File& f, store::Settlement::Op op) const;
  void one_settled();
  /// `created`: known only from IN_CREATE (a hard link, a symlink, or a file still being
  /// written): taken only if SpoolDir::settled says so.
  void add_name(std::string name, bool created = false);
  std::size_t avail() const noexcept;
  void wake() { wake_.set(); }
  std::string error_json(const File& f, const std::string& error, job::ErrorKind kind) const;

  store::QueueStore& store_;
  std::vector<store::Settler*> settlers_;
  const store::Settings& s_;  // the queue's, retuned in place by a reload
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
  async::Every watch_errors_{std::chrono::seconds(30)};  // the watch failing: said so this often
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
  async::Event wake_, ready_ev_, moves_ev_, progress_;
  std::vector<Move> moves_;
  std::list<Hook> hooks_;      // one per settlement not answered yet
  std::size_t unsettled_ = 0;  // settlements sent and not answered, or moves not made
  bool taking_ = true;
  bool opened_ = false;
  async::JoinHandle<void> watch_task_, produce_task_, feed_task_, move_task_;
};

}  // namespace jq::sources
