// The training loop: AdamW with decay exclusions, warm-up + schedule, clipping, bf16 autocast, EMA, periodic
// evaluation, checkpoints with exact resume, per-step instrumentation, and the Figure 3 attention similarity.
#include "cab/train/trainer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <future>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "cab/io/safetensors.h"
#include "cab/plugin/distill.h"
#include "cab/plugin/layer_map.h"
#include "cab/plugin/model.h"
#include "cab/plugin/objective.h"
#include "cab/util/hash.h"
#include "cab/train/autocast.h"
#include "cab/train/device_memory.h"
#include "cab/train/distributed.h"
#include "cab/train/optim.h"

namespace cab::train {

using plugin::Kind;
namespace fs = std::filesystem;

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

double learning_rate(const std::string& schedule, double lr, double min_lr, std::int64_t warmup, std::int64_t total,
                     std::int64_t step) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (schedule == "constant" || total <= warmup) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  if (schedule == "linear") return min_lr + (lr - min_lr) * (1.0 - progress);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));  // cosine
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

/// Weight decay applies to matrices only: not to biases, norms, D, dt biases (all 1-d), A_log, class and
/// position tokens.
bool decays(const std::string& name, const at::Tensor& p) {
  if (p.dim() <= 1) return false;
  for (const char* skip : {"A_log", "A_b_log", "cls_token", "pos_embed", "position_embeddings"})
    if (name.find(skip) != std::string::npos) return false;
  return true;
}

/// The trainable modules of a run and their parameters, each once, by a stable name.
struct Trainable {
  std::vector<std::pair<std::string, torch::nn::Module*>> modules;  // prefix, module
  std::vector<std::pair<std::string, at::Tensor>> named;            // "model.x.y", tensor
};

Trainable collect(torch::nn::Module& model, torch::nn::Module* alignment, torch::nn::Module* method) {
  Trainable t;
  t.modules.emplace_back("model.", &model);
  if (alignment) t.modules.emplace_back("alignment.", alignment);
  if (method) t.modules.emplace_back("method.", method);
  std::set<const void*> seen;
  for (const auto& [prefix, m] : t.modules)
    for (const auto& item : m->named_parameters())
      if (item.value().requires_grad() && seen.insert(item.value().unsafeGetTensorImpl()).second)
        t.named.emplace_back(prefix + item.key(), item.value());
  return t;
}

struct EvalResult {
  double top1 = -1, ppl = -1, loss = 0;
  std::int64_t examples = 0;
};

/// Accuracy (classifiers: logits [b, classes]) or perplexity (LMs: logits [b, L, vocab]) on the test split.
/// Data-parallel: each rank evaluates its contiguous share of the examples and the sums are all-reduced.
EvalResult evaluate(Model& model, const Dataset& data, const at::Device& device, std::int64_t batch_size,
                    std::int64_t max_examples, bool bf16, Communicator* comm = nullptr) {
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard no_grad;
  std::int64_t n = data.size(Split::test);
  if (max_examples > 0) n = std::min(n, max_examples);
  double loss_sum = 0, correct = 0, count = 0;
  const int ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const std::int64_t first = n * rank / ranks, end = n * (rank + 1) / ranks;
  for (std::int64_t start = first; start < end; start += batch_size) {
    std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(batch_size, end - start)));
    std::iota(indices.begin(), indices.end(), start);
    Batch b = data.get(Split::test, indices);
    const at::Tensor targets = b.targets.to(device);
    at::Tensor logits;
    {
      Autocast autocast(bf16);
      logits = model.forward(b.inputs.to(device), {}).logits;
    }
    logits = logits.to(at::kFloat).reshape({-1, logits.size(-1)});
    const at::Tensor t = targets.reshape({-1});
    loss_sum += at::cross_entropy_loss(logits, t, {}, at::Reduction::Sum).item<double>();
    correct += logits.argmax(-1).eq(t).sum().item<double>();
    count += static_cast<double>(t.numel());
  }
  if (was_training) model.train();
  if (comm) {
    at::Tensor sums = at::tensor({loss_sum, correct, count}, at::TensorOptions(at::kDouble)).to(device);
    comm->all_reduce_sum(sums);
    sums = sums.cpu();
    loss_sum = sums[0].item<double>(), correct = sums[1].item<double>(), count = sums[2].item<double>();
  }
  EvalResult r;
  r.examples = n;
  if (count == 0) return r;
  r.loss = loss_sum / count;
  if (!data.labels(Split::test).empty()) r.top1 = 100.0 * correct / count;
  else r.ppl = std::exp(r.loss);
  return r;
}

