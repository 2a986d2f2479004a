// Registers cab's kernels as torch ops (namespace `cab`): schemas, the CPU implementations (the sequential reference
// forward, the analytic backward of scan_cpu_autograd.cpp) and the autograd kernels, which make the forward ops
// differentiable on every device (CUDA implementations: cuda/selective_scan_cuda.cpp).
// Loadable from Python: torch.ops.load_library("libcab_kernels.so"); torch.ops.cab.selective_scan_fwd(...),
// torch.ops.cab.ssd_scan_fwd(...), torch.ops.cab.causal_conv1d(...)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "cab/kernels/conv.h"
#include "cab/kernels/scan.h"
#include "cab/kernels/ssd.h"
#include "scan_ops.h"
#include "ssd_map.h"

namespace cab::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- typed handles of the ops (the public functions and the autograd kernels call through the dispatcher) ----

using ScanFwdSig = ScanFwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, bool,
                              const OptTensor&);
using ScanBwdSig = ScanBwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, bool,
                              const OptTensor&, const at::Tensor&, const OptTensor&);
using BiScanFwdSig = BiScanFwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                  const OptTensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
                                  const OptTensor&, const OptTensor&, bool, double);
using BiScanBwdSig = BiScanBwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                  const OptTensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&,
                                  const OptTensor&, const OptTensor&, bool, double, const at::Tensor&,
                                  const OptTensor&, const OptTensor&);

/// The typed handle of an op (each accessor below looks its op up once).
template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}
#define CAB_OP_HANDLE(accessor, Sig, name)             \
  const c10::TypedOperatorHandle<Sig>& accessor() {     \
    static const auto handle = find_op<Sig>(name);      \
    return handle;                                      \
  }
CAB_OP_HANDLE(fwd_op, ScanFwdSig, "cab::selective_scan_fwd")
CAB_OP_HANDLE(bwd_op, ScanBwdSig, "cab::selective_scan_bwd")
CAB_OP_HANDLE(bi_fwd_op, BiScanFwdSig, "cab::bi_selective_scan_fwd")
CAB_OP_HANDLE(bi_bwd_op, BiScanBwdSig, "cab::bi_selective_scan_bwd")
// Mamba-2's SSD: the same signatures, its tensors under the selective scan's argument names (ssd_map.h).
CAB_OP_HANDLE(ssd_fwd_op, ScanFwdSig, "cab::ssd_scan_fwd")
CAB_OP_HANDLE(ssd_bwd_op, ScanBwdSig, "cab::ssd_scan_bwd")
#undef CAB_OP_HANDLE

