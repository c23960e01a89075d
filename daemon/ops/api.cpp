// The JSON API: admission (token, cookie, Host, Origin, CSRF, read-only), the routes, the
// operator's calls on a worker thread, and the live feed of server-sent events.
#include "ops/api.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <stdexcept>

#include "config/config.hpp"
#include "config/units.hpp"
#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"
#include "redis/connection.hpp"
#include "store/calls.hpp"
#include "store/queue_store.hpp"
#include "store/shards.hpp"
#include "version.hpp"

namespace jq::ops {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// How long an /api/ read or action may take before the request is answered 503.
constexpr auto kDeadline = 5s;
// Worker threads an /api/ call may hold at once (the loop's pool has 4).
constexpr int kMaxBlocking = 2;
// Job ends the feed keeps for a listener that fell behind (past them: a resync event).
constexpr std::size_t kKeptEnds = 256;
// A stream says something at least this often (a comment): proxies keep it, a gone client shows.
constexpr auto kKeepAlive = 15s;
// One login attempt per this long, whoever asks: a token cannot be guessed at speed.
constexpr auto kLoginEvery = 250ms;
constexpr const char* kCookie = "jobqd_session";
// Ids one call may name: a bulk cancel (a few round trips a job), dead jobs to retry or purge
// (one script slice per 500). The body's 64 KiB bound comes first for long ids.
constexpr std::size_t kMostCancels = 1000;
constexpr std::size_t kMostDeadIds = 10000;
// A bulk cancel begins no new job's cancel past this (the rest answer "send it again"), so that
// it answers within the request's 5 s.
constexpr auto kCancelTime = 3s;

std::string hex(const unsigned char* p, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

// HMAC-SHA256 of `what` keyed by the token: the cookie and the CSRF value follow from the token
// alone (no session store; a new token ends every session).
std::string derive(const std::string& token, const std::string& what) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
       reinterpret_cast<const unsigned char*>(what.data()), what.size(), out, &len);
  return hex(out, len);
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) {
    throw std::runtime_error("no random bytes from OpenSSL for the API's CSRF value");
  }
  return hex(b.data(), b.size());
}

