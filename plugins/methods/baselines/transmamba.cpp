// TransMamba (Chen et al. 2025), three parts:
//   weight subcloning  (setup) the student's non-SSM weights come from the teacher: patch/token embeddings, class
//                      and position tokens, norms, MLPs where the student has them, head — not the attention
//                      projections (the SSM keeps its own initialization). When the teacher is wider, the student
//                      keeps the teacher's most important residual dimensions: importance_j = ‖embed.patch[j]‖² +
//                      ‖embed.pos[..., j]‖² (vision) or ‖embed.tokens[:, j]‖² (text), the energy the teacher's
//                      embedding writes into dimension j; the d_student largest, in their original order, are cut
//                      out of every teacher tensor along each dimension of size d_teacher (recorded in provenance).
//   feature projector  per paired layer an MLP P_l: the student feature (the scan output y of one direction,
//                      [b, L, d_inner]) zero-padded to max(d_inner, d_teacher), then Linear → GELU → Linear into
//                      the teacher's d_model, where the teacher's layer output lives.
//   adaptive bidirectional distillation
//                      forward scan vs the teacher layer's output, backward scan (its own reversed token order) vs
//                      the token-reversed teacher output; per layer the cosine distance d_l = 1 − mean cos(P_l(y), t),
//                      weighted by w_l = sg(d_l) / Σ_k sg(d_k) (layers further from the teacher weigh more):
//                        L = α·CE(student, labels) + (1 − α)·(Σ_l w_l d_l^fwd + Σ_l w_l d_l^bwd)
//                      (L_bwd = 0 for a unidirectional student).
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/distill.h>
#include <cab/plugin/layer_map.h>
#include <cab/util/error.h>
#include <cab/util/join.h>

#include "baselines.h"

namespace cab::baselines {

/// The teacher's residual dimensions kept for a student of width `width` (see the file comment), ascending.
std::vector<int64_t> subclone_dimensions(const cab::RoleWeights& teacher, int64_t teacher_width, int64_t width) {
  at::Tensor importance = at::zeros({teacher_width}, at::kDouble);
  auto add = [&](const char* role, int64_t dim) {
    const auto it = teacher.find(role);
    if (it == teacher.end() || it->second.dim() <= dim || it->second.size(dim) != teacher_width) return;
    const at::Tensor t = it->second.detach().to(at::kCPU, at::kDouble).movedim(dim, 0).reshape({teacher_width, -1});
    importance += t.pow(2).sum(1);
  };
  add("embed.patch.weight", 0);
  add("embed.pos", 2);
  add("embed.tokens", 1);
  std::vector<int64_t> order(static_cast<size_t>(teacher_width));
  std::iota(order.begin(), order.end(), 0);
  const auto imp = importance.contiguous();
  const double* v = imp.data_ptr<double>();
  std::stable_sort(order.begin(), order.end(), [v](int64_t a, int64_t b) { return v[a] > v[b]; });
  order.resize(static_cast<size_t>(width));
  std::sort(order.begin(), order.end());
  return order;
}

/// The teacher's weights without its attention projections, cut to `dims` along every dimension of the teacher's
/// width when the student is narrower.
cab::RoleWeights subclone(const cab::RoleWeights& teacher, int64_t teacher_width, const std::vector<int64_t>& dims) {
  cab::RoleWeights out;
  const bool cut = static_cast<int64_t>(dims.size()) < teacher_width;
  at::Tensor index;
  for (const auto& [role, tensor] : teacher) {
    if (role.find(".attn.") != std::string::npos) continue;
    at::Tensor t = tensor.detach();
    if (cut)
      for (int64_t d = 0; d < t.dim(); ++d)
        if (t.size(d) == teacher_width) t = t.index_select(d, at::tensor(dims, at::TensorOptions(at::kLong)).to(t.device()));
    out[role] = t;
  }
  return out;
}

namespace {

class TransMamba final : public cab::Method {
 public:
  explicit TransMamba(const cab::config::Section& o)
      : options_(o), alpha_(o.number("alpha")), hidden_(o.integer("projector_hidden")), subclone_(o.boolean("subclone")) {}

  bool needs_teacher() const override { return true; }

