// cab-sweep: runs a TOML grid of distillation experiments, records them in SQLite, resumes after crashes.
#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>

#include "cab/cli/cli.h"
#include "cab/config/run_config.h"
#include "cab/store/store.h"
#include "cab/sweep/expand.h"
#include "cab/sweep/scheduler.h"
#include "cab/sweep/slurm.h"
#include "cab/sweep/sweep_file.h"
#include "cab/util/version.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using cab::store::Status;

namespace {

constexpr int kSomeRunsFailed = 1;
constexpr int kInterrupted = 5;

void print_section(const cab::config::Section& section, std::ostream& out) {
  out << "[" << section.path() << "]\n";
  for (const auto& [key, entry] : section.entries()) {
    out << fmt::format("{} = {}", key, cab::config::to_toml(entry.value));
    if (entry.location.line == 0) out << "  # " << entry.location.file;
    out << "\n";
  }
}

int check_config(const std::string& file, const cab::plugin::Registry& registry) {
  const auto config = cab::config::load_run_config(file, registry);
  std::cout << "# " << file << ": valid; resolved values (defaults marked)\n";
  print_section(config.run, std::cout);
  print_section(config.train, std::cout);
  for (const auto& [kind, choice] : config.plugins) {
    cab::config::Section shown = choice.options;
    shown.set("name", choice.name, choice.location);
    print_section(shown, std::cout);
  }
  return cab::cli::kOk;
}

std::vector<std::pair<std::string, std::string>> parse_filters(const po::variables_map& vm) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!vm.count("filter")) return out;
  for (const auto& f : vm["filter"].as<std::vector<std::string>>()) {
    const auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0)
      throw cab::ConfigError(fmt::format("--filter '{}': expected key=value, e.g. method.name=cab", f));
    out.emplace_back(f.substr(0, eq), f.substr(eq + 1));
  }
  return out;
}

std::string describe(const std::map<std::string, std::string>& params, const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) {
    auto it = params.find(k);
    if (it != params.end()) out += (out.empty() ? "" : " ") + k + "=" + it->second;
  }
  return out;
}

std::vector<std::string> varied(const cab::store::Store& store, const std::vector<cab::store::RunRecord>& runs) {
  std::map<std::string, std::set<std::string>> values;
  for (const auto& r : runs)
    for (const auto& [k, v] : store.params(r.id)) values[k].insert(v);
  std::vector<std::string> out;
  for (const auto& [k, v] : values)
    if (v.size() > 1) out.push_back(k);
  return out;
}

int status_command(const fs::path& db, const std::string& only) {
  if (!fs::exists(db)) {
    std::cerr << fmt::format("cab-sweep: no run database at '{}' (run a sweep first, or pass --db)\n", db.string());
    return cab::cli::kUsage;
  }
  cab::store::Store store(db);
  bool any = false;
  for (const auto& sweep : store.sweeps()) {
    if (!only.empty() && sweep.name != only) continue;
    any = true;
    const auto runs = store.runs(sweep.id);
    const auto counts = store.counts(sweep.id);
    std::string summary;
    for (auto s : {Status::finished, Status::running, Status::pending, Status::failed, Status::killed})
      if (counts.count(s)) summary += fmt::format("{}{} {}", summary.empty() ? "" : ", ", counts.at(s), cab::store::to_string(s));
    std::cout << fmt::format("sweep {} ({}): {} runs — {}\n", sweep.name, sweep.file_path, runs.size(), summary);
    const auto keys = varied(store, runs);
    for (auto s : {Status::running, Status::pending, Status::failed, Status::killed, Status::finished}) {
      std::vector<const cab::store::RunRecord*> rows;
      for (const auto& r : runs)
        if (r.status == s) rows.push_back(&r);
      if (rows.empty()) continue;
      std::cout << fmt::format("  {}:\n    {:>6} {:<12} {:>8} {}\n", cab::store::to_string(s), "ID", "HASH", "ATTEMPTS",
                               s == Status::failed || s == Status::killed ? "PARAMS | ERROR" : "PARAMS");
      for (const auto* r : rows) {
        std::string line = describe(store.params(r->id), keys);
        if (!r->error.empty() && (s == Status::failed || s == Status::killed)) line += " | " + r->error;
        std::cout << fmt::format("    {:>6} {:<12} {:>8} {}\n", r->id, r->config_hash.substr(0, 12), r->attempts, line);
      }
    }
  }
  if (!any) {
    std::cerr << (only.empty() ? "cab-sweep: the database has no sweeps yet\n"
                               : fmt::format("cab-sweep: no sweep named '{}' in '{}'\n", only, db.string()));
    return only.empty() ? cab::cli::kOk : cab::cli::kUsage;
  }
  return cab::cli::kOk;
}

