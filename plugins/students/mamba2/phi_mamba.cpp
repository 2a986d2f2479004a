// MOHAWK's Phi-Mamba (the `phi-mamba` student; Bick et al. 2024, "Transformers to SSMs: Distilling Quadratic
// Knowledge to Subquadratic Models", code goombalab/phi-mamba): Phi-1.5 with each attention replaced by the
// discrete Mamba-2 mixer. Parameter names and config.json are the repository's, so its checkpoints load as they are.
//
// Block (modules/phi_block.py): one LayerNorm feeds the mixer and the MLP in parallel,
//   h = mixer(ln(h)) + mlp(ln(h)) + h,   mlp = fc2(gelu_new(fc1(·))) with biases, width 4·d_model.
// Mixer (modules/mixers/discrete_mamba2.py): in_proj d → [xBC (d_inner + 2·n_qk_heads·N), z (d_inner), A_log (H =
// n_v_heads)], with a bias or, without one, a z_bias parameter; causal depthwise conv over xBC (activation
// "identity" by default, or silu); x = n_v_heads heads of P = d_inner / n_v_heads, B and C = n_qk_heads heads of N
// (the groups of the scan); Δ = softplus(A_log), A = −1, and the scan runs on x / Δ, so per head
//   s_t = exp(−Δ_t) · s_{t−1} + B_t · x_t,   y_t = C_t · s_t  (+ D · x_t);
// out = out_proj(y ⊙ silu(z + z_bias)). Final LayerNorm, LM head with a bias, vocabulary padded to a multiple of 8.
// Names: backbone.embedding, backbone.layers.N.{input_layernorm, mixer.{in_proj, z_bias, conv1d, D, out_proj},
// mlp.{fc1, fc2}}, backbone.final_layernorm, lm_head.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/io/json_file.h>
#include <cab/io/safetensors.h>
#include <cab/plugin/model.h>
#include <cab/util/error.h>

#include "factories.h"
#include "head_scan.h"

namespace cab::mamba2 {

namespace {

namespace fs = std::filesystem;

constexpr const char* kCoreType = "modules.mixers.discrete_mamba2";
constexpr const char* kBlockType = "modules.phi_block";

struct PhiMambaConfig {
  // Defaults: the released Phi-Mamba 1.5B (assets/sample_config.json of goombalab/phi-mamba).
  int64_t d_model = 2048, n_layer = 24, d_state = 64, n_qk_heads = 32, n_v_heads = 32, d_conv = 4, expand = 1;
  int64_t vocab_size = 51200, pad_vocab_multiple = 8, chunk_size = 128;  // chunk_size: the SSD kernel's, kept for config.json
  bool bias = false, conv_bias = true;
  std::string activation = "identity";  // after the conv
  double norm_eps = 1e-5;               // phi_block and the backbone fix it
  int64_t d_inner() const { return expand * d_model; }
  int64_t head_dim() const { return d_inner() / n_v_heads; }
  int64_t qk_state() const { return n_qk_heads * d_state; }  // the width of B and of C
  int64_t conv_dim() const { return d_inner() + 2 * qk_state(); }
  int64_t d_mlp() const { return 4 * d_model; }                // phi_block: intermediate_size = 4 · d_model
  int64_t padded_vocab() const { return (vocab_size + pad_vocab_multiple - 1) / pad_vocab_multiple * pad_vocab_multiple; }

