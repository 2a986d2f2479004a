// The multi-tensor AdamW step and gradient clipping against LibTorch's own (torch::optim::AdamW,
// torch::nn::utils::clip_grad_norm_), on the CPU and, when there is one, on a CUDA device.
#include <gtest/gtest.h>

#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <ATen/ATen.h>

#include "cab/train/optim.h"

namespace {

using cab::train::FusedAdamW;

/// Parameters of assorted shapes (a matrix, a vector, a 4-d tensor, a scalar) and one that gets no gradient.
std::vector<at::Tensor> make_params(const at::Device& device) {
  at::manual_seed(3);
  std::vector<at::Tensor> ps;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{7, 5}, {13}, {2, 3, 4, 5}, {}, {6}})
    ps.push_back(at::randn(shape, at::TensorOptions(device)).requires_grad_(true));
  return ps;
}

/// Gradients for step k, the same whatever the copy of the parameters (the last parameter gets none).
void set_grads(const std::vector<at::Tensor>& ps, int k) {
  for (std::size_t i = 0; i + 1 < ps.size(); ++i) {
    const at::Tensor g = at::sin(at::arange(ps[i].numel(), at::kFloat) * (0.37 + 0.11 * k) + static_cast<double>(i));
    ps[i].mutable_grad() = (g * (1.0 + k) * 3.0).reshape(ps[i].sizes()).to(ps[i].device());
  }
  ps.back().mutable_grad() = at::Tensor();
}

/// AdamW with two groups, as the trainer builds it: weight decay on the first three parameters, none on the rest.
torch::optim::AdamW make_optimizer(const std::vector<at::Tensor>& ps) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>(ps.begin(), ps.begin() + 3),
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).weight_decay(0.05).betas({0.9, 0.95})));
  groups.emplace_back(std::vector<at::Tensor>(ps.begin() + 3, ps.end()),
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).weight_decay(0.0)));
  return torch::optim::AdamW(groups, torch::optim::AdamWOptions(1e-2));
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

std::vector<at::Device> devices() {
  std::vector<at::Device> d{at::kCPU};
  if (torch::cuda::is_available()) d.emplace_back(at::kCUDA, 0);
  return d;
}

TEST(FusedAdamW, MatchesTorchAdamWOverStepsWithLearningRateChanges) {
  for (const at::Device& device : devices()) {
    SCOPED_TRACE(device.str());
    const auto ref = make_params(device), fused = make_params(device);
    auto ref_opt = make_optimizer(ref), fused_opt = make_optimizer(fused);
    FusedAdamW step;
    for (int k = 0; k < 6; ++k) {
      const double lr = 1e-2 * (1.0 - 0.15 * k);  // a schedule, set on every group before the step as the trainer does
      for (auto* opt : {&ref_opt, &fused_opt})
        for (auto& g : opt->param_groups()) g.options().set_lr(lr);
      set_grads(ref, k);
      set_grads(fused, k);
      ref_opt.step();
      step.step(fused_opt);
    }
    for (std::size_t i = 0; i < ref.size(); ++i) {
      EXPECT_LE(max_rel(fused[i].detach(), ref[i].detach()), 1e-6) << "parameter " << i;
      // The steps moved every parameter with a gradient, and left the one without untouched.
      const at::Tensor start = make_params(device)[i];
      if (i + 1 < ref.size()) EXPECT_GT((fused[i].detach() - start).abs().max().item<double>(), 1e-3) << "parameter " << i;
      else EXPECT_TRUE(at::equal(fused[i].detach(), start));
    }
    // The state is the optimizer's own: same step counts and moments as LibTorch's.
    for (std::size_t i = 0; i + 1 < ref.size(); ++i) {
      const auto& r = static_cast<torch::optim::AdamWParamState&>(*ref_opt.state().at(ref[i].unsafeGetTensorImpl()));
      const auto& f = static_cast<torch::optim::AdamWParamState&>(*fused_opt.state().at(fused[i].unsafeGetTensorImpl()));
      EXPECT_EQ(f.step(), 6);
      EXPECT_EQ(f.step(), r.step());
      // The weights agree to 1e-6; CUDA's fused kernel rounds the second moment its own way (1.3e-5 relative to
      // the largest entry, measured on an H100; 1e-6 on the CPU).
      EXPECT_LE(max_rel(f.exp_avg(), r.exp_avg()), 1e-6);
      EXPECT_LE(max_rel(f.exp_avg_sq(), r.exp_avg_sq()), device.is_cuda() ? 1e-4 : 1e-6);
    }
    EXPECT_EQ(fused_opt.state().count(fused.back().unsafeGetTensorImpl()), 0u);
  }
}

