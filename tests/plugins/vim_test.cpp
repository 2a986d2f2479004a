// The `vim` student: the paper's sizes, taps per layer and scan direction, the class token in the middle, each
// direction checked against a hand-written Mamba-1 branch, the mixing matrix, save → load, gradients, from-teacher
// initialization from the `vit` teacher, bad checkpoints and GPU vs CPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <fstream>
#include <iostream>

#include "cab/config/section.h"
#include "cab/plugin/model.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "mamba_reference.h"
#include "test_support.h"

using cab::Direction;
using cab::plugin::Kind;
using cab::test::max_diff;

namespace {

constexpr int64_t kPatches = 49, kMid = 24, kDModel = 16, kDInner = 32, kState = 4;

class VimTest : public cab::test::TempDirTest {
 protected:
  static void SetUpTestSuite() { registry_.discover({CAB_TEST_PLUGIN_DIR}); }  // once: libraries stay loaded
  static std::shared_ptr<cab::Student> make(const cab::config::Section& options) {
    return registry_.create_as<cab::Student>(Kind::student, "vim", options);
  }
  /// Fashion-MNIST shaped: 28×28×1 in patches of 4 (49 patches, class token at 24), 16 wide, 2 layers, N = 4.
  static cab::config::Section small() {
    cab::config::Section o;
    o.set("image_size", std::int64_t{28}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1})
        .set("classes", std::int64_t{10}).set("d_model", kDModel).set("n_layer", std::int64_t{2})
        .set("d_state", kState);
    return o;
  }
  static inline cab::plugin::Registry registry_;
};

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

cab::TapRequest every_tap(int layer) {
  cab::TapRequest r;
  for (const char* name : {"x", "B", "C", "delta", "mixing_matrix", "hidden_in", "hidden_out"}) r.add(name, {layer});
  return r;
}

}  // namespace

TEST_F(VimTest, PresetsHaveThePapersSizes) {
  cab::config::Section o;
  o.set("preset", std::string("vim-tiny"));
  auto tiny = make(o);
  const cab::ModelShape shape = tiny->shape();
  EXPECT_EQ(shape.num_layers, 24);
  EXPECT_EQ(shape.d_model, 192);
  EXPECT_EQ(shape.seq_len, 197);   // 14·14 patches + class token
  EXPECT_EQ(shape.cls_index, 98);  // the middle: P / 2
  EXPECT_FALSE(shape.causal);
  EXPECT_TRUE(tiny->bidirectional());
  EXPECT_EQ(tiny->d_state(), 16);
  EXPECT_EQ(tiny->d_inner(), 384);
  const auto params = tiny->named_parameters();
  EXPECT_EQ(params["layers.0.mixer.x_proj.weight"].sizes(), (at::IntArrayRef{12 + 2 * 16, 384}));  // dt_rank 12
  EXPECT_EQ(params["layers.23.mixer.A_b_log"].sizes(), (at::IntArrayRef{384, 16}));
  EXPECT_EQ(params["layers.0.mixer.conv1d_b.weight"].sizes(), (at::IntArrayRef{384, 1, 4}));
  const int64_t tiny_params = count_parameters(*tiny);
  o.set("preset", std::string("vim-small"));
  auto small_model = make(o);
  EXPECT_EQ(small_model->shape().d_model, 384);
  EXPECT_EQ(small_model->named_parameters()["layers.0.mixer.dt_proj.weight"].sizes(), (at::IntArrayRef{768, 24}));
  const int64_t small_params = count_parameters(*small_model);
  std::cout << "vim-tiny: " << tiny_params << " parameters, vim-small: " << small_params << "\n";
  EXPECT_NEAR(tiny_params / 1e6, 7.0, 0.3);    // the paper: Vim-Ti 7 M
  EXPECT_NEAR(small_params / 1e6, 26.0, 0.5);  // the paper: Vim-S 26 M
}

