// Run configuration: core schemas for [run] and [train], plugin tables validated by their plugin's schema.
#include "cab/config/run_config.h"

#include <fmt/format.h>

#include <algorithm>

#include "cab/plugin/registry.h"
#include "cab/util/did_you_mean.h"
#include "cab/util/error.h"

namespace cab::config {

const Schema& run_schema() {
  static const Schema schema = [] {
    Schema s;
    s.add("seed", Type::integer, "seed of parameter init, data order and the data subset").fallback(std::int64_t{0}).min(0);
    s.add("device", Type::string, "where the run trains").fallback(std::string("auto")).one_of({"auto", "cpu", "cuda"});
    s.add("tag", Type::string, "free-form label recorded with the run").fallback(std::string());
    return s;
  }();
  return schema;
}

const Schema& train_schema() {
  static const Schema schema = [] {
    Schema s;
    s.add("steps", Type::integer, "optimizer steps (0: use epochs)").fallback(std::int64_t{0}).min(0);
    s.add("epochs", Type::number, "passes over the (subset of the) training split when steps = 0").fallback(1.0).min(0);
    s.add("batch_size", Type::integer, "examples per optimizer step").fallback(std::int64_t{128}).min(1);
    s.add("lr", Type::number, "peak learning rate of AdamW").fallback(5e-4).min(0);
    s.add("weight_decay", Type::number, "AdamW weight decay (not applied to norms, biases, A_log, D)").fallback(0.05).min(0);
    s.add("betas", Type::number_list, "AdamW (beta1, beta2)").fallback(std::vector<double>{0.9, 0.999}).min(0).max(1);
    s.add("warmup_steps", Type::integer, "linear warm-up steps").fallback(std::int64_t{0}).min(0);
    s.add("schedule", Type::string, "learning-rate schedule after warm-up").fallback(std::string("cosine")).one_of({"cosine", "constant", "linear"});
    s.add("min_lr", Type::number, "final learning rate of the cosine/linear schedule").fallback(1e-6).min(0);
    s.add("grad_clip", Type::number, "clip the global gradient norm (0: off)").fallback(1.0).min(0);
    s.add("precision", Type::string, "compute precision (bf16 autocast on GPU)").fallback(std::string("bf16")).one_of({"fp32", "bf16"});
    s.add("ema_decay", Type::number, "exponential moving average of the weights (0: off)").fallback(0.0).min(0).max(1);
    s.add("eval_every", Type::integer, "evaluate every N steps (0: at the end only)").fallback(std::int64_t{0}).min(0);
    s.add("eval_examples", Type::integer, "test examples per evaluation (0: the whole test split)").fallback(std::int64_t{0}).min(0);
    s.add("similarity_examples", Type::integer, "test examples for the student/teacher attention similarity at the end (0: off)").fallback(std::int64_t{8}).min(0);
    s.add("log_every", Type::integer, "record the per-step metrics (loss, lr, time, memory …) every N steps; the last step always").fallback(std::int64_t{1}).min(1);
    s.add("checkpoint_every", Type::integer, "checkpoint every N steps (0: at the end only)").fallback(std::int64_t{0}).min(0);
    s.add("data_fraction", Type::number, "fraction of the training split used (seeded, stratified per class)").fallback(1.0).min(0).max(1);
    s.add("num_workers", Type::integer, "data-loading threads").fallback(std::int64_t{2}).min(0);
    return s;
  }();
  return schema;
}

RunConfig parse_run_config(const Document& document, const plugin::Registry& registry) {
  std::vector<std::string> known = {"run", "train"};
  for (auto kind : plugin::kAllKinds) known.emplace_back(plugin::to_string(kind));

  RunConfig config;
  config.file = document.file;
  for (const auto& name : document.table_order) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      throw ConfigError(fmt::format("{}: unknown table [{}]{}; known tables: {}",
                                    document.tables.at(name).location().str(), name, did_you_mean(name, known),
                                    join_names(known)));
    }
  }
  config.run = run_schema().validate(document.table("run"));
  config.train = train_schema().validate(document.table("train"));

  for (auto kind : plugin::kAllKinds) {
    const std::string table_name(plugin::to_string(kind));
    if (!document.has(table_name)) continue;
    const Section& raw = document.tables.at(table_name);
    if (!raw.has("name")) {
      throw ConfigError(fmt::format("{}: [{}] needs name = \"...\" choosing the {} plugin; available: {}",
                                    raw.location().str(), table_name, table_name,
                                    join_names(registry.names(kind))));
    }
    const Location name_loc = raw.location("name");
    if (type_of(raw.value("name")) != Type::string) {
      throw ConfigError(fmt::format("{}: {}.name: expected string, got {}", name_loc.str(), table_name,
                                    to_toml(raw.value("name"))));
    }
    PluginChoice choice;
    choice.name = raw.string("name");
    choice.location = name_loc;
    const plugin::FactoryEntry* entry = nullptr;
    try {
      entry = &registry.find(kind, choice.name);
    } catch (const PluginError& e) {
      throw ConfigError(fmt::format("{}: {}.name: {}", name_loc.str(), table_name, e.what()));
    }
    Section options = raw;
    options.erase("name");
    choice.options = registry.schema(*entry).validate(options);
    config.plugins.emplace(kind, std::move(choice));
  }
  return config;
}

RunConfig load_run_config(const std::filesystem::path& file, const plugin::Registry& registry) {
  return parse_run_config(read_toml_file(file), registry);
}

}  // namespace cab::config
