// Mamba-1 causal language model (the `mamba` student): Hugging Face parameter names, safetensors checkpoints
// with config.json, taps (x after conv + SiLU, B, C, Δ, mixing matrix, hidden states), `s4d` / `identity` /
// `from-teacher` initialization.
//
// Block: h = h + mixer(RMSNorm(h)) with the mixer of mamba_common.h (one forward scan); final RMSNorm, then the
// LM head (tied to the embeddings by default).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/io/safetensors.h>
#include <cab/plugin/model.h>

#include "mamba_common.h"

namespace cab::mamba {
namespace {

namespace fs = std::filesystem;

struct MambaConfig : Mamba1Config {
  int64_t vocab_size = 50280;
  bool tie_embeddings = true;
};

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const MambaConfig& c) {
    embeddings = register_module("embeddings", torch::nn::Embedding(c.vocab_size, c.d_model));
    layers = register_module("layers", make_layers(c));
    norm_f = register_module("norm_f", RMSNorm(c.d_model, c.norm_eps));
  }
  torch::nn::Embedding embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm_f{nullptr};
};
TORCH_MODULE(Backbone);

MambaConfig read_hf_config(const fs::path& dir) {
  const nlohmann::json j = read_config_json(
      dir, "mamba", "a Mamba checkpoint is a folder with config.json and model.safetensors");
  const fs::path file = dir / "config.json";
  MambaConfig c;
  read_stack_json(j, file, c);
  c.vocab_size = json_integer(j, "vocab_size", file);
  c.tie_embeddings = j.value("tie_word_embeddings", true);
  return c;
}

class MambaLM final : public Mamba1Student {
 public:
  explicit MambaLM(const MambaConfig& c) : Mamba1Student(c), c_(c) {
    backbone = register_module("backbone", Backbone(c));
    if (!c.tie_embeddings)
      lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.vocab_size).bias(false)));
  }

  cab::ModelOutput forward(const at::Tensor& ids, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "mamba");
    cab::ModelOutput out;
    at::Tensor h = backbone->embeddings->forward(ids);  // [b, L, d_model]
    h = run_layers(backbone->layers, h, taps, out.taps);
    h = backbone->norm_f->forward(h.to(backbone->norm_f->weight.scalar_type()));
    out.logits = lm_head ? lm_head->forward(h) : at::linear(h, backbone->embeddings->weight);  // [b, L, vocab]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, 0, -1, true}; }

  /// The layers (see init_layers_from_teacher), the token embedding ← embed.tokens, and an untied
  /// lm_head ← head.weight (a tied head is the embedding).
  cab::InitReport init_from_teacher(const cab::RoleWeights& teacher, const std::vector<int64_t>& layer_map) override {
    cab::InitReport report;
    init_layers_from_teacher(backbone->layers, teacher, layer_map, "backbone.layers.", "mamba", report);
    cab::copy_role(backbone->embeddings->weight, teacher, "embed.tokens", "backbone.embeddings.weight", report);
    if (lm_head) cab::copy_role(lm_head->weight, teacher, "head.weight", "lm_head.weight", report);
    cab::copy_role(backbone->norm_f->weight, teacher, "norm_f.weight", "backbone.norm_f.weight", report);
    return report;
  }

  void load_checkpoint(const fs::path& path) override {
    cab::io::LoadOptions options;
    options.rename_prefixes = {{"backbone.embedding.", "backbone.embeddings."}};
    if (c_.tie_embeddings) options.ignore = {"lm_head.weight"};  // tied: the embedding is the head
    load_checkpoint_file(*this, path, options);
  }

  void save_checkpoint(const fs::path& directory) const override {
    nlohmann::json j = stack_json(c_);
    j["model_type"] = "mamba";
    j["architectures"] = {"MambaForCausalLM"};
    j["vocab_size"] = c_.vocab_size;
    j["tie_word_embeddings"] = c_.tie_embeddings;
    save_checkpoint_files(*this, directory, j);
  }

  const torch::nn::ModuleList& layer_list() const override { return backbone->layers; }

  Backbone backbone{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  MambaConfig c_;
};

}  // namespace

void describe_mamba(cab::config::Schema& s) {
  using cab::config::Type;
  describe_stack(s, {"mamba-130m", "mamba-370m"}, "named size (\"custom\": the keys below)",
                 "Hugging Face folder (config.json + model.safetensors) to load", 256, 4);
  s.add("vocab_size", Type::integer, "vocabulary size").fallback(std::int64_t{50280}).min(1);
  s.add("tie_embeddings", Type::boolean, "LM head shares the embedding matrix").fallback(true);
}

std::shared_ptr<cab::Component> create_mamba(const cab::config::Section& o) {
  MambaConfig c;
  const std::string checkpoint = o.string("checkpoint");
  if (!checkpoint.empty()) {
    c = read_hf_config(checkpoint);
  } else if (o.string("preset") == "mamba-130m") {
    c.d_model = 768, c.n_layer = 24;
  } else if (o.string("preset") == "mamba-370m") {
    c.d_model = 1024, c.n_layer = 48;
  } else {
    read_stack_options(o, c);
    c.vocab_size = o.integer("vocab_size"), c.tie_embeddings = o.boolean("tie_embeddings");
  }
  return build_student<MambaLM>(c, o, checkpoint);
}

}  // namespace cab::mamba
