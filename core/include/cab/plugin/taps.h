// Taps: the per-layer intermediate tensors a forward pass exposes on request (q/k/v/attention for
// teachers; B/C/Δ/x/hidden for students). A model computes and keeps only what a TapRequest asks for.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cab/export.h"

namespace cab {

/// Names of the standard taps. Shapes are per layer; "all heads concatenated" for teachers.
namespace tap {
inline constexpr std::string_view kQuery = "q";             ///< [batch, L, d]  before the 1/√d scale, after RoPE
inline constexpr std::string_view kKey = "k";               ///< [batch, L, d]  after RoPE
inline constexpr std::string_view kValue = "v";             ///< [batch, L, d]
inline constexpr std::string_view kAttention = "attn";      ///< [batch, heads, L, L] softmax probabilities
inline constexpr std::string_view kHiddenIn = "hidden_in";  ///< [batch, L, d_model] input of the layer
inline constexpr std::string_view kHiddenOut = "hidden_out";  ///< [batch, L, d_model] output of the layer
inline constexpr std::string_view kB = "B";                 ///< [batch, L, N] input-dependent SSM input projection
inline constexpr std::string_view kC = "C";                 ///< [batch, L, N] input-dependent SSM output projection
inline constexpr std::string_view kDelta = "delta";         ///< [batch, L, d_inner] step size after softplus
inline constexpr std::string_view kX = "x";                 ///< [batch, L, d_inner] SSM input after conv + SiLU
inline constexpr std::string_view kMixing = "mixing_matrix";  ///< [batch, d_inner or heads, L, L] materialized
inline constexpr std::string_view kScanOutput = "y";  ///< [batch, L, d_inner] one scan direction's output (gated)
}  // namespace tap

/// Scan direction of a tap; bidirectional students (Vim) report each direction separately.
enum class Direction : std::uint8_t { forward = 0, backward = 1 };

struct CAB_API TapKey {
  std::string name;
  int layer = 0;
  Direction direction = Direction::forward;
  auto operator<=>(const TapKey&) const = default;
  std::string str() const;  ///< "k@3", "B@5/bwd"
};

/// Which taps to compute: per name, all layers or a set of layers.
class CAB_API TapRequest {
 public:
  /// Requests `name` at the given layers; an empty list means every layer.
  TapRequest& add(std::string name, std::vector<int> layers = {});
  /// Union of two requests.
  TapRequest& merge(const TapRequest& other);

  bool empty() const { return wanted_.empty(); }
  bool wants(std::string_view name) const;
  bool wants(std::string_view name, int layer) const;
  std::vector<std::string> names() const;

  /// Throws cab::Error if a requested name is not in `supported` (with did-you-mean) or a layer is
  /// outside [0, num_layers); `model` names the model in the message.
  void check(const std::vector<std::string>& supported, int num_layers, std::string_view model) const;

 private:
  std::map<std::string, std::set<int>, std::less<>> wanted_;  // empty set = all layers
};

/// The tensors a forward pass produced for a TapRequest.
class CAB_API Taps {
 public:
  void put(TapKey key, at::Tensor value);
  bool contains(const TapKey& key) const { return tensors_.count(key) != 0; }
  /// The tensor, or cab::Error listing what was captured (a tap that was not requested is a bug upstream).
  const at::Tensor& at(const TapKey& key) const;
  std::size_t size() const { return tensors_.size(); }
  const std::map<TapKey, at::Tensor>& items() const { return tensors_; }

 private:
  std::map<TapKey, at::Tensor> tensors_;
};

/// What a model's forward returns.
struct CAB_API ModelOutput {
  at::Tensor logits;  ///< [batch, classes] (classifiers) or [batch, L, vocab] (LMs)
  Taps taps;
};

}  // namespace cab
