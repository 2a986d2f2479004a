#include "cab/plugin/distill.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <string>

#include "cab/plugin/layer_map.h"
#include "cab/util/error.h"

namespace cab::distill {

at::Tensor logit_rows(const at::Tensor& logits) { return logits.to(at::kFloat).reshape({-1, logits.size(-1)}); }

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logit_rows(logits), targets.reshape({-1}));
}

at::Tensor soft_kd(const at::Tensor& student, const at::Tensor& teacher, double tau) {
  const at::Tensor s = at::log_softmax(logit_rows(student) / tau, -1), t = at::log_softmax(logit_rows(teacher) / tau, -1);
  return (t.exp() * (t - s)).sum(-1).mean() * (tau * tau);
}

at::Tensor combined_mixing(const Taps& taps, int layer) {
  const std::string name(tap::kMixing);
  at::Tensor m = taps.at({name, layer}).to(at::kFloat);
  const TapKey bwd{name, layer, Direction::backward};
  if (taps.contains(bwd)) m = (m + taps.at(bwd).to(at::kFloat).flip({-2, -1})) / 2;
  return m;
}

at::Tensor group_heads(const at::Tensor& mixing, int64_t heads) {
  const int64_t channels = mixing.size(1);
  if (heads < 1 || channels % heads != 0)
    throw Error(fmt::format("the student's {} mixing matrices per layer cannot be grouped into the teacher's {} heads "
                            "(channels must be a multiple of heads)", channels, heads));
  if (channels == heads) return mixing;
  return mixing.reshape({mixing.size(0), heads, channels / heads, mixing.size(2), mixing.size(3)}).mean(2);
}

at::Tensor in_student_order(const at::Tensor& teacher_tap, const std::vector<int64_t>& dims, const Student& student,
                            const Teacher& teacher) {
  const int64_t s_cls = student.shape().cls_index, t_cls = teacher.shape().cls_index;
  at::Tensor out = teacher_tap;
  if (s_cls == t_cls || s_cls < 0 || t_cls < 0) return out;
  for (const int64_t dim : dims) {
    const int64_t tokens = out.size(dim);
    if (student.shape().seq_len > 0 && tokens != student.shape().seq_len)
      throw Error(fmt::format("teacher tap has {} tokens along dim {}, the student {}: they cannot be aligned token by "
                              "token", tokens, dim, student.shape().seq_len));
    const auto order = token_order(tokens, s_cls, t_cls);
    out = out.index_select(dim, at::tensor(order, at::TensorOptions(at::kLong)).to(out.device()));
  }
  return out;
}

}  // namespace cab::distill
