// The `mamba` student: parity with transformers' MambaForCausalLM on the committed tiny checkpoint,
// taps, the mixing matrix against a hand-written scan, presets, save → load round trip, initialization modes
// (from-teacher with the `llama` teacher) and bad checkpoints.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <fstream>

#include "cab/config/section.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/model.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "mamba_reference.h"
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
  request.add("B", {1}).add("C", {1}).add("x", {0}).add("delta", {0}).add("mixing_matrix", {1}).add("hidden_out");
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  EXPECT_EQ(out.taps.at({"B", 1}).sizes(), (at::IntArrayRef{2, 7, 8}));
  EXPECT_EQ(out.taps.at({"C", 1}).sizes(), (at::IntArrayRef{2, 7, 8}));
  EXPECT_EQ(out.taps.at({"x", 0}).sizes(), (at::IntArrayRef{2, 7, 64}));
  EXPECT_GT(out.taps.at({"delta", 0}).min().item<double>(), 0.0);  // after softplus
  EXPECT_EQ(out.taps.at({"hidden_out", 1}).sizes(), (at::IntArrayRef{2, 7, 32}));
  EXPECT_EQ(out.taps.at({"mixing_matrix", 1}).sizes(), (at::IntArrayRef{2, 64, 7, 7}));
  EXPECT_EQ(out.taps.at({"mixing_matrix", 1}).triu(1).abs().max().item<double>(), 0.0);  // causal
  EXPECT_FALSE(out.taps.contains({"mixing_matrix", 0}));
  EXPECT_FALSE(out.taps.contains({"B", 1, cab::Direction::backward}));  // one direction
  EXPECT_FALSE(out.taps.contains({"B", 0}));  // only what was asked for
  cab::TapRequest bad;
  bad.add("q");
  EXPECT_THROW(model->forward(ids, bad), cab::Error);
}

// y = Σ_s M[t, s] · x[s] (D on the diagonal) must be the scan's output before the silu(z) gate: checked against
// the sequential scan reference, then gated, projected and added to the residual it must give the layer's output.
TEST_F(MambaTest, MixingMatrixTimesXIsTheScanBeforeTheGate) {
  auto model = from_fixture();
  const auto p = model->named_parameters();
  const at::Tensor ids = at::randint(0, 96, {2, 9}, at::kLong);
  cab::TapRequest request;
  request.add("x", {1}).add("mixing_matrix", {1}).add("hidden_in", {1}).add("hidden_out", {1});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  const at::Tensor h = out.taps.at({"hidden_in", 1});
  const auto [x, z] = cab::test::mamba1_in_proj(p, "backbone.layers.1.", h);
  const auto ref = cab::test::mamba1_branch(p, "backbone.layers.1.mixer.", "", x, z, 8);
  const at::Tensor u = out.taps.at({"x", 1}).transpose(1, 2);                                       // [b, d_inner, L]
  const at::Tensor y = at::matmul(out.taps.at({"mixing_matrix", 1}), u.unsqueeze(-1)).squeeze(-1);  // [b, d_inner, L]
  const double scan = cab::test::max_diff(y, ref.y_pre) / ref.y_pre.abs().max().item<double>();
  const double layer = cab::test::max_diff(cab::test::mamba1_out(p, "backbone.layers.1.", h, y * at::silu(z)),
                                           out.taps.at({"hidden_out", 1}));
  std::cout << "mamba mixing matrix · x: max relative |Δ| vs scan = " << scan << ", layer output max |Δ| = " << layer
            << "\n";
  EXPECT_LE(scan, 1e-5);
  EXPECT_LE(layer, 1e-5);
}

TEST_F(MambaTest, PresetHasTheReferenceSize) {
  cab::config::Section o;
  o.set("preset", std::string("mamba-130m"));
  auto model = make(o);
  EXPECT_EQ(model->shape().num_layers, 24);
  EXPECT_EQ(model->d_inner(), 1536);
  EXPECT_FALSE(model->bidirectional());
  EXPECT_EQ(model->named_parameters()["backbone.layers.0.mixer.dt_proj.weight"].sizes(), (at::IntArrayRef{1536, 48}));
  int64_t params = 0;
  for (const auto& t : model->parameters()) params += t.numel();
  std::cout << "mamba-130m: " << params << " parameters\n";
  EXPECT_NEAR(params / 1e6, 129.1, 0.1);  // state-spaces/mamba-130m (tied embeddings, vocabulary 50280)
}

