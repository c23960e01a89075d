// The four built-in handlers.
#include "handlers/builtin.hpp"

#include <algorithm>

#include <stdexcept>

namespace jq::handlers {
namespace {

class Noop final : public Handler {
 public:
  async::Task<Outcome> run(const Run&) override { co_return Outcome::success(""); }
};

class Echo final : public Handler {
 public:
  async::Task<Outcome> run(const Run& r) override {
    co_return Outcome::success(r.job.payload.dump());
  }
};

class Sleep final : public Handler {
 public:
  async::Task<Outcome> run(const Run& r) override {
    const auto& p = r.job.payload;
    const nlohmann::json* ms = p.is_number() ? &p : nullptr;
    if (p.is_object()) {
      auto it = p.find("ms");
      if (it != p.end() && it->is_number()) ms = &*it;
    }
    if (!ms || ms->get<double>() < 0) {
      co_return Outcome::failure(job::ErrorKind::exception,
                                 "builtin sleep needs payload.ms, a number of milliseconds",
                                 /*retry=*/false);
    }
    // Clamped as a double: casting 1e300 to an integer is undefined. A year is beyond any
    // timeout, which ends the sleep anyway.
    const double wanted = std::min(ms->get<double>(), 365.0 * 24 * 3600 * 1000);
    const Millis how_long(static_cast<long long>(wanted));
    co_await async::sleep(how_long);
    co_return Outcome::success("");
  }
};

class Fail final : public Handler {
 public:
  async::Task<Outcome> run(const Run& r) override {
    const auto& p = r.job.payload;
    std::string msg = "builtin fail: failing as asked";
    if (p.is_object()) {
      auto it = p.find("message");
      if (it != p.end() && it->is_string()) msg = it->get<std::string>();
    }
    throw std::runtime_error(msg);
    co_return Outcome{};
  }
};

}  // namespace

std::unique_ptr<Handler> make_builtin(const std::string& name) {
  if (name == "noop") return std::make_unique<Noop>();
  if (name == "echo") return std::make_unique<Echo>();
  if (name == "sleep") return std::make_unique<Sleep>();
  if (name == "fail") return std::make_unique<Fail>();
  throw std::runtime_error("no builtin handler named '" + name + "'");
}

}  // namespace jq::handlers
