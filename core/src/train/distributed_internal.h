// Inside libcab_core: the NCCL communicator lives in its own file, compiled only where LibTorch has CUDA and
// nccl.h was found (CAB_WITH_NCCL).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>

#include "cab/train/distributed.h"

namespace cab::train::detail {

/// The departure handshake behind Communicator::leave(): each rank sets its key in `store`; rank 0 waits for
/// everybody's (at most `timeout`, then throws naming the ranks missing).
void leave(c10d::Store& store, int rank, int size, std::chrono::milliseconds timeout);

std::unique_ptr<Communicator> make_nccl_communicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                     int device_index, std::chrono::milliseconds timeout);

}  // namespace cab::train::detail