OptTensor optional(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
at::Tensor value(const OptTensor& t) { return t ? *t : at::Tensor(); }

// ---- CPU: the reference forward, the analytic backward; the reverse direction on flipped views ----

/// Undoes time_flipped on the gradients of the time-indexed inputs.
ScanGrads flip_back(ScanGrads g) {
  for (at::Tensor* t : {&g.u, &g.delta, &g.z})
    if (t->defined()) *t = t->flip(2);
  for (at::Tensor* t : {&g.B, &g.C}) *t = t->flip(-1);
  return g;
}

struct CpuImpl {
  static std::vector<at::Tensor> forward(const std::vector<ScanInputs>& dirs, double out_scale) {
    const auto f = selective_scan_reference(dirs[0]);
    if (dirs.size() == 1) return {f.y, f.final_state};
    check_bidirectional_inputs(dirs[0], dirs[1]);
    const auto b = selective_scan_reference(time_flipped(dirs[1]));
    const auto acc = f.final_state.scalar_type();
    const at::Tensor y = (f.y.to(acc) + b.y.flip(2).to(acc)) * out_scale;
    return {y.to(dirs[0].u.scalar_type()), f.final_state, b.final_state};
  }

  static std::vector<ScanGrads> backward(const std::vector<ScanInputs>& dirs, double out_scale,
                                         const at::Tensor& grad_y, const std::vector<at::Tensor>& grad_finals) {
    const at::Tensor gy = out_scale == 1.0 ? grad_y : grad_y * out_scale;
    std::vector<ScanGrads> grads{scan_cpu_backward(dirs[0], gy, grad_finals[0])};
    if (dirs.size() == 2)
      grads.push_back(flip_back(scan_cpu_backward(time_flipped(dirs[1]), gy.flip(2), grad_finals[1])));
    return grads;
  }
};

/// The SSD on the CPU: the selective-scan reference and analytic backward on the per-channel form.
struct SsdCpuImpl {
  static std::vector<at::Tensor> forward(const std::vector<ScanInputs>& dirs, double) {
    const ScanInputs& s = dirs[0];
    const auto r = selective_scan_reference(ssd_as_scan(s, false));
    return {scan_y_as_ssd(r.y, s), scan_state_as_ssd(r.final_state, s)};
  }
  static std::vector<ScanGrads> backward(const std::vector<ScanInputs>& dirs, double, const at::Tensor& grad_y,
                                         const std::vector<at::Tensor>& grad_finals) {
    const ScanInputs& s = dirs[0];
    const ScanGrads g = scan_cpu_backward(ssd_as_scan(s, false), ssd_grad_y_as_scan(grad_y), ssd_state_as_scan(grad_finals[0]));
    return {scan_grads_as_ssd(g, s, false)};
  }
};

// ---- autograd: the forward op below autograd, the backward op for the gradients ----

struct SelectiveScanOps {
  static const auto& fwd() { return fwd_op(); }
  static const auto& bwd() { return bwd_op(); }
};
struct SsdScanOps {
  static const auto& fwd() { return ssd_fwd_op(); }
  static const auto& bwd() { return ssd_bwd_op(); }
};

/// One-direction scans (the selective scan, the SSD: same signature) through their fwd/bwd ops.
template <typename Ops>
class ScanFunction : public torch::autograd::Function<ScanFunction<Ops>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                               const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                               const OptTensor& delta_bias, bool delta_softplus, const OptTensor& initial_state) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, state] = Ops::fwd().call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
    ctx->save_for_backward({u, delta, A, B, C, value(D), value(z), value(delta_bias), value(initial_state)});
    ctx->saved_data["softplus"] = delta_softplus;
    return {y, state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(s[0]);
    auto g = Ops::bwd().call(s[0], s[1], s[2], s[3], s[4], optional(s[5]), optional(s[6]), optional(s[7]),
                           ctx->saved_data["softplus"].toBool(), optional(s[8]), grad_y, optional(grads[1]));
    return {std::get<0>(g), std::get<1>(g), std::get<2>(g), std::get<3>(g), std::get<4>(g),
            std::get<5>(g), std::get<6>(g), std::get<7>(g), at::Tensor(), std::get<8>(g)};
  }
};

class BiScanFunction : public torch::autograd::Function<BiScanFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                               const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                               const OptTensor& delta_bias, const OptTensor& initial_state, const at::Tensor& u_b,
                               const at::Tensor& delta_b, const at::Tensor& A_b, const at::Tensor& B_b,
                               const at::Tensor& C_b, const OptTensor& D_b, const OptTensor& z_b,
                               const OptTensor& delta_bias_b, const OptTensor& initial_state_b, bool delta_softplus,
                               double out_scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, state, state_b] = bi_fwd_op().call(u, delta, A, B, C, D, z, delta_bias, initial_state, u_b, delta_b, A_b,
                                                B_b, C_b, D_b, z_b, delta_bias_b, initial_state_b, delta_softplus,
                                                out_scale);
    ctx->save_for_backward({u, delta, A, B, C, value(D), value(z), value(delta_bias), value(initial_state), u_b,
                            delta_b, A_b, B_b, C_b, value(D_b), value(z_b), value(delta_bias_b),
                            value(initial_state_b)});
    ctx->saved_data["softplus"] = delta_softplus;
    ctx->saved_data["out_scale"] = out_scale;
    return {y, state, state_b};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros_like(s[0]);
    const auto g = bi_bwd_op().call(
        s[0], s[1], s[2], s[3], s[4], optional(s[5]), optional(s[6]), optional(s[7]), optional(s[8]), s[9], s[10],
        s[11], s[12], s[13], optional(s[14]), optional(s[15]), optional(s[16]), optional(s[17]),
        ctx->saved_data["softplus"].toBool(), ctx->saved_data["out_scale"].toDouble(), grad_y, optional(grads[1]),
        optional(grads[2]));
    variable_list out;
    std::apply([&](const auto&... t) { (out.push_back(t), ...); }, g);
    out.push_back(at::Tensor());  // delta_softplus
    out.push_back(at::Tensor());  // out_scale
    return out;
  }
};

