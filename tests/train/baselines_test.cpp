// The baselines of method-baselines (attn-weight-reuse, mohawk, transmamba) on tiny real models: a DeiT-style
// ViT teacher and a Vim student (bidirectional, class token in the middle), and the committed GPT-2 / Mamba
// fixtures (causal). Every loss is recomputed here from its formula; the stage schedule, subcloning and the
// SDK pieces they rest on (forward_layer, combined mixing matrices) are checked on their own.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/nn/modules/container/sequential.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "cab/config/section.h"
#include "cab/kernels/scan.h"
#include "cab/plugin/distill.h"
#include "cab/plugin/layer_map.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/store/store.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::plugin::Kind;

namespace {

std::string fixture(const std::string& family) { return std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/" + family; }

const at::Tensor& param(const torch::nn::Module& m, const std::string& name) {
  const auto named = m.named_parameters();
  const auto* p = named.find(name);
  if (!p) throw std::runtime_error("no parameter " + name);
  return *p;
}

class BaselinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.discover({CAB_TEST_PLUGIN_DIR});
    at::manual_seed(0);
    batch_.inputs = at::randn({3, 1, 12, 12});
    batch_.targets = at::randint(0, 5, {3}, at::kLong);
  }
  /// ViT teacher: 12×12 images, patch 4 (9 patches + class token first), `width` wide, 2 layers, 2 heads.
  std::shared_ptr<cab::Teacher> vit(int64_t width = 16) {
    cab::config::Section o;
    o.set("image_size", std::int64_t{12}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1});
    o.set("classes", std::int64_t{5}).set("d_model", width).set("n_layer", std::int64_t{2});
    o.set("heads", std::int64_t{2}).set("mlp_ratio", 2.0);
    auto t = registry_.create_as<cab::Teacher>(Kind::teacher, "vit", o);
    t->eval();
    for (auto& p : t->parameters()) p.set_requires_grad(false);
    return t;
  }
  /// Vim student of the same geometry (class token at 9/2 = 4), `layers` deep.
  std::shared_ptr<cab::Student> vim(int64_t width = 16, int64_t layers = 2) {
    cab::config::Section o;
    o.set("image_size", std::int64_t{12}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1});
    o.set("classes", std::int64_t{5}).set("d_model", width).set("n_layer", layers).set("d_state", std::int64_t{4});
    return registry_.create_as<cab::Student>(Kind::student, "vim", o);
  }
  std::shared_ptr<cab::Method> method(const std::string& name, const cab::config::Section& o,
                                      std::shared_ptr<cab::Teacher> t, std::shared_ptr<cab::Student> s,
                                      int64_t steps = 10, int64_t steps_per_epoch = 4) {
    auto m = registry_.create_as<cab::Method>(Kind::method, name, o);
    cab::MethodContext c;
    c.teacher = std::move(t);
    c.student = std::move(s);
    c.total_steps = steps;
    c.steps_per_epoch = steps_per_epoch;
    c.batch_size = 2;
    c.tokens_per_example = 50;
    c.record = [this](const std::string& k, const std::string& v) { recorded_[k] = v; };
    m->setup(c);
    return m;
  }
  cab::plugin::Registry registry_;
  cab::Batch batch_;
  std::map<std::string, std::string> recorded_;
};

/// The teacher tap's tokens reordered by hand: DeiT's class token (first) to Vim's middle position 4 of 10.
at::Tensor to_vim_order(const at::Tensor& t, int64_t dim) {
  const at::Tensor idx = at::tensor(std::vector<int64_t>{1, 2, 3, 4, 0, 5, 6, 7, 8, 9}, at::TensorOptions(at::kLong));
  return t.index_select(dim, idx);
}

}  // namespace

