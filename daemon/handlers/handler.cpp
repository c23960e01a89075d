// The handler registry: a config entry in, a ready handler out.
#include "handlers/handler.hpp"

#include "handlers/builtin.hpp"

namespace jq::handlers {

std::unique_ptr<Handler> make(const config::HandlerConfig& cfg) {
  switch (cfg.type) {
    case config::HandlerType::builtin:
      return make_builtin(cfg.builtin);
    case config::HandlerType::exec:
    case config::HandlerType::http:
      break;
  }
  throw std::runtime_error("handler '" + cfg.name + "': exec and http handlers are not built yet");
}

}  // namespace jq::handlers
