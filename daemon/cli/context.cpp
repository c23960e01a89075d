// jobqctl's shared ground: the target, the connection, argument checks, times, tables.
#include "cli/context.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <ostream>

#include "job/id.hpp"
#include "job/text.hpp"
#include "ops/embedded_redis.hpp"
#include "store/shards.hpp"

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

std::size_t shard_count(redis::SyncClient& c, const Target& t, const std::string& queue) {
  if (auto known = t.shard_counts.find(queue); known != t.shard_counts.end()) {
    return known->second;
  }
  const auto read = store::read_shards(keys(t, queue));
  auto value = store::run(c, read);
  if (!value.ok() && value.error().kind != redis::OpError::Kind::shape) {
    throw Exit{kFailure, value.error().message};
  }
  if (!value.ok()) {
    throw Exit{kFailure, value.error().message +
                             ": every jobqd serving the queue writes it at its start "
                             "(queues." +
                             queue +
                             ".shards of its config); set it to that, or delete it and "
                             "restart them"};
  }
  // None written yet (no daemon has served the queue): the config's count fills in.
  const config::QueueConfig* qc = t.cfg ? t.cfg->queue(queue) : nullptr;
  std::size_t n = *value;
  if (n == 0) n = qc ? static_cast<std::size_t>(qc->shards) : 1;
  t.shard_counts.emplace(queue, n);
  return n;
}

std::vector<store::Keys> shard_keys(redis::SyncClient& c, const Target& t,
                                    const std::string& queue) {
  std::vector<store::Keys> out;
  for (const auto& tag : store::shard_tags(queue, shard_count(c, t, queue))) {
    out.emplace_back(t.prefix, queue, tag);
  }
  return out;
}

store::Keys home_keys(redis::SyncClient& c, const Target& t, const std::string& queue,
                      const std::string& id) {
  const std::size_t n = shard_count(c, t, queue);
  const std::size_t home = store::home_shard(id, n);
  if (home == 0) return keys(t, queue);
  // Only the home's tag is needed, but shard k's tag depends on the windows before it.
  return store::Keys(t.prefix, queue, store::shard_tags(queue, n)[home]);
}

std::vector<std::size_t> search_order(std::size_t home, std::size_t shards) {
  std::vector<std::size_t> out{home};
  for (std::size_t i = 0; i < shards; ++i) {
    if (i != home) out.push_back(i);
  }
  return out;
}

std::vector<Scored> lowest(redis::SyncClient& c, const std::vector<store::Keys>& shards,
                           SliceCall slice, std::size_t limit) {
  const auto last = static_cast<long long>(limit) - 1;
  std::vector<Scored> out;
  std::size_t shard = 0;
  for (auto& entries :
       call_each(c, shards, [&](const store::Keys& k) { return slice(k, 0, last); })) {
    for (auto& [member, score] : entries) {
      out.push_back({std::move(member), std::move(score), shard});
    }
    ++shard;
  }
  // Stable: one shard's own order (ties by member) stays. Scores are numbers Redis wrote.
  std::stable_sort(out.begin(), out.end(), [](const Scored& a, const Scored& b) {
    return std::strtod(a.score.c_str(), nullptr) < std::strtod(b.score.c_str(), nullptr);
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

long long summed(redis::SyncClient& c, const std::vector<store::Keys>& shards,
                 store::Call<long long> (*count)(const store::Keys&)) {
  long long sum = 0;
  for (const auto n : call_each(c, shards, count)) sum += n;
  return sum;
}

const std::string& queue_arg(const std::string& queue) {
  if (!config::valid_name(queue)) {
    throw Exit{kUsage, "queue name '" + job::to_utf8(job::clip_utf8(queue, 80)) +
                           "': use 1-64 characters of [A-Za-z0-9_.-]"};
  }
  return queue;
}

const std::string& id_arg(const std::string& id, const char* what) {
  if (!job::valid_id(id)) {
    throw Exit{kUsage, std::string(what) + " '" + job::to_utf8(job::clip_utf8(id, 80)) +
                           "': use 1-128 characters of [A-Za-z0-9_.:-]"};
  }
  return id;
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

std::optional<long long> whole_number(const std::string& s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

namespace {

// `2026-12-02 06:09:12Z`: a unix ms time as people read it (UTC, as in jobqd's log).
std::string clock_text(std::int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (!gmtime_r(&secs, &tm)) return std::to_string(ms);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

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

json json_or_text(const std::string& text) {
  if (text.empty()) return json(text);
  auto parsed = job::parse_json(text);
  if (auto* value = std::get_if<json>(&parsed)) return std::move(*value);
  return json(text);
}

json state_json(const std::string& id, const std::map<std::string, std::string>& state) {
  json j = {{"id", id}};
  for (const auto& [k, v] : state) {
    const bool time = k.size() > 3 && k.compare(k.size() - 3, 3, "_at") == 0;
    if (k == "attempts" || time) {
      auto n = whole_number(v);
      j[k] = n ? json(*n) : json();
    } else if (k == "result") {
      j[k] = json_or_text(v);
    } else {
      j[k] = v;
    }
  }
  return j;
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

namespace jq::cli {

std::vector<std::string> known_queues(redis::SyncClient& c, const Target& t) {
  std::vector<std::string> out;
  if (t.cfg) {
    for (const auto& q : t.cfg->queues) out.push_back(q.name);
  }
  auto served = store::run(c, store::registered_queues(t.prefix));
  if (!served.ok()) {
    const std::string why = store::Keys::registry(t.prefix) +
                            " is not the set of queues jobqd keeps (" + served.error().message +
                            "): delete it, and the daemons write it again at their next start";
    // Without the config's queues there is nothing to show: never an empty list that looks
    // like the truth.
    if (out.empty()) throw Exit{kFailure, why};
    std::cerr << "jobqctl: warning: " << why << "; only the config's queues are known\n";
    return out;
  }
  for (auto& name : *served) {
    if (config::valid_name(name) && std::find(out.begin(), out.end(), name) == out.end()) {
      out.push_back(std::move(name));
    }
  }
  return out;
}

}  // namespace jq::cli
