// The protocol's Lua sources (daemon/store/lua/*.lua), compiled into the binary by the Makefile.
#pragma once

#include <cstddef>

namespace jq::store::lua {

struct Text {
  const char* name;  // the file's name without .lua
  const char* text;
};

/// Every file of daemon/store/lua/, sorted by name; `prelude` among them.
extern const Text kTexts[];
extern const std::size_t kCount;

}  // namespace jq::store::lua
