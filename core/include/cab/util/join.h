// Joins the elements of a range with a separator, each formatted with fmt's "{}". (fmt/ranges.h is avoided:
// on hosts whose system fmt differs from the one LibTorch bundles, that header mixes the two versions.)
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace cab {

template <class Range>
std::string join(const Range& range, std::string_view separator = ", ") {
  std::string out;
  bool first = true;
  for (const auto& item : range) {
    if (!first) out += separator;
    out += fmt::format("{}", item);
    first = false;
  }
  return out;
}

}  // namespace cab
