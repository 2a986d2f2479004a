// Causal language-model teachers: `gpt2`, `llama` and `phi`, with Hugging Face parameter names, config.json and
// safetensors checkpoints, and taps per layer: q, k, v (all heads concatenated, before the 1/√d scale, after
// RoPE), attention probabilities, and the layer's input and output hidden states.
//
//   gpt2:  learned positions; pre-LN blocks h += attn(LN1 h), h += MLP(LN2 h), GELU (tanh); Conv1D weights
//          stored [in, out] as in the checkpoints; LM head tied to the token embedding.
//   llama: RMSNorm, rotary positions on all head dims, grouped-query attention (k/v heads shared by
//          heads / kv_heads query heads), SwiGLU MLP down(silu(gate x) ⊙ up x).
//   phi:   one LayerNorm feeding attention and MLP in parallel (h += attn(LN h) + MLP(LN h)), rotary positions
//          on the first partial_rotary_factor of each head's dims, biases everywhere, LM head with bias.
// With grouped-query attention the k and v taps have kv_heads · head_dim features (the shared heads once).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
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
#include <cab/plugin/abi.h>
#include <cab/plugin/model.h>
#include <cab/util/error.h>

namespace {

namespace fs = std::filesystem;

enum class Family { gpt2, llama, phi };

const char* family_name(Family f) { return f == Family::gpt2 ? "gpt2" : f == Family::llama ? "llama" : "phi"; }

struct LmConfig {
  Family family = Family::gpt2;
  int64_t vocab_size = 50257, d_model = 768, n_layer = 12, heads = 12, kv_heads = 12, intermediate = 3072;
  int64_t max_positions = 1024;
  double norm_eps = 1e-5, rope_theta = 10000.0, rotary_fraction = 1.0;
  bool tie_embeddings = true, attention_bias = false, mlp_bias = false;
  int64_t head_dim() const { return d_model / heads; }
  int64_t rotary_dims() const { return static_cast<int64_t>(head_dim() * rotary_fraction); }
};

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}
torch::nn::LayerNorm layer_norm(int64_t d, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(eps));
}

/// GPT-2's Conv1D: y = x·W + b with W stored [in, out] (the transpose of nn.Linear), as in its checkpoints.
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in, int64_t out) {
    weight = register_parameter("weight", at::randn({in, out}) * 0.02);
    bias = register_parameter("bias", at::zeros({out}));
  }
  at::Tensor forward(const at::Tensor& x) { return at::addmm(bias, x.reshape({-1, x.size(-1)}), weight).view(
                                                out_shape(x)); }
  at::Tensor weight, bias;

 private:
  std::vector<int64_t> out_shape(const at::Tensor& x) const {
    std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
    s.back() = weight.size(1);
    return s;
  }
};
TORCH_MODULE(Conv1D);

/// Llama's RMSNorm: normalized in fp32, cast back, then scaled.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor xf = x.to(at::kFloat);
    return weight * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_)).to(x.scalar_type());
  }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

/// Rotates the first `dims` features of each head: x·cos + rotate_half(x)·sin with the half-split layout.
at::Tensor rotary(const at::Tensor& x, int64_t dims, double theta) {  // x: [b, H, L, hd]
  if (dims == 0) return x;
  const int64_t L = x.size(2);
  const auto f32 = x.options().dtype(at::kFloat);
  const at::Tensor inv_freq = 1.0 / at::pow(theta, at::arange(0, dims, 2, f32) / static_cast<double>(dims));
  const at::Tensor freqs = at::outer(at::arange(L, f32), inv_freq);          // [L, dims/2]
  const at::Tensor angles = at::cat({freqs, freqs}, -1);                     // [L, dims]
  const at::Tensor cos = angles.cos().to(x.scalar_type()), sin = angles.sin().to(x.scalar_type());
  const at::Tensor rot = x.narrow(-1, 0, dims);
  const auto halves = rot.chunk(2, -1);
  const at::Tensor rotated = rot * cos + at::cat({-halves[1], halves[0]}, -1) * sin;
  return dims == x.size(-1) ? rotated : at::cat({rotated, x.narrow(-1, dims, x.size(-1) - dims)}, -1);
}

