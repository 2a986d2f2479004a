// The multi-head SSM (SSD in its recurrent form) on cab::kernels::scan; see head_scan.h.
#include "head_scan.h"

#include <ATen/ATen.h>

#include <cab/kernels/scan.h>
#include <cab/kernels/ssd.h>

#include <cmath>

namespace cab::mamba2 {

namespace {

struct Sizes {
  int64_t batch, len, heads, head_dim, groups, d_state;
};

Sizes sizes_of(const HeadScanInputs& in) {
  TORCH_CHECK(in.x.dim() == 3 && in.delta.dim() == 3 && in.B.dim() == 3 && in.C.dim() == 3,
              "head_scan: x, delta, B, C must be [batch, L, features]");
  Sizes s{in.x.size(0), in.x.size(1), in.delta.size(2), 0, in.groups, 0};
  TORCH_CHECK(s.heads >= 1 && in.x.size(2) % s.heads == 0, "head_scan: ", in.x.size(2), " channels are not divisible by ",
              s.heads, " heads");
  TORCH_CHECK(s.groups >= 1 && s.heads % s.groups == 0, "head_scan: ", s.heads, " heads are not divisible by ", s.groups,
              " groups");
  TORCH_CHECK(in.B.sizes() == in.C.sizes() && in.B.size(2) % s.groups == 0, "head_scan: B ", in.B.sizes(), " and C ",
              in.C.sizes(), " must be [batch, L, G·N] with G = ", s.groups);
  TORCH_CHECK(in.A.dim() == 1 && in.A.size(0) == s.heads, "head_scan: A must be [H=", s.heads, "], got ", in.A.sizes());
  s.head_dim = in.x.size(2) / s.heads;
  s.d_state = in.B.size(2) / s.groups;
  return s;
}

/// [batch, L, G·N] -> [batch, G, N, L], the scan's grouped layout.
at::Tensor grouped(const at::Tensor& t, const Sizes& s, at::ScalarType acc) {
  return t.to(acc).reshape({s.batch, s.len, s.groups, s.d_state}).permute({0, 2, 3, 1});
}

}  // namespace

at::ScalarType accumulation_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor head_scan(const HeadScanInputs& in) {
  const Sizes s = sizes_of(in);
  const auto acc = accumulation_type(in.x);
  // cab's SSD op. On CUDA, 16-bit activations go in as they are (Δ rounded to their dtype), so the op takes its
  // chunked form on tensor cores (bf16 products, fp32 accumulation and state: mamba_ssm's numerics); otherwise the
  // scan runs on fp32 (fp64) copies, on CUDA the recurrent kernel reading these views in place.
  const at::ScalarType xt = in.x.scalar_type();
  const auto t = in.x.is_cuda() && (xt == at::kBFloat16 || xt == at::kHalf) ? xt : acc;
  cab::kernels::SsdInputs ssd;
  ssd.x = in.x.to(t).reshape({s.batch, s.len, s.heads, s.head_dim});
  ssd.dt = in.delta.to(t);
  ssd.A = in.A.to(acc);
  ssd.B = in.B.to(t).reshape({s.batch, s.len, s.groups, s.d_state});
  ssd.C = in.C.to(t).reshape({s.batch, s.len, s.groups, s.d_state});
  return cab::kernels::ssd_scan(ssd).y.reshape({s.batch, s.len, s.heads * s.head_dim});
}

at::Tensor head_mixing_matrix(const HeadScanInputs& in) {
  const Sizes s = sizes_of(in);
  const auto acc = accumulation_type(in.x);
  // A is a scalar per head, so the decay factors out of the state sum (SSD's segment-sum form):
  //   M[b, h, t, s] = (C_t · B_s) · exp(S_t − S_s) · Δ_s  for s ≤ t,   S_t = Σ_{k≤t} Δ_k A_h
  // which needs a few [b, H, L, L] tensors instead of one per state.
  const at::Tensor delta = in.delta.to(acc).transpose(1, 2);                       // [b, H, L]
  const at::Tensor S = at::cumsum(delta * in.A.to(acc).view({1, s.heads, 1}), -1);  // [b, H, L]
  const at::Tensor B = grouped(in.B, s, acc), C = grouped(in.C, s, acc);            // [b, G, N, L]
  const at::Tensor CB = at::matmul(C.transpose(-1, -2), B)                         // [b, G, L, L]
                            .repeat_interleave(s.heads / s.groups, 1);             // [b, H, L, L]
  const at::Tensor causal = at::ones({s.len, s.len}, at::TensorOptions(at::kBool).device(S.device())).tril();
  const at::Tensor decay = at::exp((S.unsqueeze(-1) - S.unsqueeze(-2)).masked_fill(causal.logical_not(), -INFINITY));
  return CB * decay * delta.unsqueeze(-2);                                          // [b, H, L, L]
}

}  // namespace cab::mamba2
