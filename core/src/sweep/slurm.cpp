// Slurm job arrays: the frozen plan, the sbatch script, one run per task into its own result file, collect.
#include "cab/sweep/slurm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "cab/config/toml_reader.h"
#include "cab/sweep/scheduler.h"
#include "cab/util/error.h"
#include "cab/util/hash.h"
#include "cab/util/join.h"

namespace cab::sweep {

namespace fs = std::filesystem;
using store::Status;

namespace {

constexpr int kPlanFormat = 1;
constexpr const char* kPlanFile = "plan.json";

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes FILE.tmp and renames it: a reader never sees a half-written file.
void write_text(const fs::path& file, const std::string& text) {
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw Error(fmt::format("cannot write '{}'", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) throw Error(fmt::format("cannot rename '{}' to '{}': {}", tmp.string(), file.string(), ec.message()));
}

// A single-quoted shell word.
std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string section_toml(const config::Section& section) {
  std::string out = "[slurm]\n";
  for (const auto& [key, entry] : section.entries()) {
    const auto* text = std::get_if<std::string>(&entry.value);
    const auto* list = std::get_if<std::vector<std::string>>(&entry.value);
    if ((text && text->empty()) || (list && list->empty())) continue;  // the defaults
    out += key + " = " + config::to_toml(entry.value) + "\n";
  }
  return out;
}

std::map<std::string, std::string> toml_params(const Params& params) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : params) out[k] = config::to_toml(v);
  return out;
}

// Whether index's result file holds a finished run (a broken file counts as no result).
bool finished_result(const fs::path& dir, const PlanRun& run) {
  try {
    const auto result = store::read_result_file(result_path(dir, run.index), false);
    return result.run.status == Status::finished && result.run.config_hash == run.config_hash;
  } catch (const Error&) {
    return false;
  }
}

// Deletes the files of a flat folder, then the folder (no std::filesystem::remove_all with LibTorch loaded).
void remove_flat_dir(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) files.push_back(entry.path());
  for (const auto& f : files) ::unlink(f.c_str());
  ::rmdir(dir.c_str());
}

// An exclusive lock on DIR/locks/<index>.lock (POSIX record locks also work across NFS clients); released
// when the process ends, however it ends. -1 when another task holds it.
int lock_index(const fs::path& dir, std::int64_t index) {
  fs::create_directories(dir / "locks");
  const fs::path file = dir / "locks" / fmt::format("{}.lock", index);
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(fmt::format("cannot open '{}': {}", file.string(), std::strerror(errno)));
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &lock) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

// ---- settings ----

const config::Schema& slurm_schema() {
  static const config::Schema schema = [] {
    using config::Type;
    config::Schema s;
    s.add("gpus", Type::integer, "GPUs per task (--gres=gpu:N)").fallback(std::int64_t{0}).min(0);
    s.add("cpus", Type::integer, "CPU cores per task (--cpus-per-task; also OMP_NUM_THREADS)").fallback(std::int64_t{1}).min(1);
    s.add("mem", Type::string, "memory per task (--mem), e.g. \"16G\"; empty: the partition's default").fallback(std::string());
    s.add("time", Type::string, "time limit per task (--time), e.g. \"04:00:00\" or \"1-12:00:00\"").fallback(std::string());
    s.add("partition", Type::string, "--partition").fallback(std::string());
    s.add("account", Type::string, "--account").fallback(std::string());
    s.add("qos", Type::string, "--qos").fallback(std::string());
    s.add("max_parallel", Type::integer, "tasks running at once (--array=...%K); 0: no limit").fallback(std::int64_t{0}).min(0);
    s.add("signal_lead_s", Type::integer, "SIGUSR1 this many seconds before the time limit (--signal=B:USR1@N)")
        .fallback(std::int64_t{120}).min(1);
    s.add("grace_s", Type::integer, "after SIGUSR1/SIGTERM, seconds the run gets to save a checkpoint")
        .fallback(std::int64_t{60}).min(1);
    s.add("sbatch", Type::string_list, "further sbatch options, e.g. [\"--constraint=a100\"]")
        .fallback(std::vector<std::string>{});
    s.add("setup", Type::string_list, "shell lines each task runs first, e.g. [\"module load cuda\"]")
        .fallback(std::vector<std::string>{});
    s.add("executable", Type::string, "the cab-sweep the tasks run (default: this one's absolute path)")
        .fallback(std::string());
    return s;
  }();
  return schema;
}

