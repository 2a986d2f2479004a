// The differentiable scans: sequential and chunked forms agree with the reference op, and their gradients
// agree with central finite differences in fp64 for every input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/kernels/scan.h"
#include "scan_inputs.h"

using cab::kernels::ScanBackend;
using cab::kernels::ScanInputs;

namespace {

ScanInputs inputs(int64_t b, int64_t d, int64_t L, int64_t n, int64_t groups, uint64_t seed) {
  return cab::kernels::test::random_inputs(b, d, L, n, groups, seed);
}

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST(Scan, SequentialAndChunkedMatchTheReference) {
  for (int64_t groups : {0, 2}) {
    for (int64_t L : {1, 7, 33}) {
      const auto in = inputs(2, 4, L, 5, groups, 7);
      const auto ref = cab::kernels::selective_scan_reference(in);
      const auto seq = cab::kernels::scan(in, ScanBackend::sequential);
      EXPECT_LT(max_abs(seq.y, ref.y), 1e-12) << L;
      EXPECT_LT(max_abs(seq.final_state, ref.final_state), 1e-12) << L;
      for (int64_t chunk : {1, 4, 16, 64}) {
        const auto ch = cab::kernels::scan(in, ScanBackend::chunked, chunk);
        EXPECT_LT(max_abs(ch.y, ref.y), 1e-10) << "L=" << L << " chunk=" << chunk;
        EXPECT_LT(max_abs(ch.final_state, ref.final_state), 1e-10) << "L=" << L << " chunk=" << chunk;
      }
    }
  }
}

TEST(Scan, GradientsMatchFiniteDifferencesInFp64) {
  // The CPU kernel's analytic backward (grouped B/C too) and the two LibTorch forms, through y and the final state.
  const std::pair<ScanBackend, int64_t> cases[] = {
      {ScanBackend::sequential, 0}, {ScanBackend::chunked, 0}, {ScanBackend::kernel, 0}, {ScanBackend::kernel, 3}};
  for (const auto& [backend, groups] : cases) {
    auto in = inputs(2, 3, 9, 4, groups, 11);
    std::vector<at::Tensor*> leaves = {&in.u, &in.delta, &in.A, &in.B, &in.C, &*in.D_skip, &*in.z, &*in.delta_bias,
                                       &*in.initial_state};
    const char* names[] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"};
    for (auto* t : leaves) t->requires_grad_(true);
    at::manual_seed(3);
    const at::Tensor wy = at::randn_like(in.u), ws = at::randn_like(*in.initial_state);
    auto objective = [&](const ScanInputs& x) {
      const auto r = cab::kernels::scan(x, backend, 4);
      return (r.y * wy).sum() + (r.final_state * ws).sum();
    };
    objective(in).backward();
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      // Directional derivative along a random direction v: (f(x+εv) − f(x−εv)) / 2ε vs <∇f, v>.
      const at::Tensor v = at::randn_like(*leaves[i]);
      const double eps = 1e-6;
      double fd;
      {
        at::NoGradGuard no_grad;
        ScanInputs plus = in, minus = in;
        std::vector<at::Tensor*> pl = {&plus.u, &plus.delta, &plus.A, &plus.B, &plus.C, &*plus.D_skip, &*plus.z,
                                       &*plus.delta_bias, &*plus.initial_state};
        std::vector<at::Tensor*> mi = {&minus.u, &minus.delta, &minus.A, &minus.B, &minus.C, &*minus.D_skip,
                                       &*minus.z, &*minus.delta_bias, &*minus.initial_state};
        *pl[i] = leaves[i]->detach() + eps * v;
        *mi[i] = leaves[i]->detach() - eps * v;
        fd = (objective(plus).item<double>() - objective(minus).item<double>()) / (2 * eps);
      }
      const double analytic = (leaves[i]->grad() * v).sum().item<double>();
      EXPECT_NEAR(analytic, fd, 1e-6 * std::max(1.0, std::abs(fd)))
          << names[i] << " backend " << static_cast<int>(backend) << " groups " << groups;
    }
  }
}

TEST(Scan, AutomaticPicksADifferentiableFormWhenGradientsAreNeeded) {
  auto in = inputs(1, 2, 5, 3, 0, 5);
  in.initial_state.reset();  // optional inputs may be absent
  in.delta_bias.reset();
  in.u.requires_grad_(true);
  const auto r = cab::kernels::scan(in);
  EXPECT_TRUE(r.y.requires_grad());
  r.y.sum().backward();
  EXPECT_TRUE(in.u.grad().defined());
  auto plain = inputs(1, 2, 5, 3, 0, 5);
  EXPECT_FALSE(cab::kernels::scan(plain).y.requires_grad());
}

TEST(Scan, MixingMatrixTimesInputIsTheScanOutput) {
  for (int64_t groups : {0, 2}) {
    auto in = inputs(2, 4, 9, 5, groups, 11);
    in.z.reset();
    in.initial_state.reset();  // the matrix form starts from a zero state
    const at::Tensor M = cab::kernels::mixing_matrix(in);
    ASSERT_EQ(M.sizes(), (at::IntArrayRef{2, 4, 9, 9}));
    const at::Tensor y = at::matmul(M, in.u.unsqueeze(-1)).squeeze(-1);
    EXPECT_LE(max_abs(y, cab::kernels::selective_scan_reference(in).y), 1e-10);
    EXPECT_EQ(at::triu(M, 1).abs().max().item<double>(), 0.0);  // causal: nothing above the diagonal
  }
}
