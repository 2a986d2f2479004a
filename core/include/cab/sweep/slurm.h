// Sweeps on a Slurm cluster: a frozen run list in a folder, a job-array script with one run per task, each
// task writing its own small result database, and a merge of those into the run store.
//
//   cab-sweep SWEEP.toml --emit slurm --out DIR    DIR/plan.json (the runs, their config hashes and configs
//                                                  with "@ref:" resolved), DIR/job.sbatch (--array=0-N%K)
//   sbatch DIR/job.sbatch                          task I: cab-sweep run-one DIR --index I
//                                                  -> DIR/results/I.sqlite (same schema as the run store)
//   cab-sweep collect DIR --db results/cab.sqlite  merges every complete result, idempotently
//   cab-sweep DIR --emit slurm --only-unfinished   a new DIR/job.sbatch over the runs without a finished result
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cab/config/schema.h"
#include "cab/config/section.h"
#include "cab/export.h"
#include "cab/store/store.h"
#include "cab/sweep/expand.h"
#include "cab/sweep/sweep_file.h"

namespace cab::sweep {

/// The keys of a sweep file's [slurm] table (and of the --slurm-* flags): per-task resources and submission.
CAB_API const config::Schema& slurm_schema();

/// Validated submission settings of one job array.
struct CAB_API SlurmOptions {
  std::int64_t gpus = 0;           ///< GPUs per task (--gres=gpu:N)
  std::int64_t cpus = 1;           ///< --cpus-per-task (also OMP_NUM_THREADS of the run)
  std::string mem;                 ///< --mem, e.g. "16G"; empty: the partition's default
  std::string time;                ///< --time, e.g. "04:00:00"; empty: the partition's default
  std::string partition, account, qos;
  std::int64_t max_parallel = 0;   ///< tasks running at once (--array=...%K); 0: no limit
  std::int64_t signal_lead_s = 120;  ///< SIGUSR1 this long before the time limit (--signal=B:USR1@N)
  std::int64_t grace_s = 60;       ///< after the signal, how long the run gets to checkpoint before SIGKILL
  std::vector<std::string> sbatch; ///< further sbatch options, one "#SBATCH ..." line each
  std::vector<std::string> setup;  ///< shell lines each task runs first (module load ..., a venv)
  std::string executable;          ///< the cab-sweep the tasks run; empty: the emitting one's absolute path
};

/// Settings from a [slurm] section validated by slurm_schema(); checks the mem and time formats and that
/// grace_s < signal_lead_s (< the time limit). Errors name where the value was written.
CAB_API SlurmOptions slurm_options(const config::Section& slurm);

/// One frozen run: its array index, identity and configs.
struct CAB_API PlanRun {
  std::int64_t index = 0;
  std::string config_hash;
  std::string config_toml;  ///< as expanded ("@ref:" kept): what the run store records
  std::string run_toml;     ///< what the task runs: references resolved when the plan was written
};

/// DIR/plan.json: the sweep file and its run list, frozen when the script is first written.
struct CAB_API Plan {
  std::string sweep_name, sweep_path, sweep_text, sweep_sha256, created;
  std::vector<std::string> plugin_paths;  ///< -P arguments (absolute) the tasks pass on
  std::string slurm_toml;                 ///< the [slurm] settings last used, as TOML
  std::vector<PlanRun> runs;

