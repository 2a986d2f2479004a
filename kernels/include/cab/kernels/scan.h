// The selective scan behind one interface, differentiable: a sequential reference loop and a chunked
// parallel form written with LibTorch ops (autograd flows through both), and the registered kernel
// (cab::selective_scan_fwd: CPU reference / CUDA, forward only for now). Shapes as in selective_scan.h.
#pragma once

#include <cstdint>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

enum class ScanBackend {
  automatic,   ///< chunked when gradients are needed, else the registered kernel
  sequential,  ///< one step at a time (reference; differentiable)
  chunked,     ///< chunks of `chunk` steps in parallel, state carried between chunks (differentiable)
  kernel,      ///< the registered op (no autograd yet)
};

/// y and the final state for the inputs; `chunk` is the chunk length of the chunked form.
CAB_KERNELS_API ScanResult scan(const ScanInputs& in, ScanBackend backend = ScanBackend::automatic,
                                int64_t chunk = 16);

}  // namespace cab::kernels
