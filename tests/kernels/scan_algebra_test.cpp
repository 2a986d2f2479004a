// CPU checks of what the CUDA scan relies on, runnable without a GPU: an fp64 emulation of the CUDA algorithm
// (time chunks combined through exp(A·ΣΔ), tiles aligned to t = 0 with identity steps past L, the reverse direction,
// the backward's chunk adjoints, tile checkpoints and per-tile reruns) against the reference and the analytic
// backward; the bidirectional op against two single scans; the op-level autograd against the CPU autograd kernel.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <vector>

#include "cab/kernels/scan.h"
#include "scan_inputs.h"

using cab::kernels::ScanBackend;
using cab::kernels::ScanInputs;
using cab::kernels::time_flipped;
using cab::kernels::test::random_inputs;

namespace {

double max_rel(const at::Tensor& got, const at::Tensor& want) {
  return ((got.to(at::kDouble) - want.to(at::kDouble)).abs().max() / want.to(at::kDouble).abs().max().clamp_min(1e-300))
      .item<double>();
}

struct Grads {
  at::Tensor y, final_state, u, delta, A, B, C, D, z, bias, h0;
};

/// Reference values: the sequential forward and the CPU kernel's analytic backward (reverse: on flipped inputs).
Grads reference(const ScanInputs& in, bool reverse, const at::Tensor& gy, const at::Tensor& gfinal) {
  ScanInputs x = reverse ? time_flipped(in) : in;
  std::vector<at::Tensor*> leaves = {&x.u, &x.delta, &x.A, &x.B, &x.C, &*x.D_skip, &*x.z, &*x.delta_bias, &*x.initial_state};
  for (auto* t : leaves) *t = t->detach().clone().requires_grad_(true);
  const auto r = cab::kernels::scan(x, ScanBackend::kernel);
  ((r.y * (reverse ? gy.flip(2) : gy)).sum() + (r.final_state * gfinal).sum()).backward();
  Grads g{reverse ? r.y.detach().flip(2) : r.y.detach(), r.final_state.detach(), x.u.grad(), x.delta.grad(),
          x.A.grad(), x.B.grad(), x.C.grad(), x.D_skip->grad(), x.z->grad(), x.delta_bias->grad(),
          x.initial_state->grad()};
  if (reverse) {
    for (auto* t : {&g.u, &g.delta, &g.z}) *t = t->flip(2);
    for (auto* t : {&g.B, &g.C}) *t = t->flip(-1);
  }
  return g;
}

/// The CUDA kernels' algorithm for one direction, in fp64, step for step (see kernels/cuda/selective_scan_cuda.cuh).
Grads emulate(const ScanInputs& in, bool reverse, int64_t chunk_len, int64_t tile, const at::Tensor& gy,
              const at::Tensor& gfinal) {
  const int64_t batch = in.u.size(0), dim = in.u.size(1), L = in.u.size(2), N = in.A.size(1);
  const int64_t groups = in.B.dim() == 4 ? in.B.size(1) : 1, per_group = dim / groups;
  const at::Tensor Bg = in.B.dim() == 4 ? in.B : in.B.unsqueeze(1), Cg = in.C.dim() == 4 ? in.C : in.C.unsqueeze(1);
  const auto u = in.u.accessor<double, 3>(), delta = in.delta.accessor<double, 3>(), z = in.z->accessor<double, 3>();
  const auto h0 = in.initial_state->accessor<double, 3>(), dy_out = gy.accessor<double, 3>();
  const auto dfin = gfinal.accessor<double, 3>();
  const auto A = in.A.accessor<double, 2>();
  const auto B = Bg.accessor<double, 4>(), C = Cg.accessor<double, 4>();
  const auto D = in.D_skip->accessor<double, 1>(), bias = in.delta_bias->accessor<double, 1>();
  Grads g;
  auto o = in.u.options();
  g.y = at::zeros({batch, dim, L}, o), g.final_state = at::zeros({batch, dim, N}, o);
  g.u = at::zeros_like(g.y), g.delta = at::zeros_like(g.y), g.z = at::zeros_like(g.y);
  g.A = at::zeros({dim, N}, o), g.B = at::zeros_like(Bg), g.C = at::zeros_like(Cg);
  g.D = at::zeros({dim}, o), g.bias = at::zeros({dim}, o), g.h0 = at::zeros({batch, dim, N}, o);
  auto y = g.y.accessor<double, 3>(), hN = g.final_state.accessor<double, 3>(), du = g.u.accessor<double, 3>();
  auto dd = g.delta.accessor<double, 3>(), dz = g.z.accessor<double, 3>(), dh0 = g.h0.accessor<double, 3>();
  auto dA = g.A.accessor<double, 2>();
  auto dB = g.B.accessor<double, 4>(), dC = g.C.accessor<double, 4>();
  auto dD = g.D.accessor<double, 1>(), db = g.bias.accessor<double, 1>();
  const int64_t padded = (L + 15) / 16 * 16, K = (padded + chunk_len - 1) / chunk_len;
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };

