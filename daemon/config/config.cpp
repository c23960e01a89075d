// Config schema (one key table per section: name, type, reloadable, parser) and validation.
#include "config/config.hpp"

#include "config/command.hpp"
#include "config/cron.hpp"
#include "config/http_url.hpp"
#include "config/suggest.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <tuple>

namespace jq::config {
namespace {

namespace fs = std::filesystem;

// What the loader found so far. Problems are values collected here, not thrown: a bad value is
// reported, the member keeps what it had, and checking goes on with the next key, so that one
// run reports every problem (a compiler's way).
struct Found {
  std::vector<Diagnostic> problems;
  // Top-level sections written somewhere else (misspelled, or indented under another one):
  // what their absence would imply ("no queues", "handler 'x' is not defined") is not said too.
  std::set<std::string> sections_elsewhere;
  // Keys reported as indented under the wrong parent, as {where, key}: the level they belong
  // to is not also told it misses them.
  std::vector<std::pair<std::string, std::string>> misplaced;
};

struct Ctx {
  std::string origin;
  std::string base_dir;
  Found* found;  // shared by every copy
};

std::size_t problem_count(const Ctx& c) {
  return c.found->problems.size();
}

// Whether `key` was reported misplaced in `where` or below it (a missing `handler` that is
// there, one level too deep).
bool misplaced_within(const Ctx& c, const std::string& where, const std::string& key) {
  return std::any_of(c.found->misplaced.begin(), c.found->misplaced.end(), [&](const auto& m) {
    return m.second == key && m.first.rfind(where, 0) == 0 &&
           (m.first.size() == where.size() || m.first[where.size()] == '.' ||
            m.first[where.size()] == '[');
  });
}

void report_at(const Ctx& c, const YAML::Mark& m, const std::string& msg) {
  Diagnostic d;
  d.file = c.origin;
  if (!m.is_null()) {
    d.line = m.line + 1;
    d.column = m.column + 1;
  }
  d.message = msg;
  c.found->problems.push_back(std::move(d));
}
void report(const Ctx& c, const YAML::Node& at, const std::string& msg) {
  report_at(c, at.Mark(), msg);
}

// The value readers: nullopt (the problem reported) when the value is refused.
std::optional<std::string> scalar(const YAML::Node& n, const Ctx& c, const std::string& what) {
  if (!n.IsScalar()) {
    report(c, n, what + ": must be a single value, not a list or map");
    return std::nullopt;
  }
  return n.Scalar();
}

// One entry of a map, its name read.
struct Entry {
  std::string name;
  YAML::Node key;
  YAML::Node value;
};

// The entries of `map`, each name once. yaml-cpp keeps both entries of a key written twice and
// lookups see the first, so a repeated key would silently mean something: it is an error, naming
// both places, and only the first is checked further (the second would only repeat its errors or
// contradict it). A name that is not a single value is reported as `what` and left out.
std::vector<Entry> entries(const YAML::Node& map, const Ctx& c, const std::string& where,
                           const std::string& what) {
  std::vector<Entry> out;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : map) {
    auto name = scalar(kv.first, c, what);
    if (!name) continue;
    auto [it, fresh] = seen.emplace(*name, kv.first.Mark());
    if (!fresh) {
      report(c, kv.first,
             "duplicate key '" + *name + "' in " + where + " (first at line " +
                 std::to_string(it->second.line + 1) + ", column " +
                 std::to_string(it->second.column + 1) + ")");
      continue;
    }
    out.push_back({*name, kv.first, kv.second});
  }
  return out;
}

std::optional<Millis> as_duration(const YAML::Node& n, const Ctx& c, const std::string& key,
                                  Millis min = 0ms) {
  auto s = scalar(n, c, key);
  if (!s) return std::nullopt;
  auto d = parse_duration(*s);
  if (!d) {
    report(c, n, key + ": '" + *s + "' is not a duration (write it like 250ms, 30s, 5m or 1h)");
  } else if (*d < min) {
    report(c, n, key + ": must be at least " + format_duration(min));
    d.reset();
  }
  return d;
}

std::optional<std::uint64_t> as_count(const YAML::Node& n, const Ctx& c, const std::string& key,
                                      std::uint64_t min, std::uint64_t max) {
  auto text = scalar(n, c, key);
  if (!text) return std::nullopt;
  const std::string& s = *text;
  const std::string allowed =
      "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  const bool digits =
      !s.empty() && s.find_first_not_of("0123456789", s[0] == '-') == s.npos && s != "-";
  if (digits && (s[0] == '-' || ec == std::errc::result_out_of_range)) {
    report(c, n, key + ": " + s + " is out of range (" + allowed + ")");
  } else if (ec != std::errc() || end != s.data() + s.size()) {
    report(c, n, key + ": '" + s + "' is not " + allowed);
  } else if (v < min || v > max) {
    report(c, n, key + ": " + s + " is out of range (" + allowed + ")");
  } else {
    return v;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> as_size(const YAML::Node& n, const Ctx& c, const std::string& key,
                                     std::uint64_t min = 1) {
  auto s = scalar(n, c, key);
  if (!s) return std::nullopt;
  auto v = parse_size(*s);
  if (!v) {
    report(c, n, key + ": '" + *s + "' is not a size (bytes, or with KB, MB, KiB, MiB...)");
  } else if (*v < min) {
    report(c, n, key + ": must be at least " + std::to_string(min) + " bytes");
    v.reset();
  }
  return v;
}

std::optional<bool> as_bool(const YAML::Node& n, const Ctx& c, const std::string& key) {
  auto s = scalar(n, c, key);
  if (!s) return std::nullopt;
  if (*s == "true" || *s == "yes" || *s == "on") return true;
  if (*s == "false" || *s == "no" || *s == "off") return false;
  report(c, n, key + ": '" + *s + "' is not true or false");
  return std::nullopt;
}

std::optional<std::string> as_string(const YAML::Node& n, const Ctx& c, const std::string& key,
                                     bool allow_empty = false) {
  auto s = scalar(n, c, key);
  if (s && !allow_empty && s->empty()) {
    report(c, n, key + ": must not be empty");
    s.reset();
  }
  return s;
}

std::optional<std::string> as_path(const YAML::Node& n, const Ctx& c, const std::string& key) {
  auto s = as_string(n, c, key);
  if (!s) return std::nullopt;
  fs::path p = *s;
  if (p.is_relative()) p = fs::path(c.base_dir) / p;
  return p.lexically_normal().string();
}

std::optional<std::vector<std::string>> as_string_list(const YAML::Node& n, const Ctx& c,
                                                       const std::string& key) {
  if (!n.IsSequence()) {
    report(c, n, key + ": must be a list, like [\"/usr/bin/prog\", \"{file}\"]");
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (const auto& item : n) {
    auto s = scalar(item, c, key + " entries");
    ok = ok && s;
    if (s) out.push_back(*s);
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::map<std::string, std::string>> as_string_map(const YAML::Node& n, const Ctx& c,
                                                                const std::string& key) {
  if (!n.IsMap()) {
    report(c, n, key + ": must be a map of names to values");
    return std::nullopt;
  }
  const std::size_t before = problem_count(c);
  std::map<std::string, std::string> out;
  for (const auto& e : entries(n, c, key, key + " names")) {
    if (auto v = scalar(e.value, c, key + "." + e.name)) out[e.name] = *v;
  }
  if (problem_count(c) != before) return std::nullopt;
  return out;
}

// A rate (`100/s`, `30/m`, `1/h`): its text and jobs per second; {"", 0} for `off` (or 0).
std::optional<std::pair<std::string, double>> as_rate(const YAML::Node& n, const Ctx& c,
                                                      const std::string& key) {
  const auto v = as_string(n, c, key);
  if (!v) return std::nullopt;
  if (*v == "off" || *v == "0") return std::pair<std::string, double>{"", 0};
  const auto slash = v->find('/');
  double count = 0;
  const char* end = v->data() + (slash == std::string::npos ? v->size() : slash);
  const auto [ptr, ec] = std::from_chars(v->data(), end, count);
  const std::string unit = slash == std::string::npos ? "" : v->substr(slash + 1);
  const double per = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : 0;
  if (ec != std::errc() || ptr != end || !(count > 0) || per == 0 || count / per > 1e6 ||
      count / per < 1.0 / (24 * 3600)) {
    report(c, n,
           key + ": '" + *v +
               "' is not a rate: a number of jobs per s, m or h (100/s, 30/m, 1/h; at most "
               "1000000/s, at least 1/d), or off");
    return std::nullopt;
  }
  return std::pair<std::string, double>{*v, count / per};
}

// `payload.a.b` at its dots ({"payload", "a", "b"}); nullopt for anything else (a step empty).
std::optional<std::vector<std::string>> payload_path(const std::string& v) {
  std::vector<std::string> path;
  std::size_t at = 0;
  for (;;) {
    const auto dot = v.find('.', at);
    path.push_back(v.substr(at, dot == std::string::npos ? std::string::npos : dot - at));
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  const bool empty_step =
      std::any_of(path.begin(), path.end(), [](const std::string& p) { return p.empty(); });
  if (path.size() < 2 || path.front() != "payload" || empty_step) return std::nullopt;
  return path;
}

// Whether a SIGHUP may change a key on a running daemon, or it needs a restart.
enum class Reload { live, restart };
constexpr Reload live = Reload::live;
constexpr Reload restart = Reload::restart;

// One row of a section's key table (pgbouncer's bouncer_params): the key's name, its type, the
// member it sets (inside `parse`, with its range), whether a reload may change it, and `show`,
// which writes the member back as YAML (--print-config, and finding what a reload changed). The
// default is the member's initializer in config.hpp, nowhere else.
template <class S>
struct Key {
  const char* name;
  const char* type;
  Reload reload;
  std::function<void(S&, const YAML::Node&, const Ctx&, const std::string& key)> parse;
  std::function<YAML::Node(const S&)> show;
};

YAML::Node shown(Millis d) {
  return YAML::Node(format_duration(d));
}
YAML::Node shown(const std::string& s) {
  return YAML::Node(s);
}
YAML::Node shown(std::uint64_t v) {
  return YAML::Node(v);
}
YAML::Node shown(bool v) {
  return YAML::Node(v);
}
YAML::Node shown(const std::vector<std::string>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& s : v) n.push_back(s);
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}
YAML::Node shown(const std::map<std::string, std::string>& m) {
  YAML::Node n(YAML::NodeType::Map);
  for (const auto& [k, v] : m) n[k] = v;
  if (m.empty()) n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

// Rows for the common types: one line each, the range beside the member. A refused value
// leaves the member as it was.
template <class S>
Key<S> duration_key(const char* name, Millis S::*m, Millis min, Reload r) {
  return {name, "duration", r,
          [m, min](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_duration(n, c, k, min)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> count_key(const char* name, std::uint64_t S::*m, std::uint64_t min, std::uint64_t max,
                 Reload r) {
  return {name, "count", r,
          [m, min, max](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_count(n, c, k, min, max)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> size_key(const char* name, std::uint64_t S::*m, std::uint64_t min, Reload r) {
  return {name, "size", r,
          [m, min](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_size(n, c, k, min)) s.*m = *v;
          },
          [m](const S& s) { return shown(format_size(s.*m)); }};
}
template <class S>
Key<S> bool_key(const char* name, bool S::*m, Reload r) {
  return {name, "bool", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_bool(n, c, k)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> string_key(const char* name, std::string S::*m, Reload r) {
  return {name, "string", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_string(n, c, k)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> path_key(const char* name, std::string S::*m, Reload r) {
  return {name, "path", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_path(n, c, k)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> map_key(const char* name, std::map<std::string, std::string> S::*m, Reload r) {
  return {name, "map", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (auto v = as_string_map(n, c, k)) s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}
// One of a few words.
template <class S>
Key<S> choice_key(const char* name, const char* type, std::string S::*m,
                  std::vector<std::string> words, Reload r) {
  return {name, type, r,
          [m, words](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            const auto v = as_string(n, c, k);
            if (!v) return;
            if (std::find(words.begin(), words.end(), *v) == words.end()) {
              std::string list = words.size() > 2 ? "one of " : "";
              for (std::size_t i = 0; i < words.size(); ++i) {
                list += (i == 0 ? "" : words.size() > 2 ? ", " : " or ") + words[i];
              }
              report(c, n, k + ": '" + *v + "' is not " + list);
              return;
            }
            s.*m = *v;
          },
          [m](const S& s) { return shown(s.*m); }};
}

// For an unknown key `name` found in `where` ("" at the top level): when it is a key of another
// level (a top-level section, a queue or handler key...), what it is and that it sits in the
// wrong place, the usual cause being indentation. Defined with the tables, below.
std::optional<std::string> misplaced(const std::string& name, const std::string& where,
                                     const Ctx& c);

// Applies `table` to the map `n`: every key must be known; an unknown one is named as misplaced
// when it belongs elsewhere, else with a suggestion when one is close. Returns the keys that are
// there but refused (callers skip checks that would only repeat them: a refused `timeout` is
// not also "below max_timeout"). Known keys outside `only` (when given) are left to the caller.
template <class S, std::size_t N>
std::set<std::string> apply(S& s, const YAML::Node& n, const Ctx& c, const Key<S> (&table)[N],
                            const std::string& where, const std::set<std::string>* only = nullptr) {
  std::set<std::string> refused;
  if (n.IsNull()) return refused;
  if (!n.IsMap()) {
    report(c, n, where + " must be a map of settings");
    return refused;
  }
  for (const auto& e : entries(n, c, where, "a key in " + where)) {
    const Key<S>* found = nullptr;
    for (const auto& k : table) {
      if (e.name == k.name) found = &k;
    }
    if (!found) {
      if (auto why = misplaced(e.name, where, c)) {
        report(c, e.key, *why);
        continue;
      }
      std::string best;
      std::size_t best_d = 3;
      for (const auto& k : table) {
        std::size_t d = distance(e.name, k.name);
        if (d < best_d) {
          best_d = d;
          best = k.name;
        }
      }
      report(c, e.key,
             "unknown key '" + e.name + "' in " + where +
                 (best.empty() ? "" : " (did you mean '" + best + "'?)"));
      continue;
    }
    if (only && !only->count(e.name)) continue;
    const std::size_t before = problem_count(c);
    found->parse(s, e.value, c, where + "." + e.name);
    if (problem_count(c) != before) refused.insert(e.name);
  }
  return refused;
}

// The table as YAML: every key, set or defaulted (`only` narrows it to some keys).
template <class S, std::size_t N>
YAML::Node show_all(const S& s, const Key<S> (&table)[N],
                    const std::set<std::string>* only = nullptr) {
  YAML::Node out(YAML::NodeType::Map);
  for (const auto& k : table) {
    if (only && !only->count(k.name)) continue;
    // Unset, with no default (a password file, a handler's own timeout): left out, so that the
    // output reads back as a config.
    YAML::Node v = k.show(s);
    if (v.IsNull() || (v.IsScalar() && v.Scalar().empty())) continue;
    out[k.name] = v;
  }
  if (out.size() == 0) out.SetStyle(YAML::EmitterStyle::Flow);
  return out;
}

// Keys that need a restart whose value differs between `a` and `b`, as `where.key`.
template <class S, std::size_t N>
void restart_keys(const S& a, const S& b, const Key<S> (&table)[N], const std::string& where,
                  std::vector<std::string>& out) {
  for (const auto& k : table) {
    if (k.reload == restart && YAML::Dump(k.show(a)) != YAML::Dump(k.show(b))) {
      out.push_back(where + "." + k.name);
    }
  }
}

const Key<DaemonSection> kDaemonKeys[] = {
    path_key("state_dir", &DaemonSection::state_dir, restart),
    duration_key("lease", &DaemonSection::lease, 1s, restart),
    duration_key("shutdown_grace", &DaemonSection::shutdown_grace, 0ms, live),
    duration_key("log_summary", &DaemonSection::log_summary, 0ms, live),
    duration_key("stall_after", &DaemonSection::stall_after, 0ms, live),
    count_key("concurrency", &DaemonSection::concurrency, 0, 100000, live),
    choice_key("queue_order", "weighted | strict", &DaemonSection::queue_order,
               {"weighted", "strict"}, live),
    choice_key("log_level", "string", &DaemonSection::log_level,
               {"trace", "debug", "info", "warn", "error"}, live),
    {"name", "string", restart,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (!valid_name(*v)) {
         report(c, n, k + ": use 1-64 characters of A-Z a-z 0-9 _ . -");
         return;
       }
       s.name = *v;
     },
     [](const DaemonSection& s) { return shown(s.name); }},
};

const Key<LoggingSection> kLoggingKeys[] = {
    {"format", "text | json", restart,
     [](LoggingSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (*v != "text" && *v != "json") {
         report(c, n, k + ": '" + *v + "' is not text or json");
         return;
       }
       s.json = *v == "json";
     },
     [](const LoggingSection& s) { return shown(std::string(s.json ? "json" : "text")); }},
};

const Key<StateSection> kStateKeys[] = {
    duration_key("active_after", &StateSection::active_after, 0ms, live),
};

const Key<HttpSection> kHttpKeys[] = {
    {"listen", "host:port | off", restart,
     [](HttpSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (*v == "off") {
         s.listen.clear();
         return;
       }
       const auto colon = v->rfind(':');
       const std::string port = colon == std::string::npos ? "" : v->substr(colon + 1);
       if (colon == std::string::npos || colon == 0 || port.empty() || port.size() > 5 ||
           port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
         report(c, n, k + ": '" + *v + "' is not host:port (or off)");
         return;
       }
       s.listen = *v;
     },
     [](const HttpSection& s) { return shown(s.listen.empty() ? "off" : s.listen); }},
    path_key("token_file", &HttpSection::token_file, restart),
    bool_key("dashboard", &HttpSection::dashboard, live),
    bool_key("read_only", &HttpSection::read_only, live),
};

// A URL with its password replaced by ***, for --print-config and logs.
std::string masked_url(const std::string& url) {
  const auto at = url.find('@');
  const auto scheme = url.find("://");
  if (at == std::string::npos || scheme == std::string::npos) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

const Key<async::TlsOptions> kTlsKeys[] = {
    path_key("ca_file", &async::TlsOptions::ca_file, restart),
    path_key("cert_file", &async::TlsOptions::cert_file, restart),
    path_key("key_file", &async::TlsOptions::key_file, restart),
    string_key("server_name", &async::TlsOptions::server_name, restart),
};

// The name of an environment variable a secret is read from.
Key<RedisSection> env_key(const char* name, std::string RedisSection::*member) {
  return {name, "string", restart,
          [member](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            const auto v = as_string(n, c, k);
            if (!v) return;
            if (v->find_first_not_of(
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                std::string::npos) {
              report(c, n, k + ": '" + *v + "' is not a variable name");
              return;
            }
            s.*member = *v;
          },
          [member](const RedisSection& s) { return shown(s.*member); }};
}

const Key<RedisSection> kRedisKeys[] = {
    {"url", "string", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (*v != "embedded" && v->rfind("redis://", 0) != 0 && v->rfind("rediss://", 0) != 0 &&
           v->rfind("redis-sentinel://", 0) != 0 && v->rfind("redis-cluster://", 0) != 0 &&
           v->rfind("unix://", 0) != 0) {
         report(c, n,
                k + ": '" + masked_url(*v) +
                    "' is not redis://[user:password@]host:port/db, rediss://... (TLS), " +
                    "redis-sentinel://host:port,host:port/name, redis-cluster://host:port,..., " +
                    "unix:///path or embedded");
         return;
       }
       s.url = *v;
     },
     [](const RedisSection& s) { return shown(masked_url(s.url)); }},
    {"key_prefix", "string", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (v->find_first_of("{}: \t") != std::string::npos) {
         report(c, n, k + ": must not contain braces, colons or spaces");
         return;
       }
       s.key_prefix = *v;
     },
     [](const RedisSection& s) { return shown(s.key_prefix); }},
    duration_key("connect_timeout", &RedisSection::connect_timeout, 10ms, restart),
    duration_key("command_timeout", &RedisSection::command_timeout, 100ms, restart),
    string_key("server_binary", &RedisSection::server_binary, restart),
    {"embedded_port", "port", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_count(n, c, k, 1, 65535)) s.embedded_port = *v;
     },
     [](const RedisSection& s) {
       return s.embedded_port ? shown(s.embedded_port) : YAML::Node(YAML::NodeType::Null);
     }},
    path_key("password_file", &RedisSection::password_file, restart),
    count_key("wait_replicas", &RedisSection::wait_replicas, 0, 100, restart),
    duration_key("wait_timeout", &RedisSection::wait_timeout, 10ms, restart),
    {"tls", "map", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       apply(s.tls, n, c, kTlsKeys, k);
     },
     [](const RedisSection& s) {
       return s.tls == async::TlsOptions{} ? YAML::Node(YAML::NodeType::Null)
                                           : show_all(s.tls, kTlsKeys);
     }},
    env_key("password_env", &RedisSection::password_env),
    path_key("sentinel_password_file", &RedisSection::sentinel_password_file, restart),
    env_key("sentinel_password_env", &RedisSection::sentinel_password_env),
};

// An optional member: shown as null when unset.
template <class S, class T>
YAML::Node shown_opt(const std::optional<T>& v) {
  return v ? shown(*v) : YAML::Node(YAML::NodeType::Null);
}

const Key<ExecLimits> kLimitKeys[] = {
    {"cpu", "duration", live,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.cpu = as_duration(n, c, k, 1s);
     },
     [](const ExecLimits& s) { return shown_opt<ExecLimits>(s.cpu); }},
    {"address_space", "size", live,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.address_space = as_size(n, c, k, 1024 * 1024);
     },
     [](const ExecLimits& s) {
       return s.address_space ? shown(format_size(*s.address_space)) : YAML::Node();
     }},
    {"open_files", "count", live,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.open_files = as_count(n, c, k, 3, 1 << 20);
     },
     [](const ExecLimits& s) { return shown_opt<ExecLimits>(s.open_files); }},
};

const char* type_name(HandlerType t) {
  switch (t) {
    case HandlerType::builtin:
      return "builtin";
    case HandlerType::exec:
      return "exec";
    case HandlerType::http:
      return "http";
  }
  return "?";
}

// An exec handler's environment, its secrets masked: a value whose name says it is one.
YAML::Node shown_env(const std::map<std::string, std::string>& env) {
  YAML::Node n(YAML::NodeType::Map);
  for (const auto& [k, v] : env) {
    std::string upper;
    for (char ch : k) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    bool secret = false;
    for (const char* word : {"PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"}) {
      secret = secret || upper.find(word) != std::string::npos;
    }
    n[k] = secret ? std::string("***") : v;
  }
  if (env.empty()) n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

// Handler keys (every one reloadable: a reload builds the handler anew); which apply to which
// type is checked after the table ran.
const Key<HandlerConfig> kHandlerKeys[] = {
    {"type", "builtin|exec|http", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto t = as_string(n, c, k);
       if (!t) return;
       if (*t == "builtin") {
         h.type = HandlerType::builtin;
       } else if (*t == "exec") {
         h.type = HandlerType::exec;
       } else if (*t == "http") {
         h.type = HandlerType::http;
       } else {
         report(c, n, k + ": '" + *t + "' is not builtin, exec or http");
       }
     },
     [](const HandlerConfig& h) { return shown(std::string(type_name(h.type))); }},
    {"timeout", "duration", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       h.timeout = as_duration(n, c, k, 1ms);
     },
     [](const HandlerConfig& h) { return shown_opt<HandlerConfig>(h.timeout); }},
    choice_key("name", "noop|echo|sleep|fail", &HandlerConfig::builtin,
               {"noop", "echo", "sleep", "fail"}, live),
    {"command", "list", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto argv = as_string_list(n, c, k);
       if (!argv) return;
       if (argv->empty()) {
         report(c, n, k + ": must name a program");
         return;
       }
       const std::string& program = argv->front();
       if (program.empty() || program[0] != '/') {
         report(c, n, k + ": the program must be an absolute path, got '" + program + "'");
       }
       for (std::size_t i = 0; i < argv->size(); ++i) {
         auto parsed = parse_arg((*argv)[i]);
         if (auto* error = std::get_if<std::string>(&parsed)) {
           report(c, n[i], k + "[" + std::to_string(i) + "]: " + *error);
         }
       }
       const auto first = parse_arg(program);
       if (first.index() == 0 && std::get<ArgTemplate>(first).size() != 1) {
         report(c, n[0], k + ": the program itself cannot contain placeholders");
       }
       h.command = *argv;
     },
     [](const HandlerConfig& h) { return shown(h.command); }},
    {"env", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_string_map(n, c, k)) h.env = *v;
     },
     [](const HandlerConfig& h) { return shown_env(h.env); }},
    path_key("cwd", &HandlerConfig::cwd, live),
    string_key("user", &HandlerConfig::user, live),
    string_key("group", &HandlerConfig::group, live),
    duration_key("kill_grace", &HandlerConfig::kill_grace, 0ms, live),
    size_key("max_output", &HandlerConfig::max_output, 1, live),
    size_key("max_stderr", &HandlerConfig::max_stderr, 1, live),
    {"no_retry_exit_codes", "list", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (!n.IsSequence()) {
         report(c, n, k + ": must be a list of exit codes");
         return;
       }
       h.no_retry_exit_codes.clear();
       for (const auto& item : n) {
         if (auto code = as_count(item, c, k, 1, 255)) {
           h.no_retry_exit_codes.push_back(static_cast<int>(*code));
         }
       }
     },
     [](const HandlerConfig& h) {
       YAML::Node n(YAML::NodeType::Sequence);
       for (int code : h.no_retry_exit_codes) n.push_back(code);
       n.SetStyle(YAML::EmitterStyle::Flow);
       return n;
     }},
    {"limits", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       apply(h.limits, n, c, kLimitKeys, k);
     },
     [](const HandlerConfig& h) { return show_all(h.limits, kLimitKeys); }},
    {"url", "string", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto url = as_string(n, c, k);
       if (!url) return;
       auto parsed = parse_http_url(*url);
       if (auto* why = std::get_if<std::string>(&parsed)) {
         // Not echoed when it holds credentials: config errors end up in logs.
         std::string shown = url->find('@') == std::string::npos ? "'" + *url + "' " : "";
         report(c, n, k + " " + shown + *why);
         return;
       }
       h.url = *url;
     },
     [](const HandlerConfig& h) { return shown(masked_url(h.url)); }},
    {"headers", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto headers = as_string_map(n, c, k);
       if (!headers) return;
       for (const auto& [name, v] : *headers) {
         std::string lower;
         for (char ch : name) {
           lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
         }
         if (lower == "authorization" || lower == "proxy-authorization" || lower == "cookie") {
           report(c, n,
                  k + ": " + name +
                      " carries a secret: give it with headers_from_env or headers_from_file, so "
                      "that it stays out of the config file");
         }
       }
       h.headers = *headers;
     },
     [](const HandlerConfig& h) { return shown(h.headers); }},
    map_key("headers_from_env", &HandlerConfig::headers_from_env, live),
    {"headers_from_file", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto files = as_string_map(n, c, k);
       if (!files) return;
       h.headers_from_file = *files;
       for (auto& [name, v] : h.headers_from_file) {
         fs::path p = v;
         if (p.is_relative()) v = (fs::path(c.base_dir) / p).lexically_normal().string();
       }
     },
     [](const HandlerConfig& h) { return shown(h.headers_from_file); }},
    choice_key("body", "payload|job", &HandlerConfig::body, {"payload", "job"}, live),
    duration_key("connect_timeout", &HandlerConfig::connect_timeout, 1ms, live),
    path_key("ca_file", &HandlerConfig::ca_file, live),
    bool_key("verify_tls", &HandlerConfig::verify_tls, live),
    size_key("max_response", &HandlerConfig::max_response, 1, live),
    count_key("pool_size", &HandlerConfig::pool_size, 1, 1024, live),
};

// Which keys belong to which handler type (type and timeout apply to all).
const std::map<HandlerType, std::set<std::string>> kKeysOfType = {
    {HandlerType::builtin, {"name"}},
    {HandlerType::exec,
     {"command", "env", "cwd", "user", "group", "kill_grace", "max_output", "max_stderr",
      "no_retry_exit_codes", "limits"}},
    {HandlerType::http,
     {"url", "headers", "headers_from_env", "headers_from_file", "body", "connect_timeout",
      "ca_file", "verify_tls", "max_response", "pool_size"}},
};

// A handler's definition. Its problems are reported; the caller tells a broken handler by them.
HandlerConfig parse_handler(const std::string& name, const YAML::Node& n, const Ctx& c) {
  const std::string where = "handlers." + name;
  HandlerConfig h;
  h.name = name;
  if (!n.IsMap()) {
    report(c, n, where + " must be a map with a type");
    return h;
  }
  // The type first: it says which keys apply. A key that does not is named as such, and its
  // value is not checked too (that would be a second error for one line).
  std::optional<HandlerType> type;
  if (n["type"]) {
    Found scratch;  // its problems are reported by apply below
    HandlerConfig typed;
    const Ctx quiet{c.origin, c.base_dir, &scratch};
    for (const auto& row : kHandlerKeys) {
      if (row.name == std::string_view("type")) row.parse(typed, n["type"], quiet, where + ".type");
    }
    if (scratch.problems.empty()) type = typed.type;
  }
  std::set<std::string> allowed;
  if (type) {
    allowed = kKeysOfType.at(*type);
    allowed.insert({"type", "timeout"});
  }
  apply(h, n, c, kHandlerKeys, where, type ? &allowed : nullptr);
  if (!n["type"] && !misplaced_within(c, where, "type")) {
    report(c, n, where + ": missing 'type' (builtin, exec or http)");
  }
  // Without a type, which keys apply and which are needed is unknown: saying more would be
  // guessing from the default type.
  if (!type) return h;
  std::set<std::string> said;
  for (const auto& kv : n) {
    if (!kv.first.IsScalar()) continue;  // reported by apply
    const std::string k = kv.first.Scalar();
    if (allowed.count(k) || !said.insert(k).second) continue;
    const bool known = std::any_of(std::begin(kHandlerKeys), std::end(kHandlerKeys),
                                   [&](const auto& row) { return k == row.name; });
    if (!known) continue;  // reported by apply as unknown
    report(c, kv.first,
           where + ": '" + k + "' does not apply to a handler of type " + type_name(h.type));
  }
  // By the key's presence, not the member: a value that was there but refused is reported
  // already, and is not also missing.
  const char* needed = h.type == HandlerType::builtin ? "name"
                       : h.type == HandlerType::exec  ? "command"
                                                      : "url";
  if (!n[needed] && !misplaced_within(c, where, needed)) {
    report(c, n,
           where + ": " + (h.type == HandlerType::builtin ? "a " : "an ") + type_name(h.type) +
               " handler needs '" + needed + "'");
  }
  return h;
}

// A handler's keys: those of its type, and type and timeout.
YAML::Node show_handler(const HandlerConfig& h) {
  std::set<std::string> keys = kKeysOfType.at(h.type);
  keys.insert("type");
  keys.insert("timeout");
  return show_all(h, kHandlerKeys, &keys);
}

// Spool source keys. A reload that changes any of them replaces the source (docs/config.md).
const Key<SourceConfig> kSpoolKeys[] = {
    path_key("dir", &SourceConfig::dir, live),
    string_key("pattern", &SourceConfig::pattern, live),
    {"ignore", "list of globs", live,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_string_list(n, c, k)) s.ignore = *v;
     },
     [](const SourceConfig& s) { return shown(s.ignore); }},
    {"on_success", "delete | move", live,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       if (*v != "delete" && *v != "move") {
         report(c, n, k + ": '" + *v + "' is not delete or move (to done/)");
         return;
       }
       s.keep_done = *v == "move";
     },
     [](const SourceConfig& s) { return shown(std::string(s.keep_done ? "move" : "delete")); }},
    duration_key("quiet", &SourceConfig::quiet, 0ms, live),
    bool_key("recursive", &SourceConfig::recursive, live),
};

