// CUDA selective scan: the plan, the forward passes over time chunks (output, local state, local adjoint) and
// the sequential chunk combines. Layout and algorithm: selective_scan_cuda.cuh.
#include <type_traits>

#include "selective_scan_device.cuh"

namespace cab::kernels::cuda {

namespace detail {

enum class Pass {
  output,         ///< runs each chunk from its entering state and writes y (and the final state)
  local_state,    ///< runs each chunk from a zero state: its end state and Σ Δ
  local_adjoint,  ///< runs the adjoint backwards through each chunk from zero: ∂L/∂(state before it)
};

/// Writes out_scale · (the tile's outputs in shared memory) to y for times [t0, t0 + kT); with `add`, adds them to
/// what y holds there (the other direction's share, written earlier by this block).
template <typename T, int kT>
__device__ __forceinline__ void flush_y(const ScanParams& p, const Geometry& G, const SmemLayout& L, int64_t t0,
                                        const float* out, bool add) {
  T* y = element(static_cast<T*>(p.y), p.y_st, G.b, G.d0, t0);
  const int steps = tile_steps<kT>(p, t0);
  for_each_in_tile<kT>(G.ch, time_fast(p.y_st), [&](int c, int j) {
    if (c < G.nch && j < steps) {
      const int idx = offset(p.y_st, c, j);
      float v = p.out_scale * out[c * L.channel_stride + j];
      if (add) v += load(y, idx);
      store(y, idx, v);
    }
  });
}

/// y_t before scaling for this thread's channel: (C_t · h_t + D u_t) · silu(z_t), summed over the channel's lanes.
template <int kNS>
__device__ __forceinline__ float output(const float (&h)[kNS], const float* C, float D, float u, float gate, int lanes) {
  float Cj[kNS];
  read_states<kNS>(C, Cj);
  float out = 0.f;
#pragma unroll
  for (int n = 0; n < kNS; ++n) out = fmaf(Cj[n], h[n], out);
  return (channel_sum(out, lanes) + D * u) * gate;
}

/// One block: a channel tile × one time chunk, every direction of the launch in turn. The output pass writes
/// y = out_scale · y_dir, the second direction of a fused bidirectional launch adding its share to the first's
/// (the same thread wrote those elements: the flush maps elements to threads identically).
template <typename T, int kNS, bool kScalarA, Pass kPass>
__global__ void __launch_bounds__(kThreads, kNS == 4 ? 8 : 4) chunk_pass_kernel(ScanParams p) {
  constexpr int kT = kFwdTile;
  const BlockSetup<kT, kNS> block(p, false);
  const Geometry& G = block.G;
  const SmemLayout& L = block.L;
  const SharedArrays& S = block.s;
  const TileRange& tiles = block.tiles;
  const int at_c = block.at_c;
  const int64_t N = p.shape.dstate;
  const int K = p.plan.chunks, k = blockIdx.y;

  for (int di = 0; di < p.directions; ++di) {
    const ScanDirection& P = p.dir[di];
    float A2[kNS], h[kNS];
    load_entry<kNS>(p, P, G, kPass != Pass::output, A2, h);
    const float Dd = P.D && G.valid ? P.D[G.d] : 0.f;
    // The adjoint runs against the direction's time order.
    const bool backwards = P.reverse != (kPass == Pass::local_adjoint);
    ChannelTile tile_in;
    tile_in.dt = S.dt;
    if (kPass != Pass::local_adjoint) tile_in.u = S.u;
    if (kPass != Pass::local_state) tile_in.z = S.z, tile_in.z_silu = true;
    if (kPass == Pass::local_adjoint) tile_in.dout = S.dout;
    float dt_sum = 0.f;

    for (int64_t i = 0; i < tiles.end - tiles.begin; ++i) {
      const int64_t tile = backwards ? tiles.end - 1 - i : tiles.begin + i;
      const int64_t t0 = tile * kT;
      __syncthreads();  // the previous tile's readers are done
      stage_channels<T, kT>(p, P, G, L, t0, tile_in);
      stage_bc<T, kT>(p, P, G, L, t0, kPass == Pass::local_adjoint ? nullptr : S.B,
                      kPass == Pass::local_state ? nullptr : S.C);
      __syncthreads();
#pragma unroll 4
      for (int jj = 0; jj < kT; ++jj) {
        const int j = backwards ? kT - 1 - jj : jj;
        const float dt = S.dt[at_c + j];
        dt_sum += dt;
        if constexpr (kPass == Pass::local_adjoint) {
          float Cj[kNS];
          read_states<kNS>(S.C + j * L.bc_stride + G.s * kNS, Cj);
          // q ← a_t ⊙ (q + dy_t C_t): the gradient reaching the state before step t.
          const float dy = S.dout[at_c + j] * S.z[at_c + j];
          const float a = scalar_decay<kNS, kScalarA>(A2, dt);
#pragma unroll
          for (int n = 0; n < kNS; ++n) h[n] = decay<kNS, kScalarA>(A2, dt, n, a) * fmaf(dy, Cj[n], h[n]);
        } else {
          advance<kNS, kScalarA>(h, A2, dt, dt * S.u[at_c + j], S.B + j * L.bc_stride + G.s * kNS);
          if constexpr (kPass == Pass::output) {
            const float out = output<kNS>(h, S.C + j * L.bc_stride + G.s * kNS, Dd, S.u[at_c + j], S.z[at_c + j], G.lanes);
            if (G.s == 0) S.out0[at_c + j] = out;
          }
        }
      }
      if constexpr (kPass == Pass::output) {
        __syncthreads();
        flush_y<T, kT>(p, G, L, t0, S.out0, di > 0);
      }
    }

#pragma unroll
    for (int n = 0; n < kNS; ++n) {
      const int64_t nn = G.s * kNS + n;
      if (!G.valid || nn >= N) continue;
      if constexpr (kPass == Pass::output) {
        const bool last = P.reverse ? k == 0 : k == K - 1;
        if (last && P.final_state) P.final_state[G.row * N + nn] = h[n];
      } else {
        P.chunk_local[(G.row * K + k) * N + nn] = h[n];
      }
    }
    if (kPass != Pass::output && G.valid && G.s == 0) P.chunk_sum[G.row * K + k] = dt_sum;
  }
}

/// Per (direction, row, state), sequentially over the chunks: the state entering each chunk in the direction's
/// order (from h0), or, for the adjoint, the gradient entering each chunk from its successors (from dfinal).
/// Either way x ← exp(A·ΣΔ_k) · x + local_k, ΣΔ_k being the chunk's decay.
__global__ void combine_chunks_kernel(ScanParams p, bool adjoint) {
  const int64_t N = p.shape.dstate, rows = p.shape.batch * p.shape.dim;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.directions * rows * N) return;
  const int di = static_cast<int>(idx / (rows * N));
  const int64_t row = idx / N % rows, n = idx % N;
  const ScanDirection& P = p.dir[di];
  const int K = p.plan.chunks;
  const float A2 = P.A[(row % p.shape.dim) * N + n] * kLog2e;
  const float* start = adjoint ? P.dfinal : P.h0;
  float* entering = adjoint ? P.chunk_grad : P.chunk_state;
  const bool backwards = P.reverse != adjoint;
  float x = start ? start[row * N + n] : 0.f;
  for (int i = 0; i < K; ++i) {
    const int k = backwards ? K - 1 - i : i;
    const int64_t at = (row * K + k) * N + n;
    entering[at] = x;
    x = exp2f(A2 * P.chunk_sum[row * K + k]) * x + P.chunk_local[at];
  }
}

template <typename T, int kNS, bool kScalarA, Pass kPass>
cudaError_t launch_pass(const ScanParams& p, cudaStream_t stream) {
  const SmemLayout L = smem_layout(p.plan.channels_per_block, p.plan.lanes * kNS, kFwdTile, kNS, false);
  const size_t bytes = static_cast<size_t>(L.total) * sizeof(float);
  auto kernel = chunk_pass_kernel<T, kNS, kScalarA, kPass>;
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(p.plan.blocks), static_cast<unsigned>(p.plan.chunks));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

template <Pass kPass>
cudaError_t pass(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  return dispatch(dtype, p.plan, p.shape.scalar_A, [&](auto tag, auto states, auto scalar) {
    return launch_pass<typename decltype(tag)::type, decltype(states)::value, decltype(scalar)::value, kPass>(p, stream);
  });
}

cudaError_t launch_combine(const ScanParams& p, bool adjoint, cudaStream_t stream) {
  const int64_t work = p.directions * p.shape.batch * p.shape.dim * p.shape.dstate;
  combine_chunks_kernel<<<static_cast<unsigned>((work + 255) / 256), 256, 0, stream>>>(p, adjoint);
  return cudaGetLastError();
}

cudaError_t launch_chunk_states(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  if (const cudaError_t err = pass<Pass::local_state>(p, dtype, stream); err != cudaSuccess) return err;
  return launch_combine(p, false, stream);
}

cudaError_t launch_chunk_grads(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  if (const cudaError_t err = pass<Pass::local_adjoint>(p, dtype, stream); err != cudaSuccess) return err;
  return launch_combine(p, true, stream);
}

}  // namespace detail

