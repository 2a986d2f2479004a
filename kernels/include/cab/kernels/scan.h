// The selective scan behind one interface, differentiable: a sequential reference loop and a chunked
// parallel form written with LibTorch ops (autograd flows through both), and the registered kernel
// (cab::selective_scan_fwd: CPU reference / CUDA, forward only for now). Shapes as in selective_scan.h.
#pragma once

#include <cstdint>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

enum class ScanBackend {
  automatic,   ///< the kernel, except with gradients on a GPU (chunked until the CUDA backward lands)
  sequential,  ///< one step at a time (reference; differentiable)
  chunked,     ///< chunks of `chunk` steps in parallel, state carried between chunks (differentiable)
  kernel,      ///< the registered op; on the CPU with an analytic backward (autograd), on CUDA forward only
};

/// y and the final state for the inputs; `chunk` is the chunk length of the chunked form.
CAB_KERNELS_API ScanResult scan(const ScanInputs& in, ScanBackend backend = ScanBackend::automatic,
                                int64_t chunk = 16);

/// The scan as a matrix per channel (MOHAWK's mixing matrix; Figure 3's implicit attention): without z,
/// y[b, d, t] = Σ_s M[b, d, t, s] · u[b, d, s] with
///   M[b, d, t, s] = Σ_n C_t[n] · exp(Σ_{k=s+1..t} Δ_k A[d, n]) · Δ_s B_s[n]  for s ≤ t, 0 above,
/// plus D on the diagonal when in.D_skip is set. Uses delta (with delta_bias / softplus as the scan does), A,
/// B, C and D_skip; u only for its shape. Differentiable; [batch, D, L, L] in fp32 (fp64 for fp64 inputs).
CAB_KERNELS_API at::Tensor mixing_matrix(const ScanInputs& in);

}  // namespace cab::kernels