/// Causal multi-head attention on projected q, k, v ([b, L, heads·hd] / [b, L, kv_heads·hd]); records the
/// taps and returns the context [b, L, heads·hd] before the output projection.
at::Tensor attend(const LmConfig& c, at::Tensor q, at::Tensor k, const at::Tensor& v, const cab::TapRequest& taps,
                  int layer, cab::Taps& out) {
  const int64_t b = q.size(0), L = q.size(1), hd = c.head_dim();
  auto heads = [&](const at::Tensor& t, int64_t n) { return t.view({b, L, n, hd}).transpose(1, 2); };  // [b, n, L, hd]
  at::Tensor qh = heads(q, c.heads), kh = heads(k, c.kv_heads), vh = heads(v, c.kv_heads);
  if (c.family != Family::gpt2) {
    qh = rotary(qh, c.rotary_dims(), c.rope_theta);
    kh = rotary(kh, c.rotary_dims(), c.rope_theta);
  }
  auto put = [&](std::string_view name, const at::Tensor& t) {
    if (taps.wants(name, layer)) out.put({std::string(name), layer}, t);
  };
  auto merged = [&](const at::Tensor& t) { return t.transpose(1, 2).reshape({b, L, -1}); };
  if (taps.wants(cab::tap::kQuery, layer)) put(cab::tap::kQuery, merged(qh));
  if (taps.wants(cab::tap::kKey, layer)) put(cab::tap::kKey, merged(kh));
  put(cab::tap::kValue, v);
  const int64_t groups = c.heads / c.kv_heads;  // query heads per k/v head
  if (groups > 1) {
    kh = kh.repeat_interleave(groups, 1);
    vh = vh.repeat_interleave(groups, 1);
  }
  const at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
  const at::Tensor future = at::ones({L, L}, at::TensorOptions(at::kBool).device(q.device())).triu(1);
  const at::Tensor probs = at::softmax(scores.to(at::kFloat).masked_fill(future, -INFINITY), -1).to(q.scalar_type());
  put(cab::tap::kAttention, probs);
  return merged(at::matmul(probs, vh));
}

// ---- GPT-2: transformer.{wte, wpe, h.N.{ln_1, attn.{c_attn, c_proj}, ln_2, mlp.{c_fc, c_proj}}, ln_f} ----

class Gpt2AttentionImpl : public torch::nn::Module {
 public:
  explicit Gpt2AttentionImpl(const LmConfig& c) {
    c_attn = register_module("c_attn", Conv1D(c.d_model, 3 * c.d_model));
    c_proj = register_module("c_proj", Conv1D(c.d_model, c.d_model));
  }
  Conv1D c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Attention);

class Gpt2MlpImpl : public torch::nn::Module {
 public:
  explicit Gpt2MlpImpl(const LmConfig& c) {
    c_fc = register_module("c_fc", Conv1D(c.d_model, c.intermediate));
    c_proj = register_module("c_proj", Conv1D(c.intermediate, c.d_model));
  }
  Conv1D c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Mlp);

