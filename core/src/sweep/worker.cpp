// The worker process body: one run, isolated from the host, reporting over a pipe.
#include <fmt/format.h>
#include <torch/cuda.h>

#include <c10/util/Exception.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "cab/config/run_config.h"
#include "cab/config/toml_reader.h"
#include "cab/sweep/protocol.h"
#include "cab/sweep/scheduler.h"
#include "cab/train/distributed.h"
#include "cab/train/trainer.h"
#include "cab/util/hash.h"
#include "cab/util/version.h"

namespace cab::sweep {

namespace {

// The name of the GPU this worker sees (first visible device), from nvidia-smi; "unknown" without it.
std::string gpu_name() {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  std::string device = visible && *visible ? std::string(visible).substr(0, std::string(visible).find(',')) : "0";
  if (device.find_first_not_of("0123456789") != std::string::npos) device = "0";
  FILE* pipe = popen(("nvidia-smi --query-gpu=name --format=csv,noheader -i " + device + " 2>/dev/null").c_str(), "r");
  if (!pipe) return "unknown";
  char buffer[256] = {};
  const bool got = std::fgets(buffer, sizeof buffer, pipe) != nullptr;
  pclose(pipe);
  std::string name = got ? buffer : "";
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return name.empty() ? "unknown" : name;
}

void report_provenance(const config::RunConfig& config, const plugin::Registry& registry, Reporter& reporter) {
  reporter.provenance("git_sha", git_sha());
  reporter.provenance("git_dirty", git_dirty() ? "1" : "0");
  reporter.provenance("cab_version", version());
  reporter.provenance("torch_version", torch_version());
  reporter.provenance("cuda_version", cuda_version());
  reporter.provenance("host", hostname());
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) reporter.provenance("binary_sha256", sha256_file(exe));
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) reporter.provenance("cuda_visible_devices", visible);
  reporter.provenance("cuda_devices", std::to_string(torch::cuda::device_count()));
  if (torch::cuda::is_available()) reporter.provenance("gpu_name", gpu_name());
  for (const auto& [kind, choice] : config.plugins) {
    const auto& entry = registry.find(kind, choice.name);
    const auto& lib = *entry.library;
    const std::string sha = lib.handle ? sha256_file(lib.path) : "built-in";
    reporter.provenance(fmt::format("plugin.{}", plugin::to_string(kind)),
                        fmt::format("{} {} {} sha256:{}", choice.name, lib.version, lib.path.string(), sha));
  }
}

std::atomic<bool> g_stop_requested{false};
void on_stop_signal(int) { g_stop_requested = true; }

}  // namespace

int run_worker(const std::string& config_text, const plugin::Registry& registry, int report_fd,
               bool checkpoint_on_signal) {
  // Data-parallel ranks other than 0 train alongside rank 0 but report nothing: rank 0 speaks for the run.
  int rank = 0;
  try {
    rank = train::DistributedEnv::from_environment().rank;
  } catch (const ConfigError&) {  // train() reports it
  }
  Reporter reporter(rank == 0 ? report_fd : -1);
  if (checkpoint_on_signal) {  // SIGTERM/SIGUSR1: finish the current step, save a checkpoint, exit as stopped
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &action, nullptr);
  }
  try {
    const auto config = config::parse_run_config(config::parse_toml(config_text, "<run config>"), registry);
    report_provenance(config, registry, reporter);
    reporter.heartbeat();
    // The host names the run's folder (checkpoints to resume from, the trained model) in CAB_RUN_DIR.
    train::TrainOptions options;
    if (const char* dir = std::getenv("CAB_RUN_DIR"); dir && *dir) {
      options.run_dir = dir;
      reporter.provenance("run_dir", dir);
    }
    if (checkpoint_on_signal) options.stop_requested = &g_stop_requested;
    if (train::train(config, registry, reporter, options).stopped) {
      reporter.error(options.run_dir.empty() ? "stopped by a signal (no run folder: no checkpoint saved)"
                                             : "stopped by a signal after saving a checkpoint");
      return kWorkerStopped;
    }
    reporter.done();
    return kWorkerOk;
  } catch (const train::NonFiniteLoss& e) {
    reporter.error(e.what());
    return kWorkerNonFinite;
  } catch (const c10::OutOfMemoryError& e) {
    const std::string what = e.what_without_backtrace();
    reporter.error("out of memory: " + what.substr(0, what.find('\n')));
    return kWorkerOutOfMemory;
  } catch (const ConfigError& e) {
    reporter.error(e.what());
    return kWorkerConfig;
  } catch (const PluginError& e) {
    reporter.error(e.what());
    return kWorkerPlugin;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    reporter.error(what.substr(0, what.find('\n')));
    return kWorkerFailed;
  } catch (const std::exception& e) {
    reporter.error(e.what());
    return kWorkerFailed;
  }
}

}  // namespace cab::sweep
