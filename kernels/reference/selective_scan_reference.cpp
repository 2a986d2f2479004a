// Sequential CPU reference of the selective scan: the ground truth every accelerated kernel is tested against.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

void check_scan_inputs(const ScanInputs& in) {
  TORCH_CHECK(in.u.dim() == 3, "selective_scan: u must be [batch, D, L], got ", in.u.sizes());
  const int64_t batch = in.u.size(0), dim = in.u.size(1), len = in.u.size(2);
  TORCH_CHECK(len >= 1, "selective_scan: L must be >= 1, got ", len);
  TORCH_CHECK(in.delta.sizes() == in.u.sizes(), "selective_scan: delta must match u ", in.u.sizes(), ", got ",
              in.delta.sizes());
  TORCH_CHECK(in.A.dim() == 2 && in.A.size(0) == dim, "selective_scan: A must be [D=", dim, ", N], got ", in.A.sizes());
  const int64_t dstate = in.A.size(1);
  TORCH_CHECK(dstate >= 1 && dstate <= 256, "selective_scan: N must be in [1, 256], got ", dstate);
  for (const auto* pair : {&in.B, &in.C}) {
    const char* name = pair == &in.B ? "B" : "C";
    const at::Tensor& t = *pair;
    const bool plain = t.dim() == 3 && t.size(0) == batch && t.size(1) == dstate && t.size(2) == len;
    const bool grouped = t.dim() == 4 && t.size(0) == batch && t.size(2) == dstate && t.size(3) == len &&
                         t.size(1) >= 1 && dim % t.size(1) == 0;
    TORCH_CHECK(plain || grouped, "selective_scan: ", name, " must be [batch=", batch, ", N=", dstate, ", L=", len,
                "] or [batch, G, N, L] with G dividing D=", dim, ", got ", t.sizes());
  }
  TORCH_CHECK(in.B.dim() == in.C.dim() && (in.B.dim() == 3 || in.B.size(1) == in.C.size(1)),
              "selective_scan: B ", in.B.sizes(), " and C ", in.C.sizes(), " must have the same grouping");
  auto check_vec = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (t) TORCH_CHECK(t->dim() == 1 && t->size(0) == dim, "selective_scan: ", name, " must be [D=", dim, "], got ", t->sizes());
  };
  check_vec(in.D_skip, "D");
  check_vec(in.delta_bias, "delta_bias");
  if (in.z) TORCH_CHECK(in.z->sizes() == in.u.sizes(), "selective_scan: z must match u ", in.u.sizes(), ", got ", in.z->sizes());
  if (in.initial_state) {
    TORCH_CHECK(in.initial_state->dim() == 3 && in.initial_state->size(0) == batch && in.initial_state->size(1) == dim &&
                    in.initial_state->size(2) == dstate,
                "selective_scan: initial_state must be [batch=", batch, ", D=", dim, ", N=", dstate, "], got ",
                in.initial_state->sizes());
  }
  const auto device = in.u.device();
  for (const at::Tensor* t : {&in.delta, &in.A, &in.B, &in.C})
    TORCH_CHECK(t->device() == device, "selective_scan: all inputs must be on ", device, ", got one on ", t->device());
  for (const auto* t : {&in.D_skip, &in.z, &in.delta_bias, &in.initial_state})
    if (*t) TORCH_CHECK((*t)->device() == device, "selective_scan: all inputs must be on ", device, ", got one on ", (*t)->device());
}

namespace {

template <typename acc_t>
ScanResult scan_cpu(const ScanInputs& in, at::ScalarType acc_type) {
  const int64_t batch = in.u.size(0), dim = in.u.size(1), len = in.u.size(2), dstate = in.A.size(1);
  const bool grouped = in.B.dim() == 4;
  const int64_t groups = grouped ? in.B.size(1) : 1;
  const int64_t per_group = dim / groups;
  auto as_acc = [&](const at::Tensor& t) { return t.to(at::kCPU, acc_type).contiguous(); };
  const at::Tensor u = as_acc(in.u), delta = as_acc(in.delta), A = as_acc(in.A);
  const at::Tensor B = as_acc(grouped ? in.B : in.B.unsqueeze(1)), C = as_acc(grouped ? in.C : in.C.unsqueeze(1));
  const at::Tensor Dv = in.D_skip ? as_acc(*in.D_skip) : at::Tensor();
  const at::Tensor z = in.z ? as_acc(*in.z) : at::Tensor();
  const at::Tensor bias = in.delta_bias ? as_acc(*in.delta_bias) : at::Tensor();
  at::Tensor state = in.initial_state ? as_acc(*in.initial_state).clone() : at::zeros({batch, dim, dstate}, u.options());
  at::Tensor y = at::empty({batch, dim, len}, u.options());

  const acc_t* pu = u.data_ptr<acc_t>();
  const acc_t* pdelta = delta.data_ptr<acc_t>();
  const acc_t* pA = A.data_ptr<acc_t>();
  const acc_t* pB = B.data_ptr<acc_t>();
  const acc_t* pC = C.data_ptr<acc_t>();
  const acc_t* pD = Dv.defined() ? Dv.data_ptr<acc_t>() : nullptr;
  const acc_t* pz = z.defined() ? z.data_ptr<acc_t>() : nullptr;
  const acc_t* pbias = bias.defined() ? bias.data_ptr<acc_t>() : nullptr;
  acc_t* ph = state.data_ptr<acc_t>();
  acc_t* py = y.data_ptr<acc_t>();

  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim, g = d / per_group;
      const acc_t* urow = pu + row * len;
      const acc_t* drow = pdelta + row * len;
      const acc_t* Bg = pB + (b * groups + g) * dstate * len;  // [N, L]
      const acc_t* Cg = pC + (b * groups + g) * dstate * len;
      acc_t* h = ph + row * dstate;
      for (int64_t t = 0; t < len; ++t) {
        acc_t dt = drow[t] + (pbias ? pbias[d] : acc_t(0));
        if (in.delta_softplus) dt = dt <= acc_t(20) ? std::log1p(std::exp(dt)) : dt;
        acc_t out = 0;
        for (int64_t n = 0; n < dstate; ++n) {
          h[n] = std::exp(dt * pA[d * dstate + n]) * h[n] + dt * Bg[n * len + t] * urow[t];
          out += Cg[n * len + t] * h[n];
        }
        if (pD) out += pD[d] * urow[t];
        if (pz) {
          const acc_t zz = pz[row * len + t];
          out *= zz / (acc_t(1) + std::exp(-zz));
        }
        py[row * len + t] = out;
      }
    }
  });
  return {y.to(in.u.scalar_type()), state};
}

}  // namespace

ScanResult selective_scan_reference(const ScanInputs& in) {
  check_scan_inputs(in);
  if (in.u.scalar_type() == at::kDouble) return scan_cpu<double>(in, at::kDouble);
  return scan_cpu<float>(in, at::kFloat);
}

}  // namespace cab::kernels
