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
  // cab's SSD op: on CUDA the scan kernel with one Δ per head and a scalar decay, reading these views in place.
  cab::kernels::SsdInputs ssd;
  ssd.x = in.x.to(acc).reshape({s.batch, s.len, s.heads, s.head_dim});
  ssd.dt = in.delta.to(acc);
  ssd.A = in.A.to(acc);
  ssd.B = in.B.to(acc).reshape({s.batch, s.len, s.groups, s.d_state});
  ssd.C = in.C.to(acc).reshape({s.batch, s.len, s.groups, s.d_state});
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
