// The CPU selective scan with its analytic backward (an autograd function); see scan_cpu_autograd.cpp.
#pragma once

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

/// Differentiable with respect to every tensor input; final_state is not differentiable.
ScanResult scan_cpu_autograd(const ScanInputs& in);

}  // namespace cab::kernels
