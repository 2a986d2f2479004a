// Random fp64 scan inputs with every option set (D, z, delta_bias with softplus, initial state), for the CPU tests.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels::test {

/// B, C as [b, N, L] when groups is 0, else [b, groups, N, L]; Δ = softplus(δ + bias) around 0.2–0.5.
inline ScanInputs random_inputs(int64_t b, int64_t d, int64_t L, int64_t n, int64_t groups, uint64_t seed) {
  at::manual_seed(seed);
  auto o = at::TensorOptions().dtype(at::kDouble);
  ScanInputs in;
  in.u = at::randn({b, d, L}, o);
  in.delta = at::rand({b, d, L}, o) - 1.5;
  in.A = -at::rand({d, n}, o) - 0.3;
  const auto bc = groups ? std::vector<int64_t>{b, groups, n, L} : std::vector<int64_t>{b, n, L};
  in.B = at::randn(bc, o);
  in.C = at::randn(bc, o);
  in.D_skip = at::randn({d}, o);
  in.z = at::randn({b, d, L}, o);
  in.delta_bias = at::rand({d}, o) * 0.2;
  in.delta_softplus = true;
  in.initial_state = at::randn({b, d, n}, o);
  return in;
}

}  // namespace cab::kernels::test
