// Selective scan: the CPU reference against an independent closed form, and every device implementation
// against the reference over a table of named cases (GPU cases skip without a device).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cmath>

#include "cab/kernels/selective_scan.h"

using cab::kernels::ScanInputs;

namespace {

struct ScanCase {
  std::string name;
  int64_t batch, dim, len, dstate, groups;  // groups 0: B, C as [batch, N, L]
  bool with_z, with_D, with_bias, softplus, with_h0;
};

std::ostream& operator<<(std::ostream& os, const ScanCase& c) { return os << c.name; }

ScanInputs make_inputs(const ScanCase& c, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  auto opt = at::TensorOptions().dtype(at::kDouble);
  const auto acc = dtype == at::kDouble ? at::kDouble : at::kFloat;  // A, D, delta_bias, h0 stay fp32/fp64
  ScanInputs in;
  in.u = at::randn({c.batch, c.dim, c.len}, opt).to(dtype);
  in.delta = (at::rand({c.batch, c.dim, c.len}, opt) * 0.5 - (c.softplus ? 3.0 : -0.01)).to(dtype);
  in.A = -at::rand({c.dim, c.dstate}, opt).add(0.5).to(acc);
  auto bc_shape = c.groups ? std::vector<int64_t>{c.batch, c.groups, c.dstate, c.len} : std::vector<int64_t>{c.batch, c.dstate, c.len};
  in.B = at::randn(bc_shape, opt).to(dtype);
  in.C = at::randn(bc_shape, opt).to(dtype);
  if (c.with_D) in.D_skip = at::randn({c.dim}, opt).to(acc);
  if (c.with_z) in.z = at::randn({c.batch, c.dim, c.len}, opt).to(dtype);
  if (c.with_bias) in.delta_bias = (at::rand({c.dim}, opt) * 0.2).to(acc);
  in.delta_softplus = c.softplus;
  if (c.with_h0) in.initial_state = at::randn({c.batch, c.dim, c.dstate}, opt).to(acc);
  return in;
}

// Independent formulation: y_t = Σ_{s≤t} C_t·(Π_{k=s+1..t} exp(Δ_k A)) B_s Δ_s u_s + C_t·(Π_{k≤t} exp(Δ_k A)) h0 + D u_t.
at::Tensor closed_form(const ScanInputs& in) {
  const int64_t batch = in.u.size(0), dim = in.u.size(1), len = in.u.size(2), n = in.A.size(1);
  at::Tensor delta = in.delta.to(at::kDouble);
  if (in.delta_bias) delta = delta + in.delta_bias->to(at::kDouble).view({1, dim, 1});
  if (in.delta_softplus) delta = at::softplus(delta);
  const int64_t groups = in.B.dim() == 4 ? in.B.size(1) : 1;
  auto expand = [&](const at::Tensor& t) {  // -> [batch, dim, N, L]
    at::Tensor g = (t.dim() == 4 ? t : t.unsqueeze(1)).to(at::kDouble);
    return g.repeat_interleave(dim / groups, 1);
  };
  const at::Tensor B = expand(in.B), C = expand(in.C), u = in.u.to(at::kDouble), A = in.A.to(at::kDouble);
  // cumulative Σ_k Δ_k A up to t: [batch, dim, N, L]
  const at::Tensor cum = at::cumsum(delta.unsqueeze(2) * A.view({1, dim, n, 1}), 3);
  at::Tensor y = at::zeros({batch, dim, len}, u.options());
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      const at::Tensor decay = at::exp(cum.select(3, t) - cum.select(3, s));  // [batch, dim, N]
      const at::Tensor contrib = (C.select(3, t) * decay * B.select(3, s)).sum(2) * delta.select(2, s) * u.select(2, s);
      y.select(2, t).add_(contrib);
    }
    if (in.initial_state) {
      y.select(2, t).add_((C.select(3, t) * at::exp(cum.select(3, t)) * in.initial_state->to(at::kDouble)).sum(2));
    }
  }
  if (in.D_skip) y = y + u * in.D_skip->to(at::kDouble).view({1, dim, 1});
  if (in.z) y = y * at::silu(in.z->to(at::kDouble));
  return y;
}

double max_rel_error(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-12)).item<double>();
}

const std::vector<ScanCase> kCases = {
    {"plain_b2_d4_l7_n3", 2, 4, 7, 3, 0, false, false, false, false, false},
    {"all_options_b2_d6_l9_n5", 2, 6, 9, 5, 0, true, true, true, true, true},
    {"grouped_g3_b1_d6_l8_n4", 1, 6, 8, 4, 3, true, true, false, true, false},
    {"length_one", 3, 2, 1, 16, 0, true, true, true, true, true},
    {"state_33_crosses_a_warp", 1, 3, 5, 33, 0, false, true, false, true, false},
};

class ScanCases : public ::testing::TestWithParam<ScanCase> {};

}  // namespace

TEST_P(ScanCases, ReferenceMatchesTheClosedFormInFp64) {
  const auto in = make_inputs(GetParam(), at::kDouble, 1);
  const auto r = cab::kernels::selective_scan_reference(in);
  EXPECT_EQ(r.y.scalar_type(), at::kDouble);
  EXPECT_LT(max_rel_error(r.y, closed_form(in)), 1e-12);
}

