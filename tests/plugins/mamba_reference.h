// For the student tests: a Mamba-1 mixer written again from a model's named parameters with plain ATen ops and the
// sequential scan reference (cab::kernels::selective_scan_reference), so that the `mamba` and `vim` plugins are
// checked against an implementation that shares none of their code; and the save → load → gradients check.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/ordered_dict.h>

#include <cstdint>
#include <string>

#include "cab/kernels/selective_scan.h"
#include "cab/plugin/model.h"

namespace cab::test {

using Params = torch::OrderedDict<std::string, at::Tensor>;

inline double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

/// x · rsqrt(mean(x²) + eps) · weight over the last dimension.
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps = 1e-5) {
  return x * at::rsqrt(x.pow(2).mean(-1, true) + eps) * weight;
}

/// One scan direction and what it computes on the way.
struct BranchReference {
  at::Tensor u;      ///< [b, d_inner, L] after conv + SiLU
  at::Tensor B, C;   ///< [b, L, N]
  at::Tensor delta;  ///< [b, d_inner, L] after softplus
  at::Tensor y_pre;  ///< [b, d_inner, L] scan + D·u, before the gate
  at::Tensor y;      ///< y_pre ⊙ silu(z)
};

/// The branch whose parameters are `mixer`{conv1d, x_proj, dt_proj}`suffix`, `mixer`A`suffix`_log and
/// `mixer`D`suffix` (suffix "" or Vim's "_b"), run on x and z ([b, d_inner, L]) in the order given.
inline BranchReference mamba1_branch(const Params& p, const std::string& mixer, const std::string& suffix,
                                     const at::Tensor& x, const at::Tensor& z, int64_t d_state) {
  const at::Tensor conv = p[mixer + "conv1d" + suffix + ".weight"];
  const int64_t d_inner = conv.size(0), width = conv.size(2), L = x.size(2);
  BranchReference r;
  r.u = at::silu(at::conv1d(x, conv, p[mixer + "conv1d" + suffix + ".bias"], 1, width - 1, 1, d_inner).narrow(2, 0, L));
  const at::Tensor proj = at::linear(r.u.transpose(1, 2), p[mixer + "x_proj" + suffix + ".weight"]);  // [b, L, R + 2N]
  const int64_t rank = proj.size(2) - 2 * d_state;
  r.B = proj.narrow(2, rank, d_state);
  r.C = proj.narrow(2, rank + d_state, d_state);
  const std::string dt = mixer + "dt_proj" + suffix;
  r.delta = at::softplus(at::linear(proj.narrow(2, 0, rank), p[dt + ".weight"], p[dt + ".bias"])).transpose(1, 2);
  cab::kernels::ScanInputs in;
  in.u = r.u;
  in.delta = r.delta;
  in.A = -at::exp(p[mixer + "A" + suffix + "_log"]);
  in.B = r.B.transpose(1, 2).contiguous();
  in.C = r.C.transpose(1, 2).contiguous();
  in.D_skip = p[mixer + "D" + suffix];
  r.y_pre = cab::kernels::selective_scan_reference(in).y;
  r.y = r.y_pre * at::silu(z);
  return r;
}

/// (x, z) = in_proj(RMSNorm(h)) of the layer whose parameters start with `layer` ("layers.0."), as [b, d_inner, L].
inline std::pair<at::Tensor, at::Tensor> mamba1_in_proj(const Params& p, const std::string& layer, const at::Tensor& h) {
  const at::Tensor xz = at::linear(rms_norm(h, p[layer + "norm.weight"]), p[layer + "mixer.in_proj.weight"]).transpose(1, 2);
  const auto parts = xz.chunk(2, 1);
  return {parts[0], parts[1]};
}

/// h + out_proj(y) for y [b, d_inner, L].
inline at::Tensor mamba1_out(const Params& p, const std::string& layer, const at::Tensor& h, const at::Tensor& y) {
  return h + at::linear(y.transpose(1, 2), p[layer + "mixer.out_proj.weight"]);
}

/// `loaded` (a model read back from `saved`'s checkpoint) gives bit-identical outputs on `input`, and a loss on its
/// output sends a gradient, not all zero, to every parameter.
inline void expect_same_outputs_and_gradients_everywhere(cab::Model& saved, cab::Model& loaded, const at::Tensor& input) {
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(saved.forward(input, {}).logits, loaded.forward(input, {}).logits));
  }
  loaded.forward(input, {}).logits.square().mean().backward();
  for (const auto& p : loaded.named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

}  // namespace cab::test
