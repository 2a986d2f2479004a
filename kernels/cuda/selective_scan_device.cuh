// Device helpers shared by the selective-scan kernels: dtype conversion, block geometry, shared-memory layout,
// staging of time tiles, reductions over a channel's lanes and over the channels of a warp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "selective_scan_cuda.cuh"

namespace cab::kernels::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__device__ __forceinline__ float load(const T* p, int64_t i) { return to_float(p[i]); }
template <typename T>
__device__ __forceinline__ void store(T* p, int64_t i, float v) { p[i] = from_float<T>(v); }

/// 2^x in one MUFU instruction (relative error ~2 ulp); results below 2^−126 flush to zero, which only a
/// decay that has already reached zero can produce.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
/// log2(x) in one MUFU instruction (absolute error ~2^−22 on [0.5, 2]).
__device__ __forceinline__ float log2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
/// log(1 + e^x), branch-free from two MUFU instructions: t = e^x, then log1p(t) by its series t − t²/2 + t³/3 for
/// t < 1/64 (error < t⁴/4, so Δ keeps its relative accuracy however small), else ln 2 · log2(1 + t) (absolute error
/// ~1e-7); x itself above 20.
__device__ __forceinline__ float softplus(float x) {
  const float t = exp2_approx(x * kLog2e);
  const float series = t * fmaf(t, fmaf(t, 1.f / 3.f, -0.5f), 1.f);
  const float log1p = t < 1.f / 64.f ? series : kLn2 * log2_approx(1.f + t);
  return x > 20.f ? x : log1p;
}
/// 1 / (1 + e^−x) from two MUFU instructions.
__device__ __forceinline__ float sigmoid(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.f + exp2_approx(-x * kLog2e)));
  return r;
}

