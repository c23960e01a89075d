// Force-included into the clang 14 fuzz build only: std::source_location for daemon/async/.
//
// libstdc++ 12 defines std::source_location only when the compiler has
// __builtin_source_location, which clang has from version 15 on; clang 14 therefore rejects
// daemon/async/context.hpp and spawn.hpp ("no type named 'source_location' in namespace
// 'std'"). This supplies the same class over the older __builtin_FILE/LINE/COLUMN/FUNCTION
// builtins. current() is constexpr, not consteval: clang 14 refuses a consteval function in a
// default argument of a function template ("cannot take address of consteval function").
// The GCC build never sees this file.
#pragma once

#include <source_location>

#if defined(__clang__) && !defined(__cpp_lib_source_location)
#include <cstdint>

namespace std {

struct source_location {
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           uint_least32_t line = __builtin_LINE(),
                                           uint_least32_t column = __builtin_COLUMN()) noexcept {
    source_location s;
    s.file_ = file;
    s.function_ = function;
    s.line_ = line;
    s.column_ = column;
    return s;
  }

  constexpr source_location() noexcept = default;
  constexpr uint_least32_t line() const noexcept { return line_; }
  constexpr uint_least32_t column() const noexcept { return column_; }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  uint_least32_t line_ = 0;
  uint_least32_t column_ = 0;
};

}  // namespace std
#endif