  /// The sweep as the run store records it (name, path, text, sha256).
  SweepFile sweep_file() const;
  /// The runs with their parameters, for the run store; checks each config still has its hash.
  std::vector<RunSpec> run_specs(const std::filesystem::path& dir) const;
  /// The [slurm] settings stored in the plan, with `overrides` (key, value, where given) applied.
  config::Section slurm_section(const std::filesystem::path& dir,
                                const std::vector<std::pair<std::string, config::Value>>& overrides) const;
};

CAB_API bool is_plan_dir(const std::filesystem::path& dir);
CAB_API Plan read_plan(const std::filesystem::path& dir);
CAB_API void write_plan(const std::filesystem::path& dir, const Plan& plan);
/// DIR/results/<index>.sqlite
CAB_API std::filesystem::path result_path(const std::filesystem::path& dir, std::int64_t index);

/// Slurm's --array value: ranges of consecutive indices ("0-3,7,9-10"), then "%K" when max_parallel > 0.
CAB_API std::string array_spec(const std::vector<std::int64_t>& indices, std::int64_t max_parallel);
/// The sbatch script: a job array over `indices`, each task `cab-sweep run-one DIR --index $SLURM_ARRAY_TASK_ID`.
CAB_API std::string job_script(const Plan& plan, const std::filesystem::path& dir, const SlurmOptions& slurm,
                               const std::vector<std::int64_t>& indices);

struct CAB_API EmitOptions {
  std::filesystem::path out;                  ///< DIR (made absolute)
  std::filesystem::path db;                   ///< resolves "@ref:" values; with only_unfinished, finished runs
  bool only_unfinished = false;               ///< only indices without a finished result
  bool replan = false;                        ///< accept an edited sweep file: append its new runs
  std::vector<std::pair<std::string, std::string>> filters;           ///< only runs matching these
  std::vector<std::pair<std::string, config::Value>> slurm_overrides;  ///< from flags; beat the [slurm] table
  std::vector<std::string> plugin_paths;      ///< absolute -P paths for the tasks
  std::filesystem::path executable;           ///< default for [slurm] executable
};

struct CAB_API EmitResult {
  std::filesystem::path script;             ///< empty when there was nothing to submit
  std::vector<std::int64_t> indices;        ///< the array's indices
  std::size_t total = 0;                    ///< runs in the plan
  std::size_t added = 0;                    ///< runs added to the plan now
  std::vector<std::string> notes;           ///< things the user should know (limits, skipped runs)
};

/// Freezes the sweep's runs into DIR/plan.json (or reuses the plan there: the same file adds nothing; an
/// edited one is refused unless `replan`) and writes DIR/job.sbatch. `file` null: DIR's own plan is used.
CAB_API EmitResult emit_slurm(const SweepFile* file, const std::vector<RunSpec>& runs, const EmitOptions& options);

struct CAB_API RunOneOptions {
  std::filesystem::path dir;
  std::int64_t index = 0;
  std::filesystem::path executable;            ///< this cab-sweep (workers are started with --worker)
  std::vector<std::string> worker_arguments;   ///< plugin paths
  double timeout_s = 0;
  double grace_s = 60;
  /// > 1: train the run data-parallel with this many processes, one per GPU the task sees (its first ones;
  /// CPU processes when it sees none), as the sweep host's --gpus-per-run does.
  int gpus_per_run = 1;
};

/// Runs plan index `index` in a worker process (as the sweep host does), in a result database under
/// $TMPDIR, then publishes it atomically as DIR/results/<index>.sqlite. SIGTERM/SIGUSR1 make the run save a
/// checkpoint (DIR/runs/<config_hash>) and end killed, so that a later task resumes it. A run whose
/// result is finished is not run again. Returns the run's status.
CAB_API store::Status run_one(const RunOneOptions& options, std::ostream& progress);

struct CAB_API CollectReport {
  int files = 0;  ///< in DIR/results: each one merged, unchanged, kept or skipped
  int merged = 0, unchanged = 0, kept = 0, skipped = 0;
  std::vector<std::string> messages;            ///< one per skipped or kept file
  std::vector<std::int64_t> unfinished;         ///< plan indices whose run is not finished in the store
  std::int64_t sweep_id = 0;
};

/// Records the plan's sweep in `store` (as freeze_sweep does) and merges every complete result file of
/// DIR/results into it. Partial, truncated, corrupt or foreign files are skipped with a message.
CAB_API CollectReport collect(const std::filesystem::path& dir, store::Store& store, bool replan);

}  // namespace cab::sweep