namespace {
// Seconds of a Slurm time limit: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
// days-hours:minutes, days-hours:minutes:seconds.
std::optional<std::int64_t> slurm_seconds(const std::string& text) {
  static const std::regex pattern(R"(^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$)");
  std::smatch m;
  if (!std::regex_match(text, m, pattern)) return std::nullopt;
  auto n = [&](int i) { return m[i].matched ? std::stoll(m[i].str()) : 0LL; };
  if (m[1].matched) return ((n(1) * 24 + n(2)) * 60 + n(3)) * 60 + n(4);  // days-hours[:minutes[:seconds]]
  if (m[4].matched) return (n(2) * 60 + n(3)) * 60 + n(4);                 // hours:minutes:seconds
  return n(2) * 60 + n(3);                                                  // minutes[:seconds]
}
}  // namespace

SlurmOptions slurm_options(const config::Section& slurm) {
  SlurmOptions o;
  o.gpus = slurm.integer("gpus");
  o.cpus = slurm.integer("cpus");
  o.mem = slurm.string("mem");
  o.time = slurm.string("time");
  o.partition = slurm.string("partition");
  o.account = slurm.string("account");
  o.qos = slurm.string("qos");
  o.max_parallel = slurm.integer("max_parallel");
  o.signal_lead_s = slurm.integer("signal_lead_s");
  o.grace_s = slurm.integer("grace_s");
  o.sbatch = slurm.strings("sbatch");
  o.setup = slurm.strings("setup");
  o.executable = slurm.string("executable");
  static const std::regex mem(R"(^\d+[KMGT]?$)");
  if (!o.mem.empty() && !std::regex_match(o.mem, mem)) {
    throw ConfigError(fmt::format("{}: slurm.mem = \"{}\": expected a size such as \"16G\", \"500M\" or \"64000\" (MB)",
                                  slurm.location("mem").str(), o.mem));
  }
  std::optional<std::int64_t> limit;
  if (!o.time.empty()) {
    limit = slurm_seconds(o.time);
    if (!limit) {
      throw ConfigError(fmt::format("{}: slurm.time = \"{}\": expected a Slurm time such as \"90\" (minutes), "
                                    "\"04:00:00\" or \"1-12:00:00\"",
                                    slurm.location("time").str(), o.time));
    }
  }
  if (o.grace_s >= o.signal_lead_s) {
    throw ConfigError(fmt::format("{}: slurm.grace_s = {} must be less than slurm.signal_lead_s = {}: the run must "
                                  "have saved its checkpoint before the time limit",
                                  slurm.location("grace_s").str(), o.grace_s, o.signal_lead_s));
  }
  if (limit && *limit <= o.signal_lead_s) {
    throw ConfigError(fmt::format("{}: slurm.time = \"{}\" ({} s) must be longer than slurm.signal_lead_s = {} (the "
                                  "warning signal comes that long before the time limit)",
                                  slurm.location("time").str(), o.time, *limit, o.signal_lead_s));
  }
  for (const auto& line : o.sbatch) {
    if (line.rfind("-", 0) != 0) {
      throw ConfigError(fmt::format("{}: slurm.sbatch entry \"{}\": expected an sbatch option such as "
                                    "\"--constraint=a100\"",
                                    slurm.location("sbatch").str(), line));
    }
  }
  return o;
}

// ---- the plan ----

SweepFile Plan::sweep_file() const {
  SweepFile f;
  f.name = sweep_name;
  f.path = sweep_path;
  f.text = sweep_text;
  f.sha256 = sweep_sha256;
  return f;
}

std::vector<RunSpec> Plan::run_specs(const fs::path& dir) const {
  std::vector<RunSpec> out;
  for (const auto& run : runs) {
    RunSpec spec;
    spec.position = run.index;
    spec.params = from_toml_document(run.config_toml, fmt::format("{} run {}", (dir / kPlanFile).string(), run.index));
    spec.canonical = canonical_text(spec.params);
    spec.config_hash = sha256_hex(spec.canonical);
    if (spec.config_hash != run.config_hash) {
      throw ConfigError(fmt::format("{}: run {}: its config hashes to {}, not to its recorded {} (was the file "
                                    "edited?); write the plan again with --emit slurm",
                                    (dir / kPlanFile).string(), run.index, spec.config_hash.substr(0, 12),
                                    run.config_hash.substr(0, 12)));
    }
    out.push_back(std::move(spec));
  }
  return out;
}

