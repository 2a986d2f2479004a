// attn-weight-reuse: the student starts from the teacher's weights through Student::init_from_teacher (per paired
// layer C ← W_Q, B ← W_K, the x half of in_proj ← W_V, out_proj ← W_O; embeddings, norms, MLPs and head where the
// shapes allow, the leading block where only sizes differ), what was copied and what not recorded in the run's
// provenance ("init_from_teacher"); then soft KD: τ²·KL(teacher ‖ student) + α·CE.
#include <torch/nn/module.h>

#include <ATen/ATen.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/layer_map.h>

#include "baselines.h"

namespace cab::baselines {
namespace {

class AttnWeightReuse final : public cab::Method {
 public:
  explicit AttnWeightReuse(const cab::config::Section& o)
      : options_(o), tau_(o.number("tau")), alpha_(o.number("alpha")) {}

  bool needs_teacher() const override { return true; }

  void setup(const cab::MethodContext& context) override {
    require_models(context, "attn-weight-reuse");
    context_ = context;
    const auto map = cab::layer_map(options_, context.student->shape().num_layers, context.teacher->shape().num_layers);
    const cab::InitReport report = context.student->init_from_teacher(context.teacher->weights_by_role(), map);
    record(context, "init_from_teacher", report.str());
  }

  cab::LossTerms loss(const cab::Batch& batch, int64_t /*step*/) override {
    const at::Tensor s = context_.student->forward(batch.inputs, {}).logits;
    at::Tensor t;
    {
      at::NoGradGuard no_grad;
      t = context_.teacher->forward(batch.inputs, {}).logits;
    }
    return soft_kd_terms(s, t, batch.targets, tau_, alpha_);
  }

 private:
  cab::config::Section options_;
  double tau_, alpha_;
  cab::MethodContext context_;
};

}  // namespace

void describe_reuse(cab::config::Schema& s) {
  describe_soft_kd(s);
  cab::describe_layer_map(s);
}

std::shared_ptr<cab::Component> create_reuse(const cab::config::Section& o) { return std::make_shared<AttnWeightReuse>(o); }

}  // namespace cab::baselines
