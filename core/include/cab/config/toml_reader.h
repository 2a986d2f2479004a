// Reads a TOML file into Sections (one per top-level table) that remember file:line:column of every value.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cab/config/section.h"
#include "cab/export.h"

namespace cab::config {

/// The top-level tables of a TOML document, in file order.
struct CAB_API Document {
  std::string file;                       ///< the path (or label) used in every message
  std::vector<std::string> table_order;   ///< table names as they appear
  std::map<std::string, Section> tables;  ///< raw, unvalidated values with their locations

  bool has(const std::string& table) const { return tables.count(table) != 0; }
  /// The table, or an empty Section located at the file when it is absent.
  Section table(const std::string& name) const;
};

/// Parses TOML text; syntax errors become ConfigError "file:line:column: <what toml++ says>".
/// Values outside a table, nested tables and arrays of tables or mixed arrays are errors naming their location.
CAB_API Document parse_toml(std::string_view text, const std::string& file_label);

/// The bytes of a config file; a missing or unreadable file is a ConfigError "FILE: cannot open <what> (...)".
CAB_API std::string read_config_text(const std::filesystem::path& file, std::string_view what);

/// Reads and parses a file; a missing or unreadable file is a ConfigError naming it.
CAB_API Document read_toml_file(const std::filesystem::path& file);

}  // namespace cab::config
