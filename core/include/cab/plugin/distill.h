// Building blocks that distillation methods share: losses on logits, a student's implicit attention (its
// mixing matrix with both scan directions combined) and teacher taps in the student's token order.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cab/export.h"
#include "cab/plugin/model.h"
#include "cab/plugin/taps.h"

namespace cab::distill {

/// Logits [batch, classes] or [batch, L, vocab] as fp32 rows [rows, classes].
CAB_API at::Tensor logit_rows(const at::Tensor& logits);
/// Cross-entropy of logits (classifier or LM, see logit_rows) against targets of matching leading shape.
CAB_API at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets);
/// τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)), averaged over rows (the Hinton et al. scaling).
CAB_API at::Tensor soft_kd(const at::Tensor& student, const at::Tensor& teacher, double tau);

/// The student's token-mixing matrix of `layer` from its mixing_matrix taps, fp32 [batch, channels, L, L]: the
/// forward scan's matrix, or for a bidirectional student (M_fwd + flip(M_bwd)) / 2, the backward scan's matrix
/// flipped into token order (it fills the upper triangle), as the two directions are averaged in the output.
CAB_API at::Tensor combined_mixing(const Taps& taps, int layer);

/// `channels` mixing matrices [batch, channels, L, L] averaged over `heads` equal groups of consecutive
/// channels -> [batch, heads, L, L] (Mamba-1 students have one matrix per channel, a teacher one per head);
/// throws cab::Error when channels is not a multiple of heads.
CAB_API at::Tensor group_heads(const at::Tensor& mixing, int64_t heads);

/// A teacher tap with tokens along `dims` reordered into the student's token order (class token moved, see
/// cab::token_order); unchanged when the class positions agree. Throws cab::Error when the token counts differ.
CAB_API at::Tensor in_student_order(const at::Tensor& teacher_tap, const std::vector<int64_t>& dims,
                                    const Student& student, const Teacher& teacher);

}  // namespace cab::distill