TEST_F(VimTest, TapsPerLayerAndDirection) {
  auto model = make(small());
  EXPECT_EQ(model->shape().seq_len, kPatches + 1);
  EXPECT_EQ(model->shape().cls_index, kMid);
  at::NoGradGuard no_grad;
  const auto out = model->forward(at::randn({2, 1, 28, 28}), every_tap(1));
  EXPECT_EQ(out.logits.sizes(), (at::IntArrayRef{2, 10}));
  const int64_t L = kPatches + 1;
  for (const Direction d : {Direction::forward, Direction::backward}) {
    EXPECT_EQ(out.taps.at({"x", 1, d}).sizes(), (at::IntArrayRef{2, L, kDInner}));
    EXPECT_EQ(out.taps.at({"B", 1, d}).sizes(), (at::IntArrayRef{2, L, kState}));
    EXPECT_EQ(out.taps.at({"C", 1, d}).sizes(), (at::IntArrayRef{2, L, kState}));
    EXPECT_EQ(out.taps.at({"delta", 1, d}).sizes(), (at::IntArrayRef{2, L, kDInner}));
    EXPECT_GT(out.taps.at({"delta", 1, d}).min().item<double>(), 0.0);  // after softplus
    EXPECT_EQ(out.taps.at({"mixing_matrix", 1, d}).sizes(), (at::IntArrayRef{2, kDInner, L, L}));
    // Each direction's matrix is causal in its own token order.
    EXPECT_EQ(out.taps.at({"mixing_matrix", 1, d}).triu(1).abs().max().item<double>(), 0.0);
  }
  EXPECT_EQ(out.taps.at({"hidden_in", 1}).sizes(), (at::IntArrayRef{2, L, kDModel}));
  EXPECT_EQ(out.taps.at({"hidden_out", 1}).sizes(), (at::IntArrayRef{2, L, kDModel}));
  EXPECT_FALSE(out.taps.contains({"hidden_in", 1, Direction::backward}));  // hidden states have one key per layer
  EXPECT_FALSE(out.taps.contains({"B", 0}));                               // only what was asked for
  EXPECT_EQ(out.taps.size(), 12u);

  cab::TapRequest bad;
  bad.add("q");
  EXPECT_THROW(model->forward(at::randn({1, 1, 28, 28}), bad), cab::Error);
  cab::TapRequest too_deep;
  too_deep.add("B", {2});
  EXPECT_THROW(model->forward(at::randn({1, 1, 28, 28}), too_deep), cab::Error);
  try {
    model->forward(at::randn({1, 3, 28, 28}), {});
    ADD_FAILURE() << "a 3-channel image went through a 1-channel model";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 28, 28]"), std::string::npos) << e.what();
  }
}

TEST_F(VimTest, ClassTokenSitsInTheMiddleAndFeedsTheHead) {
  auto model = make(small());
  const auto p = model->named_parameters();
  const at::Tensor images = at::randn({2, 1, 28, 28});
  cab::TapRequest taps;
  taps.add("hidden_in", {0}).add("hidden_out", {1});
  at::NoGradGuard no_grad;
  const auto out = model->forward(images, taps);
  const at::Tensor h = out.taps.at({"hidden_in", 0});  // [2, 50, 16]
  const at::Tensor patches =
      at::conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], at::IntArrayRef{4, 4}).flatten(2).transpose(1, 2);
  const at::Tensor pos = p["pos_embed"];
  EXPECT_LE(max_diff(h.narrow(1, 0, kMid), patches.narrow(1, 0, kMid) + pos.narrow(1, 0, kMid)), 1e-6);
  EXPECT_LE(max_diff(h.select(1, kMid), (p["cls_token"] + pos.narrow(1, kMid, 1)).view({1, kDModel})), 1e-6);
  EXPECT_LE(max_diff(h.narrow(1, kMid + 1, kPatches - kMid), patches.narrow(1, kMid, kPatches - kMid) +
                                                                 pos.narrow(1, kMid + 1, kPatches - kMid)),
            1e-6);
  // logits = head(RMSNorm_f(h_last[class token]))
  const at::Tensor last = out.taps.at({"hidden_out", 1}).select(1, kMid);
  const at::Tensor want = at::linear(cab::test::rms_norm(last, p["norm_f.weight"]), p["head.weight"], p["head.bias"]);
  EXPECT_LE(max_diff(out.logits, want), 1e-5);
}