TEST_F(BaselinesTest, ForwardLayerIsTheLayerOfTheFullForward) {
  for (const auto& student : {vim(), registry_.create_as<cab::Student>(Kind::student, "mamba",
                                                                         cab::config::Section().set("checkpoint", fixture("mamba")))}) {
    const bool image = student->bidirectional();
    const at::Tensor inputs = image ? batch_.inputs : at::randint(0, 96, {2, 7}, at::kLong);
    cab::TapRequest r;
    r.add("hidden_in").add("hidden_out");
    at::NoGradGuard no_grad;
    const auto full = student->forward(inputs, r);
    for (int l = 0; l < static_cast<int>(student->shape().num_layers); ++l) {
      cab::Taps taps;
      const at::Tensor out = student->forward_layer(l, full.taps.at({"hidden_in", l}), {}, taps);
      EXPECT_TRUE(at::allclose(out, full.taps.at({"hidden_out", l}), 1e-6, 1e-6)) << "layer " << l;
    }
    const cab::LayerModules m = student->layer_modules(0);
    ASSERT_TRUE(m.block && m.mixer);
    EXPECT_LT(m.mixer->parameters().size(), m.block->parameters().size());
    EXPECT_THROW(student->layer_modules(99), cab::Error);
  }
}

TEST_F(BaselinesTest, CombinedMixingMatrixTimesInputIsTheScanOutput) {
  // One layer's two scan directions in fp64, without the gate: the backward scan runs on the reversed input.
  at::manual_seed(1);
  const int64_t b = 2, d = 3, L = 9, n = 4;
  auto inputs = [&](const at::Tensor& u) {
    cab::kernels::ScanInputs in;
    in.u = u;
    in.delta = at::randn({b, d, L}, at::kDouble) * 0.5;
    in.A = -at::rand({d, n}, at::kDouble) - 0.2;
    in.B = at::randn({b, n, L}, at::kDouble);
    in.C = at::randn({b, n, L}, at::kDouble);
    in.D_skip = at::randn({d}, at::kDouble);
    in.delta_softplus = true;
    return in;
  };
  const at::Tensor u = at::randn({b, d, L}, at::kDouble);
  const auto fwd = inputs(u), bwd = inputs(u.flip(2));
  cab::Taps taps;
  taps.put({"mixing_matrix", 0, cab::Direction::forward}, cab::kernels::mixing_matrix(fwd));
  const at::Tensor y_f = cab::kernels::scan(fwd, cab::kernels::ScanBackend::sequential).y;
  // causal: the forward matrix alone, lower triangular
  at::Tensor m = cab::distill::combined_mixing(taps, 0).to(at::kDouble);
  EXPECT_TRUE(at::allclose(at::matmul(m, u.unsqueeze(-1)).squeeze(-1), y_f, 1e-5, 1e-5));
  EXPECT_EQ(m.triu(1).abs().max().item<double>(), 0.0);
  // bidirectional: (M_f + flip(M_b)) / 2 applied to u is (y_f + flip(y_b)) / 2, and fills the upper triangle
  taps.put({"mixing_matrix", 0, cab::Direction::backward}, cab::kernels::mixing_matrix(bwd));
  const at::Tensor y_b = cab::kernels::scan(bwd, cab::kernels::ScanBackend::sequential).y;
  m = cab::distill::combined_mixing(taps, 0).to(at::kDouble);
  EXPECT_TRUE(at::allclose(at::matmul(m, u.unsqueeze(-1)).squeeze(-1), (y_f + y_b.flip(2)) / 2, 1e-5, 1e-5));
  EXPECT_GT(m.triu(1).abs().max().item<double>(), 0.0);
  // channels averaged per head
  const at::Tensor six = at::randn({2, 6, 4, 4});
  EXPECT_TRUE(at::allclose(cab::distill::group_heads(six, 2).select(1, 1), six.narrow(1, 3, 3).mean(1)));
  EXPECT_THROW(cab::distill::group_heads(six, 4), cab::Error);
}

