// A linear bridge φ(x) = x·Wᵀ + b: the lightest map from a student tap into the teacher's space.
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/bridge.h>

namespace {

class LinearBridge final : public cab::Bridge {
 public:
  LinearBridge(int64_t in_features, int64_t out_features, bool bias)
      : linear_(register_module("linear", torch::nn::Linear(torch::nn::LinearOptions(in_features, out_features).bias(bias)))) {}

  at::Tensor forward(const at::Tensor& x) override { return linear_->forward(x); }  // [..., out_features]
  int64_t in_features() const override { return linear_->options.in_features(); }
  int64_t out_features() const override { return linear_->options.out_features(); }

  /// The group as one batched GEMM.
  at::Tensor forward_group(const std::vector<cab::Bridge*>& group, const at::Tensor& x) override {
    if (auto affine = affine_group(group, x)) return affine_output(*affine);
    return Bridge::forward_group(group, x);
  }
  /// The input itself and the stacked weights (a group of linear bridges of one shape).
  std::optional<Affine> affine_group(const std::vector<cab::Bridge*>& group, const at::Tensor& x) override {
    std::vector<at::Tensor> weights, biases;
    for (cab::Bridge* b : group) {
      auto* l = dynamic_cast<LinearBridge*>(b);
      if (!l || l->in_features() != in_features() || l->out_features() != out_features() ||
          l->linear_->bias.defined() != linear_->bias.defined())
        return std::nullopt;
      weights.push_back(l->linear_->weight);
      if (l->linear_->bias.defined()) biases.push_back(l->linear_->bias);
    }
    if (x.dim() < 2 || x.size(0) != static_cast<int64_t>(group.size()) || x.size(-1) != in_features()) return std::nullopt;
    return Affine{x, at::stack(weights), biases.empty() ? at::Tensor() : at::stack(biases)};
  }

 private:
  torch::nn::Linear linear_;
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  cab::describe_bridge_widths(s);
  s.add("bias", Type::boolean, "learn a bias").fallback(true);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  const auto [in, out] = cab::bridge_widths(o, "linear");
  return std::make_shared<LinearBridge>(in, out, o.boolean("bias"));
}

}  // namespace

CAB_PLUGIN("bridge-linear", "1.0.0", CAB_FACTORY(bridge, "linear", "one linear layer N→d_teacher", describe, create))
