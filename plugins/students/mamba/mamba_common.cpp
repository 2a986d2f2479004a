// The Mamba-1 pieces shared by the `mamba` and `vim` students (see mamba_common.h).
#include "mamba_common.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/io/json_file.h>
#include <cab/io/safetensors.h>
#include <cab/kernels/conv.h>
#include <cab/kernels/scan.h>
#include <cab/util/error.h>

namespace cab::mamba {

namespace fs = std::filesystem;

at::Tensor at_least_fp32(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? t : t.to(at::kFloat); }

nlohmann::json read_config_json(const fs::path& dir, std::string_view model_type, std::string_view hint) {
  const fs::path file = dir / "config.json";
  nlohmann::json j = cab::io::read_json_file(file, hint);
  const std::string type = j.value("model_type", std::string(model_type));
  if (type != model_type)
    throw cab::Error(fmt::format("'{}': model_type is '{}', expected '{}'", file.string(), type, model_type));
  return j;
}

int64_t json_integer(const nlohmann::json& j, const char* key, const fs::path& file) {
  try {
    return j.at(key).get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}: {}", file.string(), key, e.what()));
  }
}

void read_stack_json(const nlohmann::json& j, const fs::path& file, Mamba1Config& c) {
  c.d_model = json_integer(j, "hidden_size", file);
  c.n_layer = json_integer(j, "num_hidden_layers", file);
  c.d_state = json_integer(j, "state_size", file);
  try {
    c.expand = j.value("expand", int64_t{2});
    c.d_conv = j.value("conv_kernel", int64_t{4});
    c.dt_rank = j.value("time_step_rank", int64_t{0});
    c.norm_eps = j.value("layer_norm_epsilon", 1e-5);
    c.use_bias = j.value("use_bias", false);
    c.conv_bias = j.value("use_conv_bias", true);
    c.residual_in_fp32 = j.value("residual_in_fp32", true);
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
}

nlohmann::json stack_json(const Mamba1Config& c) {
  return {{"hidden_size", c.d_model},     {"num_hidden_layers", c.n_layer},  {"state_size", c.d_state},
          {"expand", c.expand},           {"conv_kernel", c.d_conv},         {"time_step_rank", c.rank()},
          {"intermediate_size", c.d_inner()}, {"layer_norm_epsilon", c.norm_eps}, {"use_bias", c.use_bias},
          {"use_conv_bias", c.conv_bias}, {"residual_in_fp32", c.residual_in_fp32}};
}

void save_checkpoint_files(const torch::nn::Module& module, const fs::path& directory, const nlohmann::json& config) {
  fs::create_directories(directory);
  cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(module), {{"format", "pt"}});
  std::ofstream(directory / "config.json") << config.dump(2) << "\n";
}

void load_checkpoint_file(torch::nn::Module& module, const fs::path& path, const cab::io::LoadOptions& options) {
  const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
  cab::io::load_into(module, cab::io::SafeTensorsFile(file), options);
}

void describe_stack(cab::config::Schema& s, std::vector<std::string> presets, const std::string& preset_help,
                    const std::string& checkpoint_help, int64_t d_model, int64_t n_layer) {
  using cab::config::Type;
  presets.insert(presets.begin(), "custom");
  s.add("preset", Type::string, preset_help).fallback(std::string("custom")).one_of(std::move(presets));
  s.add("checkpoint", Type::string, checkpoint_help + "; sets the sizes").fallback(std::string());
  s.add("d_model", Type::integer, "model width (custom)").fallback(d_model).min(1);
  s.add("n_layer", Type::integer, "blocks (custom)").fallback(n_layer).min(1);
  s.add("d_state", Type::integer, "SSM state size N (custom)").fallback(std::int64_t{16}).min(1).max(256);
  s.add("expand", Type::integer, "d_inner = expand · d_model (custom)").fallback(std::int64_t{2}).min(1);
  s.add("d_conv", Type::integer, "causal conv width (custom)").fallback(std::int64_t{4}).min(1);
  s.add("dt_rank", Type::integer, "rank of the Δ projection (custom; 0: ceil(d_model / 16))").fallback(std::int64_t{0}).min(0);
  s.add("init", Type::string,
        "A initialization: s4d (A = −[1..N]), identity (A_log = −20, Ā ≈ I), or from-teacher (s4d A; the trainer "
        "then copies the teacher's W_Q, W_K, W_V, W_O, norms and embeddings)")
      .fallback(std::string("s4d")).one_of({"s4d", "identity", "from-teacher"});
}