  void setup(const cab::MethodContext& context) override {
    require_models(context, "transmamba");
    context_ = context;
    cab::Student& student = *context.student;
    const cab::Teacher& teacher = *context.teacher;
    const int64_t ds = student.shape().d_model, dt = teacher.shape().d_model;
    map_ = cab::layer_map(options_, student.shape().num_layers, teacher.shape().num_layers);
    if (subclone_) {
      const cab::RoleWeights roles = teacher.weights_by_role();
      std::string kept = "all";
      std::vector<int64_t> dims(static_cast<size_t>(dt));
      std::iota(dims.begin(), dims.end(), 0);
      if (ds < dt) {
        dims = subclone_dimensions(roles, dt, ds);
        kept = fmt::format("{} of {}: {}", ds, dt, cab::join(dims, ","));
      }
      const cab::InitReport report = student.init_from_teacher(subclone(roles, dt, dims), map_);
      record(context, "subclone", fmt::format("teacher dimensions kept: {}; {}", kept, report.str()));
    }
    const auto names = student.tap_names();
    if (std::find(names.begin(), names.end(), cab::tap::kScanOutput) == names.end())
      throw cab::ConfigError(fmt::format("method transmamba needs the student's per-direction scan output (tap '{}'); "
                                         "this student offers {}", cab::tap::kScanOutput, cab::join(names, ", ")));
    const int64_t width = std::max(student.d_inner(), dt), hidden = hidden_ > 0 ? hidden_ : dt;
    projectors_ = register_module("projectors", torch::nn::ModuleList());
    for (size_t l = 0; l < map_.size(); ++l) {
      if (map_[l] < 0) continue;
      projectors_->push_back(torch::nn::Sequential(torch::nn::Linear(width, hidden), torch::nn::GELU(),
                                                   torch::nn::Linear(hidden, dt)));
    }
    width_ = width;
  }

  cab::LossTerms loss(const cab::Batch& batch, int64_t /*step*/) override {
    cab::Student& student = *context_.student;
    std::vector<int> s_layers, t_layers;
    for (size_t l = 0; l < map_.size(); ++l)
      if (map_[l] >= 0) s_layers.push_back(static_cast<int>(l)), t_layers.push_back(static_cast<int>(map_[l]));
    cab::TapRequest st, tt;
    st.add(std::string(cab::tap::kScanOutput), s_layers);
    tt.add(std::string(cab::tap::kHiddenOut), t_layers);
    const cab::ModelOutput s = student.forward(batch.inputs, st);
    cab::ModelOutput t;
    {
      at::NoGradGuard no_grad;
      t = context_.teacher->forward(batch.inputs, tt);
    }
    const bool bidirectional = student.bidirectional();
    std::vector<at::Tensor> d_fwd, d_bwd;
    for (size_t i = 0; i < s_layers.size(); ++i) {
      const at::Tensor target = cab::distill::in_student_order(
          t.taps.at({std::string(cab::tap::kHiddenOut), t_layers[i]}), {1}, student, *context_.teacher).to(at::kFloat);
      auto distance = [&](cab::Direction dir, const at::Tensor& teacher_features) {
        const at::Tensor y = s.taps.at({std::string(cab::tap::kScanOutput), s_layers[i], dir}).to(at::kFloat);
        const at::Tensor padded = y.size(-1) < width_ ? at::constant_pad_nd(y, {0, width_ - y.size(-1)}) : y;
        const at::Tensor projected = projectors_[i]->as<torch::nn::Sequential>()->forward(padded);
        return 1 - at::cosine_similarity(projected, teacher_features, -1).mean();
      };
      d_fwd.push_back(distance(cab::Direction::forward, target));
      if (bidirectional) d_bwd.push_back(distance(cab::Direction::backward, target.flip(1)));
    }
    const at::Tensor ce = cab::distill::cross_entropy(s.logits, batch.targets);
    cab::LossTerms out;
    const at::Tensor l_fwd = adaptive(d_fwd, ce), l_bwd = adaptive(d_bwd, ce);
    out.total = alpha_ * ce + (1 - alpha_) * (l_fwd + l_bwd);
    out.terms["ce"] = ce.detach();
    out.terms["fwd"] = l_fwd.detach();
    out.terms["bwd"] = l_bwd.detach();
    if (!d_fwd.empty()) out.stats["feature_cosine"] = 1 - at::stack(d_fwd).detach().mean().item<double>();  // one sync
    return out;
  }

 private:
  /// Σ_l w_l d_l with w_l = sg(d_l) / Σ sg(d_k), 0 without layers; computed on the device without a host sync
  /// (when every distance is 0 the weights are 0 and so is the loss).
  static at::Tensor adaptive(const std::vector<at::Tensor>& d, const at::Tensor& like) {
    if (d.empty()) return at::zeros({}, like.options());
    const at::Tensor all = at::stack(d);
    const at::Tensor sg = all.detach();
    return (sg / sg.sum().clamp_min(1e-12) * all).sum();
  }

  cab::config::Section options_;
  double alpha_;
  int64_t hidden_;
  bool subclone_;
  int64_t width_ = 0;
  std::vector<int64_t> map_;
  torch::nn::ModuleList projectors_{nullptr};
  cab::MethodContext context_;
};

}  // namespace

void describe_transmamba(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("alpha", Type::number, "weight α of the task loss; the feature distillation gets 1 − α").fallback(0.5).min(0).max(1);
  s.add("projector_hidden", Type::integer, "hidden width of the feature projectors (0: the teacher's d_model)")
      .fallback(std::int64_t{0}).min(0);
  s.add("subclone", Type::boolean, "initialize the student's non-SSM weights from the teacher (weight subcloning)")
      .fallback(true);
  cab::describe_layer_map(s);
}

std::shared_ptr<cab::Component> create_transmamba(const cab::config::Section& o) { return std::make_shared<TransMamba>(o); }

}  // namespace cab::baselines
