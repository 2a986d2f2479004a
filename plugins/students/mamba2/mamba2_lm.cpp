// Mamba-2 causal language model (the `mamba2` student): Hugging Face Mamba2ForCausalLM parameter names,
// safetensors checkpoints with config.json and numerics; taps (x after conv + SiLU, B, C, Δ per head, the per-head
// mixing matrix, hidden states); `s4d` / `identity` A initialization and initialization from a teacher.
//
// Block: h = h + mixer(RMSNorm(h)), residual in fp32. Mixer: in_proj d → [z (d_inner), xBC (d_inner + 2·G·N),
// dt (H)]; causal depthwise conv over xBC + SiLU; split x (H heads of P = head_dim channels), B, C (G groups of N);
// Δ = clamp(softplus(dt + dt_bias), time_step_limit); A = −exp(A_log) per head; y = SSM(x, Δ, A, B, C) + D·x per
// head (head_scan.h: the recurrent form of SSD); y = RMSNorm(y ⊙ silu(z)) normalized per group of d_inner / G
// channels, like mamba_ssm's RMSNormGated(norm_before_gate=False) (transformers normalizes over all of d_inner:
// the same for G = 1, the only value its checkpoints use); out_proj. Final RMSNorm, LM head (tied or not).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>

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

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Mamba2Config {
  int64_t d_model = 768, n_layer = 24, d_state = 128, expand = 2, head_dim = 64, n_groups = 1, d_conv = 4;
  int64_t vocab_size = 50288, chunk_size = 256;  // chunk_size: the SSD kernels' chunk, kept for config.json
  double norm_eps = 1e-5, dt_min = 1e-3, dt_max = 0.1, dt_floor = 1e-4;
  double dt_limit_min = 0.0, dt_limit_max = kInf;  // time_step_limit: Δ is clamped to it
  bool tie_embeddings = true, use_bias = false, conv_bias = true, residual_in_fp32 = true;
  std::string init = "s4d";
  int64_t d_inner() const { return expand * d_model; }
  int64_t heads() const { return d_inner() / head_dim; }
  int64_t group_state() const { return n_groups * d_state; }  // G·N: the width of B and of C
  int64_t conv_dim() const { return d_inner() + 2 * group_state(); }
  bool clamps_dt() const { return dt_limit_min != 0.0 || dt_limit_max != kInf; }

  /// Throws cab::ConfigError starting with `where` (a config file or an options table) for sizes that do not fit.
  void validate(const std::string& where) const {
    if (d_inner() % head_dim != 0)
      throw cab::ConfigError(fmt::format("{}: d_inner = expand · d_model = {} is not divisible by head_dim {}", where,
                                         d_inner(), head_dim));
    if (heads() % n_groups != 0)
      throw cab::ConfigError(fmt::format("{}: the {} heads (d_inner {} / head_dim {}) are not divisible by n_groups {}",
                                         where, heads(), d_inner(), head_dim, n_groups));
    if (d_state > 256) throw cab::ConfigError(fmt::format("{}: d_state {} is above the scan's limit of 256", where, d_state));
  }
};

/// RMSNorm in (at least) fp32. A copy of the ten lines in plugins/students/mamba/mamba_lm.cpp: plugins are separate
/// libraries and share no model code.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor xf = x.to(accumulation_type(x));
    const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_);
    return weight * normed.to(x.scalar_type());
  }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

/// y ⊙ silu(z), then RMSNorm over groups of dim / groups channels; in fp32 like transformers' MambaRMSNormGated,
/// whose result stays fp32 until out_proj.
class GatedRMSNormImpl : public torch::nn::Module {
 public:
  GatedRMSNormImpl(int64_t dim, int64_t groups, double eps) : groups_(groups), eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
  }
  /// y, z: [b, L, dim] -> [b, L, dim] in the accumulation dtype
  at::Tensor forward(const at::Tensor& y, const at::Tensor& z) {
    const auto acc = accumulation_type(y);
    const at::Tensor gated = y.to(acc) * at::silu(z.to(acc));
    const at::Tensor g = gated.reshape({y.size(0), y.size(1), groups_, y.size(2) / groups_});  // [b, L, G, dim / G]
    const at::Tensor normed = (g * at::rsqrt(g.pow(2).mean(-1, true) + eps_)).reshape(y.sizes());
    return weight.to(acc) * normed;
  }
  at::Tensor weight;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GatedRMSNorm);