TEST_F(MambaTest, SaveLoadRoundTripAndGradients) {
  auto model = from_fixture();
  const auto dir = dir_ / "saved";
  model->save_checkpoint(dir);
  cab::config::Section o;
  o.set("checkpoint", dir.string());
  auto again = make(o);
  cab::test::expect_same_outputs_and_gradients_everywhere(*model, *again, at::randint(0, 96, {1, 5}, at::kLong));
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

// From a small `llama` teacher (32 wide, 4 layers; its attention weights are [32, 32]) into a 2-layer student of
// the same width: W_Q, W_K into the C and B rows of x_proj, W_V into in_proj's x rows, W_O into out_proj (leading
// blocks: d_inner = 64 and N = 8), the norms, the token embedding and the untied head whole.
TEST_F(MambaTest, InitFromTeacher) {
  cab::config::Section t;
  t.set("vocab_size", std::int64_t{96}).set("d_model", std::int64_t{32}).set("n_layer", std::int64_t{4})
      .set("heads", std::int64_t{4}).set("kv_heads", std::int64_t{4}).set("intermediate", std::int64_t{64})
      .set("tie_embeddings", false);
  auto teacher = registry_.create_as<cab::Teacher>(Kind::teacher, "llama", t);
  cab::config::Section o;
  o.set("d_model", std::int64_t{32}).set("n_layer", std::int64_t{2}).set("vocab_size", std::int64_t{96})
      .set("d_state", std::int64_t{8}).set("tie_embeddings", false).set("init", std::string("from-teacher"));
  auto student = make(o);
  EXPECT_NEAR(at::exp(student->named_parameters()["backbone.layers.0.mixer.A_log"][0]).sub(at::arange(1, 9, at::kFloat))
                  .abs().max().item<double>(), 0.0, 1e-6);  // from-teacher keeps the s4d A
  auto w = teacher->weights_by_role();
  const cab::InitReport report = student->init_from_teacher(w, {0, 2});
  std::cout << "mamba from llama: " << report.str() << "\n";
  EXPECT_EQ(report.copied.size(), 2u * 1 + 3);  // norm per layer; embeddings, lm_head, norm_f
  EXPECT_EQ(report.partial.size(), 2u * 4);     // C rows, B rows, in_proj x rows, out_proj per layer
  EXPECT_TRUE(report.skipped.empty()) << report.str();
  const auto p = student->named_parameters();
  const at::Tensor x_proj = p["backbone.layers.1.mixer.x_proj.weight"];  // [2 + 16, 64]: dt_rank 2, then B, C
  EXPECT_TRUE(at::equal(x_proj.narrow(0, 10, 8).narrow(1, 0, 32), w["layers.2.attn.q.weight"].narrow(0, 0, 8)));
  EXPECT_TRUE(at::equal(x_proj.narrow(0, 2, 8).narrow(1, 0, 32), w["layers.2.attn.k.weight"].narrow(0, 0, 8)));
  EXPECT_TRUE(at::equal(p["backbone.layers.1.mixer.in_proj.weight"].narrow(0, 0, 32), w["layers.2.attn.v.weight"]));
  EXPECT_TRUE(at::equal(p["backbone.layers.0.mixer.out_proj.weight"].narrow(1, 0, 32), w["layers.0.attn.o.weight"]));
  EXPECT_TRUE(at::equal(p["backbone.layers.1.norm.weight"], w["layers.2.norm1.weight"]));
  EXPECT_TRUE(at::equal(p["backbone.embeddings.weight"], w["embed.tokens"]));
  EXPECT_TRUE(at::equal(p["lm_head.weight"], w["head.weight"]));
  EXPECT_THROW(student->init_from_teacher(w, {0}), cab::Error);
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
