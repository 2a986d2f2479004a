// Mamba-2's SSD op (cab::ssd_scan): the CPU op against an independent fp64 form (the quadratic "attention" form of
// SSD, differentiated by autograd), the CUDA op against the CPU op over a table of named cases (forward and every
// gradient, fp32 and bf16, inputs in NaN-guarded buffers), and the argument errors. GPU cases skip without a device.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cab/kernels/ssd.h"
#include "compare.h"

using cab::kernels::SsdInputs;
using cab::kernels::test::guarded;
using cab::kernels::test::have_gpu;
using cab::kernels::test::max_rel_error;

namespace {

struct SsdCase {
  std::string name;
  int64_t batch, len, heads, head_dim, groups, dstate;
  bool z, D, D_per_channel, bias_softplus, h0;
  bool bf16_only = false;
};

std::ostream& operator<<(std::ostream& os, const SsdCase& c) { return os << c.name; }

/// Around the kernel's layout for a scalar decay (8 states per lane, lanes = N/8 rounded up to a power of two,
/// channels per block 128/lanes, a head spanning several blocks or a block several heads, 8/16-step tiles,
/// time chunks when there are few channel tiles), L = 1 … 8193, N = 1 … 256, batch 1 … 64, grouped B/C.
const std::vector<SsdCase> kCases = {
    {"l1_all_options", 2, 1, 3, 4, 1, 16, true, true, false, true, true},
    {"l7_n1_p1_no_options", 2, 7, 5, 1, 5, 1, false, false, false, false, false},
    {"l197_h6_p7_g2_n16", 4, 197, 6, 7, 2, 16, true, true, true, true, true},
    {"l1000_h4_p16_n64", 2, 1000, 4, 16, 1, 64, true, true, false, true, false},
    {"l2048_h2_p64_n128_heads_over_blocks", 1, 2048, 2, 64, 1, 128, true, true, false, true, true, true},
    {"n256_g3_l33", 2, 33, 3, 5, 3, 256, true, true, true, true, true},
    {"n100_padded_lanes", 2, 50, 2, 9, 2, 100, false, true, false, false, true},
    {"batch64_l20_n8", 64, 20, 2, 4, 1, 8, true, true, false, true, false},
    {"chunked_l8193_h1_p8", 1, 8193, 1, 8, 1, 16, true, true, false, true, true},
    {"mamba2_like_b2_l512_h8_p64_n128", 2, 512, 8, 64, 1, 128, true, true, false, true, false, true},
};

SsdInputs make_inputs(const SsdCase& c, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  SsdInputs in;
  in.x = at::randn({c.batch, c.len, c.heads, c.head_dim}, o).to(dtype);
  // Δ ≈ 0.05–0.1 after softplus(dt + bias); without softplus a positive dt directly.
  in.dt = (at::rand({c.batch, c.len, c.heads}, o) * 0.5 + (c.bias_softplus ? -3.0 : 0.01)).to(dtype);
  in.A = (-at::rand({c.heads}, o) * 4 - 0.5).to(at::kFloat);
  in.B = at::randn({c.batch, c.len, c.groups, c.dstate}, o).to(dtype);
  in.C = at::randn({c.batch, c.len, c.groups, c.dstate}, o).to(dtype);
  if (c.D) in.D = (c.D_per_channel ? at::randn({c.heads, c.head_dim}, o) : at::randn({c.heads}, o)).to(at::kFloat);
  if (c.z) in.z = at::randn({c.batch, c.len, c.heads, c.head_dim}, o).to(dtype);
  if (c.bias_softplus) in.dt_bias = (at::rand({c.heads}, o) * 0.2).to(at::kFloat);
  in.dt_softplus = c.bias_softplus;
  if (c.h0) in.initial_state = at::randn({c.batch, c.heads, c.head_dim, c.dstate}, o).to(at::kFloat);
  return in;
}

std::vector<at::Tensor*> tensors(SsdInputs& in) {
  std::vector<at::Tensor*> out = {&in.x, &in.dt, &in.A, &in.B, &in.C};
  for (auto* t : {&in.D, &in.z, &in.dt_bias, &in.initial_state})
    if (*t) out.push_back(&**t);
  return out;
}
std::vector<std::string> names(const SsdInputs& in) {
  std::vector<std::string> out = {"x", "dt", "A", "B", "C"};
  if (in.D) out.push_back("D");
  if (in.z) out.push_back("z");
  if (in.dt_bias) out.push_back("dt_bias");
  if (in.initial_state) out.push_back("initial_state");
  return out;
}
SsdInputs map(SsdInputs in, const std::function<at::Tensor(const at::Tensor&)>& f) {
  for (auto* t : tensors(in)) *t = f(*t);
  return in;
}

/// SSD's quadratic form, written independently of the scan: per head, with S_t = Σ_{k≤t} Δ_k A_h,
///   y_t = Σ_{s≤t} (C_t·B_s) exp(S_t − S_s) Δ_s x_s + exp(S_t) C_t·h0 + D x_t,   y ⊙= silu(z)
///   final = exp(S_L) h0 + Σ_s exp(S_L − S_s) Δ_s x_s B_sᵀ
std::vector<at::Tensor> quadratic_form(const SsdInputs& in) {
  const int64_t L = in.x.size(1), H = in.x.size(2), G = in.B.size(2);
  at::Tensor dt = in.dt;
  if (in.dt_bias) dt = dt + in.dt_bias->view({1, 1, H});
  if (in.dt_softplus) dt = at::softplus(dt);
  const at::Tensor S = at::cumsum(dt * in.A.view({1, 1, H}), 1);                          // [b, L, H]
  const at::Tensor Bh = in.B.repeat_interleave(H / G, 2), Ch = in.C.repeat_interleave(H / G, 2);  // [b, L, H, N]
  const at::Tensor St = S.transpose(1, 2);                                                 // [b, H, L]
  const at::Tensor causal = at::ones({L, L}, at::kBool).tril();
  const at::Tensor decay = at::exp((St.unsqueeze(-1) - St.unsqueeze(-2)).masked_fill(causal.logical_not(), -INFINITY));
  const at::Tensor M = at::einsum("bthn,bshn->bhts", {Ch, Bh}) * decay * dt.transpose(1, 2).unsqueeze(-2);
  at::Tensor y = at::einsum("bhts,bshp->bthp", {M, in.x});
  const at::Tensor h0 = in.initial_state ? *in.initial_state : at::zeros({in.x.size(0), H, in.x.size(3), in.B.size(3)}, in.x.options());
  y = y + at::einsum("bthn,bhpn->bthp", {Ch * at::exp(S).unsqueeze(-1), h0});
  if (in.D) y = y + in.x * (in.D->dim() == 1 ? in.D->view({1, 1, H, 1}) : in.D->unsqueeze(0).unsqueeze(0));
  if (in.z) y = y * at::silu(*in.z);
  const at::Tensor S_last = S.select(1, L - 1);                                            // [b, H]
  const at::Tensor w = at::exp(S_last.unsqueeze(1) - S) * dt;                              // [b, L, H]
  const at::Tensor final_state =
      at::exp(S_last).unsqueeze(-1).unsqueeze(-1) * h0 + at::einsum("bshn,bshp->bhpn", {Bh * w.unsqueeze(-1), in.x});
  return {y, final_state};
}

struct SsdRun {
  std::vector<at::Tensor> outputs, grads;
};

/// y and final state, and the gradients of Σ y·wy + Σ final·ws with respect to every input.
SsdRun run(SsdInputs in, const at::Tensor& wy, const at::Tensor& ws, bool quadratic) {
  std::vector<at::Tensor> leaves;
  for (auto* t : tensors(in)) t->requires_grad_(true), leaves.push_back(*t);
  SsdRun r;
  if (quadratic) {
    r.outputs = quadratic_form(in);
  } else {
    const auto out = cab::kernels::ssd_scan(in);
    r.outputs = {out.y, out.final_state};
  }
  const at::Tensor objective = (r.outputs[0].to(wy.scalar_type()) * wy.to(r.outputs[0].device())).sum() +
                               (r.outputs[1] * ws.to(r.outputs[1].device())).sum();
  r.grads = torch::autograd::grad({objective}, leaves);
  return r;
}

void expect_close(const SsdRun& got, const SsdRun& want, const SsdInputs& in, double tolerance, int64_t terms) {
  const char* outputs[] = {"y", "final_state"};
  for (int i = 0; i < 2; ++i) EXPECT_LT(max_rel_error(got.outputs[i], want.outputs[i]), tolerance) << outputs[i];
  const auto n = names(in);
  ASSERT_EQ(got.grads.size(), n.size());
  for (std::size_t i = 0; i < n.size(); ++i) {
    ASSERT_EQ(got.grads[i].sizes(), want.grads[i].sizes()) << n[i];
    // A, D and dt_bias are sums over batch × L × P (× N) terms in fp32: rounding grows like √terms.
    const bool reduced = n[i] == "A" || n[i] == "D" || n[i] == "dt_bias";
    const double tol = reduced && tolerance < 1e-3 ? tolerance * std::max(1.0, std::sqrt(terms / 1000.0)) : tolerance;
    EXPECT_LT(max_rel_error(got.grads[i], want.grads[i]), tol) << n[i];
  }
}

class SsdCases : public ::testing::TestWithParam<SsdCase> {};

}  // namespace

