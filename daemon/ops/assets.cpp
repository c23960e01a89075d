// Looks up the dashboard's compiled-in files (the table is generated: build/gen/ops/assets.cpp).
#include "ops/assets.hpp"

namespace jq::ops {

namespace assets {
extern const Asset kTable[];
extern const std::size_t kCount;
}  // namespace assets

const Asset* find_asset(std::string_view path) {
  for (std::size_t i = 0; i < assets::kCount; ++i) {
    if (assets::kTable[i].path == path) return &assets::kTable[i];
  }
  return nullptr;
}

}  // namespace jq::ops