TEST_P(ScanCases, FinalStateContinuesTheScan) {
  // Scanning [0, L) equals scanning [0, k) then [k, L) from the returned state.
  const auto c = GetParam();
  if (c.len < 2) GTEST_SKIP() << "needs L >= 2 to split";
  auto in = make_inputs(c, at::kDouble, 2);
  const auto whole = cab::kernels::selective_scan_reference(in);
  const int64_t k = c.len / 2;
  auto part = [&](const ScanInputs& src, int64_t from, int64_t to) {
    ScanInputs p = src;
    const int64_t time_dim_bc = src.B.dim() - 1;
    p.u = src.u.slice(2, from, to);
    p.delta = src.delta.slice(2, from, to);
    p.B = src.B.slice(time_dim_bc, from, to);
    p.C = src.C.slice(time_dim_bc, from, to);
    if (src.z) p.z = src.z->slice(2, from, to);
    return p;
  };
  const auto first = cab::kernels::selective_scan_reference(part(in, 0, k));
  auto second_in = part(in, k, c.len);
  second_in.initial_state = first.final_state;
  const auto second = cab::kernels::selective_scan_reference(second_in);
  EXPECT_LT(max_rel_error(at::cat({first.y, second.y}, 2), whole.y), 1e-12);
  EXPECT_LT(max_rel_error(second.final_state, whole.final_state), 1e-12);
}

TEST_P(ScanCases, TorchOpOnCpuIsTheReference) {
  const auto in = make_inputs(GetParam(), at::kFloat, 3);
  const auto via_op = cab::kernels::selective_scan(in);
  const auto ref = cab::kernels::selective_scan_reference(in);
  EXPECT_TRUE(at::equal(via_op.y, ref.y));
  EXPECT_TRUE(at::equal(via_op.final_state, ref.final_state));
}

TEST_P(ScanCases, CudaMatchesTheReference) {
  if (!cab::kernels::built_with_cuda()) GTEST_SKIP() << "built without CUDA";
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // fp32 1e-5 and bf16/fp16 1e-2 relative to the largest output (PERFORMANCE.md's numerics targets).
  for (auto [dtype, tolerance] : {std::pair{at::kFloat, 1e-5}, std::pair{at::kBFloat16, 1e-2}, std::pair{at::kHalf, 1e-2}}) {
    const auto in = make_inputs(GetParam(), dtype, 4);
    const auto ref = cab::kernels::selective_scan_reference(in);
    ScanInputs gpu = in;
    auto to_gpu = [](std::optional<at::Tensor>& t) { if (t) t = t->cuda(); };
    gpu.u = in.u.cuda(); gpu.delta = in.delta.cuda(); gpu.A = in.A.cuda(); gpu.B = in.B.cuda(); gpu.C = in.C.cuda();
    to_gpu(gpu.D_skip); to_gpu(gpu.z); to_gpu(gpu.delta_bias); to_gpu(gpu.initial_state);
    const auto out = cab::kernels::selective_scan(gpu);
    EXPECT_TRUE(out.y.is_cuda());
    EXPECT_EQ(out.y.scalar_type(), dtype);
    EXPECT_LT(max_rel_error(out.y, ref.y), tolerance) << c10::toString(dtype);
    EXPECT_LT(max_rel_error(out.final_state, ref.final_state), tolerance) << c10::toString(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ScanCases, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

TEST(SelectiveScan, BadShapesNameTheArgument) {
  auto in = make_inputs(kCases[0], at::kFloat, 5);
  in.B = at::randn({2, 3, 6});
  try {
    cab::kernels::selective_scan(in);
    ADD_FAILURE();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("selective_scan: B must be [batch=2, N=3, L=7]"), std::string::npos) << e.what();
  }
  auto in2 = make_inputs(kCases[0], at::kFloat, 5);
  in2.A = at::randn({4, 300});
  EXPECT_THROW(cab::kernels::selective_scan(in2), c10::Error);
}

TEST(SelectiveScan, HandComputedSingleChannel) {
  // N = 1, A = -1, Δ = 1 (no softplus), B = C = 1: h_t = e^{-1} h_{t-1} + u_t, y_t = h_t.
  ScanInputs in;
  in.u = at::tensor({1.0, 2.0, 3.0}, at::kDouble).view({1, 1, 3});
  in.delta = at::ones({1, 1, 3}, at::kDouble);
  in.A = at::full({1, 1}, -1.0, at::kDouble);
  in.B = at::ones({1, 1, 3}, at::kDouble);
  in.C = at::ones({1, 1, 3}, at::kDouble);
  const auto r = cab::kernels::selective_scan_reference(in);
  const double e = std::exp(-1.0);
  const double h1 = 1.0, h2 = e * h1 + 2.0, h3 = e * h2 + 3.0;
  EXPECT_NEAR(r.y[0][0][0].item<double>(), h1, 1e-14);
  EXPECT_NEAR(r.y[0][0][1].item<double>(), h2, 1e-14);
  EXPECT_NEAR(r.y[0][0][2].item<double>(), h3, 1e-14);
  EXPECT_NEAR(r.final_state[0][0][0].item<double>(), h3, 1e-14);
}