// One entry of `sources`, or nullopt when it is refused (its problems reported).
std::optional<SourceConfig> parse_source(const YAML::Node& n, const Ctx& c,
                                         const std::string& where) {
  const std::string shape = where + ": each source is a map with one key, redis or spool";
  if (!n.IsMap() || n.size() == 0) {
    report(c, n, shape);
    return std::nullopt;
  }
  // Beside the source, keys of another level indented one step too far (a queue's
  // `concurrency` under `- redis: {}`): named as such, and the source itself still checked.
  std::vector<Entry> kinds;
  for (const auto& e : entries(n, c, where, where)) {
    if (e.name == "redis" || e.name == "spool") {
      kinds.push_back(e);
    } else if (auto why = misplaced(e.name, where, c)) {
      report(c, e.key, *why);
    } else {
      kinds.push_back(e);
    }
  }
  if (kinds.size() != 1) {
    if (!kinds.empty()) report(c, n, shape);
    return std::nullopt;
  }
  const Entry& kind = kinds.front();
  SourceConfig s;
  if (kind.name == "redis") {
    s.kind = SourceConfig::Kind::redis;
    if (!kind.value.IsNull() && !(kind.value.IsMap() && kind.value.size() == 0)) {
      report(c, kind.value, where + ": the redis source takes no settings ({})");
      return std::nullopt;
    }
  } else if (kind.name == "spool") {
    s.kind = SourceConfig::Kind::spool;
    const std::size_t before = problem_count(c);
    apply(s, kind.value, c, kSpoolKeys, where + ".spool");
    if (!kind.value.IsMap() || !kind.value["dir"]) {
      if ((kind.value.IsMap() || kind.value.IsNull()) && !misplaced_within(c, where, "dir")) {
        report(c, kind.value, where + ": a spool source needs 'dir'");
      }
      return std::nullopt;
    }
    if (problem_count(c) != before) return std::nullopt;
  } else {
    report(c, kind.key, where + ": unknown source '" + kind.name + "' (redis or spool)");
    return std::nullopt;
  }
  return s;
}