  void validate(const std::string& where) const {
    if (d_inner() % n_v_heads != 0)
      throw cab::ConfigError(fmt::format("{}: d_inner = expand · d_model = {} is not divisible by n_v_heads {}", where,
                                         d_inner(), n_v_heads));
    if (n_v_heads % n_qk_heads != 0)
      throw cab::ConfigError(fmt::format("{}: n_v_heads {} is not divisible by n_qk_heads {}", where, n_v_heads, n_qk_heads));
    if (activation != "identity" && activation != "silu" && activation != "swish")
      throw cab::ConfigError(fmt::format("{}: activation '{}' is not one of identity, silu", where, activation));
    if (d_state > 256) throw cab::ConfigError(fmt::format("{}: d_state {} is above the scan's limit of 256", where, d_state));
  }
};

class MixerImpl : public torch::nn::Module {
 public:
  explicit MixerImpl(const PhiMambaConfig& c) : c_(c) {
    const int64_t di = c.d_inner(), cd = c.conv_dim();
    in_proj = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, cd + di + c.n_v_heads).bias(c.bias)));
    if (!c.bias) z_bias = register_parameter("z_bias", at::zeros({di}));  // the gate's bias when in_proj has none
    conv1d = register_module("conv1d", torch::nn::Conv1d(torch::nn::Conv1dOptions(cd, cd, c.d_conv)
                                                             .groups(cd).padding(c.d_conv - 1).bias(c.conv_bias)));
    D = register_parameter("D", at::ones({c.n_v_heads}));
    out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(di, c.d_model).bias(c.bias)));
  }

  /// x: [b, L, d_model] -> [b, L, d_model]
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const int64_t L = x.size(1), di = c_.d_inner(), qk = c_.qk_state(), cd = c_.conv_dim(), heads = c_.n_v_heads;
    const auto acc = accumulation_type(x);
    const at::Tensor proj = in_proj->forward(x);                                   // [b, L, conv_dim + d_inner + H]
    at::Tensor xBC = conv1d->forward(proj.narrow(2, 0, cd).transpose(1, 2)).narrow(2, 0, L).transpose(1, 2);
    if (c_.activation != "identity") xBC = at::silu(xBC);                          // [b, L, conv_dim]
    const at::Tensor z = proj.narrow(2, cd, di);
    const at::Tensor u = xBC.narrow(2, 0, di), B = xBC.narrow(2, di, qk), C = xBC.narrow(2, di + qk, qk);
    const at::Tensor delta = at::softplus(proj.narrow(2, cd + di, heads).to(acc));  // [b, L, H]
    const at::Tensor ux = u.to(acc);
    // The scan multiplies its input by Δ; the reference divides it out first, so the input enters undiscounted.
    const HeadScanInputs ssm{ux / delta.repeat_interleave(c_.head_dim(), 2), delta, at::full({heads}, -1.0, delta.options()),
                             B, C, c_.n_qk_heads};
    const at::Tensor D_heads = D.to(acc);                                          // [H]
    const at::Tensor y = head_scan(ssm) + ux * D_heads.repeat_interleave(c_.head_dim());  // [b, L, d_inner]

    auto put = [&](std::string_view name, const at::Tensor& t) { out.put({std::string(name), layer}, t); };
    if (taps.wants(cab::tap::kX, layer)) put(cab::tap::kX, u);
    if (taps.wants(cab::tap::kB, layer)) put(cab::tap::kB, B);
    if (taps.wants(cab::tap::kC, layer)) put(cab::tap::kC, C);
    if (taps.wants(cab::tap::kDelta, layer)) put(cab::tap::kDelta, delta);
    if (taps.wants(cab::tap::kMixing, layer)) {
      // head_mixing_matrix acts on x / Δ; dividing column s by Δ_s gives the matrix on x (MOHAWK's transfer matrix:
      // M[t, s] = C_t · B_s · exp(−Σ_{k=s+1..t} Δ_k), D on the diagonal).
      const at::Tensor skip = D_heads.view({1, -1, 1}).expand({x.size(0), heads, L});
      put(cab::tap::kMixing, head_mixing_matrix(ssm) / delta.transpose(1, 2).unsqueeze(2) + at::diag_embed(skip));
    }
    const at::Tensor gate = z_bias.defined() ? z.to(acc) + z_bias.to(acc) : z.to(acc);
    return out_proj->forward((y * at::silu(gate)).to(x.scalar_type()));
  }

  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
  torch::nn::Conv1d conv1d{nullptr};
  at::Tensor z_bias, D;

 private:
  PhiMambaConfig c_;
};
TORCH_MODULE(Mixer);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const PhiMambaConfig& c) {
    fc1 = register_module("fc1", torch::nn::Linear(c.d_model, c.d_mlp()));
    fc2 = register_module("fc2", torch::nn::Linear(c.d_mlp(), c.d_model));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(at::gelu(fc1->forward(x), "tanh")); }  // gelu_new
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

torch::nn::LayerNorm layer_norm(const PhiMambaConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}).eps(c.norm_eps));
}

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const PhiMambaConfig& c) {
    mixer = register_module("mixer", Mixer(c));
    mlp = register_module("mlp", Mlp(c));
    input_layernorm = register_module("input_layernorm", layer_norm(c));
  }
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const at::Tensor normed = input_layernorm->forward(x);
    // The reference's order of the sum (mixer + MLP + residual), so fp32 results agree to the last bit.
    return mixer->forward(normed, taps, layer, out).to(x.scalar_type()) + mlp->forward(normed).to(x.scalar_type()) + x;
  }
  Mixer mixer{nullptr};
  Mlp mlp{nullptr};
  torch::nn::LayerNorm input_layernorm{nullptr};
};
TORCH_MODULE(Block);

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const PhiMambaConfig& c) {
    embedding = register_module("embedding", torch::nn::Embedding(c.padded_vocab(), c.d_model));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) layers->push_back(Block(c));
    final_layernorm = register_module("final_layernorm", layer_norm(c));
  }
  torch::nn::Embedding embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layernorm{nullptr};
};
TORCH_MODULE(Backbone);

