// Layer maps between student and teacher layers.
#include "cab/plugin/layer_map.h"

#include <fmt/format.h>

#include <cmath>

#include "cab/config/schema.h"
#include "cab/config/section.h"
#include "cab/util/error.h"
#include "cab/util/join.h"

namespace cab {

std::vector<int64_t> layer_map(const std::string& kind, int64_t S, int64_t T, int64_t k, const std::vector<int64_t>& layers) {
  if (S < 1 || T < 1) throw ConfigError(fmt::format("layer map: {} student and {} teacher layers", S, T));
  std::vector<int64_t> map(static_cast<std::size_t>(S), -1);
  if (kind == "proportional") {
    for (int64_t l = 0; l < S; ++l) map[l] = l * T / S;
  } else if (kind == "uniform") {
    for (int64_t l = 0; l < S; ++l)
      map[l] = S == 1 ? T - 1 : static_cast<int64_t>(std::llround(static_cast<double>(l) * (T - 1) / (S - 1)));
  } else if (kind == "last-k") {
    if (k < 1 || k > std::min(S, T))
      throw ConfigError(fmt::format("layer map last-k: last_k = {} must be in [1, {}] (student {} / teacher {} layers)",
                                    k, std::min(S, T), S, T));
    for (int64_t i = 0; i < k; ++i) map[S - k + i] = T - k + i;
  } else if (kind == "explicit") {
    if (static_cast<int64_t>(layers.size()) != S)
      throw ConfigError(fmt::format("layer map explicit: layers has {} entries [{}], expected one per student layer ({})",
                                    layers.size(), join(layers, ", "), S));
    for (int64_t l = 0; l < S; ++l) {
      if (layers[l] < -1 || layers[l] >= T)
        throw ConfigError(fmt::format("layer map explicit: layers[{}] = {} is not a teacher layer (0..{}) or -1",
                                      l, layers[l], T - 1));
      map[l] = layers[l];
    }
  } else {
    throw ConfigError(fmt::format("layer map '{}': expected proportional, uniform, last-k or explicit", kind));
  }
  return map;
}

std::vector<int64_t> token_order(int64_t tokens, int64_t student_cls, int64_t teacher_cls) {
  std::vector<int64_t> order;
  order.reserve(static_cast<std::size_t>(tokens));
  if (student_cls < 0 || teacher_cls < 0 || student_cls == teacher_cls) {
    for (int64_t i = 0; i < tokens; ++i) order.push_back(i);
    return order;
  }
  std::vector<int64_t> teacher_patches;  // the teacher's non-class tokens, in order
  for (int64_t i = 0; i < tokens; ++i)
    if (i != teacher_cls) teacher_patches.push_back(i);
  std::size_t next = 0;
  for (int64_t i = 0; i < tokens; ++i) order.push_back(i == student_cls ? teacher_cls : teacher_patches[next++]);
  return order;
}

void describe_layer_map(config::Schema& s) {
  using config::Type;
  s.add("layer_map", Type::string, "student→teacher layers: proportional ⌊l·T/S⌋, uniform, last-k, explicit")
      .fallback(std::string("proportional")).one_of({"proportional", "uniform", "last-k", "explicit"});
  s.add("last_k", Type::integer, "layers paired by last-k").fallback(std::int64_t{1}).min(1);
  s.add("layers", Type::integer_list, "explicit: the teacher layer of each student layer (-1: none)")
      .fallback(std::vector<std::int64_t>{});
}

std::vector<int64_t> layer_map(const config::Section& o, int64_t S, int64_t T) {
  return layer_map(o.string("layer_map"), S, T, o.integer("last_k"), o.integers("layers"));
}

}  // namespace cab
