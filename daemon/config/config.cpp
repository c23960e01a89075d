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

// Levenshtein distance, for "did you mean" on unknown keys.
std::size_t distance(const std::string& a, const std::string& b) {
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

std::string scalar(const YAML::Node& n, const Ctx& c, const std::string& what) {
  if (!n.IsScalar()) fail(c, n, what + " must be a single value, not a list or map");
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
    out[scalar(kv.first, c, key + " names")] = scalar(kv.second, c, key + " values");
  }
  return out;
}

// One entry of a section's key table.
template <class S>
struct Key {
  const char* name;
  const char* type;
  bool reloadable;  // a SIGHUP may change it on a running daemon
  void (*parse)(S&, const YAML::Node&, const Ctx&);
};

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
        std::size_t d = distance(name, k.name);
        if (d < best_d) {
          best_d = d;
          best = k.name;
        }
      }
      fail(c, kv.first,
           "unknown key '" + name + "' in " + where +
               (best.empty() ? "" : " (did you mean '" + best + "'?)"));
    }
    found->parse(s, kv.second, c);
  }
}

const Key<DaemonSection> kDaemonKeys[] = {
    {"state_dir", "path", false,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.state_dir = as_path(n, c, "daemon.state_dir");
     }},
    {"lease", "duration", false,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.lease = as_duration(n, c, "daemon.lease", 1s);
     }},
    {"shutdown_grace", "duration", true,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.shutdown_grace = as_duration(n, c, "daemon.shutdown_grace");
     }},
    {"log_summary", "duration", true,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.log_summary = as_duration(n, c, "daemon.log_summary", 0ms);
     }},
    {"log_level", "string", true,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.log_level = as_string(n, c, "daemon.log_level");
       static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
       if (!levels.count(s.log_level)) {
         fail(c, n,
              "daemon.log_level: '" + s.log_level +
                  "' is not one of trace, debug, info, warn, error");
       }
     }},
    {"name", "string", false,
     [](DaemonSection& s, const YAML::Node& n, const Ctx& c) {
       s.name = as_string(n, c, "daemon.name");
       if (!valid_name(s.name)) {
         fail(c, n, "daemon.name: use 1-64 characters of A-Z a-z 0-9 _ . -");
       }
     }},
};

const Key<LoggingSection> kLoggingKeys[] = {
    {"format", "text | json", false,
     [](LoggingSection& s, const YAML::Node& n, const Ctx& c) {
       const std::string v = as_string(n, c, "logging.format");
       if (v != "text" && v != "json") {
         fail(c, n, "logging.format: '" + v + "' is not text or json");
       }
       s.json = v == "json";
     }},
};

const Key<HttpSection> kHttpKeys[] = {
    {"listen", "host:port | off", false,
     [](HttpSection& s, const YAML::Node& n, const Ctx& c) {
       s.listen = as_string(n, c, "http.listen");
       if (s.listen == "off") {
         s.listen.clear();
         return;
       }
       const auto colon = s.listen.rfind(':');
       const std::string port = colon == std::string::npos ? "" : s.listen.substr(colon + 1);
       if (colon == std::string::npos || colon == 0 || port.empty() || port.size() > 5 ||
           port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
         fail(c, n, "http.listen: '" + s.listen + "' is not host:port (or off)");
       }
     }},
    {"token_file", "path", false,
     [](HttpSection& s, const YAML::Node& n, const Ctx& c) {
       s.token_file = as_path(n, c, "http.token_file");
     }},
    {"dashboard", "bool", false,
     [](HttpSection&, const YAML::Node& n, const Ctx& c) {
       if (as_bool(n, c, "http.dashboard")) {
         fail(c, n, "http.dashboard: the dashboard is not in this version of jobqd yet; set false");
       }
     }},
    {"read_only", "bool", false,
     [](HttpSection&, const YAML::Node& n, const Ctx& c) {
       if (as_bool(n, c, "http.read_only")) {
         fail(c, n,
              "http.read_only: there is no dashboard to make read-only in this version; "
              "set false");
       }
     }},
};

