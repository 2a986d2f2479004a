// Mamba-1 selective scan, as the torch op cab::selective_scan_fwd (CPU reference always; CUDA when built).
//
//   Δ_t = softplus(delta_t + delta_bias)   (softplus only when delta_softplus)
//   h_t = exp(Δ_t · A) ⊙ h_{t-1} + Δ_t · B_t · u_t          h: [N] per (batch, channel), fp32 (fp64 for fp64 input)
//   y_t = C_t · h_t + D · u_t,   then y_t ⊙= silu(z_t) when z is given
//
// Shapes: u, delta, z: [batch, D, L]; A: [D, N]; B, C: [batch, N, L] or [batch, G, N, L] with G dividing D
// (channel d uses group d / (D / G)); D_skip, delta_bias: [D]; initial_state and the returned final state:
// [batch, D, N]. y has u's dtype. This is the forward pass only; gradients arrive with the kernels issue.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#define CAB_KERNELS_API __attribute__((visibility("default")))

namespace cab::kernels {

struct ScanResult {
  at::Tensor y;            ///< [batch, D, L], dtype of u
  at::Tensor final_state;  ///< [batch, D, N], fp32 (fp64 for fp64 inputs)
};

struct ScanInputs {
  at::Tensor u, delta, A, B, C;
  std::optional<at::Tensor> D_skip, z, delta_bias, initial_state;
  bool delta_softplus = false;
};

/// Dispatches cab::selective_scan_fwd on the inputs' device.
CAB_KERNELS_API ScanResult selective_scan(const ScanInputs& in);

/// The sequential CPU reference (computes in fp64 for fp64 inputs, fp32 otherwise).
CAB_KERNELS_API ScanResult selective_scan_reference(const ScanInputs& in);

/// Checks shapes, devices and dtypes; throws c10::Error naming the offending argument.
CAB_KERNELS_API void check_scan_inputs(const ScanInputs& in);

/// True when this build contains the CUDA implementation.
CAB_KERNELS_API bool built_with_cuda();

}  // namespace cab::kernels
