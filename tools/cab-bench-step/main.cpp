// cab-bench-step: one full training step as cab's trainer runs it (core/src/train/trainer.cpp), timed on the GPU
// for PERFORMANCE.md's case DeiT-Tiny teacher → Vim-Tiny student (init = identity), 224² images, batch 128:
//   optimizer.zero_grad(); loss under bf16 autocast (or fp32); backward (unless the method back-propagated
//   itself); clip_grad_norm_(1.0); AdamW (lr 5e-4, weight decay 0.05) over the student's and the alignment's
//   parameters, skipped on the device when the loss is not finite; then loss.total.item() (the trainer's NaN
//   check, the step's one wait for the device). The teacher is frozen (eval, no gradients).
// Cases, one JSON object each per precision:
//   soft-kd   soft KD without alignment (PERFORMANCE.md's "alignment loss off" row)
//   cab       soft KD + 1.0·cab-bc (taps B, C, q, k + MLP bridges per layer + MSE)
// Inputs are random images and labels on the GPU and the weights are random: the throughput does not depend
// on the values. Peak memory is the whole process's (models, inputs, optimizer state, activations), as
// PyTorch's peak GPU memory is. The reference figures (PyTorch + mamba_ssm on one H100) are PERFORMANCE.md's
// published ones, quoted, not measured in the same run: mamba_ssm is not installed on the GPU host.
// Launched like torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; one process per GPU), the step is
// the trainer's data-parallel one: --batch is the global batch, split over the processes; gradients are averaged
// through NCCL (cab/train/distributed.h); images/s counts the global batch; rank 0 prints.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>

#include "cab/cli/cli.h"
#include "cab/config/section.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/train/autocast.h"
#include "cab/train/device_memory.h"
#include "cab/train/distributed.h"
#include "cab/train/optim.h"

namespace po = boost::program_options;
using cab::plugin::Kind;

namespace {

// PERFORMANCE.md, "one CAB training step in PyTorch" (batch 128, 224²): images/s, ms/step, peak GiB.
struct Reference {
  double images_per_s, ms, peak_gib;
};
const std::map<std::pair<std::string, std::string>, Reference> kReferences = {
    {{"cab", "fp32"}, {559, 229, 21.5}}, {{"cab", "bf16"}, {622, 206, 13.1}}, {{"soft-kd", "bf16"}, {861, 149, 8.4}}};
// cab's targets for the CAB step in bf16.
constexpr double kTargetImagesPerS = 3000, kTargetPeakGib = 8, kTargetAlignmentShare = 0.05;

struct Setup {
  const cab::plugin::Registry* registry = nullptr;
  int64_t image_size = 224;
  int warmup = 3, iterations = 10;
  bool wait_for_loss = false;  // --wait-for-loss: the loss read before the backward (the trainer's older order)
  std::string profile;  // with --profile: a Chrome trace per case (PREFIX-<case>-<precision>.json) and a kernel summary
  cab::Batch batch;                             // this process's share of the global batch
  cab::train::Communicator* comm = nullptr;     // data-parallel (launched like torchrun), else null
};

struct Result {
  bool oom = false;
  double ms = 0, peak_gib = 0, loss = 0;
  double align_share = -1;  // the method's "align_share" stat averaged over the timed steps; -1 when absent
};

/// Three more steps under LibTorch's Kineto profiler (CPU ops and CUDA kernels): the Chrome trace goes to a file,
/// and a JSON line sums the GPU time per kernel name (ms per step, the 25 largest) next to the GPU's busy time.
template <class Step>
void profile_steps(const Setup& s, const std::string& method, bool bf16, Step&& step) {
  namespace prof = torch::autograd::profiler;
  constexpr int kSteps = 3;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<torch::profiler::impl::ActivityType> activities = {torch::profiler::impl::ActivityType::CPU,
                                                                     torch::profiler::impl::ActivityType::CUDA};
  prof::prepareProfiler(config, activities);  // what torch.profiler does first (sets up Kineto/CUPTI)
  prof::enableProfiler(config, activities);
  for (int i = 0; i < kSteps; ++i) step();
  torch::cuda::synchronize();
  const auto result = prof::disableProfiler();
  const std::string trace = fmt::format("{}-{}-{}.json", s.profile, method, bf16 ? "bf16" : "fp32");
  result->save(trace);
  std::map<std::string, std::pair<double, int>> kernels;  // name → (ns, calls)
  double busy = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    auto& k = kernels[e.name()];
    k.first += static_cast<double>(e.durationNs());
    k.second += 1;
    busy += static_cast<double>(e.durationNs());
  }
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [name, k] : kernels) order.emplace_back(k.first, name);
  std::sort(order.rbegin(), order.rend());
  std::string list;
  for (std::size_t i = 0; i < std::min<std::size_t>(25, order.size()); ++i) {
    std::string name = order[i].second.substr(0, 120);
    for (char& c : name)
      if (c == '"' || c == '\\') c = '\'';
    list += fmt::format("{}{{\"ms\": {:.3f}, \"calls\": {}, \"name\": \"{}\"}}", i ? ", " : "", order[i].first / 1e6 / kSteps,
                        kernels[order[i].second].second / kSteps, name);
  }
  std::cout << fmt::format("{{\"profile\": \"{}\", \"precision\": \"{}\", \"trace\": \"{}\", \"gpu_busy_ms_per_step\": {:.3f}, "
                           "\"kernel_names\": {}, \"top_kernels\": [{}]}}",
                           method, bf16 ? "bf16" : "fp32", trace, busy / 1e6 / kSteps, kernels.size(), list)
            << std::endl;
}

