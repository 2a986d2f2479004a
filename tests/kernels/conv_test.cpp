// cab::kernels::causal_conv1d: the definition on the CPU (against an explicit loop), and the CUDA kernels against
// the CPU in fp64, forward and every gradient, over widths, lengths, layouts, dtypes, reverse and silu.
#include <gtest/gtest.h>

#include <torch/autograd.h>
#include <torch/cuda.h>

#include <ATen/ATen.h>

#include "cab/kernels/conv.h"

namespace {

using cab::kernels::causal_conv1d;

/// out[b, c, t] = act(bias[c] + Σ_k w[c, k] x[b, c, t ∓ …]) written out element by element (fp64).
at::Tensor loop_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool reverse, bool silu) {
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), K = w.size(-1);
  const auto xa = x.accessor<double, 3>();
  const at::Tensor w2 = w.reshape({D, K});
  const auto wa = w2.accessor<double, 2>();
  at::Tensor out = at::zeros({B, D, L}, at::kDouble);
  auto oa = out.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < D; ++c)
      for (int64_t t = 0; t < L; ++t) {
        double acc = bias.defined() ? bias[c].item<double>() : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = reverse ? t + (K - 1) - k : t - (K - 1) + k;
          if (s >= 0 && s < L) acc += wa[c][k] * xa[b][c][s];
        }
        oa[b][c][t] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
      }
  return out;
}

TEST(CausalConv1d, CpuMatchesItsDefinition) {
  at::manual_seed(1);
  for (const bool reverse : {false, true})
    for (const bool silu : {false, true})
      for (const int64_t K : {1, 3, 4}) {
        SCOPED_TRACE(testing::Message() << "reverse " << reverse << " silu " << silu << " K " << K);
        const at::Tensor x = at::randn({2, 3, 9}, at::kDouble), w = at::randn({3, 1, K}, at::kDouble);
        const at::Tensor bias = K == 3 ? at::Tensor() : at::randn({3}, at::kDouble);
        const at::Tensor got = causal_conv1d(x, w, bias, reverse, silu);
        EXPECT_LE((got - loop_conv(x, w, bias, reverse, silu)).abs().max().item<double>(), 1e-12);
        // reverse: the conv of the time-reversed sequence, flipped back.
        if (reverse) {
          const at::Tensor flipped = causal_conv1d(x.flip(2), w, bias, false, silu).flip(2);
          EXPECT_LE((got - flipped).abs().max().item<double>(), 1e-12);
        }
      }
}

TEST(CausalConv1d, ClearErrors) {
  const at::Tensor x = at::randn({2, 3, 9});
  EXPECT_THROW(causal_conv1d(x, at::randn({3, 1, 9}), at::Tensor(), false, true), c10::Error);  // K > 8
  EXPECT_THROW(causal_conv1d(x, at::randn({4, 1, 4}), at::Tensor(), false, true), c10::Error);  // channels
  EXPECT_THROW(causal_conv1d(x, at::randn({3, 1, 4}), at::randn({4}), false, true), c10::Error);
  EXPECT_THROW(causal_conv1d(x.select(2, 0), at::randn({3, 1, 4}), at::Tensor(), false, true), c10::Error);
}

struct GpuCase {
  const char* name;
  int64_t batch, dim, len, K;
  bool bias, time_major;
};

class CausalConv1dGpu : public testing::TestWithParam<GpuCase> {};

TEST_P(CausalConv1dGpu, MatchesTheCpuForwardAndGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const GpuCase c = GetParam();
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (const bool reverse : {false, true})
      for (const bool silu : {false, true}) {
        SCOPED_TRACE(testing::Message() << c10::toString(dtype) << " reverse " << reverse << " silu " << silu);
        at::manual_seed(7);
        // x in the dtype (rounded first so that the CPU sees the same values); a time-major view like a
        // projection's, or contiguous.
        at::Tensor x64 = c.time_major ? at::randn({c.batch, c.len, c.dim}, at::kDouble).transpose(1, 2)
                                      : at::randn({c.batch, c.dim, c.len}, at::kDouble);
        x64 = x64.to(dtype).to(at::kDouble);
        const at::Tensor w64 = at::randn({c.dim, 1, c.K}, at::kDouble) * 0.5;
        const at::Tensor b64 = c.bias ? at::randn({c.dim}, at::kDouble) : at::Tensor();
        const at::Tensor dy64 = at::randn({c.batch, c.dim, c.len}, at::kDouble).to(dtype).to(at::kDouble);

        auto leaf = [](const at::Tensor& t) { return t.defined() ? t.detach().clone().requires_grad_(true) : t; };
        at::Tensor xc = leaf(x64), wc = leaf(w64), bc = leaf(b64);
        const at::Tensor yc = causal_conv1d(xc, wc, bc, reverse, silu);
        std::vector<at::Tensor> cpu_in = {xc, wc};
        if (bc.defined()) cpu_in.push_back(bc);
        const auto cpu_g = torch::autograd::grad({yc}, cpu_in, {dy64});

        at::Tensor xg = (c.time_major ? x64.transpose(1, 2).to(dtype).cuda().transpose(1, 2) : x64.to(dtype).cuda())
                            .requires_grad_(true);
        at::Tensor wg = w64.to(at::kFloat).cuda().requires_grad_(true);
        at::Tensor bg = c.bias ? b64.to(at::kFloat).cuda().requires_grad_(true) : at::Tensor();
        const at::Tensor yg = causal_conv1d(xg, wg, bg, reverse, silu);
        ASSERT_EQ(yg.scalar_type(), dtype);
        std::vector<at::Tensor> gpu_in = {xg, wg};
        if (bg.defined()) gpu_in.push_back(bg);
        const auto gpu_g = torch::autograd::grad({yg}, gpu_in, {dy64.to(dtype).cuda()});

        const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
        auto rel = [](const at::Tensor& got, const at::Tensor& want) {
          return (got.cpu().to(at::kDouble) - want).abs().max().item<double>() / want.abs().max().item<double>();
        };
        EXPECT_LE(rel(yg, yc.detach()), tol) << "out";
        const char* names[] = {"dx", "dweight", "dbias"};
        for (std::size_t i = 0; i < cpu_g.size(); ++i) EXPECT_LE(rel(gpu_g[i], cpu_g[i]), tol) << names[i];
      }
}

// Vim-Tiny's shape (384 channels: 3 blocks of 128, 197 steps in segments), widths 1 … 8, lengths shorter than the
// kernel, channels not a multiple of the block, long sequences in several segments, both input layouts.
INSTANTIATE_TEST_SUITE_P(
    Cases, CausalConv1dGpu,
    testing::Values(GpuCase{"vim_tiny_b16_d384_l197_k4", 16, 384, 197, 4, true, true},
                    GpuCase{"contiguous_b2_d130_l50_k4", 2, 130, 50, 4, true, false},
                    GpuCase{"l1_k4", 3, 5, 1, 4, true, true}, GpuCase{"l3_k4_no_bias", 2, 7, 3, 4, false, false},
                    GpuCase{"k1", 2, 9, 20, 1, true, true}, GpuCase{"k8_no_bias", 2, 9, 40, 8, false, true},
                    GpuCase{"long_b1_d40_l2100_k4", 1, 40, 2100, 4, true, true}),
    [](const testing::TestParamInfo<GpuCase>& info) { return std::string(info.param.name); });

}  // namespace
