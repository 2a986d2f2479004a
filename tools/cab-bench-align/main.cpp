// cab-bench-align: the memory and time of CAB's alignment versus MOHAWK's matrix alignment (stage 1), one JSON
// object per case, on real models built from cab's plugins (random weights; the cost does not depend on them):
//   vim-tiny  DeiT-Tiny → Vim-Tiny, 224² images (L = 197)
//   lm-2048   GPT-2 (124M sizes, 2048 positions) → a Mamba-2 LM of the same width (24 heads, N = 128), L = 2048 tokens
// Per case, each a full optimizer-free training step (loss + backward) after warm-up, fp32:
//   soft-kd     the step without any alignment (the reference for CAB's extra cost)
//   cab         soft KD + λ·cab-bc (taps B, C, q, k + MLP bridges per layer + MSE)
//   mohawk      stage 1: each student layer on the teacher's input, its materialized mixing matrix vs the
//               teacher's attention (Frobenius), back-propagated one layer at a time (chunk_layers = 1), and all
//               layers at once (chunk_layers = L, "mohawk_unchunked") — out of memory is reported, not fatal.
// Memory: the CUDA caching allocator's peak during the step minus what was allocated before it (models,
// inputs); CAB's alignment memory is its peak minus soft KD's.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <chrono>
#include <iostream>
#include <optional>

#include "cab/cli/cli.h"
#include "cab/config/section.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/train/device_memory.h"
#include "cab/util/version.h"

namespace po = boost::program_options;
using cab::plugin::Kind;

namespace {

struct Measured {
  double ms = 0, peak_mb = 0;
  bool oom = false;
};

struct Case {
  std::string name, teacher, student;
  cab::config::Section teacher_options, student_options;
  at::Tensor inputs, targets;
};

Measured measure(const std::function<void()>& step, int iterations) {
  Measured m;
  try {
    step();  // warm-up
    torch::cuda::synchronize();
    const double before = cab::train::allocated_memory_mb();
    cab::train::reset_peak_memory();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) step();
    torch::cuda::synchronize();
    m.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / iterations;
    m.peak_mb = cab::train::peak_memory_mb() - before;
  } catch (const c10::OutOfMemoryError&) {
    m.oom = true;
  }
  return m;
}

