// CUDA implementations of the cab::selective_scan ops: checks and converts the inputs, allocates outputs, chunk
// and scratch buffers, and calls the launchers of selective_scan_cuda.cuh.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>

#include "scan_ops.h"
#include "ssd_map.h"
#include "selective_scan_cuda.cuh"

namespace cab::kernels {

namespace {

/// The element type the kernel computes u, delta, z, B and C in: the widest of them.
at::ScalarType element_type(const ScanInputs& in) {
  at::ScalarType t = in.u.scalar_type();
  for (const at::Tensor* x : {&in.delta, &in.B, &in.C}) t = at::promote_types(t, x->scalar_type());
  if (in.z) t = at::promote_types(t, in.z->scalar_type());
  return t;
}

cuda::ScanDtype kernel_dtype(at::ScalarType t) {
  return t == at::kFloat ? cuda::ScanDtype::f32 : t == at::kHalf ? cuda::ScanDtype::f16 : cuda::ScanDtype::bf16;
}

void check_cuda(const ScanInputs& in, const char* direction, const ScanLayout& layout) {
  if (layout.head_dim == 1) {
    check_scan_inputs(in);
  } else {  // Mamba-2: checked by check_ssd_inputs; delta is [batch, heads, L] here
    ScanInputs per_channel = in;
    per_channel.delta = in.u;
    check_scan_inputs(per_channel);
  }
  TORCH_CHECK(in.u.is_cuda(), "selective_scan (CUDA): ", direction, "inputs must be on a CUDA device, got ", in.u.device());
  const at::ScalarType t = element_type(in);
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, "selective_scan (CUDA): ", direction,
              "u, delta, z, B and C must be float32, float16 or bfloat16, got ", t,
              " (float64 runs on the CPU reference)");
  for (const auto* p : {&in.D_skip, &in.delta_bias, &in.initial_state})
    if (*p) TORCH_CHECK(at::isFloatingType((*p)->scalar_type()), "selective_scan (CUDA): D, delta_bias and initial_state must be floating point");
  TORCH_CHECK(at::isFloatingType(in.A.scalar_type()), "selective_scan (CUDA): A must be floating point, got ", in.A.scalar_type());
  TORCH_CHECK(in.u.numel() < (int64_t(1) << 40), "selective_scan (CUDA): inputs too large");
}

// Within a tile the kernels address elements by 32-bit offsets from the tile's first element (up to kThreads rows
// or 256 states, and kFwdTile steps): strides that would overflow them are refused rather than read wrongly.
void check_tile_offsets(const at::Tensor& t, int64_t row_stride, int64_t rows, int64_t time_stride) {
  TORCH_CHECK(std::abs(row_stride) * rows + std::abs(time_stride) * cuda::kFwdTile < std::numeric_limits<int32_t>::max(),
              "selective_scan (CUDA): a tensor of sizes ", t.sizes(), " has strides ", t.strides(),
              " too large for the kernels' 32-bit offsets within a tile (row stride · ", rows, " + time stride · ",
              cuda::kFwdTile, " must stay below 2^31); pass it contiguous");
}
cuda::Strides strides3(const at::Tensor& t) {
  check_tile_offsets(t, t.stride(1), cuda::kThreads, t.stride(2));
  return {t.stride(0), t.stride(1), t.stride(2)};
}
cuda::BcStrides strides4(const at::Tensor& t) {
  check_tile_offsets(t, t.stride(2), 256, t.stride(3));
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

/// A new tensor of ref's sizes, laid out like ref when ref is dense (so gradients of time-major views come back
/// time-major), else contiguous.
at::Tensor alloc_like(const ScanAllocator& alloc, const at::Tensor& ref, const at::TensorOptions& options, bool zero,
                      const char* name) {
  if (!ref.is_non_overlapping_and_dense()) return alloc(ref.sizes(), options, zero, name);
  std::vector<int64_t> order(ref.dim());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ref.stride(a) > ref.stride(b); });
  std::vector<int64_t> sizes(ref.dim()), back(ref.dim());
  for (std::size_t i = 0; i < order.size(); ++i) sizes[i] = ref.size(order[i]), back[order[i]] = static_cast<int64_t>(i);
  return alloc(sizes, options, zero, name).permute(back);
}

/// The inputs in the kernel's types (converted only where the dtype differs; read in place through their strides
/// otherwise), A, D, bias and h0 as contiguous fp32, and the pointers and strides into them.
struct Staged {
  at::Tensor u, delta, B, C, z, A, D, bias, h0;

