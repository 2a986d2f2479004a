// The shipped bridge plugins, loaded from the build's plugin directory exactly as cab-sweep loads them.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/config/section.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"

using cab::plugin::Kind;

namespace {

class BridgesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto problems = registry_.discover({CAB_TEST_PLUGIN_DIR});
    ASSERT_TRUE(problems.empty()) << problems.front();
  }
  std::shared_ptr<cab::Bridge> make(const std::string& name, int64_t in, int64_t out,
                                     cab::config::Section options = {}) {
    options.set("in_features", in).set("out_features", out);
    return registry_.create_as<cab::Bridge>(Kind::bridge, name, options);
  }
  cab::plugin::Registry registry_;
};

}  // namespace

TEST_F(BridgesTest, MlpIsLinearSiluLinearWithThePapersWidth) {
  at::manual_seed(0);
  auto bridge = make("mlp", 16, 192);
  EXPECT_EQ(bridge->in_features(), 16);
  EXPECT_EQ(bridge->out_features(), 192);
  auto params = bridge->named_parameters();
  ASSERT_EQ(params.size(), 4u);
  const at::Tensor w1 = params["fc1.weight"], b1 = params["fc1.bias"], w2 = params["fc2.weight"], b2 = params["fc2.bias"];
  EXPECT_EQ(w1.sizes(), (at::IntArrayRef{128, 16}));
  EXPECT_EQ(w2.sizes(), (at::IntArrayRef{192, 128}));

  const at::Tensor x = at::randn({2, 197, 16});  // [batch, L, N]
  const at::Tensor y = bridge->forward(x);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 197, 192}));
  const at::Tensor h = at::matmul(x, w1.t()) + b1;
  const at::Tensor expected = at::matmul(h * at::sigmoid(h), w2.t()) + b2;
  EXPECT_LT((y - expected).abs().max().item<double>(), 1e-5);
}

TEST_F(BridgesTest, MlpOptionsAreHonouredAndGradientsFlow) {
  cab::config::Section options;
  options.set("hidden", std::int64_t{32}).set("activation", std::string("relu")).set("bias", false);
  auto bridge = make("mlp", 8, 24, options);
  auto params = bridge->named_parameters();
  ASSERT_EQ(params.size(), 2u);  // no biases
  EXPECT_EQ(params["fc1.weight"].sizes(), (at::IntArrayRef{32, 8}));
  const at::Tensor x = at::randn({5, 8});
  const at::Tensor expected = at::matmul(at::relu(at::matmul(x, params["fc1.weight"].t())), params["fc2.weight"].t());
  const at::Tensor y = bridge->forward(x);
  EXPECT_LT((y - expected).abs().max().item<double>(), 1e-5);
  y.square().mean().backward();
  EXPECT_GT(params["fc1.weight"].grad().abs().sum().item<double>(), 0.0);
}

