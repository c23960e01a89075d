// The dashboard's files (daemon/ops/dashboard/), compiled into the binary by the Makefile: the
// page needs no file at run time, no CDN and no build step beyond the compiler.
#pragma once

#include <cstddef>
#include <string_view>

namespace jq::ops {

struct Asset {
  std::string_view path;          // as served: "/" for index.html, else "/" + the file's name
  std::string_view content_type;  // from the file's extension
  std::string_view body;
};

/// The asset served at `path`, or nullptr.
const Asset* find_asset(std::string_view path);

}  // namespace jq::ops
