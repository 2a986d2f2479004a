// Mamba-1 causal language model (the `mamba` student): Hugging Face parameter names, safetensors checkpoints
// with config.json, taps (x after conv + SiLU, B, C, Δ, hidden states), `s4d` / `identity` A initialization.
//
// Block: h = x + mixer(RMSNorm(x)); mixer: in_proj d → 2·d_inner (x, z), causal depthwise conv + SiLU,
// x_proj → (dt, B, C), Δ = softplus(dt_proj(dt)), y = scan(x, Δ, A = −exp(A_log), B, C) + D·x, y ⊙ silu(z),
// out_proj. Final RMSNorm, then the LM head (tied to the embeddings by default).
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

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/io/json_file.h>
#include <cab/io/safetensors.h>
#include <cab/kernels/scan.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/model.h>
#include <cab/util/error.h>

namespace {

namespace fs = std::filesystem;

struct MambaConfig {
  int64_t d_model = 768, n_layer = 24, d_state = 16, expand = 2, d_conv = 4, dt_rank = 0, vocab_size = 50280;
  double norm_eps = 1e-5;
  bool tie_embeddings = true, use_bias = false, conv_bias = true, residual_in_fp32 = true;
  std::string init = "s4d";
  int64_t d_inner() const { return expand * d_model; }
  int64_t rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor xf = x.to(at::kFloat);
    const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_);
    return weight * normed.to(x.scalar_type());
  }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class MixerImpl : public torch::nn::Module {
 public:
  explicit MixerImpl(const MambaConfig& c) : c_(c) {
    const int64_t di = c.d_inner(), n = c.d_state, r = c.rank();
    in_proj = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, 2 * di).bias(c.use_bias)));
    conv1d = register_module("conv1d", torch::nn::Conv1d(torch::nn::Conv1dOptions(di, di, c.d_conv)
                                                             .groups(di).padding(c.d_conv - 1).bias(c.conv_bias)));
    x_proj = register_module("x_proj", torch::nn::Linear(torch::nn::LinearOptions(di, r + 2 * n).bias(false)));
    dt_proj = register_module("dt_proj", torch::nn::Linear(torch::nn::LinearOptions(r, di).bias(true)));
    A_log = register_parameter("A_log", at::zeros({di, n}));
    D = register_parameter("D", at::ones({di}));
    out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(di, c.d_model).bias(c.use_bias)));
    reset_parameters();
  }

  void reset_parameters() {
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

  /// x: [b, L, d_model] -> [b, L, d_model]
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const int64_t L = x.size(1), n = c_.d_state, r = c_.rank();
    const at::Tensor xz = in_proj->forward(x).transpose(1, 2);            // [b, 2·d_inner, L]
    const auto parts = xz.chunk(2, 1);
    const at::Tensor u = at::silu(conv1d->forward(parts[0]).narrow(2, 0, L));  // [b, d_inner, L]
    const at::Tensor proj = x_proj->forward(u.transpose(1, 2));            // [b, L, r + 2N]
    const at::Tensor dt = proj.narrow(2, 0, r), B = proj.narrow(2, r, n), C = proj.narrow(2, r + n, n);
    const at::Tensor delta = dt_proj->forward(dt).transpose(1, 2);         // [b, d_inner, L], before softplus
    cab::kernels::ScanInputs in;
    in.u = u;
    in.delta = delta;
    in.A = -at::exp(A_log.to(at::kFloat));
    in.B = B.transpose(1, 2);                                              // [b, N, L]
    in.C = C.transpose(1, 2);
    in.D_skip = D.to(at::kFloat);
    in.z = parts[1];
    in.delta_softplus = true;
    const at::Tensor y = cab::kernels::scan(in).y;                         // [b, d_inner, L]
    auto put = [&](std::string_view name, const at::Tensor& t) {
      if (taps.wants(name, layer)) out.put({std::string(name), layer}, t);
    };
    put(cab::tap::kX, u.transpose(1, 2));
    put(cab::tap::kB, B);
    put(cab::tap::kC, C);
    if (taps.wants(cab::tap::kDelta, layer)) put(cab::tap::kDelta, at::softplus(delta).transpose(1, 2));
    return out_proj->forward(y.transpose(1, 2).to(x.scalar_type()));
  }

  torch::nn::Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  torch::nn::Conv1d conv1d{nullptr};
  at::Tensor A_log, D;

 private:
  MambaConfig c_;
};
TORCH_MODULE(Mixer);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const MambaConfig& c) : residual_fp32_(c.residual_in_fp32) {
    norm = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
    mixer = register_module("mixer", Mixer(c));
  }
  at::Tensor forward(const at::Tensor& x, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const at::Tensor residual = residual_fp32_ ? x.to(at::kFloat) : x;
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
  explicit BackboneImpl(const MambaConfig& c) {
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

MambaConfig read_hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  const nlohmann::json j = cab::io::read_json_file(file, "a Mamba checkpoint is a folder with config.json and model.safetensors");
  if (j.value("model_type", "mamba") != "mamba")
    throw cab::Error(fmt::format("'{}': model_type is '{}', expected 'mamba'", file.string(), j.value("model_type", "")));
  MambaConfig c;
  try {
    c.d_model = j.at("hidden_size").get<int64_t>();
    c.n_layer = j.at("num_hidden_layers").get<int64_t>();
    c.d_state = j.at("state_size").get<int64_t>();
    c.vocab_size = j.at("vocab_size").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  c.expand = j.value("expand", int64_t{2});
  c.d_conv = j.value("conv_kernel", int64_t{4});
  c.dt_rank = j.value("time_step_rank", int64_t{0});
  c.norm_eps = j.value("layer_norm_epsilon", 1e-5);
  c.tie_embeddings = j.value("tie_word_embeddings", true);
  c.use_bias = j.value("use_bias", false);
  c.conv_bias = j.value("use_conv_bias", true);
  c.residual_in_fp32 = j.value("residual_in_fp32", true);
  return c;
}

class MambaLM final : public cab::Student {
 public:
  explicit MambaLM(const MambaConfig& c) : c_(c) {
    backbone = register_module("backbone", Backbone(c));
    if (!c.tie_embeddings)
      lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.vocab_size).bias(false)));
  }

  cab::ModelOutput forward(const at::Tensor& ids, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "mamba");
    cab::ModelOutput out;
    at::Tensor h = backbone->embeddings->forward(ids);  // [b, L, d_model]
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const int layer = static_cast<int>(i);
      if (taps.wants(cab::tap::kHiddenIn, layer)) out.taps.put({std::string(cab::tap::kHiddenIn), layer}, h);
      h = backbone->layers[i]->as<BlockImpl>()->forward(h, taps, layer, out.taps);
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
  std::vector<std::string> tap_names() const override {
    return {std::string(cab::tap::kX), std::string(cab::tap::kB), std::string(cab::tap::kC),
            std::string(cab::tap::kDelta), std::string(cab::tap::kHiddenIn), std::string(cab::tap::kHiddenOut)};
  }

  void load_checkpoint(const fs::path& path) override {
    const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
    cab::io::LoadOptions options;
    options.rename_prefixes = {{"backbone.embedding.", "backbone.embeddings."}};
    if (c_.tie_embeddings) options.ignore = {"lm_head.weight"};  // tied: the embedding is the head
    cab::io::load_into(*this, cab::io::SafeTensorsFile(file), options);
  }

  void save_checkpoint(const fs::path& directory) const override {
    fs::create_directories(directory);
    cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(*this), {{"format", "pt"}});
    const nlohmann::json j = {{"model_type", "mamba"}, {"architectures", {"MambaForCausalLM"}},
                              {"hidden_size", c_.d_model}, {"num_hidden_layers", c_.n_layer},
                              {"state_size", c_.d_state}, {"vocab_size", c_.vocab_size},
                              {"expand", c_.expand}, {"conv_kernel", c_.d_conv},
                              {"time_step_rank", c_.rank()}, {"intermediate_size", c_.d_inner()},
                              {"layer_norm_epsilon", c_.norm_eps}, {"tie_word_embeddings", c_.tie_embeddings},
                              {"use_bias", c_.use_bias}, {"use_conv_bias", c_.conv_bias},
                              {"residual_in_fp32", c_.residual_in_fp32}};
    std::ofstream(directory / "config.json") << j.dump(2) << "\n";
  }

  Backbone backbone{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  MambaConfig c_;
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("preset", Type::string, "named size (\"custom\": the keys below)").fallback(std::string("custom"))
      .one_of({"custom", "mamba-130m", "mamba-370m"});
  s.add("checkpoint", Type::string, "Hugging Face folder (config.json + model.safetensors) to load; sets the sizes")
      .fallback(std::string());
  s.add("d_model", Type::integer, "model width").fallback(std::int64_t{256}).min(1);
  s.add("n_layer", Type::integer, "blocks").fallback(std::int64_t{4}).min(1);
  s.add("d_state", Type::integer, "SSM state size N").fallback(std::int64_t{16}).min(1).max(256);
  s.add("expand", Type::integer, "d_inner = expand · d_model").fallback(std::int64_t{2}).min(1);
  s.add("d_conv", Type::integer, "causal conv width").fallback(std::int64_t{4}).min(1);
  s.add("dt_rank", Type::integer, "rank of the Δ projection (0: ceil(d_model / 16))").fallback(std::int64_t{0}).min(0);
  s.add("vocab_size", Type::integer, "vocabulary size").fallback(std::int64_t{50280}).min(1);
  s.add("tie_embeddings", Type::boolean, "LM head shares the embedding matrix").fallback(true);
  s.add("init", Type::string, "A initialization: s4d (A = −[1..N]) or identity (A_log = −20, Ā ≈ I)")
      .fallback(std::string("s4d")).one_of({"s4d", "identity"});
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  MambaConfig c;
  const std::string checkpoint = o.string("checkpoint");
  if (!checkpoint.empty()) {
    c = read_hf_config(checkpoint);
  } else if (o.string("preset") == "mamba-130m") {
    c.d_model = 768, c.n_layer = 24;
  } else if (o.string("preset") == "mamba-370m") {
    c.d_model = 1024, c.n_layer = 48;
  } else {
    c.d_model = o.integer("d_model"), c.n_layer = o.integer("n_layer"), c.d_state = o.integer("d_state");
    c.expand = o.integer("expand"), c.d_conv = o.integer("d_conv"), c.dt_rank = o.integer("dt_rank");
    c.vocab_size = o.integer("vocab_size"), c.tie_embeddings = o.boolean("tie_embeddings");
  }
  c.init = o.string("init");
  auto model = std::make_shared<MambaLM>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

}  // namespace

CAB_PLUGIN("student-mamba", "0.1.0",
           CAB_FACTORY(student, "mamba", "Mamba-1 causal LM (Hugging Face names and checkpoints)", describe, create))
