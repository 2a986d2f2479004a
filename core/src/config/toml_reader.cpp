// TOML → Sections with locations, via toml++. The only file in cab that includes toml++.
#include "cab/config/toml_reader.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "cab/util/error.h"
#include "toml_convert.h"

namespace cab::config {

namespace detail {

Location where(const toml::source_region& region, const std::string& file) {
  return {file, static_cast<std::uint32_t>(region.begin.line), static_cast<std::uint32_t>(region.begin.column)};
}

namespace {

std::string node_kind(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "a value";
  }
}

Value convert_array(const toml::array& array, const Location& loc, const std::string& key) {
  bool all_int = true, all_number = true, all_string = true;
  for (const auto& element : array) {
    all_int = all_int && element.is_integer();
    all_number = all_number && (element.is_integer() || element.is_floating_point());
    all_string = all_string && element.is_string();
  }
  if (array.empty()) return std::vector<std::string>{};
  if (all_int) {
    std::vector<std::int64_t> out;
    for (const auto& e : array) out.push_back(e.as_integer()->get());
    return out;
  }
  if (all_number) {
    std::vector<double> out;
    for (const auto& e : array)
      out.push_back(e.is_integer() ? static_cast<double>(e.as_integer()->get()) : e.as_floating_point()->get());
    return out;
  }
  if (all_string) {
    std::vector<std::string> out;
    for (const auto& e : array) out.push_back(e.as_string()->get());
    return out;
  }
  throw ConfigError(fmt::format("{}: {}: arrays must hold only numbers or only strings", loc.str(), key));
}

}  // namespace

Value convert(const toml::node& node, const Location& loc, const std::string& key) {
  if (auto v = node.as_boolean()) return v->get();
  if (auto v = node.as_integer()) return v->get();
  if (auto v = node.as_floating_point()) return v->get();
  if (auto v = node.as_string()) return v->get();
  if (auto v = node.as_array()) return convert_array(*v, loc, key);
  throw ConfigError(fmt::format("{}: {}: {} is not supported here (use a boolean, number, string or array)",
                                loc.str(), key, node_kind(node)));
}

toml::table parse(std::string_view text, const std::string& file_label) {
  try {
    return toml::parse(text, std::string_view(file_label));
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ConfigError(fmt::format("{}:{}:{}: invalid TOML: {}", file_label, b.line, b.column, e.description()));
  }
}

}  // namespace detail

using detail::convert;
using detail::where;

Section Document::table(const std::string& name) const {
  auto it = tables.find(name);
  return it == tables.end() ? Section(name, {file, 0, 0}) : it->second;
}

Document parse_toml(std::string_view text, const std::string& file_label) {
  const toml::table root = detail::parse(text, file_label);
  Document doc;
  doc.file = file_label;
  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    const Location loc = where(node.source(), file_label);
    const auto* table = node.as_table();
    if (!table) {
      throw ConfigError(fmt::format("{}: '{}' is outside any table; put it under a [table] header such as [train]",
                                    loc.str(), name));
    }
    Section section(name, loc);
    for (const auto& [sub_key, sub_node] : *table) {
      const std::string sub(sub_key.str());
      // Messages point at the key: "file:line:column" of `key = value`.
      const Location sub_loc = where(sub_key.source(), file_label);
      if (sub_node.is_table()) {
        throw ConfigError(fmt::format("{}: [{}] {}: nested tables are not supported in this file; write the "
                                      "options of [{}] as plain keys",
                                      sub_loc.str(), name, sub, name));
      }
      section.set(sub, convert(sub_node, sub_loc, name + "." + sub), sub_loc);
    }
    doc.table_order.push_back(name);
    doc.tables.emplace(name, std::move(section));
  }
  return doc;
}

std::string read_config_text(const std::filesystem::path& file, std::string_view what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw ConfigError(fmt::format("{}: cannot open {} ({})", file.string(), what,
                                  std::filesystem::exists(file) ? "not readable" : "no such file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Document read_toml_file(const std::filesystem::path& file) {
  return parse_toml(read_config_text(file, "config file"), file.string());
}

}  // namespace cab::config