// Constant time in the length of the expected value.
bool same(const std::string& given, const std::string& expected) {
  return given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

// JSON text that never fails on a job's bytes (invalid UTF-8 is replaced).
std::string compact(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string text_of(const json& j) {
  return compact(j) + "\n";
}

// GET /api/queues' list, as the feed sends it too. Each row's `rate` is this daemon's config's
// text for the queue, `global_concurrency` its cap (null when it has none or does not know the
// queue), `weight` its claim on the daemon's permits (null for a queue it does not serve),
// `priorities` its order and `group_by` its group's field (null for none): added here, so that
// store::views (shared with jobqctl, which may run without a config) knows nothing of configs.
// What changes as jobs run (rate_tokens, groups_held_back) comes from store::queue_row, as
// jobqctl's rows have it.
json queue_rows(const std::vector<store::QueueView>& views, const config::Config& cfg) {
  json rows = json::array();
  for (const auto& v : views) {
    json row = store::queue_row(v, store::LimitFields::now);
    const auto q = std::find_if(cfg.queues.begin(), cfg.queues.end(),
                                [&](const config::QueueConfig& c) { return c.name == v.name; });
    row["rate"] = q != cfg.queues.end() && !q->rate.empty() ? json(q->rate) : json();
    row["global_concurrency"] =
        q != cfg.queues.end() && q->global_concurrency > 0 ? json(q->global_concurrency) : json();
    row["weight"] = q != cfg.queues.end() ? json(q->weight) : json();
    row["priorities"] =
        q != cfg.queues.end() && q->priorities_set ? json(q->priorities.order) : json();
    row["group_by"] =
        q != cfg.queues.end() && !q->group_by.key.empty() ? json(q->group_by.key) : json();
    rows.push_back(std::move(row));
  }
  return rows;
}

HttpResponse answer(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = text_of(body);
  return r;
}

// The `queue` parameter a job's or a schedule's path may name: "" when absent, nullopt when it
// is not a queue name (a 400).
std::optional<std::string> queue_param(const HttpRequest& req) {
  if (!req.has_param("queue")) return std::string();
  auto q = req.param("queue");
  if (!q || !config::valid_name(*q)) return std::nullopt;
  return *q;
}

HttpResponse error(int status, const std::string& why) {
  return answer(status, json{{"error", why}});
}

int status_of(store::AdminError::Kind k) {
  switch (k) {
    case store::AdminError::Kind::bad_input:
      return 400;
    case store::AdminError::Kind::not_found:
      return 404;
    case store::AdminError::Kind::garbage:
      return 500;
    case store::AdminError::Kind::redis:
      break;
  }
  return 503;
}

// The host part of a Host or Origin authority (an IPv6 address keeps its brackets).
std::string host_part(const std::string& authority) {
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    return close == std::string::npos ? authority : authority.substr(0, close + 1);
  }
  return authority.substr(0, authority.find(':'));
}

bool lower_equal(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// A query parameter as a whole number (store::whole_number), nullopt when absent or not one.
std::optional<long long> number(const std::optional<std::string>& s) {
  return s ? store::whole_number(*s) : std::nullopt;
}

// A job as GET /api/jobs/ID shows it: its state, where it was found, and who holds it.
json job_json(const store::JobView& v) {
  json j = store::state_json(v.id, v.state);
  j["queue"] = v.queue;
  if (!v.status.empty()) j["status"] = v.status;
  if (!v.held_by.empty()) j["worker"] = v.held_by;
  return j;
}

// What a bulk cancel did: how many were cancelled while they waited, how many were asked of the
// daemon running them, and each one not done with why.
json cancel_answer(const std::string& queue, const std::vector<store::CancelDone>& steps) {
  long long cancelled = 0, requested = 0;
  json left = json::array();
  for (const auto& d : steps) {
    const std::string& what = d.step.what;
    if (what == "cancelled") {
      ++cancelled;
      continue;
    }
    if (what == "requested") {
      ++requested;
      continue;
    }
    std::string why;
    if (what == "final") {
      why = "ended already (" + d.step.status + ")";
    } else if (what == "missing") {
      why = "no such job in queue " + queue;
    } else if (what == "late") {
      why = "not tried: the call's time was up; send it again";
    } else {  // raced, unheld: between waiting and running
      why = "moving between waiting and running; try again";
    }
    left.push_back({{"id", d.id}, {"why", std::move(why)}});
  }
  const auto not_done = static_cast<long long>(left.size());
  return json{{"queue", queue},         {"done", cancelled + requested}, {"cancelled", cancelled},
              {"requested", requested}, {"not_done", not_done},          {"not", std::move(left)}};
}

// A string field of an event, "" when absent or of another type (garbage on the channel).
std::string field(const json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

Api::Api(const engine::Engine& engine, std::string token)
    : engine_(engine), token_(std::move(token)) {
  if (token_.empty()) {
    csrf_ = random_hex(32);
  } else {
    session_ = derive(token_, "jobqd session");
    csrf_ = derive(token_, "jobqd csrf");
  }
}

void Api::start() {
  clients_ = engine_.make_router("redis (api)");
  queues_task_ = async::spawn(feed_queues(), "api feed: queues");
  jobs_task_ = async::spawn(feed_jobs(), "api feed: job ends");
}

async::Task<void> Api::stop() {
  for (auto* t : {&queues_task_, &jobs_task_}) {
    if (t->valid()) {
      t->cancel();
      co_await t->wait();
    }
  }
  if (clients_) co_await clients_->stop();
}

Api::Auth Api::auth_of(const HttpRequest& req) const {
  if (token_.empty()) return Auth::none;
  if (same(req.authorization, "Bearer " + token_)) return Auth::bearer;
  if (same(req.cookie_value(kCookie), session_)) return Auth::cookie;
  return Auth::refused;
}

std::optional<HttpResponse> Api::admit(const HttpRequest& req, bool needs_token) const {
  // Without a token only a loopback listener serves, and then only to loopback names: a page of
  // another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own name.
  if (token_.empty() && !req.host.empty() && !config::is_loopback_host(host_part(req.host))) {
    return error(403, "Host '" + req.host +
                          "' is not a loopback name: without http.token_file jobqd answers "
                          "localhost, 127.0.0.1 and [::1] only");
  }
  // A browser names the page a POST comes from: only this listener's own pages may act.
  if (req.method == "POST" && !req.origin.empty()) {
    const std::string own = "http://" + req.host;
    if (req.host.empty() || !lower_equal(req.origin, own)) {
      return error(403, "a POST from another origin (" + req.origin + ") is refused");
    }
  }
  if (needs_token && auth_of(req) == Auth::refused) {
    HttpResponse r = error(401,
                           "a token is needed: 'Authorization: Bearer <token>' (the first "
                           "line of http.token_file), or POST /api/login");
    r.headers.push_back("WWW-Authenticate: Bearer realm=\"jobqd\"");
    return r;
  }
  return std::nullopt;
}

async::Task<HttpResponse> Api::handle(const HttpRequest& req) {
  // The segments after /api/, each decoded on its own (an escaped '/' stays inside its segment).
  std::vector<std::string> parts;
  std::string_view rest = std::string_view(req.path).substr(5);
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    auto part = percent_decode(rest.substr(0, slash));
    if (!part) co_return error(400, "the path " + req.path + " holds a bad %-escape");
    parts.push_back(std::move(*part));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  co_return co_await route(req, parts);
}

async::Task<HttpResponse> Api::route(const HttpRequest& req, const std::vector<std::string>& p) {
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  // Which method a path takes ("" when no such path).
  std::string wants;
  const std::size_t n = p.size();
  if (n == 1 && (p[0] == "session" || p[0] == "queues" || p[0] == "workers" || p[0] == "events" ||
                 p[0] == "redis" || p[0] == "schedules")) {
    wants = "GET";
  } else if (n == 1 && (p[0] == "login" || p[0] == "logout")) {
    wants = "POST";
  } else if (n == 2 && p[0] == "jobs") {
    wants = "GET";
  } else if (n == 3 && p[0] == "jobs" && p[2] == "flow") {
    wants = "GET";
  } else if (n == 3 && p[0] == "jobs" && (p[2] == "cancel" || p[2] == "retry")) {
    wants = "POST";
  } else if (n == 3 && p[0] == "queues" && p[2] == "jobs") {
    wants = post ? "POST" : "GET";  // a listing, or a submission
  } else if (n == 3 && p[0] == "queues" && (p[2] == "history" || p[2] == "search")) {
    wants = "GET";
  } else if (n == 3 && p[0] == "queues" &&
             (p[2] == "pause" || p[2] == "resume" || p[2] == "cancel")) {
    wants = "POST";
  } else if (n == 4 && p[0] == "queues" && p[2] == "dead" && (p[3] == "retry" || p[3] == "purge")) {
    wants = "POST";
  } else if (n == 3 && p[0] == "schedules" && (p[2] == "pause" || p[2] == "resume")) {
    wants = "POST";
  }
  if (wants.empty()) {
    co_return error(404, "no such API: " + req.path + " (docs/api.md lists them)");
  }
  if ((wants == "GET" && !get) || (wants == "POST" && !post)) {
    const bool either = n == 3 && p[0] == "queues" && p[2] == "jobs";
    HttpResponse r = error(405, req.path + " takes " + (either ? "GET or POST" : wants));
    r.headers.push_back("Allow: " + std::string(either           ? "GET, HEAD, POST"
                                                : wants == "GET" ? "GET, HEAD"
                                                                 : "POST"));
    co_return r;
  }
  if (p[0] == "session") co_return session(req);
  if (p[0] == "login") co_return co_await login(req);
  if (p[0] == "logout") {
    HttpResponse r = answer(200, json{{"ok", true}});
    r.headers.push_back(std::string("Set-Cookie: ") + kCookie +
                        "=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict");
    co_return r;
  }
  // An action: never in read-only mode, and from a browser only with the CSRF value (a bearer
  // header is never sent by a browser on its own, so a request with it needs none).
  if (post) {
    if (engine_.config().http.read_only) co_return error(403, "read-only (http.read_only)");
    if (auth_of(req) != Auth::bearer && !same(req.csrf_token, csrf_)) {
      co_return error(403,
                      "an action needs the header X-CSRF-Token with the value GET /api/session "
                      "gives (or a bearer token)");
    }
  }
  if (n == 1 && p[0] == "queues") co_return co_await queues();
  if (n == 1 && p[0] == "workers") co_return co_await workers();
  if (n == 1 && p[0] == "redis") co_return co_await redis_view();
  if (n == 1 && p[0] == "events") co_return events();
  if (p[0] == "schedules") co_return co_await schedules(req, p);

  if (p[0] == "jobs") {
    const std::string id = p[1];
    if (!job::valid_id(id)) {
      co_return error(400, "job id '" + id + "': 1-128 characters of A-Z a-z 0-9 _ . : -");
    }
    const auto given = queue_param(req);
    if (!given) co_return error(400, "queue: not a queue name ([A-Za-z0-9_.-], 1-64)");
    const std::string queue = *given;
    if (n == 2) {
      AdminFn work = [id, queue](store::Admin& a) {
        const std::string q = a.find_queue(id, queue);
        store::JobView v = a.job(q, id);
        if (!v.exists()) {
          throw store::AdminError(store::AdminError::Kind::not_found,
                                  "no job " + id + " in queue " + q);
        }
        return job_json(v);
      };
      co_return co_await with_admin(std::move(work));
    }
    if (p[2] == "flow") {
      // The graph around the job as jobqctl flow --json gives it (one encoder: store::flow_json);
      // not found as for jobs/ID (its state at any shard), then read at each job's home.
      AdminFn work = [id, queue](store::Admin& a) {
        const std::string q = a.find_queue(id, queue);
        const auto missing = [&] {
          return store::AdminError(store::AdminError::Kind::not_found,
                                   "no job " + id + " in queue " + q);
        };
        if (!a.job(q, id).exists()) throw missing();
        const store::FlowGraph graph = a.flow(q, id);
        if (graph.nodes.at(graph.root).status.empty()) throw missing();
        return store::flow_json(graph);
      };
      co_return co_await with_admin(std::move(work));
    }
    if (p[2] == "retry") {
      // A failed step from the dead ones, with what failed because of it down the graph
      // (docs/workflows.md, "Retrying a failed step"): as jobqctl dead retry ID --with-dependents.
      // Not among the dead: not_found, "no dead job ID in queue Q".
      AdminFn work = [id, queue](store::Admin& a) {
        const std::string q = a.find_queue(id, queue);
        const store::RetryFlow r = a.retry_with_dependents(q, id);
        return json{{"id", id}, {"queue", q}, {"retried", r.retried}, {"left", r.left}};
      };
      co_return co_await with_admin(std::move(work));
    }
    AdminFn work = [id, queue](store::Admin& a) {
      const std::string q = a.find_queue(id, queue);
      const store::CancelStep step = a.cancel_step(q, id, "cancelled from the dashboard");
      return json{{"id", id},
                  {"queue", q},
                  {"result", step.what},
                  {"status", step.status},
                  {"was", step.was}};
    };
    co_return co_await with_admin(std::move(work));
  }

  // queues/Q/...
  const std::string queue = p[1];
  if (!config::valid_name(queue)) {
    co_return error(400, "'" + queue + "' is not a queue name ([A-Za-z0-9_.-], 1-64)");
  }
  if (p[2] == "jobs" && post) co_return co_await submit(req, queue);
  if (p[2] == "jobs") {
    const auto state = req.param("state").value_or("pending");
    if (std::none_of(std::begin(store::kListStates), std::end(store::kListStates),
                     [&](const char* s) { return state == s; })) {
      co_return error(400,
                      "state '" + state + "': one of pending, delayed, running, buffered, dead");
    }
    std::size_t offset = 0, limit = 50;
    if (req.has_param("offset")) {
      // Bounded: paging deep into a long list reads every job before the page, in each shard.
      auto v = number(req.param("offset"));
      if (!v || *v < 0 || *v > 10000) {
        co_return error(400, "offset: a whole number from 0 to 10000");
      }
      offset = static_cast<std::size_t>(*v);
    }
    if (req.has_param("limit")) {
      auto v = number(req.param("limit"));
      if (!v || *v < 1 || *v > 500) co_return error(400, "limit: a whole number from 1 to 500");
      limit = static_cast<std::size_t>(*v);
    }
    const auto order = req.param("order").value_or("oldest");
    if (order != "oldest" && order != "newest") {
      co_return error(400, "order '" + order + "': oldest or newest");
    }
    const bool newest = order == "newest";
    AdminFn work = [queue, state, offset, limit, newest](store::Admin& a) {
      return store::page_json(a.list(queue, state, offset, limit, newest));
    };
    co_return co_await with_admin(std::move(work));
  }
  if (p[2] == "history") co_return co_await history(queue, req.param("range").value_or("hour"));
  if (p[2] == "search") {
    // One call's worth (store::kSearchBudget jobs); the caller goes on from `next`.
    const auto text = req.param("q");
    const std::string status = req.param("status").value_or("");
    if ((!text || text->empty()) && status.empty()) {
      co_return error(400, "q: the text to find, 1 to 200 bytes (or a status)");
    }
    const std::string from = req.param("from").value_or("");
    const std::string q = text.value_or("");
    AdminFn work = [queue, q, from, status](store::Admin& a) {
      const store::SearchStep step = a.search(queue, q, from, store::kSearchBudget, status);
      json found = json::array();
      for (const auto& f : step.found) {
        const auto at = store::whole_number(f.at);
        found.push_back({{"id", f.id},
                         {"where", f.where},
                         {"field", f.field},
                         {"excerpt", f.excerpt},
                         {"at", at ? json(*at) : json()}});
      }
      return json{{"queue", queue},
                  {"q", q},
                  {"found", std::move(found)},
                  {"examined", step.examined},
                  {"next", step.next.empty() ? json() : json(step.next)}};
    };
    co_return co_await with_admin(std::move(work));
  }
  if (p[2] == "pause" || p[2] == "resume") {
    const bool pause = p[2] == "pause";
    AdminFn work = [queue, pause](store::Admin& a) {
      const bool changed = a.set_paused(queue, pause);
      return json{{"queue", queue}, {"paused", pause}, {"changed", changed}};
    };
    co_return co_await with_admin(std::move(work));
  }
  // queues/Q/cancel {"ids": [...]}, queues/Q/dead/retry|purge {"ids": [...]} or {"all": true}
  const bool cancelling = p[2] == "cancel";
  auto parsed = job::parse_json(req.body);
  auto* body = std::get_if<json>(&parsed);
  if (!body || !body->is_object()) {
    const std::string wanted =
        cancelling ? R"({"ids": [...]})" : R"({"ids": [...]} or {"all": true})";
    co_return error(400, "the body: a JSON object, " + wanted);
  }
  // A cancel is a few round trips per job: fewer per call than a dead job's one script slice.
  const std::size_t most = cancelling ? kMostCancels : kMostDeadIds;
  std::vector<std::string> ids;
  const bool all = !cancelling && body->contains("all") && (*body)["all"] == true;
  if (body->contains("ids")) {
    const json& list = (*body)["ids"];
    if (!list.is_array() || list.size() > most) {
      co_return error(400, "ids: a list of at most " + std::to_string(most) + " job ids");
    }
    for (const auto& v : list) {
      if (!v.is_string() || !job::valid_id(v.get<std::string>())) {
        co_return error(400, "ids: each a job id (1-128 characters of A-Z a-z 0-9 _ . : -)");
      }
      ids.push_back(v.get<std::string>());
    }
  }
  if (cancelling) {
    if (ids.empty()) co_return error(400, "give \"ids\": [...], 1 to 1000 job ids");
    AdminFn work = [queue, ids](store::Admin& a) {
      const auto until = std::chrono::steady_clock::now() + kCancelTime;
      return cancel_answer(queue, a.cancel_many(queue, ids, "cancelled from the dashboard", until));
    };
    co_return co_await with_admin(std::move(work));
  }
  if (ids.empty() == !all) co_return error(400, "give \"ids\": [...] or \"all\": true");
  const bool retry = p[3] == "retry";
  AdminFn work = [queue, ids, all, retry](store::Admin& a) {
    // Throws not_found when none of the ids given is dead.
    const long long done = retry ? a.retry_dead(queue, ids, all) : a.purge_dead(queue, ids, all);
    json answer = {{"queue", queue}, {retry ? "retried" : "purged", done}};
    if (!all) {
      // Each dead job is in one shard's dead set: those of the ids not done were not dead there.
      const auto given =
          static_cast<long long>(std::set<std::string>(ids.begin(), ids.end()).size());
      answer["not_done"] = std::max(0LL, given - done);
      if (given > done) {
        answer["why"] =
            "not dead in queue " + queue + " (retried or purged already, or never dead)";
      }
    }
    return answer;
  };
  co_return co_await with_admin(std::move(work));
}

async::Task<HttpResponse> Api::submit(const HttpRequest& req, const std::string& queue) {
  const config::Config& cfg = engine_.config();
  const config::QueueConfig* q = cfg.queue(queue);
  if (!q) co_return error(404, "queue " + queue + " is not in this jobqd's config");
  // Read as a daemon reads a job: the queue's handlers, size limit and unique key.
  std::set<std::string> handler_names;
  for (const auto& [name, h] : cfg.handlers) handler_names.insert(name);
  job::Rules rules;
  rules.default_handler = q->handler;
  rules.handlers = &handler_names;
  rules.max_bytes = q->max_job_bytes;
  rules.unique_from = q->unique.path;
  rules.queue = q->name;
  rules.holds_dependencies = true;  // Admin::submit makes a job with `after` wait
  auto parsed = job::parse(req.body, rules);
  if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
    co_return error(400, "not a job: " + bad->error);
  }
  std::optional<std::int64_t> run_at;
  const std::int64_t now = store::unix_ms();
  if (auto d = req.param("delay")) {
    const auto delay = config::parse_duration(*d);
    if (!delay) co_return error(400, "delay '" + *d + "': a duration, like 30s or 5m");
    run_at = now + delay->count();
  }
  job::Job job = std::get<job::Job>(std::move(parsed));
  AdminFn work = [queue, job = std::move(job), now, run_at](store::Admin& a) {
    const store::SubmitResult r = a.submit(queue, job, now, run_at);
    json out = {{"id", r.id}, {"queue", queue}, {"result", r.what}};
    if (!r.unique_key.empty()) out["unique_key"] = r.unique_key;
    if (!r.replaced.empty()) out["replaced"] = r.replaced;
    return out;
  };
  std::pair<int, json> got = co_await admin_result(std::move(work));
  const int status = got.first;
  const json& body = got.second;
  if (status == 200 && body.value("result", "") == "duplicate") {
    for (const auto* runner : engine_.queues()) {
      if (runner->name() == queue) runner->count_duplicate();
    }
  }
  co_return answer(status, body);
}

async::Task<HttpResponse> Api::schedules(const HttpRequest& req,
                                         const std::vector<std::string>& p) {
  if (p.size() == 1) {
    // As jobqctl schedules --json: one definition of the shape (store::schedule_json).
    AdminFn work = [](store::Admin& a) {
      json rows = json::array();
      for (const auto& v : a.schedules()) rows.push_back(store::schedule_json(v));
      return rows;
    };
    co_return co_await with_admin(std::move(work));
  }
  // schedules/NAME/pause|resume[?queue=Q]: Q only when two queues have a schedule of that name.
  const std::string name = p[1];
  if (!config::valid_name(name)) {
    co_return error(400, "'" + name + "' is not a schedule name ([A-Za-z0-9_.-], 1-64)");
  }
  const auto given = queue_param(req);
  if (!given) co_return error(400, "queue: not a queue name ([A-Za-z0-9_.-], 1-64)");
  const std::string queue = *given;
  const std::string op = p[2];
  AdminFn work = [name, queue, op](store::Admin& a) {
    const std::string q = a.control_schedule(name, queue, op);
    return json{{"name", name}, {"queue", q}, {"paused", op == "pause"}};
  };
  co_return co_await with_admin(std::move(work));
}

HttpResponse Api::session(const HttpRequest& req) const {
  return answer(200, json{{"csrf", csrf_},
                          {"read_only", engine_.config().http.read_only},
                          {"version", jq::version()},
                          {"auth", token_.empty() ? "none" : "token"},
                          {"login", auth_of(req) == Auth::cookie}});
}

async::Task<HttpResponse> Api::login(const HttpRequest& req) {
  if (token_.empty()) co_return answer(200, json{{"ok", true}});
  const auto now = async::Clock::now();
  if (now < next_login_) {
    HttpResponse r = error(429, "one login attempt per 250 ms: try again");
    r.headers.push_back("Retry-After: 1");
    co_return r;
  }
  next_login_ = now + kLoginEvery;
  auto parsed = job::parse_json(req.body);
  auto* body = std::get_if<json>(&parsed);
  if (!body || !body->is_object() || !body->contains("token") || !(*body)["token"].is_string()) {
    co_return error(400, "the body: {\"token\": \"...\"}");
  }
  if (!same((*body)["token"].get<std::string>(), token_)) co_return error(401, "wrong token");
  HttpResponse r = answer(200, json{{"ok", true}});
  r.headers.push_back(std::string("Set-Cookie: ") + kCookie + "=" + session_ +
                      "; Path=/; HttpOnly; SameSite=Strict");
  co_return r;
}

store::Layout Api::layout() const {
  const config::Config& cfg = engine_.config();
  store::Layout l;
  l.prefix = cfg.redis.key_prefix;
  l.name_the_queue = "add ?queue=Q";
  l.warn = [](const std::string& why) { spdlog::warn("api: {}", why); };
  std::map<std::string, std::size_t> shards;
  std::map<std::string, std::int64_t> keep, waits;
  std::map<std::string, std::uint64_t> bytes;
  std::set<std::string> payloads;
  std::map<std::string, store::UniqueRule> unique;
  for (const auto& q : cfg.queues) {
    l.config_queues.push_back(q.name);
    shards[q.name] = static_cast<std::size_t>(q.shards);
    keep[q.name] = static_cast<std::int64_t>(q.retain.failed.count());
    waits[q.name] = static_cast<std::int64_t>(q.after_timeout.count());
    bytes[q.name] = q.max_job_bytes;
    if (q.retain.payload) payloads.insert(q.name);
    unique[q.name] = store::unique_rule(q.unique);
  }
  l.unique_rule = [unique](const std::string& q) {
    auto it = unique.find(q);
    return it == unique.end() ? store::UniqueRule{} : it->second;
  };
  // Copies: the Admin runs on a worker thread, and a reload may replace the config meanwhile.
  l.config_shards = [shards](const std::string& q) {
    auto it = shards.find(q);
    return it == shards.end() ? std::size_t{0} : it->second;
  };
  l.keep_failed_ms = [keep](const std::string& q) {
    auto it = keep.find(q);
    return it == keep.end() ? std::int64_t{0} : it->second;
  };
  l.max_job_bytes = [bytes](const std::string& q) {
    auto it = bytes.find(q);
    return it == bytes.end() ? std::uint64_t{0} : it->second;
  };
  l.after_timeout_ms = [waits](const std::string& q) {
    auto it = waits.find(q);
    return it == waits.end() ? std::int64_t{0} : it->second;
  };
  l.retain_payload = [payloads](const std::string& q) { return payloads.count(q) > 0; };
  return l;
}

async::Task<json> Api::run_admin(AdminFn fn) {
  if (blocking_->load() >= kMaxBlocking) {
    throw store::AdminError(
        store::AdminError::Kind::redis,
        "busy: " + std::to_string(kMaxBlocking) + " API calls wait for Redis already; try again");
  }
  // Counted until the thread's work is dropped: after its end, or unrun at the pool's end.
  struct Busy {
    std::shared_ptr<std::atomic<int>> n;
    explicit Busy(std::shared_ptr<std::atomic<int>> c) : n(std::move(c)) { n->fetch_add(1); }
    Busy(const Busy&) = delete;
    ~Busy() { n->fetch_sub(1); }
  };
  auto busy = std::make_shared<Busy>(blocking_);
  redis::Url url = engine_.connect_options().url;
  store::Layout lay = layout();
  // Named, not a temporary inside the co_await: GCC 12 copies such a temporary's captures
  // byte for byte into the coroutine frame (a short string then points into the old one).
  auto work = [busy, url, lay, fn = std::move(fn)]() -> json {
    auto c = redis::SyncClient::connect(url, std::chrono::milliseconds(3000));
    if (!c.ok()) throw store::AdminError(store::AdminError::Kind::redis, c.error().message);
    store::Admin admin(*c, lay);
    return fn(admin);
  };
  co_return co_await async::to_thread(std::move(work));
}

async::Task<std::pair<int, json>> Api::admin_result(AdminFn fn) {
  int status = 200;
  json body;
  try {
    body = co_await async::wait_for(run_admin(std::move(fn)), kDeadline);
  } catch (const store::AdminError& e) {
    status = status_of(e.kind);
    body = json{{"error", e.what()}};
  } catch (const async::TimeoutError&) {
    status = 503;
    body = json{{"error", "Redis did not answer within 5 s"}};
  } catch (const std::exception& e) {
    status = 503;
    body = json{{"error", e.what()}};
  }
  co_return std::make_pair(status, std::move(body));
}

async::Task<HttpResponse> Api::with_admin(AdminFn fn) {
  std::pair<int, json> got = co_await admin_result(std::move(fn));
  co_return answer(got.first, got.second);
}

async::Task<redis::Client*> Api::client(const std::string& key) const {
  // A client is made at its first use: the first request waits for its connection (within the
  // request's deadline) rather than failing while it connects.
  redis::Client& c = clients_->client(key);
  if (!c.connected()) co_await c.wait_connected();
  co_return &c;
}

async::Task<std::vector<store::QueueView>> Api::read_queues() const {
  const std::string& prefix = engine_.config().redis.key_prefix;
  // This daemon's queues first, then those other daemons have served (the registry).
  std::vector<store::QueueView> out;
  for (const auto* q : engine_.queues()) {
    store::QueueView v;
    v.name = q->name();
    v.shards = q->config().shards;
    out.push_back(std::move(v));
  }
  const auto registry = store::registered_queues(prefix);
  redis::Client* at = co_await client(store::Keys::registry(prefix));
  auto served = co_await store::run(*at, registry);
  if (!served.ok())
    throw std::runtime_error(store::Keys::registry(prefix) + ": " + served.error().message);
  for (const auto& name : *served) {
    const bool known =
        std::any_of(out.begin(), out.end(), [&](const auto& v) { return v.name == name; });
    if (known || !config::valid_name(name)) continue;
    store::QueueView v;
    v.name = name;
    const auto count = store::read_shards(store::Keys(prefix, name));
    at = co_await client(store::Keys(prefix, name).base);
    auto n = co_await store::run(*at, count);
    v.shards = n.ok() && *n > 0 ? *n : 1;
    out.push_back(std::move(v));
  }
  // What the live daemons run.
  redis::Client* control = co_await client(store::Keys::workers(prefix));
  const auto workers_call = store::read_workers(prefix);
  auto live = co_await store::run(*control, workers_call);
  const auto time_call = store::redis_time();
  auto now = co_await store::run(*control, time_call);
  std::map<std::string, store::Activity> active;
  if (live.ok() && now.ok()) {
    live->keep_live(*now);
    active = store::activity(live->live);
  }
  const config::Config& cfg = engine_.config();
  for (auto& v : out) {
    if (auto a = active.find(v.name); a != active.end()) v.activity = a->second;
    // The limits as jobqctl takes them (the live daemons', else this daemon's config's): with a
    // rate, depths.lua reads each shard's bucket at its share.
    const auto q = std::find_if(cfg.queues.begin(), cfg.queues.end(),
                                [&](const config::QueueConfig& c) { return c.name == v.name; });
    std::optional<store::QueueLimits> configured;
    if (q != cfg.queues.end()) configured = store::queue_limits(*q);
    const store::Rate rate = store::take_limits(v, std::move(configured));
    for (const auto& tag : store::shard_tags(v.name, v.shards)) {
      const store::Keys keys(prefix, v.name, tag);
      redis::Client& c = *co_await client(keys.base);
      const auto depths = store::depths(keys, rate);
      auto d = co_await store::run(c, depths);
      if (!d.ok()) throw std::runtime_error(keys.base + ": " + d.error().message);
      store::add_depths(v.depths, *d);
      const auto paused = store::is_paused(keys);
      auto p = co_await store::run(c, paused);
      if (!p.ok()) throw std::runtime_error(keys.paused + ": " + p.error().message);
      v.paused = v.paused || *p;
    }
  }
  co_return out;
}

async::Task<HttpResponse> Api::queues() {
  std::string why;
  try {
    auto views = co_await async::wait_for(read_queues(), kDeadline);
    co_return answer(200, queue_rows(views, engine_.config()));
  } catch (const async::TimeoutError&) {
    why = "Redis did not answer within 5 s";
  } catch (const std::exception& e) {
    why = e.what();
  }
  co_return error(503, why);
}

async::Task<HttpResponse> Api::workers() {
  const std::string prefix = engine_.config().redis.key_prefix;
  std::string why;
  try {
    redis::Client& c = *co_await async::wait_for(client(store::Keys::workers(prefix)), kDeadline);
    const auto read = store::read_workers(prefix);
    auto live = co_await async::wait_for(store::run(c, read), kDeadline);
    const auto time_call = store::redis_time();
    auto now = co_await async::wait_for(store::run(c, time_call), kDeadline);
    if (live.ok() && now.ok()) {
      live->keep_live(*now);
      json rows = json::array();
      for (const auto& w : live->live) rows.push_back(store::worker_row(w, *now));
      co_return answer(200, rows);
    }
    why = live.ok() ? now.error().message : live.error().message;
  } catch (const async::TimeoutError&) {
    why = "Redis did not answer within 5 s";
  }
  co_return error(503, why);
}

async::Task<HttpResponse> Api::history(std::string queue, std::string range) {
  // Points of `step` minutes, `points` of them, the last one the current minute's (or hour's).
  std::int64_t step = 1, points = 60;
  if (range == "day") {
    step = 10;
    points = 144;
  } else if (range == "week") {
    step = 60;
    points = 168;
  } else if (range != "hour") {
    co_return error(400, "range '" + range + "': hour, day or week");
  }
  const bool hours = range == "week";
  const store::Keys keys(engine_.config().redis.key_prefix, queue);
  const auto read = store::read_history(keys, hours);
  store::OpResult<std::map<std::int64_t, store::MinuteCounts>> got = redis::OpError{};
  try {
    redis::Client& c = *co_await async::wait_for(client(keys.minutes), kDeadline);
    got = co_await async::wait_for(store::run(c, read), kDeadline);
  } catch (const async::TimeoutError&) {
    co_return error(503, "Redis did not answer within 5 s");
  }
  if (!got.ok()) co_return error(got.error().connection() ? 503 : 500, got.error().message);
  const std::int64_t now_minute = store::unix_ms() / 60000;
  // In the hash's unit (minutes, or hours for the week), aligned to whole steps.
  const std::int64_t unit_now = hours ? now_minute / 60 : now_minute;
  const std::int64_t per_point = hours ? 1 : step;
  const std::int64_t last = unit_now - unit_now % per_point;
  json rows = json::array();
  for (std::int64_t i = points - 1; i >= 0; --i) {
    const std::int64_t from = last - i * per_point;
    store::MinuteCounts sum;
    for (auto it = got->lower_bound(from); it != got->end() && it->first < from + per_point; ++it) {
      sum.succeeded += it->second.succeeded;
      sum.failed += it->second.failed;
      sum.retried += it->second.retried;
      sum.timed += it->second.timed;
      sum.run_ms += it->second.run_ms;
    }
    const std::int64_t t_ms = from * (hours ? 3600000 : 60000);
    rows.push_back({{"t", t_ms},
                    {"succeeded", sum.succeeded},
                    {"failed", sum.failed},
                    {"retried", sum.retried},
                    {"avg_ms", sum.timed ? json(sum.run_ms / sum.timed) : json()}});
  }
  co_return answer(
      200,
      json{{"queue", queue}, {"range", range}, {"step_s", step * 60}, {"points", std::move(rows)}});
}

async::Task<HttpResponse> Api::redis_view() {
  const config::Config& cfg = engine_.config();
  const std::string prefix = cfg.redis.key_prefix;
  std::vector<std::string> names;
  for (const auto& q : cfg.queues) names.push_back(q.name);
  std::string why;
  try {
    // Redis as the node holding the workers hash sees itself (on a cluster: that one node).
    redis::Client& c = *co_await async::wait_for(client(store::Keys::workers(prefix)), kDeadline);
    const auto memory_call = store::info("memory");
    auto memory = co_await async::wait_for(store::run(c, memory_call), kDeadline);
    const auto server_call = store::info("server");
    auto server = co_await async::wait_for(store::run(c, server_call), kDeadline);
    if (!memory.ok() || !server.ok()) {
      why = memory.ok() ? server.error().message : memory.error().message;
    } else {
      const auto whole = [](const std::map<std::string, std::string>& m, const char* k) {
        auto it = m.find(k);
        auto v = it == m.end() ? std::nullopt : store::whole_number(it->second);
        return v ? json(*v) : json();
      };
      const auto text = [](const std::map<std::string, std::string>& m, const char* k) {
        auto it = m.find(k);
        return it == m.end() ? json() : json(it->second);
      };
      // What each of this daemon's queues holds in Redis: its keys' bytes, summed over shards.
      json queues = json::array();
      for (const auto* q : engine_.queues()) {
        json bytes = json::object();
        for (const auto& tag : store::shard_tags(q->name(), q->config().shards)) {
          const store::Keys k(prefix, q->name(), tag);
          const std::pair<const char*, std::string> keys[] = {{"pending", k.pending},
                                                              {"delayed", k.delayed},
                                                              {"dead", k.dead_bodies},
                                                              {"history", k.minutes}};
          for (const auto& [what, key] : keys) {
            redis::Client& at = *co_await async::wait_for(client(key), kDeadline);
            const auto usage = store::memory_usage(key);
            auto b = co_await async::wait_for(store::run(at, usage), kDeadline);
            const long long was = bytes.value(what, 0LL);
            if (b.ok()) bytes[what] = was + *b;
          }
        }
        queues.push_back({{"name", q->name()}, {"bytes", std::move(bytes)}});
      }
      co_return answer(200, json{{"version", text(*server, "redis_version")},
                                 {"mode", text(*server, "redis_mode")},
                                 {"used_memory", whole(*memory, "used_memory")},
                                 {"used_memory_peak", whole(*memory, "used_memory_peak")},
                                 {"maxmemory", whole(*memory, "maxmemory")},
                                 {"maxmemory_policy", text(*memory, "maxmemory_policy")},
                                 {"queues", std::move(queues)}});
    }
  } catch (const async::TimeoutError&) {
    why = "Redis did not answer within 5 s";
  }
  co_return error(503, why);
}

// ---- the live feed ----

void Api::pulse() noexcept {
  changed_.set();
  changed_.clear();
}

HttpResponse Api::events() {
  HttpResponse r;
  r.content_type = "text/event-stream";
  r.stream = [this](HttpStream& out) { return stream_events(out); };
  return r;
}

async::Task<void> Api::stream_events(HttpStream& out) {
  struct Listening {
    Api& api;
    explicit Listening(Api& a) : api(a) {
      if (api.listeners_++ == 0) api.listening_.set();
    }
    ~Listening() {
      if (--api.listeners_ == 0) {
        api.listening_.clear();
        api.queues_json_.clear();  // stale by the next listener's time
      }
    }
  } listening(*this);
  std::uint64_t seen_queues = 0, seen_job = job_seq_;
  // Rows are news once read (none are kept while nobody listens: they would be stale).
  const auto news = [&] {
    return (queues_version_ != seen_queues && !queues_json_.empty()) || job_seq_ != seen_job;
  };
  if (!co_await out.write("retry: 3000\n\n")) co_return;
  for (;;) {
    std::string chunk;
    if (queues_version_ != seen_queues && !queues_json_.empty()) {
      chunk += "event: queues\ndata: " + queues_json_ + "\n\n";
      seen_queues = queues_version_;
    }
    // Ends this listener did not see are gone from the window: it should read again.
    if (!job_ends_.empty() && job_ends_.front().first > seen_job + 1) {
      chunk += "event: resync\ndata: {}\n\n";
    }
    for (const auto& [number, end] : job_ends_) {
      if (number > seen_job) chunk += "event: job\ndata: " + end + "\n\n";
    }
    seen_job = job_seq_;
    if (!chunk.empty() && !co_await out.write(std::move(chunk))) co_return;
    // A change during the write would have pulsed unseen: look before waiting.
    if (news()) continue;
    bool woke = true;
    try {
      co_await async::wait_for(changed_.wait(), kKeepAlive);
    } catch (const async::TimeoutError&) {
      woke = false;
    }
    if (!woke && !co_await out.write(": keep-alive\n\n")) co_return;
  }
}

async::Task<void> Api::feed_queues() {
  for (;;) {
    if (listeners_ == 0) co_await listening_.wait();
    try {
      auto views = co_await async::wait_for(read_queues(), kDeadline);
      std::string text = compact(queue_rows(views, engine_.config()));
      if (text != queues_json_ && listeners_ > 0) {
        queues_json_ = std::move(text);
        ++queues_version_;
        pulse();
      }
    } catch (const async::TimeoutError&) {
    } catch (const std::exception&) {
      // Redis away: the listeners keep the last rows; /healthz and the log say why.
    }
    co_await async::sleep(1s);
  }
}

async::Task<void> Api::feed_jobs() {
  for (;;) {
    if (listeners_ == 0) co_await listening_.wait();
    const std::string prefix = engine_.config().redis.key_prefix;
    try {
      // Messages are published cluster-wide: any node will do (routed by the first queue).
      redis::ConnectOptions options = engine_.connect_options();
      if (options.slots && !engine_.config().queues.empty()) {
        options.route = store::Keys(prefix, engine_.config().queues.front().name).events;
      }
      auto conn = co_await redis::Connection::open(options);
      std::set<std::string> subscribed;
      while (conn->alive() && listeners_ > 0) {
        // The config's queues (a reload may add some): each channel once.
        for (const auto& q : engine_.config().queues) {
          const std::string channel = store::Keys(prefix, q.name).events;
          if (subscribed.count(channel)) continue;
          redis::Reply ok = co_await conn->command("SUBSCRIBE", channel);
          if (ok.is_error()) throw redis::ConnectionError("SUBSCRIBE answered " + ok.str);
          subscribed.insert(channel);
        }
        try {
          co_await async::wait_for(conn->message_came().wait(), 1s);
        } catch (const async::TimeoutError&) {
        }
        auto messages = std::move(conn->messages());
        conn->messages().clear();
        conn->message_came().clear();
        bool any = false;
        for (const auto& m : messages) {
          // ["message", channel, {"id","queue","status"}]: passed on rebuilt, never as it came.
          if (!m.is_array() || m.elements.size() != 3 || m.elements[0].str != "message") continue;
          auto parsed = job::parse_json(m.elements[2].str);
          auto* e = std::get_if<json>(&parsed);
          if (!e || !e->is_object()) continue;
          const json end = {{"id", field(*e, "id")},
                            {"queue", field(*e, "queue")},
                            {"status", field(*e, "status")}};
          job_ends_.emplace_back(++job_seq_, compact(end));
          if (job_ends_.size() > kKeptEnds) job_ends_.pop_front();
          any = true;
        }
        if (any) pulse();
      }
    } catch (const redis::ConnectionError&) {
    } catch (const std::exception&) {
    }
    co_await async::sleep(1s);
  }
}

}  // namespace jq::ops
