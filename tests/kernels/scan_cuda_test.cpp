// The CUDA selective scan, forward and every gradient, one direction and the fused bidirectional scan, against the
// CPU (sequential reference forward, analytic backward, computed in fp64 on the same rounded inputs) over a table
// of named cases; guard regions around every output and NaN padding around every input; errors. GPU cases skip
// without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <limits>
#include <string>
#include <vector>

#include "cab/kernels/scan.h"
#include "compare.h"

using cab::kernels::ScanBackend;
using cab::kernels::test::guarded;
using cab::kernels::test::have_gpu;
using cab::kernels::test::max_rel_error;
using cab::kernels::ScanInputs;

namespace {

struct GpuCase {
  std::string name;
  int64_t batch, dim, len, dstate, groups;  // groups 0: B, C as [batch, N, L]
  bool z, D, bias, softplus, h0, bidirectional;
  bool bf16_only = false;  // large shapes: the target dtype only, to keep the CPU side of the test short
  std::string layout = "";  // the kernels the case must take on the GPU (testing::cuda_layout), when it matters
};

std::ostream& operator<<(std::ostream& os, const GpuCase& c) { return os << c.name; }

/// Vim-Tiny's real shape, shapes around the kernels' block/tile/chunk sizes (N ≤ 16: the row kernels, 64 channels
/// per block, 8-step tiles; N > 16: the lanes layout, channels per block 128/lanes, lanes = N/4 rounded up to a
/// power of two, 8 states per lane above N = 128, 16-step tiles; either one chunks time when there are few
/// channel blocks), L = 1 … 8193, N = 1 … 256, batch 1 … 128, grouped B/C.
const std::vector<GpuCase> kGpuCases = {
    {"l1_n16_all_options", 3, 5, 1, 16, 0, true, true, true, true, true, false},
    {"l7_n1_no_options", 2, 3, 7, 1, 0, false, false, false, false, false, false},
    {"n5_two_lanes_l100", 2, 9, 100, 5, 0, true, true, true, true, false, false},
    {"vim_like_d97_l197_n16", 16, 97, 197, 16, 0, true, true, true, true, false, false, false, "rows, 3 chunks"},
    {"batch128_d40_l50_n16", 128, 40, 50, 16, 0, true, true, true, true, true, false, false, "rows"},  // 128 blocks: whole tiles
    {"grouped_g3_l1000_n64", 2, 12, 1000, 64, 3, true, true, true, true, true, false},
    {"l2048_n128_32_lanes", 1, 6, 2048, 128, 0, true, true, false, true, false, false},
    {"n256_8_states_per_lane_g3", 2, 3, 33, 256, 3, true, true, true, true, true, false},
    {"chunked_l8193_n16", 1, 7, 8193, 16, 0, true, true, true, true, true, false, false, "rows, 103 chunks"},
    {"chunked_grouped_l3000", 2, 8, 3000, 16, 2, true, true, true, true, true, false, false, "rows, 47 chunks"},
    {"bi_l1_n3", 2, 4, 1, 3, 0, true, true, true, true, true, true},
    {"bi_vim_like_d70_l197", 8, 70, 197, 16, 0, true, true, true, true, false, true},
    {"bi_chunked_grouped_l4100", 1, 8, 4100, 16, 2, true, true, true, true, true, true, false, "rows, 52 chunks"},
    {"vim_tiny_b128_d384_l197_n16", 128, 384, 197, 16, 0, true, true, true, true, false, false, true, "rows, half-tile backward"},
    {"bi_vim_tiny_b128_d384_l197_n16", 128, 384, 197, 16, 0, true, true, true, true, false, true, true, "rows, half-tile backward"},
    // The row kernels in every dtype (B·D = 38400 rows fill ≤ 150 SMs unchunked): N < 16 padded, 100 channels per
    // group (a full and a partial block of 64), L = 37 (a partial 8-step tile), initial states. Vim-Tiny's and these
    // grids (640 to 768 blocks) take the backward in half-tile spans (6 blocks per SM: one wave on 132 SMs).
    {"rows_b128_d300_l37_n5_g3_h0", 128, 300, 37, 5, 3, true, true, true, true, true, false, false, "rows, half-tile backward"},
    {"bi_rows_b128_d300_l37_n16_h0", 128, 300, 37, 16, 0, true, true, true, true, true, true, false, "rows, half-tile backward"},
    {"rows_no_options_b128_d300_l9_n1", 128, 300, 9, 1, 0, false, false, false, false, false, false, false, "rows, half-tile backward"},
    // The row kernels over time chunks (few rows, long L: the language-model shapes): 200 channels (3 full blocks
    // and 8 rows), 32 chunks of 64 steps (the fewest steps a chunk takes), initial states, one and both directions.
    {"rows_chunked_b2_d200_l2048_n16_h0", 2, 200, 2048, 16, 0, true, true, true, true, true, false, false, "rows, 32 chunks"},
    {"bi_rows_chunked_b2_d200_l2048_n12_h0", 2, 200, 2048, 12, 0, true, true, true, true, true, true, false, "rows, 32 chunks"},
    // Time chunks with half-tile spans: 40 channel blocks × 16 chunks = 640 blocks on 132 SMs, grouped B/C, a partial
    // last tile, initial states.
    {"rows_chunked_half_tile_b4_d640_l1020_g2_h0", 4, 640, 1020, 16, 2, true, true, true, true, true, false, true,
     "rows, 16 chunks, half-tile backward"},
};

ScanInputs make_inputs(const GpuCase& c, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  ScanInputs in;
  in.u = at::randn({c.batch, c.dim, c.len}, o).to(dtype);
  // softplus(δ + bias) around 0.05–0.1 (Mamba's dt range); without softplus a positive Δ directly.
  in.delta = (at::rand({c.batch, c.dim, c.len}, o) * 0.5 + (c.softplus ? -3.0 : 0.01)).to(dtype);
  in.A = (-at::rand({c.dim, c.dstate}, o) - 0.5).to(at::kFloat);
  const auto bc = c.groups ? std::vector<int64_t>{c.batch, c.groups, c.dstate, c.len}
                           : std::vector<int64_t>{c.batch, c.dstate, c.len};
  in.B = at::randn(bc, o).to(dtype);
  in.C = at::randn(bc, o).to(dtype);
  if (c.D) in.D_skip = at::randn({c.dim}, o).to(at::kFloat);
  if (c.z) in.z = at::randn({c.batch, c.dim, c.len}, o).to(dtype);
  if (c.bias) in.delta_bias = (at::rand({c.dim}, o) * 0.2).to(at::kFloat);
  in.delta_softplus = c.softplus;
  if (c.h0) in.initial_state = at::randn({c.batch, c.dim, c.dstate}, o).to(at::kFloat);
  return in;
}

/// Every tensor of the inputs, in the order of their gradients.
std::vector<at::Tensor*> tensors(ScanInputs& in) {
  std::vector<at::Tensor*> out = {&in.u, &in.delta, &in.A, &in.B, &in.C};
  for (auto* t : {&in.D_skip, &in.z, &in.delta_bias, &in.initial_state})
    if (*t) out.push_back(&**t);
  return out;
}
std::vector<std::string> tensor_names(const ScanInputs& in, const std::string& suffix) {
  std::vector<std::string> out = {"u", "delta", "A", "B", "C"};
  if (in.D_skip) out.push_back("D");
  if (in.z) out.push_back("z");
  if (in.delta_bias) out.push_back("delta_bias");
  if (in.initial_state) out.push_back("initial_state");
  for (auto& s : out) s += suffix;
  return out;
}

ScanInputs map(const ScanInputs& in, const std::function<at::Tensor(const at::Tensor&)>& f) {
  ScanInputs out = in;
  for (auto [dst, src] : {std::pair{&out.u, &in.u}, {&out.delta, &in.delta}, {&out.A, &in.A}, {&out.B, &in.B}, {&out.C, &in.C}})
    *dst = f(*src);
  for (auto [dst, src] : {std::pair{&out.D_skip, &in.D_skip}, {&out.z, &in.z}, {&out.delta_bias, &in.delta_bias},
                          {&out.initial_state, &in.initial_state}})
    if (*src) *dst = f(**src);
  return out;
}

struct ScanRun {
  std::vector<at::Tensor> outputs;  // y, final state(s)
  std::vector<at::Tensor> grads;    // of every input tensor, forward direction first
};

/// Runs the scan (fused bidirectional with `bwd`) and the backward of Σ y·wy + Σ final·ws: through the ops
/// (`op`: the device's kernels) or through scan()/bidirectional_scan() (the CPU truth: the CPU autograd kernel).
ScanRun run(ScanInputs fwd, std::optional<ScanInputs> bwd, const at::Tensor& wy, const std::vector<at::Tensor>& ws,
            bool op) {
  std::vector<at::Tensor> leaves;
  for (auto* t : tensors(fwd)) t->requires_grad_(true), leaves.push_back(*t);
  if (bwd)
    for (auto* t : tensors(*bwd)) t->requires_grad_(true), leaves.push_back(*t);
  ScanRun r;
  if (bwd) {
    const auto out = op ? cab::kernels::bi_selective_scan(fwd, *bwd, 0.5) : cab::kernels::bidirectional_scan(fwd, *bwd, 0.5);
    r.outputs = {out.y, out.final_state, out.final_state_bwd};
  } else {
    const auto out = op ? cab::kernels::selective_scan(fwd) : cab::kernels::scan(fwd, ScanBackend::kernel);
    r.outputs = {out.y, out.final_state};
  }
  at::Tensor objective = (r.outputs[0].to(wy.scalar_type()) * wy.to(r.outputs[0].device())).sum();
  for (std::size_t i = 0; i < ws.size(); ++i) objective = objective + (r.outputs[i + 1] * ws[i].to(r.outputs[i + 1].device())).sum();
  r.grads = torch::autograd::grad({objective}, leaves);
  return r;
}

/// The ops on `device` (inputs in NaN-guarded buffers) against the CPU truth, forward and every gradient.
void compare_with_cpu(const GpuCase& c, at::Device device) {
  // PERFORMANCE.md's numerics targets: max relative error (to the tensor's largest magnitude) ≤ 1e-5 in fp32 and
  // ≤ 1e-2 in bf16/fp16. The truth is the CPU in fp64 on the same (rounded) inputs, so in bf16/fp16 the error
  // is the rounding of the kernel's outputs (≤ 2^-8) plus fp32 accumulation.
  for (auto [dtype, tolerance] : {std::pair{at::kFloat, 1e-5}, std::pair{at::kBFloat16, 1e-2}, std::pair{at::kHalf, 1e-2}}) {
    if (c.bf16_only && dtype != at::kBFloat16) continue;
    SCOPED_TRACE(c10::toString(dtype));
    const ScanInputs fwd = make_inputs(c, dtype, 11);
    if (!c.layout.empty()) {
      ASSERT_EQ(cab::kernels::testing::cuda_layout(map(fwd, [](const at::Tensor& t) { return t.cuda(); })), c.layout);
    }
    std::optional<ScanInputs> bwd;
    if (c.bidirectional) {
      bwd = make_inputs(c, dtype, 12);
      bwd->z = fwd.z;  // shared by the directions, as in Vim
    }
    at::manual_seed(13);
    // The gradient of y arrives in y's dtype: round the weights the same way for the CPU.
    const at::Tensor wy = at::randn(fwd.u.sizes(), at::kDouble).to(dtype).to(at::kDouble);
    std::vector<at::Tensor> ws(c.bidirectional ? 2 : 1);
    for (auto& w : ws) w = at::randn({c.batch, c.dim, c.dstate}, at::kDouble).to(at::kFloat).to(at::kDouble);

    auto to_double = [](const at::Tensor& t) { return t.to(at::kDouble); };
    const ScanInputs cpu_fwd = map(fwd, to_double);
    std::optional<ScanInputs> cpu_bwd;
    if (bwd) cpu_bwd = map(*bwd, to_double), cpu_bwd->z = cpu_fwd.z;
    const ScanRun want = run(cpu_fwd, cpu_bwd, wy, ws, false);

    auto on_device = [&](const at::Tensor& t) { return guarded(t, device); };
    const ScanInputs dev_fwd = map(fwd, on_device);
    std::optional<ScanInputs> dev_bwd;
    if (bwd) dev_bwd = map(*bwd, on_device), dev_bwd->z = dev_fwd.z;
    const ScanRun got = run(dev_fwd, dev_bwd, wy.to(dtype), ws, true);

    const char* outputs[] = {"y", "final_state", "final_state_bwd"};
    ASSERT_EQ(got.outputs[0].scalar_type(), dtype);
    ASSERT_EQ(got.outputs[0].device().type(), device.type());
    for (std::size_t i = 0; i < want.outputs.size(); ++i)
      EXPECT_LT(max_rel_error(got.outputs[i], want.outputs[i]), tolerance) << outputs[i];
    std::vector<std::string> names = tensor_names(fwd, "");
    if (bwd) {
      auto more = tensor_names(*bwd, "_bwd");
      names.insert(names.end(), more.begin(), more.end());
    }
    std::vector<at::ScalarType> input_dtypes;
    for (const ScanInputs* in : std::vector<const ScanInputs*>{&fwd, bwd ? &*bwd : nullptr})
      if (in)
        for (auto* t : tensors(const_cast<ScanInputs&>(*in))) input_dtypes.push_back(t->scalar_type());
    ASSERT_EQ(got.grads.size(), names.size());
    for (std::size_t i = 0; i < names.size(); ++i) {
      ASSERT_TRUE(got.grads[i].defined()) << names[i];
      ASSERT_EQ(got.grads[i].sizes(), want.grads[i].sizes()) << names[i];
      EXPECT_EQ(got.grads[i].scalar_type(), input_dtypes[i]) << names[i];
      // A, D and delta_bias get sums over batch × L terms, accumulated in fp32 in another order than the CPU's:
      // their rounding grows like √terms, so in fp32 they get 1e-5 · √(terms / 1000) (≥ 1e-5).
      const bool reduced = names[i].rfind("A", 0) == 0 || names[i].rfind("D", 0) == 0 ||
                           names[i].rfind("delta_bias", 0) == 0;
      const double terms = static_cast<double>(c.batch) * c.len;
      const double tol = reduced && dtype == at::kFloat ? tolerance * std::max(1.0, std::sqrt(terms / 1000)) : tolerance;
      EXPECT_LT(max_rel_error(got.grads[i], want.grads[i]), tol) << names[i];
    }
  }
}

class GpuScanCases : public ::testing::TestWithParam<GpuCase> {};

}  // namespace