// Vim's layer: shared in_proj, the forward branch on the tokens, the backward branch (its own conv1d_b, x_proj_b,
// dt_proj_b, A_b_log, D_b) on the token-reversed x and z, out_proj((y_fwd + flip(y_bwd)) / 2), residual. Written
// again in plain ATen with the sequential scan reference, in fp64 so that only rounding separates the two.
TEST_F(VimTest, EachDirectionIsTheMamba1BranchOnItsTokenOrder) {
  auto model = make(small());
  model->to(at::kDouble);
  const auto p = model->named_parameters();
  at::NoGradGuard no_grad;
  const auto out = model->forward(at::randn({2, 1, 28, 28}, at::kDouble), every_tap(1));
  const at::Tensor h = out.taps.at({"hidden_in", 1});
  const auto [x, z] = cab::test::mamba1_in_proj(p, "layers.1.", h);
  const auto fwd = cab::test::mamba1_branch(p, "layers.1.mixer.", "", x, z, kState);
  const auto bwd = cab::test::mamba1_branch(p, "layers.1.mixer.", "_b", x.flip(2), z.flip(2), kState);
  const at::Tensor want = cab::test::mamba1_out(p, "layers.1.", h, (fwd.y + bwd.y.flip(2)) / 2);
  const double layer_diff = max_diff(out.taps.at({"hidden_out", 1}), want);
  std::cout << "vim layer vs hand-written fwd + flipped bwd branches (fp64): max |Δ| = " << layer_diff << "\n";
  EXPECT_LE(layer_diff, 1e-10);
  // Taps of each direction, in that direction's token order (the backward ones token-reversed).
  for (const auto& [d, ref] : {std::pair{Direction::forward, fwd}, std::pair{Direction::backward, bwd}}) {
    EXPECT_LE(max_diff(out.taps.at({"x", 1, d}), ref.u.transpose(1, 2)), 1e-12);
    EXPECT_LE(max_diff(out.taps.at({"B", 1, d}), ref.B), 1e-12);
    EXPECT_LE(max_diff(out.taps.at({"C", 1, d}), ref.C), 1e-12);
    EXPECT_LE(max_diff(out.taps.at({"delta", 1, d}), ref.delta.transpose(1, 2)), 1e-12);
  }
  // The directions differ: the backward taps are not the forward ones reversed (own parameters, reversed input).
  EXPECT_GT(max_diff(out.taps.at({"B", 1, Direction::backward}), out.taps.at({"B", 1}).flip(1)), 1e-3);
  // Without a tap of the scan output the layer runs both directions in natural token order through the fused
  // scan (an anti-causal conv for the backward one); with it, each direction apart on its own token order. Both
  // give the layer above, and the scan-output taps are each direction's gated output.
  cab::TapRequest with_y = every_tap(1);
  with_y.add("y", {1});
  const auto apart = model->forward(at::randn({2, 1, 28, 28}, at::kDouble), with_y);
  const at::Tensor h2 = apart.taps.at({"hidden_in", 1});
  const auto [x2, z2] = cab::test::mamba1_in_proj(p, "layers.1.", h2);
  const auto fwd2 = cab::test::mamba1_branch(p, "layers.1.mixer.", "", x2, z2, kState);
  const auto bwd2 = cab::test::mamba1_branch(p, "layers.1.mixer.", "_b", x2.flip(2), z2.flip(2), kState);
  EXPECT_LE(max_diff(apart.taps.at({"hidden_out", 1}), cab::test::mamba1_out(p, "layers.1.", h2, (fwd2.y + bwd2.y.flip(2)) / 2)),
            1e-10);
  EXPECT_LE(max_diff(apart.taps.at({"y", 1, Direction::forward}), fwd2.y.transpose(1, 2)), 1e-12);
  EXPECT_LE(max_diff(apart.taps.at({"y", 1, Direction::backward}), bwd2.y.transpose(1, 2)), 1e-12);
  EXPECT_LE(max_diff(apart.taps.at({"B", 1, Direction::backward}), bwd2.B), 1e-12);
}

