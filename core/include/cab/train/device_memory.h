// GPU memory (MiB) allocated by LibTorch's caching allocator in this process; 0 without CUDA.
#pragma once

#include "cab/export.h"

namespace cab::train {
/// The peak since the last reset_peak_memory().
CAB_API double peak_memory_mb();
/// Allocated now.
CAB_API double allocated_memory_mb();
CAB_API void reset_peak_memory();
}  // namespace cab::train
