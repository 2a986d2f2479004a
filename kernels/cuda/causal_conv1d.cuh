// Launch interface of the CUDA depthwise causal conv1d (Mamba's short conv before the scan), forward and backward,
// free of LibTorch headers.
//
// out[b, c, t] = act(bias[c] + Σ_{k<K} w[c, k] · X(b, c, τ − (K−1) + k)), τ the step in the conv's order: t = τ, or
// with `reverse` t = L−1−τ (the causal conv of the time-reversed sequence, read in natural order, i.e. an
// anti-causal conv with the kernel reversed); X = 0 outside [0, L); act = silu or identity. x is read through its
// strides (a time-major view of a projection reads coalesced); out, dx are written time-major ([batch, L, dim]
// contiguous). A thread runs one (batch, channel) over a segment of steps with its last K inputs in registers.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "selective_scan_cuda.cuh"

namespace cab::kernels::cuda {

constexpr int kConvMaxK = 8;  ///< the widest kernel the conv takes (Mamba uses 4)

struct ConvParams {
  int64_t batch = 0, dim = 0, len = 0;
  int K = 0;
  int64_t segment = 0;           ///< steps per thread (plan_conv)
  bool reverse = false, silu = false;
  const void* x = nullptr;       ///< [batch, dim, len], dtype T, through x_st
  Strides x_st;
  const float* w = nullptr;      ///< [dim, K] fp32 contiguous
  const float* bias = nullptr;   ///< [dim] fp32, or null
  void* out = nullptr;           ///< forward: [batch, len, dim] contiguous, dtype T
  // Backward.
  const void* dout = nullptr;    ///< ∂L/∂out [batch, dim, len], dtype T, through dout_st
  Strides dout_st;
  void* dx = nullptr;            ///< [batch, len, dim] contiguous, dtype T
  float* dw = nullptr;           ///< [dim, K], accumulated (zero it first)
  float* dbias = nullptr;        ///< [dim], accumulated (zero it first), or null
};

/// Steps per thread segment for `sm_count` multiprocessors (enough (batch, channel, segment) threads to fill them).
int64_t plan_conv(int64_t batch, int64_t dim, int64_t len, int sm_count);

cudaError_t causal_conv1d_forward(const ConvParams& p, ScanDtype dtype, cudaStream_t stream);
cudaError_t causal_conv1d_backward(const ConvParams& p, ScanDtype dtype, cudaStream_t stream);

}  // namespace cab::kernels::cuda
