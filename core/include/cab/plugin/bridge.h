// Bridge φ: maps a student tap (e.g. B or C, [..., N]) into the teacher's space (K or Q, [..., d_teacher]).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "cab/export.h"
#include "cab/plugin/component.h"

namespace cab {

/// Bridges receive `in_features` and `out_features` in their options, set by whoever creates them.
class CAB_API Bridge : public Component, public torch::nn::Module {
 public:
  ~Bridge() override;
  /// [..., in_features] -> [..., out_features]
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
};

}  // namespace cab