  Staged(const ScanInputs& in, at::ScalarType t) {
    auto elem = [&](const at::Tensor& x) { return x.to(t); };
    auto fp32 = [](const at::Tensor& x) { return x.to(at::kFloat).contiguous(); };
    u = elem(in.u);
    delta = elem(in.delta);
    B = elem(in.B.dim() == 4 ? in.B : in.B.unsqueeze(1));  // [batch, groups, N, L]
    C = elem(in.C.dim() == 4 ? in.C : in.C.unsqueeze(1));
    if (in.z) z = elem(*in.z);
    A = fp32(in.A);
    if (in.D_skip) D = fp32(*in.D_skip);
    if (in.delta_bias) bias = fp32(*in.delta_bias);
    if (in.initial_state) h0 = fp32(*in.initial_state);
  }

  void bind(cuda::ScanDirection& d) const {
    d.u = u.data_ptr();
    d.delta = delta.data_ptr();
    d.B = B.data_ptr();
    d.C = C.data_ptr();
    d.z = z.defined() ? z.data_ptr() : nullptr;
    d.A = A.data_ptr<float>();
    d.D = D.defined() ? D.data_ptr<float>() : nullptr;
    d.delta_bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    d.h0 = h0.defined() ? h0.data_ptr<float>() : nullptr;
    d.u_st = strides3(u);
    d.delta_st = strides3(delta);
    if (z.defined()) d.z_st = strides3(z);
    d.B_st = strides4(B);
    d.C_st = strides4(C);
  }
};

/// Everything a launch needs: the checked, staged directions and the plan.
struct Launch {
  std::vector<Staged> staged;
  cuda::ScanParams params;
  at::ScalarType element;
  at::TensorOptions f32;
  const ScanAllocator& alloc;
  std::vector<at::Tensor> keep;  // chunk buffers

  Launch(const std::vector<ScanInputs>& dirs, double out_scale, const ScanAllocator& allocator, const ScanLayout& layout)
      : alloc(allocator) {
    TORCH_CHECK(dirs.size() == 1 || dirs.size() == 2, "selective_scan (CUDA): one or two directions, got ", dirs.size());
    const char* names[] = {"", "backward direction: "};
    element = element_type(dirs[0]);
    for (std::size_t i = 0; i < dirs.size(); ++i) {
      check_cuda(dirs[i], names[i], layout);
      element = at::promote_types(element, element_type(dirs[i]));
    }
    if (dirs.size() == 2) check_bidirectional_inputs(dirs[0], dirs[1]);
    const ScanInputs& in = dirs[0];
    f32 = in.u.options().dtype(at::kFloat);
    cuda::ScanParams& p = params;
    p.shape.batch = in.u.size(0);
    p.shape.dim = in.u.size(1);
    p.shape.len = in.u.size(2);
    p.shape.dstate = in.A.size(1);
    p.shape.groups = in.B.dim() == 4 ? in.B.size(1) : 1;
    p.shape.head_dim = layout.head_dim;
    p.shape.scalar_A = layout.scalar_A;
    p.plan = cuda::plan_scan(p.shape, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
    p.directions = static_cast<int>(dirs.size());
    p.delta_softplus = in.delta_softplus;
    p.out_scale = static_cast<float>(out_scale);
    staged.reserve(dirs.size());
    for (std::size_t i = 0; i < dirs.size(); ++i) {
      staged.emplace_back(dirs[i], element);
      staged[i].bind(p.dir[i]);
      p.dir[i].reverse = i == 1;
    }
  }

  int64_t rows() const { return params.shape.batch * params.shape.dim; }

  /// Chunk buffers ([rows, chunks, N] states, [rows, chunks] sums), when time is chunked.
  void chunk_buffers(bool grads) {
    const cuda::ScanPlan& plan = params.plan;
    if (plan.chunks == 1) return;
    for (int i = 0; i < params.directions; ++i) {
      auto states = [&](const char* name) {
        return keep.emplace_back(alloc({rows(), plan.chunks, params.shape.dstate}, f32, false, name)).data_ptr<float>();
      };
      params.dir[i].chunk_state = states("chunk_state");
      params.dir[i].chunk_local = states("chunk_local");
      if (grads) params.dir[i].chunk_grad = states("chunk_grad");
      params.dir[i].chunk_sum = keep.emplace_back(alloc({rows(), plan.chunks}, f32, false, "chunk_sum")).data_ptr<float>();
    }
  }

  void check(cudaError_t err, const char* what) const {
    TORCH_CHECK(err == cudaSuccess, "selective_scan (CUDA): ", what, " launch failed: ", cudaGetErrorString(err));
  }
};

}  // namespace

