// Mamba-2's SSD on the selective scan: the mapping of ssd_map.h, the checks, the CPU implementation.
#include "ssd_map.h"

#include <ATen/ATen.h>

namespace cab::kernels {

namespace {

struct SsdSizes {
  int64_t batch, len, heads, head_dim, groups, dstate;
  int64_t dim() const { return heads * head_dim; }
};

SsdSizes sizes_of(const ScanInputs& s) {
  return {s.u.size(0), s.u.size(1), s.u.size(2), s.u.size(3), s.B.size(2), s.B.size(3)};
}

/// [b, L, H, P] → [b, H·P, L]
at::Tensor channels_last_time(const at::Tensor& t, const SsdSizes& z) {
  return t.reshape({z.batch, z.len, z.dim()}).transpose(1, 2);
}

}  // namespace

void check_ssd_packed(const ScanInputs& s) {
  TORCH_CHECK(s.u.dim() == 4, "ssd_scan: x must be [batch, L, H, P], got ", s.u.sizes());
  const int64_t batch = s.u.size(0), len = s.u.size(1), heads = s.u.size(2), head_dim = s.u.size(3);
  TORCH_CHECK(len >= 1 && heads >= 1 && head_dim >= 1, "ssd_scan: x must have L, H, P >= 1, got ", s.u.sizes());
  TORCH_CHECK(s.delta.dim() == 3 && s.delta.size(0) == batch && s.delta.size(1) == len && s.delta.size(2) == heads,
              "ssd_scan: dt must be [batch=", batch, ", L=", len, ", H=", heads, "], got ", s.delta.sizes());
  TORCH_CHECK(s.A.dim() == 1 && s.A.size(0) == heads, "ssd_scan: A must be [H=", heads, "] (one decay per head), got ",
              s.A.sizes());
  for (const auto* t : {&s.B, &s.C}) {
    const char* name = t == &s.B ? "B" : "C";
    TORCH_CHECK(t->dim() == 4 && t->size(0) == batch && t->size(1) == len && t->size(2) >= 1 && heads % t->size(2) == 0,
                "ssd_scan: ", name, " must be [batch=", batch, ", L=", len, ", G, N] with G dividing H=", heads, ", got ",
                t->sizes());
  }
  TORCH_CHECK(s.B.sizes() == s.C.sizes(), "ssd_scan: B ", s.B.sizes(), " and C ", s.C.sizes(), " must have the same shape");
  const int64_t dstate = s.B.size(3);
  TORCH_CHECK(dstate >= 1 && dstate <= 256, "ssd_scan: N must be in [1, 256], got ", dstate);
  if (s.D_skip)
    TORCH_CHECK((s.D_skip->dim() == 1 && s.D_skip->size(0) == heads) ||
                    (s.D_skip->dim() == 2 && s.D_skip->size(0) == heads && s.D_skip->size(1) == head_dim),
                "ssd_scan: D must be [H=", heads, "] or [H, P=", head_dim, "], got ", s.D_skip->sizes());
  if (s.z) TORCH_CHECK(s.z->sizes() == s.u.sizes(), "ssd_scan: z must match x ", s.u.sizes(), ", got ", s.z->sizes());
  if (s.delta_bias)
    TORCH_CHECK(s.delta_bias->dim() == 1 && s.delta_bias->size(0) == heads, "ssd_scan: dt_bias must be [H=", heads,
                "], got ", s.delta_bias->sizes());
  if (s.initial_state)
    TORCH_CHECK(s.initial_state->sizes() == at::IntArrayRef({batch, heads, head_dim, dstate}), "ssd_scan: initial_state must be [batch=",
                batch, ", H=", heads, ", P=", head_dim, ", N=", dstate, "], got ", s.initial_state->sizes());
  const auto device = s.u.device();
  for (const at::Tensor* t : {&s.delta, &s.A, &s.B, &s.C})
    TORCH_CHECK(t->device() == device, "ssd_scan: all inputs must be on ", device, ", got one on ", t->device());
  for (const auto* t : {&s.D_skip, &s.z, &s.delta_bias, &s.initial_state})
    if (*t) TORCH_CHECK((*t)->device() == device, "ssd_scan: all inputs must be on ", device, ", got one on ", (*t)->device());
  for (const at::Tensor* t : {&s.u, &s.delta, &s.A, &s.B, &s.C})
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), "ssd_scan: inputs must be floating point, got ", t->scalar_type());
}

