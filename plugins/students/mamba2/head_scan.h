// The multi-head SSM of Mamba-2 and Phi-Mamba, run on cab's selective scan, and its per-head mixing matrix.
//
// Per head h (P = head_dim channels, state size N), with a scalar step Δ_t and decay A_h per head and B_t, C_t ∈ R^N
// shared by the heads of a group:
//   s_t[p, :] = exp(Δ_t · A_h) · s_{t−1}[p, :] + Δ_t · B_t · x_t[p],      y_t[p] = C_t · s_t[p, :]
// This is the Mamba-1 selective scan with per-channel Δ = the Δ of the channel's head, A[d, n] = A_h for every n,
// and B, C grouped (channel d reads group d / (D / G), which is head h's group h / (H / G)): head_scan runs it as
// cab::kernels::ssd_scan (cab/kernels/ssd.h). On CUDA, bf16/fp16 activations take its chunked form (64-step
// chunks, products on tensor cores); fp32 ones its recurrent kernel, which keeps one Δ row per head and one
// exponential per step and reads these [batch, L, ·] tensors in place.
#pragma once

#include <cstdint>
#include <string_view>

#include <torch/nn/modules/container/modulelist.h>

#include <ATen/core/Tensor.h>
#include <fmt/format.h>

#include <cab/plugin/model.h>
#include <cab/util/error.h>

namespace cab::mamba2 {

/// Accumulation dtype of a model computing in `t`'s dtype: fp64 stays fp64, everything else computes in fp32.
at::ScalarType accumulation_type(const at::Tensor& t);

struct HeadScanInputs {
  at::Tensor x;       ///< [batch, L, H·P] the scanned input
  at::Tensor delta;   ///< [batch, L, H] step sizes, already positive (after softplus and clamps)
  at::Tensor A;       ///< [H] negative decay rates
  at::Tensor B, C;    ///< [batch, L, G·N], G dividing H
  int64_t groups = 1;  ///< G
};

/// y [batch, L, H·P] in the accumulation dtype of x (no D skip, no gate).
at::Tensor head_scan(const HeadScanInputs& in);

/// The scan as one matrix per head (the segment-sum form: A is a scalar per head, so no loop over states):
/// y[b, :, h·P + p] = M[b, h] · x[b, :, h·P + p] for every p, where
///   M[b, h, t, s] = C_t · B_s · exp(Σ_{k=s+1..t} Δ_k A_h) · Δ_s  for s ≤ t, 0 above the diagonal.
/// [batch, H, L, L] in the accumulation dtype; no D on the diagonal (the models add their own skip).
at::Tensor head_mixing_matrix(const HeadScanInputs& in);

}  // namespace cab::mamba2

namespace cab::mamba2 {

/// Block `layer` of `layers` (a ModuleList of Block), or cab::Error naming `model` when out of range.
template <class BlockImpl>
BlockImpl& layer_block(const torch::nn::ModuleList& layers, int layer, std::string_view model) {
  if (layer < 0 || static_cast<size_t>(layer) >= layers->size())
    throw cab::Error(fmt::format("{}: layer {} out of range [0, {})", model, layer, layers->size()));
  return *layers->ptr(static_cast<size_t>(layer))->as<BlockImpl>();
}

/// Student::layer_modules for a ModuleList of Blocks that have a `mixer` member.
template <class BlockImpl>
cab::LayerModules block_modules(const torch::nn::ModuleList& layers, int layer, std::string_view model) {
  BlockImpl& block = layer_block<BlockImpl>(layers, layer, model);
  return {layers->ptr(static_cast<size_t>(layer)), block.mixer.ptr()};
}

}  // namespace cab::mamba2