at::Tensor default_allocator(at::IntArrayRef sizes, const at::TensorOptions& options, bool zero, const char*) {
  return zero ? at::zeros(sizes, options) : at::empty(sizes, options);
}

std::vector<at::Tensor> scan_cuda_forward(const std::vector<ScanInputs>& dirs, double out_scale,
                                          const ScanAllocator& alloc, const ScanLayout& layout) {
  const c10::cuda::CUDAGuard guard(dirs.at(0).u.device());
  Launch launch(dirs, out_scale, alloc, layout);
  cuda::ScanParams& p = launch.params;
  launch.chunk_buffers(false);
  at::Tensor y = alloc_like(alloc, dirs[0].u, launch.f32.dtype(launch.element), false, "y");
  p.y = y.data_ptr();
  p.y_st = strides3(y);
  std::vector<at::Tensor> out{y};
  for (int i = 0; i < p.directions; ++i) {
    out.push_back(alloc({p.shape.batch, p.shape.dim, p.shape.dstate}, launch.f32, false, "final_state"));
    p.dir[i].final_state = out.back().data_ptr<float>();
  }
  launch.check(cuda::scan_forward(p, kernel_dtype(launch.element), at::cuda::getCurrentCUDAStream()), "forward");
  out[0] = y.to(dirs[0].u.scalar_type());
  return out;
}

std::vector<ScanGrads> scan_cuda_backward(const std::vector<ScanInputs>& dirs, double out_scale, const at::Tensor& grad_y,
                                          const std::vector<at::Tensor>& grad_finals, const ScanAllocator& alloc,
                                          const ScanLayout& layout) {
  const c10::cuda::CUDAGuard guard(dirs.at(0).u.device());
  Launch launch(dirs, out_scale, alloc, layout);
  cuda::ScanParams& p = launch.params;
  const auto& shape = p.shape;
  TORCH_CHECK(grad_y.sizes() == dirs[0].u.sizes(), "selective_scan backward: grad_y must match u ", dirs[0].u.sizes(),
              ", got ", grad_y.sizes());
  const at::Tensor dout = grad_y.to(grad_y.options().dtype(launch.element));
  p.dout = dout.data_ptr();
  p.dout_st = strides3(dout);
  launch.chunk_buffers(true);
  const auto elem = launch.f32.dtype(launch.element);
  struct Outputs {
    at::Tensor du, ddelta, dz, dA, dB, dC, dD, dbias, dh0, dfinal;
  };
  std::vector<Outputs> outs(dirs.size());
  for (std::size_t i = 0; i < dirs.size(); ++i) {
    const ScanInputs& in = dirs[i];
    Outputs& o = outs[i];
    cuda::ScanDirection& d = p.dir[i];
    o.du = alloc_like(alloc, in.u, elem, false, "du");
    // One Δ per head: the kernel sums the head's channels into an fp32 buffer.
    o.ddelta = layout.head_dim == 1 ? alloc_like(alloc, in.delta, elem, false, "ddelta")
                                    : alloc_like(alloc, in.delta, launch.f32, true, "ddelta");
    if (in.z) o.dz = alloc_like(alloc, *in.z, elem, false, "dz");
    o.dA = alloc({shape.dim, shape.dstate}, launch.f32, true, "dA");
    o.dB = alloc_like(alloc, launch.staged[i].B, launch.f32, true, "dB");
    o.dC = alloc_like(alloc, launch.staged[i].C, launch.f32, true, "dC");
    if (in.D_skip) o.dD = alloc({shape.dim}, launch.f32, true, "dD");
    if (in.delta_bias) o.dbias = alloc({shape.dim}, launch.f32, true, "ddelta_bias");
    if (in.initial_state) o.dh0 = alloc({shape.batch, shape.dim, shape.dstate}, launch.f32, false, "dinitial_state");
    if (i < grad_finals.size() && grad_finals[i].defined()) {
      TORCH_CHECK(grad_finals[i].sizes() == at::IntArrayRef({shape.batch, shape.dim, shape.dstate}),
                  "selective_scan backward: the final state's gradient must be [batch, D, N], got ", grad_finals[i].sizes());
      o.dfinal = grad_finals[i].to(launch.f32).contiguous();
    }
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    d.du = o.du.data_ptr();
    d.ddelta = o.ddelta.data_ptr();
    d.dz = o.dz.defined() ? o.dz.data_ptr() : nullptr;
    d.dA = ptr(o.dA);
    d.dB = ptr(o.dB);
    d.dC = ptr(o.dC);
    d.dD = ptr(o.dD);
    d.dbias = ptr(o.dbias);
    d.dh0 = ptr(o.dh0);
    d.dfinal = ptr(o.dfinal);
    d.du_st = strides3(o.du);
    d.ddelta_st = strides3(o.ddelta);
    if (o.dz.defined()) d.dz_st = strides3(o.dz);
    d.dB_st = strides4(o.dB);
    d.dC_st = strides4(o.dC);
  }
  const at::Tensor scratch =
      alloc({static_cast<int64_t>(p.plan.scratch_floats(p.directions, shape.len))}, launch.f32, false, "scratch");
  p.scratch = scratch.data_ptr<float>();
  launch.check(cuda::scan_backward(p, kernel_dtype(launch.element), false, at::cuda::getCurrentCUDAStream()), "backward");

  std::vector<ScanGrads> grads(dirs.size());
  for (std::size_t i = 0; i < dirs.size(); ++i) {
    const ScanInputs& in = dirs[i];
    const Outputs& o = outs[i];
    auto like = [](const at::Tensor& g, const at::Tensor& input) { return g.view(input.sizes()).to(input.scalar_type()); };
    // B, C of [batch, N, L] were staged as [batch, 1, N, L]: squeeze the group dimension back.
    auto like_bc = [](const at::Tensor& g, const at::Tensor& input) {
      return (input.dim() == 3 ? g.squeeze(1) : g).to(input.scalar_type());
    };
    grads[i] = ScanGrads{like(o.du, in.u), like(o.ddelta, in.delta), like(o.dA, in.A), like_bc(o.dB, in.B), like_bc(o.dC, in.C),
                         in.D_skip ? like(o.dD, *in.D_skip) : at::Tensor(), in.z ? like(o.dz, *in.z) : at::Tensor(),
                         in.delta_bias ? like(o.dbias, *in.delta_bias) : at::Tensor(),
                         in.initial_state ? like(o.dh0, *in.initial_state) : at::Tensor()};
  }
  return grads;
}