/// The repository's config.json: {"LanguageModel": {"input": {vocab_size, pad_vocab_size_multiple}}, "MixerModel":
/// {"input": {d_model, n_layer, lm_head_prenorm}}, "Block1": {n_layers, BlockType, CoreType, core_input: {...}}, ...}.
PhiMambaConfig read_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  const nlohmann::json j = cab::io::read_json_file(file, "a Phi-Mamba checkpoint is a folder with config.json and model.safetensors");
  PhiMambaConfig c;
  try {
    const nlohmann::json& lm = j.at("LanguageModel").at("input");
    c.vocab_size = lm.at("vocab_size").get<int64_t>();
    c.pad_vocab_multiple = lm.value("pad_vocab_size_multiple", int64_t{8});
    const nlohmann::json& mm = j.at("MixerModel").at("input");
    c.d_model = mm.at("d_model").get<int64_t>();
    c.n_layer = mm.at("n_layer").get<int64_t>();
    if (mm.value("lm_head_prenorm", std::string("layer")) != "layer")
      throw cab::Error(fmt::format("'{}': MixerModel.input.lm_head_prenorm is '{}'; Phi-Mamba uses 'layer'", file.string(),
                                   mm.value("lm_head_prenorm", std::string())));
    // Layers come in groups "Block1", "Block2", ...; cab supports models whose groups are all the same Phi block.
    int64_t layers = 0;
    const nlohmann::json* core = nullptr;
    for (const auto& [key, block] : j.items()) {
      if (key.rfind("Block", 0) != 0) continue;
      if (block.value("BlockType", std::string(kBlockType)) != kBlockType || block.value("CoreType", std::string()) != kCoreType)
        throw cab::Error(fmt::format("'{}': {} is a {} with a {} core; the phi-mamba student supports {} with {}",
                                     file.string(), key, block.value("BlockType", std::string("?")),
                                     block.value("CoreType", std::string("?")), kBlockType, kCoreType));
      if (core && block.at("core_input") != *core)
        throw cab::Error(fmt::format("'{}': {}.core_input differs from the first block group's; the phi-mamba student "
                                     "needs one mixer configuration for all layers", file.string(), key));
      core = &block.at("core_input");
      layers += block.at("n_layers").get<int64_t>();
    }
    if (!core) throw cab::Error(fmt::format("'{}': no \"Block1\" section (the layers' configuration)", file.string()));
    if (layers != c.n_layer)
      throw cab::Error(fmt::format("'{}': the Block sections have {} layers, MixerModel.input.n_layer is {}", file.string(),
                                   layers, c.n_layer));
    c.d_state = core->value("d_state", int64_t{64});
    c.n_qk_heads = core->value("n_qk_heads", int64_t{32});
    c.n_v_heads = core->value("n_v_heads", int64_t{32});
    c.d_conv = core->value("d_conv", int64_t{4});
    c.expand = core->value("expand", int64_t{1});
    c.chunk_size = core->value("chunk_size", int64_t{128});
    c.activation = core->value("activation", std::string("identity"));
    c.bias = core->value("bias", false);
    c.conv_bias = core->value("conv_bias", true);
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  c.validate(fmt::format("'{}'", file.string()));
  return c;
}

class PhiMamba final : public cab::Student {
 public:
  explicit PhiMamba(const PhiMambaConfig& c) : c_(c) {
    backbone = register_module("backbone", Backbone(c));
    lm_head = register_module("lm_head", torch::nn::Linear(c.d_model, c.padded_vocab()));
  }

