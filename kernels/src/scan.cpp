// Differentiable selective scans in LibTorch ops: a sequential loop and a chunked parallel form.
#include "cab/kernels/scan.h"

#include "scan_cpu_autograd.h"
#include "scan_ops.h"

#include <ATen/ATen.h>

namespace cab::kernels {

namespace {

struct Prepared {
  at::Tensor u, delta, A, B, C;  // u, delta: [b, d, L]; A: [d, n]; B, C: [b, d, n, L] (groups expanded)
  int64_t batch, dim, len, dstate;
};

Prepared prepare(const ScanInputs& in) {
  check_scan_inputs(in);
  Prepared p;
  p.batch = in.u.size(0);
  p.dim = in.u.size(1);
  p.len = in.u.size(2);
  p.dstate = in.A.size(1);
  const auto acc = in.u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  p.u = in.u.to(acc);
  p.delta = in.delta.to(acc);
  if (in.delta_bias) p.delta = p.delta + in.delta_bias->to(acc).view({1, p.dim, 1});
  if (in.delta_softplus) p.delta = at::softplus(p.delta);
  p.A = in.A.to(acc);
  auto expand = [&](const at::Tensor& t) {
    at::Tensor g = (t.dim() == 4 ? t : t.unsqueeze(1)).to(acc);  // [b, G, n, L]
    return g.repeat_interleave(p.dim / g.size(1), 1);            // [b, d, n, L]
  };
  p.B = expand(in.B);
  p.C = expand(in.C);
  return p;
}

ScanResult finish(const ScanInputs& in, const Prepared& p, at::Tensor y, at::Tensor state) {
  if (in.D_skip) y = y + p.u * in.D_skip->to(y.scalar_type()).view({1, p.dim, 1});
  if (in.z) y = y * at::silu(in.z->to(y.scalar_type()));
  return {y.to(in.u.scalar_type()), state};
}

at::Tensor initial_state(const ScanInputs& in, const Prepared& p) {
  return in.initial_state ? in.initial_state->to(p.u.scalar_type())
                          : at::zeros({p.batch, p.dim, p.dstate}, p.u.options());
}

ScanResult sequential(const ScanInputs& in) {
  const Prepared p = prepare(in);
  at::Tensor h = initial_state(in, p);  // [b, d, n]
  std::vector<at::Tensor> ys;
  ys.reserve(p.len);
  for (int64_t t = 0; t < p.len; ++t) {
    const at::Tensor dt = p.delta.select(2, t).unsqueeze(-1);                   // [b, d, 1]
    h = at::exp(dt * p.A) * h + dt * p.B.select(3, t) * p.u.select(2, t).unsqueeze(-1);
    ys.push_back((h * p.C.select(3, t)).sum(-1));                               // [b, d]
  }
  return finish(in, p, at::stack(ys, 2), h);
}

ScanResult chunked(const ScanInputs& in, int64_t chunk) {
  const Prepared p = prepare(in);
  at::Tensor h = initial_state(in, p);  // [b, d, n]
  std::vector<at::Tensor> ys;
  for (int64_t start = 0; start < p.len; start += chunk) {
    const int64_t T = std::min(chunk, p.len - start);
    const at::Tensor dt = p.delta.narrow(2, start, T).transpose(1, 2).unsqueeze(-1);     // [b, T, d, 1]
    const at::Tensor u = p.u.narrow(2, start, T).transpose(1, 2).unsqueeze(-1);          // [b, T, d, 1]
    const at::Tensor B = p.B.narrow(3, start, T).permute({0, 3, 1, 2});                  // [b, T, d, n]
    const at::Tensor C = p.C.narrow(3, start, T).permute({0, 3, 1, 2});                  // [b, T, d, n]
    const at::Tensor S = at::cumsum(dt * p.A, 1);                                        // [b, T, d, n] Σ Δ_k A
    const at::Tensor X = dt * B * u;                                                      // [b, T, d, n]
    // decay[t, s] = exp(S_t − S_s) for s ≤ t, else 0 (masked before exp, so nothing overflows)
    const at::Tensor diff = S.unsqueeze(2) - S.unsqueeze(1);                              // [b, T, T, d, n]
    const at::Tensor causal = at::ones({T, T}, at::kBool).tril().view({1, T, T, 1, 1}).to(diff.device());
    const at::Tensor decay = at::exp(diff.masked_fill(causal.logical_not(), -INFINITY));
    const at::Tensor states = (decay * X.unsqueeze(1)).sum(2) + at::exp(S) * h.unsqueeze(1);  // [b, T, d, n] h_t
    ys.push_back((states * C).sum(-1).transpose(1, 2));                                  // [b, d, T]
    h = states.select(1, T - 1);
  }
  return finish(in, p, at::cat(ys, 2), h);
}

}  // namespace

at::Tensor mixing_matrix(const ScanInputs& in) {
  const Prepared p = prepare(in);
  const at::Tensor S = at::cumsum(p.delta.unsqueeze(2) * p.A.unsqueeze(-1), -1);  // [b, d, n, L] Σ_{k≤t} Δ_k A
  const at::Tensor causal = at::ones({p.len, p.len}, at::TensorOptions(at::kBool).device(S.device())).tril();
  at::Tensor M = at::zeros({p.batch, p.dim, p.len, p.len}, p.u.options());
  for (int64_t n = 0; n < p.dstate; ++n) {  // one state at a time: memory stays [b, d, L, L]
    const at::Tensor s = S.select(2, n);                                          // [b, d, L]
    const at::Tensor decay = at::exp((s.unsqueeze(-1) - s.unsqueeze(-2)).masked_fill(causal.logical_not(), -INFINITY));
    M = M + p.C.select(2, n).unsqueeze(-1) * decay * (p.delta * p.B.select(2, n)).unsqueeze(-2);
  }
  if (in.D_skip) M = M + at::diag_embed(in.D_skip->to(M.scalar_type()).view({1, p.dim, 1}).expand({p.batch, p.dim, p.len}));
  return M;
}

namespace {

/// automatic → the kernels where they run: on the CPU, and on CUDA devices in fp32/fp16/bf16 when this build has
/// them; anything else (fp64 on a GPU, other devices) takes the chunked LibTorch form.
ScanBackend resolve(ScanBackend backend, const ScanInputs& in) {
  if (backend != ScanBackend::automatic) return backend;
  const bool kernel =
      in.u.device().is_cpu() || (in.u.is_cuda() && built_with_cuda() && in.u.scalar_type() != at::kDouble);
  return kernel ? ScanBackend::kernel : ScanBackend::chunked;
}

}  // namespace

ScanResult scan(const ScanInputs& in, ScanBackend backend, int64_t chunk) {
  TORCH_CHECK(chunk >= 1, "scan: chunk must be >= 1, got ", chunk);
  switch (resolve(backend, in)) {
    case ScanBackend::sequential: return sequential(in);
    case ScanBackend::chunked: return chunked(in, chunk);
    default:
      // CPU training takes the vectorized CPU kernel with its own backward; otherwise the op, whose autograd kernel
      // runs the device's backward (the CUDA backward on GPUs, the same analytic one on the CPU).
      return in.u.device().is_cpu() && at::GradMode::is_enabled() ? scan_cpu_autograd(in) : selective_scan(in);
  }
}

BiScanResult bidirectional_scan(const ScanInputs& fwd, const ScanInputs& bwd, double out_scale, ScanBackend backend,
                                int64_t chunk) {
  check_bidirectional_inputs(fwd, bwd);
  backend = resolve(backend, fwd);
  if (backend == ScanBackend::kernel && !(fwd.u.device().is_cpu() && at::GradMode::is_enabled()))
    return bi_selective_scan(fwd, bwd, out_scale);
  const ScanResult f = scan(fwd, backend, chunk), b = scan(time_flipped(bwd), backend, chunk);
  return {(f.y + b.y.flip(2)) * out_scale, f.final_state, b.final_state};
}

}  // namespace cab::kernels
