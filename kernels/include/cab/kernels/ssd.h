// Mamba-2's SSD scan (scalar decay per head, grouped B/C) as the torch ops cab::ssd_scan_fwd / _bwd: CPU (the
// selective-scan reference and analytic backward on the per-channel form) and CUDA, differentiable. On CUDA,
// 16-bit inputs take the chunked form on tensor cores (64-step chunks, products in bf16 with fp32 accumulation);
// fp32 inputs, mixed dtypes and shapes beyond its shared memory take the selective-scan kernels with one Δ per
// head, a scalar decay and time-major strides (no input copied).
//
// Per batch, head h (P = head_dim channels p) and time t, with Δ_t = softplus(dt_t + dt_bias) (softplus only with
// dt_softplus) and a state s of [P, N] per head, in fp32:
//   s_t = exp(Δ_t · A_h) · s_{t−1} + Δ_t · x_t[p] · B_t          (B_t, C_t ∈ R^N of the head's group g = h / (H / G))
//   y_t[p] = C_t · s_t[p, :] + D_h · x_t[p],  then y ⊙= silu(z) when z is given
// Shapes (those of mamba_ssm's mamba_chunk_scan_combined): x, z: [batch, L, H, P]; dt: [batch, L, H]; A, dt_bias:
// [H]; B, C: [batch, L, G, N] with G dividing H and N ≤ 256; D: [H] or [H, P]; initial_state and the returned final
// state: [batch, H, P, N] (fp32; fp64 for fp64 inputs on the CPU). y: [batch, L, H, P] in x's dtype.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

struct SsdInputs {
  at::Tensor x, dt, A, B, C;
  std::optional<at::Tensor> D, z, dt_bias, initial_state;
  bool dt_softplus = false;
};

struct SsdResult {
  at::Tensor y;            ///< [batch, L, H, P], dtype of x
  at::Tensor final_state;  ///< [batch, H, P, N]
};

/// Dispatches cab::ssd_scan_fwd on the inputs' device; differentiable with respect to every tensor input.
CAB_KERNELS_API SsdResult ssd_scan(const SsdInputs& in);

/// Checks shapes, devices and dtypes; throws c10::Error naming the offending argument and what it should be.
CAB_KERNELS_API void check_ssd_inputs(const SsdInputs& in);

namespace testing {
/// For the kernel tests: which CUDA implementation the inputs take on their device: "chunked" (the chunked form on
/// tensor cores: x, dt, B, C, z all float16 or all bfloat16, P and N within its shared memory) or "recurrent" (the
/// selective-scan kernels with one Δ per head). Throws in builds without CUDA.
CAB_KERNELS_API std::string ssd_cuda_path(const SsdInputs& in);
/// For the kernel tests: runs the chunked SSD's forward and backward (inputs that take it) with every output and
/// work buffer inside a NaN-filled allocation with guard elements on both sides; returns what went wrong (a guard
/// region written, elements never written) or nothing. Throws in builds without CUDA.
CAB_KERNELS_API std::vector<std::string> ssd_cuda_guard_violations(const SsdInputs& in);
}  // namespace testing

}  // namespace cab::kernels