const Key<Retain> kRetainKeys[] = {
    {"succeeded", "duration", live,
     [](Retain& r, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_duration(n, c, k);
       if (!v) return;
       if (*v != 0ms && *v < 1s) {
         report(c, n, k + ": must be 0 (delete at once) or at least 1s");
         return;
       }
       r.succeeded = *v;
     },
     [](const Retain& r) { return shown(r.succeeded); }},
    duration_key("failed", &Retain::failed, 1s, live),
    bool_key("payload", &Retain::payload, live),
};

const Key<UniqueConfig> kUniqueKeys[] = {
    {"key", "id | payload.FIELD", live,
     [](UniqueConfig& u, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       auto path = payload_path(*v);
       if (*v == "id") path = std::vector<std::string>{"id"};
       if (!path) {
         report(c, n,
                k + ": '" + *v +
                    "' is not where a job's unique key can come from: id, or a payload field "
                    "(payload.user, payload.order.id)");
         return;
       }
       u.key = *v;
       u.path = std::move(*path);
     },
     [](const UniqueConfig& u) { return shown(u.key); }},
    duration_key("for", &UniqueConfig::hold, 1ms, live),
    {"while", "list of queued, running", live,
     [](UniqueConfig& u, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (!n.IsSequence()) {
         report(c, n, k + ": must be a list, like [queued, running]");
         return;
       }
       const auto v = as_string_list(n, c, k);
       if (!v) return;
       std::set<std::string> seen;
       for (const auto& w : *v) {
         if ((w != "queued" && w != "running") || !seen.insert(w).second) {
           report(c, n,
                  k + ": '" + w + "' " +
                      (seen.count(w) ? "is listed twice" : "is not queued or running"));
           return;
         }
       }
       if (v->empty()) {
         report(c, n, k + ": name at least one of queued, running (a lock held in no state)");
         return;
       }
       u.during = *v;
     },
     [](const UniqueConfig& u) { return shown(u.during); }},
    choice_key("mode", "lock | debounce | throttle", &UniqueConfig::mode,
               {"lock", "debounce", "throttle"}, live),
};