ScanPlan plan_scan(const ScanShape& s, int sm_count) {
  ScanPlan plan;
  const int64_t per_group = s.dim / s.groups;
  if (s.dstate <= kRowStates && !s.scalar_A && s.head_dim == 1) {
    // The row kernels: one thread holds a channel's N states.
    plan.rows = true;
    plan.lanes = 1;
    plan.states_per_lane = kRowStates;
    plan.channels_per_block = kRowThreads;
  } else {
    plan.states_per_lane = s.dstate > 128 || s.scalar_A ? 8 : 4;
    const int64_t slices = (s.dstate + plan.states_per_lane - 1) / plan.states_per_lane;
    plan.lanes = 1;
    while (plan.lanes < slices) plan.lanes *= 2;
    plan.channels_per_block = kThreads / plan.lanes;
  }
  plan.tiles_per_group = (per_group + plan.channels_per_block - 1) / plan.channels_per_block;
  plan.blocks = s.batch * s.groups * plan.tiles_per_group;
  // Chunk time only when the channel tiles leave the GPU mostly idle (< 8 warps per SM): a chunked scan does
  // one more pass over the inputs. Then aim at 32 warps per SM, with chunks of at least 64 steps.
  const int64_t tiles = (s.len + kFwdTile - 1) / kFwdTile;
  int64_t chunks = 1;
  const int64_t threads = plan.blocks * plan.channels_per_block * plan.lanes;
  if (threads < static_cast<int64_t>(sm_count) * 256) {
    chunks = (static_cast<int64_t>(sm_count) * 1024 + threads - 1) / threads;
    const int64_t most = tiles / 4 > 1 ? tiles / 4 : 1;
    chunks = chunks < most ? chunks : most;
    chunks = chunks < 4096 ? chunks : 4096;
  }
  const int64_t tiles_per_chunk = (tiles + chunks - 1) / chunks;
  plan.chunk_len = tiles_per_chunk * kFwdTile;
  plan.chunks = static_cast<int>((tiles + tiles_per_chunk - 1) / tiles_per_chunk);
  // The row backward's shared memory takes 4 blocks per SM, or 6 with half-tile spans: use those only where they
  // bring the grid into one wave (a larger grid runs as fast with whole tiles and half the scratch).
  const int64_t grid = plan.blocks * plan.chunks;
  if (plan.rows && grid > 4 * static_cast<int64_t>(sm_count) && grid <= 6 * static_cast<int64_t>(sm_count))
    plan.row_span = kRowTile / 2;
  return plan;
}

cudaError_t scan_forward(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  if (p.plan.rows) return scan_rows(p, dtype, false, false, stream);
  if (p.plan.chunks > 1) {
    if (const cudaError_t err = detail::launch_chunk_states(p, dtype, stream); err != cudaSuccess) return err;
  }
  return detail::pass<detail::Pass::output>(p, dtype, stream);
}

}  // namespace cab::kernels::cuda
