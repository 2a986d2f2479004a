// Helpers shared by the kernel tests that compare a device against the CPU.
#pragma once

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <limits>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels::test {

inline bool have_gpu() { return built_with_cuda() && torch::cuda::is_available(); }

/// A copy of t on `device` inside a NaN-filled allocation (4096 elements on either side): reading outside it
/// poisons the results. Contiguous, so the op uses it in place.
inline at::Tensor guarded(const at::Tensor& t, at::Device device) {
  constexpr int64_t kGuard = 4096;
  at::Tensor buffer =
      at::full({t.numel() + 2 * kGuard}, std::numeric_limits<double>::quiet_NaN(), t.options().device(device));
  at::Tensor inner = buffer.narrow(0, kGuard, t.numel()).view(t.sizes());
  inner.copy_(t);
  return inner;
}

/// max |got − want| / max |want| (NaN anywhere in got makes it NaN, which fails every "<" check).
inline double max_rel_error(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

}  // namespace cab::kernels::test
