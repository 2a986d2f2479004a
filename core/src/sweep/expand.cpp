// Expansion: axes → cartesian product (zip groups as one axis, seeds as one), rules, validation, hashes, order.
#include "cab/sweep/expand.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "cab/config/toml_reader.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/util/did_you_mean.h"
#include "cab/util/error.h"
#include "cab/util/hash.h"

namespace cab::sweep {

using config::Location;
using config::Value;

namespace {

using Assignment = std::vector<Setting>;

bool same_value(const Value& a, const Value& b) {
  auto number = [](const Value& v) -> std::optional<double> {
    if (auto i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    if (auto d = std::get_if<double>(&v)) return *d;
    return std::nullopt;
  };
  if (auto x = number(a), y = number(b); x && y) return *x == *y;
  return config::to_toml(a) == config::to_toml(b);
}

// The run config document of base settings overridden by an assignment.
config::Document document_of(const SweepFile& sweep, const Assignment& assignment) {
  std::map<std::string, Setting> merged;
  for (const auto& s : sweep.base) merged[s.key] = s;
  for (const auto& s : assignment) merged[s.key] = s;
  config::Document doc;
  doc.file = sweep.path;
  for (const auto& [key, s] : merged) {
    const auto dot = key.find('.');
    const std::string table = key.substr(0, dot);
    auto it = doc.tables.find(table);
    if (it == doc.tables.end()) {
      it = doc.tables.emplace(table, config::Section(table, s.location)).first;
      doc.table_order.push_back(table);
    }
    it->second.set(key.substr(dot + 1), s.value, s.location);
  }
  return doc;
}

}  // namespace

Params flatten(const config::RunConfig& config) {
  Params params;
  auto add = [&](const std::string& table, const config::Section& section) {
    for (const auto& [key, entry] : section.entries()) params[table + "." + key] = entry.value;
  };
  add("run", config.run);
  add("train", config.train);
  for (const auto& [kind, choice] : config.plugins) {
    const std::string table(plugin::to_string(kind));
    params[table + ".name"] = choice.name;
    add(table, choice.options);
  }
  return params;
}

std::string canonical_text(const Params& params) {
  std::string out;
  for (const auto& [key, value] : params) out += key + " = " + config::to_toml(value) + "\n";
  return out;
}

std::string to_toml_document(const Params& params) {
  std::string out, current;
  for (const auto& [key, value] : params) {
    const auto dot = key.find('.');
    const std::string table = key.substr(0, dot);
    if (table != current) {
      out += (out.empty() ? "" : "\n") + fmt::format("[{}]\n", table);
      current = table;
    }
    out += key.substr(dot + 1) + " = " + config::to_toml(value) + "\n";
  }
  return out;
}

Params from_toml_document(const std::string& text, const std::string& label) {
  Params params;
  const auto doc = config::parse_toml(text, label);
  for (const auto& [table, section] : doc.tables)
    for (const auto& [key, entry] : section.entries()) params[table + "." + key] = entry.value;
  return params;
}

std::vector<std::string> varied_keys(const std::vector<RunSpec>& runs) {
  std::vector<std::string> out;
  if (runs.empty()) return out;
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.params) keys.insert(k);
  for (const auto& key : keys) {
    const auto first = runs.front().params.find(key);
    for (const auto& r : runs) {
      const auto it = r.params.find(key);
      if ((it == r.params.end()) != (first == runs.front().params.end()) ||
          (it != r.params.end() && config::to_toml(it->second) != config::to_toml(first->second))) {
        out.push_back(key);
        break;
      }
    }
  }
  return out;
}

std::vector<RunSpec> expand(const SweepFile& sweep, const plugin::Registry& registry) {
  // One dimension per grid axis, per zip group, and for the seeds; the first written is outermost.
  std::vector<std::vector<Assignment>> dims;
  for (const auto& axis : sweep.grid) {
    std::vector<Assignment> dim;
    for (const auto& v : axis.values) dim.push_back({Setting{axis.key, v, axis.location}});
    dims.push_back(std::move(dim));
  }
  for (const auto& group : sweep.zips) {
    std::vector<Assignment> dim(group.axes.front().values.size());
    for (const auto& axis : group.axes)
      for (std::size_t i = 0; i < axis.values.size(); ++i) dim[i].push_back(Setting{axis.key, axis.values[i], axis.location});
    dims.push_back(std::move(dim));
  }
  std::vector<Assignment> seed_dim;
  for (auto seed : sweep.seeds) seed_dim.push_back({Setting{"run.seed", seed, sweep.seeds_location}});
  if (!seed_dim.empty()) dims.push_back(seed_dim);

  std::vector<Assignment> points(1);
  for (const auto& dim : dims) {
    std::vector<Assignment> next;
    for (const auto& p : points)
      for (const auto& a : dim) {
        Assignment merged = p;
        merged.insert(merged.end(), a.begin(), a.end());
        next.push_back(std::move(merged));
      }
    points = std::move(next);
  }

  // Exclusions; a rule naming a key the sweep never sets is almost certainly a typo.
  std::set<std::string> set_keys;
  for (const auto& s : sweep.base) set_keys.insert(s.key);
  for (const auto& p : points)
    for (const auto& s : p) set_keys.insert(s.key);
  for (const auto& rule : sweep.excludes) {
    for (const auto& s : rule.settings) {
      if (!set_keys.count(s.key)) {
        throw ConfigError(fmt::format("{}: [[exclude]] {}: the sweep never sets this key, so the rule can match "
                                      "nothing",
                                      s.location.str(), s.key));
      }
    }
  }
  auto value_in = [&](const Assignment& a, const std::string& key) -> const Value* {
    for (auto it = a.rbegin(); it != a.rend(); ++it)
      if (it->key == key) return &it->value;
    for (const auto& s : sweep.base)
      if (s.key == key) return &s.value;
    return nullptr;
  };
  std::vector<Assignment> kept;
  for (auto& p : points) {
    bool excluded = false;
    for (const auto& rule : sweep.excludes) {
      excluded = std::all_of(rule.settings.begin(), rule.settings.end(), [&](const Setting& s) {
        const Value* v = value_in(p, s.key);
        return v && same_value(*v, s.value);
      });
      if (excluded) break;
    }
    if (!excluded) kept.push_back(std::move(p));
  }
  for (const auto& rule : sweep.includes) {
    if (seed_dim.empty()) {
      kept.push_back(rule.settings);
    } else {
      for (const auto& seed : seed_dim) {
        Assignment a = rule.settings;
        a.insert(a.end(), seed.begin(), seed.end());
        kept.push_back(std::move(a));
      }
    }
  }
  if (kept.empty()) {
    throw ConfigError(fmt::format("{}: the sweep has no runs (every grid point is excluded)", sweep.path));
  }

  std::vector<RunSpec> runs;
  std::set<std::string> seen;
  for (const auto& a : kept) {
    const config::RunConfig config = config::parse_run_config(document_of(sweep, a), registry);
    auto require = [&](plugin::Kind kind, const std::string& why) {
      if (config.plugins.count(kind)) return;
      throw ConfigError(fmt::format("{}: runs need a {} plugin{}: set \"{}.name\" in [base] or vary it in [grid] "
                                    "(available: {})",
                                    sweep.path, plugin::to_string(kind), why, plugin::to_string(kind),
                                    join_names(registry.names(kind))));
    };
    require(plugin::Kind::dataset, "");
    require(plugin::Kind::method, "");
    // The method says which models it needs (constructing one is cheap: it only reads its options).
    const auto& m = config.plugins.at(plugin::Kind::method);
    const auto method = registry.create_as<Method>(plugin::Kind::method, m.name, m.options);
    const bool trains_teacher = method->trains() == Trains::teacher;
    if (!trains_teacher) require(plugin::Kind::student, "");
    if (trains_teacher || method->needs_teacher())
      require(plugin::Kind::teacher, fmt::format(" (method {} {})", m.name, trains_teacher ? "trains it" : "distills from it"));
    RunSpec spec;
    spec.params = flatten(config);
    spec.canonical = canonical_text(spec.params);
    spec.config_hash = sha256_hex(spec.canonical);
    if (seen.insert(spec.config_hash).second) runs.push_back(std::move(spec));
  }
  // The teacher is the expensive setup: keep runs of one teacher together, otherwise the file's order.
  auto teacher_of = [](const RunSpec& r) {
    std::string key;
    for (auto it = r.params.lower_bound("teacher."); it != r.params.end() && it->first.rfind("teacher.", 0) == 0; ++it)
      key += it->first + "=" + config::to_toml(it->second) + ";";
    return key;
  };
  std::vector<std::string> teacher_order;
  for (const auto& r : runs) {
    const auto t = teacher_of(r);
    if (std::find(teacher_order.begin(), teacher_order.end(), t) == teacher_order.end()) teacher_order.push_back(t);
  }
  std::stable_sort(runs.begin(), runs.end(), [&](const RunSpec& x, const RunSpec& y) {
    return std::find(teacher_order.begin(), teacher_order.end(), teacher_of(x)) <
           std::find(teacher_order.begin(), teacher_order.end(), teacher_of(y));
  });
  for (std::size_t i = 0; i < runs.size(); ++i) runs[i].position = static_cast<std::int64_t>(i);
  return runs;
}

}  // namespace cab::sweep
