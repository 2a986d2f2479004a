// Anchors the plugin interfaces' vtables and type info in libcab_core (needed for casts across libraries).
#include "cab/plugin/bridge.h"
#include "cab/plugin/model.h"
#include "cab/plugin/objective.h"

namespace cab {

Model::~Model() = default;
Teacher::~Teacher() = default;
Student::~Student() = default;
Bridge::~Bridge() = default;
Alignment::~Alignment() = default;
Method::~Method() = default;
Dataset::~Dataset() = default;

std::string Method::stage(int64_t /*step*/) const { return "main"; }

}  // namespace cab
