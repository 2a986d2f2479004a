// The distillation objectives of DESIGN §3 that need no special training stages: `vanilla` (the student on the
// labels alone), `soft-kd`, `hard-kd`, `cab` (soft KD + λ(t)·the alignment's loss), and `train-teacher` (the
// teacher itself trained on the labels, so later runs can distill from it).
//
// Logits are [batch, classes] for classifiers or [batch, L, vocab] for language models (every position is a
// prediction of the next token); both are flattened to rows before the losses.
//   soft-kd:  τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)) + α·CE(student, labels)
//   hard-kd:  CE(student, argmax teacher) + α·CE(student, labels)                          (DeiT's hard distillation)
//   cab:      soft-kd + λ(t)·L_align, λ(t) = λ (constant), λ until epoch E then 0 (early-stop), or λ·(1 − t/T) (decay)
#include <torch/nn/module.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/distill.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

namespace {

using cab::distill::cross_entropy;
using cab::distill::logit_rows;
using cab::distill::soft_kd;

enum class Objective { vanilla, soft, hard, cab, teacher };

class KdMethod final : public cab::Method {
 public:
  KdMethod(Objective objective, const cab::config::Section& o) : objective_(objective) {
    if (objective == Objective::soft || objective == Objective::hard || objective == Objective::cab) {
      alpha_ = o.number("alpha");
      if (objective != Objective::hard) tau_ = o.number("tau");
    }
    if (objective == Objective::cab) {
      lambda_ = o.number("lambda");
      schedule_ = o.string("lambda_schedule");
      stop_epoch_ = o.number("stop_epoch");
    }
  }

  bool needs_teacher() const override { return objective_ != Objective::vanilla && objective_ != Objective::teacher; }
  bool uses_alignment() const override { return objective_ == Objective::cab; }
  cab::Trains trains() const override { return objective_ == Objective::teacher ? cab::Trains::teacher : cab::Trains::student; }

  void setup(const cab::MethodContext& context) override {
    context_ = context;
    if (objective_ == Objective::cab && !context.alignment)
      throw cab::ConfigError("method cab needs an [alignment] table (e.g. name = \"cab-bc\") and a [bridge] table");
  }

  /// The stage a step belongs to: "align" while λ(t) > 0, then "kd" (for the record).
  std::string stage(int64_t step) const override {
    if (objective_ != Objective::cab) return "main";
    return lambda_at(step) > 0 ? "align" : "kd";
  }

  double lambda_at(int64_t step) const {
    if (schedule_ == "early-stop") {
      const double epoch = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, context_.steps_per_epoch));
      return epoch < stop_epoch_ ? lambda_ : 0.0;
    }
    if (schedule_ == "decay")
      return lambda_ * std::max(0.0, 1.0 - static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, context_.total_steps)));
    return lambda_;
  }

  cab::LossTerms loss(const cab::Batch& batch, int64_t step) override {
    cab::LossTerms out;
    if (objective_ == Objective::teacher) {
      out.total = cross_entropy(context_.teacher->forward(batch.inputs, {}).logits, batch.targets);
      out.terms["ce"] = out.total.detach();
      return out;
    }
    const double lambda = objective_ == Objective::cab ? lambda_at(step) : 0.0;
    const bool align = lambda > 0;
    const auto t_start = std::chrono::steady_clock::now();
    const cab::ModelOutput s = context_.student->forward(batch.inputs, align ? context_.alignment->student_taps() : cab::TapRequest{});
    const at::Tensor ce = cross_entropy(s.logits, batch.targets);
    if (objective_ == Objective::vanilla) {
      out.total = ce;
      out.terms["ce"] = ce.detach();
      return out;
    }
    cab::ModelOutput t;
    {
      at::NoGradGuard no_grad;
      t = context_.teacher->forward(batch.inputs, align ? context_.alignment->teacher_taps() : cab::TapRequest{});
    }
    at::Tensor kd;
    if (objective_ == Objective::hard) {
      kd = cross_entropy(s.logits, logit_rows(t.logits).argmax(-1));
    } else {
      kd = soft_kd(s.logits, t.logits, tau_);
    }
    out.total = kd + alpha_ * ce;
    out.terms["kd"] = kd.detach();
    out.terms["ce"] = ce.detach();
    if (objective_ == Objective::cab) {
      out.stats["lambda"] = lambda;
      if (align) {
        // The alignment's share of the forward loss computation. On a GPU the time is real only with the device
        // synchronized around it, and those two waits idle the GPU (a tenth of the DeiT-Tiny → Vim-Tiny step
        // on an H100), so it is measured every 100th step there; on a CPU every step.
        const bool cuda = s.logits.is_cuda();
        const bool measure = !cuda || step % 100 == 0;
        if (cuda && measure) s.logits.sum().item<float>();
        const auto a_start = std::chrono::steady_clock::now();
        cab::LossTerms a = context_.alignment->loss(s.taps, t.taps);
        if (cuda && measure) a.total.item<float>();
        const auto end = std::chrono::steady_clock::now();
        out.total = out.total + lambda * a.total;
        out.terms["align"] = a.total.detach();
        for (auto& [name, term] : a.terms) out.terms["align/" + name] = term;
        if (measure)
          out.stats["align_share"] = std::chrono::duration<double>(end - a_start).count() /
                                     std::max(1e-12, std::chrono::duration<double>(end - t_start).count());
      }
    }
    return out;
  }

 private:
  Objective objective_;
  double alpha_ = 0, tau_ = 1, lambda_ = 0, stop_epoch_ = 0;
  std::string schedule_ = "constant";
  cab::MethodContext context_;
};

void describe_kd(cab::config::Schema& s, bool temperature) {
  using cab::config::Type;
  if (temperature) s.add("tau", Type::number, "softmax temperature τ of the KL term").fallback(1.0).min(1e-6);
  s.add("alpha", Type::number, "weight α of the cross-entropy on the labels").fallback(1.0).min(0);
}

void describe_none(cab::config::Schema&) {}
void describe_soft(cab::config::Schema& s) { describe_kd(s, true); }
void describe_hard(cab::config::Schema& s) { describe_kd(s, false); }
void describe_cab(cab::config::Schema& s) {
  using cab::config::Type;
  describe_kd(s, true);
  s.add("lambda", Type::number, "weight λ of the alignment loss (paper: 3)").fallback(3.0).min(0);
  s.add("lambda_schedule", Type::string, "constant, early-stop (λ until stop_epoch, then 0) or decay (linear to 0)")
      .fallback(std::string("constant")).one_of({"constant", "early-stop", "decay"});
  s.add("stop_epoch", Type::number, "early-stop: the epoch at which alignment stops").fallback(1.0).min(0);
}

template <Objective O>
std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  return std::make_shared<KdMethod>(O, o);
}

}  // namespace

CAB_PLUGIN("method-kd", "0.1.0",
           CAB_FACTORY(method, "vanilla", "the student trained on the labels alone (no teacher)", describe_none,
                       create<Objective::vanilla>),
           CAB_FACTORY(method, "soft-kd", "τ²·KL(teacher ‖ student) at temperature τ + α·CE", describe_soft,
                       create<Objective::soft>),
           CAB_FACTORY(method, "hard-kd", "CE on the teacher's argmax + α·CE (DeiT)", describe_hard, create<Objective::hard>),
           CAB_FACTORY(method, "cab", "soft KD + λ(t)·attention-bridge alignment (needs [alignment] and [bridge])",
                       describe_cab, create<Objective::cab>),
           CAB_FACTORY(method, "train-teacher", "trains the [teacher] on the labels and saves it for later runs",
                       describe_none, create<Objective::teacher>))