class Gpt2BlockImpl : public torch::nn::Module {
 public:
  explicit Gpt2BlockImpl(const LmConfig& c) : c_(c) {
    ln_1 = register_module("ln_1", layer_norm(c.d_model, c.norm_eps));
    attn = register_module("attn", Gpt2Attention(c));
    ln_2 = register_module("ln_2", layer_norm(c.d_model, c.norm_eps));
    mlp = register_module("mlp", Gpt2Mlp(c));
  }
  at::Tensor forward(const at::Tensor& h, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const auto qkv = attn->c_attn->forward(ln_1->forward(h)).chunk(3, -1);
    const at::Tensor h1 = h + attn->c_proj->forward(attend(c_, qkv[0], qkv[1], qkv[2], taps, layer, out));
    return h1 + mlp->c_proj->forward(at::gelu(mlp->c_fc->forward(ln_2->forward(h1)), "tanh"));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Gpt2Attention attn{nullptr};
  Gpt2Mlp mlp{nullptr};

 private:
  LmConfig c_;
};
TORCH_MODULE(Gpt2Block);

class Gpt2BackboneImpl : public torch::nn::Module {
 public:
  explicit Gpt2BackboneImpl(const LmConfig& c) {
    wte = register_module("wte", torch::nn::Embedding(c.vocab_size, c.d_model));
    wpe = register_module("wpe", torch::nn::Embedding(c.max_positions, c.d_model));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(Gpt2Block(c));
    ln_f = register_module("ln_f", layer_norm(c.d_model, c.norm_eps));
  }
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Gpt2Backbone);

// ---- Llama / Phi: model.{embed_tokens, layers.N.{input_layernorm, self_attn.*, [post_attention_layernorm],
//      mlp.*}, norm | final_layernorm}, lm_head ----

class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const LmConfig& c) {
    const int64_t hd = c.head_dim();
    q_proj = register_module("q_proj", linear(c.d_model, c.heads * hd, c.attention_bias));
    k_proj = register_module("k_proj", linear(c.d_model, c.kv_heads * hd, c.attention_bias));
    v_proj = register_module("v_proj", linear(c.d_model, c.kv_heads * hd, c.attention_bias));
    // Llama calls the output projection o_proj; Phi calls it dense.
    o_proj = register_module(c.family == Family::phi ? "dense" : "o_proj", linear(c.heads * hd, c.d_model, c.attention_bias));
  }
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(SelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const LmConfig& c) : family_(c.family) {
    if (c.family == Family::llama) {
      gate_proj = register_module("gate_proj", linear(c.d_model, c.intermediate, c.mlp_bias));
      up_proj = register_module("up_proj", linear(c.d_model, c.intermediate, c.mlp_bias));
      down_proj = register_module("down_proj", linear(c.intermediate, c.d_model, c.mlp_bias));
    } else {
      up_proj = register_module("fc1", linear(c.d_model, c.intermediate, true));
      down_proj = register_module("fc2", linear(c.intermediate, c.d_model, true));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    if (family_ == Family::llama) return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
    return down_proj->forward(at::gelu(up_proj->forward(x), "tanh"));
  }
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // phi: up = fc1, down = fc2

 private:
  Family family_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const LmConfig& c) : c_(c) {
    if (c.family == Family::llama) {
      rms_in = register_module("input_layernorm", RMSNorm(c.d_model, c.norm_eps));
      rms_post = register_module("post_attention_layernorm", RMSNorm(c.d_model, c.norm_eps));
    } else {
      ln_in = register_module("input_layernorm", layer_norm(c.d_model, c.norm_eps));
    }
    self_attn = register_module("self_attn", SelfAttention(c));
    mlp = register_module("mlp", Mlp(c));
  }
  at::Tensor forward(const at::Tensor& h, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const at::Tensor x = rms_in ? rms_in->forward(h) : ln_in->forward(h);
    const at::Tensor context = attend(c_, self_attn->q_proj->forward(x), self_attn->k_proj->forward(x),
                                      self_attn->v_proj->forward(x), taps, layer, out);
    const at::Tensor attn = self_attn->o_proj->forward(context);
    if (c_.family == Family::phi) return h + attn + mlp->forward(x);  // parallel block
    const at::Tensor h1 = h + attn;
    return h1 + mlp->forward(rms_post->forward(h1));
  }
  RMSNorm rms_in{nullptr}, rms_post{nullptr};
  torch::nn::LayerNorm ln_in{nullptr};
  SelfAttention self_attn{nullptr};
  Mlp mlp{nullptr};

 private:
  LmConfig c_;
};
TORCH_MODULE(DecoderLayer);

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const LmConfig& c) {
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.d_model));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) layers->push_back(DecoderLayer(c));
    if (c.family == Family::llama) rms_f = register_module("norm", RMSNorm(c.d_model, c.norm_eps));
    else ln_f = register_module("final_layernorm", layer_norm(c.d_model, c.norm_eps));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm rms_f{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Decoder);

// ---- config.json ----

