// Config schema (one key table per section: name, type, reloadable, parser) and validation.
#include "config/config.hpp"

#include "config/command.hpp"
#include "config/http_url.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace jq::config {
namespace {

namespace fs = std::filesystem;

struct Ctx {
  std::string origin;
  std::string base_dir;
};

[[noreturn]] void fail_at(const Ctx& c, const YAML::Mark& m, const std::string& msg) {
  if (m.is_null()) throw ConfigError(c.origin + ": " + msg);
  throw ConfigError(c.origin + ":" + std::to_string(m.line + 1) + ":" +
                    std::to_string(m.column + 1) + ": " + msg);
}
[[noreturn]] void fail(const Ctx& c, const YAML::Node& at, const std::string& msg) {
  fail_at(c, at.Mark(), msg);
}

}  // namespace

// Levenshtein distance, for "did you mean" on unknown keys (and jobqd's unknown flags).
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

namespace {

std::string scalar(const YAML::Node& n, const Ctx& c, const std::string& what) {
  if (!n.IsScalar()) fail(c, n, what + ": must be a single value, not a list or map");
  return n.Scalar();
}

// yaml-cpp keeps both entries of a key written twice and lookups see the first, so a repeated
// key would silently mean something: it is an error, naming both places.
void check_unique(const YAML::Node& map, const Ctx& c, const std::string& where) {
  if (!map.IsMap()) return;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) continue;
    auto [it, fresh] = seen.emplace(kv.first.Scalar(), kv.first.Mark());
    if (!fresh) {
      fail(c, kv.first,
           "duplicate key '" + kv.first.Scalar() + "' in " + where + " (first at line " +
               std::to_string(it->second.line + 1) + ", column " +
               std::to_string(it->second.column + 1) + ")");
    }
  }
}

Millis as_duration(const YAML::Node& n, const Ctx& c, const std::string& key, Millis min = 0ms) {
  std::string s = scalar(n, c, key);
  auto d = parse_duration(s);
  if (!d) fail(c, n, key + ": '" + s + "' is not a duration (write it like 250ms, 30s, 5m or 1h)");
  if (*d < min) fail(c, n, key + ": must be at least " + format_duration(min));
  return *d;
}

std::uint64_t as_count(const YAML::Node& n, const Ctx& c, const std::string& key, std::uint64_t min,
                       std::uint64_t max) {
  std::string s = scalar(n, c, key);
  const std::string allowed =
      "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  const bool digits =
      !s.empty() && s.find_first_not_of("0123456789", s[0] == '-') == s.npos && s != "-";
  if (digits && (s[0] == '-' || ec == std::errc::result_out_of_range)) {
    fail(c, n, key + ": " + s + " is out of range (" + allowed + ")");
  }
  if (ec != std::errc() || end != s.data() + s.size()) {
    fail(c, n, key + ": '" + s + "' is not " + allowed);
  }
  if (v < min || v > max) fail(c, n, key + ": " + s + " is out of range (" + allowed + ")");
  return v;
}

std::uint64_t as_size(const YAML::Node& n, const Ctx& c, const std::string& key,
                      std::uint64_t min = 1) {
  std::string s = scalar(n, c, key);
  auto v = parse_size(s);
  if (!v) fail(c, n, key + ": '" + s + "' is not a size (bytes, or with KB, MB, KiB, MiB...)");
  if (*v < min) fail(c, n, key + ": must be at least " + std::to_string(min) + " bytes");
  return *v;
}

bool as_bool(const YAML::Node& n, const Ctx& c, const std::string& key) {
  std::string s = scalar(n, c, key);
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  fail(c, n, key + ": '" + s + "' is not true or false");
}

std::string as_string(const YAML::Node& n, const Ctx& c, const std::string& key,
                      bool allow_empty = false) {
  std::string s = scalar(n, c, key);
  if (!allow_empty && s.empty()) fail(c, n, key + ": must not be empty");
  return s;
}

std::string as_path(const YAML::Node& n, const Ctx& c, const std::string& key) {
  fs::path p = as_string(n, c, key);
  if (p.is_relative()) p = fs::path(c.base_dir) / p;
  return p.lexically_normal().string();
}

std::vector<std::string> as_string_list(const YAML::Node& n, const Ctx& c, const std::string& key) {
  if (!n.IsSequence()) fail(c, n, key + ": must be a list, like [\"/usr/bin/prog\", \"{file}\"]");
  std::vector<std::string> out;
  for (const auto& item : n) out.push_back(scalar(item, c, key + " entries"));
  return out;
}

