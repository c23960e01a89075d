// The daemon's configuration: one YAML file, validated as a whole before anything uses it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "async/tls.hpp"
#include "config/names.hpp"
#include "config/units.hpp"

namespace jq::config {

using namespace std::chrono_literals;

/// One problem found in a config file: where (line and column from 1; 0 when it has no place in
/// the file, like a file that cannot be read) and what.
struct Diagnostic {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message;

  /// `file:line:column: message`, or `file: message` without a place.
  std::string text() const;
};

/// A config that cannot be used, with every problem the loader found in it (a compiler's way:
/// fixing one should not reveal the next), in the order of their places in the file. what() is
/// their texts, one a line.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<Diagnostic> problems);
  /// A single problem without a place: `file: message`.
  ConfigError(const std::string& file, const std::string& message);

  const std::vector<Diagnostic>& problems() const { return problems_; }

 private:
  std::vector<Diagnostic> problems_;
};

/// `file: N error(s)`, the line that closes a list of problems (--check-config, a start refused).
std::string count_line(const std::string& file, std::size_t errors);

struct DaemonSection {
  std::string state_dir = "/var/lib/jobqd";
  Millis lease = 30s;           // how long a dead daemon's jobs stay leased before others take them
  Millis shutdown_grace = 25s;  // SIGTERM: how long running jobs may finish
  std::string log_level = "info";
  std::string name;           // this daemon's name in worker ids and logs; default: the host name
  Millis log_summary = 1min;  // each queue's counts logged this often (0: never)
  // A queue with jobs pending and room for them that fetched none for this long is stalled:
  // logged, shown by /healthz, its connections rebuilt (0: never).
  Millis stall_after = 1min;
  // Jobs running at once over every queue of this daemon (0: no limit beside each queue's own
  // concurrency). When queues wait for one of these permits, queue_order says who gets it:
  // weighted (shares in proportion to each queue's weight) or strict (the highest weight first).
  std::uint64_t concurrency = 0;
  std::string queue_order = "weighted";
};

struct RedisSection {
  std::string url = "redis://127.0.0.1:6379/0";  // or rediss://, unix:///path, or `embedded`
  std::string key_prefix = "jobq";
  Millis connect_timeout = 5s;
  Millis command_timeout = 10s;                // a reply slower than this marks the connection dead
  std::string server_binary = "redis-server";  // for `embedded`
  // For `embedded`: a TCP port it also listens on, on loopback only, for clients that cannot use
  // the socket (0: the socket only).
  std::uint64_t embedded_port = 0;
  // The password kept out of the URL (and out of the config file): the first line of a file, or
  // an environment variable. redis_password() reads it.
  std::string password_file;
  std::string password_env;
  // The sentinels' own password (redis-sentinel://: what AUTH to them takes), kept likewise.
  std::string sentinel_password_file;
  std::string sentinel_password_env;
  // For rediss://: the CAs, client certificate and name to check (redis.tls); by default the
  // system's CAs and the URL's host. Always verified.
  async::TlsOptions tls;
  // Outcomes (and jobqctl's submissions) wait until this many replicas have them (WAIT), at most
  // wait_timeout, so that a failover does not lose them; 0: Redis' asynchronous replication.
  std::uint64_t wait_replicas = 0;
  Millis wait_timeout = 1s;
};

/// The Redis password from password_file or password_env, or "" when neither is set. Throws
/// std::runtime_error naming the file or variable when it cannot be read or is empty.
std::string redis_password(const RedisSection& r);
/// The sentinels' own password (sentinel_password_file or _env), "" when none; throws as above.
std::string sentinel_password(const RedisSection& r);

/// A secret kept in a file: its first line, blanks around it removed. Throws std::runtime_error
/// naming `key` and the file (and why) when it cannot be read or the line is empty.
std::string read_secret(const std::string& path, const std::string& key);

/// What a job's state hash shows (the contract's `state:`).
struct StateSection {
  /// An attempt's state says `active` once it has run this long (0: as it starts); one that ends
  /// sooner goes straight to its outcome in one write, which is most of what Redis does per job.
  Millis active_after = 100ms;
};

struct LoggingSection {
  bool json = false;  // format: json (one JSON object a line) or text
};

struct HttpSection {
  std::string listen = "127.0.0.1:9464";  // host:port, or empty (`off`): no HTTP
  std::string token_file;                 // required off loopback: `Authorization: Bearer`
  bool dashboard = true;                  // the page at / (the API under /api/ either way)
  bool read_only = false;                 // every /api/ action answers 403
};

enum class HandlerType { builtin, exec, http };

struct ExecLimits {
  std::optional<Millis> cpu;                   // RLIMIT_CPU
  std::optional<std::uint64_t> address_space;  // RLIMIT_AS, bytes
  std::optional<std::uint64_t> open_files;     // RLIMIT_NOFILE
};

