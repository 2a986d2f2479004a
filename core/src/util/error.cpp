// Out-of-line destructors anchor the error types' vtables and type info in libcab_core.
#include "cab/util/error.h"

namespace cab {

Error::Error(const std::string& message) : std::runtime_error(message) {}
Error::~Error() = default;
ConfigError::~ConfigError() = default;
PluginError::~PluginError() = default;

}  // namespace cab