template <typename Ops>
ScanFwdOut scan_fwd_autograd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                             bool delta_softplus, const OptTensor& initial_state) {
  const auto r = ScanFunction<Ops>::apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
  return {r[0], r[1]};
}

BiScanFwdOut bi_scan_fwd_autograd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                  const OptTensor& delta_bias, const OptTensor& initial_state, const at::Tensor& u_b,
                                  const at::Tensor& delta_b, const at::Tensor& A_b, const at::Tensor& B_b,
                                  const at::Tensor& C_b, const OptTensor& D_b, const OptTensor& z_b,
                                  const OptTensor& delta_bias_b, const OptTensor& initial_state_b,
                                  bool delta_softplus, double out_scale) {
  const auto r = BiScanFunction::apply(u, delta, A, B, C, D, z, delta_bias, initial_state, u_b, delta_b, A_b, B_b, C_b,
                                       D_b, z_b, delta_bias_b, initial_state_b, delta_softplus, out_scale);
  return {r[0], r[1], r[2]};
}

}  // namespace

void check_bidirectional_inputs(const ScanInputs& f, const ScanInputs& b) {
  check_scan_inputs(f);
  check_scan_inputs(b);
  TORCH_CHECK(b.u.sizes() == f.u.sizes() && b.A.sizes() == f.A.sizes() && b.B.sizes() == f.B.sizes() &&
                  b.u.device() == f.u.device(),
              "bidirectional selective_scan: both directions must have the same shapes and device (u ", f.u.sizes(),
              " vs ", b.u.sizes(), ", A ", f.A.sizes(), " vs ", b.A.sizes(), ", B ", f.B.sizes(), " vs ", b.B.sizes(),
              ", ", f.u.device(), " vs ", b.u.device(), ")");
  TORCH_CHECK(f.delta_softplus == b.delta_softplus,
              "bidirectional selective_scan: delta_softplus must be the same for both directions");
}

ScanInputs time_flipped(const ScanInputs& in) {
  ScanInputs out = in;
  out.u = in.u.flip(2);
  out.delta = in.delta.flip(2);
  out.B = in.B.flip(-1);
  out.C = in.C.flip(-1);
  if (in.z) out.z = in.z->flip(2);
  return out;
}

ScanResult selective_scan(const ScanInputs& in) {
  auto [y, state] = fwd_op().call(in.u, in.delta, in.A, in.B, in.C, in.D_skip, in.z, in.delta_bias, in.delta_softplus,
                                  in.initial_state);
  return {y, state};
}

SsdResult ssd_scan(const SsdInputs& in) {
  check_ssd_inputs(in);
  auto [y, state] =
      ssd_fwd_op().call(in.x, in.dt, in.A, in.B, in.C, in.D, in.z, in.dt_bias, in.dt_softplus, in.initial_state);
  return {y, state};
}

BiScanResult bi_selective_scan(const ScanInputs& fwd, const ScanInputs& bwd, double out_scale) {
  check_bidirectional_inputs(fwd, bwd);  // the op takes one delta_softplus
  auto [y, state, state_b] =
      bi_fwd_op().call(fwd.u, fwd.delta, fwd.A, fwd.B, fwd.C, fwd.D_skip, fwd.z, fwd.delta_bias, fwd.initial_state,
                       bwd.u, bwd.delta, bwd.A, bwd.B, bwd.C, bwd.D_skip, bwd.z, bwd.delta_bias, bwd.initial_state,
                       fwd.delta_softplus, out_scale);
  return {y, state, state_b};
}

