// MOHAWK (Bick et al. 2024), three stages on a budget each:
//   1 "matrix"  matrix orientation: student layer l is fed the teacher's input to its paired layer g(l) (in the
//               student's token order) and its materialized mixing matrix M_l (both scans combined for a
//               bidirectional student: the backward scan fills the upper triangle; channels averaged per teacher
//               head) is pulled towards the teacher's attention probabilities A_g(l):
//                 L1 = mean over paired layers of mean over (example, head) of ‖M_l − A_g(l)‖_F
//   2 "hidden"  hidden-state alignment: the same inputs, the layer's output towards the teacher layer's output:
//                 L2 = mean over paired layers of mean over (example, token) of ‖block_l(h_g(l)) − out_g(l)‖₂
//   3 "kd"      end to end: τ²·KL(teacher ‖ student) + α·CE.
// Budgets per stage (stage 3 takes the rest of the run) in steps, epochs, tokens or a fraction of the run; a
// learning-rate factor and the trained part (the mixers, whole layers, or everything) per stage; the stage is
// recorded with the metrics (stage/<name>). The layers of stages 1-2 are independent given the teacher's inputs,
// so they are back-propagated `chunk_layers` at a time: only that many materialized [b, channels, L, L] matrices
// (and their graphs) are alive at once — this is the memory the paper compares CAB against.
// Needs a student with forward_layer/layer_modules and the same d_model as the teacher (MOHAWK copies nothing
// across widths).
#include <torch/nn/module.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <array>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/distill.h>
#include <cab/plugin/layer_map.h>
#include <cab/util/error.h>

#include "baselines.h"

namespace cab::baselines {
namespace {

using cab::distill::in_student_order;

constexpr std::array<const char*, 3> kStages{"matrix", "hidden", "kd"};

class Mohawk final : public cab::Method {
 public:
  explicit Mohawk(const cab::config::Section& o)
      : options_(o), tau_(o.number("tau")), alpha_(o.number("alpha")), chunk_(o.integer("chunk_layers")) {
    for (int i = 0; i < 3; ++i) {
      lr_[i] = o.number(fmt::format("stage{}_lr", i + 1));
      train_[i] = o.string(fmt::format("stage{}_train", i + 1));
    }
  }

  bool needs_teacher() const override { return true; }

  void setup(const cab::MethodContext& context) override {
    require_models(context, "mohawk");
    context_ = context;
    const auto s = context.student->shape(), t = context.teacher->shape();
    if (s.d_model != t.d_model)
      throw cab::ConfigError(fmt::format("method mohawk: the student's d_model {} differs from the teacher's {}; "
                                         "stages 1-2 feed student layers the teacher's hidden states, so they must "
                                         "match", s.d_model, t.d_model));
    map_ = cab::layer_map(options_, s.num_layers, t.num_layers);
    const std::string unit = options_.string("unit");
    end_[0] = budget_steps(options_.number("stage1"), unit, context, "method.stage1");
    end_[1] = end_[0] + budget_steps(options_.number("stage2"), unit, context, "method.stage2");
    if (end_[1] > context.total_steps)
      throw cab::ConfigError(fmt::format("method mohawk: stage1 + stage2 = {} steps exceed the run's {} steps "
                                         "(stage 3 takes the rest)", end_[1], context.total_steps));
    record(context, "mohawk_stages", fmt::format("matrix [0, {}), hidden [{}, {}), kd [{}, {})", end_[0], end_[0],
                                                 end_[1], end_[1], context.total_steps));
  }

  int stage_index(int64_t step) const { return step < end_[0] ? 0 : step < end_[1] ? 1 : 2; }
  std::string stage(int64_t step) const override { return kStages[static_cast<size_t>(stage_index(step))]; }
  double lr_scale(int64_t step) const override { return lr_[stage_index(step)]; }

  cab::LossTerms loss(const cab::Batch& batch, int64_t step) override {
    const int st = stage_index(step);
    if (st != trainable_stage_) set_trainable(st);
    if (st == 2) return end_to_end(batch);
    return layerwise(batch, st == 0);
  }

 private:
  /// Only the stage's part of the student gets gradients (the optimizer skips parameters without one).
  void set_trainable(int st) {
    cab::Student& student = *context_.student;
    const std::string& part = train_[st];
    for (auto& p : student.parameters()) p.set_requires_grad(part == "all");
    if (part != "all")
      for (int64_t l = 0; l < student.shape().num_layers; ++l) {
        const cab::LayerModules m = student.layer_modules(static_cast<int>(l));
        for (auto& p : (part == "mixer" ? m.mixer : m.block)->parameters()) p.set_requires_grad(true);
      }
    trainable_stage_ = st;
  }

  cab::LossTerms end_to_end(const cab::Batch& batch) {
    const at::Tensor s = context_.student->forward(batch.inputs, {}).logits;
    at::Tensor t;
    {
      at::NoGradGuard no_grad;
      t = context_.teacher->forward(batch.inputs, {}).logits;
    }
    return soft_kd_terms(s, t, batch.targets, tau_, alpha_);
  }

