// Small helpers of the report library. cab-report does not link libcab_core (and so not LibTorch, whose
// loading would take most of its time budget), so the few core helpers it needs have local versions here.
#pragma once

#include <algorithm>
#include <ctime>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cab/store/store.h"

namespace cab::report::detail {

inline std::string_view status_name(store::Status s) {
  constexpr std::string_view kNames[] = {"pending", "running", "finished", "failed", "killed"};
  return kNames[static_cast<int>(s)];
}

inline std::optional<store::Status> parse_status(std::string_view name) {
  for (int s = 0; s < 5; ++s)
    if (status_name(static_cast<store::Status>(s)) == name) return static_cast<store::Status>(s);
  return std::nullopt;
}

/// "2026-11-23T18:05:00Z"
inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

/// " (did you mean 'x'?)" for the closest candidate within about one edit per three characters, or "".
inline std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    std::iota(row.begin(), row.end(), std::size_t{0});
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t above = row[j];
        row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  const std::size_t limit = std::max<std::size_t>(2, name.size() / 3);
  std::size_t best_distance = limit + 1;
  std::string best;
  for (const auto& c : candidates) {
    const std::size_t d = distance(name, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  return best.empty() ? std::string() : " (did you mean '" + best + "'?)";
}

}  // namespace cab::report::detail
