// Launch interface of the CUDA selective scan, forward and backward, one direction or both directions of a
// bidirectional layer fused (kept free of LibTorch headers so nvcc stays fast).
//
// Work layout (see selective_scan_device.cuh for the kernels): a block of kThreads threads owns a tile of
// channels of one (batch, group) and a chunk of time; each channel is `lanes` adjacent threads of a warp, each
// holding `states_per_lane` of the N states in registers (fp32). Inputs are staged through shared memory in
// time tiles, B/C tiles are shared by all channels of the block. When there are too few channel tiles to fill
// the GPU (long sequences, small batch), time is split into `chunks` scanned in parallel: a first pass computes
// each chunk's state from zero and its Σ Δ (the chunk's decay is exp(A·ΣΔ)), a tiny sequential pass combines
// them into the state entering every chunk, and the output pass reruns each chunk from its true state.
// The backward mirrors this for the adjoint (∂L/∂h runs backwards in time), and recomputes the states of each
// chunk from its entering state: tile-start states go to a scratch buffer, each tile is rerun into shared
// memory and swept backwards. The recurrence is never inverted.
//
// Every [batch, dim, len] tensor and B/C are read and written through their own element strides, so views of
// time-major activations (the transposes of a model's [batch, len, dim] projections, Mamba-2's [batch, len,
// heads, head_dim]) need no copies; tiles are staged with consecutive threads along the unit-stride dimension.
// Mamba-2 (SSD) runs as the same scan with one Δ per head of `head_dim` channels and a decay that is one scalar
// per head (scalar_A: one exponential per step instead of one per state).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace cab::kernels::cuda {

enum class ScanDtype { f32, f16, bf16 };

constexpr int kThreads = 128;   ///< threads per block
constexpr int kFwdTile = 16;    ///< time steps staged per tile in the forward passes
constexpr int kBwdTile = 8;     ///< time steps staged per tile in the backward pass (its states are kept per step)
constexpr int kRowThreads = 64; ///< row kernels: channels (threads) per block
constexpr int kRowTile = 8;     ///< row kernels: time steps per tile
constexpr int kRowStates = 16;  ///< row kernels: states per thread (the most N they take)
static_assert(kRowTile % 2 == 0, "the row backward may split a tile into two spans");

/// Element strides of a [batch, dim, len] tensor (for delta and ddelta with head_dim > 1: [batch, heads, len]).
struct Strides {
  int64_t batch = 0, channel = 0, time = 0;
};
/// Element strides of B, C, dB, dC: [batch, groups, dstate, len].
struct BcStrides {
  int64_t batch = 0, group = 0, state = 0, time = 0;
};

/// One scan direction. u, delta, z and du, ddelta, dz: [batch, dim, len] (scan dtype); B, C: [batch, groups,
/// dstate, len] (scan dtype), each through its strides; dB, dC fp32 through theirs. A: [dim, dstate]; D,
/// delta_bias: [dim]; h0, final_state, dfinal, dh0: [batch, dim, dstate]; all fp32 and contiguous. Optional
/// pointers may be null. With head_dim > 1, delta is [batch, heads, len] (channel d reads head d / head_dim)
/// and ddelta an fp32 [batch, heads, len] buffer the backward accumulates into (zero it first).
struct ScanDirection {
  const void* u = nullptr;
  const void* delta = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const void* z = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  const float* h0 = nullptr;
  Strides u_st, delta_st, z_st;
  BcStrides B_st, C_st;
  bool reverse = false;  ///< scans t = len−1 … 0 (inputs in natural time order, no flipped copies)

  float* final_state = nullptr;  ///< forward output: the state after the last step of the scan

  // Chunked scans (chunks > 1), [batch·dim, chunks, dstate] fp32 (sums: [batch·dim, chunks]), chunk k covering
  // the times [k·chunk_len, (k+1)·chunk_len) whatever the direction.
  float* chunk_state = nullptr;  ///< the state entering chunk k in this direction's order
  float* chunk_grad = nullptr;   ///< ∂L/∂(state leaving chunk k), from the steps after it in this direction's order
  float* chunk_local = nullptr;  ///< work: chunk k run from zero (its end state, or its adjoint at its start)
  float* chunk_sum = nullptr;    ///< work: Σ Δ over chunk k

  // Backward.
  const float* dfinal = nullptr;  ///< gradient of final_state (may be null)
  void* du = nullptr;             ///< written
  void* ddelta = nullptr;         ///< written (gradient of delta before bias and softplus)
  void* dz = nullptr;             ///< written when z is given
  float* dA = nullptr;            ///< [dim, dstate], accumulated (zero it first)
  float* dB = nullptr;            ///< [batch, groups, dstate, len], accumulated
  float* dC = nullptr;            ///< [batch, groups, dstate, len], accumulated
  float* dD = nullptr;            ///< [dim], accumulated (may be null)
  float* dbias = nullptr;         ///< [dim], accumulated (may be null)
  float* dh0 = nullptr;           ///< written (may be null)
  Strides du_st, ddelta_st, dz_st;
  BcStrides dB_st, dC_st;
};