std::string json(const Measured& m) {
  if (m.oom) return "{\"oom\": true}";
  return fmt::format("{{\"ms\": {:.3f}, \"peak_mb\": {:.1f}}}", m.ms, m.peak_mb);
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-bench-align";
  cl.usage =
      "Usage: cab-bench-align [options]\n\nMemory and time of CAB's alignment vs MOHAWK's matrix alignment (DeiT-Tiny → "
      "Vim-Tiny at L = 197,\nGPT-2 → Mamba-2 at L = 2048); one JSON object per case.\n";
  cl.visible.add_options()("help,h", "show this help")("version", "show version information")(
      "iterations", po::value<int>()->default_value(3), "timed steps per method")(
      "vision-batch", po::value<int64_t>()->default_value(8), "images per step in the vim-tiny case")(
      "lm-batch", po::value<int64_t>()->default_value(1), "sequences per step in the lm-2048 case")(
      "case", po::value<std::string>(), "run only the named case (vim-tiny, lm-2048)")(
      "plugins,P", po::value<std::vector<std::string>>()->composing(), "extra plugin files or directories");
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;
  if (!torch::cuda::is_available()) {
    std::cerr << "cab-bench-align: needs a CUDA device (the memory figures come from the CUDA allocator)\n";
    return cab::cli::kNotAvailable;
  }
  cab::plugin::Registry registry;
  std::vector<std::filesystem::path> extra;
  if (vm.count("plugins"))
    for (const auto& p : vm["plugins"].as<std::vector<std::string>>()) extra.emplace_back(p);
  cab::cli::load_plugins(registry, extra);
  const int iterations = vm["iterations"].as<int>();
  const at::Device cuda(at::kCUDA);

  std::vector<Case> cases(2);
  {
    Case& c = cases[0];
    c.name = "vim-tiny", c.teacher = "vit", c.student = "vim";
    c.teacher_options.set("preset", std::string("deit-tiny"));
    c.student_options.set("preset", std::string("vim-tiny")).set("init", std::string("identity"));
    const int64_t b = vm["vision-batch"].as<int64_t>();
    c.inputs = at::randn({b, 3, 224, 224}, at::TensorOptions(cuda));
    c.targets = at::randint(0, 1000, {b}, at::TensorOptions(cuda).dtype(at::kLong));
  }
  {
    Case& c = cases[1];
    c.name = "lm-2048", c.teacher = "gpt2", c.student = "mamba2";
    // GPT-2 small's sizes with 2048 positions (the public checkpoint stops at 1024)
    c.teacher_options.set("vocab_size", std::int64_t{50257}).set("d_model", std::int64_t{768}).set("n_layer", std::int64_t{12});
    c.teacher_options.set("heads", std::int64_t{12}).set("intermediate", std::int64_t{3072}).set("max_positions", std::int64_t{2048});
    c.student_options.set("d_model", std::int64_t{768}).set("n_layer", std::int64_t{12}).set("d_state", std::int64_t{128});
    c.student_options.set("head_dim", std::int64_t{64}).set("vocab_size", std::int64_t{50257});
    const int64_t b = vm["lm-batch"].as<int64_t>();
    c.inputs = at::randint(0, 50257, {b, 2048}, at::TensorOptions(cuda).dtype(at::kLong));
    c.targets = at::randint(0, 50257, {b, 2048}, at::TensorOptions(cuda).dtype(at::kLong));
  }
  for (auto& c : cases) {
    if (vm.count("case") && vm["case"].as<std::string>() != c.name) continue;
    auto teacher = registry.create_as<cab::Teacher>(Kind::teacher, c.teacher, c.teacher_options);
    auto student = registry.create_as<cab::Student>(Kind::student, c.student, c.student_options);
    teacher->to(cuda);
    student->to(cuda);
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    const int64_t layers = student->shape().num_layers;
    cab::MethodContext context;
    context.teacher = teacher;
    context.student = student;
    context.total_steps = 100;
    context.steps_per_epoch = 100;
    context.batch_size = c.inputs.size(0);
    const cab::Batch batch{c.inputs, c.targets};
    auto run = [&](const std::string& method, cab::config::Section options, bool alignment) {
      context.alignment = nullptr;
      if (alignment) {
        auto a = registry.create_as<cab::Alignment>(Kind::alignment, "cab-bc", {});
        cab::AlignmentContext ac{teacher.get(), student.get(), {}};
        ac.make_bridge = [&](int64_t in, int64_t out) {
          cab::config::Section b;
          b.set("in_features", in).set("out_features", out);
          return registry.create_as<cab::Bridge>(Kind::bridge, "mlp", b);
        };
        a->setup(ac);
        a->to(cuda);
        context.alignment = a;
      }
      auto m = registry.create_as<cab::Method>(Kind::method, method, options);
      m->setup(context);
      m->to(cuda);
      const Measured r = measure([&] {
        student->zero_grad();
        const cab::LossTerms loss = m->loss(batch, 0);
        if (!loss.backpropagated) loss.total.backward();
      }, iterations);
      student->zero_grad();
      return r;
    };
    const Measured soft = run("soft-kd", {}, false);
    const Measured cab_step = run("cab", cab::config::Section().set("lambda", 1.0), true);
    cab::config::Section mohawk;
    mohawk.set("unit", std::string("fraction")).set("stage1", 1.0).set("stage2", 0.0);
    const Measured mohawk1 = run("mohawk", cab::config::Section(mohawk).set("chunk_layers", std::int64_t{1}), false);
    const Measured mohawk_all = run("mohawk", cab::config::Section(mohawk).set("chunk_layers", layers), false);
    const double cab_align_mb = cab_step.peak_mb - soft.peak_mb, cab_align_ms = cab_step.ms - soft.ms;
    std::string ratios;
    if (!mohawk1.oom && !cab_step.oom && !soft.oom)
      ratios = fmt::format(", \"cab_align_mb\": {:.1f}, \"cab_align_ms\": {:.3f}, \"mohawk_over_cab_memory\": {:.1f}, "
                           "\"mohawk_over_cab_time\": {:.2f}", cab_align_mb, cab_align_ms,
                           mohawk1.peak_mb / std::max(cab_align_mb, 1e-3), mohawk1.ms / std::max(cab_align_ms, 1e-3));
    std::cout << fmt::format("{{\"case\": \"{}\", \"teacher\": \"{}\", \"student\": \"{}\", \"batch\": {}, \"tokens\": {}, "
                             "\"student_layers\": {}, \"precision\": \"fp32\", \"soft_kd\": {}, \"cab\": {}, "
                             "\"mohawk\": {}, \"mohawk_unchunked\": {}{}}}",
                             c.name, c.teacher, c.student, c.inputs.size(0),
                             c.name == "vim-tiny" ? student->shape().seq_len : c.inputs.size(1), layers, json(soft),
                             json(cab_step), json(mohawk1), json(mohawk_all), ratios)
              << std::endl;
  }
  return cab::cli::kOk;
}
