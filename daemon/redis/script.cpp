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

namespace {

std::vector<std::string_view> script_argv(std::string_view how, std::string_view script,
                                          const std::string& nkeys,
                                          const std::vector<std::string>& keys,
                                          const std::vector<std::string>& args) {
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back(how);
  argv.push_back(script);
  argv.push_back(nkeys);
  for (const auto& k : keys) argv.push_back(k);
  for (const auto& a : args) argv.push_back(a);
  return argv;
}

}  // namespace

bool Script::not_cached(const Reply& r) noexcept {
  return r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0;
}

PendingReply Script::send(Client& client, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args, Millis extra) const {
  const std::string nkeys = std::to_string(keys.size());
  return client.send(script_argv("EVALSHA", sha_, nkeys, keys, args), extra);
}

async::Task<Reply> Script::run(Client& client, const std::vector<std::string>& keys,
                               const std::vector<std::string>& args, Millis extra) const {
  PendingReply sent = send(client, keys, args, extra);
  Reply r = co_await sent;
  if (not_cached(r)) {
    const std::string nkeys = std::to_string(keys.size());
    const auto argv = script_argv("EVAL", source_, nkeys, keys, args);
    PendingReply again = client.send(argv, extra);
    r = co_await again;
  }
  if (r.is_error()) throw ReplyError("script " + name_ + ": " + r.str);
  co_return r;
}

}  // namespace jq::redis