int worker_command(const po::variables_map& vm, cab::plugin::Registry& registry) {
  const std::string config_text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  return cab::sweep::run_worker(config_text, registry, vm["report-fd"].as<int>(), vm.count("checkpoint-on-signal") != 0);
}

// `cab-sweep train RUN.toml`: one run in this process, no database; what a launcher such as torchrun or srun
// starts once per GPU (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Rank 0 prints the run's
// metrics, summary and provenance as protocol lines (M/S/P) on stdout.
int train_command(const std::vector<std::string>& positional, const po::variables_map& vm,
                  cab::plugin::Registry& registry) {
  if (positional.size() != 2) {
    std::cerr << "cab-sweep train: give one run config file: cab-sweep train RUN.toml [--run-dir DIR]\n";
    return cab::cli::kUsage;
  }
  std::ifstream in(positional[1]);
  if (!in) {
    std::cerr << fmt::format("cab-sweep train: cannot read '{}'\n", positional[1]);
    return cab::cli::kUsage;
  }
  const std::string config_text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (vm.count("run-dir")) ::setenv("CAB_RUN_DIR", fs::absolute(vm["run-dir"].as<std::string>()).c_str(), 1);
  return cab::sweep::run_worker(config_text, registry, 1, vm.count("checkpoint-on-signal") != 0);
}

// The [slurm] settings given as flags (they beat the sweep file's table and the plan's).
std::vector<std::pair<std::string, cab::config::Value>> slurm_overrides(const po::variables_map& vm) {
  std::vector<std::pair<std::string, cab::config::Value>> out;
  for (const char* key : {"partition", "account"})
    if (vm.count(key)) out.emplace_back(key, vm[key].as<std::string>());
  for (const char* key : {"mem", "time"})
    if (vm.count(std::string("slurm-") + key)) out.emplace_back(key, vm[std::string("slurm-") + key].as<std::string>());
  for (const char* key : {"gpus", "cpus"})
    if (vm.count(std::string("slurm-") + key)) out.emplace_back(key, std::int64_t{vm[std::string("slurm-") + key].as<int>()});
  if (vm.count("max-parallel")) out.emplace_back("max_parallel", std::int64_t{vm["max-parallel"].as<int>()});
  if (vm.count("sbatch")) out.emplace_back("sbatch", vm["sbatch"].as<std::vector<std::string>>());
  return out;
}

int emit_command(const std::string& target, const po::variables_map& vm, const cab::plugin::Registry* registry,
                 const std::vector<std::string>& plugin_args) {
  const std::string kind = vm["emit"].as<std::string>();
  if (kind != "slurm") {
    std::cerr << fmt::format("cab-sweep: --emit {}: unknown target; expected: slurm\n", kind);
    return cab::cli::kUsage;
  }
  const fs::path db = vm["db"].as<std::string>();
  cab::sweep::EmitOptions options;
  options.db = db;
  options.only_unfinished = vm.count("only-unfinished") != 0;
  options.replan = vm.count("replan") != 0;
  options.filters = parse_filters(vm);
  options.slurm_overrides = slurm_overrides(vm);
  for (std::size_t i = 1; i < plugin_args.size(); i += 2) options.plugin_paths.push_back(plugin_args[i]);
  options.executable = fs::read_symlink("/proc/self/exe");
  cab::sweep::EmitResult result;
  std::string name;
  if (registry == nullptr) {  // TARGET is a folder with a plan
    if (vm.count("out") && fs::absolute(vm["out"].as<std::string>()) != fs::absolute(target)) {
      std::cerr << "cab-sweep: --out: the plan folder is given already as the first argument\n";
      return cab::cli::kUsage;
    }
    options.out = target;
    result = cab::sweep::emit_slurm(nullptr, {}, options);
    name = cab::sweep::read_plan(target).sweep_name;
  } else {
    const auto file = cab::sweep::read_sweep(target);
    const auto runs = cab::sweep::expand(file, *registry);
    options.out = vm.count("out") ? fs::path(vm["out"].as<std::string>())
                                  : (db.has_parent_path() ? db.parent_path() : fs::path(".")) / "slurm" / file.name;
    result = cab::sweep::emit_slurm(&file, runs, options);
    name = file.name;
  }
  const fs::path dir = fs::absolute(options.out).lexically_normal();
  std::cout << fmt::format("sweep {}: {} runs frozen in {}{}\n", name, result.total, (dir / "plan.json").string(),
                           result.added ? fmt::format(" ({} new)", result.added) : "");
  for (const auto& note : result.notes) std::cout << "note: " << note << "\n";
  if (result.script.empty()) {
    std::cout << "nothing to submit: every selected run has a finished result\n";
    return cab::cli::kOk;
  }
  std::cout << fmt::format("wrote {}: a job array of {} task(s) (indices {})\nsubmit:  sbatch {}\nthen:    "
                           "cab-sweep collect {} --db {}\n",
                           result.script.string(), result.indices.size(),
                           cab::sweep::array_spec(result.indices, 0), result.script.string(), dir.string(), db.string());
  return cab::cli::kOk;
}

