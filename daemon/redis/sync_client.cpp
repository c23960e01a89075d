// SyncClient on hiredis' blocking API: connect, commands, scripts, pipelining, a subscription.
#include "redis/sync_client.hpp"

#include <hiredis/hiredis.h>

#include <cerrno>

namespace jq::redis {
namespace {

timeval to_timeval(Millis d) {
  return timeval{static_cast<time_t>(d.count() / 1000),
                 static_cast<suseconds_t>(d.count() % 1000 * 1000)};
}

// Owns a reply hiredis handed over until it is copied (Reply::copy may throw).
struct ReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};

}  // namespace

void SyncClient::Free::operator()(redisContext* c) const noexcept {
  redisFree(c);
}

SyncClient::SyncClient(std::unique_ptr<redisContext, Free> c, Url url, Millis timeout) noexcept
    : c_(std::move(c)), url_(std::move(url)), timeout_(timeout) {}
SyncClient::SyncClient(SyncClient&&) noexcept = default;
SyncClient& SyncClient::operator=(SyncClient&&) noexcept = default;
SyncClient::~SyncClient() = default;

OpResult<SyncClient> SyncClient::connect(const Url& url, Millis timeout) {
  const timeval tv = to_timeval(timeout);
  std::unique_ptr<redisContext, Free> c(
      url.kind == Url::Kind::unix_socket ? redisConnectUnixWithTimeout(url.path.c_str(), tv)
                                         : redisConnectWithTimeout(url.host.c_str(), url.port, tv));
  if (!c || c->err) {
    return OpError{OpError::Kind::connection, "cannot connect to redis " + url.display() + ": " +
                                                  (c ? c->errstr : "out of memory")};
  }
  redisSetTimeout(c.get(), tv);
  cap_reader(c->reader);
  SyncClient client(std::move(c), url, timeout);
  if (!url.password.empty()) {
    auto r = url.user.empty() ? client.command("AUTH", url.password)
                              : client.command("AUTH", url.user, url.password);
    if (!r) return OpError{r.error().kind, "redis " + url.display() + ": " + r.error().message};
  }
  if (url.db) {
    auto r = client.command("SELECT", std::to_string(url.db));
    if (!r) return OpError{r.error().kind, "redis " + url.display() + ": " + r.error().message};
  }
  return client;
}

OpError SyncClient::failure(const std::string& what) const {
  return OpError{OpError::Kind::connection,
                 "redis " + url_.display() + ": " + what + reader_error(c_->errstr)};
}

OpResult<Reply> SyncClient::take(void* raw) {
  if (!raw) return failure("");
  std::unique_ptr<redisReply, ReplyFree> owned(static_cast<redisReply*>(raw));
  Reply r = Reply::copy(*owned);
  if (r.is_error()) return OpError{OpError::Kind::reply, r.str};
  return r;
}

OpResult<Reply> SyncClient::call(std::span<const std::string_view> argv) {
  std::vector<const char*> p;
  std::vector<size_t> l;
  p.reserve(argv.size());
  l.reserve(argv.size());
  for (const auto& a : argv) {
    p.push_back(a.data());
    l.push_back(a.size());
  }
  return take(redisCommandArgv(c_.get(), static_cast<int>(argv.size()), p.data(), l.data()));
}

OpResult<Reply> SyncClient::call(const std::vector<std::string>& argv) {
  std::vector<std::string_view> v(argv.begin(), argv.end());
  return call(std::span<const std::string_view>(v));
}

OpResult<Reply> SyncClient::run(const Script& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args) {
  const std::string nkeys = std::to_string(keys.size());
  auto sha = script.argv(false, nkeys, keys, args);
  auto r = call(std::span<const std::string_view>(sha));
  if (!r && r.error().kind == OpError::Kind::reply &&
      r.error().message.find("NOSCRIPT") != std::string::npos) {
    auto source = script.argv(true, nkeys, keys, args);
    r = call(std::span<const std::string_view>(source));
  }
  if (!r && r.error().kind == OpError::Kind::reply) {
    return OpError{OpError::Kind::reply, "script " + script.name() + ": " + r.error().message};
  }
  return r;
}

OpResult<Done> SyncClient::load(const Script& script) {
  auto r = command("SCRIPT", "LOAD", script.source());
  if (!r) return r.error();
  return Done{};
}

void SyncClient::append(std::span<const std::string_view> argv) {
  std::vector<const char*> p;
  std::vector<size_t> l;
  for (const auto& a : argv) {
    p.push_back(a.data());
    l.push_back(a.size());
  }
  redisAppendCommandArgv(c_.get(), static_cast<int>(argv.size()), p.data(), l.data());
}

void SyncClient::append(const std::vector<std::string>& argv) {
  std::vector<std::string_view> views(argv.begin(), argv.end());
  append(std::span<const std::string_view>(views));
}

OpResult<Reply> SyncClient::read() {
  void* raw = nullptr;
  if (redisGetReply(c_.get(), &raw) != REDIS_OK) return failure("");
  return take(raw);
}

OpResult<Done> SyncClient::subscribe(const std::string& channel) {
  auto r = command("SUBSCRIBE", channel);
  if (!r) return r.error();
  channel_ = channel;
  return Done{};
}

OpResult<std::optional<Reply>> SyncClient::next_message(Millis slice) {
  redisSetTimeout(c_.get(), to_timeval(slice));
  void* raw = nullptr;
  if (redisGetReply(c_.get(), &raw) != REDIS_OK) {
    if (c_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Nothing within the slice: hiredis has given up on this context; make a new one.
      auto fresh = connect(url_, timeout_);
      if (!fresh) return fresh.error();
      const std::string channel = channel_;
      *this = std::move(*fresh);
      if (auto s = subscribe(channel); !s) return s.error();
      return std::optional<Reply>();
    }
    return failure("");
  }
  redisSetTimeout(c_.get(), to_timeval(timeout_));
  auto r = take(raw);
  if (!r) return r.error();
  return std::optional<Reply>(std::move(*r));
}

}  // namespace jq::redis