const Key<PrioritiesConfig> kPrioritiesKeys[] = {
    choice_key("order", "strict | weighted", &PrioritiesConfig::order, {"strict", "weighted"},
               live),
    count_key("high", &PrioritiesConfig::high, 1, 1000, live),
    count_key("normal", &PrioritiesConfig::normal, 1, 1000, live),
    count_key("low", &PrioritiesConfig::low, 1, 1000, live),
    duration_key("aging", &PrioritiesConfig::aging, 0ms, live),
};

const Key<GroupByConfig> kGroupByKeys[] = {
    {"key", "payload.FIELD", restart,
     [](GroupByConfig& g, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const auto v = as_string(n, c, k);
       if (!v) return;
       auto path = payload_path(*v);
       if (!path) {
         report(c, n,
                k + ": '" + *v +
                    "' is not where a job's group can come from: a payload field (payload.tenant, "
                    "payload.account.id)");
         return;
       }
       g.key = *v;
       g.path = std::move(*path);
     },
     [](const GroupByConfig& g) { return shown(g.key); }},
    {"rate", "N/s | N/m | N/h | off", restart,
     [](GroupByConfig& g, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_rate(n, c, k)) std::tie(g.rate, g.rate_per_s) = *v;
     },
     [](const GroupByConfig& g) { return shown(g.rate.empty() ? std::string("off") : g.rate); }},
    count_key("rate_burst", &GroupByConfig::rate_burst, 0, 100000000, restart),
    count_key("concurrency", &GroupByConfig::concurrency, 0, 1000000, restart),
};

