// Config: a full valid file, defaults and inheritance, and errors that say what and where.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "config/http_url.hpp"
#include "tests/support/paths.hpp"

using namespace jq::config;
using namespace std::chrono_literals;

namespace {

Config load(const std::string& yaml) {
  return parse(yaml, "test.yaml", "/etc/jobqd");
}

// The error message for `yaml`, or "" if it parsed.
std::string error_of(const std::string& yaml) {
  try {
    load(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const char* kMinimal = R"(
handlers:
  nothing: {type: builtin, name: noop}
queues:
  default:
    handler: nothing
)";

}  // namespace

TEST_CASE("the contract's example config parses with the documented meanings", "[config]") {
  auto cfg = load(R"(
redis:
  url: redis://127.0.0.1:6379/0
  key_prefix: jobq
handlers:
  thumbs: {type: exec, command: ["/usr/bin/make-thumb", "{file}"], timeout: 30s}
  notify: {type: http, url: "https://hooks.example/jobs", timeout: 5s}
  nothing: {type: builtin, name: noop}
queues:
  default:
    handler: nothing
    concurrency: 10
    buffer: 100
    max_attempts: 5
    sources:
      - redis: {}
      - spool: {dir: /var/spool/jobqd/default, pattern: "*"}
)");
  CHECK(cfg.redis.url == "redis://127.0.0.1:6379/0");
  REQUIRE(cfg.handlers.size() == 3);
  CHECK(cfg.handlers.at("thumbs").type == HandlerType::exec);
  CHECK(cfg.handlers.at("thumbs").command ==
        std::vector<std::string>{"/usr/bin/make-thumb", "{file}"});
  CHECK(cfg.handlers.at("notify").timeout == Millis(5000));
  REQUIRE(cfg.queues.size() == 1);
  const auto& q = cfg.queues[0];
  CHECK(q.concurrency == 10);
  CHECK(q.buffer == 100);
  CHECK(q.max_attempts == 5);
  REQUIRE(q.sources.size() == 2);
  CHECK(q.sources[1].kind == SourceConfig::Kind::spool);
  CHECK(q.sources[1].dir == "/var/spool/jobqd/default");
}

TEST_CASE("defaults: a queue without sources takes from Redis; timeouts inherit", "[config]") {
  auto cfg = load(R"(
handlers:
  slow: {type: builtin, name: sleep, timeout: 2m}
queues:
  a: {handler: slow}
  b: {handler: slow, timeout: 5s, max_timeout: 1m}
)");
  const auto* a = cfg.queue("a");
  REQUIRE(a);
  REQUIRE(a->sources.size() == 1);
  CHECK(a->sources[0].kind == SourceConfig::Kind::redis);
  CHECK(a->timeout == Millis(120000));  // from the handler
  CHECK(a->max_timeout == a->timeout);
  CHECK(cfg.queue("b")->timeout == Millis(5000));
  CHECK(cfg.queue("b")->max_timeout == Millis(60000));
  CHECK(cfg.daemon.lease == Millis(30000));
  CHECK(cfg.redis.key_prefix == "jobq");
  CHECK_FALSE(cfg.daemon.name.empty());
}

TEST_CASE("relative paths resolve against the config file's directory", "[config]") {
  auto cfg = load(R"(
daemon: {state_dir: ../var/jobqd}
handlers:
  h: {type: builtin, name: noop}
queues:
  q:
    handler: h
    sources: [{spool: {dir: spool/q}}]
)");
  CHECK(cfg.daemon.state_dir == "/etc/var/jobqd");
  CHECK(cfg.queue("q")->sources[0].dir == "/etc/jobqd/spool/q");
  CHECK_FALSE(cfg.queue("q")->sources[0].recursive);
  auto rec = load(R"(
handlers: {h: {type: builtin, name: noop}}
queues:
  q: {handler: h, sources: [{spool: {dir: /s, recursive: true, on_success: move}}]}
)");
  CHECK(rec.queue("q")->sources[0].recursive);
  CHECK(rec.queue("q")->sources[0].keep_done);
}

TEST_CASE("durations and sizes", "[config]") {
  CHECK(parse_duration("250ms") == Millis(250));
  CHECK(parse_duration("30s") == Millis(30000));
  CHECK(parse_duration("1.5s") == Millis(1500));
  CHECK(parse_duration("5m") == Millis(300000));
  CHECK(parse_duration("1h") == Millis(3600000));
  CHECK_FALSE(parse_duration("30"));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("10 s"));
  CHECK(parse_size("1024") == 1024u);
  CHECK(parse_size("64KiB") == 65536u);
  CHECK(parse_size("1MB") == 1000000u);
  CHECK_FALSE(parse_size("1.5"));
  CHECK_FALSE(parse_size("12XB"));
  CHECK(format_duration(Millis(250)) == "250ms");
  CHECK(format_duration(Millis(5400000)) == "1h30m");
}

TEST_CASE("errors name the file, line and column, and what is wrong", "[config]") {
  CHECK(error_of(std::string(kMinimal) + "    concurency: 4\n") ==
        "test.yaml:7:5: unknown key 'concurency' in queues.default (did you mean 'concurrency'?)");
  CHECK(error_of(std::string(kMinimal) + "    timeout: 30\n") ==
        "test.yaml:7:14: queues.default.timeout: '30' is not a duration (write it like 250ms, 30s, "
        "5m or 1h)");
  CHECK(error_of(std::string(kMinimal) + "    concurrency: 0\n") ==
        "test.yaml:7:18: queues.default.concurrency: 0 is out of range (a whole number from 1 to "
        "100000)");
  CHECK(error_of(std::string(kMinimal) + "    concurrency: -5\n") ==
        "test.yaml:7:18: queues.default.concurrency: -5 is out of range (a whole number from 1 to "
        "100000)");
  CHECK(error_of(std::string(kMinimal) + "    concurrency: 99999999999999999999\n") ==
        "test.yaml:7:18: queues.default.concurrency: 99999999999999999999 is out of range (a whole "
        "number from 1 "
        "to 100000)");
  CHECK(error_of(std::string(kMinimal) + "    concurrency: ten\n") ==
        "test.yaml:7:18: queues.default.concurrency: 'ten' is not a whole number from 1 to 100000");
  CHECK(error_of(R"(
handlers:
  h: {type: builtin, name: noop}
queues:
  q: {handler: nope}
)") == "test.yaml:5:16: queues.q: handler 'nope' is not defined (defined: h)");
  CHECK(error_of(R"(
handlers:
  h: {type: builtin, name: noop, command: ["/bin/true"]}
queues:
  q: {handler: h}
)") == "test.yaml:3:34: handlers.h: 'command' does not apply to a handler of type builtin");
  CHECK(error_of("handlers:\n  h: {type: exec, command: [true]}\nqueues:\n  q: {handler: h}\n") ==
        "test.yaml:2:28: handlers.h.command: the program must be an absolute path, got 'true'");
  // The lines below are each the only error in their file: `h` is defined.
  const std::string h = "handlers: {h: {type: builtin, name: noop}}\n";
  CHECK(error_of(h + "queues: {\"bad name\": {handler: h}}\n") ==
        "test.yaml:2:10: queue name 'bad name': use 1-64 characters of A-Z a-z 0-9 _ . -");
  CHECK(error_of(h + "redis: {url: http://x}\nqueues: {q: {handler: h}}\n") ==
        "test.yaml:2:14: redis.url: 'http://x' is not redis://[user:password@]host:port/db, "
        "rediss://... (TLS), redis-sentinel://host:port,host:port/name, "
        "redis-cluster://host:port,..., unix:///path or embedded");
  CHECK(error_of("handlers: {}\n") ==
        "test.yaml:1:1: no queues configured: add a 'queues' section with at least one queue");
  CHECK(error_of("queus: {}\n") ==
        "test.yaml:1:1: unknown section 'queus' (did you mean 'queues'?)");
  CHECK(error_of("queues: [a\n").rfind("test.yaml:2:1: not valid YAML", 0) == 0);
  CHECK(error_of("http: {listen: 0.0.0.0:9464}\n" + h + "queues: {q: {handler: h}}\n") ==
        "test.yaml:1:16: http.listen: 0.0.0.0:9464 is not a loopback address (127.0.0.0/8 "
        "written as an address, ::1, or localhost), so anyone who can reach it could read "
        "/metrics without a token: set http.token_file (requests then need 'Authorization: "
        "Bearer <token>'), or listen on 127.0.0.1");
  CHECK(error_of("http: {listen: 9464}\n" + h + "queues: {q: {handler: h}}\n") ==
        "test.yaml:1:16: http.listen: '9464' is not host:port (or off)");
  CHECK(error_of("http: {dashboard: yes please}\n" + h + "queues: {q: {handler: h}}\n")
            .rfind("test.yaml:1:19: http.dashboard: ", 0) == 0);
  CHECK(error_of("redis: {url: \"redis://:pw@h:1/0\", password_env: PW}\n" + h +
                 "queues: {q: {handler: h}}\n") ==
        "test.yaml:1:1: redis: give the password one way: password_file, password_env or in the "
        "url");
  CHECK(error_of("redis: {password_env: \"A-B\"}\n" + h + "queues: {q: {handler: h}}\n") ==
        "test.yaml:1:23: redis.password_env: 'A-B' is not a variable name");
  CHECK(error_of(h + "queues: {q: {handler: h}}\nmetrics: {listen: 127.0.0.1:9464}\n") ==
        "test.yaml:3:1: metrics: the section is called http now (http.listen)");
}

TEST_CASE("bad configs, a table: each refused with its position and what is wrong", "[config]") {
  const std::string h = "handlers: {h: {type: builtin, name: noop}}\n";
  const std::string q = "queues: {q: {handler: h}}\n";
  const std::pair<std::string, std::string> cases[] = {
      {"daemon: {log_level: loud}\n" + h + q,
       "1:21: daemon.log_level: 'loud' is not one of trace, debug, info, warn, error"},
      {"logging: {format: xml}\n" + h + q, "1:19: logging.format: 'xml' is not text or json"},
      {h + "queues: {q: {handler: h, sources: [{spool: {}}]}}\n",
       "2:44: queues.q.sources[0]: a spool source needs 'dir'"},
      {h + "queues: {q: {handler: h, sources: [{ftp: {}}]}}\n",
       "2:37: queues.q.sources[0]: unknown source 'ftp' (redis or spool)"},
      {h + "queues: {q: {handler: h, sources: [{spool: {dir: /tmp, on_success: keep}}]}}\n",
       "2:68: queues.q.sources[0].spool.on_success: 'keep' is not delete or move (to done/)"},
      {h + "queues:\n  a: {handler: h, sources: [{spool: {dir: /tmp}}]}\n"
           "  b: {handler: h, sources: [{spool: {dir: /tmp}}]}\n",
       "4:6: queues.b: spool dir /tmp is already the source of queue a"},
      {"daemon: {lease: 5ms}\n" + h + q, "1:17: daemon.lease: must be at least 1s"},
      {"http: {listen: \"127.0.0.1:70000\"}\n" + h + q,
       "1:16: http.listen: '127.0.0.1:70000' is not host:port (or off)"},
      {h + "queues: {q: {handler: h, buffer: 0}}\n",
       "2:34: queues.q.buffer: 0 is out of range (a whole number from 1 to 1000000)"},
      {"handlers: {h: {type: magic}}\n" + q,
       "1:22: handlers.h.type: 'magic' is not builtin, exec or http"},
      {h + "queues: {q: {handler: h, sources: [{spool: {dir: /tmp, recursive: maybe}}]}}\n",
       "2:67: queues.q.sources[0].spool.recursive: 'maybe' is not true or false"},
      {h + "queues: {q: {handler: h, max_attempts: 0}}\n",
       "2:40: queues.q.max_attempts: 0 is out of range (a whole number from 1 to 1000)"},
      {h + "queues: {q: {handler: h, retain: {failed: forever}}}\n",
       "2:43: queues.q.retain.failed: 'forever' is not a duration (write it like 250ms, 30s, 5m or "
       "1h)"},
      {"handlers: {h: {type: http, url: \"ftp://x\"}}\n" + q,
       "1:33: handlers.h.url 'ftp://x' must start with http:// or https://"},
      {h + "queues: {q: {handler: h, sources: {redis: {}}}}\n",
       "2:35: queues.q.sources: must be a list (- redis: {} / - spool: {dir: ...})"},
      {"daemon: {shutdown_grace: soon}\n" + h + q,
       "1:26: daemon.shutdown_grace: 'soon' is not a duration (write it like 250ms, 30s, 5m or "
       "1h)"},
      {"redis: {key_prefix: \"a:b\"}\n" + h + q,
       "1:21: redis.key_prefix: must not contain braces, colons or spaces"},
      {"redis: {connect_timeout: 1ms}\n" + h + q,
       "1:26: redis.connect_timeout: must be at least 10ms"},
      {"handlers: {h: {type: exec}}\n" + q, "1:15: handlers.h: an exec handler needs 'command'"},
      {"handlers: {h: {type: exec, command: [\"/bin/true\"], limits: {cpu: 0s}}}\n" + q,
       "1:66: handlers.h.limits.cpu: must be at least 1s"},
      {"handlers: {h: {type: exec, command: [\"/bin/x{id}\"]}}\n" + q,
       "1:38: handlers.h.command: the program itself cannot contain placeholders"},
      {"handlers: {h: {type: http, url: \"http://x\", body: form}}\n" + q,
       "1:51: handlers.h.body: 'form' is not payload or job"},
      {"handlers: {h: {type: http, url: \"http://x\", headers: {Authorization: x}}}\n" + q,
       "1:54: handlers.h.headers: Authorization carries a secret: give it with headers_from_env "
       "or headers_from_file, so that it stays out of the config file"},
      {"handlers: {h: {type: builtin, name: noop, pool_size: 3}}\n" + q,
       "1:43: handlers.h: 'pool_size' does not apply to a handler of type builtin"},
      {"handlers: {\"a b\": {type: builtin, name: noop}}\nqueues: {q: {handler: \"a b\"}}\n",
       "1:12: handler name 'a b': use 1-64 characters of A-Z a-z 0-9 _ . -"},
      {h + "queues: {q: {handler: h, max_timeout: 1s, timeout: 5s}}\n",
       "2:13: queues.q: max_timeout (1s) is below timeout (5s)"},
      {h + "queues: {q: {handler: h, retry_base: 10m, retry_max: 1m}}\n",
       "2:13: queues.q: retry_max (1m) is below retry_base (10m)"},
      {h + "queues: {q: {handler: h, retain: {succeeded: 500ms}}}\n",
       "2:46: queues.q.retain.succeeded: must be 0 (delete at once) or at least 1s"},
      {h + "queues: {q: {handler: h, sources: [{redis: {x: 1}}]}}\n",
       "2:44: queues.q.sources[0]: the redis source takes no settings ({})"},
      {h + "queues: {q: {handler: h, sources: [{spool: {dir: /tmp}}, {spool: {dir: /tmp}}]}}\n",
       "2:35: queues.q: spool dir /tmp is listed twice"},
      {h + "queues: {q: {handler: h, fetch_batch: 5000}}\n",
       "2:39: queues.q.fetch_batch: 5000 is out of range (a whole number from 1 to 1000)"},
      {h + "queues: {q: {handler: h, max_job_bytes: 10}}\n",
       "2:41: queues.q.max_job_bytes: must be at least 64 bytes"},
      {"handlers: {h: {type: exec, command: [\"/bin/true\"], no_retry_exit_codes: [0]}}\n" + q,
       "1:74: handlers.h.no_retry_exit_codes: 0 is out of range (a whole number from 1 to 255)"},
      {"daemon: {name: \"bad name\"}\n" + h + q,
       "1:16: daemon.name: use 1-64 characters of A-Z a-z 0-9 _ . -"},
      {h + "queues: {q: {handler: h, concurrency: [1]}}\n",
       "2:39: queues.q.concurrency: must be a single value, not a list or map"},
      {h + "queues: [a, b]\n", "2:9: queues must be a map of queue names to settings"},
      {"daemon: 5\n" + h + q, "1:9: daemon must be a map of settings"},
      {"handlers: {h: {type: builtin, name: nope}}\n" + q,
       "1:37: handlers.h.name: 'nope' is not one of noop, echo, sleep, fail"},
      {"handlers: {h: {type: exec, command: [\"/bin/true\"], env: {A: [1]}}}\n" + q,
       "1:61: handlers.h.env.A: must be a single value, not a list or map"},
      {h + "queues: {q: {handler: h, sources: [{spool: {dir: /tmp, patern: \"*.json\"}}]}}\n",
       "2:56: unknown key 'patern' in queues.q.sources[0].spool (did you mean 'pattern'?)"},
  };
  CHECK(std::size(cases) >= 40);
  for (const auto& [yaml, want] : cases) {
    INFO(yaml);
    CHECK(error_of(yaml) == "test.yaml:" + want);
  }
}

TEST_CASE("retention: durations, 0 to delete at once, days", "[config]") {
  auto cfg = load(std::string(kMinimal) + "    retain: {succeeded: 0, failed: 7d}\n");
  CHECK(cfg.queues[0].retain.succeeded == 0ms);
  CHECK(cfg.queues[0].retain.failed == 7 * 24h);
  auto defaults = load(kMinimal);
  CHECK(defaults.queues[0].retain.succeeded == 24h);
  CHECK(defaults.queues[0].retain.failed == 7 * 24h);
  CHECK(
      error_of(std::string(kMinimal) + "    retain: {succeeded: 10ms}\n") ==
      "test.yaml:7:25: queues.default.retain.succeeded: must be 0 (delete at once) or at least 1s");
  CHECK(error_of(std::string(kMinimal) + "    retain: {succeded: 1h}\n") ==
        "test.yaml:7:14: unknown key 'succeded' in queues.default.retain (did you mean "
        "'succeeded'?)");
}

TEST_CASE("retain.payload: off unless asked for, a bool, reloadable", "[config][payload]") {
  CHECK_FALSE(load(kMinimal).queues[0].retain.payload);
  const auto cfg = load(std::string(kMinimal) + "    retain: {payload: true}\n");
  CHECK(cfg.queues[0].retain.payload);
  // The other keys of retain keep their defaults.
  CHECK(cfg.queues[0].retain.succeeded == 24h);
  CHECK(error_of(std::string(kMinimal) + "    retain: {payload: sometimes}\n") ==
        "test.yaml:7:23: queues.default.retain.payload: 'sometimes' is not true or false");
  CHECK(error_of(std::string(kMinimal) + "    retain: {payload: [true]}\n")
            .rfind("test.yaml:7:23: ", 0) == 0);
  CHECK_THAT(print(cfg), Catch::Contains("payload: true"));
}

TEST_CASE("a key written twice is an error naming both places", "[config]") {
  CHECK(error_of(std::string(kMinimal) + "    handler: nothing\n") ==
        "test.yaml:7:5: duplicate key 'handler' in queues.default (first at line 6, column 5)");
  CHECK(error_of(std::string(kMinimal) + "  default: {handler: nothing}\n") ==
        "test.yaml:7:3: duplicate key 'default' in queues (first at line 5, column 3)");
  CHECK(error_of(std::string(kMinimal) + "handlers: {}\n") ==
        "test.yaml:7:1: duplicate key 'handlers' in the config (first at line 2, column 1)");
  CHECK(error_of("handlers:\n  n: {type: builtin, name: noop, name: echo}\nqueues: {q: {handler: "
                 "n}}\n") ==
        "test.yaml:2:34: duplicate key 'name' in handlers.n (first at line 2, column 22)");
  CHECK(error_of("handlers:\n  e: {type: exec, command: [/bin/true], env: {A: 1, A: 2}}\n"
                 "queues: {q: {handler: e}}\n") ==
        "test.yaml:2:53: duplicate key 'A' in handlers.e.env (first at line 2, column 47)");
}

TEST_CASE("webhook URLs are checked when the config is read", "[config]") {
  auto url_error = [](const std::string& url) {
    return error_of("handlers:\n  h: {type: http, url: \"" + url +
                    "\"}\nqueues:\n  q: {handler: h}\n");
  };
  CHECK(url_error("https://hooks.example:8443/x?token=1#frag").empty());
  CHECK(url_error("http://[::1]:8080/").empty());
  CHECK(url_error("ftp://x/") ==
        "test.yaml:2:24: handlers.h.url 'ftp://x/' must start with http:// or https://");
  CHECK(url_error("http://h:abc/") ==
        "test.yaml:2:24: handlers.h.url 'http://h:abc/' has port 'abc', not a number from 1 to "
        "65535");
  CHECK(url_error("http://h:70000/") ==
        "test.yaml:2:24: handlers.h.url 'http://h:70000/' has port '70000', not a number from 1 to "
        "65535");
  CHECK(url_error("http:///x") == "test.yaml:2:24: handlers.h.url 'http:///x' has no host");
  // Credentials are refused, and not repeated in the message (it may end up in a log).
  CHECK(url_error("https://bob:s3cret@hooks.example/") ==
        "test.yaml:2:24: handlers.h.url has credentials in it (user@ or user:password@): put them "
        "in a "
        "header from headers_from_env or headers_from_file instead");
  CHECK(error_of("handlers:\n  h: {type: http, url: \"http://h/\", headers: {authorization: "
                 "\"Bearer x\"}}\nqueues:\n  q: {handler: h}\n") ==
        "test.yaml:2:46: handlers.h.headers: authorization carries a secret: give it with "
        "headers_from_env "
        "or headers_from_file, so that it stays out of the config file");
  auto ok = parse_http_url("https://hooks.example:8443/x?token=1#frag");
  REQUIRE(std::holds_alternative<HttpUrl>(ok));
  const auto& u = std::get<HttpUrl>(ok);
  CHECK(u.tls);
  CHECK(u.host == "hooks.example");
  CHECK(u.port == 8443);
  CHECK(u.path == "/x?token=1");
  CHECK(u.authority == "hooks.example:8443");
  auto bare = parse_http_url("http://h?q=1");
  REQUIRE(std::holds_alternative<HttpUrl>(bare));
  CHECK(std::get<HttpUrl>(bare).path == "/?q=1");
  CHECK(std::get<HttpUrl>(bare).port == 80);
}

TEST_CASE("every error in one run, in file order, each where it is", "[config][diagnostics]") {
  // Five independent mistakes: fixing one must not be what reveals the next.
  const std::string yaml = R"(daemon:
  lease: 5ms
handlers:
  echo: {type: builtin, name: echo}
  run: {type: exec, command: [relative]}
queues:
  default:
    handler: echo
    concurency: 3
  other: {handler: run, timeout: 30}
http: {listen: nowhere}
)";
  try {
    load(yaml);
    FAIL("accepted");
  } catch (const ConfigError& e) {
    const std::vector<std::string> want = {
        "test.yaml:2:10: daemon.lease: must be at least 1s",
        "test.yaml:5:30: handlers.run.command: the program must be an absolute path, got "
        "'relative'",
        "test.yaml:9:5: unknown key 'concurency' in queues.default (did you mean 'concurrency'?)",
        "test.yaml:10:34: queues.other.timeout: '30' is not a duration (write it like 250ms, 30s, "
        "5m or 1h)",
        "test.yaml:11:16: http.listen: 'nowhere' is not host:port (or off)",
    };
    std::vector<std::string> got;
    for (const auto& d : e.problems()) got.push_back(d.text());
    CHECK(got == want);
    std::string lines;
    for (const auto& w : want) lines += (lines.empty() ? "" : "\n") + w;
    CHECK(std::string(e.what()) == lines);
    REQUIRE(e.problems().size() == 5);
    CHECK(e.problems()[2].line == 9);
    CHECK(e.problems()[2].column == 5);
    CHECK(e.problems()[2].file == "test.yaml");
  }
  CHECK(count_line("e.yaml", 3) == "e.yaml: 3 errors");
  CHECK(count_line("e.yaml", 1) == "e.yaml: 1 error");
}

TEST_CASE("a section or key indented under the wrong parent is named as such",
          "[config][diagnostics]") {
  // `queues:` under `handlers:`: said once, where it is, and checked as the queues it is (the
  // typo inside is found; no "no queues configured", no "handler 'echo' is not defined").
  CHECK(error_of(R"(handlers:
  echo: {type: builtin, name: echo}
  queues:
    default: {handler: echo, buffer: 0}
)") == "test.yaml:3:3: 'queues' is a top-level section, but it is indented under 'handlers' "
       "(check its indentation)\n"
       "test.yaml:4:38: queues.default.buffer: 0 is out of range (a whole number from 1 to "
       "1000000)");
  // `handlers:` under the last queue: its handlers are still defined for the queues.
  CHECK(error_of(R"(queues:
  a: {handler: echo}
  b:
    handler: echo
    handlers:
      echo: {type: builtin, name: echo}
)") == "test.yaml:5:5: 'handlers' is a top-level section, but it is indented under 'queues.b' "
       "(check its indentation)");
  // A queue's key under its sources, as a spool setting or beside `- redis: {}`.
  CHECK(error_of(std::string(kMinimal) +
                 "    sources:\n      - spool:\n          dir: /tmp\n          concurrency: 4\n") ==
        "test.yaml:10:11: 'concurrency' is a queue key, but it is indented under "
        "'queues.default.sources[0].spool' (check its indentation)");
  CHECK(error_of(std::string(kMinimal) + "    sources:\n      - redis: {}\n        buffer: 5\n") ==
        "test.yaml:9:9: 'buffer' is a queue key, but it is indented under "
        "'queues.default.sources[0]' (check its indentation)");
  // One step too far out: a queue's key beside the queues, a section's key at the top.
  CHECK(error_of(std::string(kMinimal) + "  concurrency: 4\n") ==
        "test.yaml:7:3: 'concurrency' is a queue key, but it is indented under 'queues' (check "
        "its indentation)");
  CHECK(error_of(std::string(kMinimal) + "url: embedded\n") ==
        "test.yaml:7:1: 'url' is a key of the redis section, but it is at the top level (check "
        "its indentation)");
  // ... which does not hide what else is wrong (`handler` is close to `handlers`, but is a
  // queue's key here, not the handlers section misspelled).
  CHECK(error_of("handlers: {h: {type: builtin, name: noop}}\nqueues: {q: {handler: nope}}\n"
                 "handler: h\n") ==
        "test.yaml:2:23: queues.q: handler 'nope' is not defined (defined: h)\n"
        "test.yaml:3:1: 'handler' is a queue key, but it is at the top level (check its "
        "indentation)");
  CHECK(error_of(std::string(kMinimal) + "other:\n  handler: nothing\n") ==
        "test.yaml:7:1: 'other' looks like a queue (it has 'handler'), but it is at the top "
        "level (check its indentation: queues go under 'queues')");
  // A handler's key under its limits.
  CHECK(error_of("handlers:\n  x:\n    type: exec\n    command: [/bin/true]\n    limits:\n"
                 "      timeout: 5s\nqueues: {q: {handler: x}}\n") ==
        "test.yaml:6:7: 'timeout' is a handler key, but it is indented under "
        "'handlers.x.limits' (check its indentation)");
  // A key that is there, one level too deep, is not also missing where it belongs.
  CHECK(error_of("handlers: {h: {type: builtin, name: noop}}\nqueues:\n  q:\n    retain:\n"
                 "      handler: h\n") ==
        "test.yaml:5:7: 'handler' is a queue key, but it is indented under 'queues.q.retain' "
        "(check its indentation)");
  CHECK(error_of("handlers:\n  x:\n    type: exec\n    limits:\n      command: [/bin/true]\n"
                 "queues: {q: {handler: x}}\n") ==
        "test.yaml:5:7: 'command' is a handler key, but it is indented under 'handlers.x.limits' "
        "(check its indentation)");
  CHECK(error_of(std::string(kMinimal) + "    sources:\n      - spool:\n        dir: /tmp\n") ==
        "test.yaml:9:9: 'dir' is a key of a spool source, but it is indented under "
        "'queues.default.sources[0]' (check its indentation)");
  // Names of sections are fine names for handlers and queues when shaped like them.
  CHECK(error_of("handlers:\n  http: {type: http, url: \"http://x/\"}\n"
                 "queues:\n  redis: {handler: http}\n  retain: {handler: http}\n")
            .empty());
  // The "did you mean" suggestions stay, and a misspelled section is checked as that section.
  CHECK(error_of("queus:\n  q: {handler: nothing}\nhandlers:\n  nothing: {type: builtin, name: "
                 "noop}\n") == "test.yaml:1:1: unknown section 'queus' (did you mean 'queues'?)");
  CHECK(error_of(std::string(kMinimal) + "    retain: {succeded: 1h}\n") ==
        "test.yaml:7:14: unknown key 'succeded' in queues.default.retain (did you mean "
        "'succeeded'?)");
}

TEST_CASE("an error inside one value does not cascade into others", "[config][diagnostics]") {
  // A handler refused: the queues naming it are not also told it is not defined.
  CHECK(error_of(R"(handlers:
  run: {type: exec, command: "/bin/true"}
queues:
  a: {handler: run}
  b: {handler: run}
)") == "test.yaml:2:30: handlers.run.command: must be a list, like [\"/usr/bin/prog\", "
       "\"{file}\"]");
  // Its type refused: nothing said of which keys apply or are needed for some default type.
  CHECK(error_of(
            "handlers:\n  w: {type: webhook, url: \"http://x/\"}\nqueues: {q: {handler: w}}\n") ==
        "test.yaml:2:13: handlers.w.type: 'webhook' is not builtin, exec or http");
  // A key of another handler type: that, not also what is wrong with its value.
  CHECK(error_of("handlers:\n  n: {type: builtin, name: noop, command: 3}\n"
                 "queues: {q: {handler: n}}\n") ==
        "test.yaml:2:34: handlers.n: 'command' does not apply to a handler of type builtin");
  // A timeout refused is not also below max_timeout (nor is one from a refused handler).
  CHECK(error_of(std::string(kMinimal) + "    timeout: soon\n    max_timeout: 1s\n") ==
        "test.yaml:7:14: queues.default.timeout: 'soon' is not a duration (write it like 250ms, "
        "30s, 5m or 1h)");
  CHECK(error_of("handlers:\n  s: {type: builtin, name: sleep, timeout: 5}\n"
                 "queues: {q: {handler: s, max_timeout: 1s}}\n") ==
        "test.yaml:2:44: handlers.s.timeout: '5' is not a duration (write it like 250ms, 30s, 5m "
        "or 1h)");
  // A spool dir refused is not also missing.
  CHECK(error_of(std::string(kMinimal) + "    sources: [{spool: {dir: [a]}}]\n") ==
        "test.yaml:7:29: queues.default.sources[0].spool.dir: must be a single value, not a list "
        "or map");
  // The handlers section unreadable: no "not defined" at each queue.
  CHECK(error_of("handlers: [a]\nqueues: {a: {handler: x}, b: {handler: y}}\n") ==
        "test.yaml:1:11: handlers must be a map of names to definitions");
  // A key written twice: said once; the second is not checked as well.
  CHECK(error_of(std::string(kMinimal) + "    buffer: 5\n    buffer: zero\n") ==
        "test.yaml:8:5: duplicate key 'buffer' in queues.default (first at line 7, column 5)");
}

TEST_CASE("an empty config, or one that is not a map, is refused with a position",
          "[config][diagnostics]") {
  for (const char* empty : {"", "# only a comment\n\n# and another\n"}) {
    INFO("'" << empty << "'");
    const std::string e = error_of(empty);
    CHECK(e.rfind("test.yaml:1:1: the config is empty: the least jobqd runs is \"handlers: {echo: "
                  "{type: builtin, name: echo}}\" and, on a line of its own, \"queues: {default: "
                  "{handler: echo}}\"",
                  0) == 0);
    CHECK(e.find("config/jobqd.yaml") != std::string::npos);
    CHECK(e.find('\n') == std::string::npos);
  }
  CHECK(error_of("# a list\n- a\n- b\n") ==
        "test.yaml:2:1: the config must be a map with sections (redis, handlers, queues), not a "
        "list");
  CHECK(error_of("\n  hello\n") ==
        "test.yaml:2:3: the config must be a map with sections (redis, handlers, queues), not a "
        "single value");
}

TEST_CASE("http.listen without a token: only loopback written as an address, or localhost",
          "[config][http]") {
  // What a name starts with says nothing of where it resolves: 127.attacker.example is the
  // attacker's to point anywhere.
  const std::pair<const char*, bool> hosts[] = {
      {"127.attacker.example", false},
      {"127.0.0.1.nip.io", false},
      {"localhost.evil", false},
      {"0x7f.1", false},  // inet_aton would read it as 127.0.0.1; inet_pton does not
      {"127.1", false},   // likewise: only four decimal parts are an address here
      {"[127.0.0.1]", false},
      {"0.0.0.0", false},
      {"[::]", false},
      {"::ffff:127.0.0.1", false},
      {"[::1]", true},
      {"::1", true},
      {"127.0.0.5", true},
      {"127.255.255.254", true},
      {"127.0.0.1", true},
      {"localhost", true},
  };
  const std::string rest =
      "handlers: {h: {type: builtin, name: noop}}\nqueues: {q: {handler: h}}\n";
  for (const auto& [host, loopback] : hosts) {
    INFO(host);
    CHECK(is_loopback_host(host) == loopback);
    const std::string listen = std::string(host) + ":9";
    CHECK(listen_host(listen) == host);
    const std::string e = error_of("http: {listen: \"" + listen + "\"}\n" + rest);
    if (loopback) {
      CHECK(e.empty());
    } else {
      CHECK(e == "test.yaml:1:16: http.listen: " + listen +
                     " is not a loopback address (127.0.0.0/8 written as an address, ::1, or "
                     "localhost), so anyone who can reach it could read /metrics without a token: "
                     "set http.token_file (requests then need 'Authorization: Bearer <token>'), "
                     "or listen on 127.0.0.1");
    }
    // With a token, any address.
    CHECK(error_of("http: {listen: \"" + listen + "\", token_file: /etc/jobqd/token}\n" + rest)
              .empty());
  }
}

TEST_CASE("load_file reports a missing file by name", "[config]") {
  try {
    load_file("/nonexistent/jobqd.yaml");
    FAIL("no error");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) ==
          "/nonexistent/jobqd.yaml: cannot read the config file: No such file or directory");
  }
}

TEST_CASE("every config key is documented in docs/config.md", "[config][docs]") {
  std::ifstream in(jq::test::repo_root() / "docs/config.md");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  for (const auto& key : schema_keys()) {
    std::string leaf = key.substr(key.rfind('.') + 1);
    INFO("key " << key);
    CHECK(doc.find("`" + leaf + "`") != std::string::npos);
  }
}

TEST_CASE("docs/config.md gives each key the schema's default and reloadability",
          "[config][docs]") {
  std::ifstream in(jq::test::repo_root() / "docs/config.md");
  REQUIRE(in);
  std::map<std::string, KeyInfo> keys;
  for (auto& k : schema()) keys[k.key] = k;
  // Rows `| `key` | type | default | reloadable | ... |` (and `| `retain`: `failed` | ...`) under
  // `## `section``; the handlers table has `applies to` where the others have `type`.
  std::string line, section;
  std::size_t checked = 0;
  const std::regex heading(R"(^## `(\w+)`)");
  const std::regex row(R"(^\| `(\w+)`(?:: `(\w+)`)? \| ([^|]*) \| ([^|]*) \| ([^|]*) \|)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, heading)) {
      section = m[1];
      continue;
    }
    if (!std::regex_search(line, m, row)) continue;
    const bool named = section == "queues" || section == "handlers" || section == "schedules";
    std::string key = named ? section + ".*" : section;
    key += "." + m[1].str() + (m[2].matched ? "." + m[2].str() : "");
    auto it = keys.find(key);
    if (it == keys.end()) continue;
    INFO(key << ": " << line);
    const bool handlers = section == "handlers";
    const std::string def = handlers ? m[5].str() : m[4].str();
    // A default written as one code span is the schema's, exactly.
    std::smatch code;
    if (std::regex_match(def, code, std::regex("`([^`]*)`")) && !it->second.default_value.empty()) {
      CHECK(code[1].str() == it->second.default_value);
    }
    if (!handlers) {
      const std::string reload = m[5].str();
      CHECK(reload == (it->second.reloadable ? "yes" : "no"));
    } else {
      CHECK(it->second.reloadable);  // "Every key of a handler is reloadable"
    }
    ++checked;
  }
  CHECK(checked >= 50);
}