int run_one_command(const std::vector<std::string>& positional, const po::variables_map& vm,
                    const std::vector<std::string>& plugin_args) {
  if (positional.size() != 2 || !vm.count("index")) {
    std::cerr << "cab-sweep: usage: cab-sweep run-one DIR --index I (DIR written by --emit slurm)\n";
    return cab::cli::kUsage;
  }
  cab::sweep::RunOneOptions options;
  options.dir = positional[1];
  options.index = vm["index"].as<std::int64_t>();
  options.executable = fs::read_symlink("/proc/self/exe");
  options.worker_arguments = plugin_args;
  options.timeout_s = vm["timeout"].as<double>();
  options.grace_s = vm["grace"].as<double>();
  options.gpus_per_run = vm["gpus-per-run"].as<int>();
  switch (cab::sweep::run_one(options, std::cout)) {
    case Status::finished:
    case Status::running: return cab::cli::kOk;  // running: another task has it
    case Status::killed: return kInterrupted;
    default: return kSomeRunsFailed;
  }
}

int collect_command(const std::vector<std::string>& positional, const po::variables_map& vm) {
  if (positional.size() != 2) {
    std::cerr << "cab-sweep: usage: cab-sweep collect DIR [--db FILE] (DIR written by --emit slurm)\n";
    return cab::cli::kUsage;
  }
  const fs::path db = vm["db"].as<std::string>();
  const fs::path dir = fs::absolute(positional[1]).lexically_normal();
  const auto plan = cab::sweep::read_plan(dir);  // before the database is created
  cab::store::Store store(db);
  const auto report = cab::sweep::collect(dir, store, vm.count("replan") != 0);
  for (const auto& message : report.messages) std::cout << message << "\n";
  const auto counts = store.counts(report.sweep_id);
  auto count = [&](Status s) { return counts.count(s) ? counts.at(s) : 0; };
  std::cout << fmt::format("collected {}: {} file(s): {} merged, {} unchanged, {} kept, {} skipped\n",
                           dir.string(), report.files, report.merged, report.unchanged, report.kept, report.skipped);
  std::cout << fmt::format("sweep {} in {}: {} finished, {} failed, {} killed, {} pending, {} running\n", plan.sweep_name,
                           db.string(), count(Status::finished), count(Status::failed), count(Status::killed),
                           count(Status::pending), count(Status::running));
  if (!report.unfinished.empty()) {
    std::cout << fmt::format("unfinished: indices {}; resubmit them with: cab-sweep {} --emit slurm --only-unfinished "
                             "--db {}\n",
                             cab::sweep::array_spec(report.unfinished, 0), dir.string(), db.string());
  }
  return cab::cli::kOk;
}

