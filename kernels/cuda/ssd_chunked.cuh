// Launch interface of Mamba-2's SSD in its chunked form on tensor cores (16-bit inputs), kept free of LibTorch.
//
// Time is cut into chunks of kSsdChunk = 64 steps. Per (batch, head) with Δ_t = softplus(dt_t + bias), the
// inclusive log-decay s_t = Σ_{τ≤t in the chunk} Δ_τ·A and the chunk's total Λ = s_{last}:
//   chunk state   S_c = Σ_τ exp(Λ − s_τ)·Δ_τ·x_τ ⊗ B_τ                                 [P, N]
//   entering      H_0 = h0,  H_{c+1} = exp(Λ_c)·H_c + S_c  (final state H_chunks)          sequential over chunks
//   output        y_t = Σ_{τ≤t} (C_t·B_τ)·exp(s_t − s_τ)·Δ_τ·x_τ + exp(s_t)·H_c·C_t + D·x_t,  y ⊙= silu(z)
// Three kernels: chunk states (a GEMM over the chunk), the pass over chunks (elementwise over P×N, fp32), and the
// output (C·Bᵀ, the masked decay, two GEMMs). The backward reruns the first two (the states, and ∂L/∂H_c from
// the outputs' Σ_t exp(s_t)·g_t ⊗ C_t, passed back the same way) and one kernel per chunk computes every gradient
// from ten GEMMs (∂L/∂Λ_c = exp(Λ_c)·⟨∂L/∂H_{c+1}, H_c⟩ there too, from the tiles it holds). GEMMs run on bf16
// operands in shared memory (WMMA 16×16×16, fp32 accumulation), so fp16 inputs compute in bf16 too; P and N are
// padded to multiples of 16 with zeros, the last chunk with zero steps.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "selective_scan_cuda.cuh"

namespace cab::kernels::cuda {

constexpr int kSsdChunk = 64;     ///< time steps per chunk
constexpr int kSsdThreads = 256;  ///< threads per block of the per-chunk kernels

/// Element strides of a [batch, L, heads (or groups), …] tensor whose last dimension has stride 1.
struct SsdStrides {
  int64_t batch = 0, time = 0, head = 0;
};

struct SsdChunkedParams {
  int batch = 0, len = 0, heads = 0, head_dim = 0, groups = 1, dstate = 0, chunks = 0;
  int pad_p = 0, pad_n = 0;  ///< head_dim and dstate rounded up to multiples of 16
  bool softplus = false;
  /// P a multiple of 8 and x, z (and dout) with 16-byte aligned rows: the epilogues move 8 elements per access.
  bool rows8 = false;
  /// Heads per block of the output kernel (4, 2 or 1: the most that divides a group's heads); they share B, C and
  /// C·Bᵀ.
  int output_heads = 1;

  // Inputs (16-bit, the kernel's dtype): x, z [b, L, H, P]; dt [b, L, H]; B, C [b, L, G, N].
  const void *x = nullptr, *dt = nullptr, *B = nullptr, *C = nullptr, *z = nullptr;
  SsdStrides x_st, dt_st, B_st, C_st, z_st;
  // fp32, contiguous: A, bias [H]; D [H] (D_h_stride 1, D_p_stride 0) or [H, P] (P, 1); h0 [b, H, P, N].
  const float *A = nullptr, *D = nullptr, *bias = nullptr, *h0 = nullptr;
  int D_h_stride = 1, D_p_stride = 0;

  // Work (fp32 unless said): Δ and s per step [b, H, chunks·64]; the chunk states S_c [b, H, chunks, pad_p, pad_n];
  // the entering states H_c as bf16, same shape.
  float *dt_v = nullptr, *cum = nullptr, *states = nullptr;
  void* states_bf16 = nullptr;

  // Forward outputs: y [b, L, H, P] contiguous (kernel dtype); the final state [b, H, P, N] fp32.
  void* y = nullptr;
  float* final_state = nullptr;

  // Backward: dout [b, L, H, P] (kernel dtype, through dout_st); dfinal [b, H, P, N] fp32 (may be null).
  const void* dout = nullptr;
  SsdStrides dout_st;
  const float* dfinal = nullptr;
  // Backward work: ∂L/∂H_c from chunk c's outputs (fp32) and ∂L/∂S_c (bf16), both like states.
  float* dh_local = nullptr;
  void* dstates_bf16 = nullptr;
  // Backward outputs: dx, dz [b, L, H, P] and ddt [b, L, H] contiguous (kernel dtype), written; dB, dC [b, L, G, N],
  // dA, dbias [H], dD [H·P] fp32, accumulated (zeroed first); dh0 [b, H, P, N] fp32, written (may be null).
  void *dx = nullptr, *dz = nullptr, *ddt = nullptr;
  float *dB = nullptr, *dC = nullptr, *dA = nullptr, *dbias = nullptr, *dD = nullptr, *dh0 = nullptr;
};

/// Dynamic shared memory of the per-chunk kernels for padded P and N (the backward's is the largest).
std::size_t ssd_chunked_smem_bytes(int pad_p, int pad_n, bool backward);

/// Enqueues the forward: y and the final state. dtype: f16 or bf16.
cudaError_t ssd_chunked_forward(const SsdChunkedParams& params, ScanDtype dtype, cudaStream_t stream);
/// Enqueues the backward: every gradient from dout (and dfinal); the accumulated outputs must be zeroed.
cudaError_t ssd_chunked_backward(const SsdChunkedParams& params, ScanDtype dtype, cudaStream_t stream);

}  // namespace cab::kernels::cuda