TEST_P(GpuScanCases, ForwardAndEveryGradientMatchTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  compare_with_cpu(GetParam(), at::kCUDA);
}

TEST(ScanCaseHarness, TheCpuOpsPassTheSameChecks) {
  // The comparison above, run in CI: the CPU ops (reference forward, analytic backward through the op's autograd
  // kernel; in fp32/bf16/fp16 as the GPU would be) against the fp64 CPU truth, on the small cases.
  for (const char* name : {"l1_n16_all_options", "l7_n1_no_options", "grouped_g3_l1000_n64", "bi_l1_n3",
                           "bi_vim_like_d70_l197", "n256_8_states_per_lane_g3"}) {
    const auto c = std::find_if(kGpuCases.begin(), kGpuCases.end(), [&](const GpuCase& g) { return g.name == name; });
    ASSERT_NE(c, kGpuCases.end()) << name;
    SCOPED_TRACE(name);
    compare_with_cpu(*c, at::kCPU);
  }
}

TEST_P(GpuScanCases, NothingIsWrittenOutsideTheOutputsAndEveryOutputIsWritten) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  const GpuCase c = GetParam();
  if (c.bf16_only) GTEST_SKIP() << "covered by the smaller cases";
  auto to_gpu = [](const at::Tensor& t) { return t.cuda(); };
  const ScanInputs fwd = map(make_inputs(c, at::kBFloat16, 21), to_gpu);
  const ScanInputs bwd = map(make_inputs(c, at::kBFloat16, 22), to_gpu);
  const auto violations = cab::kernels::testing::cuda_guard_violations(fwd, c.bidirectional ? &bwd : nullptr);
  for (const auto& v : violations) ADD_FAILURE() << v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuScanCases, ::testing::ValuesIn(kGpuCases),
                         [](const auto& info) { return info.param.name; });

