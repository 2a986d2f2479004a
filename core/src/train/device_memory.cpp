// Peak GPU memory of this process, from LibTorch's caching allocator (compiled with CUDA only when the
// CUDA toolkit was found; otherwise there is no GPU to measure).
#include "device_memory.h"

#ifdef CAB_CORE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace cab::train {

double peak_memory_mb() {
#ifdef CAB_CORE_WITH_CUDA
  if (c10::cuda::device_count() == 0) return 0;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  const auto& peak = stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  return static_cast<double>(peak) / (1024.0 * 1024.0);
#else
  return 0;
#endif
}

void reset_peak_memory() {
#ifdef CAB_CORE_WITH_CUDA
  if (c10::cuda::device_count() > 0) c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
#endif
}

}  // namespace cab::train
