// The six kinds of plugin and their names as written in configs ("teacher", "bridge", ...).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "cab/export.h"

namespace cab::plugin {

enum class Kind : std::uint32_t { teacher = 0, student = 1, bridge = 2, alignment = 3, method = 4, dataset = 5 };

inline constexpr std::array<Kind, 6> kAllKinds = {Kind::teacher,   Kind::student, Kind::bridge,
                                                  Kind::alignment, Kind::method,  Kind::dataset};

CAB_API std::string_view to_string(Kind kind);
/// The kind named `name`, or nothing.
CAB_API std::optional<Kind> kind_from_string(std::string_view name);

}  // namespace cab::plugin
