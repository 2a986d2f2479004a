// Host side of the chunked SSD (ssd_chunked.cuh): which inputs it takes, their staging, the work buffers and the
// gradients in the inputs' shapes and dtypes.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

#include "ssd_chunked.cuh"
#include "ssd_map.h"

namespace cab::kernels {

namespace {

int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }

cuda::SsdStrides strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

/// Read through their strides when the last dimension has unit stride (views of a projection), else copied.
at::Tensor unit_last(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

cuda::ScanDtype kernel_dtype(const ScanInputs& s) {
  return s.u.scalar_type() == at::kHalf ? cuda::ScanDtype::f16 : cuda::ScanDtype::bf16;
}

/// Whether a [batch, L, heads, P] tensor's rows start on 16-byte boundaries (data, strides), P a multiple of 8.
bool rows_of_8(const at::Tensor& t) {
  if (!t.defined()) return true;
  const int64_t bytes = t.element_size();
  return t.size(3) % 8 == 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
         (t.stride(0) * bytes) % 16 == 0 && (t.stride(1) * bytes) % 16 == 0 && (t.stride(2) * bytes) % 16 == 0;
}

/// The inputs staged for the kernels, the work buffers, and the parameters pointing into them.
struct Staged {
  at::Tensor x, dt, B, C, z, A, D, bias, h0;
  at::Tensor dt_v, cum, states, states_bf16;
  cuda::SsdChunkedParams p;
  at::TensorOptions f32;

  Staged(const ScanInputs& s, const ScanAllocator& alloc) {
    check_ssd_packed(s);
    x = unit_last(s.u);
    dt = s.delta;
    B = unit_last(s.B);
    C = unit_last(s.C);
    if (s.z) z = unit_last(*s.z);
    auto fp32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
    A = fp32(s.A);
    if (s.D_skip) D = fp32(*s.D_skip);
    if (s.delta_bias) bias = fp32(*s.delta_bias);
    if (s.initial_state) h0 = fp32(*s.initial_state);
    p.batch = static_cast<int>(x.size(0));
    p.len = static_cast<int>(x.size(1));
    p.heads = static_cast<int>(x.size(2));
    p.head_dim = static_cast<int>(x.size(3));
    p.groups = static_cast<int>(B.size(2));
    p.dstate = static_cast<int>(B.size(3));
    p.chunks = static_cast<int>((p.len + cuda::kSsdChunk - 1) / cuda::kSsdChunk);
    p.pad_p = static_cast<int>(round16(p.head_dim));
    p.pad_n = static_cast<int>(round16(p.dstate));
    p.softplus = s.delta_softplus;
    p.x = x.data_ptr();
    p.dt = dt.data_ptr();
    p.B = B.data_ptr();
    p.C = C.data_ptr();
    p.x_st = strides(x);
    p.dt_st = strides(dt);
    p.B_st = strides(B);
    p.C_st = strides(C);
    if (z.defined()) p.z = z.data_ptr(), p.z_st = strides(z);
    p.A = A.data_ptr<float>();
    if (D.defined()) {
      p.D = D.data_ptr<float>();
      p.D_h_stride = D.dim() == 2 ? p.head_dim : 1;
      p.D_p_stride = D.dim() == 2 ? 1 : 0;
    }
    if (bias.defined()) p.bias = bias.data_ptr<float>();
    if (h0.defined()) p.h0 = h0.data_ptr<float>();
    p.rows8 = rows_of_8(x) && rows_of_8(z);
    const int per_group = p.heads / p.groups;
    p.output_heads = per_group % 4 == 0 ? 4 : per_group % 2 == 0 ? 2 : 1;
    f32 = x.options().dtype(at::kFloat);
    dt_v = alloc({p.batch, p.heads, int64_t(p.chunks) * cuda::kSsdChunk}, f32, false, "dt_v");
    cum = alloc(dt_v.sizes(), f32, false, "cum");
    states = alloc({p.batch, p.heads, p.chunks, p.pad_p, p.pad_n}, f32, false, "states");
    states_bf16 = alloc(states.sizes(), f32.dtype(at::kBFloat16), false, "states_bf16");
    p.dt_v = dt_v.data_ptr<float>();
    p.cum = cum.data_ptr<float>();
    p.states = states.data_ptr<float>();
    p.states_bf16 = states_bf16.data_ptr();
  }
};

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "ssd_scan (CUDA, chunked): ", what, " launch failed: ", cudaGetErrorString(err));
}

}  // namespace