// A group of MLP bridges (an alignment's bridges of one term) runs as two batched GEMMs: the same outputs and
// the same parameter gradients as each bridge on its own slice. A group that mixes bridge types or widths takes
// the default path (each bridge's forward), with the same results.
TEST_F(BridgesTest, MlpGroupIsBatchedAndMatchesEachBridgeAlone) {
  at::manual_seed(3);
  cab::config::Section small;
  small.set("hidden", std::int64_t{24});
  std::vector<std::shared_ptr<cab::Bridge>> owned = {make("mlp", 6, 20, small), make("mlp", 6, 20, small),
                                                     make("mlp", 6, 20, small)};
  auto run = [&](const std::vector<std::shared_ptr<cab::Bridge>>& bridges, bool grouped) {
    std::vector<cab::Bridge*> group;
    for (auto& b : bridges) group.push_back(b.get()), b->zero_grad();
    at::manual_seed(4);
    const at::Tensor x = at::randn({static_cast<int64_t>(bridges.size()), 2, 7, 6});
    at::Tensor y;
    if (grouped) {
      y = group.front()->forward_group(group, x);
    } else {
      std::vector<at::Tensor> ys;
      for (std::size_t p = 0; p < group.size(); ++p) ys.push_back(group[p]->forward(x[static_cast<int64_t>(p)]));
      y = at::stack(ys);
    }
    y.square().sum().backward();
    std::vector<at::Tensor> grads;
    for (auto& b : bridges)
      for (const auto& p : b->parameters()) grads.push_back(p.grad().clone());
    return std::pair{y.detach(), grads};
  };
  const std::vector<std::shared_ptr<cab::Bridge>> linears = {make("linear", 6, 20), make("linear", 6, 20)},
                                                 mixed = {owned[0], make("linear", 6, 20), owned[2]};
  for (const auto& bridges : {owned, linears, mixed}) {
    const auto [want, want_grads] = run(bridges, false);
    const auto [got, got_grads] = run(bridges, true);
    EXPECT_EQ(got.sizes(), (at::IntArrayRef{static_cast<int64_t>(bridges.size()), 2, 7, 20}));
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
    ASSERT_EQ(got_grads.size(), want_grads.size());
    for (std::size_t i = 0; i < got_grads.size(); ++i)
      EXPECT_LT((got_grads[i] - want_grads[i]).abs().max().item<double>(), 1e-4 * (1 + want_grads[i].abs().max().item<double>()))
          << "gradient " << i;
  }
  // Uniform groups are affine maps of features (hidden activations for MLPs, the input for linear bridges) that
  // give the same outputs; a mixed group is not.
  const at::Tensor x = at::randn({2, 5, 6});
  using Bridges = std::vector<std::shared_ptr<cab::Bridge>>;
  for (const Bridges* bridges : std::initializer_list<const Bridges*>{&owned, &linears, &mixed}) {
    std::vector<cab::Bridge*> group;
    for (std::size_t p = 0; p < 2; ++p) group.push_back((*bridges)[p].get());
    const auto affine = group.front()->affine_group(group, x);
    ASSERT_EQ(affine.has_value(), bridges != &mixed);
    if (!affine) continue;
    EXPECT_EQ(affine->features.size(-1), bridges == &owned ? 24 : 6);
    EXPECT_EQ(affine->weight.sizes(), (at::IntArrayRef{2, 20, affine->features.size(-1)}));
    EXPECT_LT((cab::Bridge::affine_output(*affine) - group.front()->forward_group(group, x)).abs().max().item<double>(), 1e-5);
    EXPECT_LT((cab::Bridge::affine_output(*affine)[1] - group[1]->forward(x[1])).abs().max().item<double>(), 1e-5);
  }
  // Batched means one GEMM per linear layer for all three: the bridges still differ (their own weights).
  EXPECT_GT((run(owned, true).first[0] - run(owned, true).first[1]).abs().max().item<double>(), 1e-3);
  std::vector<cab::Bridge*> two = {owned[0].get(), owned[1].get()};
  EXPECT_THROW(owned[0]->forward_group(two, at::randn({3, 7, 6})), cab::Error);
}

TEST_F(BridgesTest, MlpRejectsBadOptionsWithTheKeyNamed) {
  cab::config::Section options;
  options.set("activation", std::string("tanh"));
  try {
    make("mlp", 8, 24, options);
    ADD_FAILURE();
  } catch (const cab::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bridge.activation: expected string (one of silu|gelu|relu), got \"tanh\""),
              std::string::npos)
        << e.what();
  }
}

TEST_F(BridgesTest, LinearIsAnAffineMap) {
  auto bridge = make("linear", 16, 64);
  auto params = bridge->named_parameters();
  const at::Tensor x = at::randn({3, 10, 16});
  const at::Tensor expected = at::matmul(x, params["linear.weight"].t()) + params["linear.bias"];
  EXPECT_LT((bridge->forward(x) - expected).abs().max().item<double>(), 1e-5);
}

TEST_F(BridgesTest, IdentityPassesThroughAndNeedsEqualWidths) {
  auto bridge = make("identity", 64, 64);
  const at::Tensor x = at::randn({2, 64});
  EXPECT_TRUE(at::equal(bridge->forward(x), x));
  EXPECT_TRUE(bridge->parameters().empty());
  try {
    make("identity", 16, 192);
    ADD_FAILURE();
  } catch (const cab::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("in_features = 16 and out_features = 192"), std::string::npos) << e.what();
  }
}

TEST_F(BridgesTest, MissingWidthIsAConfigError) {
  cab::config::Section options;
  options.set("in_features", std::int64_t{4});
  EXPECT_THROW(registry_.create(Kind::bridge, "linear", options), cab::ConfigError);
}