TEST_CASE("--print-config's output reads back as the same config, with secrets masked",
          "[config]") {
  const std::string text = R"(
redis: {url: "redis://app:s3cret@db.example:6380/2"}
handlers:
  h: {type: exec, command: ["/bin/cat"], env: {API_TOKEN: abc, MODE: fast}, limits: {cpu: 5s}}
  w: {type: http, url: "https://example.com/hook", headers_from_env: {Authorization: HOOK_AUTH}}
queues:
  q: {handler: h, concurrency: 3, retain: {succeeded: 0}, sources: [{redis: {}}, {spool: {dir: /tmp, recursive: true}}]}
)";
  const auto cfg = parse(text, "test.yaml", "/etc/jobqd");
  const std::string out = print(cfg);
  INFO(out);
  CHECK(out.find("s3cret") == std::string::npos);
  CHECK(out.find("redis://app:***@db.example:6380/2") != std::string::npos);
  CHECK(out.find("API_TOKEN: \"***\"") != std::string::npos);
  CHECK(out.find("MODE: fast") != std::string::npos);
  CHECK(out.find("concurrency: 3") != std::string::npos);
  CHECK(out.find("fetch_batch: 25") != std::string::npos);  // a default, filled in
  CHECK(out.find("max_output: 1MiB") != std::string::npos);
  // Read back: the same effective config (but for the masked values).
  const auto again = parse(out, "printed.yaml", "/etc/jobqd");
  CHECK(print(again).substr(print(again).find('\n')) == out.substr(out.find('\n')));
  REQUIRE(again.queues.size() == 1);
  CHECK(again.queues[0].sources.size() == 2);
  CHECK(again.queues[0].sources[1].recursive);
  CHECK(again.queues[0].retain.succeeded == 0ms);
  CHECK(again.handlers.at("h").limits.cpu == std::optional<Millis>(5s));
  CHECK(restart_changes(cfg, again) == std::vector<std::string>{"redis.url"});
  CHECK(restart_changes(cfg, cfg).empty());
}