/// Figure 3: per student layer, the cosine similarity between the student's implicit attention (its mixing
/// matrix, |M| averaged over channels and row-normalized; a bidirectional student's two scans combined as in
/// its output, (M_fwd + flip(M_bwd)) / 2) and the teacher's attention probabilities (averaged over heads, in
/// the student's token order), averaged over the examples.
std::vector<double> attention_similarity(Teacher& teacher, Student& student, const at::Tensor& inputs,
                                         const std::vector<std::int64_t>& map) {
  at::NoGradGuard no_grad;
  const bool was_training = student.is_training();
  student.eval();
  TapRequest st, tt;
  std::vector<int> s_layers, t_layers;
  for (std::size_t l = 0; l < map.size(); ++l)
    if (map[l] >= 0) s_layers.push_back(static_cast<int>(l)), t_layers.push_back(static_cast<int>(map[l]));
  st.add(std::string(tap::kMixing), s_layers);
  tt.add(std::string(tap::kAttention), t_layers);
  const auto so = student.forward(inputs, st);
  const auto to = teacher.forward(inputs, tt);
  if (was_training) student.train();
  auto implicit = [](const at::Tensor& m) {
    const at::Tensor a = m.to(at::kFloat).abs().mean(1);  // [b, L, L]
    return a / a.sum(-1, true).clamp_min(1e-12);
  };
  std::vector<double> out(map.size(), std::nan(""));
  for (std::size_t i = 0; i < s_layers.size(); ++i) {
    const int l = s_layers[i];
    at::Tensor m = implicit(so.taps.at({std::string(tap::kMixing), l}));
    const TapKey bwd{std::string(tap::kMixing), l, Direction::backward};
    if (so.taps.contains(bwd)) m = (m + implicit(so.taps.at(bwd)).flip({-2, -1})) / 2;
    at::Tensor a = to.taps.at({std::string(tap::kAttention), t_layers[i]}).to(at::kFloat).mean(1);  // [b, L, L]
    if (a.size(-1) != m.size(-1)) continue;  // different token counts: not comparable
    a = distill::in_student_order(a, {1, 2}, student, teacher);
    out[static_cast<std::size_t>(l)] =
        at::cosine_similarity(m.flatten(1), a.to(m.device()).flatten(1), 1).mean().item<double>();
  }
  return out;
}

bool supports(const Model& model, std::string_view tap) {
  const auto names = model.tap_names();
  return std::find(names.begin(), names.end(), tap) != names.end();
}

// ---- checkpoints: <run_dir>/checkpoint/{weights,ema,rng}.safetensors, optimizer.pt, state.json ----

struct LoopState {
  std::int64_t step = 0;
  std::size_t cursor = 0;
  std::vector<std::int64_t> order;
  std::mt19937_64 order_rng;
  double best_top1 = -1, best_ppl = -1, wall_before = 0;
};

void remove_files(const fs::path& dir) {  // a flat folder of files (std::filesystem::remove_all crashes here)
  for (const char* f : {"weights.safetensors", "ema.safetensors", "rng.safetensors", "optimizer.pt", "state.json"})
    ::unlink((dir / f).c_str());
  ::rmdir(dir.c_str());
}

