// The common base of every object a plugin factory creates.
#pragma once

#include "cab/export.h"

namespace cab {

/// Plugins return their objects as Component; the host casts them to the kind's interface
/// (Teacher, Student, Bridge, Alignment, Method, Dataset), whose type info lives in libcab_core.
class CAB_API Component {
 public:
  Component() = default;
  Component(const Component&) = delete;
  Component& operator=(const Component&) = delete;
  virtual ~Component();
};

}  // namespace cab
