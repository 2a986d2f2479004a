// The KD methods and the CAB alignment on real models: the committed tiny GPT-2 teacher and Mamba student
// (both from the Hugging Face parity fixtures, vocabulary 96). Each loss is checked against its formula.
#include <gtest/gtest.h>

#include <torch/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include <ATen/ATen.h>

#include "cab/config/section.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/train/autocast.h"
#include "test_support.h"

using cab::plugin::Kind;

namespace {

std::string fixture(const std::string& family) { return std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/" + family; }

at::Tensor rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

class MethodsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.discover({CAB_TEST_PLUGIN_DIR});
    cab::config::Section t, s;
    t.set("checkpoint", fixture("gpt2"));
    s.set("checkpoint", fixture("mamba"));
    teacher_ = registry_.create_as<cab::Teacher>(Kind::teacher, "gpt2", t);
    student_ = registry_.create_as<cab::Student>(Kind::student, "mamba", s);
    for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
    at::manual_seed(0);
    batch_.inputs = at::randint(0, 96, {2, 10}, at::kLong);
    batch_.targets = at::randint(0, 96, {2, 10}, at::kLong);
  }
  std::shared_ptr<cab::Alignment> alignment(cab::config::Section o) {
    auto a = registry_.create_as<cab::Alignment>(Kind::alignment, "cab-bc", o);
    cab::AlignmentContext context{teacher_.get(), student_.get(), {}};
    context.make_bridge = [&](int64_t in, int64_t out) {
      cab::config::Section b;
      b.set("in_features", in).set("out_features", out).set("hidden", std::int64_t{16});
      return registry_.create_as<cab::Bridge>(Kind::bridge, "mlp", b);
    };
    a->setup(context);
    return a;
  }
  std::shared_ptr<cab::Method> method(const std::string& name, cab::config::Section o,
                                      std::shared_ptr<cab::Alignment> align = nullptr, int64_t steps = 100) {
    auto m = registry_.create_as<cab::Method>(Kind::method, name, o);
    cab::MethodContext context;
    context.teacher = teacher_;
    context.student = student_;
    context.alignment = std::move(align);
    context.total_steps = steps;
    context.steps_per_epoch = 10;
    m->setup(context);
    return m;
  }
  cab::plugin::Registry registry_;
  std::shared_ptr<cab::Teacher> teacher_;
  std::shared_ptr<cab::Student> student_;
  cab::Batch batch_;
};

}  // namespace

TEST_F(MethodsTest, SoftKdIsTemperatureScaledKlPlusCrossEntropy) {
  cab::config::Section o;
  o.set("tau", 2.0).set("alpha", 0.5);
  const auto loss = method("soft-kd", o)->loss(batch_, 0);
  at::NoGradGuard no_grad;
  const at::Tensor s = rows(student_->forward(batch_.inputs, {}).logits), t = rows(teacher_->forward(batch_.inputs, {}).logits);
  const at::Tensor p = at::softmax(t / 2.0, -1);
  const at::Tensor kl = (p * (at::log_softmax(t / 2.0, -1) - at::log_softmax(s / 2.0, -1))).sum(-1).mean() * 4.0;
  const at::Tensor ce = at::cross_entropy_loss(s, batch_.targets.reshape({-1}));
  EXPECT_NEAR(loss.terms.at("kd").item<double>(), kl.item<double>(), 1e-6);
  EXPECT_NEAR(loss.total.item<double>(), (kl + 0.5 * ce).item<double>(), 1e-6);
  EXPECT_GT(kl.item<double>(), 0.0);
}

TEST_F(MethodsTest, HardKdUsesTheTeachersArgmax) {
  cab::config::Section o;
  o.set("alpha", 0.0);
  const auto loss = method("hard-kd", o)->loss(batch_, 0);
  at::NoGradGuard no_grad;
  const at::Tensor s = rows(student_->forward(batch_.inputs, {}).logits), t = rows(teacher_->forward(batch_.inputs, {}).logits);
  EXPECT_NEAR(loss.total.item<double>(), at::cross_entropy_loss(s, t.argmax(-1)).item<double>(), 1e-6);
}

TEST_F(MethodsTest, VanillaNeedsNoTeacherAndTrainTeacherTrainsIt) {
  auto vanilla = registry_.create_as<cab::Method>(Kind::method, "vanilla", {});
  EXPECT_FALSE(vanilla->needs_teacher());
  auto teach = registry_.create_as<cab::Method>(Kind::method, "train-teacher", {});
  EXPECT_EQ(teach->trains(), cab::Trains::teacher);
}