LmConfig read_hf_config(const fs::path& dir, Family family) {
  const fs::path file = dir / "config.json";
  const nlohmann::json j = cab::io::read_json_file(
      file, fmt::format("a {} checkpoint is a folder with config.json and model.safetensors", family_name(family)));
  const std::string type = j.value("model_type", "");
  if (type != family_name(family))
    throw cab::Error(fmt::format("'{}': model_type is '{}', expected '{}'", file.string(), type, family_name(family)));
  LmConfig c;
  c.family = family;
  try {
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    if (family == Family::gpt2) {
      c.d_model = j.at("n_embd").get<int64_t>();
      c.n_layer = j.at("n_layer").get<int64_t>();
      c.heads = c.kv_heads = j.at("n_head").get<int64_t>();
      c.intermediate = j.contains("n_inner") && !j["n_inner"].is_null() ? j["n_inner"].get<int64_t>() : 4 * c.d_model;
      c.max_positions = j.at("n_positions").get<int64_t>();
      c.norm_eps = j.value("layer_norm_epsilon", 1e-5);
      c.tie_embeddings = j.value("tie_word_embeddings", true);
      if (j.value("activation_function", "gelu_new") != "gelu_new")
        throw cab::Error(fmt::format("'{}': activation_function '{}' is not supported (expected gelu_new)", file.string(),
                                     j.value("activation_function", "")));
    } else {
      c.d_model = j.at("hidden_size").get<int64_t>();
      c.n_layer = j.at("num_hidden_layers").get<int64_t>();
      c.heads = j.at("num_attention_heads").get<int64_t>();
      c.kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                       ? j["num_key_value_heads"].get<int64_t>() : c.heads;
      c.intermediate = j.at("intermediate_size").get<int64_t>();
      c.max_positions = j.value("max_position_embeddings", int64_t{2048});
      c.tie_embeddings = j.value("tie_word_embeddings", false);
      // transformers ≥ 5 nests rope settings in rope_parameters; older files keep them at the top level.
      const nlohmann::json rope = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"] : j;
      c.rope_theta = rope.value("rope_theta", j.value("rope_theta", 10000.0));
      const std::string rope_type = rope.value("rope_type", std::string("default"));
      if (rope_type != "default" || (j.contains("rope_scaling") && !j["rope_scaling"].is_null()))
        throw cab::Error(fmt::format("'{}': rope_type '{}' / rope_scaling is not supported (only the default RoPE)",
                                     file.string(), rope_type));
      if (family == Family::llama) {
        c.norm_eps = j.value("rms_norm_eps", 1e-6);
        c.attention_bias = j.value("attention_bias", false);
        c.mlp_bias = j.value("mlp_bias", false);
        if (j.contains("head_dim") && !j["head_dim"].is_null() && j["head_dim"].get<int64_t>() != c.head_dim())
          throw cab::Error(fmt::format("'{}': head_dim {} differs from hidden_size / num_attention_heads = {} (not supported)",
                                       file.string(), j["head_dim"].get<int64_t>(), c.head_dim()));
      } else {
        c.norm_eps = j.value("layer_norm_eps", 1e-5);
        c.attention_bias = true;
        c.rotary_fraction = rope.value("partial_rotary_factor", j.value("partial_rotary_factor", 0.5));
        if (j.value("qk_layernorm", false))
          throw cab::Error(fmt::format("'{}': qk_layernorm = true is not supported", file.string()));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  return c;
}

nlohmann::json hf_config(const LmConfig& c) {
  if (c.family == Family::gpt2)
    return {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", c.vocab_size},
            {"n_embd", c.d_model}, {"n_layer", c.n_layer}, {"n_head", c.heads}, {"n_inner", c.intermediate},
            {"n_positions", c.max_positions}, {"layer_norm_epsilon", c.norm_eps},
            {"activation_function", "gelu_new"}, {"tie_word_embeddings", c.tie_embeddings}};
  nlohmann::json rope = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  nlohmann::json j = {{"vocab_size", c.vocab_size}, {"hidden_size", c.d_model}, {"num_hidden_layers", c.n_layer},
                      {"num_attention_heads", c.heads}, {"num_key_value_heads", c.kv_heads},
                      {"intermediate_size", c.intermediate}, {"max_position_embeddings", c.max_positions},
                      {"tie_word_embeddings", c.tie_embeddings}};
  if (c.family == Family::llama) {
    j.update({{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"rms_norm_eps", c.norm_eps},
              {"hidden_act", "silu"}, {"attention_bias", c.attention_bias}, {"mlp_bias", c.mlp_bias},
              {"head_dim", c.head_dim()}});
  } else {
    rope["partial_rotary_factor"] = c.rotary_fraction;
    j.update({{"model_type", "phi"}, {"architectures", {"PhiForCausalLM"}}, {"layer_norm_eps", c.norm_eps},
              {"hidden_act", "gelu_new"}, {"partial_rotary_factor", c.rotary_fraction}, {"qk_layernorm", false}});
  }
  j["rope_parameters"] = rope;
  return j;
}

// ---- the teacher ----

class CausalLm final : public cab::Teacher {
 public:
  explicit CausalLm(const LmConfig& c) : c_(c) {
    const char* name = family_name(c.family);
    if (c.d_model % c.heads)
      throw cab::ConfigError(fmt::format("{}: d_model {} is not divisible by heads {}", name, c.d_model, c.heads));
    if (c.heads % c.kv_heads)
      throw cab::ConfigError(fmt::format("{}: heads {} is not a multiple of kv_heads {}", name, c.heads, c.kv_heads));
    if (c.rotary_dims() % 2)
      throw cab::ConfigError(fmt::format("{}: rotary dims {} (head_dim × rotary fraction) must be even", name, c.rotary_dims()));
    if (c.family == Family::gpt2) transformer = register_module("transformer", Gpt2Backbone(c));
    else model = register_module("model", Decoder(c));
    if (!c.tie_embeddings) lm_head = register_module("lm_head", linear(c.d_model, c.vocab_size, c.family == Family::phi));
  }

  cab::ModelOutput forward(const at::Tensor& ids, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), family_name(c_.family));
    TORCH_CHECK(ids.dim() == 2, family_name(c_.family), ": expected token ids [batch, L], got ", ids.sizes());
    TORCH_CHECK(ids.size(1) <= c_.max_positions || c_.family != Family::gpt2, "gpt2: ", ids.size(1),
                " tokens exceed n_positions ", c_.max_positions);
    cab::ModelOutput out;
    at::Tensor h;
    if (transformer) h = transformer->wte->forward(ids) + transformer->wpe->weight.narrow(0, 0, ids.size(1));
    else h = model->embed_tokens->forward(ids);
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const int layer = static_cast<int>(i);
      if (taps.wants(cab::tap::kHiddenIn, layer)) out.taps.put({std::string(cab::tap::kHiddenIn), layer}, h);
      h = transformer ? transformer->h[i]->as<Gpt2BlockImpl>()->forward(h, taps, layer, out.taps)
                      : model->layers[i]->as<DecoderLayerImpl>()->forward(h, taps, layer, out.taps);
      if (taps.wants(cab::tap::kHiddenOut, layer)) out.taps.put({std::string(cab::tap::kHiddenOut), layer}, h);
    }
    h = transformer ? transformer->ln_f->forward(h) : model->rms_f ? model->rms_f->forward(h) : model->ln_f->forward(h);
    out.logits = lm_head ? lm_head->forward(h) : at::linear(h, token_embedding());  // [b, L, vocab]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, 0, -1, true}; }
  int64_t num_heads() const override { return c_.heads; }
  std::vector<std::string> tap_names() const override {
    return {std::string(cab::tap::kQuery), std::string(cab::tap::kKey), std::string(cab::tap::kValue),
            std::string(cab::tap::kAttention), std::string(cab::tap::kHiddenIn), std::string(cab::tap::kHiddenOut)};
  }

  cab::RoleWeights weights_by_role() const override {
    cab::RoleWeights w;
    auto put_linear = [&](const std::string& role, const torch::nn::Linear& l) {
      w[role + ".weight"] = l->weight;
      if (l->bias.defined()) w[role + ".bias"] = l->bias;
    };
    auto put_norm = [&](const std::string& role, const at::Tensor& weight, const at::Tensor& bias) {
      w[role + ".weight"] = weight;
      if (bias.defined()) w[role + ".bias"] = bias;
    };
    const int64_t d = c_.d_model;
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const std::string p = fmt::format("layers.{}.", i);
      if (transformer) {  // Conv1D weights are [in, out]: roles are the transposed views
        const auto& blk = *transformer->h->ptr(i)->as<Gpt2BlockImpl>();
        const char* names[] = {"attn.q", "attn.k", "attn.v"};
        for (int64_t part = 0; part < 3; ++part) {
          w[p + names[part] + ".weight"] = blk.attn->c_attn->weight.narrow(1, part * d, d).t();
          w[p + names[part] + ".bias"] = blk.attn->c_attn->bias.narrow(0, part * d, d);
        }
        w[p + "attn.o.weight"] = blk.attn->c_proj->weight.t();
        w[p + "attn.o.bias"] = blk.attn->c_proj->bias;
        put_norm(p + "norm1", blk.ln_1->weight, blk.ln_1->bias);
        put_norm(p + "norm2", blk.ln_2->weight, blk.ln_2->bias);
        w[p + "mlp.fc1.weight"] = blk.mlp->c_fc->weight.t();
        w[p + "mlp.fc1.bias"] = blk.mlp->c_fc->bias;
        w[p + "mlp.fc2.weight"] = blk.mlp->c_proj->weight.t();
        w[p + "mlp.fc2.bias"] = blk.mlp->c_proj->bias;
        continue;
      }
      const auto& l = *model->layers->ptr(i)->as<DecoderLayerImpl>();
      put_linear(p + "attn.q", l.self_attn->q_proj);
      put_linear(p + "attn.k", l.self_attn->k_proj);
      put_linear(p + "attn.v", l.self_attn->v_proj);
      put_linear(p + "attn.o", l.self_attn->o_proj);
      if (l.rms_in) {
        put_norm(p + "norm1", l.rms_in->weight, {});
        put_norm(p + "norm2", l.rms_post->weight, {});
        put_linear(p + "mlp.gate", l.mlp->gate_proj);
      } else {
        put_norm(p + "norm1", l.ln_in->weight, l.ln_in->bias);
      }
      put_linear(p + "mlp.fc1", l.mlp->up_proj);
      put_linear(p + "mlp.fc2", l.mlp->down_proj);
    }
    w["embed.tokens"] = token_embedding();
    if (transformer) {
      w["embed.pos"] = transformer->wpe->weight;
      put_norm("norm_f", transformer->ln_f->weight, transformer->ln_f->bias);
    } else if (model->rms_f) {
      put_norm("norm_f", model->rms_f->weight, {});
    } else {
      put_norm("norm_f", model->ln_f->weight, model->ln_f->bias);
    }
    if (lm_head) put_linear("head", lm_head);
    else w["head.weight"] = token_embedding();
    return w;
  }

  void load_checkpoint(const fs::path& path) override {
    const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
    cab::io::LoadOptions options;
    if (c_.tie_embeddings) options.ignore = {"lm_head.weight"};  // tied: the embedding is the head
    // Older GPT-2 and Llama checkpoints carry non-persistent buffers (causal masks, rotary caches).
    if (c_.family == Family::gpt2)
      for (int64_t i = 0; i < c_.n_layer; ++i) {
        options.ignore.push_back(fmt::format("transformer.h.{}.attn.bias", i));
        options.ignore.push_back(fmt::format("transformer.h.{}.attn.masked_bias", i));
      }
    else
      for (int64_t i = 0; i < c_.n_layer; ++i)
        options.ignore.push_back(fmt::format("model.layers.{}.self_attn.rotary_emb.inv_freq", i));
    cab::io::load_into(*this, cab::io::SafeTensorsFile(file), options);
  }

  void save_checkpoint(const fs::path& directory) const override {
    fs::create_directories(directory);
    cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(*this), {{"format", "pt"}});
    std::ofstream(directory / "config.json") << hf_config(c_).dump(2) << "\n";
  }

  Gpt2Backbone transformer{nullptr};
  Decoder model{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  at::Tensor token_embedding() const { return transformer ? transformer->wte->weight : model->embed_tokens->weight; }
  LmConfig c_;
};

