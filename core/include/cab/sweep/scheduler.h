// The sweep host: claims pending runs, runs each in its own worker process (one per slot: a GPU or a CPU
// worker), receives their metrics and heartbeats, and is the only writer of the run store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cab/export.h"
#include "cab/plugin/registry.h"
#include "cab/store/store.h"

namespace cab::sweep {

/// Exit codes of a worker process (the host turns them into failure reasons).
enum WorkerExit : int {
  kWorkerOk = 0,
  kWorkerFailed = 1,      ///< an exception; its message was sent with E
  kWorkerConfig = 2,      ///< invalid run config
  kWorkerPlugin = 3,      ///< a plugin could not be loaded or created
  kWorkerOutOfMemory = 5, ///< CUDA (or host) out of memory
  kWorkerNonFinite = 6,   ///< NaN/Inf loss
  kWorkerStopped = 7,     ///< stopped by SIGTERM/SIGUSR1 after saving a checkpoint (resumable)
};

/// The body of a worker process: parses the run config text, trains, reports through `report_fd`.
/// With `checkpoint_on_signal`, SIGTERM, SIGUSR1 and SIGINT end the run after the current step with a
/// checkpoint in CAB_RUN_DIR (exit code kWorkerStopped) instead of killing it. Returns the exit code.
CAB_API int run_worker(const std::string& config_text, const plugin::Registry& registry, int report_fd,
                       bool checkpoint_on_signal = false);

struct CAB_API SchedulerOptions {
  std::vector<std::string> gpus;  ///< one worker per entry (its CUDA_VISIBLE_DEVICES; see gpu_slots); empty: CPU workers
  int workers = 1;                ///< CPU workers when no GPUs are given
  /// Processes that train one run data-parallel (RANK/WORLD_SIZE/… set for each): consecutive groups of this
  /// many GPU slots form one run's GPUs; without GPUs, each CPU worker becomes this many processes.
  int ranks_per_run = 1;
  double timeout_s = 0;           ///< per-run wall-clock limit (0: none)
  double stale_after_s = 120;     ///< heartbeat age after which a running run of a vanished host is recovered
  std::filesystem::path executable;           ///< the program to start workers with (`--worker`)
  std::vector<std::string> worker_arguments;  ///< passed through (plugin paths)
  std::filesystem::path log_dir;              ///< one log file per run attempt
  std::filesystem::path run_dir;              ///< per run a folder <run_dir>/<config_hash> (CAB_RUN_DIR)
  std::vector<std::pair<std::string, std::string>> filters;  ///< key = value (TOML text); others are skipped
  bool interactive = false;                   ///< redraw one progress line (terminal) instead of plain lines
  double stop_grace_s = 5;  ///< when stopping, seconds a worker gets after SIGTERM before SIGKILL
};

struct CAB_API SweepOutcome {
  int finished = 0, failed = 0, killed = 0;
  bool interrupted = false;  ///< stopped by SIGINT/SIGTERM
};

/// Runs every claimable run of the sweep. SIGINT/SIGTERM/SIGUSR1 stop it cleanly: workers are terminated and
/// their runs marked killed (resumable).
CAB_API SweepOutcome run_sweep(store::Store& store, std::int64_t sweep_id, const SchedulerOptions& options,
                               std::ostream& progress);

/// Whether a run's parameters match every filter (values compared as TOML text, numbers numerically).
CAB_API bool matches(const std::map<std::string, std::string>& params,
                     const std::vector<std::pair<std::string, std::string>>& filters);

/// Replaces "@ref:" values of a run config by the referenced runs' summary values. Throws cab::Error when
/// a reference names no run, several runs, a run that has not finished, or a missing artifact.
CAB_API std::string resolve_references(const std::string& config_toml, const store::Store& store);

/// The GPUs of this host a sweep may use: the entries of CUDA_VISIBLE_DEVICES when it is set, else every
/// GPU the NVIDIA driver lists (/proc/driver/nvidia/gpus), as CUDA ordinals "0", "1", …; empty without any.
CAB_API std::vector<std::string> visible_gpus();

/// The worker slots of `--gpus SPEC`: "all" (visible_gpus(); an error when there is none) or a comma list of
/// GPU ids, each repeated `runs_per_gpu` times (several small runs sharing a GPU). Throws cab::ConfigError
/// for an empty list or runs_per_gpu < 1.
CAB_API std::vector<std::string> gpu_slots(const std::string& spec, int runs_per_gpu);

/// "hostname:pid" of this process, the owner recorded on claimed runs.
CAB_API std::string host_identity();
CAB_API std::string hostname();

}  // namespace cab::sweep