TEST_F(MethodsTest, CabBcLossIsTheMeanOfBridgedMses) {
  for (const std::string kernel : {"none", "softmax"})
  for (const char* form : {"gram", ""})  // the Gram form (for "none"), or (by default) the bridges' outputs
  for (const char* group : {"1", ""}) {  // the bridges one by one, or (by default) all in one batched group
    ::setenv("CAB_BRIDGE_GROUP", group, 1);
    ::setenv("CAB_ALIGN_FORM", form, 1);
    cab::config::Section o;
    o.set("target_kernel", kernel);
    auto align = alignment(o);
    ::unsetenv("CAB_ALIGN_FORM");
    const auto s = student_->forward(batch_.inputs, align->student_taps());
    const auto t = teacher_->forward(batch_.inputs, align->teacher_taps());
    const auto loss = align->loss(s.taps, t.taps);
    // By hand: 2 student layers ↔ 2 teacher layers (proportional), bridges phi_B_l / phi_C_l.
    at::Tensor want;
    for (int l = 0; l < 2; ++l) {
      auto children = align->named_children();
      auto phi_b = std::dynamic_pointer_cast<cab::Bridge>(children["phi_B_" + std::to_string(l)]);
      auto phi_c = std::dynamic_pointer_cast<cab::Bridge>(children["phi_C_" + std::to_string(l)]);
      ASSERT_TRUE(phi_b && phi_c);
      at::Tensor k = t.taps.at({"k", l}).detach(), q = t.taps.at({"q", l}).detach();
      if (kernel == "softmax") k = at::softmax(k, 1), q = at::softmax(q, -1);
      const at::Tensor pair = at::mse_loss(phi_b->forward(s.taps.at({"B", l})), k) +
                              at::mse_loss(phi_c->forward(s.taps.at({"C", l})), q);
      want = want.defined() ? want + pair : pair;
    }
    want = want / 2;
    EXPECT_NEAR(loss.total.item<double>(), want.item<double>(), 1e-6)
        << kernel << ", CAB_ALIGN_FORM=" << form << ", CAB_BRIDGE_GROUP=" << group;
    // And its gradients: the bridges' weights and the student's B/C projections (align_grad_to_student).
    std::vector<at::Tensor> wrt = align->parameters();
    for (const auto& p : student_->parameters())
      if (p.requires_grad()) wrt.push_back(p);
    const auto got_g = torch::autograd::grad({loss.total}, wrt, {}, true, false, true);
    const auto want_g = torch::autograd::grad({want}, wrt, {}, true, false, true);
    int compared = 0;
    for (std::size_t i = 0; i < wrt.size(); ++i) {
      ASSERT_EQ(got_g[i].defined(), want_g[i].defined()) << "parameter " << i;
      if (!want_g[i].defined()) continue;
      EXPECT_LE((got_g[i] - want_g[i]).abs().max().item<double>(), 1e-6 * (1 + want_g[i].abs().max().item<double>()))
          << "parameter " << i << ", " << kernel << ", CAB_ALIGN_FORM=" << form << ", CAB_BRIDGE_GROUP=" << group;
      ++compared;
    }
    EXPECT_GT(compared, static_cast<int>(align->parameters().size()));  // the student's projections got gradients too
    EXPECT_TRUE(loss.terms.count("B") && loss.terms.count("C"));
  }
  ::setenv("CAB_BRIDGE_GROUP", "0", 1);
  EXPECT_THROW(alignment({}), cab::ConfigError);
  ::unsetenv("CAB_BRIDGE_GROUP");
  ::setenv("CAB_ALIGN_FORM", "fast", 1);
  EXPECT_THROW(alignment({}), cab::ConfigError);
  ::unsetenv("CAB_ALIGN_FORM");
}

