// CUDA selective scan, row kernels: one thread per (batch, channel) row holding all of its N ≤ kRowStates states
// in registers. Against the lanes layout this does the per-step work of a channel (Δ, u, the gate, the output
// sum, the backward's scalar gradients) once instead of once per lane, needs no shuffles within a channel, and
// gives every thread 16 independent state chains to overlap. A block is kRowThreads channels of one (batch,
// group) and one time chunk (blockIdx.y); inputs come in tiles of kRowTile steps, loaded into registers one tile
// ahead (their loads in flight while the previous tile is computed) and committed to shared memory, threads
// spread along each tensor's unit-stride dimension. With few rows (language models: small batch, long L), time
// is chunked as in the lanes layout: a pass runs each chunk from zero (its end state, or its adjoint at its
// start, and Σ Δ), combine_chunks_kernel chains them, and the output or backward pass reruns each chunk from its
// true entering state (adjoint).
#include "selective_scan_device.cuh"

namespace cab::kernels::cuda {

namespace detail {

constexpr int kRowStride = kRowTile + 1;                  ///< floats per channel in the [channel][step] arrays
constexpr int kRowElems = kRowTile;  ///< elements of a [channel][step] tile per thread (kRowThreads channels)
constexpr int kRowBcElems = kRowStates * kRowTile / kRowThreads;  ///< elements of a B or C tile per thread
constexpr int kQuads = kRowStates / 4;

/// Where a row block sits: its (batch, group), its first channel, this thread's channel.
struct RowGeometry {
  int c, nch;
  int64_t b, g, d0, d, row;
  bool valid;
};

__device__ __forceinline__ RowGeometry row_geometry(const ScanParams& p) {
  RowGeometry G;
  const int64_t per_group = p.shape.dim / p.shape.groups;
  const int64_t tile = blockIdx.x % p.plan.tiles_per_group, bg = blockIdx.x / p.plan.tiles_per_group;
  G.b = bg / p.shape.groups;
  G.g = bg % p.shape.groups;
  G.d0 = G.g * per_group + tile * kRowThreads;
  const int64_t left = per_group - tile * kRowThreads;
  G.nch = static_cast<int>(left < kRowThreads ? left : kRowThreads);
  G.c = threadIdx.x;
  G.valid = G.c < G.nch;
  G.d = G.d0 + (G.valid ? G.c : 0);
  G.row = G.b * p.shape.dim + G.d;
  return G;
}

/// This thread's elements of a [rows][kRowTile] tile (rows divides kRowThreads), threads along the tensor's
/// unit-stride side: element i is (row r0 + i·dr, step j0 + i·dj), so its offset in a tensor is affine in i.
struct RowTileMap {
  int rows, r0, j0, dr, dj;
  __device__ __forceinline__ RowTileMap(int rows_, bool time_fast) : rows(rows_) {
    const int e = threadIdx.x;
    if (time_fast) r0 = e / kRowTile, j0 = e % kRowTile, dr = kRowThreads / kRowTile, dj = 0;
    else r0 = e % rows, j0 = e / rows, dr = 0, dj = kRowThreads / rows;
  }
  /// Offset of element 0 and the step between elements in a tensor of these row and time strides.
  __device__ __forceinline__ int first(int64_t row_stride, int64_t time_stride) const {
    return r0 * static_cast<int>(row_stride) + j0 * static_cast<int>(time_stride);
  }
  __device__ __forceinline__ int step(int64_t row_stride, int64_t time_stride) const {
    return dr * static_cast<int>(row_stride) + dj * static_cast<int>(time_stride);
  }
};

/// Calls f(i, row, step, ok) for this thread's kCount elements of a [rows][kRowTile] tile; ok: row < live_rows
/// and step < steps. A whole tile (every row live, kRowTile steps) takes a copy of the loop with ok = true, so its
/// loads and stores go unpredicated and unbranched; only a block's last tile or a partial block pays the checks.
template <int kCount, typename F>
__device__ __forceinline__ void for_row_elements(const RowTileMap& m, int live_rows, int steps, F&& f) {
  if (live_rows >= m.rows && steps == kRowTile) {
#pragma unroll
    for (int i = 0; i < kCount; ++i) f(i, m.r0 + i * m.dr, m.j0 + i * m.dj, true);
  } else {
#pragma unroll
    for (int i = 0; i < kCount; ++i) {
      const int r = m.r0 + i * m.dr, j = m.j0 + i * m.dj;
      f(i, r, j, r < live_rows && j < steps);
    }
  }
}

/// Shared memory of a row block: the tile's [channel][step] inputs (the outputs of a step overwrite its inputs:
/// y over u in the forward; ∂u, ∂Δ, ∂z over u, Δ, z in the backward), the block's delta bias, B and C as
/// [step][kRowStates].
struct RowShared {
  float u[kRowThreads * kRowStride], dt[kRowThreads * kRowStride], dsp[kRowThreads * kRowStride];
  float z[kRowThreads * kRowStride], dout[kRowThreads * kRowStride];
  float bias[kRowThreads];
  alignas(16) float B[kRowTile * kRowStates];
  alignas(16) float C[kRowTile * kRowStates];
};

/// The backward's: the states before every step of a span of kSpan steps (plan.row_span: the whole tile, or half
/// of it so that 6 blocks fit on an SM) as [step][quad][channel] (conflict-free float4 rows), and the warps' partial
/// sums of ∂B and ∂C ([warp][step][quad][4 of ∂B, 4 of ∂C]).
template <int kSpan>
struct RowBackwardShared {
  RowShared in;
  float4 hist[kSpan][kQuads][kRowThreads];
  float red[kRowThreads / 32][kRowTile][kQuads][8];
};

/// What a tile load fetches (the backward wants more than the forward).
struct RowWants {
  bool u = true, dt = true, z = false, dout = false, B = true, C = false;
};

/// This thread's share of the raw inputs of one tile, held in registers between the load and the commit.
template <typename T>
struct RowTileRegs {
  T u[kRowElems], dt[kRowElems], z[kRowElems], dout[kRowElems], B[kRowBcElems], C[kRowBcElems];

