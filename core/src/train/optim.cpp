// Multi-tensor AdamW step and gradient clipping (see cab/train/optim.h).
#include "cab/train/optim.h"

#include <algorithm>
#include <optional>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace cab::train {

namespace {

/// Tensors of one device and dtype, in the argument order of the multi-tensor kernels.
struct Bucket {
  c10::Device device;
  at::ScalarType dtype;
  std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
};

Bucket& bucket_for(std::vector<Bucket>& buckets, const at::Tensor& t) {
  for (Bucket& b : buckets)
    if (b.device == t.device() && b.dtype == t.scalar_type()) return b;
  return buckets.emplace_back(Bucket{t.device(), t.scalar_type(), {}, {}, {}, {}, {}});
}

}  // namespace

void FusedAdamW::step(torch::optim::AdamW& optimizer, const at::Tensor& skip) {
  for (const auto& group : optimizer.param_groups())
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) {
      TORCH_CHECK(!skip.defined(), "FusedAdamW: a skip flag with amsgrad (the plain step, which has none)");
      optimizer.step();  // the fused kernel's amsgrad needs max_exp_avg_sq buffers we do not keep: the plain step
      return;
    }
  const at::NoGradGuard no_grad;
  auto& state = optimizer.state();
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::vector<Bucket> buckets;
    for (const at::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;  // as torch::optim::AdamW: no gradient, no step
      void* key = p.unsafeGetTensorImpl();
      auto it = state.find(key);
      if (it == state.end()) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state.emplace(key, std::move(fresh)).first;
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
      Count& count = counts_[key];
      // A count made here, or changed elsewhere (a checkpoint loaded, a plain step taken): copy it to the device.
      if (!count.device.defined() || count.host != s.step() || count.device.device() != p.device())
        count.device = at::full({}, static_cast<double>(s.step()), at::TensorOptions(p.device()).dtype(at::kFloat));
      s.step(s.step() + 1);
      count.host = s.step();
      Bucket& b = bucket_for(buckets, p);
      b.params.push_back(p);
      b.grads.push_back(p.grad());
      b.exp_avgs.push_back(s.exp_avg());
      b.exp_avg_sqs.push_back(s.exp_avg_sq());
      b.steps.push_back(count.device);
    }
    const auto [beta1, beta2] = o.betas();
    for (Bucket& b : buckets) {
      at::_foreach_add_(b.steps, 1.0);  // the kernel reads the count after this step, as AdamW's bias correction
      at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, {}, b.steps, o.lr(), beta1, beta2,
                        o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/{},
                        skip.defined() ? std::optional<at::Tensor>(skip.to(b.device, at::kFloat).reshape({})) : std::nullopt);
    }
  }
}

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  const at::NoGradGuard no_grad;
  std::vector<Bucket> buckets;
  for (const at::Tensor& p : params)
    if (p.grad().defined()) bucket_for(buckets, p.grad()).grads.push_back(p.grad());
  if (buckets.empty()) return at::zeros({}, at::TensorOptions(params.empty() ? c10::Device(c10::kCPU) : params.front().device()).dtype(at::kFloat));
  // Per-tensor norms in fp32, one multi-tensor launch per device and dtype; then the joint norm on the first
  // gradient's device.
  std::vector<at::Tensor> norms;
  const c10::Device where = buckets.front().device;
  for (const Bucket& b : buckets)
    for (const at::Tensor& n : at::_foreach_norm(b.grads, 2, at::kFloat)) norms.push_back(n.to(where));
  const at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
  const at::Tensor coefficient = at::clamp_max((total + 1e-6).reciprocal() * max_norm, 1.0);
  for (Bucket& b : buckets) at::_foreach_mul_(b.grads, coefficient.to(b.device));
  return total;
}

}  // namespace cab::train
