// Sweep files: [sweep] name and seeds, [base] defaults, [grid] axes (cartesian product), [[zip]] paired
// axes, [[exclude]] / [[include]] rules, "@ref:" references to other sweeps' outputs, and [slurm] settings
// for running it as a Slurm job array (cab/sweep/slurm.h).
// Keys are dotted "table.key" (run config tables: run, train, teacher, student, bridge, alignment, method,
// dataset), written either quoted ("train.lr" = ...) or as TOML dotted keys / sub-tables.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cab/config/section.h"
#include "cab/config/value.h"
#include "cab/export.h"

namespace cab::sweep {

/// One "table.key = value" written in the sweep file.
struct CAB_API Setting {
  std::string key;
  config::Value value;
  config::Location location;
};

/// A list of values one key takes across runs.
struct CAB_API Axis {
  std::string key;
  std::vector<config::Value> values;
  config::Location location;
};

/// Axes varied together (all the same length): the i-th run of the group takes the i-th value of each.
struct CAB_API ZipGroup {
  std::vector<Axis> axes;
  config::Location location;
};

/// A set of key = value conditions (exclude: drop runs matching all; include: add one run).
struct CAB_API Rule {
  std::vector<Setting> settings;
  config::Location location;
};

struct CAB_API SweepFile {
  std::string path;    ///< as given, used in every message
  std::string text;    ///< the file's bytes (frozen into the store)
  std::string sha256;  ///< of text
  std::string name;
  config::Location name_location;
  std::vector<std::int64_t> seeds;  ///< each run is repeated per seed (run.seed); empty: run.seed from base
  config::Location seeds_location;
  std::vector<Setting> base;
  std::vector<Axis> grid;
  std::vector<ZipGroup> zips;
  std::vector<Rule> excludes;
  std::vector<Rule> includes;
  config::Section slurm;  ///< [slurm]: job-array settings for --emit slurm, validated, defaults filled
};

/// Parses and checks the structure (tables, key shapes, lists, duplicate axes, zip lengths, reference
/// syntax). Values are checked against the schemas by expand(). Errors are ConfigError "file:line:column: ...".
CAB_API SweepFile parse_sweep(std::string_view text, const std::string& path);
CAB_API SweepFile read_sweep(const std::filesystem::path& file);

/// "@ref:SWEEP:key=value,key=value:ARTIFACT" — the summary value ARTIFACT (e.g. "checkpoint") of the one
/// finished run of sweep SWEEP whose parameters match the filter.
struct CAB_API Reference {
  std::string sweep;
  std::vector<std::pair<std::string, std::string>> filter;  ///< key = value as TOML text (strings quoted)
  std::string artifact;
  std::string str() const;
};

/// The reference a value holds, if it is a string starting with "@ref:"; throws ConfigError when malformed.
CAB_API std::optional<Reference> parse_reference(const config::Value& value, const config::Location& where);

}  // namespace cab::sweep
