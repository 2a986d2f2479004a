// Teacher and Student: the model interfaces plugins implement (LibTorch modules with taps and checkpoints).
#pragma once

#include <cstdint>
#include <filesystem>
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
};

/// A Mamba-family student.
class CAB_API Student : public Model {
 public:
  ~Student() override;
  virtual int64_t d_state() const = 0;
  virtual int64_t d_inner() const = 0;
  /// True for students with a forward and a backward scan per layer (Vim).
  virtual bool bidirectional() const = 0;
};

}  // namespace cab
