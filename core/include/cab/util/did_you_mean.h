// Suggestions for misspelt names ("did you mean 'hidden'?") in config keys and plugin names.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "cab/export.h"

namespace cab {

/// Levenshtein distance between two strings (insertions, deletions, substitutions cost 1).
CAB_API std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidates closest to `name` within a distance that scales with its length, best first.
CAB_API std::vector<std::string> closest_matches(std::string_view name, const std::vector<std::string>& candidates,
                                                 std::size_t max_results = 3);

/// " (did you mean 'x'?)" for the best match, or "" when nothing is close.
CAB_API std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates);

/// "a, b, c" — the sorted candidate list for error messages.
CAB_API std::string join_names(std::vector<std::string> names, std::string_view separator = ", ");

}  // namespace cab