  cab::ModelOutput forward(const at::Tensor& ids, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "phi-mamba");
    cab::ModelOutput out;
    at::Tensor h = backbone->embedding->forward(ids);  // [b, L, d_model]
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const int layer = static_cast<int>(i);
      if (taps.wants(cab::tap::kHiddenIn, layer)) out.taps.put({std::string(cab::tap::kHiddenIn), layer}, h);
      h = block(i).forward(h, taps, layer, out.taps);
      if (taps.wants(cab::tap::kHiddenOut, layer)) out.taps.put({std::string(cab::tap::kHiddenOut), layer}, h);
    }
    out.logits = lm_head->forward(backbone->final_layernorm->forward(h));  // [b, L, padded vocab]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, 0, -1, true}; }
  int64_t d_state() const override { return c_.d_state; }
  int64_t d_inner() const override { return c_.d_inner(); }
  bool bidirectional() const override { return false; }
  int64_t bc_features() const override { return c_.qk_state(); }  // B, C taps: the n_qk_heads heads concatenated
  std::vector<std::string> tap_names() const override {
    return {std::string(cab::tap::kX), std::string(cab::tap::kB), std::string(cab::tap::kC),
            std::string(cab::tap::kDelta), std::string(cab::tap::kMixing), std::string(cab::tap::kHiddenIn),
            std::string(cab::tap::kHiddenOut)};
  }

  /// MOHAWK's initialization from Phi: in_proj's x rows ← W_V, B rows ← W_K, C rows ← W_Q (biases too when in_proj
  /// has one), out_proj ← W_O (+ bias), input_layernorm ← norm1, mlp.fc1/fc2 ← the teacher's MLP, and the
  /// embedding, final LayerNorm and LM head (weight and bias). z, A_log rows, z_bias, conv and D keep their init.
  cab::InitReport init_from_teacher(const cab::RoleWeights& teacher, const std::vector<int64_t>& layer_map) override {
    if (static_cast<int64_t>(layer_map.size()) != c_.n_layer)
      throw cab::Error(fmt::format("phi-mamba: the layer map has {} entries for {} student layers", layer_map.size(), c_.n_layer));
    at::NoGradGuard no_grad;
    cab::InitReport report;
    const int64_t di = c_.d_inner(), qk = c_.qk_state();
    auto linear = [&](torch::nn::Linear& dst, const std::string& role, const std::string& what) {
      cab::copy_role(dst->weight, teacher, role + ".weight", what + ".weight", report);
      if (dst->bias.defined()) cab::copy_role(dst->bias, teacher, role + ".bias", what + ".bias", report);
      else if (teacher.count(role + ".bias")) report.skipped.push_back(fmt::format("{}.bias ({} has no bias)", role, what));
    };
    for (int64_t l = 0; l < c_.n_layer; ++l) {
      const std::string t = fmt::format("layers.{}.", layer_map[l]), s = fmt::format("backbone.layers.{}.", l);
      BlockImpl& b = block(l);
      MixerImpl& m = *b.mixer;
      // in_proj rows: [x (d_inner), B (n_qk·N), C (n_qk·N), z (d_inner), A_log (n_v_heads)]
      const std::pair<const char*, std::pair<int64_t, int64_t>> rows[] = {{"v", {0, di}}, {"k", {di, qk}}, {"q", {di + qk, qk}}};
      for (const auto& [role, range] : rows) {
        const char* part = role[0] == 'v' ? "x" : role[0] == 'k' ? "B" : "C";
        at::Tensor w = m.in_proj->weight.narrow(0, range.first, range.second);
        cab::copy_role(w, teacher, t + "attn." + role + ".weight", s + "mixer.in_proj.weight[" + part + "]", report);
        if (m.in_proj->bias.defined()) {
          at::Tensor bias = m.in_proj->bias.narrow(0, range.first, range.second);
          cab::copy_role(bias, teacher, t + "attn." + role + ".bias", s + "mixer.in_proj.bias[" + part + "]", report);
        } else if (teacher.count(t + "attn." + role + ".bias")) {
          report.skipped.push_back(fmt::format("{}attn.{}.bias ({}mixer.in_proj has no bias)", t, role, s));
        }
      }
      linear(m.out_proj, t + "attn.o", s + "mixer.out_proj");
      cab::copy_role(b.input_layernorm->weight, teacher, t + "norm1.weight", s + "input_layernorm.weight", report);
      cab::copy_role(b.input_layernorm->bias, teacher, t + "norm1.bias", s + "input_layernorm.bias", report);
      linear(b.mlp->fc1, t + "mlp.fc1", s + "mlp.fc1");
      linear(b.mlp->fc2, t + "mlp.fc2", s + "mlp.fc2");
    }
    cab::copy_role(backbone->embedding->weight, teacher, "embed.tokens", "backbone.embedding.weight", report);
    cab::copy_role(backbone->final_layernorm->weight, teacher, "norm_f.weight", "backbone.final_layernorm.weight", report);
    cab::copy_role(backbone->final_layernorm->bias, teacher, "norm_f.bias", "backbone.final_layernorm.bias", report);
    linear(lm_head, "head", "lm_head");
    return report;
  }

  void load_checkpoint(const fs::path& path) override {
    const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
    cab::io::LoadOptions options;
    options.rename_prefixes = {{"backbone.embeddings.", "backbone.embedding."}};
    cab::io::load_into(*this, cab::io::SafeTensorsFile(file), options);
  }

  void save_checkpoint(const fs::path& directory) const override {
    fs::create_directories(directory);
    cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(*this), {{"format", "pt"}});
    const nlohmann::json core = {{"d_state", c_.d_state}, {"n_v_heads", c_.n_v_heads}, {"n_qk_heads", c_.n_qk_heads},
                                 {"d_conv", c_.d_conv}, {"conv_bias", c_.conv_bias}, {"expand", c_.expand},
                                 {"chunk_size", c_.chunk_size}, {"activation", c_.activation}, {"bias", c_.bias}};
    const nlohmann::json j = {
        {"LanguageModel", {{"input", {{"vocab_size", c_.padded_vocab()}, {"pad_vocab_size_multiple", c_.pad_vocab_multiple}}}}},
        {"MixerModel", {{"input", {{"d_model", c_.d_model}, {"n_layer", c_.n_layer}, {"lm_head_prenorm", "layer"}}}}},
        {"Block1", {{"n_layers", c_.n_layer}, {"BlockType", kBlockType}, {"block_input", {{"resid_dropout", 0.0}}},
                    {"CoreType", kCoreType}, {"core_input", core}}}};
    std::ofstream(directory / "config.json") << j.dump(2) << "\n";
  }

  at::Tensor forward_layer(int layer, const at::Tensor& hidden, const cab::TapRequest& taps, cab::Taps& out) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "phi-mamba");
    return layer_block<BlockImpl>(backbone->layers, layer, "phi-mamba").forward(hidden, taps, layer, out);
  }

  cab::LayerModules layer_modules(int layer) override { return block_modules<BlockImpl>(backbone->layers, layer, "phi-mamba"); }

  Backbone backbone{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  BlockImpl& block(int64_t i) { return *backbone->layers[i]->as<BlockImpl>(); }
  PhiMambaConfig c_;
};

}  // namespace