TEST_F(BaselinesTest, MohawkStagesSwitchAtTheirBudgets) {
  auto m = [&](const std::string& unit, double s1, double s2, int64_t steps = 10) {
    cab::config::Section o;
    o.set("unit", unit).set("stage1", s1).set("stage2", s2).set("stage1_lr", 0.5).set("stage3_lr", 2.0);
    return method("mohawk", o, vit(), vim(), steps);
  };
  auto stages = [](const cab::Method& method, int64_t steps) {
    std::string out;
    for (int64_t s = 0; s < steps; ++s) out += method.stage(s).substr(0, 1);
    return out;
  };
  EXPECT_EQ(stages(*m("steps", 2, 3), 10), "mmhhhkkkkk");
  EXPECT_EQ(stages(*m("epochs", 0.5, 0.25), 10), "mmhkkkkkkk");     // 4 steps per epoch
  EXPECT_EQ(stages(*m("tokens", 300, 100), 10), "mmmhkkkkkk");      // 2 examples × 50 tokens per step
  EXPECT_EQ(stages(*m("fraction", 0.1, 0.3), 10), "mhhhkkkkkk");
  EXPECT_EQ(stages(*m("steps", 0, 0), 3), "kkk");
  const auto schedule = m("steps", 2, 3);
  EXPECT_EQ(schedule->lr_scale(1), 0.5);
  EXPECT_EQ(schedule->lr_scale(2), 1.0);
  EXPECT_EQ(schedule->lr_scale(9), 2.0);
  EXPECT_THROW(m("steps", 8, 3), cab::ConfigError);  // more than the run
  EXPECT_THROW(method("mohawk", {}, vit(16), vim(8)), cab::ConfigError);  // widths differ
}

TEST_F(BaselinesTest, MohawkStage1IsTheFrobeniusDistanceToTheAttentionAndTrainsOnlyTheMixers) {
  auto teacher = vit();
  auto student = vim();
  cab::config::Section o;
  o.set("unit", std::string("steps")).set("stage1", 5.0).set("stage2", 0.0).set("chunk_layers", std::int64_t{1});
  auto m = method("mohawk", o, teacher, student);
  const cab::LossTerms loss = m->loss(batch_, 0);
  EXPECT_TRUE(loss.backpropagated);
  EXPECT_EQ(m->stage(0), "matrix");
  // gradients: the mixers got them, the rest of the student did not
  EXPECT_TRUE(param(*student, "layers.0.mixer.x_proj.weight").grad().defined());
  EXPECT_TRUE(param(*student, "layers.1.mixer.A_b_log").grad().defined());
  EXPECT_FALSE(param(*student, "layers.0.norm.weight").grad().defined());
  EXPECT_FALSE(param(*student, "patch_embed.proj.weight").grad().defined());
  // by hand: each student layer on the teacher's (reordered) layer input; both scans' matrices combined, channels
  // averaged per head (16 = 2 heads × 8 channels... d_inner 32: 2 × 16), Frobenius per (example, head)
  at::NoGradGuard no_grad;
  cab::TapRequest r;
  r.add("hidden_in").add("attn");
  const auto t = teacher->forward(batch_.inputs, r);
  double expected = 0;
  for (int l = 0; l < 2; ++l) {
    cab::Taps taps;
    student->forward_layer(l, to_vim_order(t.taps.at({"hidden_in", l}), 1), cab::TapRequest().add("mixing_matrix"), taps);
    const at::Tensor mf = taps.at({"mixing_matrix", l, cab::Direction::forward});
    const at::Tensor mb = taps.at({"mixing_matrix", l, cab::Direction::backward}).flip({2, 3});
    const at::Tensor a = to_vim_order(to_vim_order(t.taps.at({"attn", l}), 2), 3);
    double sum = 0;
    for (int64_t e = 0; e < 3; ++e)
      for (int64_t h = 0; h < 2; ++h) {
        const at::Tensor mh = ((mf[e] + mb[e]) / 2).narrow(0, h * 16, 16).mean(0);
        sum += (mh - a[e][h]).pow(2).sum().sqrt().item<double>();
      }
    expected += sum / 6 / 2;
  }
  EXPECT_NEAR(loss.total.item<double>(), expected, 1e-5 * expected);
  EXPECT_NEAR(loss.terms.at("matrix").item<double>(), expected, 1e-5 * expected);
}