ScanInputs ssd_as_scan(const ScanInputs& s, bool per_head_delta) {
  check_ssd_packed(s);
  const SsdSizes z = sizes_of(s);
  auto per_channel = [&](const at::Tensor& per_head) { return per_head.repeat_interleave(z.head_dim, 0); };
  ScanInputs out;
  out.u = channels_last_time(s.u, z);
  out.delta = per_head_delta ? s.delta.transpose(1, 2) : s.delta.repeat_interleave(z.head_dim, 2).transpose(1, 2);
  const auto acc = s.A.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  out.A = per_channel(s.A.to(acc)).unsqueeze(1).expand({z.dim(), z.dstate}).contiguous();
  out.B = s.B.permute({0, 2, 3, 1});
  out.C = s.C.permute({0, 2, 3, 1});
  if (s.D_skip) out.D_skip = s.D_skip->dim() == 1 ? per_channel(*s.D_skip) : s.D_skip->reshape({z.dim()});
  if (s.z) out.z = channels_last_time(*s.z, z);
  if (s.delta_bias) out.delta_bias = per_channel(*s.delta_bias);
  if (s.initial_state) out.initial_state = s.initial_state->reshape({z.batch, z.dim(), z.dstate});
  out.delta_softplus = s.delta_softplus;
  return out;
}

at::Tensor scan_y_as_ssd(const at::Tensor& y, const ScanInputs& s) {
  return y.transpose(1, 2).reshape(s.u.sizes());
}
at::Tensor scan_state_as_ssd(const at::Tensor& state, const ScanInputs& s) {
  return state.reshape({s.u.size(0), s.u.size(2), s.u.size(3), s.B.size(3)});
}
at::Tensor ssd_grad_y_as_scan(const at::Tensor& grad_y) {
  return grad_y.reshape({grad_y.size(0), grad_y.size(1), grad_y.size(2) * grad_y.size(3)}).transpose(1, 2);
}
at::Tensor ssd_state_as_scan(const at::Tensor& state) {
  return state.defined() ? state.reshape({state.size(0), state.size(1) * state.size(2), state.size(3)}) : state;
}

ScanGrads scan_grads_as_ssd(const ScanGrads& g, const ScanInputs& s, bool per_head_delta) {
  const SsdSizes z = sizes_of(s);
  auto as = [](const at::Tensor& t, const at::Tensor& like) { return t.to(like.scalar_type()); };
  auto head_sum = [&](const at::Tensor& per_channel) {  // [H·P] → [H]
    return per_channel.reshape({z.heads, z.head_dim}).sum(1);
  };
  ScanGrads out;
  out.u = as(scan_y_as_ssd(g.u, s), s.u);
  out.delta = per_head_delta ? as(g.delta.transpose(1, 2), s.delta)
                             : as(g.delta.reshape({z.batch, z.heads, z.head_dim, z.len}).sum(2).transpose(1, 2), s.delta);
  out.A = as(g.A.reshape({z.heads, z.head_dim * z.dstate}).sum(1), s.A);
  out.B = as(g.B.permute({0, 3, 1, 2}), s.B);
  out.C = as(g.C.permute({0, 3, 1, 2}), s.C);
  if (s.D_skip) out.D = as(s.D_skip->dim() == 1 ? head_sum(g.D) : g.D.reshape(s.D_skip->sizes()), *s.D_skip);
  if (s.z) out.z = as(scan_y_as_ssd(g.z, s), *s.z);
  if (s.delta_bias) out.delta_bias = as(head_sum(g.delta_bias), *s.delta_bias);
  if (s.initial_state) out.initial_state = as(scan_state_as_ssd(g.initial_state, s), *s.initial_state);
  return out;
}

void check_ssd_inputs(const SsdInputs& in) {
  check_ssd_packed(ScanInputs{in.x, in.dt, in.A, in.B, in.C, in.D, in.z, in.dt_bias, in.initial_state, in.dt_softplus});
}

}  // namespace cab::kernels