TEST(FusedAdamW, ResumesFromASavedOptimizerAndMixesWithPlainSteps) {
  for (const at::Device& device : devices()) {
    SCOPED_TRACE(device.str());
    // Reference: 5 plain steps in one go.
    const auto ref = make_params(device);
    auto ref_opt = make_optimizer(ref);
    for (int k = 0; k < 5; ++k) {
      set_grads(ref, k);
      ref_opt.step();
    }
    // Fused: 2 steps, save the optimizer, load it into a new one over copies of the weights, 1 plain step (the
    // counts move behind the fused stepper's back), then 2 fused steps with the same stepper.
    const auto first = make_params(device);
    auto first_opt = make_optimizer(first);
    FusedAdamW step;
    for (int k = 0; k < 2; ++k) {
      set_grads(first, k);
      step.step(first_opt);
    }
    torch::serialize::OutputArchive out;
    first_opt.save(out);
    std::ostringstream bytes;
    out.save_to(bytes);
    std::vector<at::Tensor> resumed;
    for (const auto& p : first) resumed.push_back(p.detach().clone().requires_grad_(true));
    auto resumed_opt = make_optimizer(resumed);
    torch::serialize::InputArchive in;
    std::istringstream read(bytes.str());
    in.load_from(read, device);
    resumed_opt.load(in);
    set_grads(resumed, 2);
    resumed_opt.step();
    for (int k = 3; k < 5; ++k) {
      set_grads(resumed, k);
      step.step(resumed_opt);
    }
    for (std::size_t i = 0; i < ref.size(); ++i)
      EXPECT_LE(max_rel(resumed[i].detach(), ref[i].detach()), 1e-6) << "parameter " << i;
  }
}

// The skip flag (the trainer's non-finite loss): 1 leaves weights and moments exactly as they were, 0 is the plain
// fused step.
TEST(FusedAdamW, SkipFlagLeavesWeightsAndMomentsAsTheyWere) {
  for (const at::Device& device : devices()) {
    SCOPED_TRACE(device.str());
    const auto ref = make_params(device), ours = make_params(device);
    auto ref_opt = make_optimizer(ref), our_opt = make_optimizer(ours);
    FusedAdamW ref_step, our_step;
    for (int k = 0; k < 2; ++k) {
      set_grads(ref, k);
      set_grads(ours, k);
      ref_step.step(ref_opt);
      our_step.step(our_opt, at::zeros({}, at::TensorOptions(device)));
    }
    std::vector<at::Tensor> weights, moments;
    for (std::size_t i = 0; i + 1 < ours.size(); ++i) {
      EXPECT_TRUE(at::equal(ours[i].detach(), ref[i].detach())) << "parameter " << i;
      weights.push_back(ours[i].detach().clone());
      moments.push_back(static_cast<torch::optim::AdamWParamState&>(*our_opt.state().at(ours[i].unsafeGetTensorImpl())).exp_avg().clone());
    }
    set_grads(ours, 2);
    our_step.step(our_opt, at::ones({1}, at::TensorOptions(device)));
    for (std::size_t i = 0; i + 1 < ours.size(); ++i) {
      const auto& st = static_cast<torch::optim::AdamWParamState&>(*our_opt.state().at(ours[i].unsafeGetTensorImpl()));
      EXPECT_TRUE(at::equal(ours[i].detach(), weights[i])) << "parameter " << i;
      EXPECT_TRUE(at::equal(st.exp_avg(), moments[i])) << "parameter " << i;
      EXPECT_EQ(st.step(), 3);  // the count advances (the trainer stops at such a step)
    }
  }
}

TEST(ClipGradNorm, MatchesTorchClipGradNorm) {
  for (const at::Device& device : devices()) {
    SCOPED_TRACE(device.str());
    for (const double max_norm : {0.5, 1e6}) {  // clipped, and far below the limit (left as is)
      const auto ref = make_params(device), ours = make_params(device);
      set_grads(ref, 1);
      set_grads(ours, 1);
      const double expected = torch::nn::utils::clip_grad_norm_(ref, max_norm);
      const at::Tensor norm = cab::train::clip_grad_norm(ours, max_norm);
      EXPECT_EQ(norm.device(), device);  // left on the device: no wait for it
      const double got = norm.item<double>();
      EXPECT_NEAR(got, expected, 1e-6 * expected);
      EXPECT_GT(got, 1.0);
      for (std::size_t i = 0; i + 1 < ref.size(); ++i) EXPECT_LE(max_rel(ours[i].grad(), ref[i].grad()), 1e-6);
      EXPECT_FALSE(ours.back().grad().defined());
      // Clipped: the joint norm is now max_norm.
      std::vector<at::Tensor> gs;
      for (std::size_t i = 0; i + 1 < ours.size(); ++i) gs.push_back(ours[i].grad().flatten());
      const double after = at::cat(gs).norm().item<double>();
      EXPECT_NEAR(after, std::min(max_norm, got), 1e-5 * std::min(max_norm, got));
    }
    EXPECT_EQ(cab::train::clip_grad_norm({at::zeros({3}, at::TensorOptions(device)).requires_grad_(true)}, 1.0).item<double>(), 0.0);
  }
}

}  // namespace