  /// Issues the loads of the tile [t0, t0 + kRowTile) (missing elements are not read).
  __device__ __forceinline__ void load(const ScanParams& p, const ScanDirection& P, const RowGeometry& G, int64_t t0,
                                       const RowWants& w) {
    const int steps = tile_steps<kRowTile>(p, t0);
    const T* pu = element(static_cast<const T*>(P.u), P.u_st, G.b, G.d0, t0);
    const T* pdt = element(static_cast<const T*>(P.delta), P.delta_st, G.b, G.d0, t0);
    const T* pz = P.z ? element(static_cast<const T*>(P.z), P.z_st, G.b, G.d0, t0) : nullptr;
    const T* pdo = w.dout ? element(static_cast<const T*>(p.dout), p.dout_st, G.b, G.d0, t0) : nullptr;
    const RowTileMap m(kRowThreads, time_fast(P.u_st));
    // Element i of each tensor at base + first + i · step (32-bit offsets within the tile: check_tile_offsets).
    pu += m.first(P.u_st.channel, P.u_st.time);
    pdt += m.first(P.delta_st.channel, P.delta_st.time);
    if (pz) pz += m.first(P.z_st.channel, P.z_st.time);
    if (pdo) pdo += m.first(p.dout_st.channel, p.dout_st.time);
    const int su = m.step(P.u_st.channel, P.u_st.time), sdt = m.step(P.delta_st.channel, P.delta_st.time);
    const int sz = pz ? m.step(P.z_st.channel, P.z_st.time) : 0, sdo = pdo ? m.step(p.dout_st.channel, p.dout_st.time) : 0;
    // One pass per tensor, its conditions decided outside the elements' loop.
    auto each = [&](auto&& f) { for_row_elements<kRowElems>(m, G.nch, steps, f); };
    if (w.u) each([&](int i, int, int, bool ok) { if (ok) u[i] = pu[i * su]; });
    if (w.dt) each([&](int i, int, int, bool ok) { if (ok) dt[i] = pdt[i * sdt]; });
    if (w.z && pz) each([&](int i, int, int, bool ok) { if (ok) z[i] = pz[i * sz]; });
    if (w.dout) each([&](int i, int, int, bool ok) { if (ok) dout[i] = pdo[i * sdo]; });
    const int N = static_cast<int>(p.shape.dstate);
    const T* pB = static_cast<const T*>(P.B) + at4(P.B_st, G.b, G.g, 0, t0);
    const T* pC = static_cast<const T*>(P.C) + at4(P.C_st, G.b, G.g, 0, t0);
    const RowTileMap mb(kRowStates, time_fast(P.B_st));
    const int sB = mb.step(P.B_st.state, P.B_st.time), sC = mb.step(P.C_st.state, P.C_st.time);
    pB += mb.first(P.B_st.state, P.B_st.time);
    pC += mb.first(P.C_st.state, P.C_st.time);
    auto each_bc = [&](auto&& f) { for_row_elements<kRowBcElems>(mb, N, steps, f); };
    if (w.B) each_bc([&](int i, int, int, bool ok) { if (ok) B[i] = pB[i * sB]; });
    if (w.C) each_bc([&](int i, int, int, bool ok) { if (ok) C[i] = pC[i * sC]; });
  }

