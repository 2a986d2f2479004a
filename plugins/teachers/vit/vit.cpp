// ViT / DeiT image classifier (the `vit` teacher): Hugging Face ViTForImageClassification parameter names and
// checkpoints, presets deit-tiny / deit-small, configurable image size, patch size, channels and classes, and
// taps per layer: q, k, v (all heads concatenated, before the 1/√d scale), attention probabilities, and the
// layer's input and output hidden states.
//
// Tokens: [class, patch_1 … patch_P] + position embeddings; pre-norm blocks h += attn(LN(h)), h += MLP(LN(h))
// with exact GELU; logits = classifier(LN(h)[class token]).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
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

struct VitConfig {
  int64_t image_size = 224, patch_size = 16, channels = 3, classes = 1000;
  int64_t d_model = 192, n_layer = 12, heads = 3, intermediate = 768;
  double norm_eps = 1e-12;
  bool qkv_bias = true;
  int64_t tokens() const { return (image_size / patch_size) * (image_size / patch_size) + 1; }
};

torch::nn::LayerNorm layer_norm(int64_t d, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(eps));
}
torch::nn::Linear linear(int64_t in, int64_t out, bool bias = true) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const VitConfig& c) {
    query = register_module("query", linear(c.d_model, c.d_model, c.qkv_bias));
    key = register_module("key", linear(c.d_model, c.d_model, c.qkv_bias));
    value = register_module("value", linear(c.d_model, c.d_model, c.qkv_bias));
  }
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
};
TORCH_MODULE(SelfAttention);

class DenseImpl : public torch::nn::Module {  // HF's {output,intermediate}.dense wrappers
 public:
  DenseImpl(int64_t in, int64_t out) { dense = register_module("dense", linear(in, out)); }
  torch::nn::Linear dense{nullptr};
};
TORCH_MODULE(Dense);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const VitConfig& c) {
    attention = register_module("attention", SelfAttention(c));
    output = register_module("output", Dense(c.d_model, c.d_model));
  }
  SelfAttention attention{nullptr};
  Dense output{nullptr};
};
TORCH_MODULE(Attention);

class LayerImpl : public torch::nn::Module {
 public:
  explicit LayerImpl(const VitConfig& c) : heads_(c.heads) {
    attention = register_module("attention", Attention(c));
    intermediate = register_module("intermediate", Dense(c.d_model, c.intermediate));
    output = register_module("output", Dense(c.intermediate, c.d_model));
    layernorm_before = register_module("layernorm_before", layer_norm(c.d_model, c.norm_eps));
    layernorm_after = register_module("layernorm_after", layer_norm(c.d_model, c.norm_eps));
  }

  /// h: [b, L, d] -> [b, L, d]
  at::Tensor forward(const at::Tensor& h, const cab::TapRequest& taps, int layer, cab::Taps& out) {
    const int64_t b = h.size(0), L = h.size(1), d = h.size(2), hd = d / heads_;
    const at::Tensor x = layernorm_before->forward(h);
    auto& sa = attention->attention;
    const at::Tensor q = sa->query->forward(x), k = sa->key->forward(x), v = sa->value->forward(x);  // [b, L, d]
    auto split = [&](const at::Tensor& t) { return t.view({b, L, heads_, hd}).transpose(1, 2); };   // [b, H, L, hd]
    const at::Tensor probs = at::softmax(at::matmul(split(q), split(k).transpose(-1, -2)) / std::sqrt(double(hd)), -1);
    const at::Tensor context = at::matmul(probs, split(v)).transpose(1, 2).reshape({b, L, d});
    auto put = [&](std::string_view name, const at::Tensor& t) {
      if (taps.wants(name, layer)) out.put({std::string(name), layer}, t);
    };
    put(cab::tap::kQuery, q);
    put(cab::tap::kKey, k);
    put(cab::tap::kValue, v);
    put(cab::tap::kAttention, probs);
    const at::Tensor h1 = h + attention->output->dense->forward(context);
    const at::Tensor m = at::gelu(intermediate->dense->forward(layernorm_after->forward(h1)));
    return h1 + output->dense->forward(m);
  }

  Attention attention{nullptr};
  Dense intermediate{nullptr}, output{nullptr};
  torch::nn::LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(Layer);

class PatchEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit PatchEmbeddingsImpl(const VitConfig& c) {
    projection = register_module("projection", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.channels, c.d_model, c.patch_size)
                                                                     .stride(c.patch_size)));
  }
  torch::nn::Conv2d projection{nullptr};
};
TORCH_MODULE(PatchEmbeddings);

