// The CUDA side of cab::kernels::causal_conv1d (kernels/cuda/causal_conv1d_host.cpp), built with CUDA only.
#pragma once

#include <ATen/core/Tensor.h>

namespace cab::kernels::detail {
/// Differentiable (a torch::autograd::Function over the forward and backward kernels); inputs checked.
at::Tensor causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool reverse,
                              bool silu);
}  // namespace cab::kernels::detail
