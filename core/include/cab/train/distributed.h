// Data-parallel training of one run over several processes (one per GPU), the way torchrun launches PyTorch:
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment, rendezvous through c10d's
// TCPStore (rank 0 serves it), gradients all-reduced by c10d's NCCL process group on GPUs. On CPUs (and for the
// tests CI runs without a GPU) a collective backend over the same TCPStore stands in for it: the LibTorch wheel
// ships c10d's Gloo backend compiled but not its headers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "cab/export.h"

namespace cab::train {

/// What the launcher put in the environment.
struct CAB_API DistributedEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool launched = false;  ///< WORLD_SIZE is set: train through a process group (even with one process)

  /// Reads RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default
  /// 29500). Throws cab::ConfigError naming the variable when a value is not a number or out of range.
  static DistributedEnv from_environment();
};

/// Collectives over the ranks of one run. Every rank must call them in the same order.
class CAB_API Communicator {
 public:
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// The backend's name: "nccl" or "tcp-store".
  virtual std::string backend() const = 0;
  /// Starts summing `flat` (a contiguous tensor) over the ranks in place; the returned function waits for it
  /// (on GPUs: makes the current CUDA stream wait; the host does not block).
  virtual std::function<void()> all_reduce_sum_async(at::Tensor flat) = 0;
  void all_reduce_sum(at::Tensor flat) { all_reduce_sum_async(std::move(flat))(); }
  /// Overwrites `flat` with rank `root`'s values.
  virtual void broadcast(at::Tensor flat, int root) = 0;
  /// Every rank calls it once after its last collective; it returns on rank 0 when all ranks have called it.
  /// Rank 0 serves the rendezvous store, so leaving without it could shut the store down while a slower rank
  /// still reads the last collective from it.
  virtual void leave() = 0;
};

/// Joins the run's process group: NCCL for a CUDA `device` (NCCL_NVLS_ENABLE=0 is set first: NVLink multicast
/// stays off), the TCP-store backend for the CPU. Blocks until all WORLD_SIZE ranks have joined (`timeout`).
CAB_API std::unique_ptr<Communicator> connect(const DistributedEnv& env, const at::Device& device,
                                              std::chrono::milliseconds timeout = std::chrono::minutes(10));

/// Averages the gradients of `params` over the ranks after each backward, bucket by bucket (about
/// `bucket_mb` each, in reverse registration order, roughly the order the backward produces them): a hook on
/// each parameter copies its gradient into its bucket, and a bucket whose gradients have all arrived is
/// all-reduced at once, while the backward goes on (buckets start in the same order on every rank).
/// Gradients that arrive after their bucket has started (a method that calls backward several times) are
/// handled in finish() by one more, synchronous, all-reduce of everything. Parameters without a gradient on
/// this step keep none (all ranks run the same graph, so they agree).
class CAB_API GradientSync {
 public:
  GradientSync(Communicator& comm, std::vector<at::Tensor> params, double bucket_mb = 25);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;
  /// Before the step's forward/backward: clears the buckets and arms the hooks.
  void begin();
  /// After the step's backward(s): starts the buckets not started yet, waits, writes the averages into .grad.
  void finish();
  std::size_t buckets() const { return buckets_.size(); }
  /// Buckets started while the backward was still running, on the last step (overlap achieved).
  int overlapped() const { return overlapped_; }

 private:
  struct Bucket {
    at::Tensor flat;
    std::vector<std::size_t> params;
    std::vector<std::int64_t> offsets;
    int pending = 0;
    bool started = false;
    std::function<void()> wait;
  };
  void on_grad(std::size_t param, const at::Tensor& grad);
  void start_ready();
  void start(Bucket& b);

  Communicator& comm_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::size_t> bucket_of_, slot_of_;
  std::vector<char> seen_;
  std::vector<unsigned> hooks_;
  std::size_t next_ = 0;  // the next bucket to start
  bool armed_ = false, late_ = false, in_finish_ = false;
  int overlapped_ = 0;
  std::mutex mutex_;
};

}  // namespace cab::train
