// Launch interface of the CUDA selective-scan forward (kept free of LibTorch headers so nvcc stays fast).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace cab::kernels::cuda {

enum class ScanDtype { f32, f16, bf16 };

/// All tensors contiguous. u, delta, z, y: [batch, dim, len] (dtype); B, C: [batch, groups, dstate, len] (dtype);
/// A: [dim, dstate], D, delta_bias: [dim], h0 and h_final: [batch, dim, dstate] (fp32). Optional pointers may be null.
struct ScanParams {
  int64_t batch, dim, len, dstate, groups;
  const void* u;
  const void* delta;
  const void* B;
  const void* C;
  const void* z;
  const float* A;
  const float* D;
  const float* delta_bias;
  const float* h0;
  void* y;
  float* h_final;
  bool delta_softplus;
};

/// Enqueues the forward scan on `stream`; returns the launch error, if any.
cudaError_t selective_scan_fwd(const ScanParams& params, ScanDtype dtype, cudaStream_t stream);

}  // namespace cab::kernels::cuda
