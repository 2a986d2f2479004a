// Peak GPU memory of this process, from LibTorch's caching allocator (compiled with CUDA only when the
// CUDA toolkit was found; otherwise there is no GPU to measure).
#include "cab/train/device_memory.h"

#ifdef CAB_CORE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace cab::train {

namespace {
double allocated_mb(bool peak) {
#ifdef CAB_CORE_WITH_CUDA
  if (c10::cuda::device_count() == 0) return 0;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  const auto& bytes = stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return static_cast<double>(peak ? bytes.peak : bytes.current) / (1024.0 * 1024.0);
#else
  (void)peak;
  return 0;
#endif
}
}  // namespace

double peak_memory_mb() { return allocated_mb(true); }
double allocated_memory_mb() { return allocated_mb(false); }

void reset_peak_memory() {
#ifdef CAB_CORE_WITH_CUDA
  if (c10::cuda::device_count() > 0) c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
#endif
}

}  // namespace cab::train