TEST_CASE("config/jobqd.yaml: its commented-out examples are valid keys once uncommented",
          "[config]") {
  std::ifstream in(jq::test::repo_root() / "config/jobqd.yaml");
  REQUIRE(in);
  std::string out, line;
  std::size_t uncommented = 0;
  // `  # name:` starts an example handler, `  #   key:` its keys; `      # - spool:` and
  // `      #     key:` an example source; `  # key:` a key of a section.
  const std::regex example(R"(^( *)# ((?:[a-z_]+:|- spool:).*)$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, example)) {
      const std::string rest = m[2];
      const std::string indent = m[1];
      const std::size_t extra = rest.find_first_not_of(' ');
      // The two ways to give the Redis password are alternatives: one is enough.
      if (rest.rfind("password_env:", 0) == 0) continue;
      out += indent + rest.substr(extra) + "\n";
      ++uncommented;
    } else if (line.find("  #   ") == 0 || line.find("      #     ") == 0) {
      const auto hash = line.find('#');
      out += line.substr(0, hash) + line.substr(hash + 2) + "\n";
      ++uncommented;
    } else {
      out += line + "\n";
    }
  }
  INFO(out);
  const auto cfg = parse(out, "jobqd.yaml (uncommented)", "/etc/jobqd");
  CHECK(uncommented >= 30);
  CHECK(cfg.handlers.size() == 3);
  CHECK(cfg.queues.at(0).sources.size() == 2);
  CHECK(cfg.handlers.at("notify").headers_from_file.size() == 1);
  CHECK(cfg.redis.password_file == "/etc/jobqd/redis-password");
}