void save_checkpoint(const fs::path& run_dir, const Trainable& t, const std::vector<at::Tensor>& ema,
                     torch::optim::Optimizer& optimizer, const LoopState& s, const Dataset& data) {
  const fs::path tmp = run_dir / "checkpoint.tmp", final_dir = run_dir / "checkpoint", old = run_dir / "checkpoint.old";
  remove_files(tmp);
  fs::create_directories(tmp);
  std::vector<std::pair<std::string, at::Tensor>> weights;
  for (const auto& [prefix, m] : t.modules)
    for (auto& [name, tensor] : io::state_of(*m)) weights.emplace_back(prefix + name, tensor);
  io::save_safetensors(tmp / "weights.safetensors", weights);
  if (!ema.empty()) {
    std::vector<std::pair<std::string, at::Tensor>> e;
    for (std::size_t i = 0; i < ema.size(); ++i) e.emplace_back(t.named[i].first, ema[i]);
    io::save_safetensors(tmp / "ema.safetensors", e);
  }
  std::vector<std::pair<std::string, at::Tensor>> rng_state = {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  if (auto ds = data.state(); !ds.empty()) rng_state.emplace_back("dataset", at::tensor(ds, at::kLong));
  io::save_safetensors(tmp / "rng.safetensors", rng_state);
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.save_to((tmp / "optimizer.pt").string());
  std::ostringstream rng;
  rng << s.order_rng;
  const nlohmann::json j = {{"step", s.step}, {"cursor", s.cursor}, {"order", s.order}, {"order_rng", rng.str()},
                            {"best_top1", s.best_top1}, {"best_ppl", s.best_ppl}, {"wall_s", s.wall_before}};
  std::ofstream(tmp / "state.json") << j.dump() << "\n";
  // Swap in atomically enough: a crash leaves either the old or the new checkpoint complete.
  remove_files(old);
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  remove_files(old);
}

bool load_checkpoint(const fs::path& run_dir, const Trainable& t, std::vector<at::Tensor>& ema,
                     torch::optim::Optimizer& optimizer, LoopState& s, Dataset& data) {
  const fs::path dir = run_dir / "checkpoint";
  if (!fs::exists(dir / "state.json")) return false;
  std::ifstream in(dir / "state.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}': corrupt checkpoint state ({}); delete the folder to start the run afresh",
                            (dir / "state.json").string(), e.what()));
  }
  const io::SafeTensorsFile weights(dir / "weights.safetensors");
  at::NoGradGuard no_grad;
  for (const auto& [prefix, m] : t.modules)
    for (auto& [name, tensor] : io::state_of(*m)) {
      const std::string key = prefix + name;
      if (!weights.contains(key))
        throw Error(fmt::format("'{}': checkpoint has no '{}' (was the run's code changed?)", weights.path().string(), key));
      at::Tensor target = tensor;
      target.copy_(weights.get(key));
    }
  if (!ema.empty()) {
    const io::SafeTensorsFile e(dir / "ema.safetensors");
    for (std::size_t i = 0; i < ema.size(); ++i) ema[i].copy_(e.get(t.named[i].first));
  }
  const io::SafeTensorsFile rng(dir / "rng.safetensors");
  at::Generator cpu_generator = at::detail::getDefaultCPUGenerator();
  cpu_generator.set_state(rng.get("cpu").clone());
  if (rng.contains("dataset")) {
    const at::Tensor ds = rng.get("dataset").contiguous();
    data.restore(std::vector<int64_t>(ds.data_ptr<int64_t>(), ds.data_ptr<int64_t>() + ds.numel()));
  }
  torch::serialize::InputArchive archive;
  archive.load_from((dir / "optimizer.pt").string());
  optimizer.load(archive);
  s.step = j.at("step").get<std::int64_t>();
  s.cursor = j.at("cursor").get<std::size_t>();
  s.order = j.at("order").get<std::vector<std::int64_t>>();
  std::istringstream order_rng(j.at("order_rng").get<std::string>());
  order_rng >> s.order_rng;
  s.best_top1 = j.at("best_top1").get<double>();
  s.best_ppl = j.at("best_ppl").get<double>();
  s.wall_before = j.at("wall_s").get<double>();
  return true;
}

}  // namespace