  for (int64_t bb = 0; bb < batch; ++bb) {
    for (int64_t d = 0; d < dim; ++d) {
      const int64_t gr = d / per_group;
      // Step t of the padded sequence; times ≥ L are identity steps (Δ = 0, u = 0, B = C = 0, no gradient).
      auto dt = [&](int64_t t) {
        if (t >= L) return 0.0;
        const double r = delta[bb][d][t] + bias[d];
        return r <= 20 ? std::log1p(std::exp(r)) : r;
      };
      auto Bv = [&](int64_t n, int64_t t) { return t < L ? B[bb][gr][n][t] : 0.0; };
      auto Cv = [&](int64_t n, int64_t t) { return t < L ? C[bb][gr][n][t] : 0.0; };
      auto uv = [&](int64_t t) { return t < L ? u[bb][d][t] : 0.0; };
      auto dyv = [&](int64_t t) { return t < L ? dy_out[bb][d][t] * z[bb][d][t] * sig(z[bb][d][t]) : 0.0; };
      // A range of times in scan order (forward: ascending; reverse: descending), and chunk k's times.
      auto times = [&](int64_t lo, int64_t hi, bool backwards) {
        std::vector<int64_t> ts;
        for (int64_t i = 0; i < hi - lo; ++i) ts.push_back(backwards ? hi - 1 - i : lo + i);
        return ts;
      };
      auto chunk = [&](int64_t k, bool backwards) {
        return times(k * chunk_len, std::min((k + 1) * chunk_len, padded), backwards);
      };
      auto chunk_order = [&](bool backwards) { return times(0, K, backwards); };
      auto step = [&](std::vector<double>& h, int64_t t) {
        for (int64_t n = 0; n < N; ++n) h[n] = std::exp(dt(t) * A[d][n]) * h[n] + dt(t) * Bv(n, t) * uv(t);
      };

      // Forward: chunks from zero, combined, rerun from their entering states.
      std::vector<std::vector<double>> local(K, std::vector<double>(N)), H(K, std::vector<double>(N));
      std::vector<double> sum(K);
      for (int64_t k = 0; k < K; ++k) {
        std::vector<double> h(N, 0.0);
        for (int64_t t : chunk(k, reverse)) step(h, t), sum[k] += dt(t);
        local[k] = h;
      }
      std::vector<double> h(N);
      for (int64_t n = 0; n < N; ++n) h[n] = h0[bb][d][n];
      for (int64_t k : chunk_order(reverse)) {
        H[k] = h;
        for (int64_t n = 0; n < N; ++n) h[n] = std::exp(A[d][n] * sum[k]) * h[n] + local[k][n];
      }
      for (int64_t k : chunk_order(reverse)) {
        h = H[k];
        for (int64_t t : chunk(k, reverse)) {
          step(h, t);
          if (t >= L) continue;
          double out = D[d] * uv(t);
          for (int64_t n = 0; n < N; ++n) out += Cv(n, t) * h[n];
          y[bb][d][t] = out * z[bb][d][t] * sig(z[bb][d][t]);
        }
      }
      for (int64_t n = 0; n < N; ++n) hN[bb][d][n] = h[n];

      // Backward: chunk adjoints from zero, combined against the scan order, then each chunk tile by tile.
      std::vector<std::vector<double>> gloc(K, std::vector<double>(N)), G(K, std::vector<double>(N));
      for (int64_t k = 0; k < K; ++k) {
        std::vector<double> q(N, 0.0);
        for (int64_t t : chunk(k, !reverse))
          for (int64_t n = 0; n < N; ++n) q[n] = std::exp(dt(t) * A[d][n]) * (q[n] + dyv(t) * Cv(n, t));
        gloc[k] = q;
      }
      std::vector<double> q(N);
      for (int64_t n = 0; n < N; ++n) q[n] = dfin[bb][d][n];
      for (int64_t k : chunk_order(!reverse)) {
        G[k] = q;
        for (int64_t n = 0; n < N; ++n) q[n] = std::exp(A[d][n] * sum[k]) * q[n] + gloc[k][n];
      }
      for (int64_t k : chunk_order(reverse)) {
        const int64_t first_tile = k * chunk_len / tile;
        const int64_t last_tile = std::min((k + 1) * chunk_len, padded) / tile;
        std::vector<std::vector<double>> checkpoint(last_tile - first_tile);
        h = H[k];
        for (int64_t tl : times(first_tile, last_tile, reverse)) {
          checkpoint[tl - first_tile] = h;
          for (int64_t t : times(tl * tile, (tl + 1) * tile, reverse)) step(h, t);
        }
        q = G[k];
        for (int64_t tl : times(first_tile, last_tile, !reverse)) {
          std::vector<std::vector<double>> before;  // h_{t−1} of each step of the tile, in scan order
          h = checkpoint[tl - first_tile];
          for (int64_t t : times(tl * tile, (tl + 1) * tile, reverse)) before.push_back(h), step(h, t);
          const auto ts = times(tl * tile, (tl + 1) * tile, reverse);
          for (int64_t i = tile - 1; i >= 0; --i) {
            const int64_t t = ts[i];
            const std::vector<double>& hp = before[i];
            const double delta_t = dt(t), zz = t < L ? z[bb][d][t] : 0.0, sz = sig(zz);
            double y_pre = D[d] * uv(t);
            for (int64_t n = 0; n < N; ++n) y_pre += Cv(n, t) * h[n];
            const double dout = t < L ? dy_out[bb][d][t] : 0.0, dy = dout * zz * sz;
            double du_t = D[d] * dy, ddt = 0;
            for (int64_t n = 0; n < N; ++n) {
              const double a = std::exp(delta_t * A[d][n]), gn = q[n] + dy * Cv(n, t);
              if (t < L) dC[bb][gr][n][t] += dy * h[n], dB[bb][gr][n][t] += gn * delta_t * uv(t);
              du_t += gn * delta_t * Bv(n, t);
              ddt += gn * (a * A[d][n] * hp[n] + Bv(n, t) * uv(t));
              dA[d][n] += gn * a * delta_t * hp[n];
              q[n] = a * gn;
              h[n] = hp[n];
            }
            if (t >= L) continue;
            const double raw = delta[bb][d][t] + bias[d];
            du[bb][d][t] = du_t;
            dd[bb][d][t] = ddt * sig(raw);
            dz[bb][d][t] = dout * y_pre * sz * (1 + zz * (1 - sz));
            dD[d] += dy * uv(t);
            db[d] += dd[bb][d][t];
          }
        }
        if (k == (reverse ? K - 1 : 0))
          for (int64_t n = 0; n < N; ++n) dh0[bb][d][n] = q[n];
      }
    }
  }
  if (in.B.dim() == 3) g.B = g.B.squeeze(1), g.C = g.C.squeeze(1);
  return g;
}

