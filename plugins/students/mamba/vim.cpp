// Vim, the bidirectional Mamba-1 image classifier (the `vim` student; Zhu et al. 2024, bimamba v2 with the class
// token in the middle): the official repository's parameter names, safetensors checkpoints with config.json,
// presets vim-tiny / vim-small, taps per layer and per scan direction, `from-teacher` initialization.
//
// Tokens: patch_embed (Conv2d patch × patch, stride patch) gives P patch tokens; the class token is inserted at
// index P/2 (so the sequence is P + 1 long with the class token at P/2), then pos_embed is added. Blocks
// h = h + mixer(RMSNorm(h)) with the bidirectional mixer of mamba_common.h, residual in fp32; logits =
// head(RMSNorm_f(h)[P/2]). Backward-direction taps are in the backward scan's own (token-reversed) order.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/io/safetensors.h>
#include <cab/plugin/model.h>
#include <cab/util/error.h>

#include "mamba_common.h"

namespace cab::mamba {

void describe_vim(cab::config::Schema& s) {
  using cab::config::Type;
  describe_stack(s, {"vim-tiny", "vim-small"},
                 "vim-tiny (192 wide, 24 layers), vim-small (384, 24), or custom (the keys below)",
                 "folder (config.json + model.safetensors, as save_checkpoint writes) to load", 192, 24);
  s.add("image_size", Type::integer, "input height = width (presets too)").fallback(std::int64_t{224}).min(1);
  s.add("patch_size", Type::integer, "patch height = width = stride (presets too)").fallback(std::int64_t{16}).min(1);
  s.add("channels", Type::integer, "input channels (presets too)").fallback(std::int64_t{3}).min(1);
  s.add("classes", Type::integer, "output classes (presets too)").fallback(std::int64_t{1000}).min(1);
}

namespace {

namespace fs = std::filesystem;

struct VimConfig : Mamba1Config {
  VimConfig() { bidirectional = true; }
  int64_t image_size = 224, patch_size = 16, channels = 3, classes = 1000;
  int64_t patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t cls_index() const { return patches() / 2; }
};

class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(const VimConfig& c) : image_{c.channels, c.image_size, c.image_size} {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.channels, c.d_model, c.patch_size)
                                                         .stride(c.patch_size)));
  }
  /// images: [b, channels, image_size, image_size] -> [b, P, d_model], patches in row-major order
  at::Tensor forward(const at::Tensor& images) {
    const std::vector<int64_t> want{images.dim() > 0 ? images.size(0) : 1, image_[0], image_[1], image_[2]};
    TORCH_CHECK(images.sizes() == at::IntArrayRef(want), "vim: expected images [batch, channels, height, width] with ",
                "[channels, height, width] = ", at::IntArrayRef(image_), ", got ", images.sizes());
    return proj->forward(images).flatten(2).transpose(1, 2);
  }
  torch::nn::Conv2d proj{nullptr};

 private:
  std::vector<int64_t> image_;  // channels, height, width
};
TORCH_MODULE(PatchEmbed);

VimConfig read_config(const fs::path& dir) {
  const nlohmann::json j =
      read_config_json(dir, "vim", "a Vim checkpoint is a folder with config.json and model.safetensors");
  const fs::path file = dir / "config.json";
  VimConfig c;
  read_stack_json(j, file, c);
  c.image_size = json_integer(j, "image_size", file);
  c.patch_size = json_integer(j, "patch_size", file);
  c.channels = json_integer(j, "num_channels", file);
  c.classes = json_integer(j, "num_classes", file);
  return c;
}

class Vim final : public Mamba1Student {
 public:
  explicit Vim(const VimConfig& c) : Mamba1Student(c), c_(c) {
    if (c.image_size % c.patch_size)
      throw cab::ConfigError(fmt::format("vim: image_size {} is not divisible by patch_size {}", c.image_size, c.patch_size));
    patch_embed = register_module("patch_embed", PatchEmbed(c));
    cls_token = register_parameter("cls_token", at::zeros({1, 1, c.d_model}));
    pos_embed = register_parameter("pos_embed", at::zeros({1, c.patches() + 1, c.d_model}));
    layers = register_module("layers", make_layers(c));
    norm_f = register_module("norm_f", RMSNorm(c.d_model, c.norm_eps));
    head = register_module("head", torch::nn::Linear(c.d_model, c.classes));
    reset_parameters();
  }

  /// As the official code: class token, position embeddings and head weight normal(0, 0.02) truncated at ±2σ, head
  /// bias 0; the patch projection keeps LibTorch's default (the mixers initialize themselves).
  void reset_parameters() {
    at::NoGradGuard no_grad;
    const double lo = 0.5 * std::erfc(std::sqrt(2.0));  // Φ(−2): sample the normal's inverse CDF on [Φ(−2), Φ(2)]
    for (at::Tensor* t : {&cls_token, &pos_embed, &head->weight})
      t->uniform_(2 * lo - 1, 1 - 2 * lo).erfinv_().mul_(std::sqrt(2.0) * 0.02);
    head->bias.zero_();
  }