class EmbeddingsImpl : public torch::nn::Module {
 public:
  explicit EmbeddingsImpl(const VitConfig& c) {
    cls_token = register_parameter("cls_token", at::randn({1, 1, c.d_model}) * 0.02);
    position_embeddings = register_parameter("position_embeddings", at::randn({1, c.tokens(), c.d_model}) * 0.02);
    patch_embeddings = register_module("patch_embeddings", PatchEmbeddings(c));
  }
  at::Tensor cls_token, position_embeddings;
  PatchEmbeddings patch_embeddings{nullptr};
};
TORCH_MODULE(Embeddings);

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const VitConfig& c) {
    layer = register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) layer->push_back(Layer(c));
  }
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(Encoder);

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const VitConfig& c) {
    embeddings = register_module("embeddings", Embeddings(c));
    encoder = register_module("encoder", Encoder(c));
    layernorm = register_module("layernorm", layer_norm(c.d_model, c.norm_eps));
  }
  Embeddings embeddings{nullptr};
  Encoder encoder{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};
};
TORCH_MODULE(Backbone);

VitConfig read_hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  const nlohmann::json j = cab::io::read_json_file(file, "a ViT checkpoint is a folder with config.json and model.safetensors");
  const std::string type = j.value("model_type", "vit");
  if (type != "vit" && type != "deit")
    throw cab::Error(fmt::format("'{}': model_type is '{}', expected 'vit' or 'deit'", file.string(), type));
  VitConfig c;
  try {
    c.image_size = j.at("image_size").get<int64_t>();
    c.patch_size = j.at("patch_size").get<int64_t>();
    c.channels = j.value("num_channels", int64_t{3});
    c.d_model = j.at("hidden_size").get<int64_t>();
    c.n_layer = j.at("num_hidden_layers").get<int64_t>();
    c.heads = j.at("num_attention_heads").get<int64_t>();
    c.intermediate = j.at("intermediate_size").get<int64_t>();
    c.norm_eps = j.value("layer_norm_eps", 1e-12);
    c.qkv_bias = j.value("qkv_bias", true);
    c.classes = j.contains("id2label") ? static_cast<int64_t>(j.at("id2label").size()) : j.value("num_labels", int64_t{2});
  } catch (const nlohmann::json::exception& e) {
    throw cab::Error(fmt::format("'{}': {}", file.string(), e.what()));
  }
  return c;
}

class Vit final : public cab::Teacher {
 public:
  explicit Vit(const VitConfig& c) : c_(c) {
    if (c.d_model % c.heads) throw cab::ConfigError(fmt::format("vit: d_model {} is not divisible by heads {}", c.d_model, c.heads));
    if (c.image_size % c.patch_size)
      throw cab::ConfigError(fmt::format("vit: image_size {} is not divisible by patch_size {}", c.image_size, c.patch_size));
    vit = register_module("vit", Backbone(c));
    classifier = register_module("classifier", linear(c.d_model, c.classes));
  }

