// The multi-head SSM (SSD in its recurrent form) on cab::kernels::scan; see head_scan.h.
#include "head_scan.h"

#include <ATen/ATen.h>

#include <cab/kernels/scan.h>

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
  const int64_t dim = s.heads * s.head_dim;
  cab::kernels::ScanInputs scan;
  scan.u = in.x.to(acc).transpose(1, 2);                                           // [b, D, L]
  scan.delta = in.delta.to(acc).repeat_interleave(s.head_dim, 2).transpose(1, 2);  // [b, D, L]
  scan.A = in.A.to(acc).repeat_interleave(s.head_dim).unsqueeze(1).expand({dim, s.d_state}).contiguous();  // [D, N]
  scan.B = grouped(in.B, s, acc);                                                  // [b, G, N, L]
  scan.C = grouped(in.C, s, acc);
  return cab::kernels::scan(scan).y.transpose(1, 2);                               // [b, L, D]
}

at::Tensor head_mixing_matrix(const HeadScanInputs& in) {
  const Sizes s = sizes_of(in);
  const auto acc = accumulation_type(in.x);
  // Every channel of a head shares Δ, A, B and C, hence the matrix: the first channel of each head stands for all.
  cab::kernels::ScanInputs scan;
  scan.u = in.x.to(acc).reshape({s.batch, s.len, s.heads, s.head_dim}).select(3, 0).transpose(1, 2);  // [b, H, L]
  scan.delta = in.delta.to(acc).transpose(1, 2);                                   // [b, H, L]
  scan.A = in.A.to(acc).unsqueeze(1).expand({s.heads, s.d_state}).contiguous();    // [H, N]
  scan.B = grouped(in.B, s, acc);                                                  // [b, G, N, L], G divides H
  scan.C = grouped(in.C, s, acc);
  return cab::kernels::mixing_matrix(scan);                                        // [b, H, L, L]
}

}  // namespace cab::mamba2