TORCH_LIBRARY(cab, m) {
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)");
  // Gradients of every input (None for absent optional inputs) from those of y and the final state.
  m.def(
      "selective_scan_bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, Tensor grad_y, Tensor? grad_final_state) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Both directions of a bidirectional layer: the *_b inputs in natural time order, scanned from the last step to
  // the first; y = out_scale * (y_fwd + y_bwd); the final states of both directions.
  m.def(
      "bi_selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, Tensor? initial_state, Tensor u_b, Tensor delta_b, Tensor A_b, Tensor B_b, Tensor C_b, "
      "Tensor? D_b, Tensor? z_b, Tensor? delta_bias_b, Tensor? initial_state_b, bool delta_softplus=False, "
      "float out_scale=0.5) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bi_selective_scan_bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, Tensor? initial_state, Tensor u_b, Tensor delta_b, Tensor A_b, Tensor B_b, Tensor C_b, "
      "Tensor? D_b, Tensor? z_b, Tensor? delta_bias_b, Tensor? initial_state_b, bool delta_softplus, float out_scale, "
      "Tensor grad_y, Tensor? grad_final_state, Tensor? grad_final_state_b) -> (Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Mamba-2's SSD (cab/kernels/ssd.h): x, z [batch, L, H, P]; dt [batch, L, H]; A, dt_bias [H]; B, C [batch, L, G, N];
  // D [H] or [H, P]; initial_state [batch, H, P, N] -> y [batch, L, H, P], final_state [batch, H, P, N].
  m.def(
      "ssd_scan_fwd(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? dt_bias=None, bool dt_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)");
  m.def(
      "ssd_scan_bwd(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? dt_bias, "
      "bool dt_softplus, Tensor? initial_state, Tensor grad_y, Tensor? grad_final_state) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Mamba's depthwise causal conv1d (cab/kernels/conv.h): x [batch, dim, L], weight [dim, 1, K] or [dim, K] (K ≤ 8),
  // bias [dim]; `reverse`: the conv over the time-reversed sequence, in natural order; `silu`: silu applied.
  m.def("causal_conv1d(Tensor x, Tensor weight, Tensor? bias=None, bool reverse=False, bool silu=True) -> Tensor");
}

// causal_conv1d picks its device itself (LibTorch's conv1d on the CPU, cab's kernels under an autograd function on
// CUDA), so one composite kernel serves every device and autograd records what it calls.
TORCH_LIBRARY_IMPL(cab, CompositeImplicitAutograd, m) {
  m.impl("causal_conv1d", [](const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias, bool reverse,
                             bool silu) { return causal_conv1d(x, weight, bias.value_or(at::Tensor()), reverse, silu); });
}

TORCH_LIBRARY_IMPL(cab, CPU, m) {
  m.impl("selective_scan_fwd", &ScanOps<CpuImpl>::fwd);
  m.impl("selective_scan_bwd", &ScanOps<CpuImpl>::bwd);
  m.impl("bi_selective_scan_fwd", &ScanOps<CpuImpl>::bi_fwd);
  m.impl("bi_selective_scan_bwd", &ScanOps<CpuImpl>::bi_bwd);
  m.impl("ssd_scan_fwd", &ScanOps<SsdCpuImpl>::fwd);
  m.impl("ssd_scan_bwd", &ScanOps<SsdCpuImpl>::bwd);
}

TORCH_LIBRARY_IMPL(cab, Autograd, m) {
  m.impl("selective_scan_fwd", &scan_fwd_autograd<SelectiveScanOps>);
  m.impl("ssd_scan_fwd", &scan_fwd_autograd<SsdScanOps>);
  m.impl("bi_selective_scan_fwd", &bi_scan_fwd_autograd);
}

}  // namespace cab::kernels