const Key<QueueConfig> kQueueKeys[] = {
    string_key("handler", &QueueConfig::handler, live),
    count_key("concurrency", &QueueConfig::concurrency, 1, 100000, live),
    count_key("weight", &QueueConfig::weight, 1, 1000, live),
    count_key("buffer", &QueueConfig::buffer, 1, 1000000, live),
    // Where ids live (their home shard) depends on it: a running queue keeps its count.
    count_key("shards", &QueueConfig::shards, 1, kMaxShards, restart),
    count_key("fetch_batch", &QueueConfig::fetch_batch, 1, 1000, live),
    {"rate", "N/s | N/m | N/h | off", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_rate(n, c, k)) std::tie(q.rate, q.rate_per_s) = *v;
     },
     [](const QueueConfig& q) { return shown(q.rate.empty() ? std::string("off") : q.rate); }},
    count_key("rate_burst", &QueueConfig::rate_burst, 0, 100000000, live),
    count_key("global_concurrency", &QueueConfig::global_concurrency, 0, 1000000, live),
    {"group_by", "payload.FIELD | map", restart,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       // The short form names the field alone: `group_by: payload.tenant`.
       if (n.IsScalar()) {
         kGroupByKeys[0].parse(q.group_by, n, c, k);
         return;
       }
       const std::size_t before = problem_count(c);
       apply(q.group_by, n, c, kGroupByKeys, k);
       if (problem_count(c) == before && n.IsMap() && !n["key"]) {
         report(c, n, k + ": needs 'key', the payload field of a job's group (payload.tenant)");
       }
     },
     [](const QueueConfig& q) {
       // A queue without groups shows none (a map without a key would not read back).
       return q.group_by.key.empty() ? YAML::Node() : show_all(q.group_by, kGroupByKeys);
     }},
    {"unique", "map", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       apply(q.unique, n, c, kUniqueKeys, k);
       q.unique_set = true;
       const YAML::Node during = n.IsMap() ? n["while"] : YAML::Node();
       if (during && q.unique.mode != "lock") {
         report(c, during,
                k + ".while: only for mode lock (debounce holds a key while its job waits or "
                    "runs, throttle for its whole window)");
       }
     },
     [](const QueueConfig& q) { return show_all(q.unique, kUniqueKeys); }},
    {"priorities", "strict | weighted | map", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (n.IsScalar()) {
         // The short form names the order alone.
         const auto v = as_string(n, c, k);
         if (!v) return;
         if (*v != "strict" && *v != "weighted") {
           report(c, n, k + ": '" + *v + "' is not an order: strict or weighted (or a map)");
           return;
         }
         q.priorities.order = *v;
       } else {
         apply(q.priorities, n, c, kPrioritiesKeys, k);
       }
       q.priorities_set = true;
     },
     [](const QueueConfig& q) { return show_all(q.priorities, kPrioritiesKeys); }},
    count_key("max_attempts", &QueueConfig::max_attempts, 1, 1000, live),
    {"timeout", "duration", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (auto v = as_duration(n, c, k, 1ms)) q.timeout = *v;
       q.timeout_set = true;
     },
     [](const QueueConfig& q) { return shown(q.timeout); }},
    duration_key("max_timeout", &QueueConfig::max_timeout, 1ms, live),
    duration_key("retry_base", &QueueConfig::retry_base, 0ms, live),
    duration_key("retry_max", &QueueConfig::retry_max, 0ms, live),
    {"retain", "map", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       apply(q.retain, n, c, kRetainKeys, k);
     },
     [](const QueueConfig& q) { return show_all(q.retain, kRetainKeys); }},
    count_key("dead_max", &QueueConfig::dead_max, 1, 100000000, live),
    size_key("max_job_bytes", &QueueConfig::max_job_bytes, 64, live),
    duration_key("delayed_poll", &QueueConfig::delayed_poll, 10ms, live),
    duration_key("after_timeout", &QueueConfig::after_timeout, 1s, live),
    {"sources", "list", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (!n.IsSequence()) {
         report(c, n, k + ": must be a list (- redis: {} / - spool: {dir: ...})");
         return;
       }
       q.sources.clear();
       for (std::size_t i = 0; i < n.size(); ++i) {
         if (auto s = parse_source(n[i], c, k + "[" + std::to_string(i) + "]")) {
           q.sources.push_back(*s);
         }
       }
     },
     [](const QueueConfig& q) {
       YAML::Node list(YAML::NodeType::Sequence);
       bool only_redis = true;
       for (const auto& s : q.sources) {
         YAML::Node one(YAML::NodeType::Map);
         if (s.kind == SourceConfig::Kind::redis) {
           YAML::Node none(YAML::NodeType::Map);
           none.SetStyle(YAML::EmitterStyle::Flow);
           one["redis"] = none;
         } else {
           one["spool"] = show_all(s, kSpoolKeys);
           only_redis = false;
         }
         list.push_back(one);
       }
       if (only_redis) list.SetStyle(YAML::EmitterStyle::Flow);
       return list;
     }},
};

constexpr const char* kStrTag = "tag:yaml.org,2002:str";

// A plain (unquoted) YAML scalar as JSON: YAML 1.2's core schema (null, true/false, numbers).
nlohmann::json plain_json(const std::string& t) {
  using nlohmann::json;
  if (t == "true" || t == "false") return json(t == "true");
  if (t == "~" || t == "null" || t.empty()) return json(nullptr);
  const char* end = t.data() + t.size();
  long long i = 0;
  if (std::from_chars(t.data(), end, i).ptr == end) return json(i);
  double d = 0;
  if (std::from_chars(t.data(), end, d).ptr == end && std::isfinite(d)) return json(d);
  return json(t);
}

// A YAML value as JSON (a schedule's job): YAML 1.2's core schema for plain scalars (null,
// true/false, numbers), a quoted scalar always a string. Nullopt (reported) for what JSON cannot
// hold: a map key that is not a scalar.
std::optional<nlohmann::json> yaml_json(const YAML::Node& n, const Ctx& c, const std::string& k) {
  using nlohmann::json;
  if (!n.IsDefined() || n.IsNull()) return json(nullptr);
  if (n.IsSequence()) {
    json out = json::array();
    for (std::size_t i = 0; i < n.size(); ++i) {
      auto v = yaml_json(n[i], c, k + "[" + std::to_string(i) + "]");
      if (!v) return std::nullopt;
      out.push_back(std::move(*v));
    }
    return out;
  }
  if (n.IsMap()) {
    json out = json::object();
    for (const auto& e : entries(n, c, k, "a key in " + k)) {
      auto v = yaml_json(e.value, c, k + "." + e.name);
      if (!v) return std::nullopt;
      out[e.name] = std::move(*v);
    }
    return out;
  }
  const std::string& t = n.Scalar();
  if (n.Tag() == "!" || n.Tag() == kStrTag) return json(t);  // quoted, or tagged !!str
  return plain_json(t);
}

// A JSON value as YAML (--print-config), reading back as the same JSON: a string that a plain
// scalar would read as another type is tagged !!str (yaml-cpp's emitter has no per-scalar quote).
YAML::Node json_yaml(const nlohmann::json& v) {
  if (v.is_object()) {
    YAML::Node out(YAML::NodeType::Map);
    for (const auto& [k, e] : v.items()) out[k] = json_yaml(e);
    out.SetStyle(YAML::EmitterStyle::Flow);
    return out;
  }
  if (v.is_array()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const auto& e : v) out.push_back(json_yaml(e));
    out.SetStyle(YAML::EmitterStyle::Flow);
    return out;
  }
  if (v.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (v.is_string()) {
    YAML::Node out(v.get<std::string>());
    if (!plain_json(v.get<std::string>()).is_string()) out.SetTag(kStrTag);
    return out;
  }
  return YAML::Node(v.dump());
}

const Key<ScheduleConfig> kScheduleKeys[] = {
    string_key("cron", &ScheduleConfig::cron, live),
    string_key("timezone", &ScheduleConfig::timezone, live),
    string_key("queue", &ScheduleConfig::queue, live),
    {"job", "map", live,
     [](ScheduleConfig& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (!n.IsMap()) {
         report(c, n, k + ": must be a map (the job each tick enqueues: {payload: ...})");
         return;
       }
       auto v = yaml_json(n, c, k);
       if (!v) return;
       if (v->contains("id")) {
         report(c, n["id"], k + ".id: each tick's job gets its own id (NAME:TIME); leave it out");
         return;
       }
       if (!v->contains("payload")) (*v)["payload"] = nlohmann::json::object();
       try {
         s.job = v->dump();
       } catch (const nlohmann::json::type_error&) {
         // YAML takes any bytes; a job is JSON, whose text is UTF-8.
         report(c, n, k + ": holds text that is not UTF-8 (a job is JSON, whose strings are)");
       }
     },
     [](const ScheduleConfig& s) { return json_yaml(nlohmann::json::parse(s.job)); }},
    choice_key("catch_up", "skip | one | all", &ScheduleConfig::catch_up, {"skip", "one", "all"},
               live),
    duration_key("jitter", &ScheduleConfig::jitter, 0ms, live),
};

template <class S, std::size_t N>
std::vector<std::string> names_of(const Key<S> (&table)[N]) {
  std::vector<std::string> out;
  for (const auto& k : table) out.push_back(k.name);
  return out;
}

const std::vector<std::string> kSections = {"daemon",   "redis",  "http",  "logging",
                                            "handlers", "queues", "state", "schedules"};

// A level of the config (a section, a queue, a handler...), for naming a key found at the wrong
// one: what its keys are called in messages, and the keys.
struct Level {
  std::string what;
  std::vector<std::string> keys;
};

const Level& section_level(const std::string& name) {
  static const std::map<std::string, Level> levels = {
      {"daemon", {"a key of the daemon section", names_of(kDaemonKeys)}},
      {"redis", {"a key of the redis section", names_of(kRedisKeys)}},
      {"http", {"a key of the http section", names_of(kHttpKeys)}},
      {"logging", {"a key of the logging section", names_of(kLoggingKeys)}},
      {"state", {"a key of the state section", names_of(kStateKeys)}},
      {"queue", {"a queue key", names_of(kQueueKeys)}},
      {"handler", {"a handler key", names_of(kHandlerKeys)}},
      {"retain", {"a key of a queue's retain", names_of(kRetainKeys)}},
      {"unique", {"a key of a queue's unique", names_of(kUniqueKeys)}},
      {"group_by", {"a key of a queue's group_by", names_of(kGroupByKeys)}},
      {"spool", {"a key of a spool source", names_of(kSpoolKeys)}},
      {"limits", {"a key of a handler's limits", names_of(kLimitKeys)}},
      {"tls", {"a key of redis.tls", names_of(kTlsKeys)}},
      {"schedule", {"a schedule key", names_of(kScheduleKeys)}},
  };
  return levels.at(name);
}