TEST_F(VimTest, MixingMatrixTimesXIsEachScanBeforeTheGate) {
  auto model = make(small());
  const auto p = model->named_parameters();
  at::NoGradGuard no_grad;
  const auto out = model->forward(at::randn({2, 1, 28, 28}), every_tap(0));
  const auto [x, z] = cab::test::mamba1_in_proj(p, "layers.0.", out.taps.at({"hidden_in", 0}));
  const auto fwd = cab::test::mamba1_branch(p, "layers.0.mixer.", "", x, z, kState);
  const auto bwd = cab::test::mamba1_branch(p, "layers.0.mixer.", "_b", x.flip(2), z.flip(2), kState);
  for (const auto& [d, ref] : {std::pair{Direction::forward, fwd}, std::pair{Direction::backward, bwd}}) {
    const at::Tensor M = out.taps.at({"mixing_matrix", 0, d});                  // [b, d_inner, L, L]
    const at::Tensor u = out.taps.at({"x", 0, d}).transpose(1, 2);              // [b, d_inner, L]
    const at::Tensor y = at::matmul(M, u.unsqueeze(-1)).squeeze(-1);            // Σ_s M[t, s] u[s]
    const double diff = max_diff(y, ref.y_pre) / ref.y_pre.abs().max().item<double>();
    std::cout << "vim mixing matrix · x vs scan (" << (d == Direction::forward ? "fwd" : "bwd")
              << "): max relative |Δ| = " << diff << "\n";
    EXPECT_LE(diff, 1e-5);
  }
}

TEST_F(VimTest, SaveLoadRoundTripAndGradients) {
  auto model = make(small());
  model->save_checkpoint(dir_ / "saved");
  std::ifstream config(dir_ / "saved" / "config.json");
  const std::string text((std::istreambuf_iterator<char>(config)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"model_type\": \"vim\""), std::string::npos) << text;
  cab::config::Section o;
  o.set("checkpoint", (dir_ / "saved").string());
  auto again = make(o);
  EXPECT_EQ(again->shape().cls_index, kMid);
  cab::test::expect_same_outputs_and_gradients_everywhere(*model, *again, at::randn({2, 1, 28, 28}));
}

TEST_F(VimTest, InitModes) {
  cab::config::Section o = small();
  auto s4d = make(o);
  const at::Tensor a = s4d->named_parameters()["layers.1.mixer.A_b_log"];
  EXPECT_LE(max_diff(at::exp(a[3]), at::arange(1, kState + 1, at::kFloat)), 1e-6);
  o.set("init", std::string("identity"));
  auto identity = make(o);
  EXPECT_EQ(identity->named_parameters()["layers.0.mixer.A_log"].max().item<double>(), -20.0);
  EXPECT_EQ(identity->named_parameters()["layers.0.mixer.A_b_log"].min().item<double>(), -20.0);
  o.set("init", std::string("from-teacher"));  // A as s4d; the trainer copies the teacher's weights afterwards
  EXPECT_LE(max_diff(at::exp(make(o)->named_parameters()["layers.0.mixer.A_log"][0]), at::arange(1, kState + 1, at::kFloat)), 1e-6);
  o.set("init", std::string("zeros"));
  EXPECT_THROW(make(o), cab::ConfigError);
}

