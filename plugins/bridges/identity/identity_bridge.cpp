// The identity bridge: compares student and teacher taps directly (widths must already match).
#include <fmt/format.h>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/bridge.h>
#include <cab/util/error.h>

namespace {

class IdentityBridge final : public cab::Bridge {
 public:
  explicit IdentityBridge(int64_t features) : features_(features) {}
  at::Tensor forward(const at::Tensor& x) override { return x; }
  int64_t in_features() const override { return features_; }
  int64_t out_features() const override { return features_; }

 private:
  int64_t features_;
};

void describe(cab::config::Schema& s) { cab::describe_bridge_widths(s); }

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  const auto [in, out] = cab::bridge_widths(o, "identity");
  if (in != out) {
    throw cab::ConfigError(fmt::format("{}: the identity bridge needs equal widths, got in_features = {} and "
                                       "out_features = {}; use the linear or mlp bridge",
                                       o.location().str(), in, out));
  }
  return std::make_shared<IdentityBridge>(in);
}

}  // namespace

CAB_PLUGIN("bridge-identity", "1.0.0",
           CAB_FACTORY(bridge, "identity", "no map: student and teacher taps must have equal widths", describe, create))