std::optional<std::string> misplaced(const std::string& name, const std::string& where,
                                     const Ctx& c) {
  const std::string place = where.empty() ? "at the top level" : "indented under '" + where + "'";
  auto say = [&](const std::string& what) {
    c.found->misplaced.emplace_back(where, name);
    return "'" + name + "' is " + what + ", but it is " + place + " (check its indentation)";
  };
  if (!where.empty() && std::find(kSections.begin(), kSections.end(), name) != kSections.end()) {
    c.found->sections_elsewhere.insert(name);
    return say("a top-level section");
  }
  // Nearest first: a key of the queue or handler it sits in, indented one step too far; then the
  // sections' keys before the queues' and handlers' at the top level and in the sections, the
  // other way round inside queues and handlers.
  const bool in_queue = where.rfind("queues.", 0) == 0;
  const bool in_handler = where.rfind("handlers.", 0) == 0;
  std::vector<std::string> order;
  if (in_queue) order.push_back("queue");
  if (in_handler) order.push_back("handler");
  if (where == "redis") order.push_back("tls");  // ca_file under redis: is a key of redis.tls
  const std::vector<std::string> sections = {"daemon", "redis", "http", "logging", "state"};
  const std::vector<std::string> named = {"queue",  "handler", "retain",
                                          "unique", "spool",   "limits"};
  const bool nested = in_queue || in_handler || where == "queues" || where == "handlers";
  for (const auto* group : nested ? std::array{&named, &sections} : std::array{&sections, &named}) {
    order.insert(order.end(), group->begin(), group->end());
  }
  for (const auto& level : order) {
    if (level == where) continue;
    const Level& l = section_level(level);
    if (std::find(l.keys.begin(), l.keys.end(), name) != l.keys.end()) return say(l.what);
  }
  return std::nullopt;
}

// Whether `value` reads as the top-level section `name` would: a map of queues (some with a
// handler, none with a type), of handlers (the other way round), or of a section's own keys.
// Names of sections are fine names for handlers and queues (a handler called `http`): only a
// value shaped like the section makes one a misplaced section.
bool looks_like(const std::string& name, const YAML::Node& value) {
  if (!value.IsMap() || value.size() == 0) return false;
  if (name == "schedules") {
    // A map of schedules: each one a map with a cron expression.
    for (const auto& kv : value) {
      if (!kv.second.IsMap() || !kv.second["cron"]) return false;
    }
    return true;
  }
  if (name == "queues" || name == "handlers") {
    const char* mark = name == "queues" ? "handler" : "type";
    const char* other = name == "queues" ? "type" : "handler";
    bool marked = false;
    for (const auto& kv : value) {
      if (!kv.second.IsMap()) continue;
      if (kv.second[other]) return false;
      marked = marked || kv.second[mark];
    }
    return marked;
  }
  const auto& keys = section_level(name).keys;
  for (const auto& kv : value) {
    if (!kv.first.IsScalar() ||
        std::find(keys.begin(), keys.end(), kv.first.Scalar()) == keys.end()) {
      return false;
    }
  }
  return true;
}

// A top-level section written inside another one by mistake (found up to three levels down, the
// first in the file), to be checked as if it were in its place: its own problems are then
// reported, and its absence does not cascade into "no queues configured" or "handler 'x' is not
// defined" at every queue. Its being misplaced is reported where it is met.
std::optional<Entry> find_misplaced(const YAML::Node& map, const std::string& name, int depth) {
  if (depth > 3 || !map.IsMap()) return std::nullopt;
  for (const auto& kv : map) {
    if (depth > 0 && kv.first.IsScalar() && kv.first.Scalar() == name &&
        looks_like(name, kv.second)) {
      return Entry{name, kv.first, kv.second};
    }
    if (auto found = find_misplaced(kv.second, name, depth + 1)) return found;
  }
  return std::nullopt;
}

// For an entry of `handlers` or `queues` (`where`): a misplaced section, or a key of a handler or
// queue one step too far out (`concurrency: 4` beside the queues). A map is taken as a handler or
// queue of that name (`retain` is a fine queue name) unless it is shaped like a section.
std::optional<std::string> misplaced_entry(const Entry& e, const std::string& where, const Ctx& c) {
  const bool section = std::find(kSections.begin(), kSections.end(), e.name) != kSections.end();
  if (section ? !looks_like(e.name, e.value) && e.value.IsMap() : e.value.IsMap()) {
    return std::nullopt;
  }
  return misplaced(e.name, where, c);
}

template <class S, std::size_t N>
void add_keys(std::vector<KeyInfo>& out, const std::string& section, const Key<S> (&table)[N],
              const S& defaults = S{}) {
  for (const auto& k : table) {
    const YAML::Node v = k.show(defaults);
    out.push_back({section + "." + k.name, k.type, k.reload == live,
                   v.IsScalar() ? v.Scalar()
                   : v.IsNull() ? ""
                                : YAML::Dump(v)});
  }
}

// Everything parse() checks, part by part, into `c.found`: what each part finds that a later
// one needs (the sections where they were found, the handlers refused) is kept here.
class Checker {
 public:
  explicit Checker(const Ctx& c) : c(c) { cfg.path = c.origin; }

  Config run(const std::string& text) {
    if (!load(text)) return cfg;
    find_sections();
    plain_sections();
    read_handlers();
    read_queues();
    spool_owners();
    read_schedules();
    if (cfg.daemon.name.empty()) {
      char host[256] = {};
      if (gethostname(host, sizeof host - 1) != 0 || !valid_name(host)) {
        std::snprintf(host, sizeof host, "jobqd");
      }
      cfg.daemon.name = host;
    }
    return cfg;
  }

 private:
  const Ctx& c;
  Config cfg;
  YAML::Node root;
  std::map<std::string, Entry> sections;
  std::set<std::string> adopted;  // sections found elsewhere and checked as if in their place
  std::set<std::string> broken;   // handlers there but refused: queues naming them say nothing
  bool handlers_unread = false;   // the section is not a map: no name can be looked up in it
  std::vector<YAML::Node> queue_nodes;  // beside cfg.queues, for errors found across queues

  YAML::Node section(const std::string& name) const {
    auto it = sections.find(name);
    return it == sections.end() ? YAML::Node() : it->second.value;
  }

  // A key's node in a section, if the section is a map that has it.
  YAML::Node key_in(const std::string& name, const char* key) const {
    const YAML::Node s = section(name);
    return s.IsMap() && s[key] ? s[key] : sections.at(name).key;
  }

  // The YAML parsed into `root`: false when there is nothing further to check.
  bool load(const std::string& text) {
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      // The parser stops at its first error: nothing after it can be checked.
      report_at(c, e.mark, "not valid YAML: " + e.msg);
      return false;
    }
    if (root.IsNull()) {
      // 0 bytes or only comments: no place of its own, so its first line.
      report_at(c, root.Mark().is_null() ? YAML::Mark() : root.Mark(),
                "the config is empty: the least jobqd runs is \"handlers: {echo: {type: builtin, "
                "name: echo}}\" and, on a line of its own, \"queues: {default: {handler: echo}}\" "
                "(every key: config/jobqd.yaml in jobqd's source, and docs/config.md)");
      return false;
    }
    if (!root.IsMap()) {
      report(c, root,
             std::string("the config must be a map with sections (redis, handlers, queues), not ") +
                 (root.IsSequence() ? "a list" : "a single value"));
      return false;
    }