/// Sum over the `lanes` adjacent threads of one channel (lanes: a power of two ≤ 32, aligned in the warp).
__device__ __forceinline__ float channel_sum(float v, int lanes) {
  for (int m = 1; m < lanes; m <<= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

/// Where this thread sits: the block's (batch, group, channel tile), its channel and its slice of the states.
struct Geometry {
  int lanes, ch, npad;  // threads per channel, channels per block, states padded to lanes · kNS
  int c, s;             // this thread's channel in the block and state slice
  int nch;              // channels of this block that exist (the last tile of a group may be partial)
  int64_t b, g, d;      // batch, group, this thread's channel (clamped to a real one for idle threads)
  int64_t d0;           // the block's first channel
  int64_t row;          // b · dim + d: the (batch, channel) row of u, delta, z, y and of the states
  bool valid;           // c < nch
};

__device__ __forceinline__ Geometry geometry(const ScanParams& p, int states_per_lane) {
  Geometry G;
  G.lanes = p.plan.lanes;
  G.ch = p.plan.channels_per_block;
  G.npad = G.lanes * states_per_lane;
  G.c = threadIdx.x / G.lanes;
  G.s = threadIdx.x % G.lanes;
  const int64_t per_group = p.shape.dim / p.shape.groups;
  const int64_t tile = blockIdx.x % p.plan.tiles_per_group;
  const int64_t bg = blockIdx.x / p.plan.tiles_per_group;
  G.b = bg / p.shape.groups;
  G.g = bg % p.shape.groups;
  G.d0 = G.g * per_group + tile * G.ch;
  const int64_t left = per_group - tile * G.ch;
  G.nch = static_cast<int>(left < G.ch ? left : G.ch);
  G.valid = G.c < G.nch;
  G.d = G.d0 + (G.valid ? G.c : 0);
  G.row = G.b * p.shape.dim + G.d;
  return G;
}

/// The tiles [begin, end) of kT steps that make up this block's time chunk (blockIdx.y); `total` over all of L.
struct TileRange {
  int64_t begin, end, total;
};
template <int kT>
__device__ __forceinline__ TileRange chunk_tiles(const ScanParams& p) {
  TileRange r;
  r.total = (p.shape.len + kT - 1) / kT;
  const int64_t per_chunk = p.plan.chunk_len / kT;
  r.begin = blockIdx.y * per_chunk;
  r.end = r.begin + per_chunk < r.total ? r.begin + per_chunk : r.total;
  return r;
}

/// This thread's A (times log2 e) and the state entering the block's chunk: chunk_state when time is chunked,
/// else h0 (or zero); with `from_zero`, zero. Idle lanes and padded states get A = 0 and h = 0, so they stay 0.
template <int kNS>
__device__ __forceinline__ void load_entry(const ScanParams& p, const ScanDirection& P, const Geometry& G, bool from_zero,
                                           float (&A2)[kNS], float (&h)[kNS]) {
  const int64_t N = p.shape.dstate;
  const int K = p.plan.chunks;
#pragma unroll
  for (int n = 0; n < kNS; ++n) {
    const int64_t nn = G.s * kNS + n;
    const bool live = G.valid && nn < N;
    A2[n] = live ? P.A[G.d * N + nn] * kLog2e : 0.f;
    float h_start = 0.f;
    if (live && !from_zero) {
      if (K > 1) h_start = P.chunk_state[(G.row * K + blockIdx.y) * N + nn];
      else if (P.h0) h_start = P.h0[G.row * N + nn];
    }
    h[n] = h_start;
  }
}

/// Offsets (in floats) of the shared-memory arrays of one block; every section starts 16-byte aligned.
/// Per-channel arrays are [ch][tile + 1] (the +1 keeps channels on different banks), B and C [tile][npad + 4]
/// (rows aligned for float4 reads), the warp partial sums of dB/dC [2][warps][tile][npad], the backward's
/// per-step states [tile][threads][kNS].
struct SmemLayout {
  int channel_stride, bc_stride;
  int u, dt, dsp, z, dout, out0, out1, out2, B, C, red, hist, total;
};

__host__ __device__ inline int align4(int x) { return (x + 3) / 4 * 4; }

__host__ __device__ inline SmemLayout smem_layout(int ch, int npad, int tile, int states_per_lane, bool backward) {
  SmemLayout L{};
  L.channel_stride = tile + 1;
  L.bc_stride = npad + 4;
  const int per_channel = align4(ch * L.channel_stride);
  int at = 0;
  auto take = [&](int floats) {
    const int offset = at;
    at += align4(floats);
    return offset;
  };
  L.u = take(per_channel);
  L.dt = take(per_channel);
  L.z = take(per_channel);
  L.dout = take(per_channel);
  L.out0 = take(per_channel);
  L.dsp = backward ? take(per_channel) : 0;
  L.out1 = backward ? take(per_channel) : 0;
  L.out2 = backward ? take(per_channel) : 0;
  L.B = take(tile * L.bc_stride);
  L.C = take(tile * L.bc_stride);
  L.red = backward ? take(2 * kWarps * tile * npad) : 0;
  L.hist = backward ? take(tile * kThreads * states_per_lane) : 0;
  L.total = at;
  return L;
}

/// The shared-memory arrays of a block at the offsets of its SmemLayout (the backward-only ones unused otherwise);
/// out0 holds y in the forward, ∂u in the backward, out1 ∂delta and out2 ∂z.
struct SharedArrays {
  float *u, *dt, *dsp, *z, *dout, *out0, *out1, *out2, *B, *C, *red, *hist;
};

/// What every scan kernel's block works out first: where it sits, its shared memory and its time tiles.
template <int kT, int kNS>
struct BlockSetup {
  Geometry G;
  SmemLayout L;
  SharedArrays s;
  TileRange tiles;
  int at_c;  // this thread's channel row in the per-channel arrays

  __device__ __forceinline__ BlockSetup(const ScanParams& p, bool backward)
      : G(geometry(p, kNS)), L(smem_layout(G.ch, G.npad, kT, kNS, backward)), tiles(chunk_tiles<kT>(p)) {
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    s = SharedArrays{smem + L.u,    smem + L.dt,   smem + L.dsp,  smem + L.z, smem + L.dout, smem + L.out0,
                     smem + L.out1, smem + L.out2, smem + L.B,    smem + L.C, smem + L.red,  smem + L.hist};
    at_c = G.c * L.channel_stride;
  }
};

/// What a stage of per-channel inputs loads into shared memory (null: not needed).
struct ChannelTile {
  float* u = nullptr;     ///< u
  float* dt = nullptr;    ///< Δ = softplus(delta + bias) (or delta + bias)
  float* dsp = nullptr;   ///< dΔ/d delta: sigmoid(delta + bias), or 1
  float* z = nullptr;     ///< z, or silu(z) with z_silu; 1 (silu) / 0 (raw) when there is no z
  bool z_silu = false;
  float* dout = nullptr;  ///< out_scale · ∂L/∂y
};

__device__ __forceinline__ int64_t at3(const Strides& s, int64_t b, int64_t d, int64_t t) {
  return b * s.batch + d * s.channel + t * s.time;
}
__device__ __forceinline__ int64_t at4(const BcStrides& s, int64_t b, int64_t g, int64_t n, int64_t t) {
  return b * s.batch + g * s.group + n * s.state + t * s.time;
}

/// Calls f(i, j) for every (row i < rows, step j < kT) of a tile, the block's threads spread along the tensor's
/// unit-stride dimension: along time for [.., len]-contiguous tensors, else along the rows, so loads and stores
/// coalesce either way.
template <int kT, typename F>
__device__ __forceinline__ void for_each_in_tile(int rows, bool time_fast, F&& f) {
  if (time_fast) {
#pragma unroll 4
    for (int e = threadIdx.x; e < rows * kT; e += kThreads) f(e / kT, e % kT);
  } else {
#pragma unroll 4
    for (int e = threadIdx.x; e < rows * kT; e += kThreads) f(e % rows, e / rows);
  }
}
__device__ __forceinline__ bool time_fast(const Strides& s) { return s.time == 1 || s.channel != 1; }
__device__ __forceinline__ bool time_fast(const BcStrides& s) { return s.time == 1 || s.state != 1; }

/// The element (b, d, t) of a [batch, dim, len] tensor as a pointer, and offsets within a tile in 32 bits (the host
/// checks that a tile's offsets fit: check_tile_offsets).
template <typename T>
__device__ __forceinline__ T* element(T* base, const Strides& s, int64_t b, int64_t d, int64_t t) {
  return base + at3(s, b, d, t);
}
__device__ __forceinline__ int offset(const Strides& s, int row, int j) {
  return row * static_cast<int>(s.channel) + j * static_cast<int>(s.time);
}
/// Steps of the tile starting at t0 that exist (the last tile of the sequence may be partial).
template <int kT>
__device__ __forceinline__ int tile_steps(const ScanParams& p, int64_t t0) {
  return p.shape.len - t0 < kT ? static_cast<int>(p.shape.len - t0) : kT;
}

/// Loads the tile of times [t0, t0 + kT) of the block's channels; times ≥ len and absent channels read as
/// an identity step (Δ = 0, u = 0, dout = 0), so the recurrence can run over them unchanged. One pass over the
/// tile loads every tensor (their loads in flight together), threads spread along u's unit-stride dimension.
template <typename T, int kT>
__device__ __forceinline__ void stage_channels(const ScanParams& p, const ScanDirection& P, const Geometry& G,
                                               const SmemLayout& L, int64_t t0, const ChannelTile& s) {
  const int64_t hd = p.shape.head_dim;
  const int steps = tile_steps<kT>(p, t0);
  const T* u = s.u ? element(static_cast<const T*>(P.u), P.u_st, G.b, G.d0, t0) : nullptr;
  const int64_t head0 = hd == 1 ? G.d0 : G.d0 / hd;
  const T* delta = s.dt ? element(static_cast<const T*>(P.delta), P.delta_st, G.b, head0, t0) : nullptr;
  const T* z = s.z && P.z ? element(static_cast<const T*>(P.z), P.z_st, G.b, G.d0, t0) : nullptr;
  const T* dout = s.dout ? element(static_cast<const T*>(p.dout), p.dout_st, G.b, G.d0, t0) : nullptr;
  for_each_in_tile<kT>(G.ch, time_fast(P.u_st), [&](int c, int j) {
    const bool ok = c < G.nch && j < steps;
    const int at = c * L.channel_stride + j;
    if (s.u) s.u[at] = ok ? load(u, offset(P.u_st, c, j)) : 0.f;
    if (s.dt) {
      const int head = hd == 1 ? c : static_cast<int>((G.d0 + c) / hd - head0);
      const float raw = ok ? load(delta, offset(P.delta_st, head, j)) + (P.delta_bias ? P.delta_bias[G.d0 + c] : 0.f) : 0.f;
      s.dt[at] = ok ? (p.delta_softplus ? softplus(raw) : raw) : 0.f;
      if (s.dsp) s.dsp[at] = ok ? (p.delta_softplus ? sigmoid(raw) : 1.f) : 0.f;
    }
    if (s.z) {
      if (z) {
        const float zz = ok ? load(z, offset(P.z_st, c, j)) : 0.f;
        s.z[at] = s.z_silu ? zz * sigmoid(zz) : zz;
      } else {
        s.z[at] = s.z_silu ? 1.f : 0.f;
      }
    }
    if (s.dout) s.dout[at] = ok ? p.out_scale * load(dout, offset(p.dout_st, c, j)) : 0.f;
  });
}

/// Loads B and/or C for times [t0, t0 + kT) into [kT][npad + 4] (states ≥ N and times ≥ len read as 0).
template <typename T, int kT>
__device__ __forceinline__ void stage_bc(const ScanParams& p, const ScanDirection& P, const Geometry& G,
                                         const SmemLayout& L, int64_t t0, float* sB, float* sC) {
  const int N = static_cast<int>(p.shape.dstate);
  const int steps = tile_steps<kT>(p, t0);
  const T* B = sB ? static_cast<const T*>(P.B) + at4(P.B_st, G.b, G.g, 0, t0) : nullptr;
  const T* C = sC ? static_cast<const T*>(P.C) + at4(P.C_st, G.b, G.g, 0, t0) : nullptr;
  const int Bs = static_cast<int>(P.B_st.state), Bt = static_cast<int>(P.B_st.time);
  const int Cs = static_cast<int>(P.C_st.state), Ct = static_cast<int>(P.C_st.time);
  for_each_in_tile<kT>(G.npad, time_fast(sB ? P.B_st : P.C_st), [&](int n, int j) {
    const bool ok = n < N && j < steps;
    if (sB) sB[j * L.bc_stride + n] = ok ? load(B, n * Bs + j * Bt) : 0.f;
    if (sC) sC[j * L.bc_stride + n] = ok ? load(C, n * Cs + j * Ct) : 0.f;
  });
}

/// Reads kNS consecutive floats (16-byte aligned) from shared memory.
template <int kNS>
__device__ __forceinline__ void read_states(const float* src, float (&v)[kNS]) {
#pragma unroll
  for (int q = 0; q < kNS / 4; ++q) {
    const float4 f = reinterpret_cast<const float4*>(src)[q];
    v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
  }
}
template <int kNS>
__device__ __forceinline__ void write_states(float* dst, const float (&v)[kNS]) {
#pragma unroll
  for (int q = 0; q < kNS / 4; ++q)
    reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
}

/// exp(Δ A[n]) for this thread's states (A2 = A · log2 e); with kScalarA one exponential serves them all.
template <int kNS, bool kScalarA>
__device__ __forceinline__ float decay(const float (&A2)[kNS], float dt, int n, float scalar) {
  if constexpr (kScalarA) return scalar;
  else return exp2_approx(dt * A2[n]);
}
template <int kNS, bool kScalarA>
__device__ __forceinline__ float scalar_decay(const float (&A2)[kNS], float dt) {
  if constexpr (kScalarA) return exp2_approx(dt * A2[0]);
  else return 0.f;
}

/// One step of the recurrence for this thread's states: h ← exp(Δ A) ⊙ h + Δ u B (x = Δ u, B from shared memory).
template <int kNS, bool kScalarA>
__device__ __forceinline__ void advance(float (&h)[kNS], const float (&A2)[kNS], float dt, float x, const float* B) {
  float Bv[kNS];
  read_states<kNS>(B, Bv);
  const float a = scalar_decay<kNS, kScalarA>(A2, dt);
#pragma unroll
  for (int n = 0; n < kNS; ++n) h[n] = fmaf(decay<kNS, kScalarA>(A2, dt, n, a), h[n], x * Bv[n]);
}

/// One halving step of reduce_channels: partner lanes (across `mask`) swap halves of their values and add.
template <int kHalf, int kNS>
__device__ __forceinline__ void transpose_halves(float (&v)[kNS], int lane, int& mask, int& idx, int& cnt) {
  if constexpr (kHalf >= 1) {
    if (mask < 32) {
      const bool upper = (lane & mask) != 0;
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const float send = upper ? v[i] : v[i + kHalf];
        const float keep = upper ? v[i + kHalf] : v[i];
        v[i] = keep + __shfl_xor_sync(kFullMask, send, mask);
      }
      if (upper) idx += kHalf;
      cnt = kHalf;
      mask <<= 1;
      transpose_halves<kHalf / 2>(v, lane, mask, idx, cnt);
    }
  }
}

/// Sums each of this lane's kNS state values over the channels of the warp (the lane bits ≥ lanes) and stores
/// the sums in dst[npad]: a transposing butterfly (each step halves the values a lane holds), so a warp
/// spends about kNS shuffles, not kNS · log2(channels); dst[n] is written by exactly one lane.
template <int kNS>
__device__ __forceinline__ void reduce_channels(float (&v)[kNS], int lanes, int slice, float* dst) {
  const int lane = threadIdx.x % 32;
  int mask = lanes, idx = 0, cnt = kNS;
  transpose_halves<kNS / 2>(v, lane, mask, idx, cnt);
  bool writer = true;
  for (; mask < 32; mask <<= 1) {  // only once a lane holds one value
    v[0] += __shfl_xor_sync(kFullMask, v[0], mask);
    writer = writer && (lane & mask) == 0;
  }
  if (writer) {
#pragma unroll
    for (int i = 0; i < kNS; ++i)
      if (i < cnt) dst[slice * kNS + idx + i] = v[i];
  }
}

template <typename T>
struct TypeTag {
  using type = T;
};
template <int kValue>
struct IntTag {
  static constexpr int value = kValue;
};

template <bool kValue>
struct BoolTag {
  static constexpr bool value = kValue;
};

/// Calls f(TypeTag<element type>{}, IntTag<states per lane>{}, BoolTag<scalar A>{}) for the runtime dtype, states
/// per lane and scalar A (which plan_scan pairs with 8 states per lane).
template <typename F>
cudaError_t dispatch(ScanDtype dtype, const ScanPlan& plan, bool scalar_A, F&& f) {
  auto by_states = [&](auto tag) -> cudaError_t {
    if (scalar_A) return f(tag, IntTag<8>{}, BoolTag<true>{});
    return plan.states_per_lane == 8 ? f(tag, IntTag<8>{}, BoolTag<false>{}) : f(tag, IntTag<4>{}, BoolTag<false>{});
  };
  switch (dtype) {
    case ScanDtype::f32: return by_states(TypeTag<float>{});
    case ScanDtype::f16: return by_states(TypeTag<__half>{});
    case ScanDtype::bf16: return by_states(TypeTag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cab::kernels::cuda::detail