// On the GPU under bf16 autocast (the trainer's setting) the Gram form's loss and gradients stay as close to the
// fp32 ones as the direct form's (both ≤ 1e-2 relative for the loss, ≤ 3e-2 in norm for each gradient), and in fp32
// the two forms agree to fp32 rounding.
TEST_F(MethodsTest, CabBcGramFormOnCudaUnderBf16Autocast) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  teacher_->to(at::kCUDA);
  student_->to(at::kCUDA);
  at::manual_seed(3);
  const at::Tensor inputs = at::randint(0, 96, {16, 32}, at::kLong).to(at::kCUDA);
  struct Result {
    double loss;
    std::vector<at::Tensor> grads;
  };
  auto run = [&](const char* form, bool bf16) {
    ::setenv("CAB_ALIGN_FORM", form, 1);
    at::manual_seed(1);  // the same bridges every time
    auto align = alignment({});
    ::unsetenv("CAB_ALIGN_FORM");
    align->to(at::kCUDA);
    std::vector<at::Tensor> wrt = align->parameters();
    for (const auto& p : student_->parameters())
      if (p.requires_grad()) wrt.push_back(p);
    at::Tensor total;
    {
      cab::train::Autocast autocast(bf16);
      const auto s = student_->forward(inputs, align->student_taps());
      cab::ModelOutput t;
      {
        at::NoGradGuard no_grad;
        t = teacher_->forward(inputs, align->teacher_taps());
      }
      total = align->loss(s.taps, t.taps).total;
    }
    Result r{total.item<double>(), {}};
    for (const auto& g : torch::autograd::grad({total}, wrt, {}, false, false, true))
      r.grads.push_back(g.defined() ? g.to(at::kFloat) : g);
    return r;
  };
  const Result want = run("direct", false);
  auto errors = [&](const Result& got) {  // {loss, worst gradient} relative errors
    double worst = 0;
    for (std::size_t i = 0; i < want.grads.size(); ++i) {
      if (!want.grads[i].defined()) continue;
      const double norm = want.grads[i].norm().item<double>();
      worst = std::max(worst, (got.grads[i] - want.grads[i]).norm().item<double>() / std::max(norm, 1e-12));
    }
    return std::pair<double, double>{std::abs(got.loss - want.loss) / std::abs(want.loss), worst};
  };
  const auto gram32 = errors(run("gram", false));
  EXPECT_LE(gram32.first, 1e-5);
  EXPECT_LE(gram32.second, 1e-4);
  const auto gram16 = errors(run("gram", true)), direct16 = errors(run("direct", true));
  std::cout << "bf16 relative errors against fp32: gram loss " << gram16.first << " grad " << gram16.second
            << ", direct loss " << direct16.first << " grad " << direct16.second << "; fp32 gram " << gram32.first
            << " / " << gram32.second << "\n";
  EXPECT_LE(gram16.first, 1e-2);
  EXPECT_LE(gram16.second, 3e-2);
  EXPECT_LE(direct16.second, 3e-2);
  EXPECT_LE(gram16.second, 1.5 * direct16.second + 2e-3);
  EXPECT_GT(want.loss, 0.0);
}

TEST_F(MethodsTest, CabBcOptions) {
  cab::config::Section only_b;
  only_b.set("terms", std::string("B"));
  auto b = alignment(only_b);
  EXPECT_FALSE(b->teacher_taps().wants("q"));
  EXPECT_EQ(b->named_children().size(), 2u);  // phi_B per layer only
  cab::config::Section last;
  last.set("layer_map", std::string("last-k")).set("last_k", std::int64_t{1});
  EXPECT_EQ(alignment(last)->named_children().size(), 2u);  // B and C bridges of the last layer
  // Gradient routing: with align_grad_to_student = false only the bridges learn from the alignment.
  for (bool to_student : {true, false}) {
    cab::config::Section o;
    o.set("align_grad_to_student", to_student);
    auto a = alignment(o);
    student_->zero_grad();
    const auto s = student_->forward(batch_.inputs, a->student_taps());
    at::Tensor tk;
    cab::ModelOutput t;
    {
      at::NoGradGuard no_grad;
      t = teacher_->forward(batch_.inputs, a->teacher_taps());
    }
    a->loss(s.taps, t.taps).total.backward();
    const at::Tensor g = student_->named_parameters()["backbone.layers.0.mixer.x_proj.weight"].grad();
    const bool student_learns = g.defined() && g.abs().sum().item<double>() > 0;
    EXPECT_EQ(student_learns, to_student);
    for (const auto& p : a->parameters()) EXPECT_TRUE(p.grad().defined());
  }
}

