// Config value helpers: locations, type names, TOML rendering.
#include "cab/config/value.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace cab::config {

std::string Location::str() const {
  if (line == 0) return file;
  if (column == 0) return fmt::format("{}:{}", file, line);
  return fmt::format("{}:{}:{}", file, line, column);
}

std::string_view type_name(Type type) {
  switch (type) {
    case Type::boolean: return "boolean";
    case Type::integer: return "integer";
    case Type::number: return "number";
    case Type::string: return "string";
    case Type::integer_list: return "list of integers";
    case Type::number_list: return "list of numbers";
    case Type::string_list: return "list of strings";
  }
  return "?";
}

Type type_of(const Value& value) {
  return std::visit(
      [](const auto& v) -> Type {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return Type::boolean;
        else if constexpr (std::is_same_v<T, std::int64_t>) return Type::integer;
        else if constexpr (std::is_same_v<T, double>) return Type::number;
        else if constexpr (std::is_same_v<T, std::string>) return Type::string;
        else if constexpr (std::is_same_v<T, std::vector<std::int64_t>>) return Type::integer_list;
        else if constexpr (std::is_same_v<T, std::vector<double>>) return Type::number_list;
        else return Type::string_list;
      },
      value);
}

namespace {

std::string render_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);  // shortest round-trip form
  std::string out(buffer, end);
  if (out.find_first_of(".eE") == std::string::npos) out += ".0";  // keep it a TOML float
  return out;
}

std::string render_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += c;
    }
  }
  return out + "\"";
}

}  // namespace

std::string to_toml(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int64_t>) return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>) return render_double(v);
        else if constexpr (std::is_same_v<T, std::string>) return render_string(v);
        else {
          std::string out = "[";
          for (std::size_t i = 0; i < v.size(); ++i) {
            if (i) out += ", ";
            out += to_toml(Value(v[i]));
          }
          return out + "]";
        }
      },
      value);
}

}  // namespace cab::config