config::Section Plan::slurm_section(const fs::path& dir,
                                    const std::vector<std::pair<std::string, config::Value>>& overrides) const {
  const std::string label = fmt::format("{} (its [slurm] settings)", (dir / kPlanFile).string());
  config::Section raw = config::parse_toml(slurm_toml.empty() ? "[slurm]\n" : slurm_toml, label).table("slurm");
  for (const auto& [key, value] : overrides) raw.set(key, value, {"command line (--" + key + ")", 0, 0});
  return slurm_schema().validate(raw);
}

bool is_plan_dir(const fs::path& dir) { return fs::is_regular_file(dir / kPlanFile); }

fs::path result_path(const fs::path& dir, std::int64_t index) {
  return dir / "results" / fmt::format("{}.sqlite", index);
}

Plan read_plan(const fs::path& dir) {
  const fs::path file = dir / kPlanFile;
  if (!fs::is_regular_file(file)) {
    throw ConfigError(fmt::format("'{}': no such file; '{}' is not a folder written by cab-sweep --emit slurm",
                                  file.string(), dir.string()));
  }
  try {
    const auto j = nlohmann::json::parse(read_text(file));
    if (j.at("format").get<int>() != kPlanFormat) {
      throw ConfigError(fmt::format("'{}': plan format {}, this cab reads format {}", file.string(),
                                    j.at("format").get<int>(), kPlanFormat));
    }
    Plan p;
    const auto& s = j.at("sweep");
    p.sweep_name = s.at("name").get<std::string>();
    p.sweep_path = s.at("path").get<std::string>();
    p.sweep_text = s.at("text").get<std::string>();
    p.sweep_sha256 = s.at("sha256").get<std::string>();
    p.created = j.at("created").get<std::string>();
    p.plugin_paths = j.at("plugin_paths").get<std::vector<std::string>>();
    p.slurm_toml = j.at("slurm").get<std::string>();
    for (const auto& r : j.at("runs")) {
      p.runs.push_back({r.at("index").get<std::int64_t>(), r.at("config_hash").get<std::string>(),
                        r.at("config").get<std::string>(), r.at("run_config").get<std::string>()});
      if (p.runs.back().index != static_cast<std::int64_t>(p.runs.size()) - 1)
        throw ConfigError(fmt::format("'{}': run indices must count 0, 1, 2, ...", file.string()));
    }
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("'{}': not a valid cab plan ({})", file.string(), e.what()));
  }
}

void write_plan(const fs::path& dir, const Plan& p) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : p.runs)
    runs.push_back({{"index", r.index}, {"config_hash", r.config_hash}, {"config", r.config_toml},
                    {"run_config", r.run_toml}});
  const nlohmann::json j = {
      {"format", kPlanFormat},
      {"created", p.created},
      {"sweep", {{"name", p.sweep_name}, {"path", p.sweep_path}, {"sha256", p.sweep_sha256}, {"text", p.sweep_text}}},
      {"plugin_paths", p.plugin_paths},
      {"slurm", p.slurm_toml},
      {"runs", runs}};
  fs::create_directories(dir);
  write_text(dir / kPlanFile, j.dump(1) + "\n");
  write_text(dir / "sweep.toml", p.sweep_text);
  // A readable index of the runs: what each array index runs.
  std::vector<RunSpec> specs;
  for (const auto& r : p.runs) specs.push_back({r.index, r.config_hash, "", from_toml_document(r.config_toml, "plan")});
  const auto keys = varied_keys(specs);
  std::string tsv = "index\tconfig_hash\t" + join(keys, "\t") + "\n";
  for (const auto& spec : specs) {
    tsv += fmt::format("{}\t{}", spec.position, spec.config_hash);
    for (const auto& k : keys) {
      auto it = spec.params.find(k);
      tsv += '\t';
      if (it != spec.params.end()) tsv += config::to_toml(it->second);
    }
    tsv += "\n";
  }
  write_text(dir / "runs.tsv", tsv);
}

// ---- the script ----

std::string array_spec(const std::vector<std::int64_t>& indices, std::int64_t max_parallel) {
  std::vector<std::int64_t> sorted = indices;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    parts.push_back(i == j ? std::to_string(sorted[i]) : fmt::format("{}-{}", sorted[i], sorted[j]));
    i = j + 1;
  }
  std::string spec = join(parts, ",");
  if (max_parallel > 0) spec += fmt::format("%{}", max_parallel);
  return spec;
}

