// Whole-file reads and writes for tests that drop files and look at what became of them.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace jq::test {

inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace jq::test