TEST_CASE("the shipped configs are valid", "[config]") {
  for (const char* name : {"config/jobqd.yaml", "config/dev.yaml", "config/docker.yaml"}) {
    INFO(name);
    auto cfg = load_file((jq::test::repo_root() / name).string());
    CHECK_FALSE(cfg.queues.empty());
  }
}

TEST_CASE("redis.tls: rediss:// with a CA, a client certificate and a name; misuse is an error",
          "[config][tls]") {
  const std::string h = "handlers: {h: {type: builtin, name: noop}}\nqueues: {q: {handler: h}}\n";
  auto cfg = load(R"(
redis:
  url: rediss://cache.example:6380/0
  tls: {ca_file: /etc/jobqd/ca.pem, cert_file: client.pem, key_file: client.key, server_name: redis.internal}
)" + h);
  CHECK(cfg.redis.url == "rediss://cache.example:6380/0");
  CHECK(cfg.redis.tls.ca_file == "/etc/jobqd/ca.pem");
  // Relative paths are the config directory's, as elsewhere.
  CHECK(cfg.redis.tls.cert_file == "/etc/jobqd/client.pem");
  CHECK(cfg.redis.tls.key_file == "/etc/jobqd/client.key");
  CHECK(cfg.redis.tls.server_name == "redis.internal");
  // rediss:// alone: the system's CAs and the URL's host.
  CHECK(load("redis: {url: \"rediss://h:1/0\"}\n" + h).redis.tls == jq::async::TlsOptions{});

  // Certificates beside a plaintext URL: the user meant TLS and must not get plaintext.
  CHECK(error_of("redis:\n  url: redis://h:1/0\n  tls: {ca_file: /ca.pem}\n" + h) ==
        "test.yaml:3:8: redis.tls: given, but redis.url redis://h:1/0 is not TLS "
        "(rediss://host:port; a redis-cluster:// or redis-sentinel:// URL goes over TLS with "
        "redis.tls)");
  // The sentinels' own password: one way, and only for a sentinel URL.
  CHECK(error_of("redis:\n  url: redis://h:1/0\n  sentinel_password_env: PW\n" + h) ==
        "test.yaml:1:1: redis: a sentinel password is for a redis-sentinel:// URL; this config's "
        "Redis is redis://h:1/0");
  CHECK(error_of("redis:\n  url: redis-sentinel://h:1/m\n  sentinel_password_env: PW\n"
                 "  sentinel_password_file: /pw\n" +
                 h) ==
        "test.yaml:1:1: redis: give the sentinels' password one way: sentinel_password_file or "
        "sentinel_password_env");
  CHECK(load("redis:\n  url: redis-sentinel://h:1/m\n  sentinel_password_env: PW\n" + h)
            .redis.sentinel_password_env == "PW");
  // A cluster or sentinel URL with redis.tls: over TLS.
  CHECK(load("redis:\n  url: redis-cluster://h:1\n  tls: {ca_file: /ca.pem}\n" + h)
            .redis.tls.ca_file == "/ca.pem");
  CHECK(error_of("redis:\n  url: rediss://h:1/0\n  tls: {cert_file: /c.pem}\n" + h) ==
        "test.yaml:3:8: redis.tls: a client certificate needs both cert_file and key_file");
  CHECK(error_of("redis:\n  url: rediss://h:1/0\n  tls: {ca_fle: /c.pem}\n" + h) ==
        "test.yaml:3:9: unknown key 'ca_fle' in redis.tls (did you mean 'ca_file'?)");
  // A key of redis.tls one level too high.
  CHECK_THAT(error_of("redis:\n  url: rediss://h:1/0\n  ca_file: /c.pem\n" + h),
             Catch::Contains("test.yaml:3:3:") && Catch::Contains("a key of redis.tls"));
  // A cluster URL is taken; one that is not a URL at all is refused, naming the forms.
  CHECK(load("redis: {url: \"redis-cluster://a:1,b:2\"}\n" + h).redis.url ==
        "redis-cluster://a:1,b:2");
  CHECK_THAT(error_of("redis: {url: \"cluster://a:1\"}\n" + h),
             Catch::Contains("test.yaml:1:14:") && Catch::Contains("redis-cluster://host:port"));
  // --print-config shows what it was given, and nothing when there is no TLS.
  CHECK(print(cfg).find("tls:") != std::string::npos);
  CHECK(print(load(kMinimal)).find("tls:") == std::string::npos);
}