void read_stack_options(const cab::config::Section& o, Mamba1Config& c) {
  c.d_model = o.integer("d_model"), c.n_layer = o.integer("n_layer"), c.d_state = o.integer("d_state");
  c.expand = o.integer("expand"), c.d_conv = o.integer("d_conv"), c.dt_rank = o.integer("dt_rank");
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::ones({dim})); }

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const at::Tensor xf = at_least_fp32(x);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_);
  return weight * normed.to(x.scalar_type());
}

namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}


}  // namespace

SsmBranch::SsmBranch(torch::nn::Module& owner, const Mamba1Config& c, const std::string& suffix)
    : c_(c), suffix_(suffix) {
  const int64_t di = c.d_inner(), n = c.d_state, r = c.rank();
  conv1d = owner.register_module("conv1d" + suffix, torch::nn::Conv1d(torch::nn::Conv1dOptions(di, di, c.d_conv)
                                                                          .groups(di).padding(c.d_conv - 1).bias(c.conv_bias)));
  x_proj = owner.register_module("x_proj" + suffix, linear(di, r + 2 * n, false));
  dt_proj = owner.register_module("dt_proj" + suffix, linear(r, di, true));
  A_log = owner.register_parameter("A" + suffix + "_log", at::zeros({di, n}));
  D = owner.register_parameter("D" + suffix, at::ones({di}));
  reset_parameters();
}

void SsmBranch::reset_parameters() {
  at::NoGradGuard no_grad;
  const int64_t di = c_.d_inner(), n = c_.d_state;
  if (c_.init == "identity") A_log.fill_(-20.0);  // A = −e^−20 ⇒ Ā = exp(ΔA) ≈ I
  else A_log.copy_(at::log(at::arange(1, n + 1, at::kFloat)).repeat({di, 1}));  // A = −[1..N] (S4D-real)
  D.fill_(1.0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(c_.rank()));
  dt_proj->weight.uniform_(-bound, bound);
  // Δ = softplus(bias) log-uniform in [1e-3, 0.1]: bias = inverse-softplus(Δ).
  const at::Tensor dt = at::exp(at::rand({di}) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3)).clamp_min(1e-4);
  dt_proj->bias.copy_(dt + at::log(-at::expm1(-dt)));
}

at::Tensor SsmBranch::B_rows() const { return x_proj->weight.narrow(0, c_.rank(), c_.d_state); }
at::Tensor SsmBranch::C_rows() const { return x_proj->weight.narrow(0, c_.rank() + c_.d_state, c_.d_state); }

cab::kernels::ScanInputs SsmBranch::inputs(const at::Tensor& x, const at::Tensor& z, bool reversed,
                                           const cab::TapRequest& taps, int layer, cab::Direction direction,
                                           cab::Taps& out) {
  const int64_t n = c_.d_state, r = c_.rank();
  // silu(conv1d(x)): the causal conv over the reversed sequence, read in natural order, is the anti-causal conv
  // with the kernel reversed. On CUDA one kernel reads x's view in place and writes u token-major, so x_proj's
  // input below is contiguous.
  const at::Tensor u = cab::kernels::causal_conv1d(x, conv1d->weight, conv1d->bias, reversed, true);  // [b, d_inner, L]
  const at::Tensor proj = x_proj->forward(u.transpose(1, 2));  // [b, L, r + 2N]
  const at::Tensor dt = proj.narrow(2, 0, r), B = proj.narrow(2, r, n), C = proj.narrow(2, r + n, n);
  cab::kernels::ScanInputs in;
  in.u = u;
  in.delta = dt_proj->forward(dt).transpose(1, 2);  // [b, d_inner, L], before softplus
  in.A = -at::exp(at_least_fp32(A_log));
  in.B = B.transpose(1, 2);  // [b, N, L]
  in.C = C.transpose(1, 2);
  in.D_skip = at_least_fp32(D);
  in.z = z;
  in.delta_softplus = true;
  // Taps are built lazily (the mixing matrix is [b, d_inner, L, L], Δ after softplus is a fresh tensor), in this
  // direction's token order: reversed inputs are flipped back along the tokens.
  auto put = [&](std::string_view name, auto&& make) {
    if (taps.wants(name, layer)) out.put({std::string(name), layer, direction}, make());
  };
  auto order = [&](const at::Tensor& tokens_first) { return reversed ? tokens_first.flip(1) : tokens_first; };
  put(cab::tap::kX, [&] { return order(u.transpose(1, 2)); });
  put(cab::tap::kB, [&] { return order(B); });
  put(cab::tap::kC, [&] { return order(C); });
  put(cab::tap::kDelta, [&] { return order(at::softplus(in.delta).transpose(1, 2)); });
  put(cab::tap::kMixing, [&] { return cab::kernels::mixing_matrix(reversed ? cab::kernels::time_flipped(in) : in); });
  return in;
}

