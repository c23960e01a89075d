// The script registry: each Lua file of the build with the prelude in front, made once.
#include "store/scripts.hpp"

#include <map>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "store/lua_text.hpp"

namespace jq::store::scripts {
namespace {

struct Registry {
  std::string guard;
  std::map<std::string, std::unique_ptr<redis::Script>, std::less<>> by_name;

  Registry() { build(); }
  void build() {
    const char* prelude = nullptr;
    for (std::size_t i = 0; i < lua::kCount; ++i) {
      if (std::string_view(lua::kTexts[i].name) == "prelude") prelude = lua::kTexts[i].text;
    }
    if (!prelude) throw std::logic_error("store/lua: no prelude.lua was built in");
    for (std::size_t i = 0; i < lua::kCount; ++i) {
      const auto& t = lua::kTexts[i];
      if (std::string_view(t.name) == "prelude") continue;
      std::string g = guard;
      for (auto at = g.find("$NAME"); at != std::string::npos; at = g.find("$NAME", at)) {
        g.replace(at, 5, t.name);
      }
      redis::Script made(t.name, g + std::string(prelude) + "\n" + t.text);
      // In place: callers may hold a reference across set_guard().
      if (auto it = by_name.find(t.name); it != by_name.end()) {
        *it->second = std::move(made);
      } else {
        by_name.emplace(t.name, std::make_unique<redis::Script>(std::move(made)));
      }
    }
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

const redis::Script& named(std::string_view name) {
  auto& r = registry();
  auto it = r.by_name.find(name);
  if (it == r.by_name.end()) {
    throw std::logic_error("store/lua: no script " + std::string(name) + ".lua was built in");
  }
  return *it->second;
}

}  // namespace

const redis::Script& fetch() {
  return named("fetch");
}
const redis::Script& claim() {
  return named("claim");
}
const redis::Script& unclaim() {
  return named("unclaim");
}
const redis::Script& settle() {
  return named("settle");
}
const redis::Script& acquire() {
  return named("acquire");
}
const redis::Script& renew() {
  return named("renew");
}
const redis::Script& release() {
  return named("release");
}
const redis::Script& expired() {
  return named("expired");
}
const redis::Script& recover() {
  return named("recover");
}
const redis::Script& due() {
  return named("due");
}
const redis::Script& promote() {
  return named("promote");
}

const redis::Script& fold() {
  return named("fold");
}
const redis::Script& dead_victims() {
  return named("dead_victims");
}
const redis::Script& repair() {
  return named("repair");
}
const redis::Script& control() {
  return named("control");
}
const redis::Script& heartbeat() {
  return named("heartbeat");
}

const redis::Script& history() {
  return named("history");
}

const redis::Script& slow_down() {
  return named("slow_down");
}
const redis::Script& schedule_define() {
  return named("schedule_define");
}
const redis::Script& schedule_fire() {
  return named("schedule_fire");
}
const redis::Script& schedule_control() {
  return named("schedule_control");
}

const redis::Script& depths() {
  return named("depths");
}
const redis::Script& drop_dead() {
  return named("drop_dead");
}
const redis::Script& submit() {
  return named("submit");
}
const redis::Script& requeue_dead() {
  return named("requeue_dead");
}
const redis::Script& cancel() {
  return named("cancel");
}

const redis::Script& group_sort() {
  return named("group_sort");
}
const redis::Script& group_fetch() {
  return named("group_fetch");
}
const redis::Script& ungroup() {
  return named("ungroup");
}
const redis::Script& after_wait() {
  return named("after_wait");
}
const redis::Script& after_register() {
  return named("after_register");
}
const redis::Script& after_resolve() {
  return named("after_resolve");
}
const redis::Script& after_expire() {
  return named("after_expire");
}
const redis::Script& flow() {
  return named("flow");
}

const redis::Script& scan_states() {
  return named("scan_states");
}

std::vector<const redis::Script*> all() {
  std::vector<const redis::Script*> out;
  for (const auto& [name, s] : registry().by_name) out.push_back(s.get());
  return out;
}

void set_guard(const std::string& chunk) {
  auto& r = registry();
  r.guard = chunk.empty() ? std::string() : chunk + "\n";
  r.build();
}

}  // namespace jq::store::scripts