std::string testing::cuda_layout(const ScanInputs& in) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  const Launch launch({in}, 1.0, default_allocator, ScanLayout{});
  const cuda::ScanPlan& plan = launch.params.plan;
  std::string layout = plan.rows ? "rows" : "lanes";
  if (plan.chunks > 1) layout += ", " + std::to_string(plan.chunks) + " chunks";
  if (plan.rows && plan.row_span < cuda::kRowTile) layout += ", half-tile backward";
  return layout;
}

std::string testing::ssd_cuda_path(const SsdInputs& in) {
  check_ssd_inputs(in);
  const c10::cuda::CUDAGuard guard(in.x.device());
  const ScanInputs s{in.x, in.dt, in.A, in.B, in.C, in.D, in.z, in.dt_bias, in.initial_state, in.dt_softplus};
  return ssd_chunked_applies(s) ? "chunked" : "recurrent";
}

namespace {

/// Every buffer a run allocates through allocator(), inside a NaN-filled allocation with kGuard elements on both
/// sides; violations() says which guard regions were written and which buffers kept elements never written.
class GuardedBuffers {
 public:
  ScanAllocator allocator() {
    return [this](at::IntArrayRef sizes, const at::TensorOptions& options, bool zero, const char* name) {
      const int64_t numel = c10::multiply_integers(sizes);
      at::Tensor buffer = at::full({numel + 2 * kGuard}, std::numeric_limits<float>::quiet_NaN(), options);
      at::Tensor inner = buffer.narrow(0, kGuard, numel);
      if (zero) inner.zero_();
      entries_.push_back({name, buffer, numel});
      return inner.view(sizes);
    };
  }

  std::vector<std::string> violations() const {
    std::vector<std::string> out;
    for (const Entry& e : entries_) {
      const at::Tensor guards = at::cat({e.buffer.narrow(0, 0, kGuard), e.buffer.narrow(0, kGuard + e.numel, kGuard)});
      if (!guards.isnan().all().item<bool>()) out.push_back(e.name + ": guard region written");
      const int64_t unwritten = e.buffer.narrow(0, kGuard, e.numel).isnan().sum().item<int64_t>();
      if (unwritten > 0) out.push_back(e.name + ": " + std::to_string(unwritten) + " elements NaN (never written?)");
    }
    return out;
  }

 private:
  static constexpr int64_t kGuard = 4096;
  struct Entry {
    std::string name;
    at::Tensor buffer;
    int64_t numel;
  };
  std::vector<Entry> entries_;
};

}  // namespace

