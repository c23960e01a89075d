// jobqctl's shared ground: the target, the connection, argument checks, times, tables.
#include "cli/context.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <iostream>
#include <ostream>
#include <set>

#include "job/text.hpp"
#include "ops/embedded_redis.hpp"

namespace jq::cli {

Target resolve(const Globals& g) {
  Target t;
  std::string url = g.redis_url;
  if (url.empty() || g.config_given) {
    try {
      t.cfg = config::load_file(g.config_path);
    } catch (const config::ConfigError& e) {
      if (url.empty()) {
        throw Exit{kConfig, std::string(e.what()) +
                                " (give the config with -c FILE or JOBQD_CONFIG, or Redis with "
                                "--redis URL or JOBQD_REDIS_URL)"};
      }
    }
  }
  if (t.cfg) {
    t.prefix = t.cfg->redis.key_prefix;
    if (url.empty()) {
      t.embedded = t.cfg->redis.url == "embedded";
      url = t.embedded ? "unix://" + ops::EmbeddedRedis::socket_in(t.cfg->daemon.state_dir)
                       : t.cfg->redis.url;
    }
  }
  try {
    t.url = redis::parse_url(url);
    if (t.cfg) redis::apply_tls(t.url, t.cfg->redis.tls);
  } catch (const std::invalid_argument& e) {
    throw Exit{kUsage, e.what()};
  }
  if (t.embedded) {
    t.hint = "that is the embedded Redis of " + t.cfg->path +
             ", which runs only while jobqd does: is jobqd running on that config (make run, or "
             "systemctl start jobqd)?";
  } else if (t.cfg && g.redis_url.empty()) {
    t.hint = "is Redis running there (redis.url of " + t.cfg->path + ")?";
  } else {
    t.hint = "is Redis running there?";
  }
  // The config's password (from its file or variable) for the config's own Redis.
  if (t.cfg && g.redis_url.empty() && !t.embedded) {
    try {
      if (auto password = config::redis_password(t.cfg->redis); !password.empty()) {
        t.url.password = std::move(password);
      }
      t.url.sentinel_password = config::sentinel_password(t.cfg->redis);
    } catch (const std::runtime_error& e) {
      throw Exit{kConfig, e.what()};
    }
  }
  return t;
}

redis::SyncClient connect(const Target& t) {
  auto c = redis::SyncClient::connect(t.url);
  if (!c.ok()) {
    std::string msg = c.error().message;
    if (c.error().connection()) msg += "; " + t.hint;
    throw Exit{kFailure, msg};
  }
  return std::move(*c);
}

store::Keys keys(const Target& t, const std::string& queue) {
  return store::Keys(t.prefix, queue);
}

store::Layout layout(const Target& t) {
  store::Layout l;
  l.prefix = t.prefix;
  // Copies of the config's figures: the layout holds nothing of the Target.
  std::map<std::string, std::size_t> shards;
  std::map<std::string, std::int64_t> keep, waits;
  std::map<std::string, std::uint64_t> bytes;
  std::set<std::string> payloads;
  std::map<std::string, store::UniqueRule> unique;
  std::map<std::string, store::QueueLimits> limits;
  if (t.cfg) {
    for (const auto& q : t.cfg->queues) {
      l.config_queues.push_back(q.name);
      shards.emplace(q.name, static_cast<std::size_t>(q.shards));
      keep.emplace(q.name, q.retain.failed.count());
      waits.emplace(q.name, q.after_timeout.count());
      bytes.emplace(q.name, q.max_job_bytes);
      if (q.retain.payload) payloads.insert(q.name);
      unique.emplace(q.name, store::unique_rule(q.unique));
      limits.emplace(q.name, store::queue_limits(q));
    }
  }
  l.config_limits = [limits = std::move(limits)](const std::string& queue) {
    auto it = limits.find(queue);
    return it == limits.end() ? std::nullopt : std::optional<store::QueueLimits>(it->second);
  };
  l.unique_rule = [unique = std::move(unique)](const std::string& queue) {
    auto it = unique.find(queue);
    return it == unique.end() ? store::UniqueRule{} : it->second;
  };
  l.config_shards = [shards = std::move(shards)](const std::string& queue) {
    auto it = shards.find(queue);
    return it == shards.end() ? std::size_t{0} : it->second;
  };
  l.keep_failed_ms = [keep = std::move(keep)](const std::string& queue) {
    auto it = keep.find(queue);
    return it == keep.end() ? std::int64_t{0} : it->second;
  };
  l.max_job_bytes = [bytes = std::move(bytes)](const std::string& queue) {
    auto it = bytes.find(queue);
    return it == bytes.end() ? std::uint64_t{0} : it->second;
  };
  l.after_timeout_ms = [waits = std::move(waits)](const std::string& queue) {
    auto it = waits.find(queue);
    return it == waits.end() ? std::int64_t{0} : it->second;
  };
  l.retain_payload = [payloads = std::move(payloads)](const std::string& queue) {
    return payloads.count(queue) > 0;
  };
  l.warn = [](const std::string& why) { std::cerr << "jobqctl: warning: " << why << "\n"; };
  return l;
}

store::Admin admin_for(redis::SyncClient& c, const Target& t) {
  return store::Admin(c, layout(t));
}

Exit exit_of(const store::AdminError& e) {
  return Exit{e.kind == store::AdminError::Kind::bad_input ? kUsage : kFailure, e.what()};
}

const std::string& queue_arg(const std::string& queue) {
  try {
    return store::check_queue(queue);
  } catch (const store::AdminError& e) {
    throw exit_of(e);
  }
}

const std::string& id_arg(const std::string& id, const char* what) {
  try {
    return store::check_id(id, what);
  } catch (const store::AdminError& e) {
    throw exit_of(e);
  }
}

config::Millis duration_arg(const std::string& s, const char* what) {
  auto d = config::parse_duration(s);
  if (!d) {
    throw Exit{kUsage, std::string(what) + ": '" + s + "' is not a duration (250ms, 30s, 5m, 1h)"};
  }
  return *d;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string clock_text(std::int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (!gmtime_r(&secs, &tm)) return std::to_string(ms);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string relative(std::int64_t ms, std::int64_t now) {
  const std::int64_t d = now - ms;
  const std::int64_t a = d < 0 ? -d : d;
  if (a < 1000) return "now";
  std::string span =
      a < 60'000      ? std::to_string(a / 1000) + "s"
      : a < 3'600'000 ? std::to_string(a / 60'000) + "m"
      : a < 86'400'000
          ? std::to_string(a / 3'600'000) + "h" + std::to_string(a / 60'000 % 60) + "m"
          : std::to_string(a / 86'400'000) + "d" + std::to_string(a / 3'600'000 % 24) + "h";
  return d < 0 ? "in " + span : span + " ago";
}

std::string when(const std::string& ms, std::int64_t now) {
  auto v = whole_number(ms);
  if (!v || *v <= 0) return ms;
  return clock_text(*v) + " (" + relative(*v, now) + ")";
}

void Table::print(std::ostream& o, const std::vector<std::size_t>& right) const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.resize(i + 1, 0);
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto is_right = [&](std::size_t i) {
    return std::find(right.begin(), right.end(), i) != right.end();
  };
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const bool last = i + 1 == row.size();
      const std::string pad(width[i] - row[i].size(), ' ');
      if (is_right(i)) {
        line += pad + row[i];
      } else {
        line += row[i];
        if (!last) line += pad;
      }
      if (!last) line += "  ";
    }
    o << line << "\n";
  }
}

}  // namespace jq::cli