  cab::ModelOutput forward(const at::Tensor& images, const cab::TapRequest& taps) override {
    taps.check(tap_names(), static_cast<int>(c_.n_layer), "vim");
    cab::ModelOutput out;
    const at::Tensor patches = patch_embed->forward(images);  // [b, P, d]
    const int64_t b = patches.size(0), P = c_.patches(), mid = c_.cls_index();
    const at::Tensor cls = cls_token.to(patches.scalar_type()).expand({b, 1, c_.d_model});
    at::Tensor h = at::cat({patches.narrow(1, 0, mid), cls, patches.narrow(1, mid, P - mid)}, 1) + pos_embed;  // [b, P+1, d]
    h = run_layers(layers, h, taps, out.taps);
    out.logits = head->forward(norm_f->forward(h.select(1, mid).to(norm_f->weight.scalar_type())));  // [b, classes]
    return out;
  }

  cab::ModelShape shape() const override { return {c_.n_layer, c_.d_model, c_.patches() + 1, c_.cls_index(), false}; }

  /// The layers (see init_layers_from_teacher; both scan directions take the same W_Q, W_K), the patch embedding,
  /// class token, position embeddings (the teacher's class-token row moved from the front to the middle of its own
  /// sequence, where Vim's class token sits), norm_f and head.
  cab::InitReport init_from_teacher(const cab::RoleWeights& teacher, const std::vector<int64_t>& layer_map) override {
    cab::InitReport report;
    init_layers_from_teacher(layers, teacher, layer_map, "layers.", "vim", report);
    cab::copy_role(patch_embed->proj->weight, teacher, "embed.patch.weight", "patch_embed.proj.weight", report);
    cab::copy_role(patch_embed->proj->bias, teacher, "embed.patch.bias", "patch_embed.proj.bias", report);
    cab::copy_role(cls_token, teacher, "embed.cls", "cls_token", report);
    cab::RoleWeights moved;
    if (const auto it = teacher.find("embed.pos"); it != teacher.end() && it->second.dim() == 3) {
      const at::Tensor& pos = it->second;  // [1, 1 + P_t, d], class token first
      const int64_t p = pos.size(1) - 1, mid = p / 2;
      moved["embed.pos"] = at::cat({pos.narrow(1, 1, mid), pos.narrow(1, 0, 1), pos.narrow(1, 1 + mid, p - mid)}, 1);
    }
    cab::copy_role(pos_embed, moved.empty() ? teacher : moved, "embed.pos", "pos_embed", report);
    cab::copy_role(norm_f->weight, teacher, "norm_f.weight", "norm_f.weight", report);
    cab::copy_role(head->weight, teacher, "head.weight", "head.weight", report);
    cab::copy_role(head->bias, teacher, "head.bias", "head.bias", report);
    return report;
  }

  void load_checkpoint(const fs::path& path) override { load_checkpoint_file(*this, path, {}); }

  void save_checkpoint(const fs::path& directory) const override {
    nlohmann::json j = stack_json(c_);
    j["model_type"] = "vim";
    j["architectures"] = {"VisionMamba"};
    j["bimamba_type"] = "v2";
    j["use_middle_cls_token"] = true;
    j["image_size"] = c_.image_size;
    j["patch_size"] = c_.patch_size;
    j["num_channels"] = c_.channels;
    j["num_classes"] = c_.classes;
    save_checkpoint_files(*this, directory, j);
  }

  const torch::nn::ModuleList& layer_list() const override { return layers; }

  PatchEmbed patch_embed{nullptr};
  at::Tensor cls_token, pos_embed;
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm_f{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  VimConfig c_;
};

}  // namespace

std::shared_ptr<cab::Component> create_vim(const cab::config::Section& o) {
  const std::string checkpoint = o.string("checkpoint");
  if (!checkpoint.empty()) return build_student<Vim>(read_config(checkpoint), o, checkpoint);
  VimConfig c;
  c.image_size = o.integer("image_size"), c.patch_size = o.integer("patch_size");
  c.channels = o.integer("channels"), c.classes = o.integer("classes");
  const std::string preset = o.string("preset");
  if (preset == "custom") {
    read_stack_options(o, c);
  } else {  // the paper's sizes; d_state 16, expand 2, d_conv 4 are the defaults
    c.d_model = preset == "vim-tiny" ? 192 : 384;
    c.dt_rank = preset == "vim-tiny" ? 12 : 24;
    c.n_layer = 24;
  }
  return build_student<Vim>(c, o, checkpoint);
}

}  // namespace cab::mamba
