// The handler registry: a config entry in, a ready handler out; what an outcome shows.
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

void Outcome::show_path_as(const std::string& path, const std::string& shown) {
  if (path.empty()) return;
  for (std::string* text : {&result, &error}) {
    for (auto at = text->find(path); at != std::string::npos;
         at = text->find(path, at + shown.size())) {
      text->replace(at, path.size(), shown);
    }
  }
}

}  // namespace jq::handlers