int dry_run(const cab::sweep::SweepFile& file, const std::vector<cab::sweep::RunSpec>& runs, const fs::path& db,
            const std::vector<std::pair<std::string, std::string>>& filters) {
  std::map<std::string, std::string> status_of;
  if (fs::exists(db)) {
    cab::store::Store store(db);
    if (auto sweep = store.find_sweep(file.name))
      for (const auto& r : store.runs(sweep->id)) status_of[r.config_hash] = std::string(cab::store::to_string(r.status));
  }
  const auto keys = cab::sweep::varied_keys(runs);
  std::cout << fmt::format("sweep {} ({}): {} runs\n{:>5} {:<12} {:<9} {}\n", file.name, file.path, runs.size(), "#",
                           "HASH", "STATUS", "PARAMS");
  int shown = 0;
  for (const auto& run : runs) {
    std::map<std::string, std::string> params;
    for (const auto& [k, v] : run.params) params[k] = cab::config::to_toml(v);
    if (!cab::sweep::matches(params, filters)) continue;
    ++shown;
    auto it = status_of.find(run.config_hash);
    std::cout << fmt::format("{:>5} {:<12} {:<9} {}\n", run.position, run.config_hash.substr(0, 12),
                             it == status_of.end() ? "new" : it->second, describe(params, keys));
  }
  if (!filters.empty()) std::cout << fmt::format("{} of {} runs match the filters\n", shown, runs.size());
  return cab::cli::kOk;
}