  /// Converts the loaded tile into shared memory: Δ = softplus(delta + bias) (and its derivative), the gate
  /// silu(z) or raw z, dout scaled by out_scale; missing steps and channels become identity steps (all 0).
  __device__ __forceinline__ void commit(const ScanParams& p, const ScanDirection& P, const RowGeometry& G, int64_t t0,
                                         const RowWants& w, bool z_silu, RowShared& s) const {
    const int steps = tile_steps<kRowTile>(p, t0);
    auto each = [&](auto&& f) {
      for_row_elements<kRowElems>(RowTileMap(kRowThreads, time_fast(P.u_st)), G.nch, steps,
                                  [&](int i, int c, int j, bool ok) { f(i, c * kRowStride + j, c, ok); });
    };
    // One pass per array, its conditions decided outside the elements' loop.
    if (w.u) each([&](int i, int at, int, bool ok) { s.u[at] = ok ? to_float(u[i]) : 0.f; });
    if (w.dt) {
      if (p.delta_softplus) {
        each([&](int i, int at, int c, bool ok) {
          const float raw = ok ? to_float(dt[i]) + s.bias[c] : 0.f;  // dt[i] was not loaded where !ok
          s.dt[at] = ok ? softplus(raw) : 0.f;
          if (w.dout) s.dsp[at] = ok ? sigmoid(raw) : 0.f;
        });
      } else {
        each([&](int i, int at, int c, bool ok) {
          s.dt[at] = ok ? to_float(dt[i]) + s.bias[c] : 0.f;
          if (w.dout) s.dsp[at] = ok ? 1.f : 0.f;
        });
      }
    }
    if (w.z) {
      if (P.z && z_silu) {
        each([&](int i, int at, int, bool ok) {
          const float zz = ok ? to_float(z[i]) : 0.f;
          s.z[at] = zz * sigmoid(zz);
        });
      } else if (P.z) {
        each([&](int i, int at, int, bool ok) { s.z[at] = ok ? to_float(z[i]) : 0.f; });
      } else {
        each([&](int, int at, int, bool) { s.z[at] = z_silu ? 1.f : 0.f; });
      }
    }
    if (w.dout) each([&](int i, int at, int, bool ok) { s.dout[at] = ok ? p.out_scale * to_float(dout[i]) : 0.f; });
    const int N = static_cast<int>(p.shape.dstate);
    auto each_bc = [&](auto&& f) {
      for_row_elements<kRowBcElems>(RowTileMap(kRowStates, time_fast(P.B_st)), N, steps,
                                    [&](int i, int n, int j, bool ok) { f(i, j * kRowStates + n, ok); });
    };
    if (w.B) each_bc([&](int i, int at, bool ok) { s.B[at] = ok ? to_float(B[i]) : 0.f; });
    if (w.C) each_bc([&](int i, int at, bool ok) { s.C[at] = ok ? to_float(C[i]) : 0.f; });
  }
};

/// The block's time chunk in tiles of kRowTile (the whole sequence when time is not chunked).
struct RowChunk {
  int64_t begin, end;
  int k, chunks;
  __device__ __forceinline__ explicit RowChunk(const ScanParams& p) {
    const int64_t tiles = (p.shape.len + kRowTile - 1) / kRowTile, per = p.plan.chunk_len / kRowTile;
    k = static_cast<int>(blockIdx.y);
    chunks = p.plan.chunks;
    begin = k * per;
    end = begin + per < tiles ? begin + per : tiles;
  }
  __device__ __forceinline__ int64_t tiles() const { return end - begin; }
  /// The i-th tile in the scan's order (`rev`), or against it.
  __device__ __forceinline__ int64_t tile(int64_t i, bool rev) const { return rev ? end - 1 - i : begin + i; }
  /// The chunk is the first (or last) one the direction `rev` scans.
  __device__ __forceinline__ bool first(bool rev) const { return rev ? k == chunks - 1 : k == 0; }
  __device__ __forceinline__ bool last(bool rev) const { return rev ? k == 0 : k == chunks - 1; }
  /// This row's slot (N floats) in a [rows, chunks, N] chunk buffer.
  __device__ __forceinline__ float* at(float* buffer, const ScanParams& p, const RowGeometry& G) const {
    return buffer + (G.row * chunks + k) * p.shape.dstate;
  }
};

/// What a row kernel sets up at the start of a direction: this thread's A · log2 e (states ≥ N: 0), its state
/// (the N floats at `init`, or 0), its D, and the block's delta bias in shared memory, written after a barrier
/// (the previous direction is done with the shared arrays).
struct RowDirection {
  float A2[kRowStates], h[kRowStates], D;

