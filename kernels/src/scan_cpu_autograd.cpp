// The selective scan on the CPU with its analytic backward pass, as a LibTorch autograd function: the fast path
// for training on CPUs (the chunked LibTorch form materializes [batch, T, T, D, N] tensors and is memory-bound).
//
// Forward per (batch, channel) row, in fp32 (fp64 for fp64 inputs): Δ_t = softplus(δ_t + bias),
// h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t, y_t = C_t·h_t + D u_t, out_t = y_t · silu(z_t).
// Backward per row: the states are recomputed (L·N values per row, nothing is stored between the passes), then
//   with g = ∂L/∂h_t carried backwards:  ∂Δ_t = Σ_n g_n (a_n A_n h_{t−1,n} + B_{t,n} u_t),  ∂A_n += g_n a_n Δ_t h_{t−1,n},
//   ∂B_{t,n} = g_n Δ_t u_t,  ∂u_t = D ∂y_t + Σ_n g_n Δ_t B_{t,n},  ∂C_{t,n} = ∂y_t h_{t,n},  g ← g ⊙ a  (a = exp(Δ_t A)).
// The adjoint starts from the gradient of the final state (zero when the final state is unused). Per-row partial
// gradients of the shared tensors (A, D, bias, grouped B/C) are reduced afterwards, so rows run in parallel
// without atomics.
#include <torch/autograd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "scan_cpu_autograd.h"
#include "scan_ops.h"

namespace cab::kernels {

namespace {

template <typename T>
T softplus(T x) {
  return x <= T(20) ? std::log1p(std::exp(x)) : x;
}
template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// a[n] = exp(Δ·A[n]) for the N states: one vectorizable loop (this file is compiled with vector math).
template <typename T>
void decays(T* __restrict a, const T* __restrict A, T dt, int64_t N) {
#pragma omp simd
  for (int64_t n = 0; n < N; ++n) a[n] = std::exp(dt * A[n]);
}

struct Views {  // contiguous accumulation-type copies of the inputs; B/C as [batch, G, N, L]
  at::Tensor u, delta, A, B, C, D, z, bias, h0;
  int64_t batch, dim, len, dstate, groups;
};

Views views(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
            const at::Tensor& D, const at::Tensor& z, const at::Tensor& bias, const at::Tensor& h0) {
  const auto acc = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // Absent optional inputs arrive as empty placeholders (autograd functions cannot take undefined tensors).
  auto as = [&](const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.to(acc).contiguous() : at::Tensor(); };
  Views v{as(u), as(delta), as(A), as(B.dim() == 4 ? B : B.unsqueeze(1)), as(C.dim() == 4 ? C : C.unsqueeze(1)),
          as(D), as(z), as(bias), as(h0), u.size(0), u.size(1), u.size(2), A.size(1), 1};
  v.groups = v.B.size(1);
  return v;
}

template <typename acc_t>
void forward_rows(const Views& v, bool softplus_delta, at::Tensor& y, at::Tensor& state) {
  const int64_t dim = v.dim, len = v.len, N = v.dstate, per_group = dim / v.groups;
  const acc_t *pu = v.u.data_ptr<acc_t>(), *pdelta = v.delta.data_ptr<acc_t>(), *pA = v.A.data_ptr<acc_t>();
  const acc_t *pB = v.B.data_ptr<acc_t>(), *pC = v.C.data_ptr<acc_t>();
  const acc_t* pD = v.D.defined() ? v.D.data_ptr<acc_t>() : nullptr;
  const acc_t* pz = v.z.defined() ? v.z.data_ptr<acc_t>() : nullptr;
  const acc_t* pbias = v.bias.defined() ? v.bias.data_ptr<acc_t>() : nullptr;
  acc_t *ph = state.data_ptr<acc_t>(), *py = y.data_ptr<acc_t>();
  at::parallel_for(0, v.batch * dim, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim, g = d / per_group;
      const acc_t *Bg = pB + (b * v.groups + g) * N * len, *Cg = pC + (b * v.groups + g) * N * len;
      const acc_t* Ad = pA + d * N;
      acc_t* h = ph + row * N;
      std::vector<acc_t> a(N);
      for (int64_t t = 0; t < len; ++t) {
        acc_t dt = pdelta[row * len + t] + (pbias ? pbias[d] : acc_t(0));
        if (softplus_delta) dt = softplus(dt);
        const acc_t x = pu[row * len + t];
        decays(a.data(), Ad, dt, N);
        acc_t out = 0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = a[n] * h[n] + dt * Bg[n * len + t] * x;
          out += Cg[n * len + t] * h[n];
        }
        if (pD) out += pD[d] * x;
        if (pz) out *= pz[row * len + t] * sigmoid(pz[row * len + t]);
        py[row * len + t] = out;
      }
    }
  });
}