  cab::ModelOutput forward(const at::Tensor& images, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "vit");
    TORCH_CHECK(images.dim() == 4 && images.size(1) == c_.channels && images.size(2) == c_.image_size &&
                    images.size(3) == c_.image_size,
                "vit: expected images [batch, ", c_.channels, ", ", c_.image_size, ", ", c_.image_size, "], got ",
                images.sizes());
    cab::ModelOutput out;
    auto& e = vit->embeddings;
    const at::Tensor patches = e->patch_embeddings->projection->forward(images).flatten(2).transpose(1, 2);  // [b, P, d]
    at::Tensor h = at::cat({e->cls_token.expand({images.size(0), 1, c_.d_model}), patches}, 1) + e->position_embeddings;
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const int layer = static_cast<int>(i);
      if (taps.wants(cab::tap::kHiddenIn, layer)) out.taps.put({std::string(cab::tap::kHiddenIn), layer}, h);
      h = vit->encoder->layer[i]->as<LayerImpl>()->forward(h, taps, layer, out.taps);
      if (taps.wants(cab::tap::kHiddenOut, layer)) out.taps.put({std::string(cab::tap::kHiddenOut), layer}, h);
    }
    out.logits = classifier->forward(vit->layernorm->forward(h).select(1, 0));  // [b, classes]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, c_.tokens(), 0, false}; }
  int64_t num_heads() const override { return c_.heads; }
  cab::RoleWeights weights_by_role() const override {
    cab::RoleWeights w;
    auto linear_role = [&](const std::string& role, const torch::nn::Linear& l) {
      w[role + ".weight"] = l->weight;
      if (l->bias.defined()) w[role + ".bias"] = l->bias;
    };
    auto norm_role = [&](const std::string& role, const torch::nn::LayerNorm& n) {
      w[role + ".weight"] = n->weight;
      w[role + ".bias"] = n->bias;
    };
    for (int64_t i = 0; i < c_.n_layer; ++i) {
      const auto& l = *vit->encoder->layer->ptr(i)->as<LayerImpl>();
      const std::string p = fmt::format("layers.{}.", i);
      const auto& sa = l.attention->attention;
      linear_role(p + "attn.q", sa->query);
      linear_role(p + "attn.k", sa->key);
      linear_role(p + "attn.v", sa->value);
      linear_role(p + "attn.o", l.attention->output->dense);
      norm_role(p + "norm1", l.layernorm_before);
      norm_role(p + "norm2", l.layernorm_after);
      linear_role(p + "mlp.fc1", l.intermediate->dense);
      linear_role(p + "mlp.fc2", l.output->dense);
    }
    const auto& e = vit->embeddings;
    w["embed.patch.weight"] = e->patch_embeddings->projection->weight;
    w["embed.patch.bias"] = e->patch_embeddings->projection->bias;
    w["embed.cls"] = e->cls_token;
    w["embed.pos"] = e->position_embeddings;
    norm_role("norm_f", vit->layernorm);
    linear_role("head", classifier);
    return w;
  }
  std::vector<std::string> tap_names() const override {
    return {std::string(cab::tap::kQuery), std::string(cab::tap::kKey), std::string(cab::tap::kValue),
            std::string(cab::tap::kAttention), std::string(cab::tap::kHiddenIn), std::string(cab::tap::kHiddenOut)};
  }
  void load_checkpoint(const fs::path& path) override {
    const fs::path file = fs::is_directory(path) ? path / "model.safetensors" : path;
    cab::io::load_into(*this, cab::io::SafeTensorsFile(file));
  }
  void save_checkpoint(const fs::path& directory) const override {
    fs::create_directories(directory);
    cab::io::save_safetensors(directory / "model.safetensors", cab::io::state_of(*this), {{"format", "pt"}});
    nlohmann::json labels = nlohmann::json::object();
    for (int64_t i = 0; i < c_.classes; ++i) labels[std::to_string(i)] = fmt::format("LABEL_{}", i);
    const nlohmann::json j = {{"model_type", "vit"}, {"architectures", {"ViTForImageClassification"}},
                              {"image_size", c_.image_size}, {"patch_size", c_.patch_size},
                              {"num_channels", c_.channels}, {"hidden_size", c_.d_model},
                              {"num_hidden_layers", c_.n_layer}, {"num_attention_heads", c_.heads},
                              {"intermediate_size", c_.intermediate}, {"layer_norm_eps", c_.norm_eps},
                              {"qkv_bias", c_.qkv_bias}, {"hidden_act", "gelu"}, {"id2label", labels}};
    std::ofstream(directory / "config.json") << j.dump(2) << "\n";
  }

  Backbone vit{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  VitConfig c_;
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("preset", Type::string, "deit-tiny (192/12/3), deit-small (384/12/6), or custom (the keys below)")
      .fallback(std::string("custom")).one_of({"custom", "deit-tiny", "deit-small"});
  s.add("checkpoint", Type::string, "Hugging Face folder (config.json + model.safetensors) to load; sets the sizes")
      .fallback(std::string());
  s.add("image_size", Type::integer, "input height = width").fallback(std::int64_t{224}).min(1);
  s.add("patch_size", Type::integer, "patch height = width").fallback(std::int64_t{16}).min(1);
  s.add("channels", Type::integer, "input channels").fallback(std::int64_t{3}).min(1);
  s.add("classes", Type::integer, "output classes").fallback(std::int64_t{1000}).min(1);
  s.add("d_model", Type::integer, "width (custom)").fallback(std::int64_t{192}).min(1);
  s.add("n_layer", Type::integer, "blocks (custom)").fallback(std::int64_t{12}).min(1);
  s.add("heads", Type::integer, "attention heads (custom)").fallback(std::int64_t{3}).min(1);
  s.add("mlp_ratio", Type::number, "MLP width / d_model").fallback(4.0).min(0.1);
  s.add("norm_eps", Type::number, "LayerNorm epsilon (HF ViT 1e-12, timm DeiT 1e-6)").fallback(1e-6).min(0);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  VitConfig c;
  const std::string checkpoint = o.string("checkpoint");
  if (!checkpoint.empty()) {
    c = read_hf_config(checkpoint);
  } else {
    const std::string preset = o.string("preset");
    c.d_model = preset == "deit-tiny" ? 192 : preset == "deit-small" ? 384 : o.integer("d_model");
    c.n_layer = preset == "custom" ? o.integer("n_layer") : 12;
    c.heads = preset == "deit-tiny" ? 3 : preset == "deit-small" ? 6 : o.integer("heads");
    c.intermediate = static_cast<int64_t>(std::llround(o.number("mlp_ratio") * c.d_model));
    c.image_size = o.integer("image_size");
    c.patch_size = o.integer("patch_size");
    c.channels = o.integer("channels");
    c.classes = o.integer("classes");
    c.norm_eps = o.number("norm_eps");
  }
  auto model = std::make_shared<Vit>(c);
  if (!checkpoint.empty()) model->load_checkpoint(checkpoint);
  return model;
}

}  // namespace

CAB_PLUGIN("teacher-vit", "0.1.0",
           CAB_FACTORY(teacher, "vit", "ViT/DeiT image classifier (Hugging Face names and checkpoints)", describe, create))