  __device__ __forceinline__ RowDirection(const ScanParams& p, const ScanDirection& P, const RowGeometry& G,
                                          const float* init, RowShared& s) {
    const int64_t N = p.shape.dstate;
#pragma unroll
    for (int n = 0; n < kRowStates; ++n) {
      const bool live = G.valid && n < N;
      A2[n] = live ? P.A[G.d * N + n] * kLog2e : 0.f;
      h[n] = live && init ? init[n] : 0.f;
    }
    D = P.D && G.valid ? P.D[G.d] : 0.f;
    __syncthreads();
    s.bias[threadIdx.x] = P.delta_bias && threadIdx.x < G.nch ? P.delta_bias[G.d0 + threadIdx.x] : 0.f;
  }
};

/// h ← exp(Δ A) ⊙ h + Δ u B_j for all states, and, with kOutput, returns Σ_n C_j[n] h[n] after the step.
template <bool kOutput>
__device__ __forceinline__ float row_step(float (&h)[kRowStates], const float (&A2)[kRowStates], float dt, float x,
                                          const float* B, const float* C) {
  float acc = 0.f;
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const float4 b = reinterpret_cast<const float4*>(B)[q];
    const float bv[4] = {b.x, b.y, b.z, b.w};
    float cv[4] = {0.f, 0.f, 0.f, 0.f};
    if constexpr (kOutput) {
      const float4 cc = reinterpret_cast<const float4*>(C)[q];
      cv[0] = cc.x, cv[1] = cc.y, cv[2] = cc.z, cv[3] = cc.w;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = 4 * q + i;
      h[n] = fmaf(exp2_approx(dt * A2[n]), h[n], x * bv[i]);
      if constexpr (kOutput) acc = fmaf(cv[i], h[n], acc);
    }
  }
  return acc;
}

/// Runs this thread's row through the steps jj ∈ [begin, end) of the committed tile, counted in the direction's
/// order (rev: step j = kRowTile−1−jj); with `hist`, stores the state before each step at
/// hist[jj − begin][quad][thread].
__device__ __forceinline__ void advance_tile(float (&h)[kRowStates], const float (&A2)[kRowStates], const RowShared& s,
                                             int at_c, bool rev, int begin, int end,
                                             float4 (*hist)[kQuads][kRowThreads]) {
#pragma unroll 2
  for (int jj = begin; jj < end; ++jj) {
    const int j = rev ? kRowTile - 1 - jj : jj;
    if (hist) {
#pragma unroll
      for (int q = 0; q < kQuads; ++q)
        hist[jj - begin][q][threadIdx.x] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    }
    const float dt = s.dt[at_c + j];
    row_step<false>(h, A2, dt, dt * s.u[at_c + j], s.B + j * kRowStates, nullptr);
  }
}

/// Σ_n C[n] h[n] over the row's states, summed per quad.
__device__ __forceinline__ float row_dot(const float* C, const float (&h)[kRowStates]) {
  float part[kQuads];
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const float4 c = reinterpret_cast<const float4*>(C)[q];
    part[q] = fmaf(c.x, h[4 * q], fmaf(c.y, h[4 * q + 1], fmaf(c.z, h[4 * q + 2], c.w * h[4 * q + 3])));
  }
  return (part[0] + part[1]) + (part[2] + part[3]);
}