TEST_CASE("schedules: parsed with their defaults; the job as JSON, YAML's types kept",
          "[config][schedules]") {
  const auto cfg = load(std::string(kMinimal) + R"(schedules:
  nightly: {cron: "0 3 * * *", timezone: Europe/Berlin, queue: default, job: {payload: {}}}
  ping:
    cron: "@every 30s"
    queue: default
    catch_up: all
    jitter: 2s
    job: {handler: nothing, payload: {n: 1, f: 1.5, yes: true, none: null, s: "1", list: [a, 2]}}
  bare: {cron: "@hourly", queue: default}
)");
  REQUIRE(cfg.schedules.size() == 3);
  const auto& n = cfg.schedules[0];
  CHECK(n.name == "nightly");
  CHECK(n.cron == "0 3 * * *");
  CHECK(n.timezone == "Europe/Berlin");
  CHECK(n.catch_up == "one");
  CHECK(n.jitter == 0ms);
  CHECK(n.origin == "test.yaml:8:3");
  const auto& p = cfg.schedules[1];
  CHECK(p.catch_up == "all");
  CHECK(p.jitter == 2s);
  CHECK(nlohmann::json::parse(p.job) ==
        nlohmann::json::parse(R"({"handler":"nothing","payload":{"n":1,"f":1.5,"yes":true,)"
                              R"("none":null,"s":"1","list":["a",2]}})"));
  CHECK(nlohmann::json::parse(cfg.schedules[2].job) == nlohmann::json::parse(R"({"payload":{}})"));
  // --print-config writes them back as a config that reads the same.
  const auto again = load(print(cfg).substr(print(cfg).find('\n') + 1));
  REQUIRE(again.schedules.size() == 3);
  CHECK(again.schedules[1].job == p.job);
  CHECK(again.schedules[1].jitter == 2s);
}

