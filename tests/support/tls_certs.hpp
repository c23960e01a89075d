// Certificates for TLS tests, made with the openssl command line: CAs, and server and client
// certificates they sign (valid now, or expired long ago), as PEM files in a given directory.
#pragma once

#include <chrono>
#include <ctime>
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

namespace jq::test {

/// A certificate and its private key (unencrypted EC P-256), as paths of PEM files.
struct CertFiles {
  std::string cert, key;
};

namespace detail {

/// Runs `openssl ARGS...`; throws std::runtime_error with openssl's own output if it fails.
inline void openssl(const std::string& what, const std::filesystem::path& dir,
                    std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  const Ran ran = run_program(args);
  if (ran.code != 0) {
    throw std::runtime_error(what + ": openssl " + args[1] + " failed (" +
                             (ran.code < 0 ? "ran past 30 s" : "exit " + std::to_string(ran.code)) +
                             ") in " + dir.string() + ": " + ran.out);
  }
}

/// `t` as openssl ca's -startdate/-enddate want it: YYYYMMDDHHMMSSZ (UTC).
inline std::string asn1_time(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%SZ", &tm);
  return buf;
}

/// An openssl config file's text: `lines`, each ended.
inline std::string config_text(std::initializer_list<std::string> lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

inline const char* const kEcKey[] = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                     "-noenc"};

}  // namespace detail

/// A self-signed CA, valid now for 30 days: dir/NAME.crt and dir/NAME.key (dir/NAME.cnf beside).
inline CertFiles make_ca(const std::filesystem::path& dir, const std::string& name) {
  const CertFiles ca{(dir / (name + ".crt")).string(), (dir / (name + ".key")).string()};
  // A config of its own: the system's openssl.cnf adds extensions of its choosing to req -x509.
  const auto cnf = dir / (name + ".cnf");
  write_file(cnf, detail::config_text({
                      "[req]",
                      "distinguished_name = dn",
                      "x509_extensions = ext",
                      "[dn]",
                      "[ext]",
                      "basicConstraints = critical,CA:TRUE",
                      "keyUsage = critical,keyCertSign,cRLSign",
                      "subjectKeyIdentifier = hash",
                  }));
  std::vector<std::string> args{"req", "-x509", "-config", cnf.string()};
  args.insert(args.end(), std::begin(detail::kEcKey), std::end(detail::kEcKey));
  args.insert(args.end(),
              {"-days", "30", "-subj", "/CN=" + name, "-keyout", ca.key, "-out", ca.cert});
  detail::openssl("make_ca(" + name + ")", dir, args);
  return ca;
}

/// A key and a certificate signed by `ca`, for `subject_alt_names` (e.g.
/// "DNS:localhost,IP:127.0.0.1"), for `usage` (extendedKeyUsage: serverAuth, clientAuth, or both
/// for a cluster node): dir/NAME.crt and dir/NAME.key. Valid from an hour ago for 3 days, or if
/// `expired` from 2020-01-01 to 2020-01-02. openssl ca signs it, since x509 -req cannot date a
/// certificate in the past; its request, config and database are dir/NAME.{csr,cnf,index.txt*}
/// and its copy of the certificate dir/SERIAL.pem.
inline CertFiles issue_cert(const CertFiles& ca, const std::filesystem::path& dir,
                            const std::string& name, const std::string& subject_alt_names,
                            bool expired = false, const std::string& usage = "serverAuth") {
  const CertFiles out{(dir / (name + ".crt")).string(), (dir / (name + ".key")).string()};
  const std::string what = "issue_cert(" + name + ")";
  const auto cnf = dir / (name + ".cnf");
  const auto csr = (dir / (name + ".csr")).string();
  const auto index = dir / (name + ".index.txt");
  // A database per certificate (serials random): certificates issued in one directory, by one CA
  // or several, under the same name or not, do not meet.
  write_file(index, "");
  write_file(cnf, detail::config_text({
                      "[ca]",
                      "default_ca = ca_section",
                      "[ca_section]",
                      "database = " + index.string(),
                      "new_certs_dir = " + dir.string(),
                      "rand_serial = yes",
                      "default_md = sha256",
                      "policy = policy_any",
                      "unique_subject = no",
                      "email_in_dn = no",
                      "[policy_any]",
                      "commonName = supplied",
                      "[req]",
                      "distinguished_name = dn",
                      "[dn]",
                      "[ext]",
                      "basicConstraints = critical,CA:FALSE",
                      "keyUsage = critical,digitalSignature",
                      "extendedKeyUsage = " + usage,
                      "subjectAltName = " + subject_alt_names,
                      "subjectKeyIdentifier = hash",
                      "authorityKeyIdentifier = keyid",
                  }));
  std::vector<std::string> req{"req", "-new", "-config", cnf.string()};
  req.insert(req.end(), std::begin(detail::kEcKey), std::end(detail::kEcKey));
  req.insert(req.end(), {"-subj", "/CN=" + name, "-keyout", out.key, "-out", csr});
  detail::openssl(what, dir, req);

  const auto now = std::chrono::system_clock::now();
  const std::string start =
      expired ? "20200101000000Z" : detail::asn1_time(now - std::chrono::hours(1));
  const std::string end =
      expired ? "20200102000000Z" : detail::asn1_time(now + std::chrono::hours(72));
  detail::openssl(
      what, dir,
      {"ca", "-batch", "-notext", "-config", cnf.string(), "-extensions", "ext", "-cert", ca.cert,
       "-keyfile", ca.key, "-in", csr, "-out", out.cert, "-startdate", start, "-enddate", end});
  return out;
}

/// A CA and one certificate for every server of a group (a cluster's nodes, a primary, its
/// replica and its sentinels), for localhost and 127.0.0.1: they are servers to their clients
/// and clients of each other (the cluster bus, replication, the sentinels' links).
struct GroupCerts {
  CertFiles ca, node;
};
inline GroupCerts group_certs(const std::filesystem::path& dir) {
  GroupCerts g;
  g.ca = make_ca(dir, "ca");
  g.node =
      issue_cert(g.ca, dir, "node", "DNS:localhost,IP:127.0.0.1", false, "serverAuth,clientAuth");
  return g;
}

}  // namespace jq::test