at::Tensor SsmBranch::forward(const at::Tensor& x, const at::Tensor& z, const cab::TapRequest& taps, int layer,
                              cab::Direction direction, cab::Taps& out) {
  at::Tensor y = cab::kernels::scan(inputs(x, z, false, taps, layer, direction, out)).y;  // [b, d_inner, L]
  if (taps.wants(cab::tap::kScanOutput, layer))
    out.put({std::string(cab::tap::kScanOutput), layer, direction}, y.transpose(1, 2));
  return y;
}

MixerImpl::MixerImpl(const Mamba1Config& c) : c_(c) {
  in_proj = register_module("in_proj", linear(c.d_model, 2 * c.d_inner(), c.use_bias));
  fwd = SsmBranch(*this, c, "");
  if (c.bidirectional) bwd = SsmBranch(*this, c, "_b");
  out_proj = register_module("out_proj", linear(c.d_inner(), c.d_model, c.use_bias));
  reset_parameters();
}

void MixerImpl::reset_parameters() {
  for (SsmBranch* b : branches()) b->reset_parameters();
  at::NoGradGuard no_grad;
  out_proj->weight.div_(std::sqrt(static_cast<double>(c_.n_layer)));  // default kaiming init, then 1/√n_layer
  for (auto* l : {&in_proj, &out_proj})
    if ((*l)->bias.defined()) (*l)->bias.zero_();
}

std::vector<SsmBranch*> MixerImpl::branches() {
  if (c_.bidirectional) return {&fwd, &bwd};
  return {&fwd};
}

at::Tensor MixerImpl::forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
  const auto xz = in_proj->forward(x).transpose(1, 2).chunk(2, 1);  // x, z: [b, d_inner, L]
  at::Tensor y;
  if (c_.bidirectional && !taps.wants(cab::tap::kScanOutput, layer)) {
    // Both directions in natural token order, the backward one scanned last to first by the fused op: no flipped
    // copies of x, z or y. (A tap of one direction's scan output needs the directions apart: the branch below.)
    const cab::kernels::ScanInputs in_f = fwd.inputs(xz[0], xz[1], false, taps, layer, cab::Direction::forward, out);
    const cab::kernels::ScanInputs in_b = bwd.inputs(xz[0], xz[1], true, taps, layer, cab::Direction::backward, out);
    y = cab::kernels::bidirectional_scan(in_f, in_b, 0.5).y;
  } else {
    y = fwd.forward(xz[0], xz[1], taps, layer, cab::Direction::forward, out);
    if (c_.bidirectional) {
      // Vim (bimamba v2): the backward scan reads the tokens last to first, x and z alike, and its output is
      // flipped back before the two directions are averaged (if_divide_out).
      const at::Tensor y_b = bwd.forward(xz[0].flip(2), xz[1].flip(2), taps, layer, cab::Direction::backward, out);
      y = (y + y_b.flip(2)) / 2;
    }
  }
  return out_proj->forward(y.transpose(1, 2).to(x.scalar_type()));
}

BlockImpl::BlockImpl(const Mamba1Config& c) : residual_fp32_(c.residual_in_fp32) {
  norm = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
  mixer = register_module("mixer", Mixer(c));
}

at::Tensor BlockImpl::forward(const at::Tensor& h, const cab::TapRequest& taps, int layer, cab::Taps& out) {
  const at::Tensor residual = residual_fp32_ ? at_least_fp32(h) : h;
  return residual + mixer->forward(norm->forward(h.to(norm->weight.scalar_type())), taps, layer, out);
}

torch::nn::ModuleList make_layers(const Mamba1Config& c) {
  torch::nn::ModuleList layers;
  for (int64_t i = 0; i < c.n_layer; ++i) layers->push_back(Block(c));
  return layers;
}