TEST_CASE("schedules: a bad expression, zone, queue or job is an error at its place",
          "[config][schedules]") {
  const std::string h = std::string(kMinimal) + "schedules:\n";
  // The column of the field in the expression (past the quote).
  CHECK_THAT(error_of(h + "  a: {cron: \"0 61 * * *\", queue: default}\n"),
             Catch::Contains("test.yaml:8:16: schedules.a.cron: hour"));
  CHECK_THAT(error_of(h + "  a: {cron: 0 3 * *, queue: default}\n"),
             Catch::Contains("test.yaml:8:") && Catch::Contains("schedules.a.cron:") &&
                 Catch::Contains("5 fields"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@every 0s\", queue: default}\n"),
             Catch::Contains("schedules.a.cron:"));
  CHECK_THAT(
      error_of(h + "  a: {cron: \"@daily\", timezone: Europe/Berln, queue: default}\n"),
      Catch::Contains("test.yaml:8:33: schedules.a.timezone:") && Catch::Contains("Europe/Berln"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: nope}\n"),
             Catch::Contains("test.yaml:8:30: schedules.a: queue 'nope' is not configured"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\"}\n"),
             Catch::Contains("test.yaml:8:3: schedules.a: queue is missing"));
  CHECK_THAT(error_of(h + "  a: {queue: default}\n"),
             Catch::Contains("test.yaml:8:3: schedules.a: cron is missing"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: default, job: {id: x, payload: 1}}\n"),
             Catch::Contains("schedules.a.job.id: each tick's job gets its own id"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: default, job: {handler: nope}}\n"),
             Catch::Contains("schedules.a.job.handler: handler 'nope' is not defined"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: default, job: [1]}\n"),
             Catch::Contains("schedules.a.job: must be a map"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: default, catch_up: some}\n"),
             Catch::Contains("schedules.a.catch_up: 'some' is not one of skip, one, all"));
  CHECK_THAT(error_of(h + "  a: {cron: \"@daily\", queue: default, cronn: x}\n"),
             Catch::Contains("unknown key 'cronn' in schedules.a (did you mean 'cron'?)"));
  CHECK_THAT(error_of(h + "  a b: {cron: \"@daily\", queue: default}\n"),
             Catch::Contains("schedule name 'a b'"));
  CHECK_THAT(error_of(std::string(kMinimal) + "schedules: [a]\n"),
             Catch::Contains("schedules must be a map"));
}

