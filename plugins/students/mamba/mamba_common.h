// The Mamba-1 pieces the `mamba` (causal LM) and `vim` (bidirectional image classifier) students share: the
// configuration with its config.json keys and options, RMSNorm, one scan direction of the mixer (SsmBranch),
// the uni- or bidirectional mixer, the pre-norm residual block, the layer loop with hidden-state taps, the
// per-layer `from-teacher` copy and checkpoint files.
//
// Mixer (one direction): in_proj d → 2·d_inner (x, z); u = SiLU(causal depthwise conv(x)); x_proj(u) → (dt, B, C);
// Δ = softplus(dt_proj(dt)); y = (scan(u, Δ, A = −exp(A_log), B, C) + D·u) ⊙ silu(z); out_proj(y).
// Bidirectional (Vim, bimamba v2): in_proj and out_proj are shared; the backward direction has its own conv1d,
// x_proj, dt_proj, A_log, D and runs on the token-reversed x and z, gating with the reversed z inside its own
// branch as the official code does, so out = out_proj((y_fwd + flip(y_bwd)) / 2) with both y already gated.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <cab/config/section.h>
#include <cab/kernels/selective_scan.h>
#include <cab/plugin/model.h>
#include <cab/plugin/taps.h>

namespace cab::config {
class Schema;
}  // namespace cab::config

namespace cab::io {
struct LoadOptions;
}

namespace cab::mamba {

/// Sizes and options of a Mamba-1 stack (what `mamba` and `vim` have in common).
struct Mamba1Config {
  int64_t d_model = 768, n_layer = 24, d_state = 16, expand = 2, d_conv = 4;
  int64_t dt_rank = 0;  ///< rank of the Δ projection; 0: ceil(d_model / 16) as in Mamba's "auto"
  double norm_eps = 1e-5;
  bool use_bias = false, conv_bias = true, residual_in_fp32 = true;
  bool bidirectional = false;  ///< Vim: a second, backward scan per mixer
  std::string init = "s4d";    ///< A initialization: s4d | identity | from-teacher (A as s4d)
  int64_t d_inner() const { return expand * d_model; }
  int64_t rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
};

/// t in fp32, or fp64 when it is fp64: the precision of the residual stream, norms, A and D (which stay fp32 when
/// the model runs in bf16, as mamba_ssm keeps them).
at::Tensor at_least_fp32(const at::Tensor& t);

/// Reads `dir`/config.json, checking its model_type (absent counts as `model_type`); `hint` says what the folder
/// should hold. Errors name the file.
nlohmann::json read_config_json(const std::filesystem::path& dir, std::string_view model_type, std::string_view hint);
/// The integer `key` of a config.json; a missing or non-integer key is a cab::Error naming `file` and the key.
int64_t json_integer(const nlohmann::json& j, const char* key, const std::filesystem::path& file);
/// Reads the stack's keys (Hugging Face MambaConfig names: hidden_size, num_hidden_layers, state_size required;
/// expand, conv_kernel, time_step_rank, layer_norm_epsilon, use_bias, use_conv_bias, residual_in_fp32 optional).
void read_stack_json(const nlohmann::json& j, const std::filesystem::path& file, Mamba1Config& c);
/// The stack's keys for config.json (the names read_stack_json reads).
nlohmann::json stack_json(const Mamba1Config& c);

/// Writes `module` as `directory`/model.safetensors and `config` as `directory`/config.json.
void save_checkpoint_files(const torch::nn::Module& module, const std::filesystem::path& directory,
                           const nlohmann::json& config);
/// Loads a model.safetensors (or the file `path`) into `module`; every missing, unexpected or misshapen tensor
/// is named in the error.
void load_checkpoint_file(torch::nn::Module& module, const std::filesystem::path& path, const cab::io::LoadOptions& options);

/// Declares `preset` ("custom" or one of `presets`, described by `preset_help`), `checkpoint` (a folder to load,
/// described by `checkpoint_help`), and the stack's options (d_model … dt_rank, init) with the given size defaults.
void describe_stack(cab::config::Schema& s, std::vector<std::string> presets, const std::string& preset_help,
                    const std::string& checkpoint_help, int64_t d_model, int64_t n_layer);
/// Reads the sizes declared by describe_stack (not init, which applies to presets and checkpoints too).
void read_stack_options(const cab::config::Section& o, Mamba1Config& c);

/// Root-mean-square norm with a weight and no bias, computed in at_least_fp32 and returned in the input's dtype.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  /// x: [..., dim] -> [..., dim]
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

/// One scan direction of a mixer: conv1d → SiLU → x_proj → (dt_proj, B, C) → selective scan + D skip → ⊙ silu(z).
/// Its parameters are registered on the owning mixer under the official names with a suffix: conv1d{s},
/// x_proj{s}, dt_proj{s}, A{s}_log, D{s}, where s is "" (Mamba; Vim's forward scan) or "_b" (Vim's backward).
class SsmBranch {
 public:
  SsmBranch() = default;
  SsmBranch(torch::nn::Module& owner, const Mamba1Config& c, const std::string& suffix);

  /// A from init (s4d: A = −[1..N]; identity: A_log = −20, so Ā = exp(ΔA) ≈ I), D = 1, dt_proj weight
  /// U(±rank^−½) and its bias the inverse softplus of Δ log-uniform in [1e-3, 0.1].
  void reset_parameters();

