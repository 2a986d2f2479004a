// Mamba-1 selective scan, as the torch ops cab::selective_scan_fwd / _bwd and the fused bidirectional
// cab::bi_selective_scan_fwd / _bwd (CPU: the sequential reference and the analytic backward; CUDA when built),
// differentiable through their autograd kernels.
//
//   Δ_t = softplus(delta_t + delta_bias)   (softplus only when delta_softplus)
//   h_t = exp(Δ_t · A) ⊙ h_{t-1} + Δ_t · B_t · u_t          h: [N] per (batch, channel), fp32 (fp64 for fp64 input)
//   y_t = C_t · h_t + D · u_t,   then y_t ⊙= silu(z_t) when z is given
//
// Shapes: u, delta, z: [batch, D, L]; A: [D, N]; B, C: [batch, N, L] or [batch, G, N, L] with G dividing D
// (channel d uses group d / (D / G)); D_skip, delta_bias: [D]; initial_state and the returned final state:
// [batch, D, N]. y has u's dtype. On CUDA, u, delta, z, B and C are computed in the widest of their dtypes
// (float32, float16 or bfloat16; float64 only on the CPU), A, D, delta_bias and the states in fp32.
#pragma once

#include <optional>
#include <string>
#include <vector>

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

/// Dispatches cab::selective_scan_fwd on the inputs' device; differentiable (y and final_state) with respect to
/// every tensor input.
CAB_KERNELS_API ScanResult selective_scan(const ScanInputs& in);

struct BiScanResult {
  at::Tensor y;                ///< out_scale · (y_fwd + y_bwd), [batch, D, L], dtype of u
  at::Tensor final_state;      ///< of the forward direction (after t = L−1)
  at::Tensor final_state_bwd;  ///< of the backward direction (after t = 0)
};

/// Dispatches cab::bi_selective_scan_fwd: both directions of a bidirectional (Vim) layer, on CUDA in one fused
/// kernel. `fwd` is scanned t = 0 … L−1; `bwd`, given in natural time order (no flipped copies), t = L−1 … 0, so
/// y_bwd[t] depends on times ≥ t: y = out_scale · (y_fwd + y_bwd) = out_scale · (scan(fwd).y +
/// flip(scan(time_flipped(bwd)).y)). Both directions must have the same shapes and delta_softplus; z may be one
/// tensor for both. Differentiable like selective_scan. (cab::kernels::bidirectional_scan in scan.h picks this
/// or a faster CPU path.)
CAB_KERNELS_API BiScanResult bi_selective_scan(const ScanInputs& fwd, const ScanInputs& bwd, double out_scale);

/// The inputs of a reverse-time scan as the forward scan of the time-flipped sequence sees them: u, delta, z, B and
/// C flipped along time (views), the rest unchanged.
CAB_KERNELS_API ScanInputs time_flipped(const ScanInputs& in);

/// The sequential CPU reference (computes in fp64 for fp64 inputs, fp32 otherwise).
CAB_KERNELS_API ScanResult selective_scan_reference(const ScanInputs& in);

/// Checks shapes, devices and dtypes; throws c10::Error naming the offending argument.
CAB_KERNELS_API void check_scan_inputs(const ScanInputs& in);

/// True when this build contains the CUDA implementation.
CAB_KERNELS_API bool built_with_cuda();

namespace testing {
/// For the kernel tests: runs the CUDA forward and backward (both directions fused when `bwd` is given) with every
/// output and work buffer inside a NaN-filled allocation with guard elements on both sides. Returns what went
/// wrong — a guard region written, output elements never written — or nothing. Throws in builds without CUDA.
CAB_KERNELS_API std::vector<std::string> cuda_guard_violations(const ScanInputs& fwd, const ScanInputs* bwd = nullptr);
/// For the kernel tests: which CUDA kernels the inputs' shape takes on the current device: "rows" (one thread per
/// row), "lanes" (a channel over several threads) or "lanes, K chunks" (time split into K chunks). Throws in
/// builds without CUDA.
CAB_KERNELS_API std::string cuda_layout(const ScanInputs& in);
}  // namespace testing

}  // namespace cab::kernels
