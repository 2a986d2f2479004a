// CUDA implementation of cab::selective_scan_fwd: prepares contiguous inputs and calls the .cu launcher.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "cab/kernels/selective_scan.h"
#include "selective_scan_fwd.cuh"

namespace cab::kernels {

namespace {

std::tuple<at::Tensor, at::Tensor> scan_fwd_cuda(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                                 const at::Tensor& B, const at::Tensor& C,
                                                 const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                                 const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                                 const std::optional<at::Tensor>& initial_state) {
  ScanInputs in{u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus};
  check_scan_inputs(in);
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "selective_scan (CUDA): u must be float32, float16 or bfloat16, got ", dtype,
              " (fp64 runs on the CPU reference)");
  const c10::cuda::CUDAGuard guard(u.device());
  auto same = [&](const at::Tensor& t) { return t.to(dtype).contiguous(); };
  auto fp32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  const bool grouped = B.dim() == 4;
  const at::Tensor uu = same(u), dd = same(delta), BB = same(grouped ? B : B.unsqueeze(1)),
                   CC = same(grouped ? C : C.unsqueeze(1)), AA = fp32(A);
  const at::Tensor zz = z ? same(*z) : at::Tensor(), Dd = D ? fp32(*D) : at::Tensor(),
                   bias = delta_bias ? fp32(*delta_bias) : at::Tensor(),
                   h0 = initial_state ? fp32(*initial_state) : at::Tensor();
  at::Tensor y = at::empty_like(uu);
  at::Tensor h_final = at::empty({u.size(0), u.size(1), A.size(1)}, u.options().dtype(at::kFloat));

  cuda::ScanParams p{};
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.len = u.size(2);
  p.dstate = A.size(1);
  p.groups = BB.size(1);
  p.u = uu.data_ptr();
  p.delta = dd.data_ptr();
  p.B = BB.data_ptr();
  p.C = CC.data_ptr();
  p.z = zz.defined() ? zz.data_ptr() : nullptr;
  p.A = AA.data_ptr<float>();
  p.D = Dd.defined() ? Dd.data_ptr<float>() : nullptr;
  p.delta_bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  p.h0 = h0.defined() ? h0.data_ptr<float>() : nullptr;
  p.y = y.data_ptr();
  p.h_final = h_final.data_ptr<float>();
  p.delta_softplus = delta_softplus;
  const auto kind = dtype == at::kFloat ? cuda::ScanDtype::f32 : dtype == at::kHalf ? cuda::ScanDtype::f16 : cuda::ScanDtype::bf16;
  const cudaError_t err = cuda::selective_scan_fwd(p, kind, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "selective_scan (CUDA): launch failed: ", cudaGetErrorString(err));
  return {y, h_final};
}

}  // namespace

TORCH_LIBRARY_IMPL(cab, CUDA, m) { m.impl("selective_scan_fwd", &scan_fwd_cuda); }

}  // namespace cab::kernels