TEST(GpuScan, MixedInputDtypesComputeInTheWidest) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  ScanInputs in = make_inputs(kGpuCases[3], at::kBFloat16, 31);
  in.B = in.B.to(at::kFloat);  // fp32 B with bf16 u: computed in fp32, y in u's dtype
  const auto want = cab::kernels::selective_scan_reference(in);
  auto to_gpu = [](const at::Tensor& t) { return t.cuda(); };
  const auto got = cab::kernels::selective_scan(map(in, to_gpu));
  EXPECT_EQ(got.y.scalar_type(), at::kBFloat16);
  EXPECT_LT(max_rel_error(got.y, want.y), 1e-2);
}

TEST(GpuScan, TimeMajorViewsAreReadInPlaceAndTheirGradientsComeBackTimeMajor) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  // The layout of a model: delta, z, B and C are transposes of [b, L, ·] projections; u is [b, D, L] contiguous.
  // The kernel reads them through their strides: the same numbers as from contiguous copies, bit for bit.
  for (const std::size_t which : {std::size_t{3}, std::size_t{15}})
  for (bool bidirectional : {false, true}) {
    SCOPED_TRACE(kGpuCases[which].name + (bidirectional ? ", bidirectional" : ", one direction"));
    const ScanInputs in = make_inputs(kGpuCases[which], at::kBFloat16, 32);
    auto time_major = [](const at::Tensor& t) { return t.transpose(-1, -2).contiguous().transpose(-1, -2); };
    std::vector<at::Tensor> grads[2];
    at::Tensor ys[2];
    for (int strided = 0; strided < 2; ++strided) {
      ScanInputs gpu = map(in, [](const at::Tensor& t) { return t.cuda(); });
      if (strided) {
        gpu.delta = time_major(gpu.delta);
        gpu.z = time_major(*gpu.z);
        gpu.B = time_major(gpu.B);
        gpu.C = time_major(gpu.C);
        ASSERT_FALSE(gpu.delta.is_contiguous());
      }
      std::vector<at::Tensor> leaves;
      for (auto* t : tensors(gpu)) t->requires_grad_(true), leaves.push_back(*t);
      const at::Tensor y = bidirectional ? cab::kernels::bi_selective_scan(gpu, gpu, 0.5).y : cab::kernels::selective_scan(gpu).y;
      at::manual_seed(5);
      const at::Tensor w = at::randn(y.sizes(), y.options());
      grads[strided] = torch::autograd::grad({(y * w).sum()}, leaves);
      ys[strided] = y;
      if (strided) {
        // u's gradient keeps u's (contiguous) layout, delta's and z's come back time-major like their inputs.
        EXPECT_TRUE(grads[1][0].is_contiguous());
        EXPECT_EQ(grads[1][1].strides(), gpu.delta.strides());
        EXPECT_EQ(grads[1][3].strides(), gpu.B.strides());
      }
    }
    EXPECT_TRUE(at::equal(ys[0], ys[1]));
    // u, delta, z (0, 1, 6): written once per element, bit for bit; A, B, C, D, bias are fp32 atomic sums over
    // blocks, whose order varies from run to run.
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
      if (i == 0 || i == 1 || i == 6) EXPECT_TRUE(at::equal(grads[0][i], grads[1][i])) << "gradient " << i;
      else EXPECT_LT(max_rel_error(grads[1][i], grads[0][i]), 1e-2) << "gradient " << i;
    }
  }
}