/// Writes scale · src (a [channel][step] array) to the tile [t0, t0 + kRowTile) of dst; with `add`, adds what dst
/// holds there (written earlier by this same thread: the mapping of elements to threads is fixed).
template <typename T>
__device__ __forceinline__ void write_tile(const ScanParams& p, const RowGeometry& G, int64_t t0, T* base,
                                           const Strides& st, const float* src, float scale, bool add) {
  const RowTileMap m(kRowThreads, time_fast(st));
  T* dst = element(base, st, G.b, G.d0, t0) + m.first(st.channel, st.time);
  const int step = m.step(st.channel, st.time);
  const int steps = tile_steps<kRowTile>(p, t0);
  if (add) {
    for_row_elements<kRowElems>(m, G.nch, steps, [&](int i, int c, int j, bool ok) {
      if (ok) dst[i * step] = from_float<T>(fmaf(scale, src[c * kRowStride + j], to_float(dst[i * step])));
    });
  } else {
    for_row_elements<kRowElems>(m, G.nch, steps, [&](int i, int c, int j, bool ok) {
      if (ok) dst[i * step] = from_float<T>(scale * src[c * kRowStride + j]);
    });
  }
}

/// The state entering the block's chunk in direction P (chunk_state when chunked, else h0), or null for zero.
__device__ __forceinline__ const float* row_entry(const ScanParams& p, const ScanDirection& P, const RowGeometry& G,
                                                  const RowChunk& chunk) {
  if (chunk.chunks > 1) return chunk.at(P.chunk_state, p, G);
  return P.h0 ? P.h0 + G.row * p.shape.dstate : nullptr;
}

/// A chunk run from zero: its end state (or adjoint at its start) into chunk_local, its Σ Δ into chunk_sum.
__device__ __forceinline__ void write_local(const ScanParams& p, const ScanDirection& P, const RowGeometry& G,
                                            const RowChunk& chunk, const float (&x)[kRowStates], float dt_sum) {
  if (!G.valid) return;
  float* out = chunk.at(P.chunk_local, p, G);
#pragma unroll
  for (int n = 0; n < kRowStates; ++n)
    if (n < p.shape.dstate) out[n] = x[n];
  P.chunk_sum[G.row * chunk.chunks + chunk.k] = dt_sum;
}

/// What a one-way pass over the block's chunk computes.
enum class RowPass {
  output,         ///< from the chunk's entering state: y = out_scale · Σ_dir (C h + D u) · silu(z), the final states
  local_state,    ///< from a zero state: the chunk's end state and Σ Δ (write_local)
  local_adjoint,  ///< against the scan's order from zero: q ← a_t ⊙ (q + dy_t C_t), dy_t = out_scale · dout_t ·
                  ///< silu(z_t), ending as ∂L/∂(state entering the chunk) from the chunk's own outputs (write_local)
};