const Key<RedisSection> kRedisKeys[] = {
    {"url", "string", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.url = as_string(n, c, "redis.url");
       if (s.url != "embedded" && s.url.rfind("redis://", 0) != 0 &&
           s.url.rfind("unix://", 0) != 0) {
         fail(c, n,
              "redis.url: '" + s.url +
                  "' is not redis://[user:password@]host:port/db, unix:///path or embedded");
       }
     }},
    {"key_prefix", "string", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.key_prefix = as_string(n, c, "redis.key_prefix");
       if (s.key_prefix.find_first_of("{}: \t") != std::string::npos) {
         fail(c, n, "redis.key_prefix: must not contain braces, colons or spaces");
       }
     }},
    {"connect_timeout", "duration", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.connect_timeout = as_duration(n, c, "redis.connect_timeout", 10ms);
     }},
    {"command_timeout", "duration", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.command_timeout = as_duration(n, c, "redis.command_timeout", 100ms);
     }},
    {"server_binary", "string", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.server_binary = as_string(n, c, "redis.server_binary");
     }},
    {"password_file", "path", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.password_file = as_path(n, c, "redis.password_file");
     }},
    {"password_env", "string", false,
     [](RedisSection& s, const YAML::Node& n, const Ctx& c) {
       s.password_env = as_string(n, c, "redis.password_env");
       if (s.password_env.empty() ||
           s.password_env.find_first_not_of(
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
               std::string::npos) {
         fail(c, n, "redis.password_env: '" + s.password_env + "' is not a variable name");
       }
     }},
};

const Key<ExecLimits> kLimitKeys[] = {
    {"cpu", "duration", true,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c) {
       s.cpu = as_duration(n, c, "limits.cpu", 1s);
     }},
    {"address_space", "size", true,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c) {
       s.address_space = as_size(n, c, "limits.address_space", 1024 * 1024);
     }},
    {"open_files", "count", true,
     [](ExecLimits& s, const YAML::Node& n, const Ctx& c) {
       s.open_files = as_count(n, c, "limits.open_files", 3, 1 << 20);
     }},
};

