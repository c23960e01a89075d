// The README's client examples (redis-cli, Python and Node), run as written against `make run`'s
// jobqd.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include "tests/support/daemon.hpp"
#include "tests/support/files.hpp"

using namespace jq::test;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

// The README's fenced block in `lang` under `heading` (the first one after it).
std::string readme_block(const std::string& lang,
                         const std::string& heading = "### From redis-cli, Python and Node") {
  std::string text = read_file(repo_root() / "README.md");
  const auto section = text.find(heading);
  if (section == std::string::npos) throw std::runtime_error("README.md: no " + heading);
  text = text.substr(section);
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("```" + lang + "\n([\\s\\S]*?)```"))) {
    throw std::runtime_error("no ```" + lang + " block in README.md");
  }
  return m[1].str();
}

// `text` with every `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// The first line of `text` that starts with `start`, or "".
std::string line_starting(const std::string& text, const std::string& start) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("(^|\n)(" + start + "[^\n]*)"))) return "";
  return m[2].str();
}

// Runs `script` with bash in `dir`, as a user's shell there would (no REDIS_URL but what the
// script exports).
Ran shell(const fs::path& dir, const std::string& name, const std::string& script) {
  write_file(dir / name, "cd " + dir.string() + "\n" + script);
  return run_program({"/bin/bash", (dir / name).string()});
}

}  // namespace

TEST_CASE("README: the redis-cli, Python and Node examples work as written with make run going",
          "[integration][readme]") {
  // `make run` as a user has it: jobqd on config/dev.yaml (embedded Redis, state in var/), run
  // from the repository, build/ beside config/. Here a copy in a temp dir, with the ports that
  // a running `make run` or another test could hold replaced by free ones, in the config and in
  // the README's text alike.
  ::unsetenv("REDIS_URL");
  TempDir dir;
  const fs::path root = dir.path();
  fs::create_directories(root / "config");
  fs::create_directories(root / "var/spool/files");  // what `make run` makes
  fs::create_directory_symlink(build_dir(), root / "build");
  std::string dev = read_file(repo_root() / "config/dev.yaml");
  std::smatch m;
  REQUIRE(std::regex_search(dev, m, std::regex("\n  embedded_port: (\\d+)")));
  const std::string port = m[1].str();
  const std::string url = "redis://127.0.0.1:" + port;
  REQUIRE(std::regex_search(dev, m, std::regex("\n  listen: (127\\.0\\.0\\.1:\\d+)")));
  const std::string http = m[1].str();
  const std::string free = std::to_string(free_port());
  const std::string free_url = "redis://127.0.0.1:" + free;
  const std::string free_http = "127.0.0.1:" + std::to_string(free_port());
  const auto ours = [&](const std::string& text) {
    return replaced(replaced(text, url, free_url), http, free_http);
  };
  write_file(root / "config/dev.yaml",
             ours(replaced(dev, "embedded_port: " + port, "embedded_port: " + free)));
  const std::string log = (root / "jobqd.log").string();
  Child jobqd({(build_dir() / "jobqd").string(), "-c", (root / "config/dev.yaml").string()}, log);

  // jobqd says where its Redis answers: the socket and the port.
  const std::string answers =
      "it answers on unix://" + (root / "var/redis.sock").string() + " and " + free_url + "\n";
  REQUIRE(eventually([&] { return read_file(log).find(answers) != std::string::npos; }, 15s));
  REQUIRE(
      eventually([&] { return read_file(log).find("jobqd serving") != std::string::npos; }, 15s));
  SyncRedis r((root / "var/redis.sock").string());

  // redis-cli: the export line, then the push, then the status read until it is final.
  const std::string sh = readme_block("sh");
  const std::string export_line = line_starting(sh, "export REDIS_URL=");
  INFO(sh);
  REQUIRE(export_line.rfind("export REDIS_URL=" + url + " ", 0) == 0);
  auto pushed = shell(root, "ex.sh", ours(sh));
  INFO(pushed.out);
  REQUIRE(pushed.code == 0);
  CHECK(eventually([&] { return count_status(r, "default", {"sh-1"}, "succeeded") == 1; }, 5s));
  const auto again = shell(root, "ex.sh", ours(sh));
  CHECK(again.out.find("{\"n\":1}") != std::string::npos);  // the result line, once it ran

  // Python, with Debian's python3-redis (the system python3, not another one on PATH), in the
  // shell the export line ran in. Its fallback is the same Redis, for a shell without it.
  const std::string py = readme_block("python");
  CHECK(py.find("\"" + url + "\"") != std::string::npos);
  write_file(root / "ex.py", ours(py));
  const auto ran_py = shell(root, "py.sh", ours(export_line) + "\n/usr/bin/python3 ex.py\n");
  INFO(ran_py.out);
  CHECK(ran_py.code == 0);
  CHECK(ran_py.out == "succeeded {\"n\":1}\n");

  // Node with ioredis (from tests/tools), where node is present.
  const std::string js = readme_block("js");
  CHECK(js.find("\"" + url + "\"") != std::string::npos);
  if (run_program({"/bin/sh", "-c", "command -v node"}).code == 0) {
    write_file(root / "ex.js", ours(js));
    const auto ran_js =
        shell(root, "js.sh",
              ours(export_line) + "\nexport NODE_PATH=" +
                  (repo_root() / "tests/tools/node_modules").string() + "\nnode ex.js\n");
    INFO(ran_js.out);
    CHECK(ran_js.code == 0);
    CHECK(ran_js.out == "succeeded {\"n\":1}\n");
  } else {
    WARN("node is not installed: the README's Node example was not run");
  }

  // The examples before them, from the repository with `make run` going, stay true: jobqctl
  // on the dev config, and redis-cli on the socket.
  const std::string run = readme_block("sh", "With `make run` going, in another terminal:");
  const std::string submit = line_starting(run, "build/jobqctl -c config/dev.yaml submit default");
  REQUIRE_FALSE(submit.empty());
  const auto submitted = shell(root, "submit.sh", submit + "\n");
  CHECK(submitted.code == 0);
  CHECK(submitted.out == "{\"hello\":\"world\"}\n");
  const std::string socket_push =
      line_starting(readme_block("sh", "or from anything that speaks Redis"), "redis-cli -s ");
  REQUIRE(socket_push.find("var/redis.sock") != std::string::npos);
  const auto socket_ran = shell(root, "socket.sh", socket_push + "\n");
  CHECK(socket_ran.code == 0);
  CHECK(std::regex_match(socket_ran.out, std::regex("\\d+\n")));  // LPUSH's list length

  jobqd.signal(SIGTERM);
  CHECK(jobqd.wait(15s) >= 0);
  CHECK(jobqd.exit_code() == 0);
}
