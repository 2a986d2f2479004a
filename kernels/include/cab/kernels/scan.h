// The selective scan behind one interface, differentiable: a sequential reference loop and a chunked
// parallel form written with LibTorch ops (autograd flows through both), and the registered kernels
// (cab::selective_scan_fwd/_bwd: CPU reference and analytic backward / CUDA forward and backward).
// Shapes as in selective_scan.h.
#pragma once

#include <cstdint>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

enum class ScanBackend {
  automatic,   ///< the kernel where it runs (CPU; CUDA in fp32/fp16/bf16), else chunked
  sequential,  ///< one step at a time (reference; differentiable)
  chunked,     ///< chunks of `chunk` steps in parallel, state carried between chunks (differentiable)
  kernel,      ///< the registered op, differentiable (CPU: analytic backward; CUDA: the CUDA backward)
};

/// y and the final state for the inputs; `chunk` is the chunk length of the chunked form.
CAB_KERNELS_API ScanResult scan(const ScanInputs& in, ScanBackend backend = ScanBackend::automatic,
                                int64_t chunk = 16);

/// Both directions of a bidirectional (Vim) layer, y = out_scale · (y_fwd + y_bwd): `bwd` in natural time order,
/// scanned from the last step to the first (see bi_selective_scan). The kernel backend runs the fused op (one CUDA
/// launch per pass); on the CPU with gradients, and with the other backends, the two directions run separately.
CAB_KERNELS_API BiScanResult bidirectional_scan(const ScanInputs& fwd, const ScanInputs& bwd, double out_scale = 0.5,
                                                ScanBackend backend = ScanBackend::automatic, int64_t chunk = 16);

/// The scan as a matrix per channel (MOHAWK's mixing matrix; Figure 3's implicit attention): without z,
/// y[b, d, t] = Σ_s M[b, d, t, s] · u[b, d, s] with
///   M[b, d, t, s] = Σ_n C_t[n] · exp(Σ_{k=s+1..t} Δ_k A[d, n]) · Δ_s B_s[n]  for s ≤ t, 0 above,
/// plus D on the diagonal when in.D_skip is set. Uses delta (with delta_bias / softplus as the scan does), A,
/// B, C and D_skip; u only for its shape. Differentiable; [batch, D, L, L] in fp32 (fp64 for fp64 inputs).
CAB_KERNELS_API at::Tensor mixing_matrix(const ScanInputs& in);

}  // namespace cab::kernels
