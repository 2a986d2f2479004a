// CUDA selective scan backward: per (channel tile, time chunk) block, the states of the chunk are recomputed from
// the state entering it (tile-start states to a scratch buffer, then each tile rerun into shared memory) and the
// adjoint g = ∂L/∂h_t is carried backwards through the tiles:
//   g_t = q + dy_t C_t                  (q: the gradient from the steps after t; dy = ∂L/∂y before the gate)
//   ∂C_t += dy_t h_t,  ∂B_t += g_t Δ_t u_t,  ∂u_t = D dy_t + Δ_t Σ_n g_t B_t,  ∂A += g_t a_t Δ_t h_{t−1},
//   ∂Δ_t = Σ_n g_t (a_t A h_{t−1} + B_t u_t),  q ← a_t g_t  (a_t = exp(Δ_t A)),  ∂h0 = q at the start.
// B and C are shared by the channels of a group: their gradients are summed over the warp by a transposing
// butterfly, over the block's warps in shared memory, and over blocks with fp32 atomics.
#include "selective_scan_device.cuh"

namespace cab::kernels::cuda {

namespace detail {

template <typename T, int kNS, bool kScalarA>
__global__ void __launch_bounds__(kThreads, kNS == 4 ? 4 : 2) backward_kernel(ScanParams p) {
  constexpr int kT = kBwdTile;
  const BlockSetup<kT, kNS> block(p, true);
  const Geometry& G = block.G;
  const SmemLayout& L = block.L;
  const SharedArrays& S = block.s;
  const int at_c = block.at_c;
  const int64_t len = p.shape.len, N = p.shape.dstate, hd = p.shape.head_dim;
  const int K = p.plan.chunks, k = blockIdx.y;
  const int64_t tile_begin = block.tiles.begin, tile_end = block.tiles.end, tiles_total = block.tiles.total;
  const int64_t ntiles = tile_end - tile_begin;
  const int warp = threadIdx.x / 32;
  float* s_redB = S.red;                          // [warps][kT][npad] partial sums of ∂B
  float* s_redC = S.red + kWarps * kT * G.npad;   // and of ∂C
  float* s_hist = S.hist + threadIdx.x * kNS;     // this thread's states, step jj at jj · kThreads · kNS

  for (int di = 0; di < p.directions; ++di) {
    const ScanDirection& P = p.dir[di];
    const bool rev = P.reverse;
    float A[kNS], A2[kNS], h[kNS];
    load_entry<kNS>(p, P, G, false, A2, h);
#pragma unroll
    for (int n = 0; n < kNS; ++n) A[n] = A2[n] / kLog2e;
    const float Dd = P.D && G.valid ? P.D[G.d] : 0.f;
    auto slot = [&](int64_t tile) {
      return p.scratch + ((static_cast<int64_t>(di) * tiles_total + tile) * p.plan.blocks + blockIdx.x) * kThreads * kNS +
             threadIdx.x * kNS;
    };

    // Phase 1: the state entering every tile of the chunk.
    ChannelTile fwd_in;
    fwd_in.u = S.u;
    fwd_in.dt = S.dt;
    for (int64_t i = 0; i < ntiles; ++i) {
      const int64_t tile = rev ? tile_end - 1 - i : tile_begin + i;
      __syncthreads();
      stage_channels<T, kT>(p, P, G, L, tile * kT, fwd_in);
      stage_bc<T, kT>(p, P, G, L, tile * kT, S.B, nullptr);
      __syncthreads();
      write_states<kNS>(slot(tile), h);
#pragma unroll
      for (int jj = 0; jj < kT; ++jj) {
        const int j = rev ? kT - 1 - jj : jj;
        advance<kNS, kScalarA>(h, A2, S.dt[at_c + j], S.dt[at_c + j] * S.u[at_c + j], S.B + j * L.bc_stride + G.s * kNS);
      }
    }

    // Phase 2: the tiles in reverse order of the scan, each rerun from its entering state, then swept backwards.
    float q[kNS], dA_acc[kNS];
#pragma unroll
    for (int n = 0; n < kNS; ++n) {
      const int64_t nn = G.s * kNS + n;
      const bool live = G.valid && nn < N;
      float q_end = 0.f;
      if (live) {
        if (K > 1) q_end = P.chunk_grad[(G.row * K + k) * N + nn];
        else if (P.dfinal) q_end = P.dfinal[G.row * N + nn];
      }
      q[n] = q_end;
      dA_acc[n] = 0.f;
    }
    float dD_acc = 0.f, dbias_acc = 0.f;
    ChannelTile bwd_in;
    bwd_in.u = S.u;
    bwd_in.dt = S.dt;
    bwd_in.dsp = S.dsp;
    bwd_in.z = S.z;
    bwd_in.dout = S.dout;
    for (int64_t i = 0; i < ntiles; ++i) {
      const int64_t tile = rev ? tile_begin + i : tile_end - 1 - i;
      const int64_t t0 = tile * kT;
      __syncthreads();
      stage_channels<T, kT>(p, P, G, L, t0, bwd_in);
      stage_bc<T, kT>(p, P, G, L, t0, S.B, S.C);
      __syncthreads();
      read_states<kNS>(slot(tile), h);
#pragma unroll
      for (int jj = 0; jj < kT; ++jj) {  // h_{t−1} of every step of the tile
        const int j = rev ? kT - 1 - jj : jj;
        write_states<kNS>(s_hist + jj * kThreads * kNS, h);
        advance<kNS, kScalarA>(h, A2, S.dt[at_c + j], S.dt[at_c + j] * S.u[at_c + j], S.B + j * L.bc_stride + G.s * kNS);
      }
      // h is now the state after the tile's last step; walking back, the state after step jj is the one before jj+1.
#pragma unroll 1
      for (int jj = kT - 1; jj >= 0; --jj) {
        const int j = rev ? kT - 1 - jj : jj;
        float hp[kNS], Bj[kNS], Cj[kNS];
        read_states<kNS>(s_hist + jj * kThreads * kNS, hp);
        read_states<kNS>(S.B + j * L.bc_stride + G.s * kNS, Bj);
        read_states<kNS>(S.C + j * L.bc_stride + G.s * kNS, Cj);
        const float dt = S.dt[at_c + j], uu = S.u[at_c + j];
        float y_pre = 0.f;
#pragma unroll
        for (int n = 0; n < kNS; ++n) y_pre = fmaf(Cj[n], h[n], y_pre);
        y_pre = channel_sum(y_pre, G.lanes) + Dd * uu;
        const float dout = S.dout[at_c + j];
        float dy = dout, dz = 0.f;
        if (P.z) {
          const float zz = S.z[at_c + j], sz = sigmoid(zz);
          dy = dout * zz * sz;
          dz = dout * y_pre * sz * (1.f + zz * (1.f - sz));
        }
        float vB[kNS], vC[kNS], du_part = 0.f, ddt_part = 0.f;
        const float dtu = dt * uu;
        const float a_scalar = scalar_decay<kNS, kScalarA>(A2, dt);
#pragma unroll
        for (int n = 0; n < kNS; ++n) {
          const float a = decay<kNS, kScalarA>(A2, dt, n, a_scalar);
          const float g = fmaf(dy, Cj[n], q[n]);  // ∂L/∂h_t
          vC[n] = dy * h[n];
          vB[n] = g * dtu;
          du_part = fmaf(g, Bj[n], du_part);
          const float ahp = a * hp[n];
          ddt_part = fmaf(g, fmaf(A[n], ahp, Bj[n] * uu), ddt_part);
          dA_acc[n] = fmaf(g * ahp, dt, dA_acc[n]);
          q[n] = a * g;
          h[n] = hp[n];
        }
        du_part = channel_sum(du_part, G.lanes);
        ddt_part = channel_sum(ddt_part, G.lanes);
        if (G.s == 0) {
          const float ddelta = ddt_part * S.dsp[at_c + j];
          S.out0[at_c + j] = fmaf(Dd, dy, dt * du_part);
          S.out1[at_c + j] = ddelta;
          S.out2[at_c + j] = dz;
          dD_acc = fmaf(dy, uu, dD_acc);
          dbias_acc += ddelta;
        }
        reduce_channels<kNS>(vB, G.lanes, G.s, s_redB + (warp * kT + j) * G.npad);
        reduce_channels<kNS>(vC, G.lanes, G.s, s_redC + (warp * kT + j) * G.npad);
      }
      __syncthreads();
      auto flush = [&](void* dst, const Strides& st, const float* src) {
        for_each_in_tile<kT>(G.ch, time_fast(st), [&](int c, int j) {
          if (c < G.nch && t0 + j < len)
            store(static_cast<T*>(dst), at3(st, G.b, G.d0 + c, t0 + j), src[c * L.channel_stride + j]);
        });
      };
      flush(P.du, P.du_st, S.out0);
      if (P.z) flush(P.dz, P.dz_st, S.out2);
      if (hd == 1) {
        flush(P.ddelta, P.ddelta_st, S.out1);
      } else {
        // One Δ per head: sum the block's channels of each head, then accumulate over the blocks of the head.
        const int64_t h_first = G.d0 / hd, heads = (G.d0 + G.nch - 1) / hd - h_first + 1;
        for (int e = threadIdx.x; e < heads * kT; e += kThreads) {
          const int64_t head = h_first + e / kT, t = t0 + e % kT;
          if (t >= len) continue;
          const int64_t c_begin = head * hd - G.d0, c_end = (head + 1) * hd - G.d0;
          float sum = 0.f;
          for (int64_t c = c_begin > 0 ? c_begin : 0; c < (c_end < G.nch ? c_end : G.nch); ++c)
            sum += S.out1[c * L.channel_stride + e % kT];
          atomicAdd(static_cast<float*>(P.ddelta) + at3(P.ddelta_st, G.b, head, t), sum);
        }
      }
      auto flush_bc = [&](float* dst, const BcStrides& st, const float* red) {
        for_each_in_tile<kT>(G.npad, time_fast(st), [&](int n, int j) {
          if (n < N && t0 + j < len) {
            float sum = 0.f;
#pragma unroll
            for (int w = 0; w < kWarps; ++w) sum += red[(w * kT + j) * G.npad + n];
            atomicAdd(dst + at4(st, G.b, G.g, n, t0 + j), sum);
          }
        });
      };
      flush_bc(P.dB, P.dB_st, s_redB);
      flush_bc(P.dC, P.dC_st, s_redC);
    }

    const bool first = rev ? k == K - 1 : k == 0;
#pragma unroll
    for (int n = 0; n < kNS; ++n) {
      const int64_t nn = G.s * kNS + n;
      if (!G.valid || nn >= N) continue;
      if (first && P.dh0) P.dh0[G.row * N + nn] = q[n];
      atomicAdd(P.dA + G.d * N + nn, dA_acc[n]);
    }
    if (G.valid && G.s == 0) {
      if (P.dD) atomicAdd(P.dD + G.d, dD_acc);
      if (P.dbias) atomicAdd(P.dbias + G.d, dbias_acc);
    }
  }
}

template <typename T, int kNS, bool kScalarA>
cudaError_t launch_backward(const ScanParams& p, cudaStream_t stream) {
  const SmemLayout L = smem_layout(p.plan.channels_per_block, p.plan.lanes * kNS, kBwdTile, kNS, true);
  const size_t bytes = static_cast<size_t>(L.total) * sizeof(float);
  auto kernel = backward_kernel<T, kNS, kScalarA>;
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(p.plan.blocks), static_cast<unsigned>(p.plan.chunks));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace detail

cudaError_t scan_backward(const ScanParams& p, ScanDtype dtype, bool have_chunk_states, cudaStream_t stream) {
  if (p.plan.rows) return scan_rows(p, dtype, true, have_chunk_states, stream);
  if (p.plan.chunks > 1) {
    if (!have_chunk_states) {
      if (const cudaError_t err = detail::launch_chunk_states(p, dtype, stream); err != cudaSuccess) return err;
    }
    if (const cudaError_t err = detail::launch_chunk_grads(p, dtype, stream); err != cudaSuccess) return err;
  }
  return detail::dispatch(dtype, p.plan, p.shape.scalar_A, [&](auto tag, auto states, auto scalar) {
    return detail::launch_backward<typename decltype(tag)::type, decltype(states)::value, decltype(scalar)::value>(
        p, stream);
  });
}

}  // namespace cab::kernels::cuda
