// The training loop (AdamW, gradient clipping, NaN detection) over a seeded data subset.
#include "cab/train/trainer.h"

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "cab/plugin/model.h"
#include "cab/plugin/objective.h"
#include "cab/util/hash.h"

namespace cab::train {

using plugin::Kind;

NonFiniteLoss::NonFiniteLoss(std::int64_t step_, double value)
    : Error(fmt::format("loss is {} at step {}", value, step_)), step(step_) {}
NonFiniteLoss::~NonFiniteLoss() = default;

std::vector<std::int64_t> stratified_subset(const std::vector<std::int64_t>& labels, double fraction,
                                            std::uint64_t seed) {
  std::map<std::int64_t, std::vector<std::int64_t>> by_class;
  for (std::size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(static_cast<std::int64_t>(i));
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> out;
  for (auto& [label, members] : by_class) {
    std::shuffle(members.begin(), members.end(), rng);
    const auto take = std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(fraction * members.size())));
    out.insert(out.end(), members.begin(), members.begin() + std::min(take, members.size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

template <class T>
std::shared_ptr<T> make(const config::RunConfig& config, const plugin::Registry& registry, Kind kind, bool required,
                        const std::string& why) {
  auto it = config.plugins.find(kind);
  if (it == config.plugins.end()) {
    if (required) throw ConfigError(fmt::format("{}: no [{}] table; {}", config.file, plugin::to_string(kind), why));
    return nullptr;
  }
  return registry.create_as<T>(kind, it->second.name, it->second.options);
}

}  // namespace

TrainResult train(const config::RunConfig& config, const plugin::Registry& registry, sweep::Reporter& reporter) {
  const auto seed = static_cast<std::uint64_t>(config.run.integer("seed"));
  at::manual_seed(seed);
  const std::string device_name = config.run.string("device");
  const bool cuda = device_name == "cuda" || (device_name == "auto" && torch::cuda::is_available());
  if (device_name == "cuda" && !torch::cuda::is_available())
    throw ConfigError(fmt::format("{}: run.device = \"cuda\" but no CUDA device is available", config.file));
  const at::Device device = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  reporter.provenance("device", cuda ? "cuda" : "cpu");

  auto dataset = make<Dataset>(config, registry, Kind::dataset, true, "a run needs a dataset");
  auto student = make<Student>(config, registry, Kind::student, true, "a run needs a student");
  auto method = make<Method>(config, registry, Kind::method, true, "a run needs a method");
  std::shared_ptr<Teacher> teacher = make<Teacher>(config, registry, Kind::teacher, method->needs_teacher(),
                                                   "the method needs a teacher");
  auto alignment = make<Alignment>(config, registry, Kind::alignment, false, "");
  student->to(device);
  if (teacher) {
    teacher->to(device);
    teacher->eval();
  }
  if (alignment) {
    const auto bridge = config.plugins.find(Kind::bridge);
    AlignmentContext context{teacher.get(), student.get(), {}};
    context.make_bridge = [&](int64_t in, int64_t out) {
      if (bridge == config.plugins.end())
        throw ConfigError(fmt::format("{}: the alignment needs a [bridge] table", config.file));
      config::Section options = bridge->second.options;
      options.set("in_features", in).set("out_features", out);
      return registry.create_as<Bridge>(Kind::bridge, bridge->second.name, options);
    };
    alignment->setup(context);
    alignment->to(device);
  }
  method->setup(MethodContext{teacher, student, alignment});
  method->to(device);

  // The seeded, stratified training subset; its hash goes into the provenance.
  const auto labels = dataset->labels(Split::train);
  std::vector<std::int64_t> subset;
  if (labels.empty()) {
    subset.resize(static_cast<std::size_t>(dataset->size(Split::train)));
    std::iota(subset.begin(), subset.end(), 0);
  } else {
    subset = stratified_subset(labels, config.train.number("data_fraction"), seed);
  }
  std::string joined;
  for (auto i : subset) joined += std::to_string(i) + ",";
  reporter.provenance("dataset_subset_hash", sha256_hex(joined));
  reporter.provenance("dataset_subset_size", std::to_string(subset.size()));

  const std::int64_t batch_size = std::min<std::int64_t>(config.train.integer("batch_size"), subset.size());
  std::int64_t steps = config.train.integer("steps");
  if (steps == 0) {
    steps = static_cast<std::int64_t>(std::ceil(config.train.number("epochs") * subset.size() / batch_size));
  }

  reporter.provenance("total_steps", std::to_string(steps));
  reporter.flush();

  // Trainable parameters: the student's, the alignment's (bridges) and the method's own, each once.
  std::vector<at::Tensor> params;
  std::set<const void*> seen;
  for (torch::nn::Module* m : {static_cast<torch::nn::Module*>(student.get()),
                               static_cast<torch::nn::Module*>(alignment.get()),
                               static_cast<torch::nn::Module*>(method.get())}) {
    if (!m) continue;
    for (auto& p : m->parameters())
      if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
  }
  const auto betas = config.train.numbers("betas");
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(config.train.number("lr"))
                                            .weight_decay(config.train.number("weight_decay"))
                                            .betas({betas.at(0), betas.at(1)}));
  const double clip = config.train.number("grad_clip");

  std::mt19937_64 order_rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<std::int64_t> order = subset;
  std::size_t cursor = order.size();
  TrainResult result;
  student->train();
  for (std::int64_t step = 0; step < steps; ++step) {
    std::vector<std::int64_t> indices;
    while (static_cast<std::int64_t>(indices.size()) < batch_size) {
      if (cursor == order.size()) {
        std::shuffle(order.begin(), order.end(), order_rng);
        cursor = 0;
      }
      indices.push_back(order[cursor++]);
    }
    Batch batch = dataset->get(Split::train, indices);
    batch.inputs = batch.inputs.to(device);
    batch.targets = batch.targets.to(device);
    optimizer.zero_grad();
    LossTerms loss = method->loss(batch, step);
    const double value = loss.total.item<double>();
    if (!std::isfinite(value)) throw NonFiniteLoss(step, value);
    loss.total.backward();
    if (clip > 0) torch::nn::utils::clip_grad_norm_(params, clip);
    optimizer.step();
    reporter.metric(step, "loss", value);
    for (const auto& [name, term] : loss.terms) reporter.metric(step, "loss/" + name, term.item<double>());
    reporter.metric(step, "lr", config.train.number("lr"));
    result.final_loss = value;
    result.steps = step + 1;
  }
  result.wall_s = reporter.elapsed();
  reporter.summary("final_loss", fmt::format("{:.9g}", result.final_loss));
  reporter.summary("steps", std::to_string(result.steps));
  reporter.summary("wall_s", fmt::format("{:.3f}", result.wall_s));
  return result;
}

}  // namespace cab::train
