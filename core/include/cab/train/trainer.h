// The training loop of one run: builds the plugins a run config names, selects the seeded data subset, and
// optimizes the method's loss: AdamW (no weight decay on biases, norms, embeddings' class/position tokens,
// A_log and D), warm-up then cosine/linear/constant schedule, gradient clipping, bf16 autocast on GPU,
// optional EMA of the weights, evaluation every N steps, and checkpoints from which a killed run resumes to
// the same result (bit for bit on CPU). Every step streams its loss terms, learning rate, time, throughput
// and peak GPU memory to the host.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cab/config/run_config.h"
#include "cab/export.h"
#include "cab/plugin/registry.h"
#include "cab/sweep/protocol.h"
#include "cab/util/error.h"

namespace cab::train {

/// A loss that is NaN or infinite: the run stops as failed with the step number.
class CAB_API NonFiniteLoss : public Error {
 public:
  NonFiniteLoss(std::int64_t step, double value);
  ~NonFiniteLoss() override;
  std::int64_t step;
};

/// Seeded, stratified subset: per class, a shuffled `fraction` of its examples (at least one per class
/// that has any), returned sorted. Deterministic for (labels, fraction, seed).
CAB_API std::vector<std::int64_t> stratified_subset(const std::vector<std::int64_t>& labels, double fraction,
                                                    std::uint64_t seed);

/// Learning rate at `step`: linear warm-up from 0 over `warmup` steps to `lr`, then `schedule` (cosine,
/// linear or constant) down to `min_lr` at `total` steps.
CAB_API double learning_rate(const std::string& schedule, double lr, double min_lr, std::int64_t warmup,
                             std::int64_t total, std::int64_t step);

struct CAB_API TrainOptions {
  /// The run's own folder (checkpoints, saved model); empty: no checkpoints and nothing saved.
  std::filesystem::path run_dir;
  /// Stop (as if killed) after this many steps of this process; 0: never. For tests of resume.
  std::int64_t stop_after = 0;
  /// Set (e.g. from a signal handler) to stop after the current step, saving a checkpoint in run_dir first.
  const std::atomic<bool>* stop_requested = nullptr;
};

struct CAB_API TrainResult {
  std::int64_t steps = 0;
  double final_loss = 0;
  double wall_s = 0;
  double eval_top1 = -1;  ///< classification accuracy (%) of the trained model on the test split, or −1
  double eval_ppl = -1;   ///< perplexity of a language model on the held-out split, or −1
  bool resumed = false;   ///< continued from a checkpoint
  bool stopped = false;   ///< ended early because of TrainOptions::stop_after or stop_requested
};

/// Runs the training the config describes. Needs [dataset] and [method]; [student] unless the method
/// trains the teacher; [teacher], [alignment] and [bridge] as the method requires.
CAB_API TrainResult train(const config::RunConfig& config, const plugin::Registry& registry,
                          sweep::Reporter& reporter, const TrainOptions& options = {});

}  // namespace cab::train
