// cab-sweep on a cluster without the cluster: the frozen plan and the job-array script (--emit slurm),
// array tasks run by hand (run-one), collect (idempotent, partial files skipped), and SIGUSR1 checkpointing.
// slurm_cluster_test runs the same through a real Slurm.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <signal.h>

#include <thread>

#include "cab/store/store.h"
#include "cab/sweep/slurm.h"
#include "slurm_test_support.h"

using cab::store::Status;
using cab::test::expect_contains;
using cab::test::read_file;
using cab::test::run_command;

namespace {

class SlurmEmit : public cab::test::SlurmSweepTest {};

}  // namespace

TEST(SlurmArraySpec, CompressesConsecutiveIndicesAndAddsTheLimit) {
  EXPECT_EQ(cab::sweep::array_spec({0, 1, 2, 3}, 0), "0-3");
  EXPECT_EQ(cab::sweep::array_spec({7, 0, 1, 2, 5, 8}, 0), "0-2,5,7-8");
  EXPECT_EQ(cab::sweep::array_spec({4}, 2), "4%2");
}

TEST_F(SlurmEmit, WritesThePlanAndAJobArrayScriptWithTheRequestedResources) {
  const auto file = sweep_file("emit", 3, 5,
                               "[slurm]\ngpus = 1\ncpus = 2\nmem = \"4G\"\ntime = \"01:00:00\"\npartition = \"p1\"\n"
                               "account = \"a1\"\nmax_parallel = 2\nsbatch = [\"--constraint=x\"]\n"
                               "setup = [\"module load cuda\"]\n");
  auto r = run_command(sweep(file + " --emit slurm --out " + plan_dir() + " --partition p2 --slurm-mem 8G"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "sweep emit: 3 runs frozen in " + plan_dir() + "/plan.json (3 new)");
  expect_contains(r.output, "sbatch " + plan_dir() + "/job.sbatch");
  const std::string script = read_file(plan_dir() + "/job.sbatch");
  for (const std::string& line : std::vector<std::string>{
           "#SBATCH --array=0-2%2\n", "#SBATCH --signal=B:USR1@120\n", "#SBATCH --gres=gpu:1\n",
        "#SBATCH --cpus-per-task=2\n", "#SBATCH --mem=8G\n", "#SBATCH --time=01:00:00\n", "#SBATCH --partition=p2\n",
        "#SBATCH --account=a1\n", "#SBATCH --constraint=x\n", "#SBATCH --output=" + plan_dir() + "/slurm/%A_%a.out\n",
        "module load cuda\n",
        "exec '" + cab::test::kSweepBin + "' run-one '" + plan_dir() +
            "' --index \"$SLURM_ARRAY_TASK_ID\" --grace 60 -P '" + cab::test::kFixturePlugins + "'\n"})
    expect_contains(script, line);
  const auto hashes = plan_hashes();
  ASSERT_EQ(hashes.size(), 3u);
  const auto plan = cab::sweep::read_plan(plan_dir());
  for (const auto& run : plan.runs) EXPECT_EQ(run.config_hash, hashes.at(static_cast<int>(run.index)));

  // The same file again adds nothing; a filter narrows the array, not the plan.
  r = run_command(sweep(file + " --emit slurm --out " + plan_dir() + " --filter train.lr=0.002"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "3 runs frozen");
  EXPECT_EQ(r.output.find("new)"), std::string::npos) << r.output;
  expect_contains(read_file(plan_dir() + "/job.sbatch"), "#SBATCH --array=1%2\n");

  // An edited file with new runs is refused until --replan, which appends them: old indices keep their runs.
  const auto edited = sweep_file("emit", 4, 5);
  r = run_command(sweep(edited + " --emit slurm --out " + plan_dir()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  expect_contains(r.output, "which has 1 new run(s); the frozen run list stands. Rerun with --replan");
  r = run_command(sweep(edited + " --emit slurm --out " + plan_dir() + " --replan"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "4 runs frozen in " + plan_dir() + "/plan.json (1 new)");
  const auto after = plan_hashes();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(after.at(i), hashes.at(i));
  expect_contains(read_file(plan_dir() + "/job.sbatch"), "#SBATCH --array=0-3\n");
}

TEST_F(SlurmEmit, BadSettingsAreErrorsNamingTheSettingAndWriteNothing) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[slurm]\ngpu = 1\n", "[slurm] unknown key 'gpu' (did you mean 'gpus'?)"},
      {"[slurm]\nmem = \"16 GB\"\n", "slurm.mem = \"16 GB\": expected a size such as \"16G\""},
      {"[slurm]\ngrace_s = 200\n", "slurm.grace_s = 200 must be less than slurm.signal_lead_s = 120"},
      {"[slurm]\ntime = \"2\"\n", "slurm.time = \"2\" (120 s) must be longer than slurm.signal_lead_s = 120"},
      {"[slurm]\ntime = \"soon\"\n", "slurm.time = \"soon\": expected a Slurm time"},
      {"[slurm]\ncpus = 0\n", "slurm.cpus"},
  };
  for (const auto& [table, fragment] : bad) {
    const auto file = sweep_file("bad", 2, 3, table);
    auto r = run_command(sweep(file + " --emit slurm --out " + plan_dir()));
    EXPECT_EQ(r.exit_code, 2) << table << r.output;
    expect_contains(r.output, fragment);
    expect_contains(r.output, "bad.toml:");
    EXPECT_FALSE(std::filesystem::exists(plan_dir() + "/plan.json")) << table;
  }
  const auto good = sweep_file("good", 2, 3);
  auto r = run_command(sweep(good + " --emit pbs"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "--emit pbs: unknown target; expected: slurm");
  r = run_command(sweep(good + " --emit slurm --out " + plan_dir() + " --slurm-time 1"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "command line (--time): slurm.time = \"1\" (60 s) must be longer than");
  r = run_command(sweep("run-one " + plan_dir() + " --index 0"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "plan.json': no such file");
}

TEST_F(SlurmEmit, ReferencesAreResolvedFromTheDatabaseWhenTheScriptIsWritten) {
  const std::string ref_base = "teacher.name = \"fixture-teacher\"\n"
                               "teacher.checkpoint = \"@ref:first:train.lr=0.001:checkpoint\"\n";
  const auto second = sweep_file("second", 2, 3, ref_base);
  auto r = run_command(sweep(second + " --emit slurm --out " + plan_dir()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  expect_contains(r.output, "references another sweep (\"@ref:...\"), resolved from the run database when the Slurm "
                            "script is written, but there is no database");

  const auto first = sweep_file("first", 1, 3);
  r = run_command(sweep("--plain " + first));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(sweep(second + " --emit slurm --out " + plan_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto plan = cab::sweep::read_plan(plan_dir());
  ASSERT_EQ(plan.runs.size(), 2u);
  const std::string model = (dir_ / "db" / "runs" / "first").string();
  for (const auto& run : plan.runs) {
    expect_contains(run.config_toml, "checkpoint = \"@ref:first:train.lr=0.001:checkpoint\"");  // what the store keeps
    expect_contains(run.run_toml, "checkpoint = \"" + model);                                  // what the task runs
  }
}

TEST_F(SlurmEmit, RunOneAndCollectMergeEachResultOnceAndSkipPartialFiles) {
  const auto file = sweep_file("merge", 5, 5);
  ASSERT_EQ(run_command(sweep(file + " --emit slurm --out " + plan_dir())).exit_code, 0);
  for (int index : {0, 1, 3, 4}) {
    auto r = run_command(sweep("run-one " + plan_dir() + " --index " + std::to_string(index)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_contains(r.output, "run " + std::to_string(index) + ": finished; result in " + plan_dir() + "/results/" +
                                  std::to_string(index) + ".sqlite");
  }
  // A finished index is not run again.
  auto again = run_command(sweep("run-one " + plan_dir() + " --index 0"));
  EXPECT_EQ(again.exit_code, 0);
  expect_contains(again.output, "has finished already");

  const std::filesystem::path results = std::filesystem::path(plan_dir()) / "results";
  {  // index 3: a task killed before its run ended would leave it running (published files never are, but)
    SQLite::Database result((results / "3.sqlite").string(), SQLite::OPEN_READWRITE);
    result.exec("UPDATE runs SET status = 'running'");
  }
  const std::string whole = read_file(results / "0.sqlite");
  {
    std::ofstream half(results / "2.sqlite", std::ios::binary | std::ios::trunc);
    half.write(whole.data(), static_cast<std::streamsize>(whole.size() / 2));
  }
  {
    std::ofstream partial(results / "7.sqlite.partial", std::ios::binary);
    partial.write(whole.data(), 1000);
  }

  auto r = run_command(sweep("collect " + plan_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "collected " + plan_dir() + ": 6 file(s): 3 merged, 0 unchanged, 0 kept, 3 skipped");
  expect_contains(r.output, "skipped '" + (results / "2.sqlite").string() +
                                "': not a complete cab result database (database disk image is malformed)");
  expect_contains(r.output, "skipped '" + (results / "3.sqlite").string() + "': its run never ended (status running)");
  expect_contains(r.output, "skipped '" + (results / "7.sqlite.partial").string() +
                                "': a partial copy left by a task killed while publishing its result");
  expect_contains(r.output, "sweep merge in " + db() + ": 3 finished, 0 failed, 0 killed, 2 pending");
  expect_contains(r.output, "unfinished: indices 2-3; resubmit them with: cab-sweep " + plan_dir() +
                                " --emit slurm --only-unfinished");

  // Collecting twice changes nothing.
  const std::string dump = run_command("sqlite3 " + db() + " .dump").output;
  r = run_command(sweep("collect " + plan_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "6 file(s): 0 merged, 3 unchanged, 0 kept, 3 skipped");
  EXPECT_EQ(run_command("sqlite3 " + db() + " .dump").output, dump);

  r = run_command(sweep(plan_dir() + " --emit slurm --only-unfinished"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "note: 3 run(s) already finished: left out");
  expect_contains(read_file(plan_dir() + "/job.sbatch"), "#SBATCH --array=2-3\n");

  // The unfinished ones run; then every run is finished once, with all its metrics.
  for (int index : {2, 3}) ASSERT_EQ(run_command(sweep("run-one " + plan_dir() + " --index " + std::to_string(index))).exit_code, 0);
  r = run_command(sweep("collect " + plan_dir()));
  expect_contains(r.output, "2 merged, 3 unchanged, 0 kept, 1 skipped");
  expect_contains(r.output, "5 finished, 0 failed, 0 killed, 0 pending");
  cab::store::Store store(db());
  const auto runs = runs_by_hash(store, "merge");
  ASSERT_EQ(runs.size(), 5u);
  for (const auto& [index, hash] : plan_hashes()) {
    const auto& run = runs.at(hash);
    EXPECT_EQ(run.status, Status::finished) << index;
    EXPECT_EQ(run.attempts, 1) << index;
    EXPECT_EQ(metric_rows(store, run.id, "loss"), 5) << index;
    EXPECT_EQ(store.summary(run.id).at("steps"), "5");
    EXPECT_EQ(store.provenance(run.id).at("run_dir"), plan_dir() + "/runs/" + hash);
  }
  r = run_command(sweep(plan_dir() + " --emit slurm --only-unfinished"));
  expect_contains(r.output, "nothing to submit: every selected run has a finished result");
  EXPECT_FALSE(std::filesystem::exists(plan_dir() + "/job.sbatch"));
}

TEST_F(SlurmEmit, SigusrOneCheckpointsTheRunAndTheNextTaskResumesIt) {
  constexpr int kSteps = 40;
  const auto file = sweep_file("resume", 1, kSteps, "method.sleep_ms = 100\n");  // ~4 s of training
  ASSERT_EQ(run_command(sweep(file + " --emit slurm --out " + plan_dir())).exit_code, 0);
  const std::string hash = plan_hashes().at(0);
  const auto log = (dir_ / "task.log").string();
  const pid_t task = cab::test::spawn_command(sweep("run-one " + plan_dir() + " --index 0"), log);
  // Wait until training is under way (the worker has reported steps), then warn as Slurm would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_file(log).find("run 1 started") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  kill(task, SIGUSR1);
  EXPECT_EQ(cab::test::wait_command(task), 5) << read_file(log);
  const std::string output = read_file(log);
  expect_contains(output, "interrupted: the sweep was stopped by SIGUSR1 after a checkpoint");
  expect_contains(output, "run 0: killed; result in");
  EXPECT_TRUE(std::filesystem::exists(plan_dir() + "/runs/" + hash + "/checkpoint/state.json"));

  auto r = run_command(sweep("collect " + plan_dir()));
  expect_contains(r.output, "0 finished, 0 failed, 1 killed");
  r = run_command(sweep(plan_dir() + " --emit slurm --only-unfinished"));
  expect_contains(read_file(plan_dir() + "/job.sbatch"), "#SBATCH --array=0\n");

  r = run_command(sweep("run-one " + plan_dir() + " --index 0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "attempt 2");
  r = run_command(sweep("collect " + plan_dir()));
  expect_contains(r.output, "1 finished, 0 failed, 0 killed, 0 pending");
  cab::store::Store store(db());
  const auto run = runs_by_hash(store, "resume").at(hash);
  EXPECT_EQ(run.attempts, 2);
  const auto resumed = std::stoll(store.provenance(run.id).at("resumed_from_step"));
  EXPECT_GT(resumed, 0);
  EXPECT_LT(resumed, kSteps);
  EXPECT_EQ(store.summary(run.id).at("steps"), std::to_string(kSteps));
  // Every step's loss once: the first attempt's steps before the checkpoint, the second's from it on.
  EXPECT_EQ(metric_rows(store, run.id, "loss"), kSteps);
  EXPECT_FALSE(std::filesystem::exists(plan_dir() + "/runs/" + hash + "/checkpoint"));  // removed when finished
}
