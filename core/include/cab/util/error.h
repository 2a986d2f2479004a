// cab's exception types: every error a user can cause derives from cab::Error and says what to do.
#pragma once

#include <stdexcept>
#include <string>

#include "cab/export.h"

namespace cab {

/// Base of every error cab reports to a user (bad input, missing files, plugin problems).
class CAB_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message);
  ~Error() override;
};

/// A configuration file or value is invalid; the message starts with file:line:column.
class CAB_API ConfigError : public Error {
 public:
  using Error::Error;
  ~ConfigError() override;
};

/// A plugin library cannot be loaded or a plugin cannot be found; the message names the file.
class CAB_API PluginError : public Error {
 public:
  using Error::Error;
  ~PluginError() override;
};

}  // namespace cab
