// The causal-LM teachers gpt2, llama and phi: parity with transformers (logits, attention probabilities, hidden
// states) on the committed tiny checkpoints, taps, weights by role, presets, save → load, GPU vs CPU.
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

std::string fixture(const std::string& family) { return std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/" + family; }

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

class LmTeachers : public cab::test::TempDirTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
  }
  std::shared_ptr<cab::Teacher> make(const std::string& family, cab::config::Section options) {
    return registry_.create_as<cab::Teacher>(Kind::teacher, family, options);
  }
  std::shared_ptr<cab::Teacher> from(const std::string& dir) {
    cab::config::Section o;
    o.set("checkpoint", dir);
    return make(GetParam(), o);
  }
  cab::plugin::Registry registry_;
};

}  // namespace

TEST_P(LmTeachers, MatchesTransformersWithin1e4) {
  auto model = from(fixture(GetParam()));
  cab::io::SafeTensorsFile ref(fixture(GetParam()) + "/reference.safetensors");
  cab::TapRequest taps;
  taps.add("attn").add("hidden_in").add("hidden_out", {1});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ref.get("input").clone(), taps);
  ASSERT_EQ(out.logits.sizes(), ref.get("logits").sizes());
  const double logits = max_diff(out.logits, ref.get("logits"));
  std::cout << GetParam() << " parity: max |Δlogits| = " << logits << "\n";
  EXPECT_LE(logits, 1e-4);
  for (int layer : {0, 1}) {
    EXPECT_LE(max_diff(out.taps.at({"attn", layer}), ref.get("attentions." + std::to_string(layer))), 1e-5);
    EXPECT_LE(max_diff(out.taps.at({"hidden_in", layer}), ref.get("hidden_states." + std::to_string(layer))), 1e-5);
  }
  // transformers' last hidden state is after the final norm; ours is the block output: compare the block input.
  EXPECT_EQ(out.taps.size(), 5u);
}

TEST_P(LmTeachers, TapsShapesAndRopeInvariance) {
  auto model = from(fixture(GetParam()));
  const at::Tensor ids = at::randint(0, 96, {2, 9}, at::kLong);
  cab::TapRequest taps;
  taps.add("q", {1}).add("k", {1}).add("v", {0});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, taps);
  const int64_t kv = GetParam() == "llama" ? 16 : 32;  // the llama fixture has 2 of 4 heads for k/v
  EXPECT_EQ(out.taps.at({"q", 1}).sizes(), (at::IntArrayRef{2, 9, 32}));
  EXPECT_EQ(out.taps.at({"k", 1}).sizes(), (at::IntArrayRef{2, 9, kv}));
  EXPECT_EQ(out.taps.at({"v", 0}).sizes(), (at::IntArrayRef{2, 9, kv}));
  EXPECT_EQ(out.logits.sizes(), (at::IntArrayRef{2, 9, 96}));
  // Causality: the logits of the first tokens do not depend on later ones.
  at::Tensor other = ids.clone();
  other.select(1, 8).fill_(3);
  EXPECT_LE(max_diff(model->forward(other, {}).logits.narrow(1, 0, 8), out.logits.narrow(1, 0, 8)), 1e-6);
  // The attention of the reference input reproduces softmax(q·kᵀ/√d) from the q and k taps for RoPE models too
  // (taps are after RoPE, before the scale).
  cab::TapRequest qk;
  qk.add("q", {0}).add("k", {0}).add("attn", {0});
  const auto o2 = model->forward(ids, qk);
  const int64_t hd = 8, heads = 4;
  const at::Tensor q = o2.taps.at({"q", 0}).view({2, 9, heads, hd}).transpose(1, 2);
  at::Tensor k = o2.taps.at({"k", 0}).view({2, 9, kv / hd, hd}).transpose(1, 2).repeat_interleave(heads / (kv / hd), 1);
  const at::Tensor mask = at::ones({9, 9}, at::kBool).triu(1);
  const at::Tensor probs = at::softmax((at::matmul(q, k.transpose(-1, -2)) / std::sqrt(8.0)).masked_fill(mask, -INFINITY), -1);
  EXPECT_LE(max_diff(probs, o2.taps.at({"attn", 0})), 1e-6);
}

