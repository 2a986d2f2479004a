// The CAB alignment `cab-bc` (DESIGN §3): per paired layer, bridges φ_B, φ_C map the student's B and C
// ([batch, L, N]) into the teacher's K and Q spaces ([batch, L, d]) and the loss is
//   L_align = mean over paired (layer, direction) of [ MSE(φ_B(B_l), K_g(l)) + MSE(φ_C(C_l), Q_g(l)) ].
// Options that exist because the released code differs from the paper: which terms (B+C, B, C), one bridge
// shared by B and C, a target kernel on K/Q (softmax: Q over features, K over tokens), and whether the
// alignment gradient reaches the student's B/C (false: only the bridges learn, as in the released vision code).
// Bidirectional students align each direction with its own bridges; the backward scan's taps are in reversed
// token order, so it is compared with the token-reversed K/Q. A teacher whose class token sits elsewhere
// (DeiT: first; Vim: middle) has its tokens reordered to the student's layout first.
#include <torch/nn/module.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/layer_map.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

namespace {

struct Pair {
  int student_layer, teacher_layer;
  cab::Direction direction;
  std::shared_ptr<cab::Bridge> phi_b, phi_c;  // null when the term is off
};

class CabBc final : public cab::Alignment {
 public:
  explicit CabBc(const cab::config::Section& o) : options_(o) {
    const std::string terms = o.string("terms");
    use_b_ = terms != "C";
    use_c_ = terms != "B";
    shared_ = o.boolean("shared_bridge");
    softmax_targets_ = o.string("target_kernel") == "softmax";
    grad_to_student_ = o.boolean("align_grad_to_student");
  }

  void setup(const cab::AlignmentContext& context) override {
    if (!context.teacher || !context.student)
      throw cab::ConfigError("alignment cab-bc needs a [teacher] and a [student]");
    const auto& student = *context.student;
    const auto& teacher = *context.teacher;
    student_cls_ = student.shape().cls_index;
    teacher_cls_ = teacher.shape().cls_index;
    const auto map = cab::layer_map(options_, student.shape().num_layers, teacher.shape().num_layers);
    const int64_t n = student.bc_features(), dk = teacher.key_features(), dq = teacher.shape().d_model;
    if (shared_ && use_b_ && use_c_ && dk != dq)
      throw cab::ConfigError(fmt::format("alignment cab-bc: shared_bridge needs K and Q of one width, the teacher has "
                                         "{} (K) and {} (Q)", dk, dq));
    const int directions = student.bidirectional() ? 2 : 1;
    for (std::size_t l = 0; l < map.size(); ++l) {
      if (map[l] < 0) continue;
      for (int d = 0; d < directions; ++d) {
        Pair p{static_cast<int>(l), static_cast<int>(map[l]), d ? cab::Direction::backward : cab::Direction::forward, {}, {}};
        const std::string suffix = fmt::format("{}{}", l, d ? "_bwd" : "");
        if (use_b_) p.phi_b = register_module("phi_B_" + suffix, context.make_bridge(n, dk));
        if (use_c_) p.phi_c = shared_ && p.phi_b ? p.phi_b : register_module("phi_C_" + suffix, context.make_bridge(n, dq));
        pairs_.push_back(std::move(p));
      }
      s_layers_.push_back(static_cast<int>(l));
      t_layers_.push_back(static_cast<int>(map[l]));
    }
    if (pairs_.empty()) throw cab::ConfigError("alignment cab-bc: the layer map pairs no layers");
  }

  cab::TapRequest teacher_taps() const override {
    cab::TapRequest r;
    if (use_b_) r.add(std::string(cab::tap::kKey), t_layers_);
    if (use_c_) r.add(std::string(cab::tap::kQuery), t_layers_);
    return r;
  }
  cab::TapRequest student_taps() const override {
    cab::TapRequest r;
    if (use_b_) r.add(std::string(cab::tap::kB), s_layers_);
    if (use_c_) r.add(std::string(cab::tap::kC), s_layers_);
    return r;
  }

