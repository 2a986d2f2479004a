// Layer maps: which teacher layer each student layer is paired with (alignments, from-teacher init).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cab/export.h"

namespace cab::config {
class Schema;
class Section;
}  // namespace cab::config

namespace cab {

/// For S student and T teacher layers, the teacher layer of each student layer (−1: not paired):
///   proportional  g(l) = ⌊l·T/S⌋ (the CAB paper)
///   uniform       g(l) = round(l·(T−1)/(S−1)): first to first, last to last, evenly in between
///   last-k        the last k student layers to the last k teacher layers, in order; the rest unpaired
///   explicit      `layers`, one teacher layer (or −1) per student layer
/// Throws cab::ConfigError for an unknown kind, k outside [1, min(S, T)], or a bad explicit list.
CAB_API std::vector<int64_t> layer_map(const std::string& kind, int64_t student_layers, int64_t teacher_layers,
                                       int64_t k = 0, const std::vector<int64_t>& layers = {});

/// Token order map between a teacher and a student with the same number of tokens but class tokens at other
/// positions (DeiT: first; Vim: middle): entry i is the teacher token at student position i, so that
/// teacher_tap.index_select(1, order) lines the teacher's tokens up with the student's. Identity when the
/// class positions agree or either model has none (−1).
CAB_API std::vector<int64_t> token_order(int64_t tokens, int64_t student_cls, int64_t teacher_cls);

/// Adds the layer-map keys (layer_map, last_k, layers) to a plugin's schema.
CAB_API void describe_layer_map(config::Schema& schema);
/// layer_map() from the options describe_layer_map() declared.
CAB_API std::vector<int64_t> layer_map(const config::Section& options, int64_t student_layers, int64_t teacher_layers);

}  // namespace cab
