// TLS for clients on libevent's OpenSSL bufferevents: one place that builds a verifying context
// (CA file or the system store, an optional client certificate) and names what went wrong.
#pragma once

#include <memory>
#include <string>

struct ssl_ctx_st;
struct ssl_st;

namespace jq::async {

/// How a client verifies its server and proves itself. Compared whole: connections with equal
/// options share one context.
struct TlsOptions {
  std::string ca_file;      // PEM file of trusted CAs; empty: the system's store
  std::string cert_file;    // a client certificate, for servers that ask for one (with key_file)
  std::string key_file;     //
  std::string server_name;  // the name the server's certificate must carry; empty: the host
  bool verify = true;       // false: any certificate is accepted (never for Redis)
  bool operator==(const TlsOptions&) const = default;
};

struct SslCtxFree {
  void operator()(ssl_ctx_st* c) const noexcept;
};
struct SslFree {
  void operator()(ssl_st* s) const noexcept;
};
using SslCtxPtr = std::shared_ptr<ssl_ctx_st>;
using SslPtr = std::unique_ptr<ssl_st, SslFree>;

/// A client context for `options`, TLS 1.2 or later, shared by every caller with equal options
/// (loading a CA store costs milliseconds; reconnects must not pay it each time). Throws
/// std::runtime_error naming the file that cannot be used and OpenSSL's reason.
SslCtxPtr client_context(const TlsOptions& options);

/// An SSL for one connection to `host` (a name or an IP literal): SNI set to the server name, and
/// when verifying, that name (or IP) checked against the certificate. nullptr when out of memory.
SslPtr client_ssl(ssl_ctx_st* ctx, const TlsOptions& options, const std::string& host);

/// Why a TLS connection failed: the certificate check's verdict if it failed ("certificate has
/// expired", "hostname mismatch"...), else OpenSSL's reason for `err` (a bufferevent's
/// bufferevent_get_openssl_error), else "".
std::string tls_failure(ssl_st* ssl, unsigned long err);

}  // namespace jq::async
