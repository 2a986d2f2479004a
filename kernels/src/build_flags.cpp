// Whether this build of libcab_kernels contains the CUDA implementations.
#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

bool built_with_cuda() {
#ifdef CAB_KERNELS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace cab::kernels