class MixerImpl : public torch::nn::Module {
 public:
  explicit MixerImpl(const Mamba2Config& c) : c_(c) {
    const int64_t di = c.d_inner(), h = c.heads(), cd = c.conv_dim();
    in_proj = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, di + cd + h).bias(c.use_bias)));
    conv1d = register_module("conv1d", torch::nn::Conv1d(torch::nn::Conv1dOptions(cd, cd, c.d_conv)
                                                             .groups(cd).padding(c.d_conv - 1).bias(c.conv_bias)));
    dt_bias = register_parameter("dt_bias", at::zeros({h}));
    A_log = register_parameter("A_log", at::zeros({h}));
    D = register_parameter("D", at::ones({h}));
    norm = register_module("norm", GatedRMSNorm(di, c.n_groups, c.norm_eps));
    out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(di, c.d_model).bias(c.use_bias)));
    reset_parameters();
  }

  void reset_parameters() {
    at::NoGradGuard no_grad;
    const int64_t h = c_.heads();
    // A is a scalar per head; the S4D-real analog is transformers' A = −[1..H] (mamba_ssm draws U[1, 16]).
    if (c_.init == "identity") A_log.fill_(-20.0);  // A = −e^−20 ⇒ exp(ΔA) ≈ 1
    else A_log.copy_(at::log(at::arange(1, h + 1, at::kFloat)));
    D.fill_(1.0);
    // Δ = softplus(dt_bias) log-uniform in [dt_min, dt_max]: dt_bias = inverse-softplus(Δ).
    const at::Tensor dt = at::exp(at::rand({h}) * (std::log(c_.dt_max) - std::log(c_.dt_min)) + std::log(c_.dt_min))
                              .clamp_min(c_.dt_floor);
    dt_bias.copy_(dt + at::log(-at::expm1(-dt)));
  }

  /// x: [b, L, d_model] -> [b, L, d_model]
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const int64_t L = x.size(1), di = c_.d_inner(), gn = c_.group_state(), cd = c_.conv_dim();
    const auto acc = accumulation_type(x);
    const at::Tensor proj = in_proj->forward(x);                                   // [b, L, d_inner + conv_dim + H]
    const at::Tensor z = proj.narrow(2, 0, di);
    const at::Tensor xBC = at::silu(conv1d->forward(proj.narrow(2, di, cd).transpose(1, 2)).narrow(2, 0, L))
                               .transpose(1, 2);                                   // [b, L, conv_dim]
    const at::Tensor u = xBC.narrow(2, 0, di), B = xBC.narrow(2, di, gn), C = xBC.narrow(2, di + gn, gn);
    at::Tensor delta = at::softplus(proj.narrow(2, di + cd, c_.heads()).to(acc) + dt_bias.to(acc));  // [b, L, H]
    if (c_.clamps_dt()) delta = delta.clamp(c_.dt_limit_min, c_.dt_limit_max);
    const HeadScanInputs ssm{u, delta, -at::exp(A_log.to(acc)), B, C, c_.n_groups};
    const at::Tensor D_heads = D.to(acc);                                          // [H]
    const at::Tensor y = head_scan(ssm) + u.to(acc) * D_heads.repeat_interleave(c_.head_dim);  // [b, L, d_inner]

    auto put = [&](std::string_view name, const at::Tensor& t) { out.put({std::string(name), layer}, t); };
    if (taps.wants(cab::tap::kX, layer)) put(cab::tap::kX, u);
    if (taps.wants(cab::tap::kB, layer)) put(cab::tap::kB, B);
    if (taps.wants(cab::tap::kC, layer)) put(cab::tap::kC, C);
    if (taps.wants(cab::tap::kDelta, layer)) put(cab::tap::kDelta, delta);
    if (taps.wants(cab::tap::kMixing, layer)) {
      const at::Tensor skip = D_heads.view({1, -1, 1}).expand({x.size(0), c_.heads(), L});
      put(cab::tap::kMixing, head_mixing_matrix(ssm) + at::diag_embed(skip));     // [b, H, L, L], y_h = M_h · x_h
    }
    return out_proj->forward(norm->forward(y, z).to(x.scalar_type()));
  }

  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
  torch::nn::Conv1d conv1d{nullptr};
  GatedRMSNorm norm{nullptr};
  at::Tensor dt_bias, A_log, D;

 private:
  Mamba2Config c_;
};
TORCH_MODULE(Mixer);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const Mamba2Config& c) : residual_fp32_(c.residual_in_fp32) {
    norm = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
    mixer = register_module("mixer", Mixer(c));
  }
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const at::Tensor residual = residual_fp32_ ? x.to(accumulation_type(x)) : x;
    return residual + mixer->forward(norm->forward(x.to(norm->weight.scalar_type())), taps, layer, out);
  }
  RMSNorm norm{nullptr};
  Mixer mixer{nullptr};

 private:
  bool residual_fp32_;
};
TORCH_MODULE(Block);

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const Mamba2Config& c) {
    embeddings = register_module("embeddings", torch::nn::Embedding(c.vocab_size, c.d_model));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) layers->push_back(Block(c));
    norm_f = register_module("norm_f", RMSNorm(c.d_model, c.norm_eps));
  }
  torch::nn::Embedding embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm_f{nullptr};
};
TORCH_MODULE(Backbone);