template <typename T, RowPass kPass>
__global__ void __launch_bounds__(kRowThreads, 8) row_pass_kernel(ScanParams p) {
  constexpr bool kAdjoint = kPass == RowPass::local_adjoint;
  __shared__ RowShared s;
  const RowGeometry G = row_geometry(p);
  const RowChunk chunk(p);
  const int64_t ntiles = chunk.tiles();
  const int at_c = G.c * kRowStride;
  RowWants want;
  want.u = want.B = !kAdjoint;
  want.z = want.C = kPass != RowPass::local_state;
  want.dout = kAdjoint;
  for (int di = 0; di < p.directions; ++di) {
    const ScanDirection& P = p.dir[di];
    const bool rev = P.reverse, back = rev != kAdjoint;  // back: the tiles from the chunk's end
    RowDirection start(p, P, G, kPass == RowPass::output ? row_entry(p, P, G, chunk) : nullptr, s);
    float(&A2)[kRowStates] = start.A2, (&h)[kRowStates] = start.h;  // the adjoint's q in local_adjoint
    float dt_sum = 0.f;
    RowTileRegs<T> regs;
    regs.load(p, P, G, chunk.tile(0, back) * kRowTile, want);
    for (int64_t i = 0; i < ntiles; ++i) {
      const int64_t t0 = chunk.tile(i, back) * kRowTile;
      __syncthreads();  // bias visible; the previous tile's flush has read its outputs
      regs.commit(p, P, G, t0, want, true, s);
      if (i + 1 < ntiles) regs.load(p, P, G, chunk.tile(i + 1, back) * kRowTile, want);
      __syncthreads();
#pragma unroll 2
      for (int jj = 0; jj < kRowTile; ++jj) {
        const int j = back ? kRowTile - 1 - jj : jj;
        const float dt = s.dt[at_c + j];
        if constexpr (kPass == RowPass::output) {
          const float uu = s.u[at_c + j];
          const float acc = row_step<true>(h, A2, dt, dt * uu, s.B + j * kRowStates, s.C + j * kRowStates);
          s.u[at_c + j] = (acc + start.D * uu) * s.z[at_c + j];  // y over u
        } else if constexpr (kPass == RowPass::local_state) {
          dt_sum += dt;
          row_step<false>(h, A2, dt, dt * s.u[at_c + j], s.B + j * kRowStates, nullptr);
        } else {
          dt_sum += dt;
          const float dy = s.dout[at_c + j] * s.z[at_c + j];
#pragma unroll
          for (int qd = 0; qd < kQuads; ++qd) {
            const float4 c4 = reinterpret_cast<const float4*>(s.C + j * kRowStates)[qd];
            const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) h[4 * qd + k] = exp2_approx(dt * A2[4 * qd + k]) * fmaf(dy, cv[k], h[4 * qd + k]);
          }
        }
      }
      if constexpr (kPass == RowPass::output) {
        __syncthreads();
        write_tile(p, G, t0, static_cast<T*>(p.y), p.y_st, s.u, p.out_scale, di > 0);
      }
    }
    if constexpr (kPass != RowPass::output) {
      write_local(p, P, G, chunk, h, dt_sum);
    } else if (G.valid && P.final_state && chunk.last(rev)) {
#pragma unroll
      for (int n = 0; n < kRowStates; ++n)
        if (n < p.shape.dstate) P.final_state[G.row * p.shape.dstate + n] = h[n];
    }
  }
}

/// Backward over the block's chunk. Per direction: the states entering every tile from the chunk's entering
/// state (scratch), then the tiles in reverse order of the scan, each rerun from its entering state into shared
/// memory and swept backwards with the adjoint (the formulas of selective_scan_bwd.cu), starting from the adjoint
/// entering the chunk from its successors (chunk_grad when chunked, else dfinal); ∂B, ∂C are summed over the warp
/// (reduce_channels), over the block's warps and over blocks (fp32 atomics).
template <typename T, int kSpan>
__global__ void __launch_bounds__(kRowThreads, kSpan == kRowTile ? 4 : 6) row_backward_kernel(ScanParams p) {
  constexpr int kSpans = kRowTile / kSpan;
  __shared__ RowBackwardShared<kSpan> sb;
  RowShared& s = sb.in;
  const RowGeometry G = row_geometry(p);
  const RowChunk chunk(p);
  const int64_t all_tiles = (p.shape.len + kRowTile - 1) / kRowTile, ntiles = chunk.tiles(), N = p.shape.dstate;
  const int at_c = G.c * kRowStride, warp = threadIdx.x / 32;
  for (int di = 0; di < p.directions; ++di) {
    const ScanDirection& P = p.dir[di];
    const bool rev = P.reverse;
    RowDirection start(p, P, G, row_entry(p, P, G, chunk), s);
    float(&A2)[kRowStates] = start.A2, (&h)[kRowStates] = start.h;
    auto slot = [&](int64_t tile, int span) {  // the state entering span `span` (in the scan's order) of `tile`
      const int64_t at = ((di * all_tiles + tile) * kSpans + span) * p.plan.blocks + blockIdx.x;
      return reinterpret_cast<float4*>(p.scratch + at * (kRowThreads * kRowStates)) + threadIdx.x * kQuads;
    };

    // Phase 1: the state entering every tile (span), stored and read once with the streaming cache hint so that the
    // scratch buffer (larger than L2 at Vim's shapes) does not evict the inputs phase 2 reads again.
    RowWants fwd;
    RowTileRegs<T> regs;
    regs.load(p, P, G, chunk.tile(0, rev) * kRowTile, fwd);
    for (int64_t i = 0; i < ntiles; ++i) {
      const int64_t tile = chunk.tile(i, rev);
      __syncthreads();
      regs.commit(p, P, G, tile * kRowTile, fwd, false, s);
      if (i + 1 < ntiles) regs.load(p, P, G, chunk.tile(i + 1, rev) * kRowTile, fwd);
      __syncthreads();
#pragma unroll
      for (int span = 0; span < kSpans; ++span) {
        float4* out = slot(tile, span);
#pragma unroll
        for (int q = 0; q < kQuads; ++q)
          __stcs(out + q, make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]));
        advance_tile(h, A2, s, at_c, rev, span * kSpan, (span + 1) * kSpan, nullptr);
      }
    }

    // Phase 2: the tiles against the scan's order.
    float q[kRowStates], dA_acc[kRowStates];
    const float* q_entry = chunk.chunks > 1 ? chunk.at(P.chunk_grad, p, G) : P.dfinal ? P.dfinal + G.row * N : nullptr;
