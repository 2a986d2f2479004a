// Mamba's depthwise causal conv1d (the short conv before the scan), with an optional silu, differentiable.
#pragma once

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

/// x: [batch, dim, L] (any strides; fp32, fp16 or bf16), weight: [dim, 1, K] or [dim, K] (K ≤ 8), bias: [dim] or
/// undefined. out[b, c, t] = act(bias[c] + Σ_{k<K} weight[c, k] · x[b, c, t − (K−1) + k]) with x = 0 outside
/// [0, L), act = silu or identity: nn.Conv1d(dim, dim, K, groups=dim, padding=K−1) cut to its first L outputs.
/// `reverse`: the same conv over the time-reversed sequence, returned in natural order, i.e.
/// out[b, c, t] = act(bias[c] + Σ_k weight[c, k] · x[b, c, t + (K−1) − k]) (Vim's backward direction without
/// flipped copies). On CUDA one kernel per pass (fp32 arithmetic, fp32 weights; the output, in x's dtype, is a
/// [batch, dim, L] view of [batch, L, dim] memory, as are the gradients of x); on the CPU LibTorch's conv1d.
CAB_KERNELS_API at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                         bool reverse, bool silu);

}  // namespace cab::kernels
