// EVALSHA with a NOSCRIPT fallback; SHA-1 from OpenSSL's EVP interface.
#include "redis/script.hpp"

#include <openssl/evp.h>

namespace jq::redis {

std::string sha1_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

Script::Script(std::string name, std::string source)
    : name_(std::move(name)), source_(std::move(source)), sha_(sha1_hex(source_)) {}

std::vector<std::string_view> Script::argv(bool by_source, const std::string& nkeys,
                                           const std::vector<std::string>& keys,
                                           const std::vector<std::string>& args) const {
  std::vector<std::string_view> out;
  out.reserve(3 + keys.size() + args.size());
  out.push_back(by_source ? "EVAL" : "EVALSHA");
  out.push_back(by_source ? std::string_view(source_) : std::string_view(sha_));
  out.push_back(nkeys);
  for (const auto& k : keys) out.push_back(k);
  for (const auto& a : args) out.push_back(a);
  return out;
}

bool Script::not_cached(const Reply& r) noexcept {
  return r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0;
}

OpResult<Reply> Script::answer(Reply r) const {
  if (r.is_error()) return reply_error("script " + name_, r);
  return r;
}

PendingReply Script::send(Client& client, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args, Millis extra) const {
  const std::string nkeys = std::to_string(keys.size());
  return client.send(argv(false, nkeys, keys, args), extra);
}

async::Task<OpResult<Reply>> Script::call(Client& client, const std::vector<std::string>& keys,
                                          const std::vector<std::string>& args,
                                          Millis extra) const {
  PendingReply sent = send(client, keys, args, extra);
  OpResult<Reply> r = co_await sent.result();
  if (r.ok() && not_cached(*r)) {
    const std::string nkeys = std::to_string(keys.size());
    PendingReply again = client.send(argv(true, nkeys, keys, args), extra);
    r = co_await again.result();
  }
  if (!r.ok()) co_return r;
  co_return answer(std::move(*r));
}

async::Task<Reply> Script::run(Client& client, const std::vector<std::string>& keys,
                               const std::vector<std::string>& args, Millis extra) const {
  OpResult<Reply> r = co_await call(client, keys, args, extra);
  co_return std::move(r).value();
}

}  // namespace jq::redis
