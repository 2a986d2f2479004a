// The training loop of one run: builds the plugins a run config names, selects the seeded data subset,
// and optimizes the method's loss with AdamW, streaming every loss term to the host.
// (Schedules, bf16 autocast, EMA, evaluation and checkpoint/resume are not implemented yet.)
#pragma once

#include <cstdint>
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

struct CAB_API TrainResult {
  std::int64_t steps = 0;
  double final_loss = 0;
  double wall_s = 0;
};

/// Runs the training the config describes. Needs [dataset], [student] and [method]; [teacher],
/// [alignment] and [bridge] as the method requires.
CAB_API TrainResult train(const config::RunConfig& config, const plugin::Registry& registry,
                          sweep::Reporter& reporter);

}  // namespace cab::train
