// Expansion of a sweep file into fully resolved, validated runs with stable config hashes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cab/config/run_config.h"
#include "cab/config/value.h"
#include "cab/export.h"
#include "cab/sweep/sweep_file.h"

namespace cab::plugin {
class Registry;
}

namespace cab::sweep {

/// A flat, fully resolved run configuration: "table.key" -> value, defaults included.
using Params = std::map<std::string, config::Value>;

struct CAB_API RunSpec {
  std::int64_t position = 0;  ///< order in which runs are claimed (teacher changes least often)
  std::string config_hash;    ///< sha256 of `canonical`
  std::string canonical;      ///< "table.key = value" lines, sorted: the identity of the run
  Params params;
};

/// Every run of the sweep, validated against the core and plugin schemas (errors point at the setting in
/// the sweep file), deduplicated by hash, ordered by teacher then the file's order.
CAB_API std::vector<RunSpec> expand(const SweepFile& sweep, const plugin::Registry& registry);

/// Flattens a validated run config ("table.key" -> value, plugin tables with their `name`).
CAB_API Params flatten(const config::RunConfig& config);
/// The canonical text of flat parameters: sorted "key = value" lines.
CAB_API std::string canonical_text(const Params& params);
/// TOML text of flat parameters, one table per prefix — what a worker parses as its run config.
CAB_API std::string to_toml_document(const Params& params);
/// The flat parameters of such a TOML document (its inverse); syntax errors name `label`.
CAB_API Params from_toml_document(const std::string& text, const std::string& label);
/// The keys whose values differ between runs (for compact listings).
CAB_API std::vector<std::string> varied_keys(const std::vector<RunSpec>& runs);

}  // namespace cab::sweep