struct HandlerConfig {
  std::string name;
  std::string origin;  // `file:line:column` of its definition, for errors found after parsing
  HandlerType type = HandlerType::builtin;
  std::optional<Millis> timeout;  // the default timeout of queues using this handler
  // builtin
  std::string builtin;  // noop, echo, sleep, fail
  // exec
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  std::string cwd;
  std::string user;
  std::string group;
  Millis kill_grace = 5s;
  std::uint64_t max_output = 1024 * 1024;  // head of stdout kept as the result
  std::uint64_t max_stderr = 64 * 1024;    // tail of stderr kept for the error
  std::vector<int> no_retry_exit_codes;
  ExecLimits limits;
  // http
  std::string url;
  std::map<std::string, std::string> headers;            // literal values
  std::map<std::string, std::string> headers_from_env;   // header -> environment variable
  std::map<std::string, std::string> headers_from_file;  // header -> file holding the value
  std::string body = "payload";                          // payload | job
  Millis connect_timeout = 5s;
  std::string ca_file;
  bool verify_tls = true;
  std::uint64_t max_response = 1024 * 1024;
  std::uint64_t pool_size = 8;  // keep-alive connections per host
};

/// How long finished jobs' state is kept (`retain:` in a queue).
struct Retain {
  Millis succeeded = 24h;   // 0: deleted at once, as the job succeeds
  Millis failed = 7 * 24h;  // dead jobs, with their JSON for `jobqctl dead retry`
  // A final state keeps the job's payload (its first 4 KiB), so that a search finds it by that
  // once the job's JSON has left Redis. Off: no byte more per job.
  bool payload = false;
};

struct SourceConfig {
  enum class Kind { redis, spool } kind = Kind::redis;
  // spool
  std::string dir;
  std::string pattern = "*";  // glob on the file name
  // Names of files still being written (never taken), besides dotfiles, which always are.
  std::vector<std::string> ignore = {"*.tmp", "*.part", "*.partial", "*.crdownload", "*.swp", "*~"};
  bool keep_done = false;  // on_success: move (to done/) or delete (the default)
  // A file a scan finds (at start, after the kernel's event queue overflowed) rather than an
  // event is taken once it has not changed for this long (besides not being open for writing,
  // which a scan checks where the kernel lets it).
  Millis quiet = 1s;
  // Subdirectories too (not hidden ones, nor DIR's own done/ and failed/), each watched as it
  // appears and scanned right after its watch is added.
  bool recursive = false;
};

/// The most shards a queue may be spread over (store::kMaxShards, checked where both are seen).
inline constexpr std::uint64_t kMaxShards = 64;

/// `unique:` in a queue (docs/unique.md): while a job holds its unique key's lock, another
/// submission of the key is answered with its id and not enqueued (lock), replaces it while it
/// waits (debounce), or is refused for the lock's whole window (throttle).
struct UniqueConfig {
  std::string key;                // where a job's key comes from: `id` or `payload.a.b`; "": none
  std::vector<std::string> path;  // `key` at its dots ({"id"}, {"payload", "a", "b"})
  Millis hold = 1h;               // `for`: the longest a lock lasts, whatever its job does
  std::vector<std::string> during = {"queued", "running"};  // `while` (mode lock only)
  std::string mode = "lock";                                // lock | debounce | throttle
};

/// A queue's order across its jobs' priority levels (`priorities:`, docs/priorities.md).
struct PrioritiesConfig {
  std::string order = "weighted";  // strict | weighted
  // Weights (shares of the jobs taken while levels compete; strict: ignored).
  std::uint64_t high = 6;
  std::uint64_t normal = 3;
  std::uint64_t low = 1;
  Millis aging = 1min;  // a level waiting untaken this long goes first (0: never)
};

/// `group_by` in a queue (docs/groups.md): jobs sorted into groups by a payload field, taken
/// round robin across groups (first in, first out within one), each group within a rate and a
/// concurrency of its own, across every daemon.
struct GroupByConfig {
  std::string key;                // `payload.FIELD`; "": the queue has no groups
  std::vector<std::string> path;  // `key` at its dots
  std::string rate;               // per group, as written; "": none
  double rate_per_s = 0;
  std::uint64_t rate_burst = 0;   // 0: a second's worth, at least 1
  std::uint64_t concurrency = 0;  // a group's jobs held at once by all daemons; 0: no limit
};