std::string job_script(const Plan& plan, const fs::path& dir, const SlurmOptions& o,
                       const std::vector<std::int64_t>& indices) {
  const std::string d = dir.string();
  std::string s = "#!/bin/bash\n";
  s += fmt::format("# cab sweep '{}' ({}, sha256 {}): {} of its {} runs, one per array task.\n", plan.sweep_name,
                   plan.sweep_path, plan.sweep_sha256.substr(0, 12), indices.size(), plan.runs.size());
  s += "# Task I runs `cab-sweep run-one DIR --index I`, which writes DIR/results/I.sqlite. Before the time limit\n"
       "# Slurm sends SIGUSR1 to this script's process (cab-sweep itself, through exec): the run saves a\n"
       "# checkpoint in DIR/runs/<config hash>/ and ends killed. Then:\n";
  s += fmt::format("#   cab-sweep collect {} --db results/cab.sqlite      # merge the results (idempotent)\n", d);
  s += fmt::format("#   cab-sweep {} --emit slurm --only-unfinished   # a script for the rest; they resume\n", d);
  s += fmt::format("#SBATCH --job-name=cab-{}\n", plan.sweep_name);
  s += fmt::format("#SBATCH --array={}\n", array_spec(indices, o.max_parallel));
  s += fmt::format("#SBATCH --output={}/slurm/%A_%a.out\n", d);
  s += fmt::format("#SBATCH --signal=B:USR1@{}\n", o.signal_lead_s);
  s += "#SBATCH --ntasks=1\n";
  s += fmt::format("#SBATCH --cpus-per-task={}\n", o.cpus);
  if (o.gpus > 0) s += fmt::format("#SBATCH --gres=gpu:{}\n", o.gpus);
  if (!o.mem.empty()) s += fmt::format("#SBATCH --mem={}\n", o.mem);
  if (!o.time.empty()) s += fmt::format("#SBATCH --time={}\n", o.time);
  if (!o.partition.empty()) s += fmt::format("#SBATCH --partition={}\n", o.partition);
  if (!o.account.empty()) s += fmt::format("#SBATCH --account={}\n", o.account);
  if (!o.qos.empty()) s += fmt::format("#SBATCH --qos={}\n", o.qos);
  for (const auto& line : o.sbatch) s += fmt::format("#SBATCH {}\n", line);
  s += "set -e\n";
  for (const auto& line : o.setup) s += line + "\n";
  s += "export OMP_NUM_THREADS=\"${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}\"\n";
  std::string command = fmt::format("exec {} run-one {} --index \"$SLURM_ARRAY_TASK_ID\" --grace {}",
                                    shell_quote(o.executable), shell_quote(d), o.grace_s);
  if (o.gpus > 1) command += fmt::format(" --gpus-per-run {}", o.gpus);  // one run, data-parallel on the task's GPUs
  for (const auto& p : plan.plugin_paths) command += " -P " + shell_quote(p);
  s += command + "\n";
  return s;
}

// ---- emit ----