// ---- factories ----

struct Preset {
  const char* name;
  int64_t vocab, d_model, n_layer, heads, kv_heads, intermediate, positions;
};
// Sizes of the public checkpoints (gpt2 = 124 M; TinyLlama-1.1B; microsoft/phi-1_5).
constexpr Preset kPresets[] = {
    {"gpt2", 50257, 768, 12, 12, 12, 3072, 1024},        {"gpt2-medium", 50257, 1024, 24, 16, 16, 4096, 1024},
    {"tinyllama-1.1b", 32000, 2048, 22, 32, 4, 5632, 2048}, {"phi-1.5", 51200, 2048, 24, 32, 32, 8192, 2048},
};

void describe(cab::config::Schema& s, Family family, std::vector<std::string> presets, const LmConfig& d) {
  using cab::config::Type;
  presets.insert(presets.begin(), "custom");
  s.add("preset", Type::string, "a public model's sizes, or custom (the keys below)").fallback(std::string("custom"))
      .one_of(presets);
  s.add("checkpoint", Type::string, "Hugging Face folder (config.json + model.safetensors) to load; sets the sizes")
      .fallback(std::string());
  s.add("vocab_size", Type::integer, "vocabulary size (custom)").fallback(d.vocab_size).min(1);
  s.add("d_model", Type::integer, "width (custom)").fallback(d.d_model).min(1);
  s.add("n_layer", Type::integer, "blocks (custom)").fallback(d.n_layer).min(1);
  s.add("heads", Type::integer, "attention heads (custom)").fallback(d.heads).min(1);
  if (family == Family::llama)
    s.add("kv_heads", Type::integer, "key/value heads (grouped-query attention; custom)").fallback(d.kv_heads).min(1);
  s.add("intermediate", Type::integer, "MLP width (custom)").fallback(d.intermediate).min(1);
  s.add("max_positions", Type::integer, "longest sequence (custom)").fallback(d.max_positions).min(1);
  s.add("tie_embeddings", Type::boolean, "LM head shares the token embedding (custom)").fallback(d.tie_embeddings);
  if (family != Family::gpt2) s.add("rope_theta", Type::number, "RoPE base (custom)").fallback(d.rope_theta).min(1);
  if (family == Family::phi)
    s.add("partial_rotary_factor", Type::number, "fraction of each head's dims rotated (custom)")
        .fallback(d.rotary_fraction).min(0).max(1);
}