template <typename acc_t>
ScanGrads backward_rows(const Views& v, bool softplus_delta, const at::Tensor& grad_out, const at::Tensor& grad_final) {
  const int64_t batch = v.batch, dim = v.dim, len = v.len, N = v.dstate, per_group = dim / v.groups;
  const auto opt = v.u.options();
  ScanGrads gr;
  gr.u = at::zeros_like(v.u);
  gr.delta = at::zeros_like(v.u);
  at::Tensor dA_rows = at::zeros({batch * dim, N}, opt), dB_rows = at::zeros({batch, dim, N, len}, opt);
  at::Tensor dC_rows = at::zeros({batch, dim, N, len}, opt), dD_rows = at::zeros({batch * dim}, opt);
  at::Tensor dbias_rows = at::zeros({batch * dim}, opt);
  gr.initial_state = at::zeros({batch, dim, N}, opt);
  if (v.z.defined()) gr.z = at::zeros_like(v.u);
  const at::Tensor go = grad_out.to(opt.dtype()).contiguous();
  const at::Tensor gfinal = grad_final.defined() ? grad_final.to(opt.dtype()).contiguous() : at::Tensor();
  const acc_t* pgfinal = gfinal.defined() ? gfinal.data_ptr<acc_t>() : nullptr;
  const acc_t *pu = v.u.data_ptr<acc_t>(), *pdelta = v.delta.data_ptr<acc_t>(), *pA = v.A.data_ptr<acc_t>();
  const acc_t *pB = v.B.data_ptr<acc_t>(), *pC = v.C.data_ptr<acc_t>(), *pgo = go.data_ptr<acc_t>();
  const acc_t* pD = v.D.defined() ? v.D.data_ptr<acc_t>() : nullptr;
  const acc_t* pz = v.z.defined() ? v.z.data_ptr<acc_t>() : nullptr;
  const acc_t* pbias = v.bias.defined() ? v.bias.data_ptr<acc_t>() : nullptr;
  const acc_t* ph0 = v.h0.defined() ? v.h0.data_ptr<acc_t>() : nullptr;
  acc_t *du = gr.u.data_ptr<acc_t>(), *ddelta = gr.delta.data_ptr<acc_t>(), *dA = dA_rows.data_ptr<acc_t>();
  acc_t *dB = dB_rows.data_ptr<acc_t>(), *dC = dC_rows.data_ptr<acc_t>(), *dD = dD_rows.data_ptr<acc_t>();
  acc_t *dbias = dbias_rows.data_ptr<acc_t>(), *dh0 = gr.initial_state.data_ptr<acc_t>();
  acc_t* dz = pz ? gr.z.data_ptr<acc_t>() : nullptr;
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> hs((len + 1) * N), as(len * N), dts(len), raw(len), ypre(len), g(N);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim, grp = d / per_group;
      const acc_t *Bg = pB + (b * v.groups + grp) * N * len, *Cg = pC + (b * v.groups + grp) * N * len;
      const acc_t* Ad = pA + d * N;
      const acc_t* x = pu + row * len;
      for (int64_t n = 0; n < N; ++n) hs[n] = ph0 ? ph0[row * N + n] : acc_t(0);
      for (int64_t t = 0; t < len; ++t) {  // recompute the states and the pre-gate outputs
        raw[t] = pdelta[row * len + t] + (pbias ? pbias[d] : acc_t(0));
        const acc_t dt = dts[t] = softplus_delta ? softplus(raw[t]) : raw[t];
        acc_t* a = as.data() + t * N;
        decays(a, Ad, dt, N);
        acc_t out = 0;
        for (int64_t n = 0; n < N; ++n) {
          const acc_t h = hs[(t + 1) * N + n] = a[n] * hs[t * N + n] + dt * Bg[n * len + t] * x[t];
          out += Cg[n * len + t] * h;
        }
        ypre[t] = out + (pD ? pD[d] * x[t] : acc_t(0));
      }
      for (int64_t n = 0; n < N; ++n) g[n] = pgfinal ? pgfinal[row * N + n] : acc_t(0);
      acc_t dD_row = 0, dbias_row = 0;
      acc_t* dA_row = dA + row * N;
      acc_t* dB_row = dB + row * N * len;
      acc_t* dC_row = dC + row * N * len;
      for (int64_t t = len - 1; t >= 0; --t) {
        acc_t dy = pgo[row * len + t];
        if (pz) {
          const acc_t zz = pz[row * len + t], s = sigmoid(zz);
          dz[row * len + t] = dy * ypre[t] * s * (acc_t(1) + zz * (acc_t(1) - s));
          dy *= zz * s;
        }
        if (pD) dD_row += dy * x[t];
        acc_t du_t = pD ? dy * pD[d] : acc_t(0), ddt = 0;
        const acc_t dt = dts[t];
        for (int64_t n = 0; n < N; ++n) {
          const acc_t h_prev = hs[t * N + n];
          dC_row[n * len + t] = dy * hs[(t + 1) * N + n];
          const acc_t gn = g[n] + dy * Cg[n * len + t];  // ∂L/∂h_t
          const acc_t a = as[t * N + n];
          ddt += gn * (a * Ad[n] * h_prev + Bg[n * len + t] * x[t]);
          dA_row[n] += gn * a * dt * h_prev;
          dB_row[n * len + t] = gn * dt * x[t];
          du_t += gn * dt * Bg[n * len + t];
          g[n] = gn * a;  // ∂L/∂h_{t−1}
        }
        du[row * len + t] = du_t;
        const acc_t draw = softplus_delta ? ddt * sigmoid(raw[t]) : ddt;
        ddelta[row * len + t] = draw;
        dbias_row += draw;
      }
      for (int64_t n = 0; n < N; ++n) dh0[row * N + n] = g[n];
      dD[row] = dD_row;
      dbias[row] = dbias_row;
    }
  });
  gr.A = dA_rows.view({batch, dim, N}).sum(0);
  gr.D = dD_rows.view({batch, dim}).sum(0);
  gr.delta_bias = dbias_rows.view({batch, dim}).sum(0);
  gr.B = dB_rows.view({batch, v.groups, per_group, N, len}).sum(2);  // [batch, G, N, L]
  gr.C = dC_rows.view({batch, v.groups, per_group, N, len}).sum(2);
  return gr;
}