struct Layout {
  const char* name;
  int64_t L, N, groups, chunk_len, tile;
  bool reverse;
};

class Emulation : public ::testing::TestWithParam<Layout> {};

}  // namespace

TEST_P(Emulation, ChunkedTiledAlgorithmMatchesTheReference) {
  const Layout c = GetParam();
  const auto in = random_inputs(2, 6, c.L, c.N, c.groups, 21);
  at::manual_seed(5);
  const at::Tensor gy = at::randn_like(in.u), gfinal = at::randn({2, 6, c.N}, in.u.options());
  const Grads want = reference(in, c.reverse, gy, gfinal);
  const Grads got = emulate(in, c.reverse, c.chunk_len, c.tile, gy, gfinal);
  const std::pair<const char*, std::pair<at::Tensor, at::Tensor>> pairs[] = {
      {"y", {got.y, want.y}},       {"final_state", {got.final_state, want.final_state}},
      {"du", {got.u, want.u}},      {"ddelta", {got.delta, want.delta}},
      {"dA", {got.A, want.A}},      {"dB", {got.B, want.B}},
      {"dC", {got.C, want.C}},      {"dD", {got.D, want.D}},
      {"dz", {got.z, want.z}},      {"ddelta_bias", {got.bias, want.bias}},
      {"dinitial_state", {got.h0, want.h0}}};
  for (const auto& [name, pair] : pairs) {
    ASSERT_EQ(pair.first.sizes(), pair.second.sizes()) << name;
    EXPECT_LT(max_rel(pair.first, pair.second), 1e-11) << name;
  }
}

