// Anchors Component's vtable and type info in libcab_core, so dynamic casts work across plugin libraries.
#include "cab/plugin/component.h"

namespace cab {

Component::~Component() = default;

}  // namespace cab