/// Builds the models, the alignment (for cab), the method and the optimizer, then times the steps.
Result run_case(const Setup& s, const std::string& method_name, bool bf16) {
  const at::Device cuda(at::kCUDA);
  const cab::plugin::Registry& registry = *s.registry;
  Result r;
  try {
    cab::config::Section vit, vim;
    vit.set("preset", std::string("deit-tiny")).set("image_size", s.image_size);
    vim.set("preset", std::string("vim-tiny")).set("init", std::string("identity")).set("image_size", s.image_size);
    auto teacher = registry.create_as<cab::Teacher>(Kind::teacher, "vit", vit);
    auto student = registry.create_as<cab::Student>(Kind::student, "vim", vim);
    teacher->to(cuda);
    student->to(cuda);
    teacher->eval();  // frozen, as the trainer keeps it
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    student->train();

    const bool aligned = method_name == "cab";
    cab::config::Section method_options;
    if (aligned) method_options.set("lambda", 1.0);
    cab::MethodContext context;
    context.teacher = teacher;
    context.student = student;
    if (aligned) {  // cab-bc with MLP bridges, built as the trainer builds a run's [alignment] and [bridge]
      context.alignment = registry.create_as<cab::Alignment>(Kind::alignment, "cab-bc", {});
      context.alignment->setup({teacher.get(), student.get(), [&registry](int64_t in, int64_t out) {
                                  return registry.create_as<cab::Bridge>(
                                      Kind::bridge, "mlp", cab::config::Section().set("in_features", in).set("out_features", out));
                                }});
      context.alignment->to(cuda);
    }
    context.total_steps = context.steps_per_epoch = s.warmup + s.iterations;
    context.batch_size = s.batch.inputs.size(0);
    context.tokens_per_example = student->shape().seq_len;
    auto method = registry.create_as<cab::Method>(Kind::method, method_name, method_options);
    method->setup(context);
    method->to(cuda);

    std::vector<at::Tensor> params;
    for (torch::nn::Module* m : {static_cast<torch::nn::Module*>(student.get()),
                                 static_cast<torch::nn::Module*>(context.alignment.get())})
      if (m)
        for (const auto& p : m->parameters())
          if (p.requires_grad()) params.push_back(p);
    torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(5e-4).weight_decay(0.05));
    cab::train::FusedAdamW fused_adamw;  // the trainer's step: multi-tensor kernels over the optimizer's state
    // Data-parallel: rank 0's weights, gradients averaged. Unlike the trainer, which skips it for one process,
    // this also runs the machinery with WORLD_SIZE=1, so that its cost on one GPU can be measured.
    std::unique_ptr<cab::train::GradientSync> sync;
    if (s.comm) {
      at::NoGradGuard no_grad;
      for (auto& p : params) s.comm->broadcast(p.detach(), 0);
      sync = std::make_unique<cab::train::GradientSync>(*s.comm, params);
    }

    int64_t step = 0;
    auto train_step = [&] {
      optimizer.zero_grad();
      if (sync) sync->begin();
      cab::LossTerms loss;
      {
        cab::train::Autocast autocast(bf16);
        loss = method->loss(s.batch, step++);
      }
      const at::Tensor value = loss.total.detach().to(at::kDouble);
      if (s.wait_for_loss) r.loss = value.item<double>();
      if (!loss.backpropagated) loss.total.backward();
      if (sync) sync->finish();
      const at::Tensor norm = cab::train::clip_grad_norm(params, 1.0);
      if (s.wait_for_loss) norm.item<double>();
      fused_adamw.step(optimizer, at::isfinite(value).logical_not().to(at::kFloat));  // as the trainer: no wait before
      r.loss = value.item<double>();  // the trainer's NaN check: the step's one wait for the device, at its end
      return loss;
    };
    cab::train::reset_peak_memory();
    for (int i = 0; i < s.warmup; ++i) train_step();
    double share_sum = 0;
    int shares = 0;
    torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < s.iterations; ++i) {
      const cab::LossTerms loss = train_step();
      if (auto it = loss.stats.find("align_share"); it != loss.stats.end()) share_sum += it->second, ++shares;
    }
    torch::cuda::synchronize();
    r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / s.iterations;
    r.peak_gib = cab::train::peak_memory_mb() / 1024.0;
    if (shares > 0) r.align_share = share_sum / shares;
    if (!s.profile.empty()) profile_steps(s, method_name, bf16, train_step);
  } catch (const c10::OutOfMemoryError&) {
    r.oom = true;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-bench-step";
  cl.usage =
      "Usage: cab-bench-step [options]\n\nTimes one full training step as cab's trainer runs it (loss under autocast, "
      "backward, gradient\nclipping, AdamW) for DeiT-Tiny → Vim-Tiny, with soft KD alone (\"alignment loss off\") and "
      "with\nCAB (cab-bc + MLP bridges); one JSON object per case and precision: ms/step, images/s, peak GPU\nmemory "
      "of the process. The reference_* fields are PERFORMANCE.md's published PyTorch + mamba_ssm\nfigures (one H100, "
      "batch 128, 224²), quoted, not measured in this run (mamba_ssm is not installed on\nthe GPU host); they are "
      "printed only at that batch and image size.\n";
  cl.visible.add_options()("help,h", "show this help")("version", "show version information")(
      "batch", po::value<int64_t>()->default_value(128), "images per step")(
      "image-size", po::value<int64_t>()->default_value(224), "image height = width (teacher and student)")(
      "warmup", po::value<int>()->default_value(3), "untimed steps before the timed ones")(
      "iterations", po::value<int>()->default_value(10), "timed steps per case")(
      "precision", po::value<std::string>()->default_value("both"), "bf16 (autocast), fp32 or both")(
      "method", po::value<std::string>(), "run only the named case (soft-kd, cab)")(
      "wait-for-loss", "read the loss before the backward and the gradient norm before the optimizer step, as the "
      "trainer did before it queued the whole step (two more waits for the device per step), for comparison")(
      "profile", po::value<std::string>(), "also profile 3 steps per case: Chrome traces PREFIX-<case>-<precision>.json and a kernel summary line")(
      "plugins,P", po::value<std::vector<std::string>>()->composing(), "extra plugin files or directories");
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;
  const std::string precision = vm["precision"].as<std::string>();
  const std::string only = vm.count("method") ? vm["method"].as<std::string>() : std::string();
  if (precision != "bf16" && precision != "fp32" && precision != "both") {
    std::cerr << "cab-bench-step: --precision must be bf16, fp32 or both\n";
    return cab::cli::kUsage;
  }
  if (!only.empty() && only != "soft-kd" && only != "cab") {
    std::cerr << "cab-bench-step: --method must be soft-kd or cab\n";
    return cab::cli::kUsage;
  }
  if (vm["iterations"].as<int>() < 1 || vm["warmup"].as<int>() < 0 || vm["batch"].as<int64_t>() < 1) {
    std::cerr << "cab-bench-step: --iterations and --batch must be at least 1, --warmup at least 0\n";
    return cab::cli::kUsage;
  }
  if (!torch::cuda::is_available()) {
    std::cerr << "cab-bench-step: needs a CUDA device (it times the training step on the GPU)\n";
    return cab::cli::kNotAvailable;
  }
  // Data-parallel when launched like torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): the global
  // batch --batch is split over the processes, gradients are averaged as in the trainer, and rank 0 prints.
  const auto dist = cab::train::DistributedEnv::from_environment();
  std::unique_ptr<cab::train::Communicator> comm;
  if (dist.launched) {
    if (vm.count("profile")) {
      std::cerr << "cab-bench-step: --profile profiles one process; leave out WORLD_SIZE for it\n";
      return cab::cli::kUsage;
    }
    if (vm["batch"].as<int64_t>() % dist.world_size != 0) {
      std::cerr << fmt::format("cab-bench-step: --batch {} does not split over WORLD_SIZE={} processes\n",
                               vm["batch"].as<int64_t>(), dist.world_size);
      return cab::cli::kUsage;
    }
    comm = cab::train::connect(dist, at::Device(at::kCUDA, static_cast<at::DeviceIndex>(
                                                              dist.local_rank % torch::cuda::device_count())));
  }
  cab::plugin::Registry registry;
  const auto named = vm.count("plugins") ? vm["plugins"].as<std::vector<std::string>>() : std::vector<std::string>();
  cab::cli::load_plugins(registry, std::vector<std::filesystem::path>(named.begin(), named.end()));

  Setup s;
  s.registry = &registry;
  s.image_size = vm["image-size"].as<int64_t>();
  s.warmup = vm["warmup"].as<int>();
  s.iterations = vm["iterations"].as<int>();
  if (vm.count("profile")) s.profile = vm["profile"].as<std::string>();
  s.wait_for_loss = vm.count("wait-for-loss") > 0;
  const int64_t b = vm["batch"].as<int64_t>();  // the global batch
  const int64_t local = b / dist.world_size;
  const at::TensorOptions cuda = at::TensorOptions(at::Device(at::kCUDA));
  s.batch = {at::randn({local, 3, s.image_size, s.image_size}, cuda), at::randint(0, 1000, {local}, cuda.dtype(at::kLong))};
  s.comm = comm.get();
  const bool reference_shape = b == 128 && s.image_size == 224;

  for (const std::string p : {"bf16", "fp32"}) {
    if (precision != "both" && precision != p) continue;
    double soft_ms = -1;  // this precision's soft-kd step, for the alignment's share of the cab step
    for (const std::string m : {"soft-kd", "cab"}) {
      if (!only.empty() && only != m) continue;
      Result r;
      try {
        r = run_case(s, m, p == "bf16");
      } catch (const cab::PluginError& e) {  // a plugin not built or not found: say which, do not abort
        std::cerr << "cab-bench-step: " << e.what() << "\n";
        return cab::cli::kPluginError;
      }
      std::string line = fmt::format("{{\"case\": \"{}\", \"method\": \"{}\", \"precision\": \"{}\", \"batch\": {}, "
                                     "\"image_size\": {}, \"teacher\": \"vit/deit-tiny\", \"student\": \"vim/vim-tiny\"",
                                     m, m, p, b, s.image_size);
      if (m == "cab") {
        const char* form = std::getenv("CAB_ALIGN_FORM");  // as set (the plugin owns the default and the check)
        line += fmt::format(", \"alignment\": \"cab-bc\", \"bridge\": \"mlp\", \"CAB_ALIGN_FORM\": {}",
                            form && *form ? fmt::format("\"{}\"", form) : std::string("null"));
      }
      line += fmt::format(", \"device_waits_per_step\": {}", s.wait_for_loss ? 3 : 1);
      if (dist.launched) line += fmt::format(", \"world_size\": {}, \"collectives\": \"{}\"", dist.world_size, comm->backend());
      if (dist.rank != 0) continue;  // rank 0 speaks for the run
      if (r.oom) {
        std::cout << line << ", \"oom\": true}" << std::endl;
        continue;
      }
      const double images_per_s = static_cast<double>(b) * 1000.0 / r.ms;
      line += fmt::format(", \"warmup\": {}, \"iterations\": {}, \"ms_per_step\": {:.3f}, \"images_per_s\": {:.1f}, "
                          "\"peak_gib\": {:.3f}, \"loss\": {}",
                          s.warmup, s.iterations, r.ms, images_per_s, r.peak_gib,
                          std::isfinite(r.loss) ? fmt::format("{:.6g}", r.loss) : std::string("null"));
      if (r.align_share >= 0) line += fmt::format(", \"align_share_stat\": {:.4f}", r.align_share);
      if (m == "soft-kd") soft_ms = r.ms;
      if (m == "cab" && soft_ms > 0) line += fmt::format(", \"alignment_share\": {:.4f}", (r.ms - soft_ms) / r.ms);
      if (auto it = kReferences.find({m, p}); reference_shape && it != kReferences.end())
        line += fmt::format(", \"reference_images_per_s\": {:.0f}, \"reference_ms\": {:.0f}, \"reference_peak_gib\": {:.1f}, "
                            "\"speedup\": {:.2f}",
                            it->second.images_per_s, it->second.ms, it->second.peak_gib,
                            images_per_s / it->second.images_per_s);
      if (m == "cab" && p == "bf16" && reference_shape)
        line += fmt::format(", \"target_images_per_s\": {:.0f}, \"target_peak_gib\": {:.0f}, \"target_alignment_share\": {:.2f}",
                            kTargetImagesPerS, kTargetPeakGib, kTargetAlignmentShare);
      std::cout << line << "}" << std::endl;
    }
  }
  if (comm) comm->leave();
  return cab::cli::kOk;
}
