// Fuzzes the config loader (config::parse): only ConfigError may escape, each line naming the file.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

#include "config/config.hpp"
#include "fuzz/finding.hpp"

using jq::fuzz::finding;
namespace config = jq::config;

namespace {

// What validation promises of a config it accepts.
void check(const config::Config& cfg) {
  if (cfg.queues.empty()) finding("parse: accepted a config without queues");
  for (const auto& q : cfg.queues) {
    if (!config::valid_name(q.name)) finding("parse: a queue with an invalid name", q.name);
    if (!cfg.handlers.count(q.handler)) finding("parse: a queue with an undefined handler");
    if (q.max_timeout < q.timeout) finding("parse: max_timeout below timeout", q.name);
    if (q.retry_max < q.retry_base) finding("parse: retry_max below retry_base", q.name);
    if (q.sources.empty()) finding("parse: a queue without sources", q.name);
    if (cfg.queue(q.name) != &q) finding("parse: two queues with one name", q.name);
  }
  for (const auto& [name, h] : cfg.handlers) {
    if (h.name != name || !config::valid_name(name)) finding("parse: a handler's name", name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    check(config::parse(text, "fuzz.yaml", "/tmp"));
  } catch (const config::ConfigError& e) {
    if (e.problems().empty()) finding("a ConfigError without a problem in it");
    // Every line names the file: what() is one line per problem.
    for (const auto& p : e.problems()) {
      if (!std::string_view(p.text()).starts_with("fuzz.yaml:")) {
        finding("a ConfigError line that does not start with the file name", p.text());
      }
    }
  } catch (const std::exception& e) {
    finding("an exception other than ConfigError escaped config::parse",
            std::string(typeid(e).name()) + ": " + e.what());
  } catch (...) {
    finding("a non-std exception escaped config::parse");
  }
  return 0;
}
