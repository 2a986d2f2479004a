// Anchors the plugin interfaces' vtables and type info in libcab_core (needed for casts across libraries).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include "cab/config/schema.h"
#include "cab/config/section.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/model.h"
#include "cab/plugin/objective.h"
#include "cab/util/error.h"
#include "cab/util/join.h"

namespace cab {

Model::~Model() = default;
Teacher::~Teacher() = default;
Student::~Student() = default;
Bridge::~Bridge() = default;

at::Tensor Bridge::forward_group(const std::vector<Bridge*>& group, const at::Tensor& x) {
  if (x.dim() < 1 || x.size(0) != static_cast<int64_t>(group.size()))
    throw Error(fmt::format("Bridge::forward_group: {} bridges for an input of {} along its first dimension",
                            group.size(), x.dim() < 1 ? 0 : x.size(0)));
  std::vector<at::Tensor> out;
  out.reserve(group.size());
  for (std::size_t p = 0; p < group.size(); ++p) out.push_back(group[p]->forward(x[static_cast<int64_t>(p)]));
  return at::stack(out);
}
std::optional<Bridge::Affine> Bridge::affine_group(const std::vector<Bridge*>& /*group*/, const at::Tensor& /*x*/) {
  return std::nullopt;
}
at::Tensor Bridge::affine_output(const Affine& a) {
  const at::Tensor& f = a.features;
  const at::Tensor flat = f.reshape({f.size(0), -1, f.size(-1)});  // [P, rows, hidden]
  const at::Tensor w = a.weight.transpose(1, 2);                   // [P, hidden, out]
  const at::Tensor y = a.bias.defined() ? at::baddbmm(a.bias.unsqueeze(1), flat, w) : at::bmm(flat, w);
  std::vector<int64_t> sizes = f.sizes().vec();
  sizes.back() = a.weight.size(1);
  return y.reshape(sizes);
}
Alignment::~Alignment() = default;
Method::~Method() = default;
Dataset::~Dataset() = default;

InitReport Student::init_from_teacher(const RoleWeights& /*teacher*/, const std::vector<int64_t>& /*layer_map*/) {
  throw Error(fmt::format("student '{}' cannot be initialized from a teacher (init = \"from-teacher\")", name()));
}

at::Tensor Student::forward_layer(int /*layer*/, const at::Tensor& /*hidden*/, const TapRequest& /*taps*/,
                                  Taps& /*out*/) {
  throw Error(fmt::format("student '{}' cannot run a single layer (forward_layer), which this method needs", name()));
}

LayerModules Student::layer_modules(int /*layer*/) {
  throw Error(fmt::format("student '{}' does not expose its layers' modules (layer_modules), which this method needs",
                          name()));
}

std::string InitReport::str() const {
  return fmt::format("copied {} tensors, partially {} [{}], skipped {} [{}]", copied.size(), partial.size(),
                     join(partial, ", "), skipped.size(), join(skipped, ", "));
}

void copy_role(at::Tensor& dst, const RoleWeights& teacher, const std::string& role, const std::string& what,
               InitReport& report) {
  const auto it = teacher.find(role);
  if (it == teacher.end()) {
    report.skipped.push_back(fmt::format("{} (teacher has no {})", what, role));
    return;
  }
  const at::Tensor& src = it->second;
  at::NoGradGuard no_grad;
  if (src.sizes() == dst.sizes()) {
    dst.copy_(src);
    report.copied.push_back(what);
  } else if (src.dim() == dst.dim()) {
    at::Tensor d = dst, s = src;
    for (int64_t i = 0; i < dst.dim(); ++i) {
      const int64_t n = std::min(dst.size(i), src.size(i));
      d = d.narrow(i, 0, n);
      s = s.narrow(i, 0, n);
    }
    d.copy_(s);
    report.partial.push_back(fmt::format("{} {} ← {} {}", what, join(dst.sizes(), "×"), role,
                                         join(src.sizes(), "×")));
  } else {
    report.skipped.push_back(fmt::format("{} {} vs {} {}", what, join(dst.sizes(), "×"), role,
                                         join(src.sizes(), "×")));
  }
}

void describe_bridge_widths(config::Schema& s) {
  s.add("in_features", config::Type::integer, "width of the student tap (0: set by the alignment)")
      .fallback(std::int64_t{0}).min(0);
  s.add("out_features", config::Type::integer, "width of the teacher tap (0: set by the alignment)")
      .fallback(std::int64_t{0}).min(0);
}

std::pair<int64_t, int64_t> bridge_widths(const config::Section& o, std::string_view bridge) {
  const int64_t in = o.integer("in_features"), out = o.integer("out_features");
  if (in < 1 || out < 1)
    throw ConfigError(fmt::format("bridge {}: in_features = {}, out_features = {}; both must be ≥ 1 (an alignment "
                                  "sets them per layer)", bridge, in, out));
  return {in, out};
}

std::string Method::stage(int64_t /*step*/) const { return "main"; }

}  // namespace cab