TEST_CASE("queues: rate is a number of jobs per s, m or h, or off", "[config][rate]") {
  const auto rate_of = [](const std::string& v) {
    return load(std::string(kMinimal) + "    rate: " + v + "\n").queues[0].rate_per_s;
  };
  CHECK(rate_of("100/s") == 100);
  CHECK(rate_of("30/m") == Approx(0.5));
  CHECK(rate_of("1/h") == Approx(1.0 / 3600));
  CHECK(rate_of("2.5/s") == 2.5);
  CHECK(rate_of("off") == 0);
  CHECK(load(kMinimal).queues[0].rate_per_s == 0);
  for (const char* bad : {"100", "100/d", "/s", "-1/s", "0/s", "1e9/s", "nan/s", "100/s/s", "x"}) {
    INFO(bad);
    CHECK_THAT(error_of(std::string(kMinimal) + "    rate: " + bad + "\n"),
               Catch::Contains("test.yaml:7:11: queues.default.rate: '") &&
                   Catch::Contains("is not a rate"));
  }
}

TEST_CASE("queues: group_by takes a payload field, alone or with a per-group rate and concurrency",
          "[config][groups]") {
  const auto group_of = [](const std::string& v) {
    return load(std::string(kMinimal) + "    group_by: " + v + "\n").queues[0].group_by;
  };
  const auto short_form = group_of("payload.tenant");
  CHECK(short_form.key == "payload.tenant");
  CHECK(short_form.path == std::vector<std::string>{"payload", "tenant"});
  CHECK(short_form.rate_per_s == 0);
  CHECK(short_form.concurrency == 0);
  const auto g = group_of("{key: payload.account.id, rate: 30/m, rate_burst: 3, concurrency: 2}");
  CHECK(g.path == std::vector<std::string>{"payload", "account", "id"});
  CHECK(g.rate == "30/m");
  CHECK(g.rate_per_s == Approx(0.5));
  CHECK(g.rate_burst == 3);
  CHECK(g.concurrency == 2);
  CHECK(load(kMinimal).queues[0].group_by.key.empty());

  const auto error = [](const std::string& v) {
    return error_of(std::string(kMinimal) + "    group_by: " + v + "\n");
  };
  for (const char* bad : {"tenant", "id", "payload", "payload.", "payload..a"}) {
    INFO(bad);
    CHECK_THAT(error(bad), Catch::Contains("queues.default.group_by: '") &&
                               Catch::Contains("is not where a job's group can come from"));
  }
  CHECK_THAT(error("{rate: 10/s}"),
             Catch::Contains("queues.default.group_by: needs 'key', the payload field"));
  CHECK_THAT(error("{key: payload.t, rate: 10}"),
             Catch::Contains("queues.default.group_by.rate: '10' is not a rate"));
  CHECK_THAT(error("{key: payload.t, concurency: 2}"),
             Catch::Contains("did you mean 'concurrency'"));
  CHECK_THAT(error_of(std::string(kMinimal) + "    shards: 2\n    group_by: payload.t\n"),
             Catch::Contains("queues.default.group_by: needs a queue of one shard"));
  // With global_concurrency: the cap holds across all groups together (docs/groups.md).
  const Config capped =
      load(std::string(kMinimal) + "    global_concurrency: 5\n    group_by: payload.t\n");
  CHECK(capped.queues[0].global_concurrency == 5);
  CHECK(capped.queues[0].group_by.key == "payload.t");
  CHECK_THAT(error_of(std::string(kMinimal) + "    priorities: strict\n    group_by: payload.t\n"),
             Catch::Contains("queues.default.group_by: not with priorities"));
  // Shown only when set, and read back the same (a restart-only key).
  const Config c = load(std::string(kMinimal) + "    group_by: {key: payload.t, concurrency: 2}\n");
  CHECK_THAT(print(c), Catch::Contains("group_by:"));
  CHECK_THAT(print(load(kMinimal)), !Catch::Contains("group_by"));
}

TEST_CASE("schedules: a misspelled or misplaced schedules section is said so, never thrown",
          "[config][schedules]") {
  // Found by fuzz_config (fuzz/regress/config/misspelled_schedules_section): map::at escaped.
  CHECK_THAT(error_of("schedule:\n  h: {type: builtin, name: noop}\n" + std::string(kMinimal)),
             Catch::Contains("test.yaml:1:1: unknown section 'schedule' (did you mean "
                             "'schedules'?)"));
  CHECK_THAT(
      error_of("schedule:\n  a: {cron: \"@daily\", queue: default}\n" + std::string(kMinimal)),
      Catch::Contains("unknown section 'schedule'"));
  // Indented under a queue: a top-level section in the wrong place.
  CHECK_THAT(error_of(std::string(kMinimal) + "    schedules:\n      a: {cron: \"@daily\", queue: "
                                              "default}\n"),
             Catch::Contains("'schedules' is a top-level section, but it is indented under"));
}

TEST_CASE("schedules: a job whose text is not UTF-8 is an error at the job, never thrown",
          "[config][schedules]") {
  // Found by fuzz_config (fuzz/regress/config/job_not_utf8): nlohmann's dump threw.
  CHECK_THAT(error_of(std::string(kMinimal) +
                      "schedules:\n  a: {cron: \"@daily\", queue: default, job: {payload: "
                      "\"\xff\xfe\"}}\n"),
             Catch::Contains("test.yaml:8:44: schedules.a.job: holds text that is not UTF-8"));
}

