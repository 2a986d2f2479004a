// The optimizer step and gradient clipping of a training step as multi-tensor kernels.
//
// LibTorch's torch::optim::AdamW and torch::nn::utils::clip_grad_norm_ loop over the parameters and launch about
// ten kernels per parameter. With the CAB alignment's 96 bridges (384 more parameters) that host work is most of
// what the alignment adds to a Vim-Tiny step. These do the same arithmetic through ATen's multi-tensor kernels,
// a few launches per parameter group.
#pragma once

#include <unordered_map>
#include <vector>

#include <torch/optim/adamw.h>

#include "cab/export.h"

namespace cab::train {

/// Applies one AdamW step of `optimizer` (every group, every parameter with a gradient) through ATen's
/// _fused_adamw_: one launch per group, device and dtype. The update is torch::optim::AdamW's; the state is
/// its own (AdamWParamState: step, exp_avg, exp_avg_sq), so optimizer.save/load and a later optimizer.step()
/// work unchanged. A group with amsgrad takes optimizer.step() as a whole.
///
/// `skip`, when defined (a 0-dim or one-element float tensor on the parameters' device, 1 or 0), is read by the
/// kernels themselves: 1 leaves every parameter and moment as it was, so a caller can launch the step before it
/// knows whether the loss was finite and check that afterwards, with no wait for the device in between. The step
/// count still advances, on the host and the device alike (the trainer stops at such a step); with amsgrad the
/// plain step has no such flag and `skip` must be undefined.
class CAB_API FusedAdamW {
 public:
  void step(torch::optim::AdamW& optimizer, const at::Tensor& skip = {});

 private:
  struct Count {
    at::Tensor device;  // the step count as a 0-dim float tensor on the parameter's device (what the kernel reads)
    int64_t host = -1;  // the AdamWParamState step it mirrors
  };
  std::unordered_map<void*, Count> counts_;
};

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm` (the arithmetic of
/// torch::nn::utils::clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped at 1) with one multi-tensor
/// norm and one multi-tensor scale per device; returns the norm before clipping, a 0-dim fp32 tensor on the first
/// gradient's device (0 with no gradients), without waiting for the device.
CAB_API at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace cab::train
