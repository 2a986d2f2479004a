// The NCCL communicator: c10d's ProcessGroupNCCL over the run's TCPStore.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL  // what torch_cuda's own build defines; ProcessGroupNCCL.hpp is empty without it
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "distributed_internal.h"

namespace cab::train::detail {
namespace {

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, std::chrono::milliseconds timeout)
      : store_(store), rank_(rank), size_(size), timeout_(timeout) {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  std::function<void()> all_reduce_sum_async(at::Tensor flat) override {
    std::vector<at::Tensor> tensors{std::move(flat)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    auto work = group_->allreduce(tensors, options);
    return [work] { work->wait(); };  // the current stream waits for NCCL's; the host goes on
  }
  void broadcast(at::Tensor flat, int root) override {
    std::vector<at::Tensor> tensors{std::move(flat)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group_->broadcast(tensors, options)->wait();
  }
  void leave() override { detail::leave(*store_, rank_, size_, timeout_); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> group_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                     int device_index, std::chrono::milliseconds timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  return std::make_unique<NcclCommunicator>(store, rank, size, timeout);
}

}  // namespace cab::train::detail