/// A float of config.json: a number, or transformers' encoding of non-finite values ({"__float__": "Infinity"}).
double json_float(const nlohmann::json& v, const fs::path& file, const std::string& key) {
  if (v.is_number()) return v.get<double>();
  const nlohmann::json& s = v.is_object() && v.contains("__float__") ? v.at("__float__") : v;
  if (s.is_string()) {
    const std::string text = s.get<std::string>();
    if (text == "Infinity" || text == "inf") return kInf;
    if (text == "-Infinity" || text == "-inf") return -kInf;
  }
  throw cab::Error(fmt::format("'{}': {}: expected a number, got {}", file.string(), key, v.dump()));
}

/// The inverse of json_float: transformers 5's encoding for ±inf, a plain number otherwise.
nlohmann::json to_json_float(double v) {
  if (!std::isinf(v)) return v;
  return {{"__float__", v > 0 ? "Infinity" : "-Infinity"}};
}

Mamba2Config read_hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  const nlohmann::json j = cab::io::read_json_file(file, "a Mamba-2 checkpoint is a folder with config.json and model.safetensors");
  if (j.value("model_type", "mamba2") != "mamba2")
    throw cab::Error(fmt::format("'{}': model_type is '{}', expected 'mamba2'", file.string(), j.value("model_type", "")));
  Mamba2Config c;
  int64_t heads = 0;
  try {
    c.d_model = j.at("hidden_size").get<int64_t>();
    c.n_layer = j.at("num_hidden_layers").get<int64_t>();
    c.d_state = j.at("state_size").get<int64_t>();
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.head_dim = j.at("head_dim").get<int64_t>();
    c.expand = j.value("expand", int64_t{2});
    heads = j.value("num_heads", c.d_inner() / c.head_dim);
    c.n_groups = j.value("n_groups", int64_t{1});
    c.d_conv = j.value("conv_kernel", int64_t{4});
    c.chunk_size = j.value("chunk_size", int64_t{256});
    c.norm_eps = j.value("layer_norm_epsilon", 1e-5);
    c.dt_min = j.value("time_step_min", 1e-3);
    c.dt_max = j.value("time_step_max", 0.1);
    c.dt_floor = j.value("time_step_floor", 1e-4);
    c.tie_embeddings = j.value("tie_word_embeddings", true);
    c.use_bias = j.value("use_bias", false);
    c.conv_bias = j.value("use_conv_bias", true);
    c.residual_in_fp32 = j.value("residual_in_fp32", true);
    const std::string act = j.value("hidden_act", std::string("silu"));
    if (act != "silu" && act != "swish")
      throw cab::Error(fmt::format("'{}': hidden_act is '{}'; the mamba2 student supports 'silu'", file.string(), act));
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  if (j.contains("time_step_limit")) {
    const nlohmann::json& limit = j.at("time_step_limit");
    if (!limit.is_array() || limit.size() != 2)
      throw cab::Error(fmt::format("'{}': time_step_limit must be [min, max], got {}", file.string(), limit.dump()));
    c.dt_limit_min = json_float(limit[0], file, "time_step_limit[0]");
    c.dt_limit_max = json_float(limit[1], file, "time_step_limit[1]");
  }
  c.validate(fmt::format("'{}'", file.string()));
  if (heads != c.heads())
    throw cab::ConfigError(fmt::format("'{}': num_heads {} · head_dim {} must equal expand · hidden_size = {}",
                                       file.string(), heads, c.head_dim, c.d_inner()));
  return c;
}

