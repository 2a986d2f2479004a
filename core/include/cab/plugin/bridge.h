// Bridge φ: maps a student tap (e.g. B or C, [..., N]) into the teacher's space (K or Q, [..., d_teacher]).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "cab/export.h"
#include "cab/plugin/component.h"

namespace cab::config {
class Schema;
class Section;
/// Declares in_features / out_features (0 = "set by the alignment", so a [bridge] table needs neither).
CAB_API void describe_bridge_widths(config::Schema& schema);
/// {in_features, out_features}; cab::ConfigError when either is still 0 (the bridge was built outside an alignment).
CAB_API std::pair<int64_t, int64_t> bridge_widths(const config::Section& options, std::string_view bridge);

}  // namespace cab::config

namespace cab {

/// Bridges receive `in_features` and `out_features` in their options, set by whoever creates them.
class CAB_API Bridge : public Component, public torch::nn::Module {
 public:
  ~Bridge() override;
  /// [..., in_features] -> [..., out_features]
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  /// Several bridges at once (an alignment's bridges of one term, one per layer): x is [P, ..., in_features],
  /// x[p] goes through group[p], the result is [P, ..., out_features]. Called on group.front(). The default runs
  /// each bridge's forward and stacks the results; a bridge type overrides it to batch the group's work (the MLP
  /// bridge: one batched GEMM per linear layer for the whole group), falling back to the default when the group
  /// holds other types or shapes.
  virtual at::Tensor forward_group(const std::vector<Bridge*>& group, const at::Tensor& x);

  /// A group's outputs as an affine map of features: forward_group(group, x) == features · weightᵀ + bias, with
  /// features [P, ..., hidden], weight [P, out_features, hidden] and bias [P, out_features] (undefined: none), all
  /// differentiable. It lets a loss on the outputs work from the features and the weights without forming the
  /// outputs (the CAB alignment's squared error in Gram form). The default (nullopt) says the bridge is not such a
  /// map, or not for this group; the linear and MLP bridges are.
  struct Affine {
    at::Tensor features, weight, bias;
  };
  virtual std::optional<Affine> affine_group(const std::vector<Bridge*>& group, const at::Tensor& x);
  /// features · weightᵀ + bias of an Affine, batched over P: [P, ..., out_features].
  static at::Tensor affine_output(const Affine& affine);
};

/// Declares in_features / out_features (0 = "set by the alignment", so a [bridge] table needs neither).
CAB_API void describe_bridge_widths(config::Schema& schema);
/// {in_features, out_features}; cab::ConfigError when either is still 0 (the bridge was built outside an alignment).
CAB_API std::pair<int64_t, int64_t> bridge_widths(const config::Section& options, std::string_view bridge);

}  // namespace cab
