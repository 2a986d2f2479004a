// Registers cab's kernels as torch ops (namespace `cab`), with the CPU reference as the CPU implementation.
// Loadable from Python: torch.ops.load_library("libcab_kernels.so"); torch.ops.cab.selective_scan_fwd(...)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

#include "cab/kernels/selective_scan.h"

namespace cab::kernels {

namespace {

using OpOutput = std::tuple<at::Tensor, at::Tensor>;

ScanInputs pack(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                const std::optional<at::Tensor>& initial_state) {
  return ScanInputs{u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus};
}

OpOutput scan_fwd_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                      const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                      const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                      const std::optional<at::Tensor>& initial_state) {
  auto r = selective_scan_reference(pack(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state));
  return {r.y, r.final_state};
}

}  // namespace

ScanResult selective_scan(const ScanInputs& in) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cab::selective_scan_fwd", "")
                       .typed<OpOutput(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const at::Tensor&, const std::optional<at::Tensor>&,
                                       const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                                       const std::optional<at::Tensor>&)>();
  auto [y, state] = op.call(in.u, in.delta, in.A, in.B, in.C, in.D_skip, in.z, in.delta_bias, in.delta_softplus,
                            in.initial_state);
  return {y, state};
}

TORCH_LIBRARY(cab, m) {
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cab, CPU, m) { m.impl("selective_scan_fwd", &scan_fwd_cpu); }

}  // namespace cab::kernels
