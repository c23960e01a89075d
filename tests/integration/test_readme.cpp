// The README's client examples (redis-cli, Python, Node), run as written against a real jobqd.
#include <catch2/catch.hpp>

#include <regex>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

// The README's fenced block in `lang` under "From redis-cli, Python and Node".
std::string readme_block(const std::string& lang) {
  std::string text = read_file(repo_root() / "README.md");
  const auto section = text.find("### From redis-cli, Python and Node");
  if (section == std::string::npos) throw std::runtime_error("README.md: no client examples");
  text = text.substr(section);
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("```" + lang + "\n([\\s\\S]*?)```"))) {
    throw std::runtime_error("no ```" + lang + " block in README.md");
  }
  return m[1].str();
}

const char* kYaml = R"(
handlers:
  echo: {type: builtin, name: echo}
queues:
  default: {handler: echo}
)";

}  // namespace

TEST_CASE("README: the redis-cli, Python and Node examples submit and wait as written",
          "[integration][readme]") {
  RedisServer redis;
  Daemon d(redis, kYaml);
  d.start_and_wait(redis, "default");
  TempDir dir;

  // redis-cli: the push, then the status read until it is final.
  std::string sh = readme_block("sh");
  const std::string cli = "redis-cli -u " + redis.url() + " ";
  for (std::size_t at; (at = sh.find("redis-cli ")) != std::string::npos;) sh.replace(at, 10, "R ");
  write_file(dir.path() / "ex.sh", "R() { " + cli + "\"$@\"; }\n" + sh);
  auto pushed = run_program({"/bin/bash", (dir.path() / "ex.sh").string()});
  INFO(pushed.out);
  REQUIRE(pushed.code == 0);
  auto r = redis.client();
  CHECK(eventually([&] { return count_status(r, "default", {"sh-1"}, "succeeded") == 1; }, 5s));
  const auto again = run_program({"/bin/bash", (dir.path() / "ex.sh").string()});
  CHECK(again.out.find("{\"n\":1}") != std::string::npos);  // the result line, once it ran

  // Python, with Debian's python3-redis (the system python3, not another one on PATH).
  write_file(dir.path() / "ex.py", readme_block("python"));
  ::setenv("REDIS_URL", redis.url().c_str(), 1);
  const auto py = run_program({"/usr/bin/python3", (dir.path() / "ex.py").string()});
  CHECK(py.code == 0);
  CHECK(py.out == "succeeded {\"n\":1}\n");

  // Node with ioredis (from tests/tools), where node is present.
  if (run_program({"/bin/sh", "-c", "command -v node"}).code == 0) {
    write_file(dir.path() / "ex.js", readme_block("js"));
    ::setenv("NODE_PATH", (repo_root() / "tests/tools/node_modules").c_str(), 1);
    const auto js = run_program({"node", (dir.path() / "ex.js").string()});
    ::unsetenv("NODE_PATH");
    INFO(js.out);
    CHECK(js.code == 0);
    CHECK(js.out == "succeeded {\"n\":1}\n");
  } else {
    WARN("node is not installed: the README's Node example was not run");
  }
  ::unsetenv("REDIS_URL");
  CHECK(d.stop() == 0);
}
