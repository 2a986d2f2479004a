// The CAB alignment `cab-bc` (DESIGN §3): per paired layer, bridges φ_B, φ_C map the student's B and C
// ([batch, L, N]) into the teacher's K and Q spaces ([batch, L, d]) and the loss is
//   L_align = mean over paired (layer, direction) of [ MSE(φ_B(B_l), K_g(l)) + MSE(φ_C(C_l), Q_g(l)) ].
// Options that exist because the released code differs from the paper: which terms (B+C, B, C), one bridge
// shared by B and C, a target kernel on K/Q (softmax: Q over features, K over tokens), and whether the
// alignment gradient reaches the student's B/C (false: only the bridges learn, as in the released vision code).
// Bidirectional students align each direction with its own bridges; the backward scan's taps are in reversed
// token order, so it is compared with the token-reversed K/Q. A teacher whose class token sits elsewhere
// (DeiT: first; Vim: middle) has its tokens reordered to the student's layout first.
#include <algorithm>
#include <cstdlib>
#include <string_view>

#include <torch/autograd.h>
#include <torch/nn/module.h>

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <fmt/format.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/layer_map.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

namespace {

/// CAB_BRIDGE_GROUP: how many pairs (layer, direction) have their bridges run as one batched group, 12 unless set.
/// More is faster and holds more memory at once (Vim-Tiny, batch 128, bf16, H100: all 48 pairs of a term 224
/// ms/step and 13.6 GiB peak, 12: 232 ms and 11.0 GiB, 1: 309 ms and 10.4 GiB). An environment variable, not an
/// option: it changes the speed and memory of a run, not its result, so it stays out of the run's identity.
int64_t bridge_group() {
  const char* text = std::getenv("CAB_BRIDGE_GROUP");
  if (!text || !*text) return 12;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < 1)
    throw cab::ConfigError(fmt::format("environment variable CAB_BRIDGE_GROUP='{}': expected a whole number ≥ 1 (pairs "
                                       "whose bridges run as one batched group)", text));
  return value;
}

/// CAB_ALIGN_FORM: how the squared error of a group is computed when its bridges are an affine map of features
/// (Bridge::affine_group: the linear and MLP bridges). "direct" (the default) forms the bridges' outputs and
/// subtracts the targets; "gram" works from the features' Gram matrices and never forms the outputs. Both compute
/// the same sum (tested on the CPU; methods_test has a CUDA bf16 case for a machine with a GPU). "gram" is not the
/// default yet: its CUDA path (the GEMMs' fp32-output overloads) has not run on the GPU host, nor has its speed
/// been measured. An environment variable, not an option, for the same reason as CAB_BRIDGE_GROUP (speed, not the
/// run's result).
bool gram_form() {
  const char* text = std::getenv("CAB_ALIGN_FORM");
  if (!text || !*text || std::string_view(text) == "direct") return false;
  if (std::string_view(text) == "gram") return true;
  throw cab::ConfigError(fmt::format("environment variable CAB_ALIGN_FORM='{}': expected direct or gram", text));
}

/// a·b batched, accumulated and returned in fp32 (+ alpha·a·b onto `acc` when it is defined): half-precision
/// inputs on CUDA through the GEMMs' out_dtype overloads, fp32 as they are, anything else (half precision on the
/// CPU, which has no such kernel) promoted to fp32 first.
at::Tensor gemm_f32(const at::Tensor& a, const at::Tensor& b, const at::Tensor& acc = {}, double alpha = 1.0) {
  const auto type = a.scalar_type();
  if (type == at::kFloat && b.scalar_type() == at::kFloat)
    return acc.defined() ? at::baddbmm(acc, a, b, 1.0, alpha) : (alpha == 1.0 ? at::bmm(a, b) : at::bmm(a, b).mul_(alpha));
  if (a.is_cuda() && b.scalar_type() == type && (type == at::kBFloat16 || type == at::kHalf))
    return acc.defined() ? at::baddbmm(acc, a, b, at::kFloat, 1.0, alpha)
                         : (alpha == 1.0 ? at::bmm(a, b, at::kFloat) : at::bmm(a, b, at::kFloat).mul_(alpha));
  return gemm_f32(a.to(at::kFloat), b.to(at::kFloat), acc, alpha);
}

