// cab-bench-scan: times the selective scan (forward, forward + backward; one direction, Vim's fused
// bidirectional layer, time-major input views) and Mamba-2's SSD on PERFORMANCE.md's shapes with CUDA events and
// prints one JSON object per case.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <functional>
#include <iostream>

#include "cab/cli/cli.h"
#include "cab/kernels/scan.h"
#include "cab/kernels/ssd.h"

namespace po = boost::program_options;

namespace {

struct Case {
  const char* name;
  int64_t batch, dim, len, dstate;
  bool bidirectional;
  bool time_major;  // Δ, z, B, C as transposed views of [batch, L, ·] tensors, as a model's projections give them
  // The mamba_ssm selective-scan kernel on one H100, bf16, quoted from PERFORMANCE.md (mamba_ssm is not
  // installed on the GPU host, so these are not measured here). Bidirectional: two one-direction calls.
  double reference_fwd_us, reference_fwd_bwd_us;
};

constexpr Case kCases[] = {
    {"vim-tiny-layer", 128, 384, 197, 16, false, false, 397, 1685},
    {"vim-small-layer", 128, 768, 197, 16, false, false, 780, 3294},
    {"lm-130m-layer", 8, 1536, 2048, 16, false, false, 451, 2461},
    {"long-sequence", 2, 2048, 8192, 16, false, false, 741, 3522},
    {"vim-tiny-bidirectional", 128, 384, 197, 16, true, false, 2 * 397, 2 * 1685},
    {"vim-tiny-layer-time-major", 128, 384, 197, 16, false, true, 397, 1685},
};

/// Mamba-2's SSD: x, z [B, L, H, P], dt [B, L, H], B/C [B, L, G, N]; the reference is mamba_ssm's Triton
/// mamba_chunk_scan_combined, quoted from PERFORMANCE.md.
struct SsdCase {
  const char* name;
  int64_t batch, len, heads, head_dim, groups, dstate;
  double reference_fwd_us, reference_fwd_bwd_us;
};
constexpr SsdCase kSsdCases[] = {{"mamba2-ssd", 8, 2048, 24, 64, 1, 128, 952, 4273}};

constexpr double kCopyBytesPerUs = 3.0e6;  // 3.0 TB/s, the H100's device-to-device copy rate (GPU.md)

/// Mean µs per call over `iterations` calls after `warmup`, by CUDA events on the current stream.
double time_us(const std::function<void()>& fn, int warmup, int iterations) {
  for (int i = 0; i < warmup; ++i) fn();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  for (int i = 0; i < iterations; ++i) fn();
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 1e3 * ms / iterations;
}

/// Vim/Mamba-like inputs: bf16 u, Δ (softplus of δ + bias around 0.05–0.1), z, B, C; fp32 A = −[1..N], D, bias.
cab::kernels::ScanInputs inputs(const Case& c) {
  auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  auto f32 = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  cab::kernels::ScanInputs in;
  // [b, L, ·] tensors seen as [b, ·, L] (time-major), or contiguous [b, ·, L].
  auto make = [&](int64_t rows, bool time_major, auto&& fill) -> at::Tensor {
    if (!time_major) return fill(std::vector<int64_t>{c.batch, rows, c.len});
    return fill(std::vector<int64_t>{c.batch, c.len, rows}).transpose(1, 2);
  };
  auto randn = [&](const std::vector<int64_t>& sizes) { return at::randn(sizes, bf16); };
  in.u = make(c.dim, false, randn);
  in.delta = make(c.dim, c.time_major, [&](const std::vector<int64_t>& sizes) { return at::rand(sizes, bf16) * 0.5 - 3; });
  in.z = make(c.dim, c.time_major, randn);
  in.A = -at::arange(1, c.dstate + 1, f32).repeat({c.dim, 1});
  in.B = make(c.dstate, c.time_major, randn);
  in.C = make(c.dstate, c.time_major, randn);
  in.D_skip = at::ones({c.dim}, f32);
  in.delta_bias = at::rand({c.dim}, f32) * 0.1;
  in.delta_softplus = true;
  return in;
}

std::vector<at::Tensor> leaves(cab::kernels::ScanInputs& in) {
  std::vector<at::Tensor> out;
  for (at::Tensor* t : {&in.u, &in.delta, &in.z.value(), &in.A, &in.B, &in.C, &in.D_skip.value(), &in.delta_bias.value()})
    out.push_back(t->requires_grad_(true));
  return out;
}

/// Mamba-2-like SSD inputs: bf16 x, z, dt (softplus of dt + bias around 0.05–0.1), B, C; fp32 A per head, D, bias.
cab::kernels::SsdInputs ssd_inputs(const SsdCase& c) {
  auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  auto f32 = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  cab::kernels::SsdInputs in;
  in.x = at::randn({c.batch, c.len, c.heads, c.head_dim}, bf16);
  in.z = at::randn({c.batch, c.len, c.heads, c.head_dim}, bf16);
  in.dt = at::rand({c.batch, c.len, c.heads}, bf16) * 0.5 - 3;
  in.A = -at::rand({c.heads}, f32) * 15 - 1;
  in.B = at::randn({c.batch, c.len, c.groups, c.dstate}, bf16);
  in.C = at::randn({c.batch, c.len, c.groups, c.dstate}, bf16);
  in.D = at::ones({c.heads}, f32);
  in.dt_bias = at::rand({c.heads}, f32) * 0.1;
  in.dt_softplus = true;
  return in;
}

/// The same SSD as a selective scan with a Δ per channel and A [D, N] (how cab ran Mamba-2 before the SSD op:
/// Δ repeated over each head's P channels, the decay recomputed per state).
cab::kernels::ScanInputs ssd_as_per_channel_scan(const cab::kernels::SsdInputs& s) {
  const int64_t b = s.x.size(0), L = s.x.size(1), H = s.x.size(2), P = s.x.size(3), N = s.B.size(3);
  cab::kernels::ScanInputs in;
  in.u = s.x.reshape({b, L, H * P}).transpose(1, 2);
  in.delta = s.dt.repeat_interleave(P, 2).transpose(1, 2);
  in.z = s.z->reshape({b, L, H * P}).transpose(1, 2);
  in.A = s.A.repeat_interleave(P).unsqueeze(1).expand({H * P, N}).contiguous();
  in.B = s.B.permute({0, 2, 3, 1});
  in.C = s.C.permute({0, 2, 3, 1});
  in.D_skip = s.D->repeat_interleave(P);
  in.delta_bias = s.dt_bias->repeat_interleave(P);
  in.delta_softplus = true;
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-bench-scan";
  cl.usage =
      "Usage: cab-bench-scan [options]\n\nTimes cab's CUDA selective scan on PERFORMANCE.md's shapes (bf16, z gating,\n"
      "softplus Δ, D skip): forward and forward + backward, one direction and Vim's two directions fused, by CUDA\n"
      "events after warm-up. Prints one JSON object per case, with the quoted mamba_ssm reference figures and the\n"
      "memory lower bound (u, Δ, z, y in bf16 plus B, C at 3.0 TB/s; forward + backward adds dy, du, dΔ, dz, dB, dC).\n"
      "Measured in the same run as a reference: the sequential scan written with LibTorch ops (one time step after\n"
      "another, autograd for the backward; the algorithm of mamba_ssm's selective_scan_ref, which PERFORMANCE.md\n"
      "times at 17.7 ms forward on the Vim-Tiny shape). Mamba-2's SSD (cab::ssd_scan) is timed against the quoted\n"
      "mamba_ssm Triton figures and, in the same run, against cab's selective scan on the per-channel form.\n";
  cl.visible.add_options()("help,h", "show this help")("version", "show version information")(
      "iterations", po::value<int>()->default_value(50), "timed calls per measurement")(
      "warmup", po::value<int>()->default_value(5), "untimed calls before each measurement")(
      "case", po::value<std::string>(), "run only the named case")(
      "reference-iterations", po::value<int>()->default_value(3),
      "timed calls of the same-run reference (the sequential LibTorch loop; 0: skip it)");
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;
  if (!cab::kernels::built_with_cuda() || !torch::cuda::is_available()) {
    std::cerr << "cab-bench-scan: needs a CUDA device and a CUDA build of cab's kernels\n";
    return cab::cli::kNotAvailable;
  }
  const int iterations = vm["iterations"].as<int>(), warmup = vm["warmup"].as<int>();
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  double one_direction_fwd = 0, one_direction_fwd_bwd = 0;  // vim-tiny-layer, for the bidirectional ratio
  for (const Case& c : kCases) {
    if (vm.count("case") && vm["case"].as<std::string>() != c.name) continue;
    at::manual_seed(0);
    cab::kernels::ScanInputs fwd = inputs(c), bwd = inputs(c);
    bwd.z = fwd.z;  // Vim: both directions gate with the same z
    auto forward = [&] {
      return c.bidirectional ? cab::kernels::bidirectional_scan(fwd, bwd).y : cab::kernels::scan(fwd).y;
    };
    double fwd_us;
    {
      at::NoGradGuard no_grad;
      fwd_us = time_us([&] { forward(); }, warmup, iterations);
    }
    std::vector<at::Tensor> vars = leaves(fwd);
    if (c.bidirectional) {
      const auto more = leaves(bwd);
      vars.insert(vars.end(), more.begin() + 3, more.end());  // bwd.z is fwd.z
      vars.insert(vars.end(), more.begin(), more.begin() + 2);
    }
    const at::Tensor grad_y = at::randn({c.batch, c.dim, c.len}, fwd.u.options().requires_grad(false));
    const double fwd_bwd_us = time_us([&] { torch::autograd::grad({forward()}, vars, {grad_y}); }, warmup, iterations);

    // The same-run reference: the sequential LibTorch loop on the same inputs (one direction; the fused case
    // counts two).
    double ref_fwd_us = 0, ref_fwd_bwd_us = 0;
    const int ref_iterations = vm["reference-iterations"].as<int>();
    if (ref_iterations > 0) {
      auto reference = [&] { return cab::kernels::scan(fwd, cab::kernels::ScanBackend::sequential).y; };
      {
        at::NoGradGuard no_grad;
        ref_fwd_us = time_us([&] { reference(); }, 1, ref_iterations);
      }
      const std::vector<at::Tensor> ref_vars = leaves(fwd);
      ref_fwd_bwd_us = time_us([&] { torch::autograd::grad({reference()}, ref_vars, {grad_y}); }, 1, ref_iterations);
      const double dirs_ref = c.bidirectional ? 2 : 1;
      ref_fwd_us *= dirs_ref, ref_fwd_bwd_us *= dirs_ref;
    }
    const double dirs = c.bidirectional ? 2 : 1, act = 2.0 * c.batch * c.dim * c.len, bc = 2.0 * c.batch * c.dstate * c.len;
    // Forward: u, Δ (per direction), z, y; B, C per direction. Backward: reads those and dy, writes du, dΔ, dz, dB, dC.
    const double fwd_bytes = (2 * dirs + 2) * act + 2 * dirs * bc;
    const double fwd_bwd_bytes = fwd_bytes + (3 * dirs + 3) * act + 2 * dirs * bc + (2 * dirs + 1) * act + 2 * dirs * bc;
    const double fwd_bound = fwd_bytes / kCopyBytesPerUs, fwd_bwd_bound = fwd_bwd_bytes / kCopyBytesPerUs;
    std::string extra;
    // The same-run reference's fields only where it ran (--reference-iterations 0 skips it).
    if (ref_iterations > 0)
      extra = fmt::format(", \"measured_reference\": \"LibTorch sequential loop, same run\", "
                          "\"measured_reference_fwd_us\": {:.1f}, \"measured_reference_fwd_bwd_us\": {:.1f}, "
                          "\"speedup_vs_measured_fwd\": {:.2f}, \"speedup_vs_measured_fwd_bwd\": {:.2f}",
                          ref_fwd_us, ref_fwd_bwd_us, ref_fwd_us / fwd_us, ref_fwd_bwd_us / fwd_bwd_us);
    if (!c.bidirectional && std::string(c.name) == "vim-tiny-layer") one_direction_fwd = fwd_us, one_direction_fwd_bwd = fwd_bwd_us;
    if (c.bidirectional && one_direction_fwd > 0)
      extra += fmt::format(", \"one_direction_fwd_us\": {:.1f}, \"one_direction_fwd_bwd_us\": {:.1f}, "
                          "\"fwd_over_one_direction\": {:.3f}, \"fwd_bwd_over_one_direction\": {:.3f}",
                          one_direction_fwd, one_direction_fwd_bwd, fwd_us / one_direction_fwd,
                          fwd_bwd_us / one_direction_fwd_bwd);
    std::cout << fmt::format(
        "{{\"case\": \"{}\", \"op\": \"{}\", \"shape\": {{\"B\": {}, \"D\": {}, \"L\": {}, \"N\": {}}}, \"dtype\": \"bf16\", "
        "\"device\": \"{}\", \"fwd_us\": {:.1f}, \"fwd_bwd_us\": {:.1f}, \"reference_fwd_us\": {}, "
        "\"reference_fwd_bwd_us\": {}, \"reference_source\": \"PERFORMANCE.md, mamba_ssm on H100 (quoted, not measured in "
        "this run)\", \"speedup_fwd\": {:.3f}, \"speedup_fwd_bwd\": {:.3f}, \"lower_bound_fwd_us\": {:.1f}, "
        "\"lower_bound_fwd_bwd_us\": {:.1f}, \"fwd_over_lower_bound\": {:.3f}, \"fwd_bwd_over_lower_bound\": {:.3f}, "
        "\"fwd_GBps\": {:.1f}, \"fwd_bwd_GBps\": {:.1f}{}}}\n",
        c.name, c.bidirectional ? "bidirectional_scan" : "selective_scan", c.batch, c.dim, c.len, c.dstate, prop.name,
        fwd_us, fwd_bwd_us, c.reference_fwd_us, c.reference_fwd_bwd_us, c.reference_fwd_us / fwd_us,
        c.reference_fwd_bwd_us / fwd_bwd_us, fwd_bound, fwd_bwd_bound, fwd_us / fwd_bound, fwd_bwd_us / fwd_bwd_bound,
        fwd_bytes / fwd_us / 1e3, fwd_bwd_bytes / fwd_bwd_us / 1e3, extra);
    std::cout.flush();  // one line per case, also when a later case is interrupted
  }
  for (const SsdCase& c : kSsdCases) {
    if (vm.count("case") && vm["case"].as<std::string>() != c.name) continue;
    at::manual_seed(0);
    cab::kernels::SsdInputs in = ssd_inputs(c);
    double fwd_us, per_channel_fwd_us;
    const cab::kernels::ScanInputs per_channel = ssd_as_per_channel_scan(in);
    {
      at::NoGradGuard no_grad;
      fwd_us = time_us([&] { cab::kernels::ssd_scan(in); }, warmup, iterations);
      per_channel_fwd_us = time_us([&] { cab::kernels::scan(per_channel); }, warmup, iterations);
    }
    std::vector<at::Tensor> vars;
    for (at::Tensor* t : {&in.x, &in.dt, &in.A, &in.B, &in.C, &in.D.value(), &in.z.value(), &in.dt_bias.value()})
      vars.push_back(t->requires_grad_(true));
    const at::Tensor grad_y = at::randn(in.x.sizes(), in.x.options().requires_grad(false));
    const double fwd_bwd_us =
        time_us([&] { torch::autograd::grad({cab::kernels::ssd_scan(in).y}, vars, {grad_y}); }, warmup, iterations);
    // The per-channel form, differentiated through the same inputs (its Δ/A repeats are part of the graph).
    const at::Tensor grad_y_per_channel = grad_y.reshape({c.batch, c.len, c.heads * c.head_dim}).transpose(1, 2);
    const double per_channel_fwd_bwd_us = time_us(
        [&] { torch::autograd::grad({cab::kernels::scan(ssd_as_per_channel_scan(in)).y}, vars, {grad_y_per_channel}); }, warmup,
        iterations);
    const double act = 2.0 * c.batch * c.len * c.heads * c.head_dim, bc = 2.0 * c.batch * c.len * c.groups * c.dstate,
                 dtb = 2.0 * c.batch * c.len * c.heads;
    // Forward: x, z, dt, B, C read, y written. Backward: x, z, dt, B, C, dy read; dx, dz, ddt, dB, dC written.
    const double fwd_bytes = 3 * act + dtb + 2 * bc, fwd_bwd_bytes = fwd_bytes + 5 * act + 2 * dtb + 4 * bc;
    const double fwd_bound = fwd_bytes / kCopyBytesPerUs, fwd_bwd_bound = fwd_bwd_bytes / kCopyBytesPerUs;
    std::cout << fmt::format(
        "{{\"case\": \"{}\", \"op\": \"ssd_scan\", \"shape\": {{\"B\": {}, \"L\": {}, \"H\": {}, \"P\": {}, \"G\": {}, "
        "\"N\": {}}}, \"dtype\": \"bf16\", \"device\": \"{}\", \"fwd_us\": {:.1f}, \"fwd_bwd_us\": {:.1f}, "
        "\"reference_fwd_us\": {}, \"reference_fwd_bwd_us\": {}, \"reference_source\": \"PERFORMANCE.md, mamba_ssm Triton "
        "SSD on H100 (quoted, not measured in this run)\", \"speedup_fwd\": {:.3f}, \"speedup_fwd_bwd\": {:.3f}, "
        "\"lower_bound_fwd_us\": {:.1f}, \"lower_bound_fwd_bwd_us\": {:.1f}, \"fwd_over_lower_bound\": {:.3f}, "
        "\"fwd_bwd_over_lower_bound\": {:.3f}, \"fwd_GBps\": {:.1f}, \"fwd_bwd_GBps\": {:.1f}, "
        "\"measured_reference\": \"cab selective scan on the per-channel form (Δ repeated per channel, A [H·P, N]), same "
        "run\", \"measured_reference_fwd_us\": {:.1f}, \"measured_reference_fwd_bwd_us\": {:.1f}, "
        "\"speedup_vs_measured_fwd\": {:.2f}, \"speedup_vs_measured_fwd_bwd\": {:.2f}}}\n",
        c.name, c.batch, c.len, c.heads, c.head_dim, c.groups, c.dstate, prop.name, fwd_us, fwd_bwd_us,
        c.reference_fwd_us, c.reference_fwd_bwd_us, c.reference_fwd_us / fwd_us, c.reference_fwd_bwd_us / fwd_bwd_us,
        fwd_bound, fwd_bwd_bound, fwd_us / fwd_bound, fwd_bwd_us / fwd_bwd_bound, fwd_bytes / fwd_us / 1e3,
        fwd_bwd_bytes / fwd_bwd_us / 1e3, per_channel_fwd_us, per_channel_fwd_bwd_us, per_channel_fwd_us / fwd_us,
        per_channel_fwd_bwd_us / fwd_bwd_us);
    std::cout.flush();
  }
  return cab::cli::kOk;
}