at::Tensor run_layers(const torch::nn::ModuleList& layers, at::Tensor h, const cab::TapRequest& taps, cab::Taps& out) {
  for (size_t i = 0; i < layers->size(); ++i) {
    const int layer = static_cast<int>(i);
    if (taps.wants(cab::tap::kHiddenIn, layer)) out.put({std::string(cab::tap::kHiddenIn), layer}, h);
    h = layers->ptr(i)->as<BlockImpl>()->forward(h, taps, layer, out);
    if (taps.wants(cab::tap::kHiddenOut, layer)) out.put({std::string(cab::tap::kHiddenOut), layer}, h);
  }
  return h;
}

void init_layers_from_teacher(const torch::nn::ModuleList& layers, const cab::RoleWeights& teacher,
                              const std::vector<int64_t>& layer_map, const std::string& prefix, std::string_view model,
                              cab::InitReport& report) {
  if (layer_map.size() != layers->size())
    throw cab::Error(fmt::format("{}: init_from_teacher got a layer map of {} entries for {} student layers", model,
                                 layer_map.size(), layers->size()));
  for (size_t l = 0; l < layers->size(); ++l) {
    if (layer_map[l] < 0)
      throw cab::Error(fmt::format("{}: layer map entry {} is {}, not a teacher layer", model, l, layer_map[l]));
    auto& block = *layers->ptr(l)->as<BlockImpl>();
    auto& mixer = *block.mixer;
    const std::string t = fmt::format("layers.{}.", layer_map[l]), s = fmt::format("{}{}.", prefix, l);
    const int64_t di = mixer.in_proj->weight.size(0) / 2;
    for (const SsmBranch* b : mixer.branches()) {
      at::Tensor C = b->C_rows(), B = b->B_rows();
      const std::string x_proj = s + "mixer.x_proj" + b->suffix() + ".weight";
      cab::copy_role(C, teacher, t + "attn.q.weight", x_proj + "[C rows]", report);
      cab::copy_role(B, teacher, t + "attn.k.weight", x_proj + "[B rows]", report);
    }
    at::Tensor x_weight = mixer.in_proj->weight.narrow(0, 0, di);
    cab::copy_role(x_weight, teacher, t + "attn.v.weight", s + "mixer.in_proj.weight[x rows]", report);
    if (mixer.in_proj->bias.defined()) {
      at::Tensor x_bias = mixer.in_proj->bias.narrow(0, 0, di);
      cab::copy_role(x_bias, teacher, t + "attn.v.bias", s + "mixer.in_proj.bias[x rows]", report);
    }
    cab::copy_role(mixer.out_proj->weight, teacher, t + "attn.o.weight", s + "mixer.out_proj.weight", report);
    if (mixer.out_proj->bias.defined())
      cab::copy_role(mixer.out_proj->bias, teacher, t + "attn.o.bias", s + "mixer.out_proj.bias", report);
    cab::copy_role(block.norm->weight, teacher, t + "norm1.weight", s + "norm.weight", report);
  }
}

std::vector<std::string> Mamba1Student::tap_names() const {
  return {std::string(cab::tap::kX),        std::string(cab::tap::kB),        std::string(cab::tap::kC),
          std::string(cab::tap::kDelta),    std::string(cab::tap::kMixing),   std::string(cab::tap::kScanOutput),
          std::string(cab::tap::kHiddenIn), std::string(cab::tap::kHiddenOut)};
}

BlockImpl& Mamba1Student::block(int layer) const {
  const torch::nn::ModuleList& list = layer_list();
  if (layer < 0 || static_cast<size_t>(layer) >= list->size())
    throw cab::Error(fmt::format("{}: layer {} out of range [0, {})", name(), layer, list->size()));
  return *list->ptr(static_cast<size_t>(layer))->as<BlockImpl>();
}

at::Tensor Mamba1Student::forward_layer(int layer, const at::Tensor& hidden, const cab::TapRequest& taps, cab::Taps& out) {
  taps.check(tap_names(), static_cast<int>(stack_.n_layer), name());
  return block(layer).forward(hidden, taps, layer, out);
}

cab::LayerModules Mamba1Student::layer_modules(int layer) {
  BlockImpl& b = block(layer);
  return {layer_list()->ptr(static_cast<size_t>(layer)), b.mixer.ptr()};
}

}  // namespace cab::mamba