// Handler keys; which apply to which type is checked after the table ran.
const Key<HandlerConfig> kHandlerKeys[] = {
    {"type", "builtin|exec|http", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       std::string t = as_string(n, c, "type");
       if (t == "builtin") {
         h.type = HandlerType::builtin;
       } else if (t == "exec") {
         h.type = HandlerType::exec;
       } else if (t == "http") {
         h.type = HandlerType::http;
       } else {
         fail(c, n, "handlers." + h.name + ".type: '" + t + "' is not builtin, exec or http");
       }
     }},
    {"timeout", "duration", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.timeout = as_duration(n, c, "timeout", 1ms);
     }},
    {"name", "noop|echo|sleep|fail", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.builtin = as_string(n, c, "name");
       if (h.builtin != "noop" && h.builtin != "echo" && h.builtin != "sleep" &&
           h.builtin != "fail") {
         fail(c, n, "name: '" + h.builtin + "' is not a builtin (noop, echo, sleep, fail)");
       }
     }},
    {"command", "list", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.command = as_string_list(n, c, "command");
       if (h.command.empty()) fail(c, n, "command: must name a program");
       if (h.command[0].empty() || h.command[0][0] != '/') {
         fail(c, n, "command: the program must be an absolute path, got '" + h.command[0] + "'");
       }
       for (std::size_t i = 0; i < h.command.size(); ++i) {
         auto parsed = parse_arg(h.command[i]);
         if (auto* error = std::get_if<std::string>(&parsed)) {
           fail(c, n[i], "command[" + std::to_string(i) + "]: " + *error);
         }
       }
       if (parse_arg(h.command[0]).index() == 0 &&
           std::get<ArgTemplate>(parse_arg(h.command[0])).size() != 1) {
         fail(c, n[0], "command: the program itself cannot contain placeholders");
       }
     }},
    {"env", "map", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.env = as_string_map(n, c, "env");
     }},
    {"cwd", "path", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) { h.cwd = as_path(n, c, "cwd"); }},
    {"user", "string", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) { h.user = as_string(n, c, "user"); }},
    {"group", "string", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.group = as_string(n, c, "group");
     }},
    {"kill_grace", "duration", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.kill_grace = as_duration(n, c, "kill_grace");
     }},
    {"max_output", "size", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.max_output = as_size(n, c, "max_output");
     }},
    {"max_stderr", "size", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.max_stderr = as_size(n, c, "max_stderr");
     }},
    {"no_retry_exit_codes", "list", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       if (!n.IsSequence()) fail(c, n, "no_retry_exit_codes: must be a list of exit codes");
       h.no_retry_exit_codes.clear();
       for (const auto& item : n) {
         h.no_retry_exit_codes.push_back(
             static_cast<int>(as_count(item, c, "no_retry_exit_codes", 1, 255)));
       }
     }},
    {"limits", "map", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       apply(h.limits, n, c, kLimitKeys, "limits");
     }},
    {"url", "string", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.url = as_string(n, c, "url");
       auto parsed = parse_http_url(h.url);
       if (auto* why = std::get_if<std::string>(&parsed)) {
         // Not echoed when it holds credentials: config errors end up in logs.
         std::string shown = h.url.find('@') == std::string::npos ? "'" + h.url + "' " : "";
         fail(c, n, "handlers." + h.name + ".url " + shown + *why);
       }
     }},
    {"headers", "map", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.headers = as_string_map(n, c, "headers");
       for (const auto& [k, v] : h.headers) {
         std::string lower;
         for (char ch : k) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
         if (lower == "authorization" || lower == "proxy-authorization" || lower == "cookie") {
           fail(c, n,
                "headers: " + k +
                    " carries a secret: give it with headers_from_env or headers_from_file, so "
                    "that it stays out of the config file");
         }
       }
     }},
    {"headers_from_env", "map", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.headers_from_env = as_string_map(n, c, "headers_from_env");
     }},
    {"headers_from_file", "map", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.headers_from_file = as_string_map(n, c, "headers_from_file");
       for (auto& [k, v] : h.headers_from_file) {
         fs::path p = v;
         if (p.is_relative()) v = (fs::path(c.base_dir) / p).lexically_normal().string();
       }
     }},
    {"body", "payload|job", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.body = as_string(n, c, "body");
       if (h.body != "payload" && h.body != "job") {
         fail(c, n, "body: '" + h.body + "' is not payload or job");
       }
     }},
    {"connect_timeout", "duration", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.connect_timeout = as_duration(n, c, "connect_timeout", 1ms);
     }},
    {"ca_file", "path", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.ca_file = as_path(n, c, "ca_file");
     }},
    {"verify_tls", "bool", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.verify_tls = as_bool(n, c, "verify_tls");
     }},
    {"max_response", "size", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.max_response = as_size(n, c, "max_response");
     }},
    {"pool_size", "count", true,
     [](HandlerConfig& h, const YAML::Node& n, const Ctx& c) {
       h.pool_size = as_count(n, c, "pool_size", 1, 1024);
     }},
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

