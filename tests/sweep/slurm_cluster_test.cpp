// A sweep through a real Slurm: a single-node cluster on localhost (tests/sweep/local_slurm.sh installs
// Debian's slurm-wlm and munge when missing, as root), a job array submitted with sbatch, results collected
// into the run database; and tasks cancelled mid-run, resubmitted with --only-unfinished, resumed.
// Skips (saying why) only where Slurm cannot run: not root without Slurm installed, no apt-get, the packages
// cannot be installed, or the daemons do not come up.
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include "cab/store/store.h"
#include "cab/sweep/slurm.h"
#include "slurm_test_support.h"

using cab::store::Status;
using cab::test::expect_contains;
using cab::test::read_file;
using cab::test::run_command;

namespace {

const std::string kLocalSlurm = std::string(CAB_TEST_SOURCE_DIR) + "/tests/sweep/local_slurm.sh";

class SlurmCluster : public cab::test::SlurmSweepTest {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cab-slurm-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    cluster_ = pattern;
    const auto r = run_command(kLocalSlurm + " start " + cluster_.string());
    if (r.exit_code == 77) {
      skip_reason_ = r.output;
    } else if (r.exit_code != 0) {
      skip_reason_.clear();
      start_error_ = "local_slurm.sh start failed (exit code " + std::to_string(r.exit_code) + "): " + r.output;
    }
    conf_ = (cluster_ / "slurm.conf").string();
  }
  static void TearDownTestSuite() {
    run_command(kLocalSlurm + " stop " + cluster_.string());
    cab::test::remove_tree(cluster_);
  }
  void SetUp() override {
    SlurmSweepTest::SetUp();
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  /// A Slurm client command against the test cluster.
  static cab::test::CommandResult slurm(const std::string& command) {
    return run_command("SLURM_CONF=" + conf_ + " " + command);
  }
  /// Submits a script; returns the job id.
  static std::string submit(const std::string& script) {
    const auto r = slurm("sbatch --parsable " + script);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::cout << "sbatch " << script << " -> job " << r.output;
    return r.output.substr(0, r.output.find_first_not_of("0123456789"));
  }
  /// Array task ids of the job in a state (R, PD), from squeue.
  static std::set<int> tasks(const std::string& job, const std::string& state) {
    std::set<int> out;
    const auto r = slurm("squeue -h -r -j " + job + " -t " + state + " -o %K");
    std::istringstream lines(r.output);
    std::string line;
    while (std::getline(lines, line))
      if (!line.empty() && std::isdigit(static_cast<unsigned char>(line[0]))) out.insert(std::stoi(line));
    return out;
  }
  /// Waits until the job has left the queue; false after `limit`.
  static bool wait_for(const std::string& job, std::chrono::seconds limit = std::chrono::seconds(600)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (slurm("squeue -h -j " + job + " -o %i").output.empty()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    return false;
  }
  static std::string cluster_log() {
    return read_file(cluster_ / "log" / "slurmctld.log") + read_file(cluster_ / "log" / "slurmd.log");
  }

  static inline std::filesystem::path cluster_;
  static inline std::string conf_, skip_reason_, start_error_;
};

}  // namespace

TEST_F(SlurmCluster, AJobArrayRunsEveryRunAndCollectRecordsEachExactlyOnce) {
  constexpr int kRuns = 6, kSteps = 10;
  const auto file = sweep_file("array", kRuns, kSteps);
  auto r = run_command(sweep(file + " --emit slurm --out " + plan_dir() + " --max-parallel 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::cout << r.output;
  expect_contains(read_file(plan_dir() + "/job.sbatch"), "#SBATCH --array=0-5%2\n");
  const std::string job = submit(plan_dir() + "/job.sbatch");
  ASSERT_FALSE(job.empty());
  std::cout << slurm("squeue -r -j " + job).output;
  ASSERT_TRUE(wait_for(job)) << "the job array did not finish:\n" << slurm("squeue -r -j " + job).output << cluster_log();

  // Each task left its Slurm output and its result file.
  const auto hashes = plan_hashes();
  for (int i = 0; i < kRuns; ++i) {
    const auto out = plan_dir() + "/slurm/" + job + "_" + std::to_string(i) + ".out";
    expect_contains(read_file(out), "run " + std::to_string(i) + ": finished; result in");
    EXPECT_TRUE(std::filesystem::exists(plan_dir() + "/results/" + std::to_string(i) + ".sqlite")) << i;
  }
  r = run_command(sweep("collect " + plan_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::cout << r.output;
  expect_contains(r.output, "6 file(s): 6 merged, 0 unchanged, 0 kept, 0 skipped");
  expect_contains(r.output, "sweep array in " + db() + ": 6 finished, 0 failed, 0 killed, 0 pending, 0 running");
  const std::string dump = run_command("sqlite3 " + db() + " .dump").output;
  r = run_command(sweep("collect " + plan_dir()));
  expect_contains(r.output, "0 merged, 6 unchanged");
  EXPECT_EQ(run_command("sqlite3 " + db() + " .dump").output, dump);  // collecting twice changes nothing

  cab::store::Store store(db());
  const auto runs = runs_by_hash(store, "array");
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kRuns));  // one row per run: finished exactly once
  for (const auto& [index, hash] : hashes) {
    const auto& run = runs.at(hash);
    EXPECT_EQ(run.status, Status::finished) << index;
    EXPECT_EQ(run.attempts, 1) << index;
    EXPECT_EQ(metric_rows(store, run.id, "loss"), kSteps) << index;
    const auto prov = store.provenance(run.id);
    EXPECT_EQ(prov.at("slurm_array_job_id"), job) << index;
    EXPECT_EQ(prov.at("slurm_array_task_id"), std::to_string(index));
    EXPECT_EQ(prov.at("slurmd_nodename"), "localhost");
  }
  r = run_command(sweep(plan_dir() + " --emit slurm --only-unfinished"));
  expect_contains(r.output, "nothing to submit");
}

TEST_F(SlurmCluster, CancelledTasksResumeWhenOnlyTheUnfinishedAreResubmitted) {
  constexpr int kRuns = 4, kSteps = 60;
  // ~6 s of training per run; a checkpoint every 5 steps shows when a run is under way.
  const auto file = sweep_file("cancel", kRuns, kSteps, "method.sleep_ms = 100\ntrain.checkpoint_every = 5\n");
  auto r = run_command(sweep(file + " --emit slurm --out " + plan_dir() + " --max-parallel 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto hashes = plan_hashes();
  const std::string job = submit(plan_dir() + "/job.sbatch");
  ASSERT_FALSE(job.empty());

  // Cancel the first two tasks once both are training (each has written a checkpoint).
  std::set<int> running;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < deadline) {
    running = tasks(job, "R");
    bool training = running.size() == 2;
    for (int i : running)
      training = training && std::filesystem::exists(plan_dir() + "/runs/" + hashes.at(i) + "/checkpoint/state.json");
    if (training) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(running.size(), 2u) << slurm("squeue -r -j " + job).output << cluster_log();
  std::string cancel = "scancel";
  for (int i : running) cancel += " " + job + "_" + std::to_string(i);
  std::cout << slurm("squeue -r -j " + job).output << cancel << "\n";
  ASSERT_EQ(slurm(cancel).exit_code, 0);
  ASSERT_TRUE(wait_for(job)) << slurm("squeue -r -j " + job).output << cluster_log();

  r = run_command(sweep("collect " + plan_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::cout << r.output;
  expect_contains(r.output, "sweep cancel in " + db() + ": 2 finished, 0 failed, 2 killed, 0 pending");
  for (int i : running) {  // the task's host or its worker got the SIGTERM first: both end it with a checkpoint
    const std::string out = read_file(plan_dir() + "/slurm/" + job + "_" + std::to_string(i) + ".out");
    expect_contains(out, "after a checkpoint");
    expect_contains(out, "run " + std::to_string(i) + ": killed; result in");
  }

  r = run_command(sweep(plan_dir() + " --emit slurm --only-unfinished"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::cout << r.output;
  expect_contains(r.output, "note: 2 run(s) already finished: left out");
  std::vector<std::int64_t> cancelled(running.begin(), running.end());
  expect_contains(read_file(plan_dir() + "/job.sbatch"),
                  "#SBATCH --array=" + cab::sweep::array_spec(cancelled, 2) + "\n");
  const std::string again = submit(plan_dir() + "/job.sbatch");
  ASSERT_TRUE(wait_for(again)) << slurm("squeue -r -j " + again).output << cluster_log();
  r = run_command(sweep("collect " + plan_dir()));
  std::cout << r.output;
  expect_contains(r.output, "2 merged, 2 unchanged, 0 kept, 0 skipped");
  expect_contains(r.output, "sweep cancel in " + db() + ": 4 finished, 0 failed, 0 killed, 0 pending");

  cab::store::Store store(db());
  const auto runs = runs_by_hash(store, "cancel");
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kRuns));
  for (const auto& [index, hash] : hashes) {
    const auto& run = runs.at(hash);
    EXPECT_EQ(run.status, Status::finished) << index;
    EXPECT_EQ(metric_rows(store, run.id, "loss"), kSteps) << index;  // every step once, across attempts
    EXPECT_EQ(store.summary(run.id).at("steps"), std::to_string(kSteps));
    const auto prov = store.provenance(run.id);
    if (running.count(index)) {
      EXPECT_EQ(run.attempts, 2) << index;
      EXPECT_GE(std::stoll(prov.at("resumed_from_step")), 5) << index;
      EXPECT_EQ(prov.at("slurm_array_job_id"), again);
    } else {
      EXPECT_EQ(run.attempts, 1) << index;
      EXPECT_EQ(prov.count("resumed_from_step"), 0u) << index;
    }
  }
}
