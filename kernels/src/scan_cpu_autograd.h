// The CPU selective scan with its analytic backward (an autograd function); see scan_cpu_autograd.cpp.
#pragma once

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

/// Differentiable with respect to every tensor input, through y and final_state.
ScanResult scan_cpu_autograd(const ScanInputs& in);

}  // namespace cab::kernels