// Lengths around the 16-step tiles and the chunk boundaries, one chunk and several, both directions, grouped B/C.
INSTANTIATE_TEST_SUITE_P(Layouts, Emulation,
                         ::testing::Values(Layout{"l1_one_chunk", 1, 3, 0, 16, 8, false},
                                           Layout{"l1_reverse", 1, 3, 0, 16, 8, true},
                                           Layout{"l23_one_chunk", 23, 4, 0, 32, 8, false},
                                           Layout{"l23_reverse", 23, 4, 0, 32, 8, true},
                                           Layout{"l50_chunks16", 50, 5, 0, 16, 8, false},
                                           Layout{"l50_chunks16_reverse", 50, 5, 0, 16, 8, true},
                                           Layout{"l77_chunks32_grouped", 77, 3, 3, 32, 8, false},
                                           Layout{"l77_chunks32_grouped_reverse", 77, 3, 3, 32, 8, true},
                                           Layout{"l64_exact_chunks_tile16", 64, 2, 2, 32, 16, true}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(BidirectionalScan, EqualsTwoScansWithTheSecondReversed) {
  // y = s·(y_fwd + flip(scan(flip(bwd)))), the final states of both, and gradients through both directions: the
  // op on the CPU (reference forward, analytic backward) and bidirectional_scan (CPU training path).
  for (int64_t groups : {0, 2}) {
    for (bool op : {true, false}) {
      SCOPED_TRACE(op ? "bi_selective_scan" : "bidirectional_scan");
      auto f = random_inputs(2, 4, 11, 3, groups, 31), b = random_inputs(2, 4, 11, 3, groups, 32);
      b.z = f.z;  // Vim shares z between the directions
      for (auto* in : {&f, &b})
        for (at::Tensor* t : {&in->u, &in->delta, &in->A, &in->B, &in->C, &*in->D_skip, &*in->delta_bias,
                              &*in->initial_state})
          t->requires_grad_(true);
      f.z->requires_grad_(true);
      const auto r = op ? cab::kernels::bi_selective_scan(f, b, 0.5) : cab::kernels::bidirectional_scan(f, b, 0.5);
      const auto rf = cab::kernels::selective_scan_reference(f);
      const auto rb = cab::kernels::selective_scan_reference(time_flipped(b));
      EXPECT_LT(max_rel(r.y, (rf.y + rb.y.flip(2)) * 0.5), 1e-13);
      EXPECT_LT(max_rel(r.final_state, rf.final_state), 1e-13);
      EXPECT_LT(max_rel(r.final_state_bwd, rb.final_state), 1e-13);

      at::manual_seed(9);
      const at::Tensor wy = at::randn_like(r.y), ws = at::randn_like(r.final_state), wb = at::randn_like(r.final_state);
      auto objective = [&](const at::Tensor& y, const at::Tensor& sf, const at::Tensor& sb) {
        return (y * wy).sum() + (sf * ws).sum() + (sb * wb).sum();
      };
      const std::vector<at::Tensor> leaves = {f.u, f.delta, f.A, f.B, f.C, *f.D_skip, *f.z, *f.delta_bias,
                                              *f.initial_state, b.u, b.delta, b.A, b.B, b.C, *b.D_skip,
                                              *b.delta_bias, *b.initial_state};
      const auto fused = torch::autograd::grad({objective(r.y, r.final_state, r.final_state_bwd)}, leaves);
      const auto sf = cab::kernels::scan(f, ScanBackend::sequential);
      const auto sb = cab::kernels::scan(time_flipped(b), ScanBackend::sequential);
      const auto split =
          torch::autograd::grad({objective((sf.y + sb.y.flip(2)) * 0.5, sf.final_state, sb.final_state)}, leaves);
      for (std::size_t i = 0; i < leaves.size(); ++i) EXPECT_LT(max_rel(fused[i], split[i]), 1e-11) << "leaf " << i;
    }
  }
}

TEST(ScanOp, AutogradKernelMatchesTheCpuAutogradFunction) {
  // selective_scan() goes through the op's autograd kernel (reference forward, analytic backward via the
  // selective_scan_bwd op); scan(kernel) on the CPU through the vectorized CPU function. Same gradients.
  auto in = random_inputs(2, 3, 9, 4, 3, 41);
  std::vector<at::Tensor*> leaves = {&in.u, &in.delta, &in.A, &in.B, &in.C, &*in.D_skip, &*in.z, &*in.delta_bias,
                                     &*in.initial_state};
  for (auto* t : leaves) t->requires_grad_(true);
  std::vector<at::Tensor> vars;
  for (auto* t : leaves) vars.push_back(*t);
  at::manual_seed(2);
  const at::Tensor wy = at::randn_like(in.u), ws = at::randn_like(*in.initial_state);
  const auto a = cab::kernels::selective_scan(in);
  const auto b = cab::kernels::scan(in, ScanBackend::kernel);
  ASSERT_TRUE(a.y.requires_grad());
  ASSERT_TRUE(a.final_state.requires_grad());
  const auto ga = torch::autograd::grad({(a.y * wy).sum() + (a.final_state * ws).sum()}, vars);
  const auto gb = torch::autograd::grad({(b.y * wy).sum() + (b.final_state * ws).sum()}, vars);
  for (std::size_t i = 0; i < vars.size(); ++i) EXPECT_LT(max_rel(ga[i], gb[i]), 1e-12) << "input " << i;
}

TEST(ScanOp, AbsentOptionalInputsGetNoGradient) {
  auto in = random_inputs(1, 2, 5, 3, 0, 43);
  in.D_skip.reset(), in.z.reset(), in.delta_bias.reset(), in.initial_state.reset();
  in.u.requires_grad_(true);
  in.B.requires_grad_(true);
  const auto r = cab::kernels::selective_scan(in);
  r.y.sum().backward();
  EXPECT_TRUE(in.u.grad().defined());
  EXPECT_TRUE(in.B.grad().defined());
  EXPECT_FALSE(in.delta.grad().defined());
}