/// grad_y, grad_final: undefined when unused.
ScanGrads backward_views(const Views& v, bool softplus_delta, const at::Tensor& grad_y, const at::Tensor& grad_final) {
  const at::Tensor gy = grad_y.defined() ? grad_y : at::zeros({v.batch, v.dim, v.len}, v.u.options());
  return v.u.scalar_type() == at::kDouble ? backward_rows<double>(v, softplus_delta, gy, grad_final)
                                          : backward_rows<float>(v, softplus_delta, gy, grad_final);
}

class CpuScan : public torch::autograd::Function<CpuScan> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& u,
                                                const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                                const at::Tensor& C, const at::Tensor& D, const at::Tensor& z,
                                                const at::Tensor& bias, const at::Tensor& h0, bool softplus_delta) {
    const Views v = views(u, delta, A, B, C, D, z, bias, h0);
    at::Tensor y = at::empty({v.batch, v.dim, v.len}, v.u.options());
    at::Tensor state = v.h0.defined() ? v.h0.clone() : at::zeros({v.batch, v.dim, v.dstate}, v.u.options());
    if (v.u.scalar_type() == at::kDouble) forward_rows<double>(v, softplus_delta, y, state);
    else forward_rows<float>(v, softplus_delta, y, state);
    ctx->save_for_backward({u, delta, A, B, C, D, z, bias, h0});
    ctx->saved_data["softplus"] = softplus_delta;
    return {y.to(u.scalar_type()), state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor &u = s[0], &delta = s[1], &A = s[2], &B = s[3], &C = s[4], &D = s[5], &z = s[6], &bias = s[7],
                     &h0 = s[8];
    const ScanGrads g = backward_views(views(u, delta, A, B, C, D, z, bias, h0), ctx->saved_data["softplus"].toBool(),
                                       grads[0], grads[1]);
    auto like = [](const at::Tensor& grad, const at::Tensor& input) {
      return input.numel() > 0 && grad.defined() ? grad.view(input.sizes()).to(input.scalar_type()) : at::Tensor();
    };
    return {like(g.u, u), like(g.delta, delta), like(g.A, A),             like(g.B, B),
            like(g.C, C), like(g.D, D),         like(g.z, z),             like(g.delta_bias, bias),
            like(g.initial_state, h0),          at::Tensor()};
  }
};

at::Tensor opt(const std::optional<at::Tensor>& t, const at::Tensor& like) {
  return t ? *t : at::empty({0}, like.options());
}

}  // namespace

ScanGrads scan_cpu_backward(const ScanInputs& in, const at::Tensor& grad_y, const at::Tensor& grad_final) {
  check_scan_inputs(in);
  TORCH_CHECK(in.u.device().is_cpu(), "scan_cpu_backward: inputs must be on the CPU, got ", in.u.device());
  auto value = [](const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); };
  const Views v = views(in.u, in.delta, in.A, in.B, in.C, value(in.D_skip), value(in.z), value(in.delta_bias),
                        value(in.initial_state));
  ScanGrads g = backward_views(v, in.delta_softplus, grad_y, grad_final);
  // Gradients in the inputs' shapes and dtypes; absent inputs get none.
  auto like = [](const at::Tensor& grad, const std::optional<at::Tensor>& input) {
    return input && grad.defined() ? grad.view(input->sizes()).to(input->scalar_type()) : at::Tensor();
  };
  return {like(g.u, in.u),       like(g.delta, in.delta), like(g.A, in.A),
          like(g.B, in.B),       like(g.C, in.C),         like(g.D, in.D_skip),
          like(g.z, in.z),       like(g.delta_bias, in.delta_bias), like(g.initial_state, in.initial_state)};
}

ScanResult scan_cpu_autograd(const ScanInputs& in) {
  check_scan_inputs(in);
  TORCH_CHECK(in.u.device().is_cpu(), "scan_cpu_autograd: inputs must be on the CPU, got ", in.u.device());
  const auto out = CpuScan::apply(in.u, in.delta, in.A, in.B, in.C, opt(in.D_skip, in.u), opt(in.z, in.u),
                                  opt(in.delta_bias, in.u), opt(in.initial_state, in.u), in.delta_softplus);
  return {out[0], out[1]};
}

}  // namespace cab::kernels
