// The check every dataset's get() makes on the indices it is given.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include <cab/plugin/objective.h>
#include <cab/util/error.h>

namespace cab::datasets {

inline const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

/// Throws cab::Error naming the dataset, split and first bad index unless every index is in [0, size).
inline void check_indices(std::string_view dataset, Split split, const std::vector<std::int64_t>& indices,
                          std::int64_t size) {
  for (const std::int64_t i : indices)
    if (i < 0 || i >= size)
      throw Error(fmt::format("{}: index {} is out of range for the {} split, which has {} examples", dataset, i,
                              split_name(split), size));
}

}  // namespace cab::datasets
