// Sweep file parsing: structure, dotted keys, axes, rules and reference syntax.
#include "cab/sweep/sweep_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "../config/toml_convert.h"
#include "cab/config/toml_reader.h"
#include "cab/plugin/kind.h"
#include "cab/sweep/slurm.h"
#include "cab/util/did_you_mean.h"
#include "cab/util/error.h"
#include "cab/util/hash.h"

namespace cab::sweep {

using cab::ConfigError;
using config::Location;
using config::Value;

namespace {

std::vector<std::string> run_tables() {
  std::vector<std::string> out = {"run", "train"};
  for (auto kind : plugin::kAllKinds) out.emplace_back(plugin::to_string(kind));
  return out;
}

// Flattens `table` into "a.b" settings. Sub-tables and dotted keys both work; exactly two levels.
void flatten(const toml::table& table, const std::string& prefix, const std::string& where_name,
             const std::string& file, std::vector<Setting>& out) {
  for (const auto& [k, node] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const Location loc = config::detail::where(k.source(), file);
    if (const auto* sub = node.as_table()) {
      flatten(*sub, key, where_name, file, out);
      continue;
    }
    const auto dot = key.find('.');
    if (dot == std::string::npos || key.find('.', dot + 1) != std::string::npos) {
      throw ConfigError(fmt::format("{}: [{}] key '{}': expected a run-config key \"table.key\" such as "
                                    "\"train.lr\" or \"method.name\"",
                                    loc.str(), where_name, key));
    }
    const std::string table_name = key.substr(0, dot);
    const auto tables = run_tables();
    if (std::find(tables.begin(), tables.end(), table_name) == tables.end()) {
      throw ConfigError(fmt::format("{}: [{}] key '{}': unknown table '{}'{}; known tables: {}", loc.str(),
                                    where_name, key, table_name, did_you_mean(table_name, tables),
                                    join_names(tables)));
    }
    out.push_back(Setting{key, config::detail::convert(node, loc, key), loc});
  }
}

std::vector<Setting> settings_of(const toml::node& node, const std::string& where_name, const std::string& file) {
  const auto* table = node.as_table();
  if (!table) {
    throw ConfigError(fmt::format("{}: [{}] must be a table of \"table.key\" = value",
                                  config::detail::where(node.source(), file).str(), where_name));
  }
  std::vector<Setting> out;
  flatten(*table, "", where_name, file, out);
  return out;
}

std::vector<Value> as_list(const Setting& s, const std::string& where_name) {
  std::vector<Value> values;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::vector<std::int64_t>> || std::is_same_v<T, std::vector<double>> ||
                      std::is_same_v<T, std::vector<std::string>>) {
          for (const auto& x : v) values.emplace_back(x);
        } else {
          throw ConfigError(fmt::format("{}: [{}] {}: expected a list of values to sweep over, got {}",
                                        s.location.str(), where_name, s.key, config::to_toml(s.value)));
        }
      },
      s.value);
  if (values.empty()) {
    throw ConfigError(fmt::format("{}: [{}] {}: empty list: the sweep would have no runs", s.location.str(),
                                  where_name, s.key));
  }
  return values;
}

Axis as_axis(const Setting& s, const std::string& where_name) { return Axis{s.key, as_list(s, where_name), s.location}; }

void check_references(const std::vector<Setting>& settings) {
  for (const auto& s : settings) parse_reference(s.value, s.location);
}

}  // namespace

std::string Reference::str() const {
  std::string f;
  for (const auto& [k, v] : filter) f += (f.empty() ? "" : ",") + k + "=" + v;
  return fmt::format("@ref:{}:{}:{}", sweep, f, artifact);
}