EmitResult emit_slurm(const SweepFile* file, const std::vector<RunSpec>& runs, const EmitOptions& options) {
  const fs::path dir = fs::absolute(options.out).lexically_normal();
  EmitResult result;
  Plan plan;
  const bool existing = is_plan_dir(dir);
  if (existing) plan = read_plan(dir);
  if (!file && !existing) {
    throw ConfigError(fmt::format("'{}' holds no plan.json: give the sweep file to write one", dir.string()));
  }
  config::Section slurm;
  if (file) {
    if (existing && plan.sweep_name != file->name) {
      throw ConfigError(fmt::format("{}: '{}' holds the plan of sweep '{}', not '{}'; choose another --out",
                                    file->path, dir.string(), plan.sweep_name, file->name));
    }
    // New runs go at the end, so that existing indices (and their results) keep their meaning.
    std::set<std::string> known;
    for (const auto& r : plan.runs) known.insert(r.config_hash);
    const auto fresh = std::count_if(runs.begin(), runs.end(), [&](const RunSpec& r) { return !known.count(r.config_hash); });
    if (existing && plan.sweep_sha256 != file->sha256 && fresh > 0 && !options.replan) {
      throw ConfigError(fmt::format("{}: '{}' was frozen from a different version of this file (sha256 {} there, "
                                    "{} now), which has {} new run(s); the frozen run list stands. Rerun with "
                                    "--replan to append them, or choose another --out",
                                    file->path, dir.string(), plan.sweep_sha256.substr(0, 12),
                                    file->sha256.substr(0, 12), fresh));
    }
    if (!existing) plan.created = store::utc_timestamp();
    if (!existing || fresh > 0) {  // an edit that adds no run (e.g. of [slurm]) leaves the frozen file as it was
      plan.sweep_name = file->name;
      plan.sweep_path = file->path;
      plan.sweep_text = file->text;
      plan.sweep_sha256 = file->sha256;
    }
    plan.plugin_paths = options.plugin_paths;
    config::Section given = file->slurm;
    for (const auto& [key, value] : options.slurm_overrides) given.set(key, value, {"command line (--" + key + ")", 0, 0});
    slurm = slurm_schema().validate(given);
    std::unique_ptr<store::Store> db;
    for (const auto& spec : runs) {
      if (known.count(spec.config_hash)) continue;
      PlanRun run{static_cast<std::int64_t>(plan.runs.size()), spec.config_hash, to_toml_document(spec.params), ""};
      run.run_toml = run.config_toml;
      if (run.config_toml.find("\"@ref:") != std::string::npos) {
        // On the cluster there is no run store to look references up in: they are resolved now.
        if (!fs::exists(options.db)) {
          throw ConfigError(fmt::format("{}: run {} ({}) references another sweep (\"@ref:...\"), resolved from the "
                                        "run database when the Slurm script is written, but there is no database "
                                        "'{}'; run (or collect) the referenced sweep first, or pass --db",
                                        file->path, run.index, run.config_hash.substr(0, 12), options.db.string()));
        }
        if (!db) db = std::make_unique<store::Store>(options.db);
        try {
          run.run_toml = resolve_references(run.config_toml, *db);
        } catch (const Error& e) {
          throw ConfigError(fmt::format("{}: run {} ({}): {} (looked up in '{}'; for Slurm, references are resolved "
                                        "when the script is written: collect the referenced sweep first)",
                                        file->path, run.index, run.config_hash.substr(0, 12), e.what(),
                                        options.db.string()));
        }
      }
      plan.runs.push_back(std::move(run));
      ++result.added;
    }
  } else {
    slurm = plan.slurm_section(dir, options.slurm_overrides);
  }
  SlurmOptions o = slurm_options(slurm);
  if (o.executable.empty()) {
    o.executable = options.executable.string();
    slurm.set("executable", o.executable);  // recorded, so that a later --only-unfinished uses the same one
  }
  plan.slurm_toml = section_toml(slurm);
  write_plan(dir, plan);
  result.total = plan.runs.size();

  // The array's indices: every run (matching the filters), or those without a finished result.
  std::set<std::string> finished_in_db;
  if (options.only_unfinished && fs::exists(options.db)) {
    store::Store db(options.db);
    if (auto sweep = db.find_sweep(plan.sweep_name))
      for (const auto& r : db.runs(sweep->id))
        if (r.status == Status::finished) finished_in_db.insert(r.config_hash);
  }
  std::size_t skipped_finished = 0;
  for (const auto& run : plan.runs) {
    if (!options.filters.empty() &&
        !matches(toml_params(from_toml_document(run.config_toml, "plan")), options.filters))
      continue;
    if (options.only_unfinished && (finished_in_db.count(run.config_hash) || finished_result(dir, run))) {
      ++skipped_finished;
      continue;
    }
    result.indices.push_back(run.index);
  }
  if (skipped_finished) result.notes.push_back(fmt::format("{} run(s) already finished: left out", skipped_finished));
  fs::create_directories(dir / "slurm");
  fs::create_directories(dir / "results");
  const fs::path script = dir / "job.sbatch";
  if (result.indices.empty()) {
    ::unlink(script.c_str());  // a stale script would submit finished runs again
    return result;
  }
  if (result.indices.back() > 1000) {
    result.notes.push_back(fmt::format("the array reaches index {}: Slurm's default MaxArraySize (1001) allows "
                                       "indices up to 1000 (scontrol show config | grep MaxArraySize)",
                                       result.indices.back()));
  }
  write_text(script, job_script(plan, dir, o, result.indices));
  ::chmod(script.c_str(), 0755);
  result.script = script;
  return result;
}

// ---- run-one ----

