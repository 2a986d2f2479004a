// Build facts for --version and provenance.
#include "cab/util/version.h"

#include <fmt/format.h>

#include "cab/build_info.h"
#include "cab/plugin/abi.h"
#include "cab/plugin/registry.h"

namespace cab {

std::string version() { return CAB_BUILD_VERSION; }
std::string git_sha() { return CAB_BUILD_GIT_SHA; }
bool git_dirty() { return CAB_BUILD_GIT_DIRTY != 0; }
std::string torch_version() { return CAB_BUILD_TORCH_VERSION; }
std::string cuda_version() { return CAB_BUILD_CUDA_VERSION; }

std::string version_line(const std::string& program) {
  return fmt::format("{} {} (git {}) LibTorch {}, CUDA {}, plugin API {}, ABI {}", program, version(), git_sha(),
                     torch_version(), cuda_version(), kCabPluginApiVersion, plugin::Registry::host_abi_tag());
}

}  // namespace cab
