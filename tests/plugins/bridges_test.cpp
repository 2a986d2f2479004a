// The shipped bridge plugins, loaded from the build's plugin directory exactly as cab-sweep loads them.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/config/section.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/registry.h"

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