LmConfig defaults(Family family) {  // tiny custom models that train on a CPU
  LmConfig c;
  c.family = family;
  c.vocab_size = 8000, c.d_model = 256, c.n_layer = 4, c.heads = c.kv_heads = 4, c.intermediate = 1024;
  c.max_positions = 1024;
  c.tie_embeddings = family == Family::gpt2;
  if (family == Family::llama) c.kv_heads = 2, c.norm_eps = 1e-6;
  if (family == Family::phi) c.rotary_fraction = 0.5, c.attention_bias = true;
  return c;
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o, Family family) {
  const std::string checkpoint = o.string("checkpoint");
  LmConfig c = defaults(family);
  if (!checkpoint.empty()) {
    c = read_hf_config(checkpoint, family);
  } else if (const std::string preset = o.string("preset"); preset != "custom") {
    for (const auto& p : kPresets)
      if (preset == p.name)
        c.vocab_size = p.vocab, c.d_model = p.d_model, c.n_layer = p.n_layer, c.heads = p.heads, c.kv_heads = p.kv_heads,
        c.intermediate = p.intermediate, c.max_positions = p.positions;
    c.tie_embeddings = family == Family::gpt2;
  } else {
    c.vocab_size = o.integer("vocab_size"), c.d_model = o.integer("d_model"), c.n_layer = o.integer("n_layer");
    c.heads = c.kv_heads = o.integer("heads");
    if (family == Family::llama) c.kv_heads = o.integer("kv_heads");
    c.intermediate = o.integer("intermediate"), c.max_positions = o.integer("max_positions");
    c.tie_embeddings = o.boolean("tie_embeddings");
    if (family != Family::gpt2) c.rope_theta = o.number("rope_theta");
    if (family == Family::phi) c.rotary_fraction = o.number("partial_rotary_factor");
  }
  auto model = std::make_shared<CausalLm>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

void describe_gpt2(cab::config::Schema& s) { describe(s, Family::gpt2, {"gpt2", "gpt2-medium"}, defaults(Family::gpt2)); }
void describe_llama(cab::config::Schema& s) { describe(s, Family::llama, {"tinyllama-1.1b"}, defaults(Family::llama)); }
void describe_phi(cab::config::Schema& s) { describe(s, Family::phi, {"phi-1.5"}, defaults(Family::phi)); }
std::shared_ptr<cab::Component> create_gpt2(const cab::config::Section& o) { return create(o, Family::gpt2); }
std::shared_ptr<cab::Component> create_llama(const cab::config::Section& o) { return create(o, Family::llama); }
std::shared_ptr<cab::Component> create_phi(const cab::config::Section& o) { return create(o, Family::phi); }

}  // namespace

CAB_PLUGIN("teacher-lm", "0.1.0",
           CAB_FACTORY(teacher, "gpt2", "GPT-2 causal LM (Hugging Face names and checkpoints)", describe_gpt2, create_gpt2),
           CAB_FACTORY(teacher, "llama", "Llama-family causal LM: RoPE, RMSNorm, SwiGLU, grouped-query attention",
                       describe_llama, create_llama),
           CAB_FACTORY(teacher, "phi", "Phi causal LM: partial RoPE, parallel attention/MLP block", describe_phi,
                       create_phi))