int sweep_command(const std::string& path, const po::variables_map& vm, const cab::plugin::Registry& registry,
                  const std::vector<std::string>& plugin_args) {
  const fs::path db = vm["db"].as<std::string>();
  const auto filters = parse_filters(vm);
  const auto file = cab::sweep::read_sweep(path);
  const auto runs = cab::sweep::expand(file, registry);
  if (vm.count("dry-run")) return dry_run(file, runs, db, filters);

  cab::store::Store store(db);
  // References must name existing runs before anything is recorded.
  for (const auto& run : runs) {
    for (const auto& [key, value] : run.params) {
      if (auto ref = cab::sweep::parse_reference(value, {file.path, 0, 0})) {
        const auto other = store.find_sweep(ref->sweep);
        int hits = 0;
        if (other)
          for (const auto& r : store.runs(other->id)) hits += cab::sweep::matches(store.params(r.id), ref->filter);
        if (hits != 1) {
          throw cab::ConfigError(fmt::format("{}: {} = \"{}\": reference to {} (sweep '{}' {}); it must match exactly "
                                             "one run",
                                             file.path, key, ref->str(), hits == 0 ? "a missing run" : "several runs",
                                             ref->sweep, other ? "is in the store" : "is not in the store"));
        }
      }
    }
  }
  const auto frozen = store.freeze_sweep(file, runs, vm.count("replan") != 0);
  std::cout << fmt::format("sweep {}: {} runs in {} ({})\n", file.name, store.runs(frozen.sweep_id).size(),
                           db.string(),
                           frozen.existed ? fmt::format("resumed; {} new", frozen.added) : "new");
  const int recovered = store.recover_stale(vm["stale-after"].as<double>(), cab::sweep::hostname());
  if (recovered) std::cout << fmt::format("recovered {} run(s) left running by a stopped host\n", recovered);
  std::set<Status> requeue = {Status::killed};
  if (vm.count("retry-failed")) requeue.insert(Status::failed);
  if (vm.count("force")) requeue.insert({Status::failed, Status::finished});
  const int requeued = store.requeue(frozen.sweep_id, requeue);
  if (requeued) std::cout << fmt::format("re-queued {} run(s)\n", requeued);

  cab::sweep::SchedulerOptions options;
  if (vm.count("gpus")) options.gpus = cab::sweep::gpu_slots(vm["gpus"].as<std::string>(), vm["runs-per-gpu"].as<int>());
  options.workers = vm["workers"].as<int>();
  options.ranks_per_run = vm["gpus-per-run"].as<int>();
  if (options.ranks_per_run < 1) {
    std::cerr << fmt::format("cab-sweep: --gpus-per-run {}: expected a whole number ≥ 1\n", options.ranks_per_run);
    return cab::cli::kUsage;
  }
  options.timeout_s = vm["timeout"].as<double>();
  options.stale_after_s = vm["stale-after"].as<double>();
  options.executable = fs::read_symlink("/proc/self/exe");
  options.worker_arguments = plugin_args;
  options.log_dir = vm.count("log-dir") ? fs::path(vm["log-dir"].as<std::string>())
                                        : (db.has_parent_path() ? db.parent_path() : fs::path(".")) / "logs" / file.name;
  options.run_dir = vm.count("run-dir") ? fs::path(vm["run-dir"].as<std::string>())
                                        : (db.has_parent_path() ? db.parent_path() : fs::path(".")) / "runs" / file.name;
  options.filters = filters;
  options.interactive = isatty(STDOUT_FILENO) && !vm.count("plain");
  const auto outcome = cab::sweep::run_sweep(store, frozen.sweep_id, options, std::cout);
  const auto counts = store.counts(frozen.sweep_id);
  auto count = [&](Status s) { return counts.count(s) ? counts.at(s) : 0; };
  std::cout << fmt::format("sweep {}: {} finished, {} failed, {} killed, {} pending (this session: {} finished, {} "
                           "failed)\n",
                           file.name, count(Status::finished), count(Status::failed), count(Status::killed),
                           count(Status::pending), outcome.finished, outcome.failed);
  if (outcome.interrupted) {
    std::cout << "interrupted: run the same command again to resume\n";
    return kInterrupted;
  }
  return count(Status::failed) > 0 ? kSomeRunsFailed : cab::cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-sweep";
  cl.usage =
      "Usage: cab-sweep [options] SWEEP.toml     run (or resume) a sweep\n"
      "       cab-sweep status [--sweep NAME]    counts and a table per status\n"
      "       cab-sweep --check RUN.toml         validate one run config\n"
      "       cab-sweep train RUN.toml [--run-dir DIR]   train one run here, no database (one process per GPU\n"
      "                                          under torchrun/srun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)\n"
      "       cab-sweep SWEEP.toml --emit slurm [--out DIR]   freeze the runs, write DIR/job.sbatch (job array)\n"
      "       cab-sweep DIR --emit slurm --only-unfinished    a job array of the runs without a finished result\n"
      "       cab-sweep run-one DIR --index I    one array task (what job.sbatch runs)\n"
      "       cab-sweep collect DIR [--db FILE]  merge the tasks' result files into the database (idempotent)\n"
      "       cab-sweep --list-plugins\n\n"
      "Expands the sweep's grid, freezes the run list in the database, and runs every pending run in its own\n"
      "worker process (one per GPU with --gpus, else --workers CPU workers). Finished runs are never re-run;\n"
      "runs of a crashed or interrupted sweep resume on the next start.\n";
  cl.visible.add_options()
      ("help,h", "show this help")
      ("version", "show version, LibTorch/CUDA versions and the plugin ABI tag")
      ("list-plugins", "list the available plugins (kind, name, version, library) and files that failed to load")
      ("plugin-path,P", po::value<std::vector<std::string>>()->composing(),
       "plugin file or directory to load first (repeatable; CAB_PLUGIN_PATH also adds directories)")
      ("check", po::value<std::string>(), "validate a run config file and print it with all defaults resolved")
      ("db", po::value<std::string>()->default_value("results/cab.sqlite"), "run database")
      ("gpus", po::value<std::string>(), "GPUs to use, one worker each: 0,1,... or all (CUDA_VISIBLE_DEVICES, else every GPU)")
      ("runs-per-gpu", po::value<int>()->default_value(1), "with --gpus: runs sharing each GPU at once (small models)")
      ("gpus-per-run", po::value<int>()->default_value(1),
       "train each run data-parallel on this many GPUs (NCCL; one process each); without --gpus, this many CPU processes")
      ("workers", po::value<int>()->default_value(1), "CPU worker processes (without --gpus)")
      ("timeout", po::value<double>()->default_value(0), "per-run wall-clock limit in seconds (0: none)")
      ("stale-after", po::value<double>()->default_value(120), "seconds without heartbeat after which a running run of another host is recovered")
      ("retry-failed", "run failed runs again")
      ("force", "run every run again, finished ones too")
      ("replan", "accept an edited sweep file: add its new runs, keep the recorded ones")
      ("dry-run", "list the runs with their hashes and status; change nothing")
      ("filter", po::value<std::vector<std::string>>()->composing(), "only runs with key=value (repeatable)")
      ("log-dir", po::value<std::string>(), "worker logs (default: <db folder>/logs/<sweep>)")
      ("run-dir", po::value<std::string>(), "per-run folders: checkpoints, trained models (default: <db folder>/runs/<sweep>)")
      ("plain", "plain progress lines even on a terminal")
      ("sweep", po::value<std::string>(), "with status: only this sweep")
      ("emit", po::value<std::string>(), "write a cluster job instead of running: slurm")
      ("out", po::value<std::string>(), "with --emit: the folder for the plan, script, results (default: <db folder>/slurm/<sweep>)")
      ("only-unfinished", "with --emit: only the runs without a finished result")
      ("partition", po::value<std::string>(), "with --emit slurm: --partition (beats [slurm] partition)")
      ("account", po::value<std::string>(), "with --emit slurm: --account")
      ("slurm-gpus", po::value<int>(), "with --emit slurm: GPUs per task")
      ("slurm-cpus", po::value<int>(), "with --emit slurm: CPU cores per task")
      ("slurm-mem", po::value<std::string>(), "with --emit slurm: memory per task, e.g. 16G")
      ("slurm-time", po::value<std::string>(), "with --emit slurm: time limit per task, e.g. 04:00:00")
      ("max-parallel", po::value<int>(), "with --emit slurm: tasks running at once (%K)")
      ("sbatch", po::value<std::vector<std::string>>()->composing(), "with --emit slurm: another sbatch option (repeatable)")
      ("index", po::value<std::int64_t>(), "with run-one: the array index to run")
      ("grace", po::value<double>()->default_value(60), "with run-one: seconds the run gets to checkpoint after SIGUSR1/SIGTERM");
  cl.hidden.add_options()
      ("positional", po::value<std::vector<std::string>>(), "sweep file or command")
      ("worker", "run one run: config on stdin, reports on --report-fd")
      ("report-fd", po::value<int>()->default_value(-1), "worker report pipe")
      ("checkpoint-on-signal", "worker: SIGTERM/SIGUSR1 save a checkpoint and stop the run");
  cl.positional.add("positional", -1);
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;

  try {
    std::vector<std::string> positional;
    if (vm.count("positional")) positional = vm["positional"].as<std::vector<std::string>>();
    if (!positional.empty() && positional[0] == "status")
      return status_command(vm["db"].as<std::string>(), vm.count("sweep") ? vm["sweep"].as<std::string>() : "");
    if (!positional.empty() && positional[0] == "collect") return collect_command(positional, vm);

    cab::plugin::Registry registry;
    std::vector<fs::path> extra;
    std::vector<std::string> plugin_args;
    if (vm.count("plugin-path")) {
      for (const auto& p : vm["plugin-path"].as<std::vector<std::string>>()) {
        extra.emplace_back(p);
        plugin_args.push_back("-P");
        plugin_args.push_back(fs::absolute(p).string());
      }
    }
    // Neither needs the plugins here: run-one's worker loads them, a plan folder holds expanded runs.
    if (!positional.empty() && positional[0] == "run-one") return run_one_command(positional, vm, plugin_args);
    if (vm.count("emit") && positional.size() == 1 && fs::is_directory(positional[0]))
      return emit_command(positional[0], vm, nullptr, plugin_args);
    cab::cli::load_plugins(registry, extra);

    if (vm.count("worker")) return worker_command(vm, registry);
    if (!positional.empty() && positional[0] == "train") return train_command(positional, vm, registry);
    if (vm.count("list-plugins")) {
      cab::cli::print_plugins(registry, std::cout);
      return cab::cli::kOk;
    }
    if (vm.count("check")) return check_config(vm["check"].as<std::string>(), registry);
    if (vm.count("emit") && positional.size() == 1) return emit_command(positional[0], vm, &registry, plugin_args);
    if (positional.size() == 1) return sweep_command(positional[0], vm, registry, plugin_args);
    std::cerr << (positional.empty() ? "cab-sweep: nothing to do. Try 'cab-sweep --help'.\n"
                                     : "cab-sweep: give one sweep file. Try 'cab-sweep --help'.\n");
    return cab::cli::kUsage;
  } catch (const cab::ConfigError& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kUsage;
  } catch (const cab::PluginError& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kPluginError;
  } catch (const std::exception& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kFailure;
  }
}
