// The error cab-report shows a user: a missing or foreign database, a schema it does not understand, a bad
// definition file (file:line:column), an unknown table, an output it cannot write.
#pragma once

#include <stdexcept>
#include <string>

#include "cab/export.h"

namespace cab::report {

class CAB_API ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace cab::report