bool ssd_chunked_applies(const ScanInputs& s) {
  const at::ScalarType t = s.u.scalar_type();
  if (!s.u.is_cuda() || (t != at::kHalf && t != at::kBFloat16)) return false;
  for (const at::Tensor* other : {&s.delta, &s.B, &s.C})
    if (other->scalar_type() != t) return false;
  if (s.z && s.z->scalar_type() != t) return false;
  // Grids: batch · chunks blocks along x, heads along y (and batch along z for the pass).
  const int64_t chunks = (s.u.size(1) + cuda::kSsdChunk - 1) / cuda::kSsdChunk;
  if (s.u.size(0) > 65535 || s.u.size(2) > 65535 || s.u.size(0) * chunks >= (int64_t(1) << 31) ||
      s.u.size(1) >= (int64_t(1) << 31) - cuda::kSsdChunk)
    return false;
  const auto* props = at::cuda::getDeviceProperties(s.u.device().index());
  const std::size_t bytes = cuda::ssd_chunked_smem_bytes(static_cast<int>(round16(s.u.size(3))),
                                                         static_cast<int>(round16(s.B.size(3))), true);
  return bytes <= props->sharedMemPerBlockOptin;
}

std::vector<at::Tensor> ssd_chunked_forward(const ScanInputs& s, const ScanAllocator& alloc) {
  const c10::cuda::CUDAGuard guard(s.u.device());
  Staged st(s, alloc);
  at::Tensor y = alloc(s.u.sizes(), s.u.options(), false, "y");
  at::Tensor final_state = alloc({st.p.batch, st.p.heads, st.p.head_dim, st.p.dstate}, st.f32, false, "final_state");
  st.p.y = y.data_ptr();
  st.p.final_state = final_state.data_ptr<float>();
  check(cuda::ssd_chunked_forward(st.p, kernel_dtype(s), at::cuda::getCurrentCUDAStream()), "forward");
  return {y, final_state};
}

ScanGrads ssd_chunked_backward(const ScanInputs& s, const at::Tensor& grad_y, const at::Tensor& grad_final,
                               const ScanAllocator& alloc) {
  const c10::cuda::CUDAGuard guard(s.u.device());
  Staged st(s, alloc);
  cuda::SsdChunkedParams& p = st.p;
  TORCH_CHECK(grad_y.sizes() == s.u.sizes(), "ssd_scan backward: grad_y must match x ", s.u.sizes(), ", got ",
              grad_y.sizes());
  const at::Tensor dout = unit_last(grad_y.to(s.u.scalar_type()));
  p.dout = dout.data_ptr();
  p.dout_st = strides(dout);
  p.rows8 = p.rows8 && rows_of_8(dout);
  at::Tensor dfinal;
  if (grad_final.defined()) {
    dfinal = grad_final.to(at::kFloat).contiguous();
    p.dfinal = dfinal.data_ptr<float>();
  }
  const at::Tensor dh_local = alloc(st.states.sizes(), st.f32, false, "dh_local");
  const at::Tensor dstates_bf16 = alloc(st.states.sizes(), st.f32.dtype(at::kBFloat16), false, "dstates_bf16");
  p.dh_local = dh_local.data_ptr<float>();
  p.dstates_bf16 = dstates_bf16.data_ptr();
  ScanGrads g;
  g.u = alloc(s.u.sizes(), s.u.options(), false, "dx");
  g.delta = alloc(s.delta.sizes(), s.u.options(), false, "ddt");
  if (s.z) g.z = alloc(s.u.sizes(), s.u.options(), false, "dz");
  const at::Tensor dB = alloc(s.B.sizes(), st.f32, true, "dB"), dC = alloc(s.C.sizes(), st.f32, true, "dC");
  const at::Tensor dA = alloc({p.heads}, st.f32, true, "dA");
  at::Tensor dbias, dD, dh0;
  p.dx = g.u.data_ptr();
  p.ddt = g.delta.data_ptr();
  if (s.z) p.dz = g.z.data_ptr();
  p.dB = dB.data_ptr<float>();
  p.dC = dC.data_ptr<float>();
  p.dA = dA.data_ptr<float>();
  if (s.delta_bias) dbias = alloc({p.heads}, st.f32, true, "dbias"), p.dbias = dbias.data_ptr<float>();
  if (s.D_skip) dD = alloc({p.heads, p.head_dim}, st.f32, true, "dD"), p.dD = dD.data_ptr<float>();
  if (s.initial_state) dh0 = alloc(s.initial_state->sizes(), st.f32, false, "dh0"), p.dh0 = dh0.data_ptr<float>();
  check(cuda::ssd_chunked_backward(p, kernel_dtype(s), at::cuda::getCurrentCUDAStream()), "backward");
  g.A = dA.to(s.A.scalar_type());
  g.B = dB.to(s.B.scalar_type());
  g.C = dC.to(s.C.scalar_type());
  if (s.delta_bias) g.delta_bias = dbias.to(s.delta_bias->scalar_type());
  if (s.D_skip) g.D = (s.D_skip->dim() == 1 ? dD.sum(1) : dD).to(s.D_skip->scalar_type());
  if (s.initial_state) g.initial_state = dh0.to(s.initial_state->scalar_type());
  return g;
}

}  // namespace cab::kernels