  /// x, z: [b, d_inner, L] in this direction's token order -> [b, d_inner, L] (gated). Puts the requested taps
  /// x, B, C, delta (after softplus), mixing_matrix (D on the diagonal, without the gate) under `layer` and
  /// `direction`, in this direction's token order.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& z, const cab::TapRequest& taps, int layer,
                     cab::Direction direction, cab::Taps& out);

  /// The scan inputs of this branch from x, z ([b, d_inner, L]) in natural token order; `reversed`: the branch
  /// reads the tokens last to first (Vim's backward direction), its causal conv becoming an anti-causal one, and the
  /// inputs stay in natural order for a reverse-time scan. Puts the requested taps of forward() except the scan
  /// output, in this direction's token order.
  cab::kernels::ScanInputs inputs(const at::Tensor& x, const at::Tensor& z, bool reversed, const cab::TapRequest& taps,
                                  int layer, cab::Direction direction, cab::Taps& out);

  /// The rows of x_proj's weight that produce B and C ([N, d_inner] views, for copying into).
  at::Tensor B_rows() const;
  at::Tensor C_rows() const;
  const std::string& suffix() const { return suffix_; }

  torch::nn::Conv1d conv1d{nullptr};
  torch::nn::Linear x_proj{nullptr}, dt_proj{nullptr};
  at::Tensor A_log, D;

 private:
  Mamba1Config c_;
  std::string suffix_;
};

/// The sequence mixer: shared in_proj / out_proj around one (Mamba) or two (Vim) scan directions.
class MixerImpl : public torch::nn::Module {
 public:
  explicit MixerImpl(const Mamba1Config& c);
  /// Branch initialization, then out_proj rescaled by 1/√n_layer (GPT-2's residual scaling, as Mamba and Vim do).
  void reset_parameters();
  /// x: [b, L, d_model] -> [b, L, d_model]
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out);
  /// The directions this mixer scans in: {forward} or {forward, backward}.
  std::vector<SsmBranch*> branches();

  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
  SsmBranch fwd, bwd;  ///< bwd only when bidirectional

 private:
  Mamba1Config c_;
};
TORCH_MODULE(Mixer);

/// h + mixer(RMSNorm(h)), the residual stream in at_least_fp32 when residual_in_fp32.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const Mamba1Config& c);
  /// h: [b, L, d_model] -> [b, L, d_model]
  at::Tensor forward(const at::Tensor& h, const cab::TapRequest& taps, int layer, cab::Taps& out);
  RMSNorm norm{nullptr};
  Mixer mixer{nullptr};

 private:
  bool residual_fp32_;
};
TORCH_MODULE(Block);

/// n_layer Blocks in a ModuleList.
torch::nn::ModuleList make_layers(const Mamba1Config& c);

/// Runs the Blocks of `layers` over h ([b, L, d_model]), putting the requested hidden_in / hidden_out taps.
at::Tensor run_layers(const torch::nn::ModuleList& layers, at::Tensor h, const cab::TapRequest& taps, cab::Taps& out);

/// The per-layer part of Student::init_from_teacher: student layer l from teacher layer layer_map[l]: C rows of
/// x_proj ← attn.q, B rows ← attn.k (every direction), the x half of in_proj ← attn.v, out_proj ← attn.o (biases
/// too when the student has them), norm ← norm1. `prefix` names the layers in the report ("backbone.layers.");
/// `model` names the student in errors (a layer_map whose length is not the number of layers).
void init_layers_from_teacher(const torch::nn::ModuleList& layers, const cab::RoleWeights& teacher,
                              const std::vector<int64_t>& layer_map, const std::string& prefix, std::string_view model,
                              cab::InitReport& report);

/// What the Mamba-1 students have in common: sizes, scan directions and tap names.
class Mamba1Student : public cab::Student {
 public:
  explicit Mamba1Student(const Mamba1Config& c) : stack_(c) {}
  int64_t d_state() const override { return stack_.d_state; }
  int64_t d_inner() const override { return stack_.d_inner(); }
  bool bidirectional() const override { return stack_.bidirectional; }
  /// x, B, C, delta, mixing_matrix, y (per direction), hidden_in, hidden_out.
  std::vector<std::string> tap_names() const override;
  /// One Block on the input to that layer (residual in the stack's precision).
  at::Tensor forward_layer(int layer, const at::Tensor& hidden, const cab::TapRequest& taps, cab::Taps& out) override;
  /// The Block and its Mixer.
  cab::LayerModules layer_modules(int layer) override;

 protected:
  /// The Blocks of the model.
  virtual const torch::nn::ModuleList& layer_list() const = 0;

 private:
  BlockImpl& block(int layer) const;
  Mamba1Config stack_;
};

/// The end of a factory: the model built from `c` with the `init` option, then `checkpoint` loaded when named.
template <class Model, class Config>
std::shared_ptr<cab::Component> build_student(Config c, const cab::config::Section& o, const std::string& checkpoint) {
  c.init = o.string("init");
  auto model = std::make_shared<Model>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

/// The plugin's factories (plugin.cpp lists them): `mamba` in mamba_lm.cpp, `vim` in vim.cpp.
void describe_mamba(cab::config::Schema& s);
std::shared_ptr<cab::Component> create_mamba(const cab::config::Section& o);
void describe_vim(cab::config::Schema& s);
std::shared_ptr<cab::Component> create_vim(const cab::config::Section& o);

}  // namespace cab::mamba