TEST(SsdCpu, MatchesTheQuadraticFormForwardAndEveryGradient) {
  for (const char* name : {"l1_all_options", "l7_n1_p1_no_options", "l197_h6_p7_g2_n16", "n256_g3_l33",
                           "n100_padded_lanes"}) {
    SCOPED_TRACE(name);
    const SsdCase& c = *std::find_if(kCases.begin(), kCases.end(), [&](const SsdCase& k) { return k.name == name; });
    const SsdInputs in = map(make_inputs(c, at::kDouble, 7), [](const at::Tensor& t) { return t.to(at::kDouble); });
    at::manual_seed(8);
    const at::Tensor wy = at::randn(in.x.sizes(), at::kDouble);
    const at::Tensor ws = at::randn({c.batch, c.heads, c.head_dim, c.dstate}, at::kDouble);
    const SsdRun want = run(in, wy, ws, true);
    const SsdRun got = run(in, wy, ws, false);
    EXPECT_EQ(got.outputs[0].sizes(), in.x.sizes());
    expect_close(got, want, in, 1e-10, 0);
  }
}

TEST_P(SsdCases, CudaMatchesTheCpuForwardAndEveryGradient) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  const SsdCase& c = GetParam();
  // PERFORMANCE.md's numerics targets against the fp64 CPU op on the same rounded inputs: ≤ 1e-5 relative to the
  // tensor's largest magnitude in fp32, ≤ 1e-2 in bf16 (and fp16, which the chunked form computes in bf16).
  // fp32 takes the recurrent kernels, 16-bit inputs the chunked form on tensor cores.
  for (auto [dtype, tolerance] :
       {std::pair{at::kFloat, 1e-5}, std::pair{at::kBFloat16, 1e-2}, std::pair{at::kHalf, 1e-2}}) {
    if (c.bf16_only && dtype != at::kBFloat16) continue;
    SCOPED_TRACE(c10::toString(dtype));
    const SsdInputs in = make_inputs(c, dtype, 21);
    EXPECT_EQ(cab::kernels::testing::ssd_cuda_path(map(in, [](const at::Tensor& t) { return t.cuda(); })),
              dtype == at::kFloat ? "recurrent" : "chunked");
    at::manual_seed(22);
    const at::Tensor wy = at::randn(in.x.sizes(), at::kDouble).to(dtype).to(at::kDouble);
    const at::Tensor ws = at::randn({c.batch, c.heads, c.head_dim, c.dstate}, at::kDouble).to(at::kFloat).to(at::kDouble);
    const SsdRun want = run(map(in, [](const at::Tensor& t) { return t.to(at::kDouble); }), wy, ws, false);
    const SsdRun got = run(map(in, [](const at::Tensor& t) { return guarded(t, at::kCUDA); }), wy.to(dtype), ws, false);
    ASSERT_EQ(got.outputs[0].scalar_type(), dtype);
    ASSERT_TRUE(got.outputs[0].is_cuda());
    expect_close(got, want, in, tolerance, c.batch * c.len * c.head_dim);
    for (std::size_t i = 0; i < got.grads.size(); ++i)
      EXPECT_EQ(got.grads[i].scalar_type(), tensors(const_cast<SsdInputs&>(in))[i]->scalar_type()) << names(in)[i];
  }
}