#pragma unroll
    for (int n = 0; n < kRowStates; ++n) {
      q[n] = G.valid && n < N && q_entry ? q_entry[n] : 0.f;
      dA_acc[n] = 0.f;
    }
    float dD_acc = 0.f, dbias_acc = 0.f;
    RowWants bwd;
    bwd.z = bwd.dout = bwd.C = true;
    regs.load(p, P, G, chunk.tile(0, !rev) * kRowTile, bwd);
    for (int64_t i = 0; i < ntiles; ++i) {
      const int64_t tile = chunk.tile(i, !rev), t0 = tile * kRowTile;
      __syncthreads();  // the previous tile's flushes are done
      regs.commit(p, P, G, t0, bwd, false, s);
      if (i + 1 < ntiles) regs.load(p, P, G, chunk.tile(i + 1, !rev) * kRowTile, bwd);
      __syncthreads();
      // The tile's spans against the scan's order, each rerun from its stored entering state with its states
      // h_{t−1} into hist.
      for (int span = kSpans - 1; span >= 0; --span) {
        const int begin = span * kSpan;
        const float4* entry = slot(tile, span);
#pragma unroll
        for (int qd = 0; qd < kQuads; ++qd) {
          const float4 v = __ldcs(entry + qd);
          h[4 * qd] = v.x, h[4 * qd + 1] = v.y, h[4 * qd + 2] = v.z, h[4 * qd + 3] = v.w;
        }
        advance_tile(h, A2, s, at_c, rev, begin, begin + kSpan, sb.hist);
        // h is the state after the span's last step; walking back, the state after step jj is the one before jj+1.
#pragma unroll 1  // unrolling by 2 measured no faster (H100, Vim-Tiny; with half-tile spans ptxas spills)
        for (int jj = begin + kSpan - 1; jj >= begin; --jj) {
          const int j = rev ? kRowTile - 1 - jj : jj;
          const float* Bj = s.B + j * kRowStates;
          const float* Cj = s.C + j * kRowStates;
          const float dt = s.dt[at_c + j], uu = s.u[at_c + j], dout = s.dout[at_c + j];
          float y_pre = row_dot(Cj, h);
          y_pre = fmaf(start.D, uu, y_pre);
          float dy = dout, dz = 0.f;
          if (P.z) {
            const float zz = s.z[at_c + j], sz = sigmoid(zz);
            dy = dout * zz * sz;
            dz = dout * y_pre * sz * (1.f + zz * (1.f - sz));
          }
          const float dtu = dt * uu;
          float du_q[kQuads], adt_q[kQuads];  // per quad: Σ g B, Σ g a h_{t−1} A (A · log2 e, times ln 2 below)
#pragma unroll
          for (int qd = 0; qd < kQuads; ++qd) {
            const float4 hp4 = sb.hist[jj - begin][qd][threadIdx.x];
            const float4 b4 = reinterpret_cast<const float4*>(Bj)[qd];
            const float4 c4 = reinterpret_cast<const float4*>(Cj)[qd];
            const float hp[4] = {hp4.x, hp4.y, hp4.z, hp4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
            const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
            float v[8];  // this quad's ∂B terms, then its ∂C terms
            du_q[qd] = adt_q[qd] = 0.f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int n = 4 * qd + k;
              const float a = exp2_approx(dt * A2[n]);
              const float g = fmaf(dy, cv[k], q[n]);  // ∂L/∂h_t
              v[k] = g * dtu;
              v[4 + k] = dy * h[n];
              du_q[qd] = fmaf(g, bv[k], du_q[qd]);
              q[n] = a * g;
              const float gah = q[n] * hp[k];
              adt_q[qd] = fmaf(gah, A2[n], adt_q[qd]);
              dA_acc[n] = fmaf(gah, dt, dA_acc[n]);
              h[n] = hp[k];
            }
            reduce_channels<8>(v, 1, 0, &sb.red[warp][j][qd][0]);
          }
          const float du_part = (du_q[0] + du_q[1]) + (du_q[2] + du_q[3]);
          const float adt_part = (adt_q[0] + adt_q[1]) + (adt_q[2] + adt_q[3]);
          const float ddelta = fmaf(kLn2, adt_part, uu * du_part) * s.dsp[at_c + j];
          s.u[at_c + j] = fmaf(start.D, dy, dt * du_part);  // ∂u over u
          s.dt[at_c + j] = ddelta;                           // ∂Δ over Δ
          s.z[at_c + j] = dz;                                // ∂z over z
          dD_acc = fmaf(dy, uu, dD_acc);
          dbias_acc += ddelta;
        }
      }
      __syncthreads();
      write_tile(p, G, t0, static_cast<T*>(P.du), P.du_st, s.u, 1.f, false);
      write_tile(p, G, t0, static_cast<T*>(P.ddelta), P.ddelta_st, s.dt, 1.f, false);
      if (P.z) write_tile(p, G, t0, static_cast<T*>(P.dz), P.dz_st, s.z, 1.f, false);
      const int steps = tile_steps<kRowTile>(p, t0);
      for (int which = 0; which < 2; ++which) {
        float* dst = which == 0 ? P.dB : P.dC;
        const BcStrides& st = which == 0 ? P.dB_st : P.dC_st;
        const RowTileMap m(kRowStates, time_fast(st));
        float* at = dst + at4(st, G.b, G.g, 0, t0) + m.first(st.state, st.time);
        const int step = m.step(st.state, st.time);
        for_row_elements<kRowBcElems>(m, static_cast<int>(N), steps, [&](int i, int n, int j, bool ok) {
          if (!ok) return;
          float sum = 0.f;
#pragma unroll
          for (int w = 0; w < kRowThreads / 32; ++w) sum += sb.red[w][j][n / 4][4 * which + n % 4];
          atomicAdd(at + i * step, sum);
        });
      }
    }

    if (G.valid) {
#pragma unroll
      for (int n = 0; n < kRowStates; ++n) {
        if (n >= N) continue;
        if (P.dh0 && chunk.first(rev)) P.dh0[G.row * N + n] = q[n];
        atomicAdd(P.dA + G.d * N + n, dA_acc[n]);
      }
      if (P.dD) atomicAdd(P.dD + G.d, dD_acc);
      if (P.dbias) atomicAdd(P.dbias + G.d, dbias_acc);
    }
  }
}