const Key<SourceConfig> kSpoolKeys[] = {
    {"dir", "path", false,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       s.dir = as_path(n, c, "spool.dir");
     }},
    {"pattern", "glob", true,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       s.pattern = as_string(n, c, "spool.pattern");
     }},
    {"ignore", "list of globs", true,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       s.ignore = as_string_list(n, c, "spool.ignore");
     }},
    {"on_success", "delete | move", true,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       std::string v = as_string(n, c, "spool.on_success");
       if (v != "delete" && v != "move") {
         fail(c, n, "spool.on_success: '" + v + "' is not delete or move (to done/)");
       }
       s.keep_done = v == "move";
     }},
    {"quiet", "duration", true,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       s.quiet = as_duration(n, c, "spool.quiet", 0ms);
     }},
    {"recursive", "bool", true,
     [](SourceConfig& s, const YAML::Node& n, const Ctx& c) {
       s.recursive = as_bool(n, c, "spool.recursive");
     }},
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
    {"succeeded", "duration", true,
     [](Retain& r, const YAML::Node& n, const Ctx& c) {
       r.succeeded = as_duration(n, c, "retain.succeeded");
       if (r.succeeded != 0ms && r.succeeded < 1s) {
         fail(c, n, "retain.succeeded: must be 0 (delete at once) or at least 1s");
       }
     }},
    {"failed", "duration", true,
     [](Retain& r, const YAML::Node& n, const Ctx& c) {
       r.failed = as_duration(n, c, "retain.failed", 1s);
     }},
};

const Key<QueueConfig> kQueueKeys[] = {
    {"handler", "handler name", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.handler = as_string(n, c, "handler");
     }},
    {"concurrency", "count", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.concurrency = as_count(n, c, "concurrency", 1, 100000);
     }},
    {"buffer", "count", false,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.buffer = as_count(n, c, "buffer", 1, 1000000);
     }},
    {"fetch_batch", "count", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.fetch_batch = as_count(n, c, "fetch_batch", 1, 1000);
     }},
    {"max_attempts", "count", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.max_attempts = as_count(n, c, "max_attempts", 1, 1000);
     }},
    {"timeout", "duration", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.timeout = as_duration(n, c, "timeout", 1ms);
       q.timeout_set = true;
     }},
    {"max_timeout", "duration", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.max_timeout = as_duration(n, c, "max_timeout", 1ms);
     }},
    {"retry_base", "duration", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.retry_base = as_duration(n, c, "retry_base");
     }},
    {"retry_max", "duration", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.retry_max = as_duration(n, c, "retry_max");
     }},
    {"retain", "map", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       apply(q.retain, n, c, kRetainKeys, "retain");
     }},
    {"dead_max", "count", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.dead_max = as_count(n, c, "dead_max", 1, 100000000);
     }},
    {"max_job_bytes", "size", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.max_job_bytes = as_size(n, c, "max_job_bytes", 64);
     }},
    {"delayed_poll", "duration", true,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       q.delayed_poll = as_duration(n, c, "delayed_poll", 10ms);
     }},
    {"sources", "list", false,
     [](QueueConfig& q, const YAML::Node& n, const Ctx& c) {
       if (!n.IsSequence())
         fail(c, n,
              "queues." + q.name + ".sources: must be a list (- redis: {} / - spool: {dir: ...})");
       q.sources.clear();
       for (std::size_t i = 0; i < n.size(); ++i) {
         q.sources.push_back(
             parse_source(n[i], c, "queues." + q.name + ".sources[" + std::to_string(i) + "]"));
       }
     }},
};

template <class S, std::size_t N>
void add_keys(std::vector<std::string>& out, const std::string& section, const Key<S> (&table)[N]) {
  for (const auto& k : table) out.push_back(section + "." + k.name);
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

std::vector<std::string> schema_keys() {
  std::vector<std::string> out;
  add_keys(out, "daemon", kDaemonKeys);
  add_keys(out, "redis", kRedisKeys);
  add_keys(out, "http", kHttpKeys);
  add_keys(out, "logging", kLoggingKeys);
  add_keys(out, "handlers.*", kHandlerKeys);
  add_keys(out, "handlers.*.limits", kLimitKeys);
  add_keys(out, "queues.*", kQueueKeys);
  add_keys(out, "queues.*.retain", kRetainKeys);
  add_keys(out, "queues.*.sources.spool", kSpoolKeys);
  return out;
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
        if (distance(section, k) <= 2) best = k;
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
      fail(c, kv.second, where + ": retry_max is below retry_base");
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