    return true;
  }

  // The top-level sections, each in `sections`; a misspelled or misplaced one said so.
  void find_sections() {
    std::map<std::string, Entry> misspelled;  // a section's name, to an unknown one close to it
    for (const auto& e : entries(root, c, "the config", "a section name")) {
      if (std::find(kSections.begin(), kSections.end(), e.name) != kSections.end()) {
        sections.emplace(e.name, e);
        continue;
      }
      if (e.name == "metrics") {
        report(c, e.key, "metrics: the section is called http now (http.listen)");
        continue;
      }
      std::string best;
      for (const auto& k : kSections) {
        if (distance(e.name, k) <= 2) best = k;
      }
      const std::string unknown =
          "unknown section '" + e.name + "'" +
          (best.empty() ? " (sections: daemon, redis, http, logging, state, handlers, queues, "
                          "schedules)"
                        : " (did you mean '" + best + "'?)");
      // Misspelled, and shaped like the section it is close to (`handler:` holding handlers): it
      // is checked as that section.
      if (!best.empty() && looks_like(best, e.value)) {
        report(c, e.key, unknown);
        misspelled.emplace(best, e);
        continue;
      }
      if (auto why = misplaced(e.name, "", c)) {
        report(c, e.key, *why);
        continue;
      }
      // A queue or a handler one level too far out.
      if (e.value.IsMap() && (e.value["handler"] || e.value["type"])) {
        const bool queue = e.value["handler"].IsDefined();
        const std::string kind = queue ? "queue" : "handler";
        report(c, e.key,
               "'" + e.name + "' looks like a " + kind + " (it has '" +
                   (queue ? "handler" : "type") +
                   "'), but it is at the top level (check its indentation: " + kind +
                   "s go under '" + kind + "s')");
        c.found->sections_elsewhere.insert(kind + "s");
        continue;
      }
      report(c, e.key, unknown);
      if (!best.empty()) c.found->sections_elsewhere.insert(best);
    }
    // A section missing from its place but written elsewhere is checked as if it were there
    // (find_misplaced says why).
    for (const auto& name : kSections) {
      if (sections.count(name)) continue;
      auto it = misspelled.find(name);
      auto elsewhere =
          it != misspelled.end() ? std::optional<Entry>(it->second) : find_misplaced(root, name, 0);
      if (elsewhere) {
        sections.emplace(name, *elsewhere);
        adopted.insert(name);
      }
    }
  }

  void plain_sections() {
    if (sections.count("daemon")) apply(cfg.daemon, section("daemon"), c, kDaemonKeys, "daemon");
    if (sections.count("redis")) {
      const auto refused = apply(cfg.redis, section("redis"), c, kRedisKeys, "redis");
      const auto& r = cfg.redis;
      const bool inline_password = r.url.rfind("redis://", 0) == 0 &&
                                   r.url.find('@') != std::string::npos &&
                                   r.url.find(':', 8) < r.url.find('@');
      if (!r.password_file.empty() + !r.password_env.empty() + inline_password > 1) {
        report(c, sections.at("redis").key,
               "redis: give the password one way: password_file, password_env or in the url");
      }
      const int sentinel_ways =
          !r.sentinel_password_file.empty() + !r.sentinel_password_env.empty();
      if (sentinel_ways > 1) {
        report(c, sections.at("redis").key,
               "redis: give the sentinels' password one way: sentinel_password_file or "
               "sentinel_password_env");
      } else if (sentinel_ways == 1 && r.url.rfind("redis-sentinel://", 0) != 0 &&
                 !refused.count("url")) {
        report(
            c, sections.at("redis").key,
            "redis: a sentinel password is for a redis-sentinel:// URL; this config's Redis is " +
                masked_url(r.url));
      }
      const bool tls_url = r.url.rfind("rediss://", 0) == 0 ||
                           r.url.rfind("redis-cluster://", 0) == 0 ||
                           r.url.rfind("redis-sentinel://", 0) == 0;
      if (r.tls != async::TlsOptions{} && !tls_url && !refused.count("url") &&
          !refused.count("tls")) {
        // Certificates for a plaintext URL: the user meant TLS, and must not get plaintext.
        report(c, key_in("redis", "tls"),
               "redis.tls: given, but redis.url " + masked_url(r.url) +
                   " is not TLS (rediss://host:port; a redis-cluster:// or redis-sentinel:// URL "
                   "goes over TLS with redis.tls)");
      }
      if (r.tls.cert_file.empty() != r.tls.key_file.empty() && !refused.count("tls")) {
        report(c, key_in("redis", "tls"),
               "redis.tls: a client certificate needs both cert_file and key_file");
      }
      if (r.embedded_port && r.url != "embedded" && !refused.count("url")) {
        report(c, key_in("redis", "embedded_port"),
               "redis.embedded_port: only for url: embedded (a port of jobqd's own redis-server); "
               "this config's Redis is " +
                   masked_url(r.url));
      }
    }
    if (sections.count("http")) {
      const auto refused = apply(cfg.http, section("http"), c, kHttpKeys, "http");
      const auto& h = cfg.http;
      if (!h.listen.empty() && h.token_file.empty() && !refused.count("token_file") &&
          !is_loopback_host(listen_host(h.listen))) {
        report(c, key_in("http", "listen"),
               "http.listen: " + h.listen +
                   " is not a loopback address (127.0.0.0/8 written as an address, ::1, or "
                   "localhost), so anyone who can reach it could read /metrics without a token: "
                   "set http.token_file (requests then need 'Authorization: Bearer <token>'), or "
                   "listen on 127.0.0.1");
      }
    }
    if (sections.count("state")) apply(cfg.state, section("state"), c, kStateKeys, "state");
    if (sections.count("logging")) {
      apply(cfg.logging, section("logging"), c, kLoggingKeys, "logging");
    }
  }

  void read_handlers() {
    // Handlers that are there but refused: queues naming them are not also told they are missing.
    const YAML::Node handlers = section("handlers");
    if (handlers.IsDefined() && !handlers.IsNull() && !handlers.IsMap()) {
      report(c, handlers, "handlers must be a map of names to definitions");
      handlers_unread = true;
    } else if (handlers.IsMap()) {
      for (const auto& e : entries(handlers, c, "handlers", "a handler name")) {
        if (auto why = misplaced_entry(e, "handlers", c)) {
          report(c, e.key, *why);
          continue;
        }
        const std::size_t before = problem_count(c);
        if (!valid_name(e.name)) {
          report(c, e.key,
                 "handler name '" + e.name + "': use 1-64 characters of A-Z a-z 0-9 _ . -");
        }
        HandlerConfig& h = cfg.handlers[e.name] = parse_handler(e.name, e.value, c);
        const auto& m = e.key.Mark();
        h.origin = c.origin + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
        if (problem_count(c) != before) broken.insert(e.name);
      }
    }
  }

  void read_queues() {
    const YAML::Node queues = section("queues");
    if (queues.IsDefined() && !queues.IsNull() && !queues.IsMap()) {
      report(c, queues, "queues must be a map of queue names to settings");
    } else if (queues.IsMap()) {
      for (const auto& e : entries(queues, c, "queues", "a queue name")) {
        if (auto why = misplaced_entry(e, "queues", c)) {
          report(c, e.key, *why);
          continue;
        }
        if (!valid_name(e.name)) {
          report(c, e.key, "queue name '" + e.name + "': use 1-64 characters of A-Z a-z 0-9 _ . -");
        }
        QueueConfig q;
        q.name = e.name;
        const std::string where = "queues." + e.name;
        const auto refused = apply(q, e.value, c, kQueueKeys, where);
        if (!e.value.IsMap() && !e.value.IsNull()) continue;  // apply said so
        const YAML::Node handler = e.value.IsMap() ? e.value["handler"] : YAML::Node();
        if (!handler && !misplaced_within(c, where, "handler")) {
          report(c, e.value, where + ": missing 'handler'");
        }
        auto h = cfg.handlers.find(q.handler);
        const bool known = h != cfg.handlers.end() && !broken.count(q.handler);
        const bool handlers_elsewhere =
            c.found->sections_elsewhere.count("handlers") && !adopted.count("handlers");
        if (handler && !refused.count("handler") && h == cfg.handlers.end() && !handlers_unread &&
            !handlers_elsewhere) {
          std::string names;
          for (const auto& [hn, hc] : cfg.handlers) names += (names.empty() ? "" : ", ") + hn;
          report(c, handler,
                 where + ": handler '" + q.handler + "' is not defined" +
                     (names.empty() ? " (no handlers are)" : " (defined: " + names + ")"));
        }
        if (!q.timeout_set && known && h->second.timeout) q.timeout = *h->second.timeout;
        if (q.max_timeout == 0ms) q.max_timeout = q.timeout;
        // Against a timeout that was refused, or would come from a handler that was, the
        // comparison would be with a default nobody wrote.
        const bool timeout_read =
            !refused.count("timeout") && !refused.count("max_timeout") && (q.timeout_set || known);
        if (timeout_read && q.max_timeout < q.timeout) {
          report(c, e.value,
                 where + ": max_timeout (" + format_duration(q.max_timeout) +
                     ") is below timeout (" + format_duration(q.timeout) + ")");
        }
        if (!refused.count("retry_base") && !refused.count("retry_max") &&
            q.retry_max < q.retry_base) {
          report(c, e.value,
                 where + ": retry_max (" + format_duration(q.retry_max) +
                     ") is below retry_base (" + format_duration(q.retry_base) + ")");
        }
        if (q.unique_set && q.shards > 1 && !refused.count("shards")) {
          report(c, e.value["unique"],
                 where + ".unique: needs a queue of one shard (this one has shards: " +
                     std::to_string(q.shards) +
                     "): a key's lock and its jobs' ids must be in "
                     "one slot");
        }
        if (!q.group_by.key.empty() && q.shards > 1 && !refused.count("shards")) {
          report(c, e.value["group_by"],
                 where + ".group_by: needs a queue of one shard (this one has shards: " +
                     std::to_string(q.shards) + "): the ring of groups lives in one slot");
        }
        if (!q.group_by.key.empty() && q.priorities_set && !refused.count("priorities")) {
          report(c, e.value["group_by"],
                 where +
                     ".group_by: not with priorities (not implemented yet: a group's jobs are "
                     "taken first in first out)");
        }
        if (q.sources.empty() && !refused.count("sources")) q.sources.push_back(SourceConfig{});
        std::set<std::string> dirs;
        for (const auto& s : q.sources) {
          if (s.kind == SourceConfig::Kind::spool && !dirs.insert(s.dir).second) {
            report(c, e.value["sources"], where + ": spool dir " + s.dir + " is listed twice");
          }
        }
        cfg.queues.push_back(std::move(q));
        queue_nodes.push_back(e.value);
      }
    }
    const bool queues_written =
        queues.IsDefined() && !queues.IsNull() && !(queues.IsMap() && queues.size() == 0);
    const bool queues_elsewhere =
        c.found->sections_elsewhere.count("queues") && !adopted.count("queues");
    if (!queues_written && !queues_elsewhere) {
      report(c, root, "no queues configured: add a 'queues' section with at least one queue");
    }
  }

  void read_schedules() {
    const YAML::Node schedules = section("schedules");
    if (schedules.IsDefined() && !schedules.IsNull() && !schedules.IsMap()) {
      report(c, schedules, "schedules must be a map of schedule names to settings");
      return;
    }
    if (!schedules.IsMap()) return;
    for (const auto& e : entries(schedules, c, "schedules", "a schedule name")) {
      if (!valid_name(e.name)) {
        report(c, e.key,
               "schedule name '" + e.name + "': use 1-64 characters of A-Z a-z 0-9 _ . -");
      }
      ScheduleConfig s;
      s.name = e.name;
      const auto& m = e.key.Mark();
      s.origin = c.origin + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
      const std::string where = "schedules." + e.name;
      const auto refused = apply(s, e.value, c, kScheduleKeys, where);
      if (!e.value.IsMap()) {
        if (e.value.IsNull()) report(c, e.key, where + ": needs cron and queue");
        continue;
      }
      if (!e.value["cron"] && !refused.count("cron")) {
        report(c, e.key, where + ": cron is missing (\"0 3 * * *\", @hourly, @every 30s)");
      }
      if (!e.value["queue"] && !refused.count("queue")) {
        report(c, e.key, where + ": queue is missing (the queue its jobs go to)");
      }
      if (const YAML::Node zone = e.value["timezone"]; zone && !refused.count("timezone")) {
        if (auto why = zone_problem(s.timezone); !why.empty()) {
          report(c, zone, where + ".timezone: " + why);
        }
      }
      if (const YAML::Node cron = e.value["cron"]; cron && !refused.count("cron")) {
        auto parsed = Cron::parse(s.cron, "");
        if (auto* p = std::get_if<CronProblem>(&parsed)) {
          // The column of the problem inside the expression, past a quote.
          YAML::Mark at = cron.Mark();
          const bool quoted = cron.Tag() == "!";
          if (!at.is_null()) at.column += static_cast<int>(p->column - 1) + (quoted ? 1 : 0);
          report_at(c, at, where + ".cron: " + p->message);
        }
      }
      if (!s.queue.empty() && !cfg.queue(s.queue) && e.value["queue"]) {
        std::string names;
        for (const auto& q : cfg.queues) names += (names.empty() ? "" : ", ") + q.name;
        report(c, e.value["queue"],
               where + ": queue '" + s.queue + "' is not configured" +
                   (names.empty() ? "" : " (queues: " + names + ")"));
      }
      if (const YAML::Node job = e.value["job"]; job && job.IsMap() && job["handler"]) {
        const auto handler = job["handler"].IsScalar() ? job["handler"].Scalar() : "";
        if (!cfg.handlers.count(handler) && !handlers_unread) {
          report(c, job["handler"],
                 where + ".job.handler: handler '" + handler + "' is not defined");
        }
      }
      cfg.schedules.push_back(std::move(s));
    }
  }

  // A spool directory belongs to one queue: two would race for the same files.
  void spool_owners() {
    std::map<std::string, std::string> owner;
    for (std::size_t i = 0; i < cfg.queues.size(); ++i) {
      const auto& q = cfg.queues[i];
      std::set<std::string> mine;  // listed twice in one queue: said above
      for (const auto& s : q.sources) {
        if (s.kind != SourceConfig::Kind::spool || !mine.insert(s.dir).second) continue;
        auto [it, fresh] = owner.emplace(s.dir, q.name);
        if (!fresh) {
          report(c, queue_nodes[i],
                 "queues." + q.name + ": spool dir " + s.dir + " is already the source of queue " +
                     it->second);
        }
      }
    }
  }
};