store::Status run_one(const RunOneOptions& options, std::ostream& progress) {
  const fs::path dir = fs::absolute(options.dir).lexically_normal();
  const Plan plan = read_plan(dir);
  if (options.index < 0 || options.index >= static_cast<std::int64_t>(plan.runs.size())) {
    throw ConfigError(fmt::format("--index {}: the plan in '{}' has runs 0 to {}", options.index, dir.string(),
                                  static_cast<std::int64_t>(plan.runs.size()) - 1));
  }
  const PlanRun& run = plan.runs[static_cast<std::size_t>(options.index)];
  const int lock = lock_index(dir, run.index);
  if (lock < 0) {
    progress << fmt::format("run {} ({}) is being run by another task right now (lock {}); nothing to do\n",
                            run.index, run.config_hash.substr(0, 12),
                            (dir / "locks" / fmt::format("{}.lock", run.index)).string());
    return Status::running;
  }
  const fs::path published = result_path(dir, run.index);
  std::optional<store::ResultFile> earlier;
  if (fs::exists(published)) {
    try {
      earlier = store::read_result_file(published);
      if (earlier->run.config_hash != run.config_hash) {
        progress << fmt::format("note: '{}' holds another run ({}); it is replaced\n", published.string(),
                                earlier->run.config_hash.substr(0, 12));
        earlier.reset();
      }
    } catch (const Error& e) {
      progress << fmt::format("note: ignoring the earlier result: {}\n", e.what());
    }
  }
  if (earlier && earlier->run.status == Status::finished) {
    progress << fmt::format("run {} ({}) has finished already ({}); nothing to do\n", run.index,
                            run.config_hash.substr(0, 12), published.string());
    ::close(lock);
    return Status::finished;
  }

  // The result database lives on the node's local disk while the run writes to it; SQLite over a network
  // file system is unsafe. Only the finished file is copied to DIR/results.
  const char* tmp_root = std::getenv("TMPDIR");
  std::string local = (fs::path(tmp_root && *tmp_root ? tmp_root : "/tmp") / "cab-run-one-XXXXXX").string();
  if (!mkdtemp(local.data())) throw Error(fmt::format("cannot create a folder like '{}': {}", local, std::strerror(errno)));
  Status status = Status::failed;
  try {
    auto db = std::make_unique<store::Store>(fs::path(local) / "result.sqlite");
    RunSpec spec;
    spec.config_hash = run.config_hash;
    spec.params = from_toml_document(run.run_toml, fmt::format("{} run {}", (dir / kPlanFile).string(), run.index));
    const auto frozen = db->freeze_sweep(plan.sweep_file(), {spec}, false);
    const std::int64_t run_id = db->runs(frozen.sweep_id).front().id;
    if (earlier) db->set_attempts(run_id, earlier->run.attempts);

    SchedulerOptions so;
    so.workers = 1;
    so.ranks_per_run = std::max(1, options.gpus_per_run);
    if (so.ranks_per_run > 1) {
      const auto gpus = visible_gpus();
      if (!gpus.empty() && static_cast<int>(gpus.size()) < so.ranks_per_run) {
        std::string seen;
        for (const auto& g : gpus) seen += (seen.empty() ? "" : ",") + g;
        throw ConfigError(fmt::format("--gpus-per-run {}: this task sees only {} GPU(s) ({})", so.ranks_per_run,
                                      gpus.size(), seen));
      }
      if (!gpus.empty()) so.gpus.assign(gpus.begin(), gpus.begin() + so.ranks_per_run);
    }
    so.timeout_s = options.timeout_s;
    so.stop_grace_s = options.grace_s;
    so.executable = options.executable;
    so.worker_arguments = options.worker_arguments;
    so.worker_arguments.push_back("--checkpoint-on-signal");
    so.log_dir = dir / "logs" / std::to_string(run.index);
    so.run_dir = dir / "runs";
    progress << fmt::format("run {} of sweep {} ({}), attempt {}\n", run.index, plan.sweep_name,
                            run.config_hash.substr(0, 12), (earlier ? earlier->run.attempts : 0) + 1)
             << std::flush;
    // Ignored outside run_sweep (which handles them while the run goes on): once the run has ended, its
    // result must reach DIR/results, and a late SIGTERM/SIGUSR1 must not cut the copy short.
    for (int sig : {SIGTERM, SIGUSR1, SIGINT}) std::signal(sig, SIG_IGN);
    run_sweep(*db, frozen.sweep_id, so, progress);

    std::map<std::string, std::string> slurm;
    for (const char* var : {"SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME"}) {
      if (const char* value = std::getenv(var); value && *value) {
        std::string key = var;
        std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
        slurm[key] = value;
      }
    }
    if (!slurm.empty()) db->set_provenance(run_id, slurm);
    const auto provenance = db->provenance(run_id);
    if (auto it = provenance.find("resumed_from_step"); earlier && it != provenance.end())
      db->carry_forward(run_id, *earlier, std::stoll(it->second));
    status = db->run(run_id)->status;
    fs::create_directories(published.parent_path());
    db->export_to(published);
    db.reset();
  } catch (...) {
    remove_flat_dir(local);
    ::close(lock);
    throw;
  }
  remove_flat_dir(local);
  ::close(lock);
  progress << fmt::format("run {}: {}; result in {}\n", run.index, store::to_string(status), published.string());
  return status;
}

