// Job parsing: nlohmann-json for the syntax, then each contract field with a precise message.
#include "job/job.hpp"

#include "config/names.hpp"
#include "job/id.hpp"
#include "job/text.hpp"

#include <cctype>

namespace jq::job {
namespace {

const char* type_name(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "an integer";
    case nlohmann::json::value_t::number_float:
      return "a number";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::object:
      return "an object";
    default:
      return "a value";
  }
}

// A positive integer field, or an error naming the field.
std::optional<std::string> positive(const nlohmann::json& obj, const char* field,
                                    std::optional<std::uint64_t>& out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned() || (it->is_number_integer() && it->get<std::int64_t>() > 0)) {
    std::uint64_t v = it->get<std::uint64_t>();
    if (v == 0) return std::string("field ") + field + " must be a positive integer, got 0";
    out = v;
    return std::nullopt;
  }
  if (it->is_number_integer()) {
    return std::string("field ") + field + " must be a positive integer, got " + it->dump();
  }
  return std::string("field ") + field + " must be a positive integer, got " + type_name(*it);
}

// A submitter's string quoted in an error: short, and valid UTF-8 whatever it held.
std::string clip(std::string_view s, std::size_t n = 40) {
  return to_utf8(clip_utf8(s, n));
}

}  // namespace

const char* dependency_policy_name(DependencyPolicy p) noexcept {
  switch (p) {
    case DependencyPolicy::run:
      return "run";
    case DependencyPolicy::skip:
      return "skip";
    case DependencyPolicy::fail:
      break;
  }
  return "fail";
}

std::optional<Dependency> dependency_of(std::string_view ref, std::string& error) {
  Dependency d;
  const auto slash = ref.find('/');
  std::string_view id = ref;
  if (slash != std::string_view::npos) {
    const auto queue = ref.substr(0, slash);
    id = ref.substr(slash + 1);
    if (!config::valid_name(queue)) {
      error = "queue '" + clip(queue) + "' in '" + clip(ref) +
              "' must be 1-64 characters of A-Z a-z 0-9 _ . -";
      return std::nullopt;
    }
    d.queue = std::string(queue);
  }
  if (!valid_id(id)) {
    error = "'" + clip(ref) + "' is not a job id (ID or QUEUE/ID; an id is 1-128 characters of " +
            "[A-Za-z0-9_.:-])";
    return std::nullopt;
  }
  d.id = std::string(id);
  return d;
}

std::optional<std::string> read_dependencies(const nlohmann::json& doc, const Rules& rules,
                                             const std::string& own_id, Job& job, bool marked) {
  if (auto it = doc.find("on_dependency_failure"); it != doc.end() && !it->is_null()) {
    bool known = false;
    if (it->is_string()) {
      for (auto p : {DependencyPolicy::fail, DependencyPolicy::run, DependencyPolicy::skip}) {
        if (it->get_ref<const std::string&>() == dependency_policy_name(p)) {
          job.on_dependency_failure = p;
          known = true;
        }
      }
    }
    if (!known) {
      return "field on_dependency_failure must be \"fail\", \"run\" or \"skip\", got " +
             (it->is_string() ? "'" + clip(it->get_ref<const std::string&>()) + "'"
                              : std::string(type_name(*it)));
    }
  }
  auto it = doc.find("after");
  if (it == doc.end() || it->is_null()) return std::nullopt;
  if (!it->is_array()) {
    return std::string("field after must be a list of job ids (ID or QUEUE/ID), got ") +
           type_name(*it);
  }
  if (it->size() > kMaxDependencies) {
    return "field after names " + std::to_string(it->size()) + " jobs, over the most a job may " +
           "wait for (" + std::to_string(kMaxDependencies) + ")";
  }
  std::set<std::string> seen;
  job.after.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& v = (*it)[i];
    const std::string at = "field after[" + std::to_string(i) + "]";
    if (!v.is_string()) return at + " must be a job id (ID or QUEUE/ID), got " + type_name(v);
    std::string error;
    auto d = dependency_of(v.get_ref<const std::string&>(), error);
    if (!d) return at + ": " + error;
    if (!rules.queue.empty() && d->queue == rules.queue) d->queue.clear();
    if (d->queue.empty() && !own_id.empty() && d->id == own_id) {
      return at + ": a job cannot wait for itself ('" + clip(d->id) + "')";
    }
    if (!seen.insert(d->ref()).second) return at + ": '" + clip(d->ref()) + "' is named twice";
    job.after.push_back(std::move(*d));
  }
  // jobqd adds the dependencies' outcomes under this name when it releases the job (its copy then
  // carries jobqd's marker); a submitter cannot bring them.
  if (auto d = doc.find("dependencies"); !job.after.empty() && d != doc.end()) {
    if (marked && d->is_array()) {
      job.dependencies = d->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return std::nullopt;
    }
    return std::string(
        "field dependencies: jobqd writes it for a job with after (the outcomes of what it waited "
        "for); a job that waits cannot bring its own");
  }
  return std::nullopt;
}