/// Σ_p Σ_i ‖f_pi · w_pᵀ + b_p − t_pi‖² of an affine bridge group (features f [P, rows, H], weight w [P, O, H], bias
/// b [P, O] or undefined, target t [P, rows, O], a constant) without forming the [P, rows, O] outputs:
///   Σ_i ‖f_i wᵀ + b − t_i‖² = ⟨w G, w⟩ − 2 ⟨w, Mᵀ⟩ + 2 bᵀ w s + rows·‖b‖² − 2 bᵀ s_t + ‖t‖²
/// with G = fᵀf, M = fᵀt, s = Σ_i f_i, s_t = Σ_i t_i, all accumulated in fp32 from f and t as they are (bf16 under
/// autocast: exact products), so the cancellation between the terms costs fp32 rounding only (relative to ‖t‖²: a
/// fit that exact can come out a rounding error below zero). The backward:
///   ∂/∂w = 2 (w G − Mᵀ + b sᵀ),  ∂/∂b = 2 (w s + rows·b − s_t),  ∂/∂f = 2 (f wᵀw + bᵀw − t w)
/// where ∂/∂f needs one pass over t and f (fp32 accumulation; wᵀw enters a half-precision GEMM as a high and a low
/// half, so its rounding does not show against the near-cancelling t w). Reads f and t twice in all, where the
/// direct form writes and reads the [P, rows, O] outputs, their fp32 differences and their gradients.
class AffineSquaredError : public torch::autograd::Function<AffineSquaredError> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& f, const at::Tensor& w,
                            const at::Tensor& b, const at::Tensor& t) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // the fp32 math stays fp32
    const at::Tensor ft = f.transpose(1, 2);
    const at::Tensor gram = gemm_f32(ft, f), cross = gemm_f32(ft, t);  // [P, H, H], [P, H, O]
    const at::Tensor w32 = w.to(at::kFloat);
    const at::Tensor t_sq = at::linalg_vector_norm(t, 2, c10::nullopt, false, at::kFloat).square();
    at::Tensor loss = (at::bmm(w32, gram) * w32).sum() - 2.0 * (w32 * cross.transpose(1, 2)).sum() + t_sq;
    at::Tensor f_sum, t_sum;
    if (b.defined()) {
      const at::Tensor b32 = b.to(at::kFloat);
      f_sum = f.sum({1}, false, at::kFloat);  // [P, H]
      t_sum = t.sum({1}, false, at::kFloat);  // [P, O]
      loss = loss + 2.0 * (at::bmm(b32.unsqueeze(1), w32).squeeze(1) * f_sum).sum() +
             static_cast<double>(f.size(1)) * b32.square().sum() - 2.0 * (b32 * t_sum).sum();
    }
    ctx->save_for_backward({f, w, b, t, gram, cross, f_sum, t_sum});
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &f = saved[0], &w = saved[1], &b = saved[2], &t = saved[3], &gram = saved[4], &cross = saved[5],
                     &f_sum = saved[6], &t_sum = saved[7];
    const at::Tensor scale = grads[0].to(at::kFloat) * 2.0;  // 0-dim, on the device: no host round trip
    const at::Tensor w32 = w.to(at::kFloat);
    at::Tensor dw = at::bmm(w32, gram) - cross.transpose(1, 2), db;
    const at::Tensor wtw = at::bmm(w32.transpose(1, 2), w32);  // [P, H, H]
    at::Tensor df;                                             // fp32 [P, rows, H]
    if (f.scalar_type() == at::kFloat) {
      df = gemm_f32(f, wtw);
    } else {
      const at::Tensor high = wtw.to(f.scalar_type()), low = (wtw - high.to(at::kFloat)).to(f.scalar_type());
      df = gemm_f32(f, low, gemm_f32(f, high));
    }
    df = gemm_f32(t, w.to(t.scalar_type()), df, -1.0);
    if (b.defined()) {
      const at::Tensor b32 = b.to(at::kFloat);
      dw.add_(b32.unsqueeze(2) * f_sum.unsqueeze(1));
      db = (at::bmm(w32, f_sum.unsqueeze(2)).squeeze(2) + static_cast<double>(f.size(1)) * b32 - t_sum).mul_(scale).to(b.scalar_type());
      df.add_(at::bmm(b32.unsqueeze(1), w32));  // bᵀw, [P, 1, H] over the rows
    }
    return {df.mul_(scale).to(f.scalar_type()), dw.mul_(scale).to(w.scalar_type()), db, at::Tensor()};
  }
};