TEST_F(BaselinesTest, MohawkStage2IsTheHiddenStateDistanceAndStage3IsSoftKd) {
  auto teacher = vit();
  auto student = vim();
  cab::config::Section o;
  o.set("unit", std::string("steps")).set("stage1", 1.0).set("stage2", 1.0).set("chunk_layers", std::int64_t{2});
  o.set("tau", 2.0).set("alpha", 0.5);
  auto m = method("mohawk", o, teacher, student);
  const cab::LossTerms hidden = m->loss(batch_, 1);
  EXPECT_EQ(m->stage(1), "hidden");
  EXPECT_TRUE(param(*student, "layers.0.norm.weight").grad().defined());  // stage 2 trains whole layers
  EXPECT_FALSE(param(*student, "head.weight").grad().defined());
  {
    at::NoGradGuard no_grad;
    cab::TapRequest r;
    r.add("hidden_in").add("hidden_out");
    const auto t = teacher->forward(batch_.inputs, r);
    double expected = 0;
    for (int l = 0; l < 2; ++l) {
      cab::Taps taps;
      const at::Tensor out = student->forward_layer(l, to_vim_order(t.taps.at({"hidden_in", l}), 1), {}, taps);
      expected += (out - to_vim_order(t.taps.at({"hidden_out", l}), 1)).pow(2).sum(-1).sqrt().mean().item<double>() / 2;
    }
    EXPECT_NEAR(hidden.total.item<double>(), expected, 1e-5 * expected);
  }
  const cab::LossTerms kd = m->loss(batch_, 2);
  EXPECT_EQ(m->stage(2), "kd");
  EXPECT_FALSE(kd.backpropagated);
  kd.total.backward();
  EXPECT_TRUE(param(*student, "head.weight").grad().defined());  // stage 3 trains everything
  at::NoGradGuard no_grad;
  const at::Tensor s = student->forward(batch_.inputs, {}).logits, tl = teacher->forward(batch_.inputs, {}).logits;
  const at::Tensor p = at::log_softmax(tl / 2.0, -1), q = at::log_softmax(s / 2.0, -1);
  const double expected = ((p.exp() * (p - q)).sum(-1).mean() * 4.0 + 0.5 * at::cross_entropy_loss(s, batch_.targets)).item<double>();
  EXPECT_NEAR(kd.total.item<double>(), expected, 1e-5);
}

TEST_F(BaselinesTest, AttnWeightReuseCopiesTheTeachersProjectionsThenDistills) {
  auto teacher = vit();
  auto student = vim();
  auto m = method("attn-weight-reuse", cab::config::Section().set("tau", 1.0).set("alpha", 0.0), teacher, student);
  const auto roles = teacher->weights_by_role();
  // vim layer 1 ← teacher layer 1 (proportional, equal depth); x_proj rows [rank | B (4) | C (4)], d_inner 32
  const int64_t rank = 1, n = 4;
  const at::Tensor x_proj = param(*student, "layers.1.mixer.x_proj.weight");
  EXPECT_TRUE(at::equal(x_proj.narrow(0, rank, n).narrow(1, 0, 16), roles.at("layers.1.attn.k.weight").narrow(0, 0, n)));
  EXPECT_TRUE(at::equal(x_proj.narrow(0, rank + n, n).narrow(1, 0, 16), roles.at("layers.1.attn.q.weight").narrow(0, 0, n)));
  EXPECT_TRUE(at::equal(param(*student, "patch_embed.proj.weight"), roles.at("embed.patch.weight")));
  ASSERT_TRUE(recorded_.count("init_from_teacher"));
  EXPECT_NE(recorded_["init_from_teacher"].find("copied"), std::string::npos);
  const cab::LossTerms loss = m->loss(batch_, 0);
  at::NoGradGuard no_grad;
  const at::Tensor s = student->forward(batch_.inputs, {}).logits, t = teacher->forward(batch_.inputs, {}).logits;
  const at::Tensor p = at::log_softmax(t, -1), q = at::log_softmax(s, -1);
  EXPECT_NEAR(loss.total.item<double>(), (p.exp() * (p - q)).sum(-1).mean().item<double>(), 1e-6);
}

