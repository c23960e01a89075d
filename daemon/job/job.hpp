// A job as the contract defines it: parsed from its JSON, validated, with a clear error if not.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace jq::job {

/// What a job may name and how large it may be, from the queue's config.
struct Rules {
  std::string default_handler;
  const std::set<std::string>* handlers = nullptr;  // configured handler names
  std::uint64_t max_bytes = 1024 * 1024;
  /// Where a job's unique key comes from when it brings none of its own (the queue's
  /// `unique: {key: ...}`): {"id"}, or {"payload", "a", "b"} for payload.a.b; empty: nowhere.
  std::vector<std::string> unique_from;
  /// The queue the job is for: `after` entries naming it (`QUEUE/ID`) are read as its own ids.
  std::string queue;
  /// Whoever reads the job holds it until what it waits for is final (a flow file's reader):
  /// otherwise a job with `after` is refused, never run as if it had none (docs/workflows.md).
  bool holds_dependencies = false;
};

/// A job's priority within its queue (`"priority"`; docs/priorities.md): each level waits in a
/// list of its own, and a queue that orders them takes from them by its `priorities:` config.
enum class Priority : std::uint8_t { high, normal, low };
inline constexpr std::size_t kPriorities = 3;
/// As the job and the config write it.
const char* priority_name(Priority p) noexcept;
/// `high`, `normal` or `low`; nullopt for anything else.
std::optional<Priority> priority_named(std::string_view name) noexcept;

/// What a job that waits for others does when one of them ended `failed` or `cancelled`
/// (`"on_dependency_failure"`, docs/workflows.md): end failed, run anyway, or end cancelled.
enum class DependencyPolicy : std::uint8_t { fail, run, skip };
const char* dependency_policy_name(DependencyPolicy p) noexcept;

/// One job a job waits for (`"after"`): an id in the job's own queue (`queue` empty) or another's
/// (`QUEUE/ID`).
struct Dependency {
  std::string queue;
  std::string id;
  /// As `after` writes it: `ID` or `QUEUE/ID`.
  std::string ref() const { return queue.empty() ? id : queue + "/" + id; }
  bool operator==(const Dependency&) const = default;
};
/// The most jobs one job may wait for (a fan-in of this many reads all their outcomes).
inline constexpr std::size_t kMaxDependencies = 10000;
/// `ID` or `QUEUE/ID` as one entry of `after` reads; nullopt (and `error` set) when it is neither.
std::optional<Dependency> dependency_of(std::string_view ref, std::string& error);

/// A unique key's length bounds, in bytes (it becomes part of a Redis key).
inline constexpr std::size_t kMaxUniqueKey = 256;

struct Job {
  std::string id;
  bool id_assigned = false;  // the submitter gave none: jobqd made it up
  std::string handler;
  std::optional<std::uint64_t> timeout_ms;
  std::optional<std::uint64_t> max_attempts;
  nlohmann::json payload;
  /// Its unique key (its own `unique_key`, else the one the queue derives from it); "" for none.
  std::string unique_key;
  Priority priority = Priority::normal;
  /// The jobs it waits for (`after`), in the order given; empty: it runs when its turn comes.
  std::vector<Dependency> after;
  DependencyPolicy on_dependency_failure = DependencyPolicy::fail;
  /// Once what it waited for is final: their outcomes as jobqd added them to its copy (the JSON
  /// text of the `dependencies` list, in `after`'s order); empty until then.
  std::string dependencies;
  /// The job's JSON exactly as submitted; with an assigned id, the same text with `,"id":"..."`
  /// added last (so that it wins over an `"id": null` before it, for nlohmann and Lua's cjson
  /// alike), and every later copy (a retry, a recovered job) carries the id.
  std::string raw;
};

/// Why a job is invalid, for its dead entry: what is wrong and where.
struct Invalid {
  std::string error;
  std::string id;  // the job's own id when it had a valid one, else empty
};

/// Parses and validates. Never throws for bad input: every problem becomes an Invalid. A job
/// that brings no id gets `assign` (the id jobqd gave it before), or a new one.
std::variant<Job, Invalid> parse(std::string_view raw, const Rules& rules,
                                 std::string_view assign = {});

/// A job object's `after` and `on_dependency_failure` into `job` (entries naming `rules.queue`
/// read as its own ids), or an error naming the field and the entry: not a list, an entry that is
/// no `ID` or `QUEUE/ID`, one named twice, the job itself (`own_id`), over kMaxDependencies, a
/// `dependencies` field beside `after` (jobqd writes it), an unknown policy. `marked`: the copy
/// carries jobqd's marker (a job released from waiting): its `dependencies` are jobqd's own, kept
/// in job.dependencies.
std::optional<std::string> read_dependencies(const nlohmann::json& doc, const Rules& rules,
                                             const std::string& own_id, Job& job,
                                             bool marked = false);

/// The unique key of a job object `doc` whose id is `id`: its own `unique_key` (a string of 1 to
/// kMaxUniqueKey bytes), else the one `rules.unique_from` derives (a string as it is, a number or
/// boolean as its JSON text; "" when the field is missing or null). Sets `error` (and returns "")
/// when either is not a key.
std::string unique_key_of(const nlohmann::json& doc, const std::string& id, const Rules& rules,
                          std::string& error);

/// The group of a job's text (a queue's `group_by`, docs/groups.md): the value at `path`
/// ({"payload", "tenant"}) as unique_key_of reads a key (a string as it is, a number or boolean as
/// its JSON text), or kDefaultGroup when the text is no JSON object, the field is missing, null,
/// of another type, empty or longer than kMaxUniqueKey bytes: every job has a group.
std::string group_of(std::string_view raw, const std::vector<std::string>& path);
inline constexpr const char* kDefaultGroup = "_";

/// The id of a job whose text may not parse, when it is the object's first key (only there is
/// it surely the job's own, not a payload's); "" otherwise or when it is not a valid id.
std::string leading_id(std::string_view raw);

/// Appends `,"id":"<id>"` just before the closing brace of an object's text.
std::string with_id(std::string_view raw, const std::string& id);

/// How many bytes with_id added to `raw` (0 if it does not end like that): what the size limit
/// does not count.
std::size_t assigned_id_bytes(std::string_view raw);

/// The payload's value in a job's text, exactly as written there (the text of the top-level
/// `payload` key's value, whatever its spacing and key order), or nullopt when `raw` is not an
/// object with one (or not JSON enough to tell). Linear and allocation-free but for a key
/// written with escapes; never throws, whatever `raw` holds.
std::optional<std::string_view> payload_text(std::string_view raw);
/// The same for any top-level key `name` (its first occurrence).
std::optional<std::string_view> field_text(std::string_view raw, std::string_view name);
/// A job text's priority as field_text reads it: normal unless it says "high" or "low" (a job
/// whose field is wrong is found invalid when it is parsed, at whatever level it waits).
Priority priority_of_text(std::string_view raw);

/// How much larger than max_job_bytes a job may be when fetched (the id with_id adds); the exact
/// limit is parse()'s.
inline constexpr std::size_t kAssignedIdAllowance = 40;

}  // namespace jq::job
