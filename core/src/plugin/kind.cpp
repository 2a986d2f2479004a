// Plugin kind names.
#include "cab/plugin/kind.h"

namespace cab::plugin {

std::string_view to_string(Kind kind) {
  switch (kind) {
    case Kind::teacher: return "teacher";
    case Kind::student: return "student";
    case Kind::bridge: return "bridge";
    case Kind::alignment: return "alignment";
    case Kind::method: return "method";
    case Kind::dataset: return "dataset";
  }
  return "unknown-kind";
}

std::optional<Kind> kind_from_string(std::string_view name) {
  for (auto kind : kAllKinds)
    if (to_string(kind) == name) return kind;
  return std::nullopt;
}

}  // namespace cab::plugin
