// The configuration of one run: core sections [run] and [train] plus one table per plugin kind,
// each plugin table naming its plugin (`name = "mlp"`) and validated against that plugin's schema.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "cab/config/schema.h"
#include "cab/config/section.h"
#include "cab/config/toml_reader.h"
#include "cab/export.h"
#include "cab/plugin/kind.h"

namespace cab::plugin {
class Registry;
}

namespace cab::config {

/// The plugin a table selects, and its validated options (defaults filled in).
struct CAB_API PluginChoice {
  std::string name;
  Location location;  ///< where `name` was written
  Section options;
};

struct CAB_API RunConfig {
  std::string file;
  Section run;    ///< [run]: seed, device, ...
  Section train;  ///< [train]: optimizer, schedule, precision, budgets
  std::map<plugin::Kind, PluginChoice> plugins;
};

/// Schema of [run].
CAB_API const Schema& run_schema();
/// Schema of [train].
CAB_API const Schema& train_schema();

/// Validates a parsed document: known tables only, core tables against their schemas, each plugin
/// table's `name` resolved in `registry` and its other keys against that plugin's schema.
CAB_API RunConfig parse_run_config(const Document& document, const plugin::Registry& registry);

/// read_toml_file + parse_run_config.
CAB_API RunConfig load_run_config(const std::filesystem::path& file, const plugin::Registry& registry);

}  // namespace cab::config
