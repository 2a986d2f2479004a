// Alignment, Method and Dataset: the training-side plugin interfaces.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "cab/export.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/component.h"
#include "cab/plugin/model.h"
#include "cab/plugin/taps.h"

namespace cab {

/// A loss with its named terms (each streamed to the run store separately).
struct CAB_API LossTerms {
  at::Tensor total;
  std::map<std::string, at::Tensor> terms;
  /// Non-differentiable per-step figures streamed as "stat/<name>" (e.g. the alignment's share of the step).
  std::map<std::string, double> stats;
  /// True when the method has already back-propagated its loss itself (e.g. layer by layer, to bound the memory
  /// of materialized matrices); `total` is then for the record only and the trainer does not call backward().
  bool backpropagated = false;
};

/// A mini-batch: inputs (images or token ids) and targets (labels or next tokens).
struct CAB_API Batch {
  at::Tensor inputs;
  at::Tensor targets;
};

/// What an alignment builds itself from: both models, and bridges made by the configured bridge plugin.
struct CAB_API AlignmentContext {
  const Teacher* teacher = nullptr;
  const Student* student = nullptr;
  std::function<std::shared_ptr<Bridge>(int64_t in_features, int64_t out_features)> make_bridge;
};

/// Pairs student and teacher layers and produces an alignment loss from their taps.
class CAB_API Alignment : public Component, public torch::nn::Module {
 public:
  ~Alignment() override;
  virtual void setup(const AlignmentContext& context) = 0;
  virtual TapRequest teacher_taps() const = 0;
  virtual TapRequest student_taps() const = 0;
  virtual LossTerms loss(const Taps& student, const Taps& teacher) = 0;
};

/// What a method is given: the models (teacher null for methods without one) and the alignment, if any.
struct CAB_API MethodContext {
  std::shared_ptr<Teacher> teacher;
  std::shared_ptr<Student> student;  ///< null for methods that train the teacher
  std::shared_ptr<Alignment> alignment;
  int64_t total_steps = 0;      ///< optimizer steps of the run
  int64_t steps_per_epoch = 1;  ///< optimizer steps per pass over the training subset
  int64_t batch_size = 0;       ///< examples per optimizer step
  int64_t tokens_per_example = 0;  ///< sequence length of one training example (tokens or patches + class token)
  /// Records a provenance entry of the run (e.g. what an initialization from the teacher copied).
  std::function<void(const std::string& key, const std::string& value)> record;
};

/// Which model a method optimizes.
enum class Trains : std::uint8_t { student = 0, teacher = 1 };

/// The whole training objective and its stage schedule (vanilla, soft-kd, mohawk, cab, ...).
class CAB_API Method : public Component, public torch::nn::Module {
 public:
  ~Method() override;
  virtual bool needs_teacher() const = 0;
  /// The model whose parameters are optimized and evaluated: the student (distillation) or the teacher
  /// (teacher training; the trainer then saves it as a Hugging Face checkpoint and records its path).
  virtual Trains trains() const { return Trains::student; }
  /// Whether the method uses the run's [alignment] (and its bridges); the trainer builds them only then.
  virtual bool uses_alignment() const { return false; }
  virtual void setup(const MethodContext& context) = 0;
  /// Stage name at a step (recorded with the metrics); single-stage methods return "main".
  virtual std::string stage(int64_t step) const;
  /// Factor on the scheduled learning rate at a step (per-stage learning rates); 1 by default.
  virtual double lr_scale(int64_t /*step*/) const { return 1.0; }
  virtual LossTerms loss(const Batch& batch, int64_t step) = 0;
};

enum class Split : std::uint8_t { train = 0, test = 1 };

/// A data source with a deterministic, seeded subset (fraction) of its training split.
class CAB_API Dataset : public Component {
 public:
  ~Dataset() override;
  virtual int64_t size(Split split) const = 0;
  virtual int64_t num_classes() const = 0;
  /// Class label of every example of a split (for stratified fractions); empty for unlabelled text.
  virtual std::vector<int64_t> labels(Split split) const = 0;
  virtual Batch get(Split split, const std::vector<int64_t>& indices) const = 0;
  /// State that changes as batches are drawn (e.g. per-example augmentation counters), saved with checkpoints
  /// so that a resumed run continues exactly; empty for stateless datasets.
  virtual std::vector<int64_t> state() const { return {}; }
  /// Restores what state() returned; throws cab::Error when it does not fit this dataset.
  virtual void restore(const std::vector<int64_t>& /*state*/) {}
};

}  // namespace cab