std::vector<std::string> testing::cuda_guard_violations(const ScanInputs& fwd, const ScanInputs* bwd) {
  GuardedBuffers buffers;
  const ScanAllocator guarded = buffers.allocator();
  std::vector<ScanInputs> dirs{fwd};
  if (bwd) dirs.push_back(*bwd);
  const double scale = bwd ? 0.5 : 1.0;
  scan_cuda_forward(dirs, scale, guarded);
  const auto f32 = fwd.u.options().dtype(at::kFloat);
  std::vector<at::Tensor> grad_finals;
  for (std::size_t i = 0; i < dirs.size(); ++i) grad_finals.push_back(at::randn({fwd.u.size(0), fwd.u.size(1), fwd.A.size(1)}, f32));
  scan_cuda_backward(dirs, scale, at::randn(fwd.u.sizes(), fwd.u.options()), grad_finals, guarded);
  return buffers.violations();
}

std::vector<std::string> testing::ssd_cuda_guard_violations(const SsdInputs& in) {
  check_ssd_inputs(in);
  const c10::cuda::CUDAGuard guard(in.x.device());
  const ScanInputs s{in.x, in.dt, in.A, in.B, in.C, in.D, in.z, in.dt_bias, in.initial_state, in.dt_softplus};
  TORCH_CHECK(ssd_chunked_applies(s), "ssd_cuda_guard_violations: these inputs do not take the chunked SSD");
  GuardedBuffers buffers;
  const ScanAllocator guarded = buffers.allocator();
  ssd_chunked_forward(s, guarded);
  const at::Tensor grad_final = at::randn({in.x.size(0), in.x.size(2), in.x.size(3), in.B.size(3)},
                                          in.x.options().dtype(at::kFloat));
  ssd_chunked_backward(s, at::randn(in.x.sizes(), in.x.options()), grad_final, guarded);
  return buffers.violations();
}

namespace {

/// The SSD: chunked on tensor cores for 16-bit inputs (ssd_chunked.cuh); otherwise the scan with one Δ row per
/// head and a scalar decay, on the inputs' own (time-major) strides.
struct SsdCudaImpl {
  static ScanLayout layout(const ScanInputs& ssd) { return ScanLayout{ssd.u.size(3), true}; }
  static std::vector<at::Tensor> forward(const std::vector<ScanInputs>& dirs, double) {
    const ScanInputs& s = dirs[0];
    if (ssd_chunked_applies(s)) return ssd_chunked_forward(s);
    const auto out = scan_cuda_forward({ssd_as_scan(s, true)}, 1.0, default_allocator, layout(s));
    return {scan_y_as_ssd(out[0], s), scan_state_as_ssd(out[1], s)};
  }
  static std::vector<ScanGrads> backward(const std::vector<ScanInputs>& dirs, double, const at::Tensor& grad_y,
                                         const std::vector<at::Tensor>& grad_finals) {
    const ScanInputs& s = dirs[0];
    if (ssd_chunked_applies(s)) return {ssd_chunked_backward(s, grad_y, grad_finals[0])};
    const auto g = scan_cuda_backward({ssd_as_scan(s, true)}, 1.0, ssd_grad_y_as_scan(grad_y),
                                      {ssd_state_as_scan(grad_finals[0])}, default_allocator, layout(s));
    return {scan_grads_as_ssd(g[0], s, true)};
  }
};

struct CudaImpl {
  static std::vector<at::Tensor> forward(const std::vector<ScanInputs>& dirs, double out_scale) {
    return scan_cuda_forward(dirs, out_scale);
  }
  static std::vector<ScanGrads> backward(const std::vector<ScanInputs>& dirs, double out_scale, const at::Tensor& grad_y,
                                         const std::vector<at::Tensor>& grad_finals) {
    return scan_cuda_backward(dirs, out_scale, grad_y, grad_finals);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(cab, CUDA, m) {
  m.impl("selective_scan_fwd", &ScanOps<CudaImpl>::fwd);
  m.impl("selective_scan_bwd", &ScanOps<CudaImpl>::bwd);
  m.impl("bi_selective_scan_fwd", &ScanOps<CudaImpl>::bi_fwd);
  m.impl("bi_selective_scan_bwd", &ScanOps<CudaImpl>::bi_bwd);
  m.impl("ssd_scan_fwd", &ScanOps<SsdCudaImpl>::fwd);
  m.impl("ssd_scan_bwd", &ScanOps<SsdCudaImpl>::bwd);
}

}  // namespace cab::kernels
