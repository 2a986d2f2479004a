// The baselines of DESIGN §3 that the CAB paper compares against, each a Method built on the public SDK only:
//   attn-weight-reuse  the student initialized from the teacher's attention weights, then soft KD (reuse.cpp)
//   mohawk             three stages: matrix orientation, hidden-state alignment, end-to-end KD (mohawk.cpp)
//   transmamba         weight subcloning, feature projectors and adaptive bidirectional distillation (transmamba.cpp)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include <cab/plugin/objective.h>

namespace cab::config {
class Schema;
class Section;
}  // namespace cab::config

namespace cab::baselines {

/// Throws cab::ConfigError unless the context has a teacher and a student (`method` names the method).
void require_models(const cab::MethodContext& context, const std::string& method);

/// `amount` of `unit` (steps, epochs, tokens, or fraction of the run's steps) as optimizer steps, rounded.
/// `what` names the option in errors (tokens need the context's batch_size and tokens_per_example).
int64_t budget_steps(double amount, const std::string& unit, const cab::MethodContext& context, const std::string& what);

/// Adds `tau` and `alpha` (soft KD: τ²·KL + α·CE) to a schema.
void describe_soft_kd(cab::config::Schema& s);
/// Soft KD on a student forward (with grad) and the teacher's logits: total = τ²·KL + α·CE, terms kd and ce.
cab::LossTerms soft_kd_terms(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                             const at::Tensor& targets, double tau, double alpha);

/// Records a provenance entry when the context has a recorder.
void record(const cab::MethodContext& context, const std::string& key, const std::string& value);

/// Weight subcloning (transmamba.cpp): the teacher's residual dimensions kept for a student of width `width`,
/// ascending, and the teacher's weights without attention projections cut to them.
std::vector<int64_t> subclone_dimensions(const cab::RoleWeights& teacher, int64_t teacher_width, int64_t width);
cab::RoleWeights subclone(const cab::RoleWeights& teacher, int64_t teacher_width, const std::vector<int64_t>& dims);

void describe_reuse(cab::config::Schema& s);
std::shared_ptr<cab::Component> create_reuse(const cab::config::Section& o);
void describe_mohawk(cab::config::Schema& s);
std::shared_ptr<cab::Component> create_mohawk(const cab::config::Section& o);
void describe_transmamba(cab::config::Schema& s);
std::shared_ptr<cab::Component> create_transmamba(const cab::config::Section& o);

}  // namespace cab::baselines
