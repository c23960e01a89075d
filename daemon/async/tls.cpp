// Client TLS contexts, cached by their options; per-connection SSLs with host name checks.
#include "async/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "async/resolve.hpp"

namespace jq::async {
namespace {

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : "OpenSSL error " + std::to_string(e);
}

SslCtxPtr build(const TlsOptions& o) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()), SslCtxFree{});
  if (!ctx) throw std::runtime_error("TLS: cannot create a context: " + openssl_reason());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (!o.verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    const int ok = o.ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(ctx.get())
                       : SSL_CTX_load_verify_locations(ctx.get(), o.ca_file.c_str(), nullptr);
    if (ok != 1) {
      throw std::runtime_error(
          "TLS: cannot load CA certificates" +
          (o.ca_file.empty() ? std::string(" from the system store") : " from " + o.ca_file) +
          ": " + openssl_reason());
    }
  }
  if (o.cert_file.empty() != o.key_file.empty()) {
    throw std::runtime_error("TLS: a client certificate needs both cert_file and key_file");
  }
  if (!o.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert_file.c_str()) != 1) {
      throw std::runtime_error("TLS: cannot use the client certificate " + o.cert_file + ": " +
                               openssl_reason());
    }
    // OpenSSL checks here that the key is the certificate's.
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      const unsigned long e = ERR_peek_last_error();
      const bool mismatch = ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
      const std::string reason = openssl_reason();
      throw std::runtime_error(mismatch ? "TLS: the client key " + o.key_file +
                                              " does not match the certificate " + o.cert_file
                                        : "TLS: cannot use the client key " + o.key_file + ": " +
                                              reason);
    }
  }
  return ctx;
}

}  // namespace

void SslCtxFree::operator()(ssl_ctx_st* c) const noexcept {
  SSL_CTX_free(c);
}
void SslFree::operator()(ssl_st* s) const noexcept {
  SSL_free(s);
}

SslCtxPtr client_context(const TlsOptions& options) {
  // A handful of distinct options at most (Redis, each https handler): a list is enough. Held
  // for the process's life: a context is a few kilobytes and a reconnect reuses it.
  static std::mutex mutex;
  static std::vector<std::pair<TlsOptions, SslCtxPtr>> cache;
  std::lock_guard lock(mutex);
  for (const auto& [o, ctx] : cache) {
    if (o == options) return ctx;
  }
  SslCtxPtr ctx = build(options);
  cache.emplace_back(options, ctx);
  return ctx;
}

SslPtr client_ssl(ssl_ctx_st* ctx, const TlsOptions& options, const std::string& host) {
  SslPtr ssl(SSL_new(ctx));
  if (!ssl) return nullptr;
  const std::string& name = options.server_name.empty() ? host : options.server_name;
  // SNI carries names only; an IP literal is checked but not sent.
  const bool ip = is_ip_literal(name);
  if (!ip) SSL_set_tlsext_host_name(ssl.get(), name.c_str());
  if (options.verify) {
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str());
    } else {
      SSL_set1_host(ssl.get(), name.c_str());
    }
  }
  return ssl;
}

std::string tls_failure(ssl_st* ssl, unsigned long err) {
  if (ssl) {
    const long verdict = SSL_get_verify_result(ssl);
    if (verdict != X509_V_OK) {
      return std::string("TLS certificate rejected: ") + X509_verify_cert_error_string(verdict);
    }
  }
  // libevent also records SSL_get_error()'s bare codes here (SSL_ERROR_SYSCALL: the socket
  // failed): those have no reason, and the socket's own error says more.
  const char* reason = err ? ERR_reason_error_string(err) : nullptr;
  return reason ? std::string("TLS error: ") + reason : "";
}

}  // namespace jq::async