// A small DeiT-like teacher (48 wide, 4 layers) and a 2-layer Vim of the same width: per layer the W_Q, W_K blocks
// land in the C and B rows of both directions' x_proj, W_V in in_proj's x rows, W_O in out_proj (leading blocks,
// as d_inner = 96 and N = 4 differ from the teacher's 48), norm1 in the norm; embeddings, norm_f and head whole.
TEST_F(VimTest, InitFromTeacherCopiesTheTeachersBlocks) {
  cab::config::Section t;
  t.set("image_size", std::int64_t{28}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1})
      .set("classes", std::int64_t{10}).set("d_model", std::int64_t{48}).set("n_layer", std::int64_t{4})
      .set("heads", std::int64_t{3});
  auto teacher = registry_.create_as<cab::Teacher>(Kind::teacher, "vit", t);
  cab::config::Section s = small();
  s.set("d_model", std::int64_t{48}).set("init", std::string("from-teacher"));
  auto student = make(s);
  const auto before = student->named_parameters();
  const at::Tensor x_proj_before = before["layers.1.mixer.x_proj.weight"].clone();
  const at::Tensor in_proj_before = before["layers.1.mixer.in_proj.weight"].clone();
  const std::vector<int64_t> layer_map{0, 2};  // proportional: g(l) = ⌊l·T/S⌋
  const cab::InitReport report = student->init_from_teacher(teacher->weights_by_role(), layer_map);
  std::cout << "vim from vit: " << report.str() << "\n";
  // per layer: norm exact; C, B rows of both directions, in_proj x rows, out_proj partial. Global: patch weight and
  // bias, class token, position embeddings, norm_f, head weight and bias exact.
  EXPECT_EQ(report.copied.size(), 2u * 1 + 7);
  EXPECT_EQ(report.partial.size(), 2u * 6);
  EXPECT_TRUE(report.skipped.empty()) << report.str();

  auto w = teacher->weights_by_role();
  const auto p = student->named_parameters();
  const int64_t R = 3, N = kState;  // dt_rank = ceil(48 / 16)
  for (const std::string suffix : {"", "_b"}) {
    const at::Tensor xp = p["layers.1.mixer.x_proj" + suffix + ".weight"];  // [R + 2N, 96]
    EXPECT_TRUE(at::equal(xp.narrow(0, R + N, N).narrow(1, 0, 48), w["layers.2.attn.q.weight"].narrow(0, 0, N))) << suffix;
    EXPECT_TRUE(at::equal(xp.narrow(0, R, N).narrow(1, 0, 48), w["layers.2.attn.k.weight"].narrow(0, 0, N))) << suffix;
  }
  const at::Tensor xp = p["layers.1.mixer.x_proj.weight"];
  EXPECT_TRUE(at::equal(xp.narrow(0, 0, R), x_proj_before.narrow(0, 0, R)));  // the dt rows keep their init
  EXPECT_TRUE(at::equal(xp.narrow(1, 48, 48), x_proj_before.narrow(1, 48, 48)));  // beyond the teacher's width too
  const at::Tensor in_proj = p["layers.1.mixer.in_proj.weight"];  // [2 · 96, 48]: x rows then z rows
  EXPECT_TRUE(at::equal(in_proj.narrow(0, 0, 48), w["layers.2.attn.v.weight"]));
  EXPECT_TRUE(at::equal(in_proj.narrow(0, 48, 144), in_proj_before.narrow(0, 48, 144)));
  EXPECT_TRUE(at::equal(p["layers.0.mixer.out_proj.weight"].narrow(1, 0, 48), w["layers.0.attn.o.weight"]));
  EXPECT_TRUE(at::equal(p["layers.1.norm.weight"], w["layers.2.norm1.weight"]));
  EXPECT_TRUE(at::equal(p["patch_embed.proj.weight"], w["embed.patch.weight"]));
  EXPECT_TRUE(at::equal(p["cls_token"], w["embed.cls"]));
  // The teacher's class token comes first, Vim's sits at P/2: its position embedding moves with it.
  const at::Tensor pos = p["pos_embed"], tpos = w["embed.pos"];
  EXPECT_TRUE(at::equal(pos.select(1, kMid), tpos.select(1, 0)));
  EXPECT_TRUE(at::equal(pos.narrow(1, 0, kMid), tpos.narrow(1, 1, kMid)));
  EXPECT_TRUE(at::equal(pos.narrow(1, kMid + 1, kPatches - kMid), tpos.narrow(1, kMid + 1, kPatches - kMid)));
  EXPECT_TRUE(at::equal(p["norm_f.weight"], w["norm_f.weight"]));
  EXPECT_TRUE(at::equal(p["head.weight"], w["head.weight"]));
  EXPECT_TRUE(at::equal(p["head.bias"], w["head.bias"]));

  // A teacher layer that does not exist is reported, not invented; a map of the wrong length is an error.
  const cab::InitReport far = student->init_from_teacher(w, {0, 9});
  EXPECT_EQ(far.skipped.size(), 7u) << far.str();
  EXPECT_THROW(student->init_from_teacher(w, {0, 1, 2}), cab::Error);
}