void describe_phi_mamba(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("preset", Type::string, "named size (\"custom\": the keys below)").fallback(std::string("custom"))
      .one_of({"custom", "phi-mamba-1.5b"});
  s.add("checkpoint", Type::string, "goombalab/phi-mamba folder (config.json + model.safetensors) to load; sets the sizes")
      .fallback(std::string());
  s.add("d_model", Type::integer, "model width").fallback(std::int64_t{256}).min(1);
  s.add("n_layer", Type::integer, "blocks").fallback(std::int64_t{4}).min(1);
  s.add("d_state", Type::integer, "SSM state size N (the teacher's head width for from-teacher init)")
      .fallback(std::int64_t{64}).min(1).max(256);
  s.add("n_qk_heads", Type::integer, "heads of B and C (the teacher's attention heads)").fallback(std::int64_t{4}).min(1);
  s.add("n_v_heads", Type::integer, "heads of x (dividing d_inner; a multiple of n_qk_heads)").fallback(std::int64_t{4}).min(1);
  s.add("expand", Type::integer, "d_inner = expand · d_model").fallback(std::int64_t{1}).min(1);
  s.add("d_conv", Type::integer, "causal conv width").fallback(std::int64_t{4}).min(1);
  s.add("vocab_size", Type::integer, "vocabulary size (padded to a multiple of 8)").fallback(std::int64_t{51200}).min(1);
  s.add("bias", Type::boolean, "in_proj and out_proj have biases (else the gate has z_bias)").fallback(false);
  s.add("activation", Type::string, "after the conv").fallback(std::string("identity")).one_of({"identity", "silu"});
  s.add("init", Type::string, "default (PyTorch's) or from-teacher (default here; the host then copies the teacher's weights)")
      .fallback(std::string("default")).one_of({"default", "from-teacher"});
}

std::shared_ptr<cab::Component> create_phi_mamba(const cab::config::Section& o) {
  PhiMambaConfig c;
  const std::string checkpoint = o.string("checkpoint");
  if (!checkpoint.empty()) {
    c = read_config(checkpoint);
  } else if (o.string("preset") == "custom") {
    c.d_model = o.integer("d_model"), c.n_layer = o.integer("n_layer"), c.d_state = o.integer("d_state");
    c.n_qk_heads = o.integer("n_qk_heads"), c.n_v_heads = o.integer("n_v_heads"), c.expand = o.integer("expand");
    c.d_conv = o.integer("d_conv"), c.vocab_size = o.integer("vocab_size"), c.bias = o.boolean("bias");
    c.activation = o.string("activation");
    c.validate(o.location().str() + ": " + (o.path().empty() ? std::string("student") : o.path()));
  }  // else phi-mamba-1.5b: the defaults
  auto model = std::make_shared<PhiMamba>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

}  // namespace cab::mamba2