TEST(SsdPath, MixedDtypesTakeTheRecurrentKernelsAndStillMatch) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  // bf16 activations with an fp32 dt: the chunked form wants one 16-bit dtype, so the recurrent kernels compute in
  // the widest (fp32) and must agree with the CPU op.
  SsdInputs in = make_inputs(kCases[2], at::kBFloat16, 5);
  in.dt = in.dt.to(at::kFloat);
  const SsdInputs gpu = map(in, [](const at::Tensor& t) { return t.cuda(); });
  EXPECT_EQ(cab::kernels::testing::ssd_cuda_path(gpu), "recurrent");
  const auto want = cab::kernels::ssd_scan(map(in, [](const at::Tensor& t) { return t.to(at::kDouble); }));
  EXPECT_LT(max_rel_error(cab::kernels::ssd_scan(gpu).y, want.y), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SsdCases, ::testing::ValuesIn(kCases), [](const auto& info) { return info.param.name; });

TEST(SsdArguments, BadShapesAreRefusedNamingTheArgument) {
  const SsdInputs good = make_inputs(kCases[2], at::kFloat, 3);  // x [4, 197, 6, 7], B [4, 197, 2, 16]
  auto expect_error = [](const SsdInputs& in, const std::string& text) {
    try {
      cab::kernels::ssd_scan(in);
      ADD_FAILURE() << "expected an error containing " << text;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  SsdInputs in = good;
  in.dt = in.dt.narrow(2, 0, 5);
  expect_error(in, "dt must be [batch=4, L=197, H=6], got [4, 197, 5]");
  in = good;
  in.A = at::randn({6, 16});
  expect_error(in, "A must be [H=6] (one decay per head), got [6, 16]");
  in = good;
  in.B = at::randn({4, 197, 4, 16});
  in.C = in.B;
  expect_error(in, "B must be [batch=4, L=197, G, N] with G dividing H=6, got [4, 197, 4, 16]");
  in = good;
  in.B = at::randn({4, 197, 2, 300});
  in.C = in.B;
  expect_error(in, "N must be in [1, 256], got 300");
  in = good;
  in.D = at::randn({7});
  expect_error(in, "D must be [H=6] or [H, P=7], got [7]");
  in = good;
  in.initial_state = at::randn({4, 6, 7, 8});
  expect_error(in, "initial_state must be [batch=4, H=6, P=7, N=16], got [4, 6, 7, 8]");
  in = good;
  in.x = in.x.flatten(2);
  expect_error(in, "x must be [batch, L, H, P], got [4, 197, 42]");
}

TEST(SsdViews, SlicesOfOneProjectionMatchContiguousInputs) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  // Mamba-2 splits one in_proj output [b, L, 2·H·P + 2·G·N + H] into z, x, B, C, dt: the kernels read the slices
  // through their strides (time stride = the projection's width) and must agree with contiguous copies.
  const int64_t b = 2, L = 300, H = 8, P = 32, G = 2, N = 64;  // rows of 776 elements: 16-byte aligned, as in Mamba-2
  at::manual_seed(31);
  const auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor proj = at::randn({b, L, 2 * H * P + 2 * G * N + H}, o);
  SsdInputs views;
  views.z = proj.narrow(2, 0, H * P).view({b, L, H, P});
  views.x = proj.narrow(2, H * P, H * P).view({b, L, H, P});
  views.B = proj.narrow(2, 2 * H * P, G * N).view({b, L, G, N});
  views.C = proj.narrow(2, 2 * H * P + G * N, G * N).view({b, L, G, N});
  views.dt = proj.narrow(2, 2 * H * P + 2 * G * N, H) * 0.5 - 3.0;
  views.A = -at::rand({H}, o.dtype(at::kFloat)) * 4 - 0.5;
  views.D = at::randn({H}, o.dtype(at::kFloat));
  views.dt_bias = at::rand({H}, o.dtype(at::kFloat)) * 0.2;
  views.dt_softplus = true;
  ASSERT_FALSE(views.x.is_contiguous());
  EXPECT_EQ(cab::kernels::testing::ssd_cuda_path(views), "chunked");
  const SsdInputs copies = map(views, [](const at::Tensor& t) { return t.contiguous(); });
  const at::Tensor wy = at::randn({b, L, H, P}, at::kDouble).to(at::kBFloat16).to(at::kDouble);
  const at::Tensor ws = at::randn({b, H, P, N}, at::kDouble);
  const SsdRun got = run(views, wy.to(at::kBFloat16), ws, false);
  const SsdRun want = run(copies, wy.to(at::kBFloat16), ws, false);
  for (int i = 0; i < 2; ++i) EXPECT_LT(max_rel_error(got.outputs[i], want.outputs[i]), 1e-6) << i;
  for (std::size_t i = 0; i < got.grads.size(); ++i) EXPECT_LT(max_rel_error(got.grads[i], want.grads[i]), 1e-2) << names(views)[i];
}

TEST(SsdGuards, ChunkedKernelsWriteEveryOutputAndNothingOutside) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or a build without CUDA)";
  // Every output and work buffer of the chunked forward and backward inside NaN-filled allocations with guard
  // elements on both sides: padded P and N (7, 9, 100), partial last chunks, 1 to 129 chunks, groups, h0.
  for (const char* name : {"l1_all_options", "l197_h6_p7_g2_n16", "n100_padded_lanes", "chunked_l8193_h1_p8",
                           "mamba2_like_b2_l512_h8_p64_n128"}) {
    SCOPED_TRACE(name);
    const SsdCase& c = *std::find_if(kCases.begin(), kCases.end(), [&](const SsdCase& k) { return k.name == name; });
    const SsdInputs in = map(make_inputs(c, at::kBFloat16, 9), [](const at::Tensor& t) { return t.cuda(); });
    std::string problems;
    for (const std::string& v : cab::kernels::testing::ssd_cuda_guard_violations(in)) problems += v + "; ";
    EXPECT_TRUE(problems.empty()) << problems;
  }
}
