// Config values: the scalar and list types a cab config field can hold, and where each came from.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cab/export.h"

namespace cab::config {

/// Where a value was written: "file:line:column", or a description such as "<default>".
struct CAB_API Location {
  std::string file;
  std::uint32_t line = 0;    ///< 1-based; 0 when unknown
  std::uint32_t column = 0;  ///< 1-based; 0 when unknown
  std::string str() const;
};

/// The types a field can declare. Integers are accepted where numbers are expected.
enum class Type { boolean, integer, number, string, integer_list, number_list, string_list };

/// "integer", "list of numbers", ... for error messages.
CAB_API std::string_view type_name(Type type);

using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::int64_t>, std::vector<double>,
                           std::vector<std::string>>;

/// The type a value holds.
CAB_API Type type_of(const Value& value);

/// TOML rendering of a value (strings quoted, lists bracketed, doubles round-trip exact).
CAB_API std::string to_toml(const Value& value);

}  // namespace cab::config
