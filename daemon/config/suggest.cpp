// Edit distance and the closest known word.
#include "config/suggest.hpp"

#include <algorithm>

namespace jq::config {

std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest(std::string_view word, const std::vector<std::string>& known) {
  std::string best;
  std::size_t best_d = static_cast<std::size_t>(-1);
  for (const auto& k : known) {
    const std::size_t d = distance(word, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  const std::size_t allowed = std::max<std::size_t>(1, word.size() / 3);
  return best_d <= allowed && best_d < word.size() ? best : "";
}

}  // namespace jq::config