TEST_F(VimTest, BadCheckpointsAreClearErrors) {
  auto model = make(small());
  const auto dir = dir_ / "bad";
  model->save_checkpoint(dir);
  std::ifstream in(dir / "config.json");
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto load_with = [&](const std::string& from, const std::string& to) -> std::string {
    std::string text = good;
    const auto at = text.find(from);
    if (at == std::string::npos) return "config.json has no " + from;
    text.replace(at, from.size(), to);
    std::ofstream(dir / "config.json") << text;
    cab::config::Section o;
    o.set("checkpoint", dir.string());
    try {
      make(o);
    } catch (const cab::Error& e) {
      return e.what();
    }
    return "no error";
  };
  // Shapes that disagree with config.json: every mismatch named, in both directions.
  const std::string shapes = load_with("\"state_size\": 4", "\"state_size\": 8");
  EXPECT_NE(shapes.find("layers.0.mixer.A_log: expected [32, 8], got [32, 4]"), std::string::npos) << shapes;
  EXPECT_NE(shapes.find("layers.1.mixer.A_b_log: expected [32, 8], got [32, 4]"), std::string::npos) << shapes;
  const std::string type = load_with("\"model_type\": \"vim\"", "\"model_type\": \"mamba\"");
  EXPECT_NE(type.find("model_type is 'mamba', expected 'vim'"), std::string::npos) << type;
  const std::string missing = load_with("\"image_size\"", "\"picture_size\"");
  EXPECT_NE(missing.find("config.json': image_size"), std::string::npos) << missing;
  cab::config::Section o;
  o.set("checkpoint", (dir_ / "nowhere").string());
  EXPECT_THROW(make(o), cab::Error);
}

TEST_F(VimTest, GpuForwardMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto model = make(small());
  const at::Tensor images = at::randn({2, 1, 28, 28});
  at::NoGradGuard no_grad;
  const at::Tensor cpu = model->forward(images, {}).logits;
  model->to(at::kCUDA);
  const at::Tensor gpu = model->forward(images.cuda(), {}).logits.cpu();  // the CUDA scan kernel, both directions
  const double diff = max_diff(gpu, cpu);
  std::cout << "vim GPU vs CPU: max |Δlogits| = " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
  model->to(at::kBFloat16);
  const at::Tensor bf16 = model->forward(images.cuda().to(at::kBFloat16), {}).logits.cpu().to(at::kFloat);
  EXPECT_LE((bf16 - cpu).abs().max().item<double>() / cpu.abs().max().item<double>(), 5e-2);
}