TEST_F(BaselinesTest, TransMambaSubclonesTheImportantDimensionsAndWeighsLayersByDistance) {
  auto teacher = vit(16);
  auto student = vim(8);
  auto m = method("transmamba", cab::config::Section().set("alpha", 0.25), teacher, student);
  // subcloning: the 8 teacher dimensions with the most embedding energy (patch rows + position entries)
  const auto roles = teacher->weights_by_role();
  const at::Tensor energy = roles.at("embed.patch.weight").pow(2).sum(at::IntArrayRef{1, 2, 3}) + roles.at("embed.pos").pow(2).sum(at::IntArrayRef{0, 1});
  std::vector<int64_t> dims(16);
  std::iota(dims.begin(), dims.end(), 0);
  std::sort(dims.begin(), dims.end(), [&](int64_t a, int64_t b) { return energy[a].item<double>() > energy[b].item<double>(); });
  dims.resize(8);
  std::sort(dims.begin(), dims.end());
  const at::Tensor idx = at::tensor(dims, at::TensorOptions(at::kLong));
  EXPECT_TRUE(at::equal(param(*student, "patch_embed.proj.weight"), roles.at("embed.patch.weight").index_select(0, idx)));
  EXPECT_TRUE(at::equal(param(*student, "head.weight"), roles.at("head.weight").index_select(1, idx)));
  EXPECT_TRUE(at::equal(param(*student, "layers.0.norm.weight"), roles.at("layers.0.norm1.weight").index_select(0, idx)));
  ASSERT_TRUE(recorded_.count("subclone"));
  EXPECT_NE(recorded_["subclone"].find("8 of 16"), std::string::npos);
  // the loss by hand: projector P_l(zero-padded y) vs the teacher layer output (reversed for the backward scan)
  const cab::LossTerms loss = m->loss(batch_, 0);
  at::NoGradGuard no_grad;
  cab::TapRequest sr, tr;
  sr.add("y");
  tr.add("hidden_out");
  const auto s = student->forward(batch_.inputs, sr);
  const auto t = teacher->forward(batch_.inputs, tr);
  const auto modules = m->named_modules();
  double l_fwd = 0, l_bwd = 0;
  std::vector<double> df, db;
  for (int l = 0; l < 2; ++l) {
    auto* proj = (*modules.find("projectors." + std::to_string(l)))->as<torch::nn::Sequential>();
    const at::Tensor target = to_vim_order(t.taps.at({"hidden_out", l}), 1);
    auto dist = [&](cab::Direction dir, const at::Tensor& tf) {
      const at::Tensor y = s.taps.at({"y", l, dir});  // [b, L, 16]: d_inner 16 = the teacher's width, no padding
      return 1 - at::cosine_similarity(proj->forward(y), tf, -1).mean().item<double>();
    };
    df.push_back(dist(cab::Direction::forward, target));
    db.push_back(dist(cab::Direction::backward, target.flip(1)));
  }
  for (const auto* d : {&df, &db}) {
    const double sum = (*d)[0] + (*d)[1];
    (d == &df ? l_fwd : l_bwd) = ((*d)[0] * (*d)[0] + (*d)[1] * (*d)[1]) / sum;
  }
  const double ce = at::cross_entropy_loss(s.logits, batch_.targets).item<double>();
  EXPECT_NEAR(loss.terms.at("fwd").item<double>(), l_fwd, 1e-5);
  EXPECT_NEAR(loss.terms.at("bwd").item<double>(), l_bwd, 1e-5);
  EXPECT_NEAR(loss.total.item<double>(), 0.25 * ce + 0.75 * (l_fwd + l_bwd), 1e-5);
}

namespace {
class BaselinesSweep : public cab::test::TempDirTest {};
}  // namespace

TEST_F(BaselinesSweep, EveryBaselineRunsFromTheExampleSweepFile) {
  const std::string db = (dir_ / "cab.sqlite").string();
  const auto r = cab::test::run_command(std::string(CAB_TEST_BIN_DIR) + "/cab-sweep --db " + db + " --plain " +
                                        CAB_TEST_SOURCE_DIR + "/sweeps/examples/baselines.toml 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  cab::store::Store store(db);
  const auto runs = store.runs(store.find_sweep("baselines-smoke")->id);
  ASSERT_EQ(runs.size(), 3u);
  std::map<std::string, std::map<std::string, std::string>> by_method;
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, cab::store::Status::finished) << run.error;
    const auto params = store.params(run.id);
    by_method[params.at("method.name")] = store.summary(run.id);
    if (params.at("method.name") == "\"attn-weight-reuse\"" || params.at("method.name") == "\"transmamba\"") {
      const auto prov = store.provenance(run.id);
      EXPECT_TRUE(prov.count("init_from_teacher") || prov.count("subclone")) << params.at("method.name");
    }
  }
  ASSERT_EQ(by_method.size(), 3u);
  EXPECT_EQ(by_method.at("\"mohawk\"").at("stages"), "matrix@0,hidden@2,kd@4");
  for (const auto& [method, summary] : by_method) EXPECT_TRUE(summary.count("top1")) << method;
}