std::map<std::string, std::string> as_string_map(const YAML::Node& n, const Ctx& c,
                                                 const std::string& key) {
  if (!n.IsMap()) fail(c, n, key + ": must be a map of names to values");
  check_unique(n, c, key);
  std::map<std::string, std::string> out;
  for (const auto& kv : n) {
    const std::string name = scalar(kv.first, c, key + " names");
    out[name] = scalar(kv.second, c, key + "." + name);
  }
  return out;
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

// Rows for the common types: one line each, the range beside the member.
template <class S>
Key<S> duration_key(const char* name, Millis S::*m, Millis min, Reload r) {
  return {name, "duration", r,
          [m, min](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_duration(n, c, k, min);
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> count_key(const char* name, std::uint64_t S::*m, std::uint64_t min, std::uint64_t max,
                 Reload r) {
  return {name, "count", r,
          [m, min, max](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_count(n, c, k, min, max);
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> size_key(const char* name, std::uint64_t S::*m, std::uint64_t min, Reload r) {
  return {name, "size", r,
          [m, min](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_size(n, c, k, min);
          },
          [m](const S& s) { return shown(format_size(s.*m)); }};
}
template <class S>
Key<S> bool_key(const char* name, bool S::*m, Reload r) {
  return {name, "bool", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_bool(n, c, k);
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> string_key(const char* name, std::string S::*m, Reload r) {
  return {name, "string", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_string(n, c, k);
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> path_key(const char* name, std::string S::*m, Reload r) {
  return {name, "path", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_path(n, c, k);
          },
          [m](const S& s) { return shown(s.*m); }};
}
template <class S>
Key<S> map_key(const char* name, std::map<std::string, std::string> S::*m, Reload r) {
  return {name, "map", r,
          [m](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            s.*m = as_string_map(n, c, k);
          },
          [m](const S& s) { return shown(s.*m); }};
}
// One of a few words.
template <class S>
Key<S> choice_key(const char* name, const char* type, std::string S::*m,
                  std::vector<std::string> words, Reload r) {
  return {name, type, r,
          [m, words](S& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
            const std::string v = as_string(n, c, k);
            if (std::find(words.begin(), words.end(), v) == words.end()) {
              std::string list = words.size() > 2 ? "one of " : "";
              for (std::size_t i = 0; i < words.size(); ++i) {
                list += (i == 0 ? "" : words.size() > 2 ? ", " : " or ") + words[i];
              }
              fail(c, n, k + ": '" + v + "' is not " + list);
            }
            s.*m = v;
          },
          [m](const S& s) { return shown(s.*m); }};
}

// Applies `table` to the map `n`: every key must be known; unknown ones get a suggestion.
template <class S, std::size_t N>
void apply(S& s, const YAML::Node& n, const Ctx& c, const Key<S> (&table)[N],
           const std::string& where) {
  if (n.IsNull()) return;
  if (!n.IsMap()) fail(c, n, where + " must be a map of settings");
  check_unique(n, c, where);
  for (const auto& kv : n) {
    std::string name = scalar(kv.first, c, "a key in " + where);
    const Key<S>* found = nullptr;
    for (const auto& k : table) {
      if (name == k.name) found = &k;
    }
    if (!found) {
      std::string best;
      std::size_t best_d = 3;
      for (const auto& k : table) {
        std::size_t d = edit_distance(name, k.name);
        if (d < best_d) {
          best_d = d;
          best = k.name;
        }
      }
      fail(c, kv.first,
           "unknown key '" + name + "' in " + where +
               (best.empty() ? "" : " (did you mean '" + best + "'?)"));
    }
    found->parse(s, kv.second, c, where + "." + name);
  }
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
    choice_key("log_level", "string", &DaemonSection::log_level,
               {"trace", "debug", "info", "warn", "error"}, live),
    {"name", "string", restart,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.name = as_string(n, c, k);
       if (!valid_name(s.name)) fail(c, n, k + ": use 1-64 characters of A-Z a-z 0-9 _ . -");
     },
     [](const DaemonSection& s) { return shown(s.name); }},
};

const Key<LoggingSection> kLoggingKeys[] = {
    {"format", "text | json", restart,
     [](LoggingSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       const std::string v = as_string(n, c, k);
       if (v != "text" && v != "json") fail(c, n, k + ": '" + v + "' is not text or json");
       s.json = v == "json";
     },
     [](const LoggingSection& s) { return shown(std::string(s.json ? "json" : "text")); }},
};

// A feature of a later version: only `false` is accepted.
template <class S>
Key<S> not_yet_key(const char* name, const char* why) {
  return {name, "bool", restart,
          [why](S&, const YAML::Node& n, const Ctx& c, const std::string& k) {
            if (as_bool(n, c, k)) fail(c, n, k + ": " + why + "; set false");
          },
          [](const S&) { return shown(false); }};
}

const Key<HttpSection> kHttpKeys[] = {
    {"listen", "host:port | off", restart,
     [](HttpSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.listen = as_string(n, c, k);
       if (s.listen == "off") {
         s.listen.clear();
         return;
       }
       const auto colon = s.listen.rfind(':');
       const std::string port = colon == std::string::npos ? "" : s.listen.substr(colon + 1);
       if (colon == std::string::npos || colon == 0 || port.empty() || port.size() > 5 ||
           port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
         fail(c, n, k + ": '" + s.listen + "' is not host:port (or off)");
       }
     },
     [](const HttpSection& s) { return shown(s.listen.empty() ? "off" : s.listen); }},
    path_key("token_file", &HttpSection::token_file, restart),
    not_yet_key<HttpSection>("dashboard", "the dashboard is not in this version of jobqd yet"),
    not_yet_key<HttpSection>("read_only",
                             "there is no dashboard to make read-only in this version"),
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

const Key<RedisSection> kRedisKeys[] = {
    {"url", "string", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.url = as_string(n, c, k);
       if (s.url != "embedded" && s.url.rfind("redis://", 0) != 0 &&
           s.url.rfind("unix://", 0) != 0) {
         fail(c, n,
              k + ": '" + masked_url(s.url) +
                  "' is not redis://[user:password@]host:port/db, unix:///path or embedded");
       }
     },
     [](const RedisSection& s) { return shown(masked_url(s.url)); }},
    {"key_prefix", "string", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.key_prefix = as_string(n, c, k);
       if (s.key_prefix.find_first_of("{}: \t") != std::string::npos) {
         fail(c, n, k + ": must not contain braces, colons or spaces");
       }
     },
     [](const RedisSection& s) { return shown(s.key_prefix); }},
    duration_key("connect_timeout", &RedisSection::connect_timeout, 10ms, restart),
    duration_key("command_timeout", &RedisSection::command_timeout, 100ms, restart),
    string_key("server_binary", &RedisSection::server_binary, restart),
    path_key("password_file", &RedisSection::password_file, restart),
    {"password_env", "string", restart,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       s.password_env = as_string(n, c, k);
       if (s.password_env.find_first_not_of(
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
           std::string::npos) {
         fail(c, n, k + ": '" + s.password_env + "' is not a variable name");
       }
     },
     [](const RedisSection& s) { return shown(s.password_env); }},
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
       std::string t = as_string(n, c, k);
       if (t == "builtin") {
         h.type = HandlerType::builtin;
       } else if (t == "exec") {
         h.type = HandlerType::exec;
       } else if (t == "http") {
         h.type = HandlerType::http;
       } else {
         fail(c, n, k + ": '" + t + "' is not builtin, exec or http");
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
       h.command = as_string_list(n, c, k);
       if (h.command.empty()) fail(c, n, k + ": must name a program");
       if (h.command[0].empty() || h.command[0][0] != '/') {
         fail(c, n, k + ": the program must be an absolute path, got '" + h.command[0] + "'");
       }
       for (std::size_t i = 0; i < h.command.size(); ++i) {
         auto parsed = parse_arg(h.command[i]);
         if (auto* error = std::get_if<std::string>(&parsed)) {
           fail(c, n[i], k + "[" + std::to_string(i) + "]: " + *error);
         }
       }
       if (parse_arg(h.command[0]).index() == 0 &&
           std::get<ArgTemplate>(parse_arg(h.command[0])).size() != 1) {
         fail(c, n[0], k + ": the program itself cannot contain placeholders");
       }
     },
     [](const HandlerConfig& h) { return shown(h.command); }},
    {"env", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       h.env = as_string_map(n, c, k);
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
       if (!n.IsSequence()) fail(c, n, k + ": must be a list of exit codes");
       h.no_retry_exit_codes.clear();
       for (const auto& item : n) {
         h.no_retry_exit_codes.push_back(static_cast<int>(as_count(item, c, k, 1, 255)));
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
       h.url = as_string(n, c, k);
       auto parsed = parse_http_url(h.url);
       if (auto* why = std::get_if<std::string>(&parsed)) {
         // Not echoed when it holds credentials: config errors end up in logs.
         std::string shown = h.url.find('@') == std::string::npos ? "'" + h.url + "' " : "";
         fail(c, n, k + " " + shown + *why);
       }
     },
     [](const HandlerConfig& h) { return shown(masked_url(h.url)); }},
    {"headers", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       h.headers = as_string_map(n, c, k);
       for (const auto& [name, v] : h.headers) {
         std::string lower;
         for (char ch : name) {
           lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
         }
         if (lower == "authorization" || lower == "proxy-authorization" || lower == "cookie") {
           fail(c, n,
                k + ": " + name +
                    " carries a secret: give it with headers_from_env or headers_from_file, so "
                    "that it stays out of the config file");
         }
       }
     },
     [](const HandlerConfig& h) { return shown(h.headers); }},
    map_key("headers_from_env", &HandlerConfig::headers_from_env, live),
    {"headers_from_file", "map", live,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c, const std::string& k) {
       h.headers_from_file = as_string_map(n, c, k);
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

HandlerConfig parse_handler(const std::string& name, const YAML::Node& n, const Ctx& c) {
  std::string where = "handlers." + name;
  if (!n.IsMap()) fail(c, n, where + " must be a map with a type");
  if (!n["type"]) fail(c, n, where + ": missing 'type' (builtin, exec or http)");
  HandlerConfig h;
  h.name = name;
  apply(h, n, c, kHandlerKeys, where);
  const auto& allowed = kKeysOfType.at(h.type);
  for (const auto& kv : n) {
    std::string k = kv.first.Scalar();
    if (k == "type" || k == "timeout") continue;
    if (!allowed.count(k)) {
      fail(c, kv.first,
           where + ": '" + k + "' does not apply to a handler of type " + type_name(h.type));
    }
  }
  switch (h.type) {
    case HandlerType::builtin:
      if (h.builtin.empty()) fail(c, n, where + ": a builtin handler needs 'name'");
      break;
    case HandlerType::exec:
      if (h.command.empty()) fail(c, n, where + ": an exec handler needs 'command'");
      break;
    case HandlerType::http:
      if (h.url.empty()) fail(c, n, where + ": an http handler needs 'url'");
      break;
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
       s.ignore = as_string_list(n, c, k);
     },
     [](const SourceConfig& s) { return shown(s.ignore); }},
    {"on_success", "delete | move", live,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c, const std::string& k) {
       std::string v = as_string(n, c, k);
       if (v != "delete" && v != "move") {
         fail(c, n, k + ": '" + v + "' is not delete or move (to done/)");
       }
       s.keep_done = v == "move";
     },
     [](const SourceConfig& s) { return shown(std::string(s.keep_done ? "move" : "delete")); }},
    duration_key("quiet", &SourceConfig::quiet, 0ms, live),
    bool_key("recursive", &SourceConfig::recursive, live),
};

SourceConfig parse_source(const YAML::Node& n, const Ctx& c, const std::string& where) {
  if (!n.IsMap() || n.size() != 1) {
    fail(c, n, where + ": each source is a map with one key, redis or spool");
  }
  auto kv = *n.begin();
  std::string kind = scalar(kv.first, c, where);
  SourceConfig s;
  if (kind == "redis") {
    s.kind = SourceConfig::Kind::redis;
    if (!kv.second.IsNull() && !(kv.second.IsMap() && kv.second.size() == 0)) {
      fail(c, kv.second, where + ": the redis source takes no settings ({})");
    }
  } else if (kind == "spool") {
    s.kind = SourceConfig::Kind::spool;
    apply(s, kv.second, c, kSpoolKeys, where + ".spool");
    if (s.dir.empty()) fail(c, kv.second, where + ": a spool source needs 'dir'");
  } else {
    fail(c, kv.first, where + ": unknown source '" + kind + "' (redis or spool)");
  }
  return s;
}

const Key<Retain> kRetainKeys[] = {
    {"succeeded", "duration", live,
     [](Retain& r, const YAML::Node& n, const Ctx& c, const std::string& k) {
       r.succeeded = as_duration(n, c, k);
       if (r.succeeded != 0ms && r.succeeded < 1s) {
         fail(c, n, k + ": must be 0 (delete at once) or at least 1s");
       }
     },
     [](const Retain& r) { return shown(r.succeeded); }},
    duration_key("failed", &Retain::failed, 1s, live),
};

const Key<QueueConfig> kQueueKeys[] = {
    string_key("handler", &QueueConfig::handler, live),
    count_key("concurrency", &QueueConfig::concurrency, 1, 100000, live),
    count_key("buffer", &QueueConfig::buffer, 1, 1000000, live),
    count_key("fetch_batch", &QueueConfig::fetch_batch, 1, 1000, live),
    count_key("max_attempts", &QueueConfig::max_attempts, 1, 1000, live),
    {"timeout", "duration", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       q.timeout = as_duration(n, c, k, 1ms);
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
    {"sources", "list", live,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c, const std::string& k) {
       if (!n.IsSequence()) fail(c, n, k + ": must be a list (- redis: {} / - spool: {dir: ...})");
       q.sources.clear();
       for (std::size_t i = 0; i < n.size(); ++i) {
         q.sources.push_back(parse_source(n[i], c, k + "[" + std::to_string(i) + "]"));
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

}  // namespace

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-';
  });
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

std::string redis_password(const RedisSection& r) {
  if (!r.password_file.empty()) return read_secret(r.password_file, "redis.password_file");
  if (r.password_env.empty()) return "";
  const char* e = std::getenv(r.password_env.c_str());
  if (!e || !*e) {
    throw std::runtime_error("redis.password_env: the variable " + r.password_env +
                             " is not set (or empty)");
  }
  return e;
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
  add_keys(out, "handlers.*", kHandlerKeys);
  add_keys(out, "handlers.*.limits", kLimitKeys);
  add_keys(out, "queues.*", kQueueKeys, minimal.queues[0]);
  add_keys(out, "queues.*.retain", kRetainKeys, minimal.queues[0].retain);
  add_keys(out, "queues.*.sources.spool", kSpoolKeys);
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
  YAML::Node handlers(YAML::NodeType::Map);
  for (const auto& [name, h] : cfg.handlers) handlers[name] = show_handler(h);
  root["handlers"] = handlers;
  YAML::Node queues(YAML::NodeType::Map);
  for (const auto& q : cfg.queues) queues[q.name] = show_all(q, kQueueKeys);
  root["queues"] = queues;
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
  Ctx c{origin, base_dir};
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail_at(c, e.mark, "not valid YAML: " + e.msg);
  }
  if (!root.IsMap())
    fail(c, root, "the config must be a map with sections (redis, handlers, queues)");

  check_unique(root, c, "the config");
  Config cfg;
  cfg.path = origin;
  YAML::Node handlers, queues;
  bool have_queues = false;
  for (const auto& kv : root) {
    std::string section = scalar(kv.first, c, "a section name");
    if (section == "daemon") {
      apply(cfg.daemon, kv.second, c, kDaemonKeys, "daemon");
    } else if (section == "redis") {
      apply(cfg.redis, kv.second, c, kRedisKeys, "redis");
      const auto& r = cfg.redis;
      const bool inline_password = r.url.rfind("redis://", 0) == 0 &&
                                   r.url.find('@') != std::string::npos &&
                                   r.url.find(':', 8) < r.url.find('@');
      if (!r.password_file.empty() + !r.password_env.empty() + inline_password > 1) {
        fail(c, kv.first,
             "redis: give the password one way: password_file, password_env or in the url");
      }
    } else if (section == "http") {
      apply(cfg.http, kv.second, c, kHttpKeys, "http");
      const std::string host = cfg.http.listen.substr(0, cfg.http.listen.rfind(':'));
      const bool loopback =
          host == "localhost" || host == "[::1]" || host == "::1" || host.rfind("127.", 0) == 0;
      if (!cfg.http.listen.empty() && !loopback && cfg.http.token_file.empty()) {
        fail(c, kv.second["listen"].IsDefined() ? kv.second["listen"] : kv.first,
             "http.listen: " + cfg.http.listen +
                 " is not loopback: set http.token_file (requests then need "
                 "'Authorization: Bearer <token>'), or listen on 127.0.0.1");
      }
    } else if (section == "logging") {
      apply(cfg.logging, kv.second, c, kLoggingKeys, "logging");
    } else if (section == "metrics") {
      fail(c, kv.first, "metrics: the section is called http now (http.listen)");
    } else if (section == "handlers") {
      handlers = kv.second;
    } else if (section == "queues") {
      queues = kv.second;
      have_queues = true;
    } else {
      static const char* known[] = {"daemon", "redis", "http", "logging", "handlers", "queues"};
      std::string best;
      for (const char* k : known) {
        if (edit_distance(section, k) <= 2) best = k;
      }
      fail(c, kv.first,
           "unknown section '" + section + "'" +
               (best.empty() ? " (sections: daemon, redis, http, logging, handlers, queues)"
                             : " (did you mean '" + best + "'?)"));
    }
  }

  if (handlers.IsDefined() && !handlers.IsNull()) {
    if (!handlers.IsMap()) fail(c, handlers, "handlers must be a map of names to definitions");
    check_unique(handlers, c, "handlers");
    for (const auto& kv : handlers) {
      std::string name = scalar(kv.first, c, "a handler name");
      if (!valid_name(name)) {
        fail(c, kv.first, "handler name '" + name + "': use 1-64 characters of A-Z a-z 0-9 _ . -");
      }
      HandlerConfig& h = cfg.handlers[name] = parse_handler(name, kv.second, c);
      const auto& m = kv.first.Mark();
      h.origin = c.origin + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
    }
  }

  if (!have_queues || queues.IsNull() || (queues.IsMap() && queues.size() == 0)) {
    fail(c, root, "no queues configured: add a 'queues' section with at least one queue");
  }
  if (!queues.IsMap()) fail(c, queues, "queues must be a map of queue names to settings");
  check_unique(queues, c, "queues");
  for (const auto& kv : queues) {
    std::string name = scalar(kv.first, c, "a queue name");
    if (!valid_name(name)) {
      fail(c, kv.first, "queue name '" + name + "': use 1-64 characters of A-Z a-z 0-9 _ . -");
    }
    QueueConfig q;
    q.name = name;
    std::string where = "queues." + name;
    apply(q, kv.second, c, kQueueKeys, where);
    if (q.handler.empty()) fail(c, kv.second, where + ": missing 'handler'");
    auto h = cfg.handlers.find(q.handler);
    if (h == cfg.handlers.end()) {
      std::string names;
      for (const auto& [hn, hc] : cfg.handlers) names += (names.empty() ? "" : ", ") + hn;
      fail(c, kv.second["handler"],
           where + ": handler '" + q.handler + "' is not defined" +
               (names.empty() ? " (no handlers are)" : " (defined: " + names + ")"));
    }
    if (!q.timeout_set && h->second.timeout) q.timeout = *h->second.timeout;
    if (q.max_timeout == 0ms) q.max_timeout = q.timeout;
    if (q.max_timeout < q.timeout) {
      fail(c, kv.second,
           where + ": max_timeout (" + format_duration(q.max_timeout) + ") is below timeout (" +
               format_duration(q.timeout) + ")");
    }
    if (q.retry_max < q.retry_base) {
      fail(c, kv.second,
           where + ": retry_max (" + format_duration(q.retry_max) + ") is below retry_base (" +
               format_duration(q.retry_base) + ")");
    }
    if (q.sources.empty()) q.sources.push_back(SourceConfig{});
    std::set<std::string> dirs;
    for (const auto& s : q.sources) {
      if (s.kind == SourceConfig::Kind::spool && !dirs.insert(s.dir).second) {
        fail(c, kv.second["sources"], where + ": spool dir " + s.dir + " is listed twice");
      }
    }
    cfg.queues.push_back(std::move(q));
  }
  // A spool directory belongs to one queue: two would race for the same files.
  std::map<std::string, std::string> owner;
  for (const auto& q : cfg.queues) {
    for (const auto& s : q.sources) {
      if (s.kind != SourceConfig::Kind::spool) continue;
      auto [it, fresh] = owner.emplace(s.dir, q.name);
      if (!fresh) {
        fail(c, queues[q.name],
             "queues." + q.name + ": spool dir " + s.dir + " is already the source of queue " +
                 it->second);
      }
    }
  }
  if (cfg.daemon.name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0 || !valid_name(host)) {
      std::snprintf(host, sizeof host, "jobqd");
    }
    cfg.daemon.name = host;
  }
  return cfg;
}

Config load_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw ConfigError(path + ": is a directory, not a config file (give the YAML file itself)");
  }
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read the config file: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  fs::path dir = fs::absolute(fs::path(path)).parent_path();
  return parse(ss.str(), path, dir.string());
}

}  // namespace jq::config
