// What this cab build is: version, git commit, LibTorch/CUDA versions and the plugin ABI tag.
#pragma once

#include <string>

#include "cab/export.h"

namespace cab {

CAB_API std::string version();          ///< "0.1.0"
CAB_API std::string git_sha();          ///< commit the build was configured at, or "unknown"
CAB_API bool git_dirty();               ///< whether tracked files differed from that commit at configure time
CAB_API std::string torch_version();    ///< LibTorch version cab was built against
CAB_API std::string cuda_version();     ///< CUDA version of that LibTorch, or "none"
/// One line for --version: "cab 0.1.0 (git abc123) LibTorch 2.11.0, CUDA 13.0, plugin API 1, ABI gcc-12;..."
CAB_API std::string version_line(const std::string& program);

}  // namespace cab
