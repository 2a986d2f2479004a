// cab-bench: times cab's kernels on the shapes of PERFORMANCE.md and prints one JSON object per case.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>
#include <iostream>

#include "cab/cli/cli.h"
#include "cab/kernels/selective_scan.h"
#include "cab/util/version.h"

namespace po = boost::program_options;

namespace {

struct Case {
  const char* name;
  int64_t batch, dim, len, dstate;
  double reference_fwd_us;  // mamba_ssm selective scan on one H100 (PERFORMANCE.md); not measured here
};

constexpr Case kCases[] = {
    {"vim-tiny-layer", 128, 384, 197, 16, 397},
    {"vim-small-layer", 128, 768, 197, 16, 780},
    {"lm-130m-layer", 8, 1536, 2048, 16, 451},
    {"long-sequence", 2, 2048, 8192, 16, 741},
};

double time_us(const std::function<void()>& fn, int warmup, int iterations) {
  for (int i = 0; i < warmup; ++i) fn();
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) fn();
  torch::cuda::synchronize();
  const auto stop = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(stop - start).count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-bench";
  cl.usage =
      "Usage: cab-bench [options]\n\nTimes the selective-scan forward on PERFORMANCE.md's shapes (bf16, z gating,\n"
      "softplus Δ) and prints one JSON object per case.\n";
  cl.visible.add_options()("help,h", "show this help")("version", "show version information")(
      "iterations", po::value<int>()->default_value(20), "timed iterations per case")(
      "case", po::value<std::string>(), "run only the named case");
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;
  if (!cab::kernels::built_with_cuda() || !torch::cuda::is_available()) {
    std::cerr << "cab-bench: needs a CUDA device and a CUDA build of cab's kernels\n";
    return cab::cli::kNotAvailable;
  }
  const int iterations = vm["iterations"].as<int>();
  for (const auto& c : kCases) {
    if (vm.count("case") && vm["case"].as<std::string>() != c.name) continue;
    auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    auto f32 = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    cab::kernels::ScanInputs in;
    in.u = at::randn({c.batch, c.dim, c.len}, bf16);
    in.delta = at::randn({c.batch, c.dim, c.len}, bf16) * 0.5 - 2;
    in.z = at::randn({c.batch, c.dim, c.len}, bf16);
    in.A = -at::rand({c.dim, c.dstate}, f32) - 0.5;
    in.B = at::randn({c.batch, c.dstate, c.len}, bf16);
    in.C = at::randn({c.batch, c.dstate, c.len}, bf16);
    in.D_skip = at::randn({c.dim}, f32);
    in.delta_bias = at::rand({c.dim}, f32) * 0.1;
    in.delta_softplus = true;
    const double us = time_us([&] { cab::kernels::selective_scan(in); }, 3, iterations);
    // Bytes the forward must move: u, Δ, z read and y written (bf16), plus B and C.
    const double bytes = 4.0 * c.batch * c.dim * c.len * 2 + 2.0 * c.batch * c.dstate * c.len * 2;
    std::cout << fmt::format(
        "{{\"case\": \"{}\", \"op\": \"selective_scan_fwd\", \"shape\": {{\"B\": {}, \"D\": {}, \"L\": {}, \"N\": {}}}, "
        "\"dtype\": \"bf16\", \"cab_us\": {:.1f}, \"reference_us\": {}, \"reference_source\": \"PERFORMANCE.md, "
        "mamba_ssm on H100 (not measured in this run)\", \"ratio_reference_over_cab\": {:.3f}, \"achieved_GBps\": {:.1f}}}\n",
        c.name, c.batch, c.dim, c.len, c.dstate, us, c.reference_fwd_us, c.reference_fwd_us / us, bytes / us / 1e3);
  }
  return cab::cli::kOk;
}