  /// Stages 1 and 2: per paired layer, the student layer on the teacher's input; back-propagated in chunks.
  cab::LossTerms layerwise(const cab::Batch& batch, bool matrix) {
    cab::Student& student = *context_.student;
    const cab::Teacher& teacher = *context_.teacher;
    std::vector<int> s_layers, t_layers;
    for (size_t l = 0; l < map_.size(); ++l)
      if (map_[l] >= 0) s_layers.push_back(static_cast<int>(l)), t_layers.push_back(static_cast<int>(map_[l]));
    cab::TapRequest request;
    request.add(std::string(cab::tap::kHiddenIn), t_layers);
    request.add(std::string(matrix ? cab::tap::kAttention : cab::tap::kHiddenOut), t_layers);
    cab::ModelOutput t;
    {
      at::NoGradGuard no_grad;
      t = context_.teacher->forward(batch.inputs, request);
    }
    const double pairs = static_cast<double>(s_layers.size());
    at::Tensor total = at::zeros({}, at::kDouble);
    for (size_t begin = 0; begin < s_layers.size(); begin += static_cast<size_t>(chunk_)) {
      at::Tensor chunk_loss;
      for (size_t i = begin; i < std::min(s_layers.size(), begin + static_cast<size_t>(chunk_)); ++i) {
        const int l = s_layers[i], g = t_layers[i];
        const at::Tensor h = in_student_order(t.taps.at({std::string(cab::tap::kHiddenIn), g}), {1}, student, teacher)
                                 .to(at::kFloat);
        cab::Taps taps;
        cab::TapRequest want;
        if (matrix) want.add(std::string(cab::tap::kMixing), {l});
        const at::Tensor out = student.forward_layer(l, h, want, taps);
        at::Tensor d;
        if (matrix) {
          const at::Tensor a = in_student_order(t.taps.at({std::string(cab::tap::kAttention), g}), {2, 3}, student,
                                                teacher).to(at::kFloat);            // [b, H, L, L]
          const at::Tensor m = cab::distill::group_heads(cab::distill::combined_mixing(taps, l), a.size(1));
          d = (m - a).flatten(2).norm(2, -1).mean();                                // Frobenius per (example, head)
        } else {
          const at::Tensor o = in_student_order(t.taps.at({std::string(cab::tap::kHiddenOut), g}), {1}, student,
                                                teacher).to(at::kFloat);
          d = (out.to(at::kFloat) - o).norm(2, -1).mean();                          // L2 per token
        }
        chunk_loss = chunk_loss.defined() ? chunk_loss + d / pairs : d / pairs;
      }
      chunk_loss.backward();
      total = total + chunk_loss.detach().to(at::kCPU, at::kDouble);
    }
    cab::LossTerms out;
    out.total = total;
    out.terms[matrix ? "matrix" : "hidden"] = total;
    out.backpropagated = true;
    return out;
  }

  cab::config::Section options_;
  double tau_, alpha_;
  int64_t chunk_;
  std::array<double, 3> lr_{};
  std::array<std::string, 3> train_;
  std::array<int64_t, 2> end_{};
  int trainable_stage_ = -1;
  std::vector<int64_t> map_;
  cab::MethodContext context_;
};

}  // namespace

void describe_mohawk(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("unit", Type::string, "unit of stage1 and stage2: steps, epochs, tokens, or fraction (of the run's steps)")
      .fallback(std::string("fraction")).one_of({"steps", "epochs", "tokens", "fraction"});
  s.add("stage1", Type::number, "budget of stage 1 (matrix orientation) in `unit`").fallback(0.2).min(0);
  s.add("stage2", Type::number, "budget of stage 2 (hidden-state alignment) in `unit`; stage 3 takes the rest")
      .fallback(0.2).min(0);
  const std::array<const char*, 3> parts{"mixer", "layer", "all"};
  for (int i = 1; i <= 3; ++i) {
    s.add(fmt::format("stage{}_lr", i), Type::number, fmt::format("factor on the scheduled learning rate in stage {}", i))
        .fallback(1.0).min(0);
    s.add(fmt::format("stage{}_train", i), Type::string,
          fmt::format("what stage {} trains: mixer (the sequence mixers), layer (whole blocks) or all", i))
        .fallback(std::string(parts[static_cast<size_t>(i - 1)])).one_of({"mixer", "layer", "all"});
  }
  s.add("chunk_layers", Type::integer, "stages 1-2: layers materialized and back-propagated together")
      .fallback(std::int64_t{1}).min(1);
  describe_soft_kd(s);
  cab::describe_layer_map(s);
}

std::shared_ptr<cab::Component> create_mohawk(const cab::config::Section& o) { return std::make_shared<Mohawk>(o); }

}  // namespace cab::baselines
