// The names the config gives queues and handlers: they appear inside Redis keys and in job
// references (`after`: QUEUE/ID), so their alphabet leaves out `:`, `/`, `{` and `}`.
#pragma once

#include <string_view>

namespace jq::config {

/// `[A-Za-z0-9_.-]{1,64}`: queue names and handler names.
inline bool valid_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  for (const char ch : s) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace jq::config