/// The row kernels of a forward or backward: with time chunks, the chunks' local passes and combines first
/// (the backward recomputes the entering states unless `have_chunk_states`).
template <typename T>
cudaError_t launch_rows(const ScanParams& p, bool backward, bool have_chunk_states, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.plan.blocks), static_cast<unsigned>(p.plan.chunks));
  const bool chunked = p.plan.chunks > 1;
  if (chunked && (!backward || !have_chunk_states)) {
    row_pass_kernel<T, RowPass::local_state><<<grid, kRowThreads, 0, stream>>>(p);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    if (const cudaError_t err = launch_combine(p, false, stream); err != cudaSuccess) return err;
  }
  if (!backward) {
    row_pass_kernel<T, RowPass::output><<<grid, kRowThreads, 0, stream>>>(p);
    return cudaGetLastError();
  }
  if (chunked) {
    row_pass_kernel<T, RowPass::local_adjoint><<<grid, kRowThreads, 0, stream>>>(p);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    if (const cudaError_t err = launch_combine(p, true, stream); err != cudaSuccess) return err;
  }
  if (p.plan.row_span == kRowTile) row_backward_kernel<T, kRowTile><<<grid, kRowThreads, 0, stream>>>(p);
  else row_backward_kernel<T, kRowTile / 2><<<grid, kRowThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace detail

cudaError_t scan_rows(const ScanParams& p, ScanDtype dtype, bool backward, bool have_chunk_states, cudaStream_t stream) {
  switch (dtype) {
    case ScanDtype::f32: return detail::launch_rows<float>(p, backward, have_chunk_states, stream);
    case ScanDtype::f16: return detail::launch_rows<__half>(p, backward, have_chunk_states, stream);
    case ScanDtype::bf16: return detail::launch_rows<__nv_bfloat16>(p, backward, have_chunk_states, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cab::kernels::cuda
