// Teacher and Student: the model interfaces plugins implement (LibTorch modules with taps and checkpoints).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "cab/export.h"
#include "cab/plugin/component.h"
#include "cab/plugin/taps.h"

namespace cab {

/// Facts about a model's sequence mixer that alignments need (layer maps, widths, token layout).
struct CAB_API ModelShape {
  int64_t num_layers = 0;
  int64_t d_model = 0;
  int64_t seq_len = 0;        ///< tokens per input, including class tokens (0 when variable, e.g. LMs)
  int64_t cls_index = -1;     ///< position of the class token, or -1 when there is none
  bool causal = false;
};

/// A model's weights by role: the vocabulary teachers and students share so that a student can be initialized
/// from a teacher (`from-teacher` init, attention-weight reuse). Linear weights in nn.Linear layout [out, in];
/// q/k/v with all heads concatenated. Roles:
///   per layer l: "layers.<l>.attn.{q,k,v,o}.{weight,bias}", "layers.<l>.norm1.{weight,bias}" (before the
///     mixer), "layers.<l>.norm2.{weight,bias}" (before the MLP), "layers.<l>.mlp.{fc1,fc2,gate}.{weight,bias}"
///   global: "embed.tokens", "embed.patch.{weight,bias}", "embed.cls", "embed.pos", "norm_f.{weight,bias}",
///     "head.{weight,bias}"
using RoleWeights = std::map<std::string, at::Tensor>;

/// What an initialization from a teacher did, per student parameter ("copied" exact, "partial" the leading
/// block of a differently sized tensor, "skipped" with the reason).
struct CAB_API InitReport {
  std::vector<std::string> copied, partial, skipped;
  std::string str() const;
};

/// Copies `role` of `teacher` into `dst` (a student parameter called `what` in the report), without autograd:
/// the whole tensor when shapes match; the leading block min(dst, src) per dimension when only the sizes
/// differ (the rest of dst keeps its initialization); otherwise (role missing, different rank) skipped.
CAB_API void copy_role(at::Tensor& dst, const RoleWeights& teacher, const std::string& role, const std::string& what,
                       InitReport& report);

/// What teachers and students share: a LibTorch module with taps and Hugging Face style checkpoints.
class CAB_API Model : public Component, public torch::nn::Module {
 public:
  ~Model() override;
  /// inputs: images [batch, channels, H, W] or token ids [batch, L]; computes only the requested taps.
  virtual ModelOutput forward(const at::Tensor& inputs, const TapRequest& taps) = 0;
  virtual ModelShape shape() const = 0;
  /// Taps this model can produce (see cab::tap).
  virtual std::vector<std::string> tap_names() const = 0;
  /// Loads a Hugging Face style checkpoint (safetensors + config.json) from a file or directory.
  virtual void load_checkpoint(const std::filesystem::path& path) = 0;
  virtual void save_checkpoint(const std::filesystem::path& directory) const = 0;
};

/// A pretrained Transformer.
class CAB_API Teacher : public Model {
 public:
  ~Teacher() override;
  virtual int64_t num_heads() const = 0;
  /// Features of the k tap (all key heads concatenated): d_model, or kv_heads · head_dim with grouped queries.
  virtual int64_t key_features() const { return shape().d_model; }
  /// The weights by role (see RoleWeights); the tensors share storage with the parameters.
  virtual RoleWeights weights_by_role() const = 0;
};

/// The modules of one student layer: the whole block (norms, mixer, MLP if any) and its sequence mixer alone, so
/// that staged methods (MOHAWK) can train or freeze them separately.
struct CAB_API LayerModules {
  std::shared_ptr<torch::nn::Module> block, mixer;
};

/// A Mamba-family student.
class CAB_API Student : public Model {
 public:
  ~Student() override;
  virtual int64_t d_state() const = 0;
  virtual int64_t d_inner() const = 0;
  /// True for students with a forward and a backward scan per layer (Vim).
  virtual bool bidirectional() const = 0;
  /// Features of the B and C taps: d_state, or groups · d_state for grouped (Mamba-2) students.
  virtual int64_t bc_features() const { return d_state(); }
  /// The `from-teacher` initialization: C ← W_Q, B ← W_K, x ← W_V, out_proj ← W_O, plus norms, MLPs and
  /// embeddings where shapes allow; student layer l takes teacher layer layer_map[l]. Students that cannot
  /// throw cab::Error (the default).
  virtual InitReport init_from_teacher(const RoleWeights& teacher, const std::vector<int64_t>& layer_map);
  /// Runs layer `layer` alone (its block, residual included) on `hidden`, the input to that layer
  /// [batch, L, d_model] in this model's token order, putting the requested taps of that layer into `out`;
  /// returns the layer's output [batch, L, d_model]. MOHAWK's stages 1-2 feed each student layer the teacher's
  /// input to the paired layer. Students that cannot throw cab::Error (the default).
  virtual at::Tensor forward_layer(int layer, const at::Tensor& hidden, const TapRequest& taps, Taps& out);
  /// The modules of layer `layer` (see LayerModules). Students that cannot throw cab::Error (the default).
  virtual LayerModules layer_modules(int layer);
};

}  // namespace cab