// ---- collect ----

CollectReport collect(const fs::path& dir_arg, store::Store& store, bool replan) {
  const fs::path dir = fs::absolute(dir_arg).lexically_normal();
  const Plan plan = read_plan(dir);
  const auto specs = plan.run_specs(dir);
  CollectReport report;
  report.sweep_id = store.freeze_sweep(plan.sweep_file(), specs, replan).sweep_id;
  std::map<std::string, std::int64_t> by_hash;
  for (const auto& r : store.runs(report.sweep_id)) by_hash[r.config_hash] = r.id;

  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir / "results", ec))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  static const std::regex result_name(R"(^(\d+)\.sqlite$)");
  report.files = static_cast<int>(files.size());
  for (const auto& path : files) {
    const std::string name = path.filename().string();
    auto skip = [&](const std::string& why) {
      ++report.skipped;
      report.messages.push_back(fmt::format("skipped '{}': {}", path.string(), why));
    };
    std::smatch m;
    if (!std::regex_match(name, m, result_name)) {
      if (name.size() > 8 && name.substr(name.size() - 8) == ".partial")
        skip("a partial copy left by a task killed while publishing its result");
      else
        skip("not a result file (expected <index>.sqlite)");
      continue;
    }
    const std::int64_t index = std::stoll(m[1].str());
    store::ResultFile result;
    try {
      result = store::read_result_file(path);
    } catch (const Error& e) {  // its message names the file
      ++report.skipped;
      report.messages.push_back(fmt::format("skipped {}", e.what()));
      continue;
    }
    if (index >= static_cast<std::int64_t>(plan.runs.size()) ||
        result.run.config_hash != plan.runs[static_cast<std::size_t>(index)].config_hash ||
        result.sweep_name != plan.sweep_name) {
      skip(fmt::format("it holds run {} of sweep '{}', which is not index {} of this plan",
                       result.run.config_hash.substr(0, 12), result.sweep_name, index));
      continue;
    }
    auto it = by_hash.find(result.run.config_hash);
    if (it == by_hash.end()) {
      skip(fmt::format("run {} is not in sweep '{}' of '{}' (was that sweep frozen with other plugin defaults?)",
                       result.run.config_hash.substr(0, 12), plan.sweep_name, store.path().string()));
      continue;
    }
    switch (store.merge_result(it->second, result)) {
      case store::MergeAction::merged: ++report.merged; break;
      case store::MergeAction::unchanged: ++report.unchanged; break;
      case store::MergeAction::kept_finished:
        ++report.kept;
        report.messages.push_back(fmt::format("kept run {} ({}): it has finished in '{}' already; {} ({}) not used",
                                              index, result.run.config_hash.substr(0, 12), store.path().string(),
                                              path.string(), store::to_string(result.run.status)));
        break;
      case store::MergeAction::running:
        ++report.kept;
        report.messages.push_back(fmt::format("kept run {} ({}): a local cab-sweep is running it in '{}'", index,
                                              result.run.config_hash.substr(0, 12), store.path().string()));
        break;
    }
  }
  std::map<std::string, Status> status_of;
  for (const auto& r : store.runs(report.sweep_id)) status_of[r.config_hash] = r.status;
  for (const auto& run : plan.runs) {
    auto it = status_of.find(run.config_hash);
    if (it == status_of.end() || it->second != Status::finished) report.unfinished.push_back(run.index);
  }
  return report;
}

}  // namespace cab::sweep
