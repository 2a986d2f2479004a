// The CAB paper's bridge φ: Linear(N → hidden) → activation → Linear(hidden → d_teacher), token by token.
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ATen/ATen.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/bridge.h>

namespace {

struct MlpBridgeOptions {
  MlpBridgeOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  /// width of the student tap (N for B and C)
  TORCH_ARG(int64_t, in_features);
  /// width of the teacher tap (all heads of K or Q)
  TORCH_ARG(int64_t, out_features);
  /// hidden width (the paper uses 128)
  TORCH_ARG(int64_t, hidden) = 128;
  /// "silu" (the paper), "gelu" or "relu"
  TORCH_ARG(std::string, activation) = "silu";
  /// biases in both linear layers
  TORCH_ARG(bool, bias) = true;
};

class MlpBridge final : public cab::Bridge {
 public:
  explicit MlpBridge(MlpBridgeOptions options) : options_(std::move(options)) { reset(); }

  void reset() {
    fc1_ = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(options_.in_features(), options_.hidden())
                                                        .bias(options_.bias())));
    fc2_ = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(options_.hidden(), options_.out_features())
                                                        .bias(options_.bias())));
  }

  at::Tensor forward(const at::Tensor& x) override {
    return fc2_->forward(activate(fc1_->forward(x)));  // [..., hidden] → [..., out_features]
  }

  int64_t in_features() const override { return options_.in_features(); }
  int64_t out_features() const override { return options_.out_features(); }

  /// The group's MLPs as two batched GEMMs (baddbmm over the stacked weights) instead of 2·P small ones.
  at::Tensor forward_group(const std::vector<cab::Bridge*>& group, const at::Tensor& x) override {
    if (auto affine = affine_group(group, x)) return affine_output(*affine);
    return Bridge::forward_group(group, x);  // other types or shapes; its error names a mismatch, or forward's does
  }

  /// The hidden activations (one batched GEMM for the group's first layers) and the stacked second layers.
  std::optional<Affine> affine_group(const std::vector<cab::Bridge*>& group, const at::Tensor& x) override {
    std::vector<MlpBridge*> mlps;
    for (cab::Bridge* b : group) {
      auto* m = dynamic_cast<MlpBridge*>(b);
      if (!m || !m->same_shape(*this)) return std::nullopt;
      mlps.push_back(m);
    }
    if (x.dim() < 2 || x.size(0) != static_cast<int64_t>(mlps.size()) || x.size(-1) != options_.in_features())
      return std::nullopt;
    auto stacked = [&](auto param) {
      std::vector<at::Tensor> v;
      for (MlpBridge* m : mlps) v.push_back(param(*m));
      return at::stack(v);
    };
    auto weights = [&](torch::nn::Linear MlpBridge::*fc) {
      return stacked([fc](MlpBridge& m) { return (m.*fc)->weight; });  // [P, out, in]
    };
    auto biases = [&](torch::nn::Linear MlpBridge::*fc) {
      return options_.bias() ? stacked([fc](MlpBridge& m) { return (m.*fc)->bias; }) : at::Tensor();
    };
    const at::Tensor hidden = affine_output({x, weights(&MlpBridge::fc1_), biases(&MlpBridge::fc1_)});
    return Affine{activate(hidden), weights(&MlpBridge::fc2_), biases(&MlpBridge::fc2_)};
  }

 private:
  at::Tensor activate(const at::Tensor& h) const {
    if (options_.activation() == "silu") return at::silu(h);
    if (options_.activation() == "gelu") return at::gelu(h);
    return at::relu(h);
  }
  bool same_shape(const MlpBridge& o) const {
    return o.options_.in_features() == options_.in_features() && o.options_.out_features() == options_.out_features() &&
           o.options_.hidden() == options_.hidden() && o.options_.activation() == options_.activation() &&
           o.options_.bias() == options_.bias();
  }

  MlpBridgeOptions options_;
  torch::nn::Linear fc1_{nullptr};
  torch::nn::Linear fc2_{nullptr};
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  cab::describe_bridge_widths(s);
  s.add("hidden", Type::integer, "hidden width of the MLP").fallback(std::int64_t{128}).min(1);
  s.add("activation", Type::string, "activation between the two layers").fallback(std::string("silu")).one_of({"silu", "gelu", "relu"});
  s.add("bias", Type::boolean, "biases in both linear layers").fallback(true);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  const auto [in, out] = cab::bridge_widths(o, "mlp");
  return std::make_shared<MlpBridge>(MlpBridgeOptions(in, out)
                                         .hidden(o.integer("hidden"))
                                         .activation(o.string("activation"))
                                         .bias(o.boolean("bias")));
}

}  // namespace

CAB_PLUGIN("bridge-mlp", "1.0.0",
           CAB_FACTORY(bridge, "mlp", "Linear(N→hidden) → SiLU → Linear(hidden→d_teacher), the CAB paper's bridge",
                       describe, create))