class Mamba2LM final : public cab::Student {
 public:
  explicit Mamba2LM(const Mamba2Config& c) : c_(c) {
    backbone = register_module("backbone", Backbone(c));
    if (!c.tie_embeddings)
      lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.vocab_size).bias(false)));
  }

  cab::ModelOutput forward(const at::Tensor& ids, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "mamba2");
    cab::ModelOutput out;
    at::Tensor h = backbone->embeddings->forward(ids);  // [b, L, d_model]
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const int layer = static_cast<int>(i);
      if (taps.wants(cab::tap::kHiddenIn, layer)) out.taps.put({std::string(cab::tap::kHiddenIn), layer}, h);
      h = block(i).forward(h, taps, layer, out.taps);
      if (taps.wants(cab::tap::kHiddenOut, layer)) out.taps.put({std::string(cab::tap::kHiddenOut), layer}, h);
    }
    h = backbone->norm_f->forward(h.to(backbone->norm_f->weight.scalar_type()));
    out.logits = lm_head ? lm_head->forward(h) : at::linear(h, backbone->embeddings->weight);  // [b, L, vocab]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, 0, -1, true}; }
  int64_t d_state() const override { return c_.d_state; }
  int64_t d_inner() const override { return c_.d_inner(); }
  bool bidirectional() const override { return false; }
  int64_t bc_features() const override { return c_.group_state(); }  // B, C taps: the G groups concatenated
  std::vector<std::string> tap_names() const override {
    return {std::string(cab::tap::kX), std::string(cab::tap::kB), std::string(cab::tap::kC),
            std::string(cab::tap::kDelta), std::string(cab::tap::kMixing), std::string(cab::tap::kHiddenIn),
            std::string(cab::tap::kHiddenOut)};
  }

  /// Attention-weight reuse: in_proj's x rows ← W_V, B rows ← W_K, C rows ← W_Q (and their biases when in_proj
  /// has one), out_proj ← W_O; the pre-mixer norm's weight ← norm1, embeddings, norm_f and an untied head.
  /// Differently sized tensors get the leading block (copy_role); z, dt, conv, A, D keep their initialization.
  cab::InitReport init_from_teacher(const cab::RoleWeights& teacher, const std::vector<int64_t>& layer_map) override {
    if (static_cast<int64_t>(layer_map.size()) != c_.n_layer)
      throw cab::Error(fmt::format("mamba2: the layer map has {} entries for {} student layers", layer_map.size(), c_.n_layer));
    at::NoGradGuard no_grad;
    cab::InitReport report;
    const int64_t di = c_.d_inner(), gn = c_.group_state();
    for (int64_t l = 0; l < c_.n_layer; ++l) {
      const std::string t = fmt::format("layers.{}.", layer_map[l]), s = fmt::format("backbone.layers.{}.", l);
      MixerImpl& m = *block(l).mixer;
      // in_proj rows: [z (d_inner), x (d_inner), B (G·N), C (G·N), dt (H)]
      const std::pair<const char*, std::pair<int64_t, int64_t>> rows[] = {
          {"v", {di, di}}, {"k", {2 * di, gn}}, {"q", {2 * di + gn, gn}}};
      for (const auto& [role, range] : rows) {
        const char* part = role[0] == 'v' ? "x" : role[0] == 'k' ? "B" : "C";
        at::Tensor w = m.in_proj->weight.narrow(0, range.first, range.second);
        cab::copy_role(w, teacher, t + "attn." + role + ".weight", s + "mixer.in_proj.weight[" + part + "]", report);
        if (m.in_proj->bias.defined()) {
          at::Tensor b = m.in_proj->bias.narrow(0, range.first, range.second);
          cab::copy_role(b, teacher, t + "attn." + role + ".bias", s + "mixer.in_proj.bias[" + part + "]", report);
        } else if (teacher.count(t + "attn." + role + ".bias")) {
          report.skipped.push_back(fmt::format("{}attn.{}.bias ({}mixer.in_proj has no bias)", t, role, s));
        }
      }
      cab::copy_role(m.out_proj->weight, teacher, t + "attn.o.weight", s + "mixer.out_proj.weight", report);
      if (m.out_proj->bias.defined())
        cab::copy_role(m.out_proj->bias, teacher, t + "attn.o.bias", s + "mixer.out_proj.bias", report);
      else if (teacher.count(t + "attn.o.bias"))
        report.skipped.push_back(fmt::format("{}attn.o.bias ({}mixer.out_proj has no bias)", t, s));
      cab::copy_role(block(l).norm->weight, teacher, t + "norm1.weight", s + "norm.weight", report);
    }
    cab::copy_role(backbone->embeddings->weight, teacher, "embed.tokens", "backbone.embeddings.weight", report);
    cab::copy_role(backbone->norm_f->weight, teacher, "norm_f.weight", "backbone.norm_f.weight", report);
    if (lm_head) cab::copy_role(lm_head->weight, teacher, "head.weight", "lm_head.weight", report);
    return report;
  }

  void load_checkpoint(const fs::path& path) override {
    const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
    cab::io::LoadOptions options;
    options.rename_prefixes = {{"backbone.embedding.", "backbone.embeddings."}};  // mamba_ssm's name
    if (c_.tie_embeddings) options.ignore = {"lm_head.weight"};  // tied: the embedding is the head
    cab::io::load_into(*this, cab::io::SafeTensorsFile(file), options);
  }

  void save_checkpoint(const fs::path& directory) const override {
    fs::create_directories(directory);
    cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(*this), {{"format", "pt"}});
    nlohmann::json j = {{"model_type", "mamba2"}, {"architectures", {"Mamba2ForCausalLM"}},
                        {"hidden_size", c_.d_model}, {"num_hidden_layers", c_.n_layer},
                        {"state_size", c_.d_state}, {"vocab_size", c_.vocab_size},
                        {"expand", c_.expand}, {"head_dim", c_.head_dim}, {"num_heads", c_.heads()},
                        {"n_groups", c_.n_groups}, {"conv_kernel", c_.d_conv}, {"chunk_size", c_.chunk_size},
                        {"hidden_act", "silu"}, {"layer_norm_epsilon", c_.norm_eps}, {"rms_norm", true},
                        {"time_step_min", c_.dt_min}, {"time_step_max", c_.dt_max}, {"time_step_floor", c_.dt_floor},
                        {"tie_word_embeddings", c_.tie_embeddings}, {"use_bias", c_.use_bias},
                        {"use_conv_bias", c_.conv_bias}, {"residual_in_fp32", c_.residual_in_fp32}};
    // transformers' default is (0, inf); writing it only when it differs keeps the file readable by every version.
    if (c_.clamps_dt()) j["time_step_limit"] = {to_json_float(c_.dt_limit_min), to_json_float(c_.dt_limit_max)};
    std::ofstream(directory / "config.json") << j.dump(2) << "\n";
  }

  at::Tensor forward_layer(int layer, const at::Tensor& hidden, const cab::TapRequest& taps, cab::Taps& out) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "mamba2");
    return layer_block<BlockImpl>(backbone->layers, layer, "mamba2").forward(hidden, taps, layer, out);
  }

  cab::LayerModules layer_modules(int layer) override { return block_modules<BlockImpl>(backbone->layers, layer, "mamba2"); }

  Backbone backbone{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  BlockImpl& block(int64_t i) { return *backbone->layers[i]->as<BlockImpl>(); }
  Mamba2Config c_;
};