TEST(GpuScan, Float64OnTheGpuIsRefusedWithAReason) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  ScanInputs in = map(make_inputs(kGpuCases[0], at::kDouble, 33), [](const at::Tensor& t) { return t.cuda(); });
  try {
    cab::kernels::selective_scan(in);
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("float32, float16 or bfloat16"), std::string::npos) << e.what();
  }
  // scan() takes the chunked LibTorch form for fp64 on a GPU instead.
  EXPECT_TRUE(cab::kernels::scan(in).y.is_cuda());
}

TEST(ScanArguments, TooManyStatesAreRefusedNamingN) {
  ScanInputs in = make_inputs(kGpuCases[0], at::kFloat, 34);
  in.A = at::randn({5, 300});
  in.B = at::randn({3, 300, 1});
  in.C = at::randn({3, 300, 1});
  in.initial_state.reset();
  try {
    cab::kernels::selective_scan(in);
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("N must be in [1, 256], got 300"), std::string::npos) << e.what();
  }
}

TEST(ScanArguments, BidirectionalDirectionsMustAgree) {
  const ScanInputs f = make_inputs(kGpuCases[1], at::kFloat, 35);
  ScanInputs b = make_inputs(kGpuCases[2], at::kFloat, 36);
  try {
    cab::kernels::bidirectional_scan(f, b);
    ADD_FAILURE() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("both directions must have the same shapes"), std::string::npos) << e.what();
  }
  b = make_inputs(kGpuCases[1], at::kFloat, 36);
  b.delta_softplus = !f.delta_softplus;
  EXPECT_THROW(cab::kernels::bidirectional_scan(f, b), c10::Error);
}
