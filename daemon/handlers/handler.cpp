// The handler registry: a config entry in, a ready handler out.
#include "handlers/handler.hpp"

#include "handlers/builtin.hpp"
#include "handlers/exec.hpp"
#include "handlers/http.hpp"

namespace jq::handlers {

std::unique_ptr<Handler> make(const config::HandlerConfig& cfg) {
  switch (cfg.type) {
    case config::HandlerType::builtin:
      return make_builtin(cfg.builtin);
    case config::HandlerType::exec:
      return make_exec(cfg);
    case config::HandlerType::http:
      return make_http(cfg);
  }
  throw std::runtime_error("handler '" + cfg.name + "': unknown type");
}

}  // namespace jq::handlers
