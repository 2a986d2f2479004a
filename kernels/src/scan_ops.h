// The selective-scan ops' C++ signatures and the device implementations behind them (internal to libcab_kernels):
// the registrations (ops.cpp: schemas, CPU, autograd; cuda/selective_scan_cuda.cpp: CUDA) share these.
#pragma once

#include <functional>
#include <optional>
#include <tuple>
#include <vector>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

/// Gradients of a scan's inputs, in their shapes and dtypes; undefined for absent inputs.
struct ScanGrads {
  at::Tensor u, delta, A, B, C, D, z, delta_bias, initial_state;
};

using OptTensor = std::optional<at::Tensor>;
using ScanFwdOut = std::tuple<at::Tensor, at::Tensor>;
using ScanBwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                              at::Tensor, at::Tensor>;
using BiScanFwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BiScanBwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline ScanInputs pack(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                       const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                       bool delta_softplus, const OptTensor& initial_state) {
  return ScanInputs{u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus};
}

inline ScanBwdOut unpack(const ScanGrads& g) {
  return {g.u, g.delta, g.A, g.B, g.C, g.D, g.z, g.delta_bias, g.initial_state};
}

inline BiScanBwdOut unpack(const ScanGrads& f, const ScanGrads& b) {
  return {f.u, f.delta, f.A, f.B, f.C, f.D, f.z, f.delta_bias, f.initial_state,
          b.u, b.delta, b.A, b.B, b.C, b.D, b.z, b.delta_bias, b.initial_state};
}

/// The four ops' C++ signatures over a device implementation `Impl` providing
///   static std::vector<at::Tensor> forward(const std::vector<ScanInputs>& dirs, double out_scale);
///       y, then each direction's final state; two directions: the second scans in reverse time, y = out_scale·Σ
///   static std::vector<ScanGrads> backward(const std::vector<ScanInputs>& dirs, double out_scale,
///                                          const at::Tensor& grad_y, const std::vector<at::Tensor>& grad_finals);
template <typename Impl>
struct ScanOps {
  static ScanFwdOut fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                        bool delta_softplus, const OptTensor& initial_state) {
    const auto out = Impl::forward({pack(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)}, 1.0);
    return {out[0], out[1]};
  }

  static ScanBwdOut bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                        bool delta_softplus, const OptTensor& initial_state, const at::Tensor& grad_y,
                        const OptTensor& grad_final_state) {
    return unpack(Impl::backward({pack(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)}, 1.0,
                                 grad_y, {grad_final_state.value_or(at::Tensor())})[0]);
  }

  static BiScanFwdOut bi_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                             const OptTensor& initial_state, const at::Tensor& u_b, const at::Tensor& delta_b,
                             const at::Tensor& A_b, const at::Tensor& B_b, const at::Tensor& C_b, const OptTensor& D_b,
                             const OptTensor& z_b, const OptTensor& delta_bias_b, const OptTensor& initial_state_b,
                             bool delta_softplus, double out_scale) {
    const auto out = Impl::forward({pack(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state),
                                    pack(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b, delta_softplus,
                                         initial_state_b)},
                                   out_scale);
    return {out[0], out[1], out[2]};
  }

  static BiScanBwdOut bi_bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                             const at::Tensor& C, const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                             const OptTensor& initial_state, const at::Tensor& u_b, const at::Tensor& delta_b,
                             const at::Tensor& A_b, const at::Tensor& B_b, const at::Tensor& C_b, const OptTensor& D_b,
                             const OptTensor& z_b, const OptTensor& delta_bias_b, const OptTensor& initial_state_b,
                             bool delta_softplus, double out_scale, const at::Tensor& grad_y,
                             const OptTensor& grad_final_state, const OptTensor& grad_final_state_b) {
    const auto g = Impl::backward(
        {pack(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state),
         pack(u_b, delta_b, A_b, B_b, C_b, D_b, z_b, delta_bias_b, delta_softplus, initial_state_b)},
        out_scale, grad_y, {grad_final_state.value_or(at::Tensor()), grad_final_state_b.value_or(at::Tensor())});
    return unpack(g[0], g[1]);
  }
};

/// Checks each direction (check_scan_inputs) and that both have the same shapes, device and delta_softplus.
void check_bidirectional_inputs(const ScanInputs& fwd, const ScanInputs& bwd);


/// The CPU analytic backward (scan_cpu_autograd.cpp); grad_y, grad_final may be undefined (zero).
ScanGrads scan_cpu_backward(const ScanInputs& in, const at::Tensor& grad_y, const at::Tensor& grad_final);

/// How the channels of a scan share Δ and A: Mamba-1 has one Δ row per channel; Mamba-2 one per head of head_dim
/// channels (delta [batch, heads, L]) and A constant over the states (scalar_A).
struct ScanLayout {
  int64_t head_dim = 1;
  bool scalar_A = false;
};

#ifdef CAB_KERNELS_WITH_CUDA
/// Allocates every output and work buffer of the CUDA scan: (sizes, options, zero-filled, buffer name).
using ScanAllocator = std::function<at::Tensor(at::IntArrayRef, const at::TensorOptions&, bool, const char*)>;
at::Tensor default_allocator(at::IntArrayRef sizes, const at::TensorOptions& options, bool zero, const char* name);

/// One direction (dirs.size() == 1) or a fused bidirectional scan (dirs[1] runs in reverse time, y =
/// out_scale · (y_0 + y_1)); returns y (laid out like u) and each direction's final state. Inputs are read through
/// their strides; gradients come back laid out like their inputs.
std::vector<at::Tensor> scan_cuda_forward(const std::vector<ScanInputs>& dirs, double out_scale,
                                          const ScanAllocator& alloc = default_allocator, const ScanLayout& layout = {});
/// Gradients of every direction's inputs; grad_finals[i] may be undefined. With layout.head_dim > 1 the delta
/// gradient is per head ([batch, heads, L], like delta).
std::vector<ScanGrads> scan_cuda_backward(const std::vector<ScanInputs>& dirs, double out_scale, const at::Tensor& grad_y,
                                          const std::vector<at::Tensor>& grad_finals,
                                          const ScanAllocator& alloc = default_allocator, const ScanLayout& layout = {});
#endif

}  // namespace cab::kernels
