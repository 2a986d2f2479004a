// CUDA depthwise causal conv1d, forward and backward (causal_conv1d.cuh).
#include "causal_conv1d.cuh"
#include "selective_scan_device.cuh"

namespace cab::kernels::cuda {

namespace {

using detail::from_float;
using detail::load;

constexpr int kConvThreads = 128;  ///< channels per block

/// Where a thread sits: its (batch, channel) and the segment [begin, end) of steps in the conv's order.
struct ConvThread {
  int64_t b, c, begin, end;
  bool valid;
  __device__ __forceinline__ explicit ConvThread(const ConvParams& p) {
    c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
    b = blockIdx.y;
    begin = static_cast<int64_t>(blockIdx.z) * p.segment;
    end = begin + p.segment < p.len ? begin + p.segment : p.len;
    valid = c < p.dim;
  }
  /// The time of step τ of the conv's order.
  __device__ __forceinline__ int64_t time(const ConvParams& p, int64_t tau) const {
    return p.reverse ? p.len - 1 - tau : tau;
  }
};

/// x at step τ of the conv's order (0 outside the sequence).
template <typename T>
__device__ __forceinline__ float x_at(const ConvParams& p, const ConvThread& th, int64_t tau) {
  if (tau < 0 || tau >= p.len) return 0.f;
  return load(static_cast<const T*>(p.x), th.b * p.x_st.batch + th.c * p.x_st.channel + th.time(p, tau) * p.x_st.time);
}

/// Shifts a window of the last kConvMaxK values (v[i]: the value i steps back) by one step, `fresh` in front.
__device__ __forceinline__ void push(float (&v)[kConvMaxK], float fresh) {
#pragma unroll
  for (int i = kConvMaxK - 1; i > 0; --i) v[i] = v[i - 1];
  v[0] = fresh;
}

/// This thread's weights (w[k], and wr[i] = w[K−1−i]; 0 beyond K), bias, and its last inputs: xr[i] = x at τ − i.
/// Every register array is indexed by constants (K only masks by zeros), so none goes to local memory.
struct ConvState {
  float w[kConvMaxK], wr[kConvMaxK], xr[kConvMaxK], bias;
  __device__ __forceinline__ float pre() const {
    float acc = bias;
#pragma unroll
    for (int i = 0; i < kConvMaxK; ++i) acc = fmaf(wr[i], xr[i], acc);
    return acc;
  }
};

template <typename T>
__device__ __forceinline__ ConvState start(const ConvParams& p, const ConvThread& th) {
  ConvState s;
#pragma unroll
  for (int k = 0; k < kConvMaxK; ++k) {
    s.w[k] = k < p.K ? p.w[th.c * p.K + k] : 0.f;
    s.wr[k] = k < p.K ? p.w[th.c * p.K + (p.K - 1 - k)] : 0.f;
    s.xr[k] = 0.f;
  }
  s.bias = p.bias ? p.bias[th.c] : 0.f;
  for (int64_t tau = th.begin - (p.K - 1); tau < th.begin; ++tau) push(s.xr, x_at<T>(p, th, tau));  // the halo
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kConvThreads) conv_forward_kernel(ConvParams p) {
  const ConvThread th(p);
  if (!th.valid) return;
  ConvState s = start<T>(p, th);
  T* out = static_cast<T*>(p.out);
  for (int64_t tau = th.begin; tau < th.end; ++tau) {
    push(s.xr, x_at<T>(p, th, tau));
    const float pre = s.pre();
    const float v = p.silu ? pre * detail::sigmoid(pre) : pre;
    out[(th.b * p.len + th.time(p, tau)) * p.dim + th.c] = from_float<T>(v);
  }
}

/// Backward over the segment: g(τ) = ∂L/∂pre at τ, computed once per step for τ ∈ [begin, end + K − 1) (the dx of
/// step σ needs g at σ … σ + K − 1) and kept in a window; ∂w and ∂bias from the segment's own steps.
template <typename T>
__global__ void __launch_bounds__(kConvThreads) conv_backward_kernel(ConvParams p) {
  const ConvThread th(p);
  if (!th.valid) return;
  ConvState s = start<T>(p, th);
  const T* dout = static_cast<const T*>(p.dout);
  T* dx = static_cast<T*>(p.dx);
  float gr[kConvMaxK], dwr[kConvMaxK], dbias = 0.f;  // gr[i] = g at τ − i; dwr[i] = ∂w[K−1−i]
#pragma unroll
  for (int i = 0; i < kConvMaxK; ++i) gr[i] = dwr[i] = 0.f;
  const int K = p.K;
  for (int64_t tau = th.begin; tau < th.end + K - 1; ++tau) {
    float g = 0.f;
    if (tau < p.len) {  // g is 0 from L on
      push(s.xr, x_at<T>(p, th, tau));
      const float pre = s.pre();
      const float d = load(dout, th.b * p.dout_st.batch + th.c * p.dout_st.channel + th.time(p, tau) * p.dout_st.time);
      if (p.silu) {
        const float sg = detail::sigmoid(pre);
        g = d * sg * (1.f + pre * (1.f - sg));
      } else {
        g = d;
      }
      if (tau < th.end) {
#pragma unroll
        for (int i = 0; i < kConvMaxK; ++i) dwr[i] = fmaf(g, s.xr[i], dwr[i]);
        dbias += g;
      }
    }
    push(gr, g);
    const int64_t sigma = tau - (K - 1);
    if (sigma >= th.begin) {  // dx(σ) = Σ_k w[k] g(σ + K − 1 − k) = Σ_k w[k] g(τ − k)
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < kConvMaxK; ++k) acc = fmaf(s.w[k], gr[k], acc);
      dx[(th.b * p.len + th.time(p, sigma)) * p.dim + th.c] = from_float<T>(acc);
    }
  }
#pragma unroll
  for (int i = 0; i < kConvMaxK; ++i)
    if (i < K) atomicAdd(p.dw + th.c * K + (K - 1 - i), dwr[i]);
  if (p.dbias) atomicAdd(p.dbias + th.c, dbias);
}

template <typename T, bool kBackward>
cudaError_t launch(const ConvParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.dim + kConvThreads - 1) / kConvThreads), static_cast<unsigned>(p.batch),
                  static_cast<unsigned>((p.len + p.segment - 1) / p.segment));
  if constexpr (kBackward) conv_backward_kernel<T><<<grid, kConvThreads, 0, stream>>>(p);
  else conv_forward_kernel<T><<<grid, kConvThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <bool kBackward>
