// Inside libcab_core: the NCCL communicator lives in its own file, compiled only where LibTorch has CUDA and
// nccl.h was found (CAB_WITH_NCCL).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>

#include "cab/train/distributed.h"

namespace cab::train::detail {

std::unique_ptr<Communicator> make_nccl_communicator(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                     int device_index, std::chrono::milliseconds timeout);

}  // namespace cab::train::detail
