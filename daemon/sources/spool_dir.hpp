// A spool directory on disk: scanning it, claiming files by rename, and every move a file makes
// until its end. Blocking file-system calls only, no loop: the spool source runs these on the
// thread pool, tests call them directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace jq::sources {

/// The layout inside a watched directory DIR (docs/spool.md):
///   DIR/<name>                          a file waiting
///   DIR/.jobqd/<owner>.lock             held (flock) while that daemon lives
///   DIR/.jobqd/<owner>/<jid>.<n>.<name> a file claimed by that daemon, at attempt n (0: none
///                                       ran, given back at a stop); a name too long for that
///                                       is kept in a folder: <owner>/<jid>.<n>/<name>
///   DIR/done/<name>                     succeeded (on_success: move)
///   DIR/failed/<name>, <name>.error.json failed for good, and why
/// `jid` is a fresh job id made at the claim: a claimed file keeps it through retries and crashes,
/// so a job's state in Redis is found under one id whoever runs it.
class SpoolDir {
 public:
  struct Options {
    std::string dir;
    std::string owner;  // this daemon's worker id
    std::string pattern = "*";
    std::vector<std::string> ignore;
    bool keep_done = false;
    bool recursive = false;  // subfolders too (not hidden ones, not done/ and failed/)
    std::uint64_t max_job_bytes = 1024 * 1024;
  };

  /// A claimed file.
  struct Claim {
    std::string jid;
    long long attempt = 0;  // in its name in the work folder
    std::string name;       // as it was in DIR (relative: `sub/name` from a subfolder)
    bool nested = false;    // in a folder of its own (a long name)
    /// Its JSON for a `*.json` file (read at the claim); empty otherwise, or when unreadable.
    std::string json;
    std::string invalid;  // why it cannot be a job (not a regular file, unreadable, too big)
    std::uint64_t size = 0;
  };

  struct Scan {
    std::vector<std::string> names;  // that may be taken now, at most the limit asked for
    std::vector<std::pair<int, std::string>> watched;  // watches added: wd, folder (relative)
    std::optional<std::string> watch_error;            // a watch that could not be added
    bool more = false;  // the limit was reached, or some were too fresh: scan again
    std::optional<std::string> error;
  };

  explicit SpoolDir(Options o);
  SpoolDir(const SpoolDir&) = delete;
  SpoolDir& operator=(const SpoolDir&) = delete;
  ~SpoolDir();  // lets go of the lock (the folder stays when it holds files)

  const Options& options() const noexcept { return o_; }

  /// Makes the work folder and takes this daemon's lock. Throws std::runtime_error saying what
  /// failed. Safe to call again after the directory came back.
  void open();
  /// Lets go of the lock, removing this daemon's folder if nothing is left in it.
  void close() noexcept;

  /// Whether a name (relative to DIR) is one to take (pattern, not hidden, not ignored).
  bool wanted(const std::string& name) const;
  /// Whether a subfolder (relative) is one to watch and scan: recursive, not hidden, not
  /// done/ or failed/ of DIR, not deeper than 32 levels.
  bool wanted_dir(const std::string& rel) const;
  /// Files waiting, at most `limit`; files changed less than `quiet_ms` ago are left for a later
  /// scan (`more` set), files still open for writing for the event their close makes.
  /// With `recursive`, subfolders too; `sub` (relative) scans that subfolder's tree only.
  /// `watch_fd` (an inotify descriptor, or -1): each subfolder is watched with `mask` before it
  /// is read, so that a file made in it is in the read or an event.
  Scan scan(std::size_t limit, std::int64_t quiet_ms, const std::string& sub = "",
            int watch_fd = -1, std::uint32_t mask = 0) const;

  /// Whether a file known only from its creation may be taken now: not a regular file (a link,
  /// a pipe: claimed to be marked invalid), or one with content that no writer holds open (a
  /// hard link). An empty regular file is left: it may be created and not open for writing yet.
  bool settled(const std::string& name) const;

  enum class Taken { claimed, gone, not_file, failed };
  struct ClaimResult {
    Taken how = Taken::gone;
    Claim claim;
    std::string error;  // failed: why (the file stays where it is)
  };
  /// Claims DIR/name for the job `jid` (attempt 1) by renaming it into this daemon's folder. A
  /// file that is gone (another daemon took it, it vanished) or is a directory is not claimed;
  /// anything else that is not a regular file is claimed and marked invalid.
  ClaimResult claim(const std::string& name, const std::string& jid) const;

  /// Files other daemons claimed and left behind when they died (their lock is free), moved into
  /// this daemon's folder, and with `own` those already in it. Also removes what a crash left
  /// half made.
  std::vector<Claim> recover(bool own) const;

  /// The path a handler gets (`{file}`).
  std::string path_of(const Claim& c) const;
  /// Where the file was dropped (DIR/name): what results and the log show for path_of.
  std::string dropped_path_of(const Claim& c) const { return o_.dir + "/" + c.name; }

  // The moves of a claimed file. Each returns an error message, empty on success.
  /// To attempt `to` (its entry in the work folder renamed): counted before the attempt runs.
  std::string renumber(Claim& c, long long to) const;
  /// Succeeded: deleted, or moved to done/.
  std::string finish_done(const Claim& c) const;
  /// Failed for good: moved to failed/ with `<name>.error.json` (the text given) beside it.
  std::string finish_failed(const Claim& c, const std::string& error_json) const;

  /// Reads a job file (bounded by max_job_bytes); fills json or invalid.
  void read_job(Claim& c) const;

 private:
  std::string owner_dir() const;
  std::string entry_of(const Claim& c) const;    // what is renamed from attempt to attempt
  std::string reason_tmp(const Claim& c) const;  // a failure's reason, before it is moved out
  std::string place_in(const std::string& sub, const std::string& name) const;
  static std::string find_file(const std::string& folder);
  static void remove_nested(const std::string& folder);

  Options o_;
  std::string work_;  // DIR/.jobqd
  int lock_fd_ = -1;
};

/// Whether a name ends in `.json` (such a file holds a whole job).
bool is_job_file(const std::string& name);

}  // namespace jq::sources