cudaError_t dispatch_conv(const ConvParams& p, ScanDtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case ScanDtype::f32: return launch<float, kBackward>(p, stream);
    case ScanDtype::f16: return launch<__half, kBackward>(p, stream);
    case ScanDtype::bf16: return launch<__nv_bfloat16, kBackward>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int64_t plan_conv(int64_t batch, int64_t dim, int64_t len, int sm_count) {
  // About 2048 threads per SM; segments of at least 32 steps (the K − 1 halo is re-read per segment).
  const int64_t rows = batch * dim, want = static_cast<int64_t>(sm_count) * 2048;
  int64_t segments = (want + rows - 1) / rows;
  const int64_t most = (len + 31) / 32;
  segments = segments < most ? segments : most;
  segments = segments < 65535 ? segments : 65535;
  if (segments < 1) segments = 1;
  return (len + segments - 1) / segments;
}

cudaError_t causal_conv1d_forward(const ConvParams& p, ScanDtype dtype, cudaStream_t stream) {
  return dispatch_conv<false>(p, dtype, stream);
}
cudaError_t causal_conv1d_backward(const ConvParams& p, ScanDtype dtype, cudaStream_t stream) {
  return dispatch_conv<true>(p, dtype, stream);
}

}  // namespace cab::kernels::cuda
