// Mamba-2's SSD as the selective scan (internal to libcab_kernels): channel d = h·P + p of the scan is channel p of
// head h; A, D and dt_bias repeat over the head's channels; Δ repeats too (CPU) or stays one row per head (CUDA,
// ScanLayout::head_dim = P). The SSD ops carry their tensors in a ScanInputs under the selective scan's field names
// (u = x, delta = dt, D_skip = D, delta_bias = dt_bias), so the op plumbing of scan_ops.h serves both.
#pragma once

#include "cab/kernels/ssd.h"
#include "scan_ops.h"

namespace cab::kernels {

/// The SSD inputs (checked) as scan inputs: x, z → [b, H·P, L] views; dt → [b, H·P, L] (per_head_delta: the
/// [b, H, L] view); A → [H·P, N]; B, C → [b, G, N, L] views; D, dt_bias → [H·P]; initial_state → [b, H·P, N].
ScanInputs ssd_as_scan(const ScanInputs& ssd, bool per_head_delta);

/// y [b, H·P, L] → [b, L, H, P]; final state [b, H·P, N] → [b, H, P, N] (views where the layout allows).
at::Tensor scan_y_as_ssd(const at::Tensor& y, const ScanInputs& ssd);
at::Tensor scan_state_as_ssd(const at::Tensor& state, const ScanInputs& ssd);
/// The gradient of the SSD's y / final state in the scan's shapes.
at::Tensor ssd_grad_y_as_scan(const at::Tensor& grad_y);
at::Tensor ssd_state_as_scan(const at::Tensor& state);

/// The scan's gradients as gradients of the SSD inputs, in their shapes and dtypes: sums over a head's channels
/// for what the SSD has per head (dt unless per_head_delta, A, dt_bias, D when [H]).
ScanGrads scan_grads_as_ssd(const ScanGrads& g, const ScanInputs& ssd, bool per_head_delta);

/// check_ssd_inputs on the op's packing.
void check_ssd_packed(const ScanInputs& ssd);

#ifdef CAB_KERNELS_WITH_CUDA
/// The chunked SSD on tensor cores (cuda/ssd_chunked.cuh) takes the (packed, checked) inputs on their device: x,
/// dt, B, C and z all float16 or all bfloat16, P and N within its shared memory, batch and heads within a grid.
bool ssd_chunked_applies(const ScanInputs& ssd);
/// y [b, L, H, P] (x's dtype) and the final state [b, H, P, N] (fp32); outputs and work buffers from `alloc`.
std::vector<at::Tensor> ssd_chunked_forward(const ScanInputs& ssd, const ScanAllocator& alloc = default_allocator);
/// Every input's gradient in its shape and dtype; grad_final may be undefined.
ScanGrads ssd_chunked_backward(const ScanInputs& ssd, const at::Tensor& grad_y, const at::Tensor& grad_final,
                               const ScanAllocator& alloc = default_allocator);
#endif

}  // namespace cab::kernels