std::optional<Reference> parse_reference(const Value& value, const Location& where) {
  const auto* text = std::get_if<std::string>(&value);
  if (!text || text->rfind("@ref:", 0) != 0) return std::nullopt;
  // @ref:SWEEP:FILTER:ARTIFACT — FILTER may be empty (the sweep has one run).
  const std::string body = text->substr(5);
  const auto first = body.find(':');
  const auto last = body.rfind(':');
  if (first == std::string::npos || first == last) {
    throw ConfigError(fmt::format("{}: malformed reference \"{}\": expected \"@ref:SWEEP:key=value,...:ARTIFACT\"",
                                  where.str(), *text));
  }
  Reference ref;
  ref.sweep = body.substr(0, first);
  ref.artifact = body.substr(last + 1);
  std::stringstream filter(body.substr(first + 1, last - first - 1));
  std::string item;
  while (std::getline(filter, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ConfigError(fmt::format("{}: malformed reference \"{}\": filter item '{}' is not key=value", where.str(),
                                    *text, item));
    }
    ref.filter.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  if (ref.sweep.empty() || ref.artifact.empty()) {
    throw ConfigError(fmt::format("{}: malformed reference \"{}\": the sweep name and the artifact are required",
                                  where.str(), *text));
  }
  return ref;
}

SweepFile parse_sweep(std::string_view text, const std::string& path) {
  const toml::table root = config::detail::parse(text, path);
  SweepFile sweep;
  sweep.path = path;
  sweep.text = std::string(text);
  sweep.sha256 = sha256_hex(text);

  const std::vector<std::string> known = {"sweep", "base", "grid", "zip", "exclude", "include", "slurm"};
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      throw ConfigError(fmt::format("{}: unknown table [{}]{}; a sweep file has {}",
                                    config::detail::where(k.source(), path).str(), key, did_you_mean(key, known),
                                    join_names(known)));
    }
  }

  const auto* head = root["sweep"].as_table();
  if (!head) throw ConfigError(fmt::format("{}: missing [sweep] table with name = \"...\"", path));
  for (const auto& [k, node] : *head) {
    const std::string key(k.str());
    const Location loc = config::detail::where(k.source(), path);
    if (key == "name") {
      const auto* name = node.as_string();
      if (!name || name->get().empty() || name->get().find_first_of(" :/\t") != std::string::npos) {
        throw ConfigError(fmt::format("{}: sweep.name: expected a non-empty string without spaces, ':' or '/'",
                                      loc.str()));
      }
      sweep.name = name->get();
      sweep.name_location = loc;
    } else if (key == "seeds") {
      const auto* list = node.as_array();
      if (!list || list->empty() || !list->is_homogeneous(toml::node_type::integer)) {
        throw ConfigError(fmt::format("{}: sweep.seeds: expected a non-empty list of integers", loc.str()));
      }
      std::set<std::int64_t> seen;
      for (const auto& e : *list) {
        const auto seed = e.as_integer()->get();
        if (seed < 0 || !seen.insert(seed).second) {
          throw ConfigError(fmt::format("{}: sweep.seeds: seeds must be distinct and >= 0, got {} twice or negative",
                                        loc.str(), seed));
        }
        sweep.seeds.push_back(seed);
      }
      sweep.seeds_location = loc;
    } else {
      throw ConfigError(fmt::format("{}: [sweep] unknown key '{}'{}; known keys: name, seeds", loc.str(), key,
                                    did_you_mean(key, {"name", "seeds"})));
    }
  }
  if (sweep.name.empty()) {
    throw ConfigError(fmt::format("{}: [sweep] needs name = \"...\"",
                                  config::detail::where(head->source(), path).str()));
  }

  if (auto node = root["base"]; node) sweep.base = settings_of(*node.node(), "base", path);
  if (auto node = root["grid"]; node) {
    for (const auto& s : settings_of(*node.node(), "grid", path)) sweep.grid.push_back(as_axis(s, "grid"));
  }
  auto array_of_tables = [&](const char* name) -> const toml::array* {
    auto node = root[name];
    if (!node) return nullptr;
    const auto* arr = node.as_array();
    if (!arr || !arr->is_array_of_tables()) {
      throw ConfigError(fmt::format("{}: {} must be written as [[{}]] tables",
                                    config::detail::where(node.node()->source(), path).str(), name, name));
    }
    return arr;
  };
  if (const auto* zips = array_of_tables("zip")) {
    for (const auto& t : *zips) {
      ZipGroup group;
      group.location = config::detail::where(t.source(), path);
      for (const auto& s : settings_of(t, "zip", path)) group.axes.push_back(as_axis(s, "zip"));
      if (group.axes.size() < 2) {
        throw ConfigError(fmt::format("{}: [[zip]] needs at least two keys to pair (use [grid] for one)",
                                      group.location.str()));
      }
      for (const auto& axis : group.axes) {
        if (axis.values.size() != group.axes.front().values.size()) {
          throw ConfigError(fmt::format("{}: [[zip]] {}: {} values, but {} has {}; paired axes need equal lengths",
                                        axis.location.str(), axis.key, axis.values.size(), group.axes.front().key,
                                        group.axes.front().values.size()));
        }
      }
      sweep.zips.push_back(std::move(group));
    }
  }
  for (auto [name, rules] : {std::pair{"exclude", &sweep.excludes}, std::pair{"include", &sweep.includes}}) {
    if (const auto* arr = array_of_tables(name)) {
      for (const auto& t : *arr) {
        Rule rule{settings_of(t, name, path), config::detail::where(t.source(), path)};
        if (rule.settings.empty()) throw ConfigError(fmt::format("{}: [[{}]] is empty", rule.location.str(), name));
        rules->push_back(std::move(rule));
      }
    }
  }

  // Each key is varied by one axis at most; seeds own run.seed.
  std::map<std::string, Location> axes;
  auto claim = [&](const std::string& key, const Location& loc) {
    auto [it, fresh] = axes.emplace(key, loc);
    if (!fresh) {
      throw ConfigError(fmt::format("{}: duplicate axis '{}': it is already varied at {}", loc.str(), key,
                                    it->second.str()));
    }
  };
  if (!sweep.seeds.empty()) claim("run.seed", sweep.seeds_location);
  for (const auto& axis : sweep.grid) claim(axis.key, axis.location);
  for (const auto& group : sweep.zips)
    for (const auto& axis : group.axes) claim(axis.key, axis.location);
  std::set<std::string> base_keys;
  for (const auto& s : sweep.base) {
    if (!base_keys.insert(s.key).second) {
      throw ConfigError(fmt::format("{}: [base] '{}' is set twice", s.location.str(), s.key));
    }
    if (s.key == "run.seed" && !sweep.seeds.empty()) {
      throw ConfigError(fmt::format("{}: [base] run.seed conflicts with sweep.seeds at {}", s.location.str(),
                                    sweep.seeds_location.str()));
    }
  }
  config::Section slurm("slurm", {path, 0, 0});
  if (auto node = root["slurm"]; node) {
    const auto* table = node.as_table();
    const Location at = config::detail::where(node.node()->source(), path);
    if (!table) throw ConfigError(fmt::format("{}: [slurm] must be a table of settings such as gpus = 1", at.str()));
    slurm = config::Section("slurm", at);
    for (const auto& [k, value] : *table) {
      const std::string key(k.str());
      const Location loc = config::detail::where(k.source(), path);
      if (value.is_table()) {
        throw ConfigError(fmt::format("{}: [slurm] {}: expected a value, not a table", loc.str(), key));
      }
      slurm.set(key, config::detail::convert(value, loc, "slurm." + key), loc);
    }
  }
  sweep.slurm = slurm_schema().validate(slurm);
  slurm_options(sweep.slurm);  // formats and limits, checked where they were written

  check_references(sweep.base);
  for (const auto& axis : sweep.grid)
    for (const auto& v : axis.values) parse_reference(v, axis.location);
  for (const auto& rule : sweep.includes) check_references(rule.settings);
  return sweep;
}

SweepFile read_sweep(const std::filesystem::path& file) {
  return parse_sweep(config::read_config_text(file, "sweep file"), file.string());
}

}  // namespace cab::sweep