TEST_P(LmTeachers, WeightsByRoleShareTheParameters) {
  auto model = from(fixture(GetParam()));
  const auto roles = model->weights_by_role();
  for (const char* role : {"layers.0.attn.q.weight", "layers.1.attn.k.weight", "layers.1.attn.v.weight",
                           "layers.0.attn.o.weight", "layers.1.norm1.weight", "layers.0.mlp.fc1.weight",
                           "layers.0.mlp.fc2.weight", "embed.tokens", "norm_f.weight", "head.weight"})
    EXPECT_TRUE(roles.count(role)) << role;
  EXPECT_EQ(roles.at("layers.0.attn.q.weight").sizes(), (at::IntArrayRef{32, 32}));  // nn.Linear layout [out, in]
  EXPECT_EQ(roles.at("layers.0.mlp.fc1.weight").size(1), 32);
  // The q role is the parameter itself (a view): q = x·Wqᵀ reproduces the q tap of layer 0.
  const at::Tensor ids = at::randint(0, 96, {1, 5}, at::kLong);
  cab::TapRequest taps;
  taps.add("hidden_in", {0}).add("v", {0});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, taps);
  if (GetParam() == "gpt2") {  // v has no RoPE: check it through the roles
    const at::Tensor x = at::layer_norm(out.taps.at({"hidden_in", 0}), {32}, roles.at("layers.0.norm1.weight"),
                                        roles.at("layers.0.norm1.bias"), 1e-5);
    const at::Tensor v = at::linear(x, roles.at("layers.0.attn.v.weight"), roles.at("layers.0.attn.v.bias"));
    EXPECT_LE(max_diff(v, out.taps.at({"v", 0})), 1e-5);
  }
}

TEST_P(LmTeachers, SaveLoadRoundTrip) {
  auto model = from(fixture(GetParam()));
  model->save_checkpoint(dir_ / "saved");
  auto again = from((dir_ / "saved").string());
  const at::Tensor ids = at::randint(0, 96, {2, 6}, at::kLong);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(model->forward(ids, {}).logits, again->forward(ids, {}).logits));
}

TEST_P(LmTeachers, GpuForwardMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto model = from(fixture(GetParam()));
  const at::Tensor ids = at::randint(0, 96, {2, 12}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor cpu = model->forward(ids, {}).logits;
  model->to(at::kCUDA);
  const double fp32 = max_diff(model->forward(ids.cuda(), {}).logits.cpu(), cpu);
  model->to(at::kBFloat16);
  const at::Tensor bf16 = model->forward(ids.cuda(), {}).logits.cpu().to(at::kFloat);
  const double rel = ((bf16 - cpu).abs().max() / cpu.abs().max()).item<double>();
  std::cout << GetParam() << " GPU vs CPU: fp32 max |Δ| = " << fp32 << ", bf16 max |Δ| / max |logit| = " << rel << "\n";
  EXPECT_LE(fp32, 1e-4);
  EXPECT_LE(rel, 5e-2);
}

INSTANTIATE_TEST_SUITE_P(Families, LmTeachers, ::testing::Values("gpt2", "llama", "phi"));

TEST_F(LmTeachers, PresetsHaveThePublicSizes) {
  cab::config::Section o;
  o.set("preset", std::string("gpt2"));
  auto gpt2 = make("gpt2", o);
  int64_t params = 0;
  for (const auto& p : gpt2->parameters()) params += p.numel();
  EXPECT_NEAR(params / 1e6, 124.4, 0.1);  // GPT-2 small: 124 M with the tied head
  EXPECT_EQ(gpt2->shape().num_layers, 12);
  EXPECT_TRUE(gpt2->shape().causal);
}

TEST_F(LmTeachers, BadCheckpointsAreClearErrors) {
  // A llama config pointed at the phi checkpoint: model_type is named.
  cab::config::Section o;
  o.set("checkpoint", fixture("phi"));
  try {
    make("llama", o);
    FAIL() << "expected an error";
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model_type is 'phi', expected 'llama'"), std::string::npos) << e.what();
  }
  // A custom model with other sizes loading the fixture weights: the mismatched tensors are listed.
  cab::config::Section c;
  c.set("d_model", std::int64_t{48}).set("vocab_size", std::int64_t{96}).set("n_layer", std::int64_t{2});
  auto model = make("gpt2", c);
  try {
    model->load_checkpoint(fixture("gpt2"));
    FAIL() << "expected an error";
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("transformer.wte.weight"), std::string::npos) << e.what();
  }
}
