// Tap requests and captured taps.
#include "cab/plugin/taps.h"

#include <fmt/format.h>

#include <algorithm>

#include "cab/util/did_you_mean.h"
#include "cab/util/error.h"

namespace cab {

std::string TapKey::str() const {
  return fmt::format("{}@{}{}", name, layer, direction == Direction::backward ? "/bwd" : "");
}

TapRequest& TapRequest::add(std::string name, std::vector<int> layers) {
  auto [it, inserted] = wanted_.try_emplace(std::move(name));
  if (layers.empty()) {
    it->second.clear();  // all layers
  } else if (inserted || !it->second.empty()) {
    it->second.insert(layers.begin(), layers.end());
  }
  return *this;
}

TapRequest& TapRequest::merge(const TapRequest& other) {
  for (const auto& [name, layers] : other.wanted_) add(name, std::vector<int>(layers.begin(), layers.end()));
  return *this;
}

bool TapRequest::wants(std::string_view name) const { return wanted_.find(name) != wanted_.end(); }

bool TapRequest::wants(std::string_view name, int layer) const {
  auto it = wanted_.find(name);
  return it != wanted_.end() && (it->second.empty() || it->second.count(layer) != 0);
}

std::vector<std::string> TapRequest::names() const {
  std::vector<std::string> out;
  for (const auto& [name, layers] : wanted_) out.push_back(name);
  return out;
}

void TapRequest::check(const std::vector<std::string>& supported, int num_layers, std::string_view model) const {
  for (const auto& [name, layers] : wanted_) {
    if (std::find(supported.begin(), supported.end(), name) == supported.end()) {
      throw Error(fmt::format("{} has no tap '{}'{}; its taps: {}", model, name, did_you_mean(name, supported),
                              join_names(supported)));
    }
    for (int layer : layers) {
      if (layer < 0 || layer >= num_layers) {
        throw Error(fmt::format("{}: tap '{}' asks for layer {}, but the model has layers 0..{}", model, name, layer,
                                num_layers - 1));
      }
    }
  }
}

void Taps::put(TapKey key, at::Tensor value) { tensors_.insert_or_assign(std::move(key), std::move(value)); }

const at::Tensor& Taps::at(const TapKey& key) const {
  auto it = tensors_.find(key);
  if (it == tensors_.end()) {
    std::vector<std::string> have;
    for (const auto& [k, v] : tensors_) have.push_back(k.str());
    throw Error(fmt::format("tap {} was not captured (was it requested?); captured: {}", key.str(), join_names(have)));
  }
  return it->second;
}

}  // namespace cab
