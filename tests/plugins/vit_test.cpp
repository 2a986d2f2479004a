// The `vit` teacher: parity with transformers' ViTForImageClassification (logits, attention probabilities,
// hidden states) on the committed tiny checkpoint, taps, presets and save → load.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "cab/config/section.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/model.h"
#include "cab/plugin/registry.h"
#include "test_support.h"

using cab::plugin::Kind;

namespace {

const std::string kFixture = std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/vit";

class VitTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
  }
  std::shared_ptr<cab::Teacher> make(cab::config::Section options) {
    return registry_.create_as<cab::Teacher>(Kind::teacher, "vit", options);
  }
  cab::plugin::Registry registry_;
};

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_F(VitTest, MatchesTransformersWithin1e4) {
  cab::config::Section o;
  o.set("checkpoint", kFixture);
  auto model = make(o);
  cab::io::SafeTensorsFile ref(kFixture + "/reference.safetensors");
  cab::TapRequest taps;
  taps.add("attn").add("hidden_in", {0}).add("hidden_out");
  at::NoGradGuard no_grad;
  const auto out = model->forward(ref.get("input").clone(), taps);
  const double logits = max_diff(out.logits, ref.get("logits"));
  std::cout << "vit parity: max |Δlogits| = " << logits << "\n";
  EXPECT_LE(logits, 1e-4);
  EXPECT_LE(max_diff(out.taps.at({"attn", 0}), ref.get("attentions.0")), 1e-5);
  EXPECT_LE(max_diff(out.taps.at({"attn", 1}), ref.get("attentions.1")), 1e-5);
  EXPECT_LE(max_diff(out.taps.at({"hidden_in", 0}), ref.get("hidden_states.0")), 1e-5);
  EXPECT_LE(max_diff(out.taps.at({"hidden_out", 1}), ref.get("hidden_states.2")), 1e-4);
}

TEST_F(VitTest, FashionMnistShapedModelAndTaps) {
  cab::config::Section o;
  o.set("image_size", std::int64_t{28}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1})
      .set("classes", std::int64_t{10}).set("d_model", std::int64_t{48}).set("n_layer", std::int64_t{3})
      .set("heads", std::int64_t{3});
  auto model = make(o);
  EXPECT_EQ(model->shape().seq_len, 50);  // 7·7 patches + class token
  cab::TapRequest taps;
  taps.add("q", {2}).add("k", {2});
  const auto out = model->forward(at::randn({2, 1, 28, 28}), taps);
  EXPECT_EQ(out.logits.sizes(), (at::IntArrayRef{2, 10}));
  EXPECT_EQ(out.taps.at({"k", 2}).sizes(), (at::IntArrayRef{2, 50, 48}));
  EXPECT_EQ(out.taps.size(), 2u);
  EXPECT_THROW(model->forward(at::randn({2, 3, 28, 28}), {}), c10::Error);
}

TEST_F(VitTest, PresetsAndRoundTrip) {
  cab::config::Section o;
  o.set("preset", std::string("deit-tiny"));
  auto tiny = make(o);
  EXPECT_EQ(tiny->shape().d_model, 192);
  EXPECT_EQ(tiny->shape().num_layers, 12);
  EXPECT_EQ(tiny->num_heads(), 3);
  EXPECT_EQ(tiny->shape().seq_len, 197);
  int64_t params = 0;
  for (const auto& p : tiny->parameters()) params += p.numel();
  EXPECT_NEAR(params / 1e6, 5.7, 0.1);  // DeiT-Tiny has 5.7 M parameters

  cab::config::Section f;
  f.set("checkpoint", kFixture);
  auto model = make(f);
  model->save_checkpoint(dir_ / "saved");
  cab::config::Section g;
  g.set("checkpoint", (dir_ / "saved").string());
  auto again = make(g);
  const at::Tensor x = at::randn({1, 1, 28, 28});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(model->forward(x, {}).logits, again->forward(x, {}).logits));
}

TEST_F(VitTest, GpuForwardMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  cab::config::Section o;
  o.set("checkpoint", kFixture);
  auto model = make(o);
  const at::Tensor x = at::randn({2, 1, 28, 28});
  at::NoGradGuard no_grad;
  const at::Tensor cpu = model->forward(x, {}).logits;
  model->to(at::kCUDA);
  EXPECT_LE((model->forward(x.cuda(), {}).logits.cpu() - cpu).abs().max().item<double>(), 1e-4);
  model->to(at::kBFloat16);
  const at::Tensor bf16 = model->forward(x.cuda().to(at::kBFloat16), {}).logits.cpu().to(at::kFloat);
  EXPECT_LE(((bf16 - cpu).abs().max() / cpu.abs().max()).item<double>(), 5e-2);
}