std::string leading_id(std::string_view raw) {
  // Only the object's first key is surely the job's own "id" without parsing: a later one could
  // sit inside the payload of a job that does not parse.
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < raw.size() &&
           (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r')) {
      ++i;
    }
  };
  auto expect = [&](std::string_view s) {
    skip_space();
    if (raw.substr(i, s.size()) != s) return false;
    i += s.size();
    return true;
  };
  if (!expect("{") || !expect("\"id\"") || !expect(":") || !expect("\"")) return "";
  std::size_t end = raw.find('"', i);
  if (end == std::string_view::npos) return "";
  std::string_view id = raw.substr(i, end - i);
  return valid_id(id) ? std::string(id) : "";
}

std::string with_id(std::string_view raw, const std::string& id) {
  std::size_t open = raw.find('{');
  std::size_t close = raw.rfind('}');
  bool empty = raw.find_first_not_of(" \t\r\n", open + 1) == close;
  std::string out;
  out.reserve(raw.size() + id.size() + 10);
  out.append(raw.substr(0, close));
  out.append(empty ? "\"id\":\"" : ",\"id\":\"").append(id).append("\"");
  out.append(raw.substr(close));
  return out;
}

std::size_t assigned_id_bytes(std::string_view raw) {
  constexpr std::string_view head = ",\"id\":\"";
  constexpr std::size_t kUlid = 26;
  constexpr std::size_t n = head.size() + kUlid + 2;  // ,"id":"<ULID>"}
  while (!raw.empty() &&
         (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\r' || raw.back() == '\t')) {
    raw.remove_suffix(1);
  }
  if (raw.size() < n || raw.substr(raw.size() - n, head.size()) != head) return 0;
  if (raw.substr(raw.size() - 2) != "\"}") return 0;
  std::string_view id = raw.substr(raw.size() - n + head.size(), kUlid);
  for (char c : id) {
    if (!std::isdigit(static_cast<unsigned char>(c)) &&
        !std::isupper(static_cast<unsigned char>(c)))
      return 0;
  }
  return n - 1;  // the closing brace was the submitter's
}

namespace {

bool json_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// One past the closing quote of the string that opens at raw[i]; npos when it is not closed.
std::size_t string_end(std::string_view raw, std::size_t i) {
  for (++i; i < raw.size(); ++i) {
    if (raw[i] == '\\') {
      ++i;
    } else if (raw[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// One past the value that starts at raw[i] (a string, an object or array whatever it holds, or
// a scalar up to the next delimiter); npos when it runs off the end.
std::size_t value_end(std::string_view raw, std::size_t i) {
  constexpr auto npos = std::string_view::npos;
  if (raw[i] == '"') return string_end(raw, i);
  if (raw[i] == '{' || raw[i] == '[') {
    std::size_t depth = 0;
    for (; i < raw.size(); ++i) {
      const char c = raw[i];
      if (c == '"') {
        const std::size_t end = string_end(raw, i);
        if (end == npos) return npos;
        i = end - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
    }
    return npos;
  }
  while (i < raw.size() && raw[i] != ',' && raw[i] != '}' && raw[i] != ']' && !json_space(raw[i]))
    ++i;
  return i;
}

}  // namespace

std::optional<std::string_view> payload_text(std::string_view raw) {
  return field_text(raw, "payload");
}

Priority priority_of_text(std::string_view raw) {
  const auto v = field_text(raw, "priority");
  if (!v || v->size() < 2 || v->front() != '"' || v->back() != '"') return Priority::normal;
  if (v->find('\\') != std::string_view::npos) {
    // "h\u0069gh" is high too (the parser reads it so): decoded, rarely.
    const auto decoded = nlohmann::json::parse(*v, nullptr, false);
    if (!decoded.is_string()) return Priority::normal;
    return priority_named(decoded.get_ref<const std::string&>()).value_or(Priority::normal);
  }
  return priority_named(v->substr(1, v->size() - 2)).value_or(Priority::normal);
}

std::optional<std::string_view> field_text(std::string_view raw, std::string_view name) {
  std::size_t i = 0;
  const auto skip_space = [&] {
    while (i < raw.size() && json_space(raw[i])) ++i;
  };
  skip_space();
  if (i == raw.size() || raw[i] != '{') return std::nullopt;
  ++i;
  for (;;) {
    skip_space();
    if (i == raw.size() || raw[i] != '"') return std::nullopt;
    const std::size_t key_end = string_end(raw, i);
    if (key_end == std::string_view::npos) return std::nullopt;
    const std::string_view key = raw.substr(i + 1, key_end - i - 2);
    bool payload = key == name;
    if (!payload && key.find('\\') != std::string_view::npos) {
      // "p\u0061yload" is payload too (the parser read it so): decoded, rarely.
      const auto decoded = nlohmann::json::parse(raw.substr(i, key_end - i), nullptr, false);
      payload = decoded.is_string() && decoded.get_ref<const std::string&>() == name;
    }
    i = key_end;
    skip_space();
    if (i == raw.size() || raw[i] != ':') return std::nullopt;
    ++i;
    skip_space();
    if (i == raw.size()) return std::nullopt;
    const std::size_t end = value_end(raw, i);
    if (end == std::string_view::npos || end == i) return std::nullopt;
    if (payload) return raw.substr(i, end - i);
    i = end;
    skip_space();
    if (i == raw.size() || raw[i] != ',') return std::nullopt;
    ++i;
  }
}

namespace {

// The job's handler into `out`: the one it names, which the config must define, or the queue's.
std::optional<std::string> handler_of(const nlohmann::json& doc, const Rules& rules,
                                      std::string& out) {
  auto h = doc.find("handler");
  if (h == doc.end() || h->is_null()) {
    out = rules.default_handler;
    return std::nullopt;
  }
  if (!h->is_string()) return std::string("field handler must be a string, got ") + type_name(*h);
  out = h->get<std::string>();
  if (!rules.handlers || !rules.handlers->count(out)) {
    std::string names;
    if (rules.handlers) {
      for (const auto& n : *rules.handlers) names += (names.empty() ? "" : ", ") + n;
    }
    return "unknown handler '" + clip(out) + "' (configured: " + names + ")";
  }
  return std::nullopt;
}

// The value at payload.a.b: each step into an object; nullptr when one is missing anywhere.
const nlohmann::json* field_at(const nlohmann::json& doc, const std::vector<std::string>& path) {
  const nlohmann::json* at = &doc;
  for (const auto& step : path) {
    if (!at->is_object()) return nullptr;
    auto it = at->find(step);
    if (it == at->end()) return nullptr;
    at = &*it;
  }
  return at;
}

// The rule's path as written in the config: `payload.a.b`, or `id`.
std::string path_text(const std::vector<std::string>& path) {
  std::string out;
  for (const auto& p : path) out += (out.empty() ? "" : ".") + p;
  return out;
}

}  // namespace

std::string unique_key_of(const nlohmann::json& doc, const std::string& id, const Rules& rules,
                          std::string& error) {
  const auto bounded = [&error](std::string key, const std::string& what) -> std::string {
    if (key.empty() || key.size() > kMaxUniqueKey) {
      error = what + " must be 1-" + std::to_string(kMaxUniqueKey) + " bytes, got " +
              std::to_string(key.size());
      return "";
    }
    return key;
  };
  if (auto own = doc.find("unique_key"); own != doc.end() && !own->is_null()) {
    if (!own->is_string()) {
      error = std::string("field unique_key must be a string, got ") + type_name(*own);
      return "";
    }
    return bounded(own->get<std::string>(), "field unique_key");
  }
  const auto& from = rules.unique_from;
  if (from.empty()) return "";
  if (from.front() == "id") return id;
  const nlohmann::json* at = field_at(doc, from);
  if (!at) return "";
  const std::string what = "the unique key " + path_text(from) + " (the queue's unique.key)";
  if (at->is_null()) return "";
  if (at->is_string()) return bounded(at->get<std::string>(), what);
  if (at->is_number() || at->is_boolean()) return bounded(at->dump(), what);
  error = what + " must be a string or a number, got " + type_name(*at);
  return "";
}

const char* priority_name(Priority p) noexcept {
  switch (p) {
    case Priority::high:
      return "high";
    case Priority::low:
      return "low";
    case Priority::normal:
      break;
  }
  return "normal";
}

std::optional<Priority> priority_named(std::string_view name) noexcept {
  for (Priority p : {Priority::high, Priority::normal, Priority::low}) {
    if (name == priority_name(p)) return p;
  }
  return std::nullopt;
}

std::string group_of(std::string_view raw, const std::vector<std::string>& path) {
  // Not parse(): a job is sorted before it is read, and any text gets a group (an invalid job
  // goes dead when its group's turn comes).
  const auto doc = nlohmann::json::parse(raw.begin(), raw.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return kDefaultGroup;
  const nlohmann::json* at = field_at(doc, path);
  std::string g;
  if (at && at->is_string()) g = at->get<std::string>();
  if (at && (at->is_number() || at->is_boolean())) g = at->dump();
  if (g.empty() || g.size() > kMaxUniqueKey) return kDefaultGroup;
  return g;
}

std::variant<Job, Invalid> parse(std::string_view raw, const Rules& rules,
                                 std::string_view assign) {
  // The limit is on the job as submitted: an id jobqd added to a job (a retry) does not count.
  if (raw.size() > rules.max_bytes && raw.size() - assigned_id_bytes(raw) > rules.max_bytes) {
    return Invalid{"job is " + std::to_string(raw.size()) + " bytes, over max_job_bytes (" +
                       std::to_string(rules.max_bytes) + ")",
                   ""};
  }
  auto parsed = parse_json(raw);
  if (auto* why = std::get_if<std::string>(&parsed))
    return Invalid{std::move(*why), leading_id(raw)};
  nlohmann::json& doc = std::get<nlohmann::json>(parsed);
  if (!doc.is_object()) {
    return Invalid{
        std::string("a job must be a JSON object with a payload field, got ") + type_name(doc), ""};
  }
  Invalid bad{"", ""};
  auto id_it = doc.find("id");
  if (id_it != doc.end() && !id_it->is_null()) {
    if (!id_it->is_string()) {
      return Invalid{std::string("field id must be a string, got ") + type_name(*id_it), ""};
    }
    const auto& s = id_it->get_ref<const std::string&>();
    if (!valid_id(s)) {
      return Invalid{"field id '" + clip(s) + "' must be 1-128 characters of [A-Za-z0-9_.:-]", ""};
    }
    bad.id = s;
  }
  if (doc.find("payload") == doc.end()) {
    bad.error =
        "missing field payload (a job is {\"payload\": ...} plus optional id, handler, "
        "timeout_ms, max_attempts)";
    return bad;
  }
  Job job;
  if (auto e = read_dependencies(doc, rules, bad.id, job, !assign.empty())) {
    bad.error = *e;
    return bad;
  }
  // The protocol that holds a job until its dependencies are final is not in this version
  // (docs/workflows.md): a job that asks for it must not run as if it had none.
  if (!job.after.empty() && !rules.holds_dependencies) {
    bad.error =
        "field after: jobs that wait for other jobs are not in this version of jobqd yet "
        "(docs/workflows.md)";
    return bad;
  }
  if (auto e = handler_of(doc, rules, job.handler)) {
    bad.error = *e;
    return bad;
  }
  if (auto e = positive(doc, "timeout_ms", job.timeout_ms)) {
    bad.error = *e;
    return bad;
  }
  if (auto e = positive(doc, "max_attempts", job.max_attempts)) {
    bad.error = *e;
    return bad;
  }
  if (auto it = doc.find("priority"); it != doc.end() && !it->is_null()) {
    const auto level =
        it->is_string() ? priority_named(it->get_ref<const std::string&>()) : std::nullopt;
    if (!level) {
      bad.error = "field priority must be \"high\", \"normal\" or \"low\", got " +
                  (it->is_string() ? "'" + clip(it->get_ref<const std::string&>()) + "'"
                                   : std::string(type_name(*it)));
      return bad;
    }
    job.priority = *level;
  }
  {
    // Derived from the job's own id only: an id jobqd gives is unique already.
    std::string error;
    job.unique_key = unique_key_of(doc, bad.id, rules, error);
    if (!error.empty()) {
      bad.error = std::move(error);
      return bad;
    }
  }
  if (bad.id.empty()) {
    job.id = assign.empty() ? new_id() : std::string(assign);
    job.id_assigned = true;
    if (id_it != doc.end()) {
      // `"id": null` is no id: the assigned one takes its place (appended, it would be the same
      // key twice, which no reader may be asked to settle).
      *id_it = job.id;
      job.raw = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      job.raw = with_id(raw, job.id);
    }
  } else {
    job.id = std::move(bad.id);
    job.raw = std::string(raw);
  }
  job.payload = std::move(doc["payload"]);
  return job;
}

}  // namespace jq::job
