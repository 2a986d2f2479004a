// A linear bridge φ(x) = x·Wᵀ + b: the lightest map from a student tap into the teacher's space.
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

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
