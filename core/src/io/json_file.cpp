// JSON files with named errors.
#include "cab/io/json_file.h"

#include <fmt/format.h>

#include <fstream>

#include "cab/util/error.h"

namespace cab::io {

nlohmann::json read_json_file(const std::filesystem::path& file, std::string_view hint) {
  std::ifstream in(file);
  if (!in) {
    throw Error(fmt::format("cannot read '{}'{}{}", file.string(), hint.empty() ? "" : " (", hint.empty() ? "" : std::string(hint) + ")"));
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}': invalid JSON: {}", file.string(), e.what()));
  }
}

}  // namespace cab::io