struct ScanShape {
  int64_t batch = 0, dim = 0, len = 0, dstate = 0, groups = 1;
  int64_t head_dim = 1;   ///< channels sharing one Δ row (Mamba-2's heads); 1: a Δ per channel
  bool scalar_A = false;  ///< A[d, n] is the same for every n (one exponential per step)
};

/// How a shape is laid out on the GPU; plan_scan picks it, the host code allocates the chunk and scratch buffers.
struct ScanPlan {
  int lanes = 1;            ///< threads per channel (power of two, ≤ 32)
  int states_per_lane = 4;  ///< 4, or 8 when N > 128 or A is scalar
  int channels_per_block = kThreads;
  int64_t tiles_per_group = 1;  ///< channel tiles per (batch, group)
  int64_t blocks = 1;           ///< channel tiles in all: batch · groups · tiles_per_group
  int chunks = 1;               ///< time chunks scanned in parallel
  int64_t chunk_len = 0;        ///< time steps per chunk, a multiple of kFwdTile (and kBwdTile)
  /// The row kernels (selective_scan_rows.cu): one thread per (batch, channel) row with all N ≤ kRowStates
  /// states, for every Mamba-1 shape with N ≤ kRowStates; then lanes = 1, states_per_lane = kRowStates and
  /// channels_per_block = kRowThreads (time chunked by the same rule as the lanes layout).
  bool rows = false;
  /// Row kernels: steps of a tile whose states the backward keeps in shared memory at once, and the spacing of
  /// the states it stores in its scratch buffer: kRowTile, or kRowTile / 2 where that lets the grid fit the GPU in
  /// one wave (the smaller span takes 6 blocks per SM instead of 4, for twice the scratch).
  int row_span = kRowTile;
  /// Floats of the backward's scratch buffer (the states entering every tile, or every span of the row kernels)
  /// for `directions` directions.
  std::size_t scratch_floats(int directions, int64_t len) const {
    const int64_t tiles = rows ? (len + kRowTile - 1) / kRowTile * (kRowTile / row_span) : (len + kBwdTile - 1) / kBwdTile;
    return static_cast<std::size_t>(directions) * tiles * blocks * channels_per_block * lanes * states_per_lane;
  }
};

/// `sm_count`: multiprocessors of the device (decides whether time is chunked).
ScanPlan plan_scan(const ScanShape& shape, int sm_count);

struct ScanParams {
  ScanShape shape;
  ScanPlan plan;
  int directions = 1;  ///< 2: both directions in one launch, y = out_scale · (y_0 + y_1)
  ScanDirection dir[2];
  bool delta_softplus = false;
  void* y = nullptr;          ///< forward output [batch, dim, len] (scan dtype)
  float out_scale = 1.f;      ///< factor on each direction's output (and on dout in the backward)
  const void* dout = nullptr;  ///< backward: ∂L/∂y [batch, dim, len] (scan dtype)
  Strides y_st, dout_st;
  float* scratch = nullptr;    ///< backward: plan.scratch_floats(directions, len) floats
};

/// Enqueues the forward (y, final states; chunk states when chunked); returns the first launch error.
cudaError_t scan_forward(const ScanParams& params, ScanDtype dtype, cudaStream_t stream);

/// Enqueues the backward: gradients of every input from dout (and dfinal). dA, dB, dC, dD, dbias must be zeroed.
/// Needs the chunk_state of the forward when chunked (recompute it with scan_forward's chunk passes if absent:
/// `have_chunk_states` false).
cudaError_t scan_backward(const ScanParams& params, ScanDtype dtype, bool have_chunk_states, cudaStream_t stream);

/// The row kernels (plan.rows): the forward, or the backward (have_chunk_states as for scan_backward).
cudaError_t scan_rows(const ScanParams& params, ScanDtype dtype, bool backward, bool have_chunk_states,
                      cudaStream_t stream);

namespace detail {
/// The states entering every chunk (chunk_state) from each chunk run from zero plus a sequential combine.
cudaError_t launch_chunk_states(const ScanParams& params, ScanDtype dtype, cudaStream_t stream);
/// The gradients entering every chunk from its successors (chunk_grad), likewise, for the adjoint.
cudaError_t launch_chunk_grads(const ScanParams& params, ScanDtype dtype, cudaStream_t stream);
/// The sequential combine alone (chunk_local and chunk_sum written by either layout's local pass).
cudaError_t launch_combine(const ScanParams& params, bool adjoint, cudaStream_t stream);
}  // namespace detail

}  // namespace cab::kernels::cuda