Config check(const std::string& text, const Ctx& c) {
  return Checker(c).run(text);
}

}  // namespace

std::string Diagnostic::text() const {
  if (line == 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

namespace {
std::string joined(const std::vector<Diagnostic>& problems) {
  std::string out;
  for (const auto& d : problems) out += (out.empty() ? "" : "\n") + d.text();
  return out;
}
}  // namespace

ConfigError::ConfigError(std::vector<Diagnostic> problems)
    : std::runtime_error(joined(problems)), problems_(std::move(problems)) {}

ConfigError::ConfigError(const std::string& file, const std::string& message)
    : ConfigError(std::vector<Diagnostic>{{file, 0, 0, message}}) {}

std::string count_line(const std::string& file, std::size_t errors) {
  return file + ": " + std::to_string(errors) + (errors == 1 ? " error" : " errors");
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  // Literal addresses only, as the kernel binds them: a name is whatever its DNS says.
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  std::string bare = host;
  if (bare.size() >= 2 && bare.front() == '[' && bare.back() == ']') {
    bare = bare.substr(1, bare.size() - 2);
  }
  in6_addr v6{};
  return inet_pton(AF_INET6, bare.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

std::string listen_host(const std::string& listen) {
  const auto colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

const QueueConfig* Config::queue(const std::string& name) const {
  for (const auto& q : queues) {
    if (q.name == name) return &q;
  }
  return nullptr;
}

std::string read_secret(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string v;
  if (!in) throw std::runtime_error(key + " " + path + ": cannot read it: " + std::strerror(errno));
  std::getline(in, v);
  const auto b = v.find_first_not_of(" \t\r");
  if (b == std::string::npos) {
    throw std::runtime_error(key + " " + path + ": its first line is empty");
  }
  return v.substr(b, v.find_last_not_of(" \t\r") - b + 1);
}

namespace {

// A secret from a file or a variable (one or neither is set): "" when neither.
std::string secret(const std::string& file, const std::string& env, const char* file_key,
                   const char* env_key) {
  if (!file.empty()) return read_secret(file, file_key);
  if (env.empty()) return "";
  const char* e = std::getenv(env.c_str());
  if (!e || !*e) {
    throw std::runtime_error(std::string(env_key) + ": the variable " + env +
                             " is not set (or empty)");
  }
  return e;
}

}  // namespace

std::string redis_password(const RedisSection& r) {
  return secret(r.password_file, r.password_env, "redis.password_file", "redis.password_env");
}

std::string sentinel_password(const RedisSection& r) {
  return secret(r.sentinel_password_file, r.sentinel_password_env, "redis.sentinel_password_file",
                "redis.sentinel_password_env");
}

std::vector<KeyInfo> schema() {
  // Defaults as a config that sets nothing gets them: some are filled in by parse() (a queue's
  // sources and max_timeout), not by the members' initializers.
  const Config minimal = parse(
      "handlers: {h: {type: builtin, name: noop}}\nqueues: {q: {handler: h}}\n", "defaults", "/");
  std::vector<KeyInfo> out;
  DaemonSection daemon = minimal.daemon;
  daemon.name.clear();  // the host name
  add_keys(out, "daemon", kDaemonKeys, daemon);
  add_keys(out, "redis", kRedisKeys, minimal.redis);
  add_keys(out, "http", kHttpKeys, minimal.http);
  add_keys(out, "logging", kLoggingKeys, minimal.logging);
  add_keys(out, "state", kStateKeys, minimal.state);
  add_keys(out, "handlers.*", kHandlerKeys);
  add_keys(out, "handlers.*.limits", kLimitKeys);
  add_keys(out, "queues.*", kQueueKeys, minimal.queues[0]);
  add_keys(out, "queues.*.retain", kRetainKeys, minimal.queues[0].retain);
  add_keys(out, "queues.*.unique", kUniqueKeys, minimal.queues[0].unique);
  add_keys(out, "queues.*.group_by", kGroupByKeys, minimal.queues[0].group_by);
  add_keys(out, "queues.*.sources.spool", kSpoolKeys);
  add_keys(out, "schedules.*", kScheduleKeys, ScheduleConfig{});
  return out;
}

std::vector<std::string> schema_keys() {
  std::vector<std::string> out;
  for (const auto& k : schema()) out.push_back(k.key);
  return out;
}

std::string print(const Config& cfg) {
  YAML::Node root(YAML::NodeType::Map);
  root["daemon"] = show_all(cfg.daemon, kDaemonKeys);
  root["redis"] = show_all(cfg.redis, kRedisKeys);
  root["http"] = show_all(cfg.http, kHttpKeys);
  root["logging"] = show_all(cfg.logging, kLoggingKeys);
  root["state"] = show_all(cfg.state, kStateKeys);
  YAML::Node handlers(YAML::NodeType::Map);
  for (const auto& [name, h] : cfg.handlers) handlers[name] = show_handler(h);
  root["handlers"] = handlers;
  YAML::Node queues(YAML::NodeType::Map);
  for (const auto& q : cfg.queues) queues[q.name] = show_all(q, kQueueKeys);
  root["queues"] = queues;
  if (!cfg.schedules.empty()) {
    YAML::Node schedules(YAML::NodeType::Map);
    for (const auto& sc : cfg.schedules) schedules[sc.name] = show_all(sc, kScheduleKeys);
    root["schedules"] = schedules;
  }
  YAML::Emitter out;
  out << root;
  return "# " + cfg.path + ": the effective config, every default filled in, secrets masked\n" +
         out.c_str() + "\n";
}

std::vector<std::string> restart_changes(const Config& a, const Config& b) {
  std::vector<std::string> out;
  restart_keys(a.daemon, b.daemon, kDaemonKeys, "daemon", out);
  restart_keys(a.redis, b.redis, kRedisKeys, "redis", out);
  // Shown masked: a new password in the URL would look the same.
  if (a.redis.url != b.redis.url && std::find(out.begin(), out.end(), "redis.url") == out.end()) {
    out.push_back("redis.url");
  }
  restart_keys(a.http, b.http, kHttpKeys, "http", out);
  restart_keys(a.logging, b.logging, kLoggingKeys, "logging", out);
  for (const auto& qa : a.queues) {
    if (const auto* qb = b.queue(qa.name)) {
      restart_keys(qa, *qb, kQueueKeys, "queues." + qa.name, out);
    }
  }
  // The password itself, where it comes from a file or the environment, is read at start only.
  return out;
}

bool same(const HandlerConfig& a, const HandlerConfig& b) {
  return YAML::Dump(show_handler(a)) == YAML::Dump(show_handler(b)) && a.env == b.env &&
         a.url == b.url;
}

bool same(const SourceConfig& a, const SourceConfig& b) {
  return a.kind == b.kind &&
         YAML::Dump(show_all(a, kSpoolKeys)) == YAML::Dump(show_all(b, kSpoolKeys));
}

Config parse(const std::string& text, const std::string& origin, const std::string& base_dir) {
  Found found;
  Ctx c{origin, base_dir, &found};
  Config cfg = check(text, c);
  if (found.problems.empty()) return cfg;
  auto& all = found.problems;
  std::stable_sort(all.begin(), all.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  all.erase(std::unique(all.begin(), all.end(),
                        [](const Diagnostic& a, const Diagnostic& b) {
                          return a.line == b.line && a.column == b.column && a.message == b.message;
                        }),
            all.end());
  throw ConfigError(std::move(all));
}

Config load_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw ConfigError(path, "is a directory, not a config file (give the YAML file itself)");
  }
  std::ifstream in(path);
  if (!in)
    throw ConfigError(path, std::string("cannot read the config file: ") + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  fs::path dir = fs::absolute(fs::path(path)).parent_path();
  return parse(ss.str(), path, dir.string());
}

}  // namespace jq::config
