// The `mamba` student: parity with transformers' MambaForCausalLM on the committed tiny checkpoint,
// taps, save → load round trip, initialization modes and bad checkpoints.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <fstream>

#include "cab/config/section.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/model.h"
#include "cab/plugin/registry.h"
#include "test_support.h"

using cab::plugin::Kind;

namespace {

const std::string kFixture = std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/mamba";

class MambaTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
  }
  std::shared_ptr<cab::Student> make(cab::config::Section options) {
    return registry_.create_as<cab::Student>(Kind::student, "mamba", options);
  }
  std::shared_ptr<cab::Student> from_fixture() {
    cab::config::Section o;
    o.set("checkpoint", kFixture);
    return make(o);
  }
  cab::plugin::Registry registry_;
};

}  // namespace

TEST_F(MambaTest, MatchesTransformersLogitsWithin1e4) {
  auto model = from_fixture();
  model->eval();
  cab::io::SafeTensorsFile reference(kFixture + "/reference.safetensors");
  const at::Tensor ids = reference.get("input").clone();
  const at::Tensor want = reference.get("logits");
  at::NoGradGuard no_grad;
  const at::Tensor got = model->forward(ids, {}).logits;
  ASSERT_EQ(got.sizes(), want.sizes());
  const double diff = (got - want).abs().max().item<double>();
  std::cout << "mamba parity: max |Δlogits| = " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
}

TEST_F(MambaTest, TapsHaveTheDocumentedShapes) {
  auto model = from_fixture();
  const at::Tensor ids = at::randint(0, 96, {2, 7}, at::kLong);
  cab::TapRequest request;
  request.add("B", {1}).add("C", {1}).add("x", {0}).add("delta", {0}).add("hidden_out");
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  EXPECT_EQ(out.taps.at({"B", 1}).sizes(), (at::IntArrayRef{2, 7, 8}));
  EXPECT_EQ(out.taps.at({"C", 1}).sizes(), (at::IntArrayRef{2, 7, 8}));
  EXPECT_EQ(out.taps.at({"x", 0}).sizes(), (at::IntArrayRef{2, 7, 64}));
  EXPECT_GT(out.taps.at({"delta", 0}).min().item<double>(), 0.0);  // after softplus
  EXPECT_EQ(out.taps.at({"hidden_out", 1}).sizes(), (at::IntArrayRef{2, 7, 32}));
  EXPECT_FALSE(out.taps.contains({"B", 0}));  // only what was asked for
  cab::TapRequest bad;
  bad.add("q");
  EXPECT_THROW(model->forward(ids, bad), cab::Error);
}

TEST_F(MambaTest, SaveLoadRoundTripAndGradients) {
  auto model = from_fixture();
  const auto dir = dir_ / "saved";
  model->save_checkpoint(dir);
  cab::config::Section o;
  o.set("checkpoint", dir.string());
  auto again = make(o);
  const at::Tensor ids = at::randint(0, 96, {1, 5}, at::kLong);
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(ids, {}).logits, again->forward(ids, {}).logits));
  }
  const at::Tensor loss = again->forward(ids, {}).logits.square().mean();
  loss.backward();
  for (const auto& p : again->named_parameters()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
}

TEST_F(MambaTest, InitModes) {
  cab::config::Section o;
  o.set("d_model", std::int64_t{16}).set("n_layer", std::int64_t{1}).set("vocab_size", std::int64_t{10}).set("d_state", std::int64_t{4});
  auto s4d = make(o);
  const at::Tensor a = s4d->named_parameters()["backbone.layers.0.mixer.A_log"];
  EXPECT_NEAR(at::exp(a[0]).sub(at::arange(1, 5, at::kFloat)).abs().max().item<double>(), 0.0, 1e-6);
  o.set("init", std::string("identity"));
  auto identity = make(o);
  EXPECT_EQ(identity->named_parameters()["backbone.layers.0.mixer.A_log"].max().item<double>(), -20.0);
}

TEST_F(MambaTest, BadCheckpointsAreClearErrors) {
  // A checkpoint whose shapes disagree with its config.json.
  const auto dir = dir_ / "bad";
  std::filesystem::create_directories(dir);
  std::ifstream src(kFixture + "/config.json");
  std::string text((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  text.replace(text.find("\"state_size\": 8"), 15, "\"state_size\": 4");
  std::ofstream(dir / "config.json") << text;
  std::filesystem::copy_file(kFixture + "/model.safetensors", dir / "model.safetensors");
  cab::config::Section o;
  o.set("checkpoint", dir.string());
  try {
    make(o);
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("backbone.layers.0.mixer.A_log: expected [64, 4], got [64, 8]"), std::string::npos) << m;
  }
  o.set("checkpoint", (dir_ / "nowhere").string());
  EXPECT_THROW(make(o), cab::Error);
}

TEST_F(MambaTest, GpuForwardMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto model = from_fixture();
  const at::Tensor ids = at::randint(0, 96, {2, 12}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor cpu = model->forward(ids, {}).logits;
  model->to(at::kCUDA);
  const at::Tensor gpu = model->forward(ids.cuda(), {}).logits.cpu();  // the CUDA scan kernel runs here
  EXPECT_LE((gpu - cpu).abs().max().item<double>(), 1e-4);
  model->to(at::kBFloat16);
  const at::Tensor bf16 = model->forward(ids.cuda(), {}).logits.cpu().to(at::kFloat);
  EXPECT_LE(((bf16 - cpu).abs().max() / cpu.abs().max()).item<double>(), 5e-2);
}