  cab::LossTerms loss(const cab::Taps& student, const cab::Taps& teacher) override {
    at::Tensor sum_b, sum_c;
    for (const auto& p : pairs_) {
      auto term = [&](std::string_view s_name, std::string_view t_name, const std::shared_ptr<cab::Bridge>& phi,
                      bool over_tokens) {
        at::Tensor x = student.at({std::string(s_name), p.student_layer, p.direction});
        if (!grad_to_student_) x = x.detach();
        const at::Tensor target = prepare(teacher.at({std::string(t_name), p.teacher_layer}), x.size(1),
                                          p.direction, over_tokens);
        return at::mse_loss(phi->forward(x).to(at::kFloat), target);
      };
      if (p.phi_b) {
        const at::Tensor l = term(cab::tap::kB, cab::tap::kKey, p.phi_b, true);
        sum_b = sum_b.defined() ? sum_b + l : l;
      }
      if (p.phi_c) {
        const at::Tensor l = term(cab::tap::kC, cab::tap::kQuery, p.phi_c, false);
        sum_c = sum_c.defined() ? sum_c + l : l;
      }
    }
    const double count = static_cast<double>(pairs_.size());
    cab::LossTerms out;
    at::Tensor total;
    if (sum_b.defined()) {
      out.terms["B"] = (sum_b / count).detach();
      total = sum_b;
    }
    if (sum_c.defined()) {
      out.terms["C"] = (sum_c / count).detach();
      total = total.defined() ? total + sum_c : sum_c;
    }
    out.total = total / count;
    return out;
  }

 private:
  /// The teacher's K or Q in the student's token layout and direction, with the target kernel, as fp32 constants.
  at::Tensor prepare(const at::Tensor& t, int64_t student_tokens, cab::Direction direction, bool over_tokens) const {
    if (t.size(1) != student_tokens)
      throw cab::Error(fmt::format("alignment cab-bc: the teacher has {} tokens per input, the student {}; CAB pairs "
                                   "them token by token (match image/patch sizes or sequence lengths)",
                                   t.size(1), student_tokens));
    at::Tensor x = t.detach().to(at::kFloat);
    const auto order = cab::token_order(x.size(1), student_cls_, teacher_cls_);
    bool identity = true;
    for (std::size_t i = 0; i < order.size(); ++i) identity = identity && order[i] == static_cast<int64_t>(i);
    if (!identity) x = x.index_select(1, at::tensor(order, at::TensorOptions(at::kLong)).to(x.device()));
    if (direction == cab::Direction::backward) x = x.flip({1});
    // softmax kernel: K over tokens, Q over features (the official vision code's default)
    if (softmax_targets_) x = at::softmax(x, over_tokens ? 1 : -1);
    return x;
  }

  cab::config::Section options_;
  bool use_b_ = true, use_c_ = true, shared_ = false, softmax_targets_ = false, grad_to_student_ = true;
  int64_t student_cls_ = -1, teacher_cls_ = -1;
  std::vector<Pair> pairs_;
  std::vector<int> s_layers_, t_layers_;
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("terms", Type::string, "which projections are aligned: B+C (paper), B (B↔K only) or C (C↔Q only)")
      .fallback(std::string("B+C")).one_of({"B+C", "B", "C"});
  s.add("shared_bridge", Type::boolean, "one bridge φ for B and C (φ_B ≡ φ_C)").fallback(false);
  s.add("target_kernel", Type::string, "kernel on the targets: none, or softmax (Q over features, K over tokens)")
      .fallback(std::string("none")).one_of({"none", "softmax"});
  s.add("align_grad_to_student", Type::boolean,
        "the alignment loss trains the student's B/C too (false: only the bridges, as the released vision code)")
      .fallback(true);
  cab::describe_layer_map(s);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) { return std::make_shared<CabBc>(o); }

}  // namespace

CAB_PLUGIN("alignment-cab", "0.1.0",
           CAB_FACTORY(alignment, "cab-bc", "CAB: bridges align the student's B/C with the teacher's K/Q per layer",
                       describe, create))