TEST_F(MethodsTest, CabAddsLambdaTimesAlignmentWithItsSchedule) {
  cab::config::Section o;
  o.set("lambda", 3.0).set("lambda_schedule", std::string("early-stop")).set("stop_epoch", 2.0);
  auto m = method("cab", o, alignment({}));
  const auto loss = m->loss(batch_, 0);
  ASSERT_TRUE(loss.terms.count("align"));
  EXPECT_NEAR(loss.total.item<double>(),
              (loss.terms.at("kd") + loss.terms.at("ce") + 3.0 * loss.terms.at("align")).item<double>(), 1e-5);
  EXPECT_EQ(m->stage(19), "align");  // 10 steps per epoch: epochs 0 and 1 align
  EXPECT_EQ(m->stage(20), "kd");
  EXPECT_FALSE(m->loss(batch_, 25).terms.count("align"));
  EXPECT_GT(loss.stats.at("align_share"), 0.0);
  cab::config::Section d;
  d.set("lambda_schedule", std::string("decay"));
  const auto decayed = method("cab", d, alignment({}), 100)->loss(batch_, 50);
  EXPECT_DOUBLE_EQ(decayed.stats.at("lambda"), 1.5);  // λ = 3 halved half way through
  EXPECT_THROW(method("cab", {}), cab::ConfigError);  // no alignment
}

TEST(CabBcVision, BidirectionalStudentAlignsEachDirectionToReorderedTeacherTokens) {
  cab::plugin::Registry registry;
  registry.discover({CAB_TEST_PLUGIN_DIR});
  cab::config::Section common;
  common.set("image_size", std::int64_t{8}).set("patch_size", std::int64_t{4}).set("channels", std::int64_t{1})
      .set("classes", std::int64_t{3}).set("d_model", std::int64_t{16}).set("n_layer", std::int64_t{2});
  cab::config::Section t = common, s = common;
  t.set("heads", std::int64_t{2});
  s.set("d_state", std::int64_t{4});
  auto teacher = registry.create_as<cab::Teacher>(Kind::teacher, "vit", t);
  auto student = registry.create_as<cab::Student>(Kind::student, "vim", s);
  EXPECT_EQ(teacher->shape().cls_index, 0);
  EXPECT_EQ(student->shape().cls_index, 2);  // 4 patches: the class token sits at index 2 of 5
  for (const char* form : {"gram", ""}) {
    // Groups of 3 bridges: the first group holds both forward pairs and one backward pair, the second the other.
    ::setenv("CAB_BRIDGE_GROUP", "3", 1);
    ::setenv("CAB_ALIGN_FORM", form, 1);  // the Gram form, or (by default) the bridges' outputs
    auto align = registry.create_as<cab::Alignment>(Kind::alignment, "cab-bc", {});
    ::unsetenv("CAB_BRIDGE_GROUP");
    ::unsetenv("CAB_ALIGN_FORM");
    cab::AlignmentContext context{teacher.get(), student.get(), {}};
    context.make_bridge = [&](int64_t in, int64_t out) {
      cab::config::Section b;
      b.set("in_features", in).set("out_features", out);
      return registry.create_as<cab::Bridge>(Kind::bridge, "linear", b);
    };
    align->setup(context);
    EXPECT_EQ(align->named_children().size(), 8u);  // 2 layers × 2 directions × (φ_B, φ_C)
    const at::Tensor images = at::randn({3, 1, 8, 8});
    at::NoGradGuard no_grad;
    const auto so = student->forward(images, align->student_taps());
    const auto to = teacher->forward(images, align->teacher_taps());
    const double got = align->loss(so.taps, to.taps).total.item<double>();
    // By hand: teacher tokens [cls, p0, p1, p2, p3] → student layout [p0, p1, cls, p2, p3]; backward reversed.
    const at::Tensor order = at::tensor({1, 2, 0, 3, 4}, at::kLong);
    auto children = align->named_children();
    double want = 0;
    for (int l = 0; l < 2; ++l)
      for (int d = 0; d < 2; ++d) {
        const auto dir = d ? cab::Direction::backward : cab::Direction::forward;
        const std::string suffix = std::to_string(l) + (d ? "_bwd" : "");
        for (const auto& [s_tap, t_tap] : {std::pair<std::string, std::string>{"B", "k"}, {"C", "q"}}) {
          at::Tensor target = to.taps.at({t_tap, l}).index_select(1, order);
          if (d) target = target.flip({1});
          auto phi = std::dynamic_pointer_cast<cab::Bridge>(children[std::string("phi_") + s_tap + "_" + suffix]);
          want += at::mse_loss(phi->forward(so.taps.at({s_tap, l, dir})), target).item<double>();
        }
      }
    EXPECT_NEAR(got, want / 4, 1e-6) << "CAB_ALIGN_FORM=" << form;
  }
}