TrainResult train(const config::RunConfig& config, const plugin::Registry& registry, sweep::Reporter& reporter,
                  const TrainOptions& options) {
  const auto seed = static_cast<std::uint64_t>(config.run.integer("seed"));
  at::manual_seed(seed);
  const std::string device_name = config.run.string("device");
  const bool cuda = device_name == "cuda" || (device_name == "auto" && torch::cuda::is_available());
  if (device_name == "cuda" && !torch::cuda::is_available())
    throw ConfigError(fmt::format("{}: run.device = \"cuda\" but no CUDA device is available", config.file));
  // Data-parallel when launched like torchrun (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): one
  // process per GPU, each on the GPU of its LOCAL_RANK among those it sees.
  const DistributedEnv dist = DistributedEnv::from_environment();
  const at::Device device =
      cuda ? at::Device(at::kCUDA, static_cast<at::DeviceIndex>(dist.local_rank % std::max<int>(1, torch::cuda::device_count())))
           : at::Device(at::kCPU);
  std::unique_ptr<Communicator> comm;
  if (dist.launched) {
    comm = connect(dist, device);
    reporter.provenance("world_size", std::to_string(dist.world_size));
    reporter.provenance("collectives", comm->backend());
  }
  const bool rank0 = dist.rank == 0;
  const bool bf16 = cuda && config.train.string("precision") == "bf16";
  reporter.provenance("device", cuda ? "cuda" : "cpu");
  reporter.provenance("precision", bf16 ? "bf16 autocast" : "fp32");

  // ---- the plugins ----
  auto dataset = make<Dataset>(config, registry, Kind::dataset, true, "a run needs a dataset");
  auto method = make<Method>(config, registry, Kind::method, true, "a run needs a method");
  const bool trains_teacher = method->trains() == Trains::teacher;
  std::shared_ptr<Teacher> teacher = make<Teacher>(config, registry, Kind::teacher,
                                                   method->needs_teacher() || trains_teacher, "the method needs a teacher");
  std::shared_ptr<Student> student = make<Student>(config, registry, Kind::student, !trains_teacher, "a run needs a student");
  auto alignment = method->uses_alignment() ? make<Alignment>(config, registry, Kind::alignment, false, "") : nullptr;
  Model& trained = trains_teacher ? static_cast<Model&>(*teacher) : static_cast<Model&>(*student);
  if (student) student->to(device);
  if (teacher) {
    teacher->to(device);
    if (!trains_teacher) {  // a frozen teacher: no gradients, inference behaviour
      teacher->eval();
      for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    }
  }
  if (student && teacher && config.plugins.at(Kind::student).options.has("init") &&
      config.plugins.at(Kind::student).options.string("init") == "from-teacher") {
    const auto map = layer_map("proportional", student->shape().num_layers, teacher->shape().num_layers);
    const InitReport report = student->init_from_teacher(teacher->weights_by_role(), map);
    reporter.provenance("init_from_teacher", report.str());
  }
  if (alignment) {
    const auto bridge = config.plugins.find(Kind::bridge);
    AlignmentContext context{teacher.get(), student.get(), {}};
    context.make_bridge = [&](int64_t in, int64_t out) {
      if (bridge == config.plugins.end())
        throw ConfigError(fmt::format("{}: the alignment needs a [bridge] table", config.file));
      config::Section o = bridge->second.options;
      o.set("in_features", in).set("out_features", out);
      return registry.create_as<Bridge>(Kind::bridge, bridge->second.name, o);
    };
    alignment->setup(context);
    alignment->to(device);
  }

  // ---- the data: a seeded, stratified subset whose hash goes into the provenance ----
  const auto labels = dataset->labels(Split::train);
  std::vector<std::int64_t> subset;
  if (labels.empty()) {
    subset.resize(static_cast<std::size_t>(dataset->size(Split::train)));
    std::iota(subset.begin(), subset.end(), 0);
  } else {
    subset = stratified_subset(labels, config.train.number("data_fraction"), seed);
  }
  if (subset.empty()) throw ConfigError(fmt::format("{}: the training subset is empty", config.file));
  std::string joined;
  for (auto i : subset) joined += std::to_string(i) + ",";
  reporter.provenance("dataset_subset_hash", sha256_hex(joined));
  reporter.provenance("dataset_subset_size", std::to_string(subset.size()));

  const std::int64_t batch_size = std::min<std::int64_t>(config.train.integer("batch_size"), subset.size());
  if (batch_size % dist.world_size != 0)
    throw ConfigError(fmt::format("{}: train.batch_size = {} is not divisible by the {} data-parallel processes "
                                  "(WORLD_SIZE): each takes an equal share of the global batch",
                                  config.file, batch_size, dist.world_size));
  const std::int64_t local_batch = batch_size / dist.world_size;
  const std::int64_t steps_per_epoch = (static_cast<std::int64_t>(subset.size()) + batch_size - 1) / batch_size;
  std::int64_t steps = config.train.integer("steps");
  if (steps == 0) steps = std::max<std::int64_t>(1, std::llround(config.train.number("epochs") * steps_per_epoch));
  reporter.provenance("total_steps", std::to_string(steps));

  MethodContext method_context;
  method_context.teacher = teacher;
  method_context.student = student;
  method_context.alignment = alignment;
  method_context.total_steps = steps;
  method_context.steps_per_epoch = steps_per_epoch;
  method_context.batch_size = batch_size;
  if (labels.empty()) {  // token ids: one example's length
    method_context.tokens_per_example = dataset->get(Split::train, {subset.front()}).inputs.numel();
  } else {
    method_context.tokens_per_example = (student ? static_cast<Model&>(*student) : static_cast<Model&>(*teacher)).shape().seq_len;
  }
  method_context.record = [&reporter](const std::string& key, const std::string& value) { reporter.provenance(key, value); };
  method->setup(method_context);
  method->to(device);

  // ---- optimizer: AdamW, two groups (with / without weight decay) ----
  const Trainable trainable = collect(trained, alignment.get(), method.get());
  std::vector<at::Tensor> with_decay, without_decay, params;
  for (const auto& [name, p] : trainable.named) {
    (decays(name, p) ? with_decay : without_decay).push_back(p);
    params.push_back(p);
  }
  const auto betas = config.train.numbers("betas");
  const double lr = config.train.number("lr"), min_lr = config.train.number("min_lr");
  auto adamw = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).weight_decay(wd).betas({betas.at(0), betas.at(1)}));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(with_decay, adamw(config.train.number("weight_decay")));
  groups.emplace_back(without_decay, adamw(0.0));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(lr));
  FusedAdamW fused_adamw;  // steps `optimizer` through multi-tensor kernels (its state stays the optimizer's)
  const double clip = config.train.number("grad_clip");
  const double ema_decay = config.train.number("ema_decay");
  std::vector<at::Tensor> ema;
  if (ema_decay > 0)
    for (const auto& p : params) ema.push_back(p.detach().clone());

  // ---- the loop state, possibly from a checkpoint ----
  LoopState state;
  state.order_rng.seed(seed ^ 0x9e3779b97f4a7c15ULL);
  state.order = subset;
  state.cursor = state.order.size();
  TrainResult result;
  if (!options.run_dir.empty()) {
    fs::create_directories(options.run_dir);
    result.resumed = load_checkpoint(options.run_dir, trainable, ema, optimizer, state, *dataset);
    if (result.resumed) reporter.provenance("resumed_from_step", std::to_string(state.step));
  }
  reporter.flush();
  // Every rank starts from rank 0's weights (they are equal already when the seeds are; this makes it certain),
  // and its gradients are averaged over the ranks after each backward.
  // (One process has nothing to average: no hooks, no bucket copies.)
  std::unique_ptr<GradientSync> sync;
  if (comm && comm->size() > 1) {
    at::NoGradGuard no_grad;
    for (auto& p : params) comm->broadcast(p.detach(), 0);
    sync = std::make_unique<GradientSync>(*comm, params);
    reporter.provenance("gradient_buckets", std::to_string(sync->buckets()));
  }

  const std::int64_t eval_every = config.train.integer("eval_every");
  const std::int64_t checkpoint_every = config.train.integer("checkpoint_every");
  const std::int64_t eval_examples = config.train.integer("eval_examples");
  const std::string schedule = config.train.string("schedule");
  const std::int64_t warmup = config.train.integer("warmup_steps");

  // The evaluated weights: the EMA when enabled (swapped in for the evaluation only).
  auto with_ema = [&](auto&& fn) {
    if (ema.empty()) return fn();
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> live;
    for (std::size_t i = 0; i < params.size(); ++i) live.push_back(params[i].detach().clone()), params[i].copy_(ema[i]);
    auto r = fn();
    for (std::size_t i = 0; i < params.size(); ++i) params[i].copy_(live[i]);
    return r;
  };
  auto run_eval = [&](std::int64_t at_step) {
    const EvalResult r =
        with_ema([&] { return evaluate(trained, *dataset, device, batch_size, eval_examples, bf16, comm.get()); });
    if (r.top1 >= 0) {
      reporter.metric(at_step, "eval/top1", r.top1);
      state.best_top1 = std::max(state.best_top1, r.top1);
    }
    if (r.ppl >= 0) {
      reporter.metric(at_step, "eval/ppl", r.ppl);
      state.best_ppl = state.best_ppl < 0 ? r.ppl : std::min(state.best_ppl, r.ppl);
    }
    reporter.metric(at_step, "eval/loss", r.loss);
    return r;
  };

  if (teacher && !trains_teacher && !result.resumed) {  // the teacher's own quality, once
    const EvalResult r = evaluate(*teacher, *dataset, device, batch_size, eval_examples, bf16, comm.get());
    if (r.top1 >= 0) reporter.summary("teacher_top1", fmt::format("{:.4f}", r.top1));
    if (r.ppl >= 0) reporter.summary("teacher_ppl", fmt::format("{:.4f}", r.ppl));
  }

  const bool token_inputs = !labels.empty() ? false : true;
  double step_ms_sum = 0, align_share_sum = 0;
  std::int64_t timed_steps = 0, align_steps = 0;
  std::int64_t ran = 0;
  // The next batch of the shuffled subset, reshuffled per epoch; with several ranks, each draws the same
  // global batch and keeps its own share of it.
  auto next_indices = [batch_size, local_batch, rank = dist.rank](LoopState& st) {
    std::vector<std::int64_t> indices;
    while (static_cast<std::int64_t>(indices.size()) < batch_size) {
      if (st.cursor == st.order.size()) {
        std::shuffle(st.order.begin(), st.order.end(), st.order_rng);
        st.cursor = 0;
      }
      indices.push_back(st.order[st.cursor++]);
    }
    return std::vector<std::int64_t>(indices.begin() + rank * local_batch, indices.begin() + (rank + 1) * local_batch);
  };
  // The per-step metrics, every log_every steps (the step time and throughput averages use every step).
  const std::int64_t log_every = config.train.integer("log_every");
  auto log_step = [&](std::int64_t step, double value, const LossTerms& loss, double rate, double ms,
                      double grad_norm, std::int64_t items) {
    reporter.metric(step, "loss", value);
    for (const auto& [name, term] : loss.terms) reporter.metric(step, "loss/" + name, term.item<double>());
    for (const auto& [name, stat] : loss.stats) reporter.metric(step, "stat/" + name, stat);
    if (grad_norm >= 0) reporter.metric(step, "grad_norm", grad_norm);
    reporter.metric(step, "lr", rate);
    reporter.metric(step, "time/step_ms", ms);
    reporter.metric(step, token_inputs ? "throughput/tokens_per_s" : "throughput/examples_per_s",
                    static_cast<double>(items) / ms * 1e3);
    if (cuda) reporter.metric(step, "memory/peak_mb", peak_memory_mb());
  };
  std::future<Batch> prefetched;
  std::string stage, stages;  // the current stage; "name@first step" of each stage this process ran
  trained.train();
  reset_peak_memory();
  for (; state.step < steps; ++state.step) {
    const std::int64_t step = state.step;
    if (options.stop_after > 0 && ran == options.stop_after) {
      result.stopped = true;
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    // A stop request (the worker's SIGTERM/SIGUSR1) ends the run after this step, with a checkpoint.
    bool stop_now = options.stop_requested && options.stop_requested->load();
    if (options.stop_requested && comm && comm->size() > 1) {  // every rank stops after the same step
      at::Tensor flag = at::full({1}, stop_now ? 1.0f : 0.0f, at::TensorOptions(device));
      comm->all_reduce_sum(flag);
      stop_now = flag.item<float>() > 0;
    }
    // The batch: prefetched on a background thread during the previous step (decoding overlaps compute),
    // except right after a checkpoint, which must not contain a batch that was drawn but not trained on.
    Batch batch = prefetched.valid() ? prefetched.get() : dataset->get(Split::train, next_indices(state));
    const bool checkpoint_next =
        stop_now || (!options.run_dir.empty() && checkpoint_every > 0 && (step + 1) % checkpoint_every == 0);
    if (step + 1 < steps && !checkpoint_next && !(options.stop_after > 0 && ran + 1 == options.stop_after))
      prefetched = std::async(std::launch::async, [&dataset, indices = next_indices(state)] {
        return dataset->get(Split::train, indices);
      });
    batch.inputs = batch.inputs.to(device);
    batch.targets = batch.targets.to(device);
    const double rate = learning_rate(schedule, lr, min_lr, warmup, steps, step) * method->lr_scale(step);
    if (std::string name = method->stage(step); name != stage) {  // the stage a step belongs to, at each change
      if (name != "main") reporter.metric(step, "stage/" + name, static_cast<double>(step));
      stages += (stages.empty() ? "" : ",") + name + "@" + std::to_string(step);
      stage = std::move(name);
    }
    for (auto& group : optimizer.param_groups()) group.options().set_lr(rate);
    optimizer.zero_grad();
    if (sync) sync->begin();
    LossTerms loss;
    {
      Autocast autocast(bf16);
      loss = method->loss(batch, step);
    }
    // The whole step is queued before the host looks at the loss (one wait for the device per step, at its end,
    // instead of one after the forward and one after clipping): the optimizer's kernels read a device flag and
    // leave the weights as they were when the loss is not finite, and then the run stops with NonFiniteLoss.
    at::Tensor loss_value = loss.total.detach().to(at::kDouble).reshape({1});
    if (comm && comm->size() > 1) {  // the global batch's loss (the mean of the equal shares); NaN on any rank stops all
      comm->all_reduce_sum(loss_value);
      loss_value.div_(static_cast<double>(comm->size()));
    }
    if (!loss.backpropagated) loss.total.backward();
    if (sync) sync->finish();
    at::Tensor grad_norm;
    if (clip > 0) grad_norm = clip_grad_norm(params, clip);
    fused_adamw.step(optimizer, at::isfinite(loss_value).logical_not().to(at::kFloat));
    const double value = loss_value.item<double>();  // waits for the step
    if (!std::isfinite(value)) throw NonFiniteLoss(step, value);
    if (!ema.empty()) {
      at::NoGradGuard no_grad;
      for (std::size_t i = 0; i < params.size(); ++i) ema[i].mul_(ema_decay).add_(params[i].detach(), 1.0 - ema_decay);
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (step % log_every == 0 || step + 1 == steps) log_step(step, value, loss, rate, ms, grad_norm.defined() ? grad_norm.item<double>() : -1.0, token_inputs ? batch.inputs.numel() * dist.world_size : batch_size);
    if (step > 0 || steps == 1) step_ms_sum += ms, ++timed_steps;  // the first step includes warm-up costs
    if (auto it = loss.stats.find("align_share"); it != loss.stats.end()) align_share_sum += it->second, ++align_steps;
    result.final_loss = value;
    ++ran;
    const bool last = step + 1 == steps;
    if (eval_every > 0 && (step + 1) % eval_every == 0 && !last) run_eval(step + 1);
    if (!options.run_dir.empty() && checkpoint_next && !last && rank0) {
      state.step = step + 1;
      state.wall_before += reporter.elapsed();
      save_checkpoint(options.run_dir, trainable, ema, optimizer, state, *dataset);
      state.wall_before -= reporter.elapsed();
      state.step = step;
    }
    if (stop_now && !last) {
      result.stopped = true;
      state.step = step + 1;
      break;
    }
  }
  result.steps = state.step;
  if (result.stopped) {
    if (comm) comm->leave();  // rank 0 keeps the rendezvous store up until every rank is past its last collective
    return result;
  }

  // ---- the end: evaluation, instrumentation, the trained model ----
  const EvalResult final_eval = run_eval(steps);
  result.eval_top1 = final_eval.top1;
  result.eval_ppl = final_eval.ppl;
  result.wall_s = state.wall_before + reporter.elapsed();
  if (!stages.empty() && stages.find(',') != std::string::npos) reporter.summary("stages", stages);
  reporter.summary("final_loss", fmt::format("{:.9g}", result.final_loss));
  reporter.summary("steps", std::to_string(result.steps));
  reporter.summary("wall_s", fmt::format("{:.3f}", result.wall_s));
  if (final_eval.top1 >= 0) {
    reporter.summary("top1", fmt::format("{:.4f}", final_eval.top1));
    reporter.summary("best_top1", fmt::format("{:.4f}", state.best_top1));
  }
  if (final_eval.ppl >= 0) {
    reporter.summary("ppl", fmt::format("{:.4f}", final_eval.ppl));
    reporter.summary("best_ppl", fmt::format("{:.4f}", state.best_ppl));
  }
  reporter.summary("eval_examples", std::to_string(final_eval.examples));
  if (timed_steps > 0) {
    const double ms = step_ms_sum / static_cast<double>(timed_steps);
    reporter.summary("ms_per_step", fmt::format("{:.3f}", ms));
    const double items = token_inputs ? 0 : static_cast<double>(batch_size);
    if (items > 0) reporter.summary("examples_per_s", fmt::format("{:.1f}", items / ms * 1e3));
  }
  if (comm) comm->leave();  // the final evaluation was the last collective
  if (align_steps > 0) reporter.summary("align_share", fmt::format("{:.4f}", align_share_sum / align_steps));
  if (cuda) reporter.summary("peak_memory_mb", fmt::format("{:.1f}", peak_memory_mb()));

  const std::int64_t sim_examples = config.train.integer("similarity_examples");
  if (rank0 && teacher && student && sim_examples > 0 && supports(*student, tap::kMixing) && supports(*teacher, tap::kAttention)) {
    std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(sim_examples, dataset->size(Split::test))));
    std::iota(indices.begin(), indices.end(), 0);
    const at::Tensor inputs = dataset->get(Split::test, indices).inputs.to(device);
    const auto map = layer_map("proportional", student->shape().num_layers, teacher->shape().num_layers);
    const auto sims = with_ema([&] { return attention_similarity(*teacher, *student, inputs, map); });
    double sum = 0;
    int n = 0;
    for (std::size_t l = 0; l < sims.size(); ++l) {
      if (std::isnan(sims[l])) continue;
      reporter.metric(static_cast<std::int64_t>(l), "attn_similarity", sims[l]);
      sum += sims[l], ++n;
    }
    if (n > 0) reporter.summary("attn_similarity", fmt::format("{:.4f}", sum / n));
  }

  if (!options.run_dir.empty() && rank0) {  // the trained model, loadable by later runs through "@ref:...:checkpoint"
    with_ema([&] {
      trained.save_checkpoint(options.run_dir / "model");
      return 0;
    });
    reporter.summary("checkpoint", fs::absolute(options.run_dir / "model").string());
    remove_files(options.run_dir / "checkpoint");  // finished: the resume state is no longer needed
  }
  return result;
}

}  // namespace cab::train