struct Preset {
  const char* name;
  int64_t d_model, n_layer;
};
// state-spaces/mamba2-*: d_state 128, head_dim 64, expand 2, one group, vocabulary 50277 padded to 50288, tied head.
constexpr Preset kPresets[] = {{"mamba2-130m", 768, 24}, {"mamba2-370m", 1024, 48}, {"mamba2-780m", 1536, 48},
                               {"mamba2-1.3b", 2048, 48}, {"mamba2-2.7b", 2560, 64}};

}  // namespace

void describe_mamba2(cab::config::Schema& s) {
  using cab::config::Type;
  std::vector<std::string> presets{"custom"};
  for (const Preset& p : kPresets) presets.emplace_back(p.name);
  s.add("preset", Type::string, "named size (\"custom\": the keys below)").fallback(std::string("custom")).one_of(presets);
  s.add("checkpoint", Type::string, "Hugging Face folder (config.json + model.safetensors) to load; sets the sizes")
      .fallback(std::string());
  s.add("d_model", Type::integer, "model width").fallback(std::int64_t{256}).min(1);
  s.add("n_layer", Type::integer, "blocks").fallback(std::int64_t{4}).min(1);
  s.add("d_state", Type::integer, "SSM state size N").fallback(std::int64_t{64}).min(1).max(256);
  s.add("expand", Type::integer, "d_inner = expand · d_model").fallback(std::int64_t{2}).min(1);
  s.add("head_dim", Type::integer, "channels per head P (heads H = d_inner / P)").fallback(std::int64_t{32}).min(1);
  s.add("n_groups", Type::integer, "groups G of B and C (dividing the heads)").fallback(std::int64_t{1}).min(1);
  s.add("d_conv", Type::integer, "causal conv width").fallback(std::int64_t{4}).min(1);
  s.add("vocab_size", Type::integer, "vocabulary size").fallback(std::int64_t{50288}).min(1);
  s.add("tie_embeddings", Type::boolean, "LM head shares the embedding matrix").fallback(true);
  s.add("init", Type::string,
        "A initialization: s4d (A = −[1..H] per head), identity (A_log = −20, Ā ≈ I) or from-teacher (s4d here; the "
        "host then copies the teacher's weights)")
      .fallback(std::string("s4d")).one_of({"s4d", "identity", "from-teacher"});
}

std::shared_ptr<cab::Component> create_mamba2(const cab::config::Section& o) {
  Mamba2Config c;
  const std::string checkpoint = o.string("checkpoint"), preset = o.string("preset");
  if (!checkpoint.empty()) {
    c = read_hf_config(checkpoint);
  } else if (preset != "custom") {
    for (const Preset& p : kPresets)
      if (preset == p.name) c.d_model = p.d_model, c.n_layer = p.n_layer;
  } else {
    c.d_model = o.integer("d_model"), c.n_layer = o.integer("n_layer"), c.d_state = o.integer("d_state");
    c.expand = o.integer("expand"), c.head_dim = o.integer("head_dim"), c.n_groups = o.integer("n_groups");
    c.d_conv = o.integer("d_conv"), c.vocab_size = o.integer("vocab_size"), c.tie_embeddings = o.boolean("tie_embeddings");
    c.validate(o.location().str() + ": " + (o.path().empty() ? std::string("student") : o.path()));
  }
  c.init = o.string("init");
  auto model = std::make_shared<Mamba2LM>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

}  // namespace cab::mamba2
