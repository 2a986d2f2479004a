#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include <cab/config/schema.h>
#include <cab/plugin/distill.h>
#include <cab/util/error.h>

#include "baselines.h"

namespace cab::baselines {

void require_models(const cab::MethodContext& context, const std::string& method) {
  if (!context.teacher || !context.student)
    throw cab::ConfigError(fmt::format("method {} needs a [teacher] and a [student]", method));
}

int64_t budget_steps(double amount, const std::string& unit, const cab::MethodContext& c, const std::string& what) {
  double steps = 0;
  if (unit == "steps") {
    steps = amount;
  } else if (unit == "epochs") {
    steps = amount * static_cast<double>(c.steps_per_epoch);
  } else if (unit == "fraction") {
    steps = amount * static_cast<double>(c.total_steps);
  } else if (unit == "tokens") {
    const int64_t per_step = c.batch_size * c.tokens_per_example;
    if (per_step <= 0)
      throw cab::ConfigError(fmt::format("{} = {} tokens: the trainer did not say how many tokens a step sees "
                                         "(batch_size {}, tokens per example {})", what, amount, c.batch_size,
                                         c.tokens_per_example));
    steps = amount / static_cast<double>(per_step);
  } else {
    throw cab::ConfigError(fmt::format("{}: unknown budget unit '{}' (steps, epochs, tokens or fraction)", what, unit));
  }
  return std::llround(steps);
}

void describe_soft_kd(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("tau", Type::number, "softmax temperature τ of the KL term").fallback(1.0).min(1e-6);
  s.add("alpha", Type::number, "weight α of the cross-entropy on the labels").fallback(1.0).min(0);
}

cab::LossTerms soft_kd_terms(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             const at::Tensor& targets, double tau, double alpha) {
  cab::LossTerms out;
  const at::Tensor kd = cab::distill::soft_kd(student_logits, teacher_logits, tau);
  const at::Tensor ce = cab::distill::cross_entropy(student_logits, targets);
  out.total = kd + alpha * ce;
  out.terms["kd"] = kd.detach();
  out.terms["ce"] = ce.detach();
  return out;
}

void record(const cab::MethodContext& context, const std::string& key, const std::string& value) {
  if (context.record) context.record(key, value);
}

}  // namespace cab::baselines