struct QueueConfig {
  std::string name;
  std::string handler;
  std::uint64_t concurrency = 10;
  // Its claim on the daemon's permits (daemon.concurrency) when queues compete for them.
  std::uint64_t weight = 1;
  std::uint64_t buffer = 100;
  // Hash tags the queue is spread over (store/shards.hpp): on a cluster, that many primaries.
  std::uint64_t shards = 1;
  // Jobs leased per Redis round trip at most. Each costs Redis ~25 us of a script no other
  // client's command can interleave with: 50 keeps a fetch near a millisecond (bench/README.md).
  std::uint64_t fetch_batch = 25;
  std::uint64_t max_attempts = 5;  // default and cap of a job's max_attempts
  Millis timeout = 30s;            // default of a job's timeout (else the handler's, else 30s)
  Millis max_timeout = 0ms;        // cap of a job's timeout_ms; 0: the queue's timeout
  Millis retry_base = 1s;          // first retry delay; doubles per attempt, with jitter
  Millis retry_max = 10min;
  Retain retain;
  std::uint64_t dead_max = 10000;  // dead jobs kept per queue (oldest dropped first)
  std::uint64_t max_job_bytes = 1024 * 1024;
  Millis delayed_poll = 500ms;  // how often due delayed jobs are looked for
  // How long a job that waits for others (`after`, docs/workflows.md) waits for a dependency
  // nobody has submitted, from its arrival; then that dependency counts as failed.
  Millis after_timeout = 24h;
  // `rate: 100/s` (also /m, /h): jobs started per second across every daemon, a token bucket in
  // Redis (0: no limit); rate_burst tokens at most (0: a second's worth, at least 1).
  std::string rate;  // as written; "": none
  double rate_per_s = 0;
  std::uint64_t rate_burst = 0;
  // Jobs held at once by every daemon together (running, or buffered to run next), counted in
  // Redis at each fetch (0: no limit beside each daemon's concurrency).
  std::uint64_t global_concurrency = 0;
  UniqueConfig unique;
  bool unique_set = false;  // a `unique:` map was written
  PrioritiesConfig priorities;
  bool priorities_set = false;  // `priorities:` written: the queue orders its levels
  GroupByConfig group_by;
  std::vector<SourceConfig> sources;
  bool timeout_set = false;  // set explicitly (else inherited from the handler)
};

/// A periodic job (`schedules:`, docs/schedules.md): each tick of `cron` in `timezone` enqueues
/// `job` into `queue`, once across every daemon. jobqctl's schedules (stored in Redis) take the
/// same form.
struct ScheduleConfig {
  std::string name;
  std::string origin;    // `file:line:column` of its definition
  std::string cron;      // as written: 5 fields, @hourly-style, or @every DURATION (cron.hpp)
  std::string timezone;  // an IANA zone; "": UTC
  std::string queue;
  std::string job =
      R"({"payload":{}})";       // the job each tick enqueues, as JSON (no id: each tick's)
  std::string catch_up = "one";  // ticks missed while no daemon ran: skip, one or all
  Millis jitter = 0ms;           // each tick's job runs up to this much later, at random
};

struct Config {
  std::string path;  // the file it came from
  DaemonSection daemon;
  RedisSection redis;
  HttpSection http;
  LoggingSection logging;
  StateSection state;
  std::map<std::string, HandlerConfig> handlers;
  std::vector<QueueConfig> queues;
  std::vector<ScheduleConfig> schedules;

  const QueueConfig* queue(const std::string& name) const;
};

/// Reads and validates a config file. Throws ConfigError. Relative paths in it (state_dir,
/// spool dirs, exec cwd, files) are resolved against the file's directory.
Config load_file(const std::string& path);

/// Same, from text (`origin` names it in errors; `base_dir` resolves relative paths).
Config parse(const std::string& text, const std::string& origin, const std::string& base_dir);

/// One row of the schema, for docs and tests: `section.key` (`handlers.*.url`), its type, whether
/// a reload may change it, and its default as --print-config writes it ("" when it has none).
struct KeyInfo {
  std::string key;
  std::string type;
  bool reloadable = false;
  std::string default_value;
};
std::vector<KeyInfo> schema();

/// Names of every key the schema knows, as `section.key` (docs and tests use it).
std::vector<std::string> schema_keys();

/// The effective config as YAML: every key, set or defaulted; passwords in URLs and exec
/// environment values named like secrets (`*TOKEN*`, `*PASSWORD*`...) shown as ***.
std::string print(const Config& cfg);

/// Keys that a reload cannot change on a running daemon and that differ from `a` to `b`, as
/// `section.key` (docs/config.md, "Reloading").
std::vector<std::string> restart_changes(const Config& a, const Config& b);

/// Whether a reload leaves a handler or a spool source as it is (else it is built anew).
bool same(const HandlerConfig& a, const HandlerConfig& b);
bool same(const SourceConfig& a, const SourceConfig& b);

/// Whether `host` (of `host:port`; an IPv6 address bare or in brackets) is this machine's
/// loopback and nothing else: an IPv4 address in 127.0.0.0/8 as inet_pton reads one (four decimal
/// parts: not `127.1`, not `0x7f.1`), ::1, or the name localhost. Every decision to serve without
/// a token goes through it: a name merely starting with `127.` (127.attacker.example) resolves to
/// wherever its owner wants.
bool is_loopback_host(const std::string& host);

/// The host part of `host:port` (the brackets of an IPv6 address kept).
std::string listen_host(const std::string& listen);

}  // namespace jq::config