TEST_CASE("queues: unique takes a key (id or a payload field), for, while and a mode",
          "[config][unique]") {
  const auto unique_of = [](const std::string& v) {
    return load(std::string(kMinimal) + "    unique: " + v + "\n").queues[0];
  };
  const auto q = unique_of("{key: payload.user.id, for: 10m, while: [queued], mode: lock}");
  CHECK(q.unique_set);
  CHECK(q.unique.key == "payload.user.id");
  CHECK(q.unique.path == std::vector<std::string>{"payload", "user", "id"});
  CHECK(q.unique.hold == std::chrono::minutes(10));
  CHECK(q.unique.during == std::vector<std::string>{"queued"});
  CHECK(q.unique.mode == "lock");
  // Defaults: locked while queued and running, for an hour at most; no key of the queue's own
  // (only jobs that bring one).
  const auto d = unique_of("{}");
  CHECK(d.unique.key.empty());
  CHECK(d.unique.path.empty());
  CHECK(d.unique.hold == std::chrono::hours(1));
  CHECK(d.unique.during == std::vector<std::string>{"queued", "running"});
  CHECK(d.unique.mode == "lock");
  CHECK(unique_of("{key: id, mode: throttle}").unique.path == std::vector<std::string>{"id"});
  CHECK(unique_of("{mode: debounce}").unique.mode == "debounce");
  CHECK_FALSE(load(kMinimal).queues[0].unique_set);

  const auto error = [](const std::string& v) {
    return error_of(std::string(kMinimal) + "    unique: " + v + "\n");
  };
  for (const char* bad : {"user", "payload", "payload.", "payload..a", "ids", "payload.a."}) {
    INFO(bad);
    CHECK_THAT(error(std::string("{key: ") + bad + "}"),
               Catch::Contains("test.yaml:7:19: queues.default.unique.key: '") &&
                   Catch::Contains("is not where a job's unique key can come from"));
  }
  // The lock always ends: `for` is at least a millisecond.
  CHECK_THAT(error("{for: 0s}"),
             Catch::Contains("test.yaml:7:19: queues.default.unique.for: must be at least 1ms"));
  CHECK_THAT(error("{for: soon}"), Catch::Contains("'soon' is not a duration"));
  CHECK_THAT(error("{while: [waiting]}"),
             Catch::Contains("queues.default.unique.while: 'waiting' is not queued or running"));
  CHECK_THAT(error("{while: [queued, queued]}"), Catch::Contains("'queued' is listed twice"));
  CHECK_THAT(error("{while: []}"), Catch::Contains("name at least one of queued, running"));
  CHECK_THAT(error("{while: queued}"), Catch::Contains("must be a list, like [queued, running]"));
  CHECK_THAT(error("{mode: unique}"),
             Catch::Contains("queues.default.unique.mode: 'unique' is not one of lock, debounce, "
                             "throttle"));
  CHECK_THAT(error("{mode: throttle, while: [queued]}"),
             Catch::Contains("queues.default.unique.while: only for mode lock"));
  CHECK_THAT(error("{fo: 1s}"), Catch::Contains("queues.default.unique"));
  CHECK_THAT(error("5m"), Catch::Contains("queues.default.unique"));
  // A sharded queue: a key's lock and its jobs' ids must share one slot.
  CHECK_THAT(error_of(std::string(kMinimal) + "    shards: 4\n    unique: {key: id}\n"),
             Catch::Contains("queues.default.unique: needs a queue of one shard (this one has "
                             "shards: 4)"));
}

TEST_CASE("daemon.concurrency, queue_order and a queue's weight: defaults, ranges, reloadable",
          "[config][queue_order]") {
  const auto defaults = load(kMinimal);
  CHECK(defaults.daemon.concurrency == 0);
  CHECK(defaults.daemon.queue_order == "weighted");
  CHECK(defaults.queues[0].weight == 1);
  const auto cfg = load("daemon: {concurrency: 8, queue_order: strict}\n" + std::string(kMinimal) +
                        "    weight: 1000\n");
  CHECK(cfg.daemon.concurrency == 8);
  CHECK(cfg.daemon.queue_order == "strict");
  CHECK(cfg.queues[0].weight == 1000);
  // All three apply on a reload.
  CHECK(restart_changes(defaults, cfg).empty());
  CHECK_THAT(print(cfg), Catch::Contains("concurrency: 8") && Catch::Contains("weight: 1000") &&
                             Catch::Contains("queue_order: strict"));
  CHECK(error_of(std::string(kMinimal) + "    weight: 0\n") ==
        "test.yaml:7:13: queues.default.weight: 0 is out of range (a whole number from 1 to "
        "1000)");
  CHECK(error_of(std::string(kMinimal) + "    weight: 1001\n") ==
        "test.yaml:7:13: queues.default.weight: 1001 is out of range (a whole number from 1 to "
        "1000)");
  CHECK(error_of(std::string(kMinimal) + "    weight: high\n") ==
        "test.yaml:7:13: queues.default.weight: 'high' is not a whole number from 1 to 1000");
  CHECK(error_of("daemon:\n  concurrency: -1\n" + std::string(kMinimal)) ==
        "test.yaml:2:16: daemon.concurrency: -1 is out of range (a whole number from 0 to "
        "100000)");
  CHECK(error_of("daemon:\n  queue_order: fair\n" + std::string(kMinimal)) ==
        "test.yaml:2:16: daemon.queue_order: 'fair' is not weighted or strict");
  // A queue's weight in the daemon section, and the daemon's order in a queue: misplaced.
  CHECK(error_of("daemon:\n  weight: 3\n" + std::string(kMinimal)) ==
        "test.yaml:2:3: 'weight' is a queue key, but it is indented under 'daemon' (check its "
        "indentation)");
  CHECK(error_of(std::string(kMinimal) + "    queue_order: strict\n") ==
        "test.yaml:7:5: 'queue_order' is a key of the daemon section, but it is indented under "
        "'queues.default' (check its indentation)");
}

TEST_CASE("queues: priorities as an order alone or a map of weights and aging; bad values said",
          "[config][priority]") {
  const auto with = [](const std::string& v) {
    return load(std::string(kMinimal) + "    priorities: " + v + "\n").queues[0];
  };
  const auto strict = with("strict");
  CHECK(strict.priorities_set);
  CHECK(strict.priorities.order == "strict");
  CHECK(strict.priorities.high == 6);
  const auto q = with("{order: weighted, high: 10, normal: 2, low: 1, aging: 30s}");
  CHECK(q.priorities.order == "weighted");
  CHECK(q.priorities.high == 10);
  CHECK(q.priorities.normal == 2);
  CHECK(q.priorities.aging == std::chrono::seconds(30));
  CHECK(with("{}").priorities.order == "weighted");  // the defaults
  CHECK_FALSE(load(kMinimal).queues[0].priorities_set);
  const auto error = [](const std::string& v) {
    return error_of(std::string(kMinimal) + "    priorities: " + v + "\n");
  };
  CHECK_THAT(error("fifo"),
             Catch::Contains("queues.default.priorities: 'fifo' is not an order: strict or "
                             "weighted"));
  CHECK_THAT(error("{order: random}"), Catch::Contains("queues.default.priorities.order"));
  CHECK_THAT(error("{high: 0}"), Catch::Contains("queues.default.priorities.high"));
  CHECK_THAT(error("{aging: 5}"), Catch::Contains("queues.default.priorities.aging"));
  CHECK_THAT(error("{hihg: 3}"), Catch::Contains("did you mean 'high'"));
}