/// Σ (y − target)² in fp32 whose backward needs only its gradient 2 (y − target), kept in y's dtype: the fp32
/// difference (what autograd through (y − target)² would keep: 116 MB per group of 12 pairs at Vim-Tiny's batch
/// of 128 in bf16) lives only during the forward, and the gradient arriving at y is in y's dtype either way.
/// `target` is a constant (no gradient).
class SquaredError : public torch::autograd::Function<SquaredError> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& y, const at::Tensor& target) {
    at::Tensor diff = y.to(at::kFloat) - target;  // a fresh fp32 tensor (y's GEMM output is never written)
    const at::Tensor sum = diff.square().sum();
    ctx->save_for_backward({diff.mul_(2.0).to(y.scalar_type())});
    return sum;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor grad = ctx->get_saved_variables()[0];
    return {grad * grads[0].to(grad.scalar_type()), at::Tensor()};
  }
};

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
    group_size_ = bridge_group();
    gram_ = gram_form();
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
    for (const cab::Direction direction : {cab::Direction::forward, cab::Direction::backward})
      for (const auto& p : pairs_)
        if (p.direction == direction) ordered_.push_back(&p);
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
    if (use_b_) sum_b = term_sum(student, teacher, cab::tap::kB, cab::tap::kKey, &Pair::phi_b, true);
    if (use_c_) sum_c = term_sum(student, teacher, cab::tap::kC, cab::tap::kQuery, &Pair::phi_c, false);
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
  /// Σ over the pairs of MSE(φ_pair(student tap), teacher target) for one term. The pairs' bridges run in groups
  /// of CAB_BRIDGE_GROUP (Bridge::forward_group / affine_group: the MLP bridge batches a group into two GEMMs), each
  /// group's targets are stacked into one tensor and its MSEs are one sum over the stack (every pair has the same
  /// shape) divided by a pair's size: a few kernels per group instead of a dozen per pair. Each student tap is put
  /// in the teacher's token order (the 16-wide tap moves, not the teacher's K/Q), which leaves every sum as it is.
  /// Affine bridges (linear, MLP) take the Gram form (AffineSquaredError) with CAB_ALIGN_FORM=gram, unless the
  /// targets went through the softmax kernel (fp32, where the features are in half precision); others form their
  /// outputs, and SquaredError keeps only its gradient, in their dtype, for the backward.
  at::Tensor term_sum(const cab::Taps& student, const cab::Taps& teacher, std::string_view s_name,
                      std::string_view t_name, std::shared_ptr<cab::Bridge> Pair::*phi, bool over_tokens) const {
    at::Tensor sum;
    const auto group_size = static_cast<std::size_t>(group_size_);
    for (std::size_t begin = 0; begin < ordered_.size(); begin += group_size) {
      const std::size_t end = std::min(ordered_.size(), begin + group_size);
      const std::vector<const Pair*> group_pairs(ordered_.begin() + static_cast<std::ptrdiff_t>(begin),
                                                 ordered_.begin() + static_cast<std::ptrdiff_t>(end));
      std::vector<at::Tensor> xs;
      std::vector<cab::Bridge*> group;
      for (const Pair* p : group_pairs) {
        const at::Tensor x = student.at({std::string(s_name), p->student_layer, p->direction});
        xs.push_back((grad_to_student_ ? x : x.detach()).index_select(1, teacher_order(p->direction, x.size(1), x.device())));
        group.push_back((p->*phi).get());
      }
      const at::Tensor target = targets(teacher, t_name, group_pairs, xs.front().size(1), over_tokens);
      const at::Tensor x = at::stack(xs);
      const auto affine = group.front()->affine_group(group, x);
      at::Tensor part;
      if (affine && gram_ && affine->features.scalar_type() == target.scalar_type()) {
        const at::Tensor& f = affine->features;
        const auto type = f.scalar_type();
        part = AffineSquaredError::apply(f.reshape({f.size(0), -1, f.size(-1)}), affine->weight.to(type),
                                         affine->bias.defined() ? affine->bias.to(type) : at::Tensor(),
                                         target.reshape({target.size(0), -1, target.size(-1)}));
      } else {
        part = SquaredError::apply(affine ? cab::Bridge::affine_output(*affine) : group.front()->forward_group(group, x),
                                   target);
      }
      // Σ over the group of each pair's mean: the stack's sum divided by one pair's element count.
      part = part * (static_cast<double>(group.size()) / static_cast<double>(target.numel()));
      sum = sum.defined() ? sum + part : part;
    }
    return sum;
  }

  /// The teacher's K or Q of every pair, [pairs, batch, tokens, d], as constants in the teacher's token order and
  /// dtype; with the softmax target kernel, fp32 after it (over the tokens or the features: either is unchanged by
  /// the token order).
  at::Tensor targets(const cab::Taps& teacher, std::string_view t_name, const std::vector<const Pair*>& pairs,
                     int64_t student_tokens, bool over_tokens) const {
    std::vector<at::Tensor> raw;
    for (const Pair* p : pairs) raw.push_back(teacher.at({std::string(t_name), p->teacher_layer}).detach());
    at::Tensor out = at::stack(raw);  // [pairs, batch, tokens, d]
    if (out.size(2) != student_tokens)
      throw cab::Error(fmt::format("alignment cab-bc: the teacher has {} tokens per input, the student {}; CAB pairs "
                                   "them token by token (match image/patch sizes or sequence lengths)",
                                   out.size(2), student_tokens));
    // softmax kernel: K over tokens, Q over features (the official vision code's default)
    if (softmax_targets_) out = at::softmax(out.to(at::kFloat), over_tokens ? 2 : -1);
    return out;
  }

  /// The gather that puts a direction's student tokens in the teacher's order: the inverse of the student layout
  /// (the class token moved; reversed for the backward direction's taps), on `device`. Made once and kept: copying
  /// it from the host every step would make the host wait for the GPU's queue to drain.
  const at::Tensor& teacher_order(cab::Direction direction, int64_t tokens, const at::Device& device) const {
    at::Tensor& cached = token_index_[direction == cab::Direction::backward ? 1 : 0];
    if (!cached.defined() || cached.device() != device || cached.size(0) != tokens) {
      // student position i holds teacher token layout[i]; the inverse lists, per teacher token, its student position
      std::vector<int64_t> layout = cab::token_order(tokens, student_cls_, teacher_cls_);
      if (direction == cab::Direction::backward) std::reverse(layout.begin(), layout.end());
      std::vector<int64_t> inverse(layout.size());
      for (std::size_t i = 0; i < layout.size(); ++i) inverse[static_cast<std::size_t>(layout[i])] = static_cast<int64_t>(i);
      cached = at::tensor(inverse, at::TensorOptions(at::kLong)).to(device);
    }
    return cached;
  }

  cab::config::Section options_;
  bool use_b_ = true, use_c_ = true, shared_ = false, softmax_targets_ = false, grad_to_student_ = true, gram_ = false;
  int64_t student_cls_ = -1, teacher_cls_ = -1, group_size_ = 12;
  std::vector<Pair> pairs_;
  std::vector<const Pair*> ordered_;  // pairs_, the forward direction's first (groups are cut from this order)
  std::vector<int> s_layers_, t_layers_;
  mutable at::Tensor token_index_[2];
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
