// Whether this build of libcab_kernels contains the CUDA implementations (and the stubs of CUDA-only entry points).
#include "cab/kernels/selective_scan.h"
#include "cab/kernels/ssd.h"

namespace cab::kernels {

bool built_with_cuda() {
#ifdef CAB_KERNELS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

#ifndef CAB_KERNELS_WITH_CUDA
std::vector<std::string> testing::cuda_guard_violations(const ScanInputs&, const ScanInputs*) {
  TORCH_CHECK(false, "cuda_guard_violations: this build of cab's kernels has no CUDA");
}
std::string testing::cuda_layout(const ScanInputs&) { TORCH_CHECK(false, "cuda_layout: this build of cab's kernels has no CUDA"); }
std::string testing::ssd_cuda_path(const SsdInputs&) {
  TORCH_CHECK(false, "ssd_cuda_path: this build of cab's kernels has no CUDA");
}
std::vector<std::string> testing::ssd_cuda_guard_violations(const SsdInputs&) {
  TORCH_CHECK(false, "ssd_cuda_guard_violations: this build of cab's kernels has no CUDA");
}
#endif

}  // namespace cab::kernels
