// cab-sweep end to end with real worker processes training tiny LibTorch models: completion, every crash
// kind recorded, resume, Ctrl-C, kill -9 of the host at random moments, and bad sweeps changing nothing.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdlib>
#include <random>
#include <thread>

#include "cab/store/store.h"
#include "cab/sweep/scheduler.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::store::Status;
using cab::test::run_command;

namespace {

const std::string kSweepBin = std::string(CAB_TEST_BIN_DIR) + "/cab-sweep";
const std::string kPlugins = std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures/train";

class SweepEngine : public cab::test::TempDirTest {
 protected:
  std::string db() const { return (dir_ / "cab.sqlite").string(); }
  std::string command(const std::string& sweep, const std::string& extra = "") const {
    return kSweepBin + " -P " + kPlugins + " --db " + db() + " --plain " + extra + " " + sweep;
  }
  // A sweep of `lrs.size() * seeds` runs of `steps` steps each.
  std::string sweep_file(const std::string& name, int runs, int steps, const std::string& method_extra = "",
                         int sleep_ms = 0) {
    std::string lrs;
    for (int i = 0; i < runs; ++i) lrs += (i ? ", " : "") + std::to_string(0.001 * (i + 1));
    return write(name + ".toml", "[sweep]\nname = \"" + name + "\"\n[base]\ndataset.name = \"fixture-blobs\"\n"
                                 "student.name = \"fixture-mlp\"\nmethod.name = \"fixture-ce\"\nrun.device = \"cpu\"\n"
                                 "train.batch_size = 16\ntrain.steps = " + std::to_string(steps) + "\n"
                                 "method.sleep_ms = " + std::to_string(sleep_ms) + "\n" + method_extra +
                                 "[grid]\n\"train.lr\" = [" + lrs + "]\n")
        .string();
  }
  std::vector<cab::store::RunRecord> runs_of(const std::string& name) {
    cab::store::Store store(db());
    return store.runs(store.find_sweep(name)->id);
  }
};

void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "'" << fragment << "' not in:\n" << text;
}

}  // namespace

// Per step: loss, loss/ce, lr, grad_norm, time/step_ms, throughput/examples_per_s (CPU: no memory metric);
// at the end eval/top1 and eval/loss.
constexpr int kPerStep = 6;
int per_run_metrics(int steps) { return steps * kPerStep + 2; }

TEST_F(SweepEngine, RunsEverythingRecordsMetricsAndResumesWithoutRedoing) {
  const auto file = sweep_file("basic", 4, 10);
  auto r = run_command(command(file, "--workers 2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "sweep basic: 4 finished, 0 failed");
  cab::store::Store store(db());
  const auto runs = store.runs(store.find_sweep("basic")->id);
  ASSERT_EQ(runs.size(), 4u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, Status::finished);
    EXPECT_EQ(store.metric_count(run.id), per_run_metrics(10));
    EXPECT_EQ(store.summary(run.id).at("steps"), "10");
    const auto prov = store.provenance(run.id);
    for (const char* key : {"git_sha", "git_dirty", "binary_sha256", "torch_version", "cuda_version", "host",
                            "plugin.method", "dataset_subset_hash"})
      EXPECT_TRUE(prov.count(key)) << key;
  }
  auto again = run_command(command(file));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  expect_contains(again.output, "resumed; 0 new");
  expect_contains(again.output, "this session: 0 finished");
  for (const auto& run : runs_of("basic")) EXPECT_EQ(run.attempts, 1);

  auto dry = run_command(command(file, "--dry-run --filter train.lr=0.002"));
  EXPECT_EQ(dry.exit_code, 0);
  expect_contains(dry.output, "finished  train.lr=0.002");
  expect_contains(dry.output, "1 of 4 runs match the filters");
  auto status = run_command(kSweepBin + " status --db " + db());
  EXPECT_EQ(status.exit_code, 0);
  expect_contains(status.output, "sweep basic");
  expect_contains(status.output, "4 runs — 4 finished");

  auto forced = run_command(command(file, "--force --filter train.lr=0.001"));
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  expect_contains(forced.output, "this session: 1 finished");
}

TEST_F(SweepEngine, EveryCrashKindIsRecordedAndTheSweepGoesOn) {
  const auto file = write("crash.toml", R"([sweep]
name = "crash"
[base]
dataset.name = "fixture-blobs"
student.name = "fixture-mlp"
method.name = "fixture-ce"
run.device = "cpu"
train.steps = 6
method.crash_at_step = 3
[grid]
"method.crash" = ["none", "abort", "segfault", "throw", "nan", "oom", "hang"]
)");
  auto r = run_command(command(file, "--workers 2 --timeout 20"));
  EXPECT_EQ(r.exit_code, 1) << r.output;  // some runs failed
  cab::store::Store store(db());
  std::map<std::string, cab::store::RunRecord> by_crash;
  for (const auto& run : runs_of("crash")) {
    const std::string quoted = store.params(run.id).at("method.crash");  // TOML text: "abort"
    by_crash[quoted.substr(1, quoted.size() - 2)] = run;
  }
  ASSERT_EQ(by_crash.size(), 7u);
  EXPECT_EQ(by_crash["none"].status, Status::finished);
  auto expect_failed = [&](const std::string& crash, const std::string& fragment) {
    const auto& run = by_crash[crash];
    EXPECT_EQ(run.status, Status::failed) << crash;
    EXPECT_NE(run.error.find(fragment), std::string::npos) << crash << ": " << run.error;
    EXPECT_NE(run.error.find("[log: "), std::string::npos) << run.error;
  };
  expect_failed("abort", "crashed: Aborted (signal 6)");
  expect_failed("segfault", "crashed: Segmentation fault (signal 11)");
  expect_failed("throw", "error (exit code 1): fixture failure: the method threw on purpose");
  expect_failed("nan", "non-finite loss (exit code 6): loss is nan at step 3");
  expect_failed("oom", "out of memory (exit code 5): out of memory: CUDA out of memory. Tried to allocate 20.00 GiB");
  expect_failed("hang", "timed out after 20 s");
  // Metrics up to the failure are kept.
  EXPECT_EQ(store.metric_count(by_crash["nan"].id), 3 * kPerStep);
}

TEST_F(SweepEngine, CtrlCMarksRunsKilledAndTheyResume) {
  const auto file = sweep_file("interrupt", 2, 40, "", 100);  // ~4 s per run
  const auto log = (dir_ / "host.log").string();
  const pid_t host = cab::test::spawn_command(command(file, "--workers 2"), log);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  kill(host, SIGINT);
  EXPECT_EQ(cab::test::wait_command(host), 5);
  for (const auto& run : runs_of("interrupt")) {
    EXPECT_EQ(run.status, Status::killed);
    EXPECT_NE(run.error.find("interrupted"), std::string::npos) << run.error;
  }
  auto resumed = run_command(command(file, "--workers 2"));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  cab::store::Store store(db());
  for (const auto& run : runs_of("interrupt")) {
    EXPECT_EQ(run.status, Status::finished);
    EXPECT_EQ(run.attempts, 2);
    EXPECT_EQ(store.metric_count(run.id), per_run_metrics(40));
  }
}

TEST_F(SweepEngine, KillNineAtRandomMomentsThenResumeFinishesEveryRunExactlyOnce) {
  constexpr int kRuns = 50, kSteps = 8;
  const auto file = sweep_file("chaos", kRuns, kSteps, "", 10);
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(300, 2500);
  int kills = 0;
  for (int round = 0; round < 8; ++round) {
    const pid_t host = cab::test::spawn_command(command(file, "--workers 2"), (dir_ / "chaos.log").string());
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    if (kill(host, SIGKILL) == 0) ++kills;
    cab::test::wait_command(host);
  }
  EXPECT_GE(kills, 6);
  auto final_run = run_command(command(file, "--workers 2"));
  ASSERT_EQ(final_run.exit_code, 0) << final_run.output;
  cab::store::Store store(db());
  EXPECT_EQ(store.integrity_check(), "ok");
  const auto runs = runs_of("chaos");
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kRuns));
  int retried = 0;
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, Status::finished) << run.id;
    EXPECT_EQ(store.metric_count(run.id), per_run_metrics(kSteps)) << run.id;  // none lost, none duplicated
    EXPECT_EQ(store.summary(run.id).at("steps"), std::to_string(kSteps));
    retried += run.attempts > 1;
  }
  EXPECT_GT(retried, 0);  // some runs really were interrupted mid-way
}

TEST_F(SweepEngine, BadSweepFilesChangeNothing) {
  const auto good = sweep_file("good", 2, 3);
  ASSERT_EQ(run_command(command(good)).exit_code, 0);
  const auto before = run_command("sqlite3 " + db() + " '.dump'").output;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[sweep]\nname = \"b\"\n[grid\n", "invalid TOML"},
      {"[sweep]\nname = \"b\"\n[base]\ndataset.name = \"fixture-blobs\"\nstudent.name = \"fixture-mlp\"\n"
       "method.name = \"fixture-ce\"\n[grid]\n\"train.steps\" = [\"many\"]\n",
       "expected integer >= 0"},
      {"[sweep]\nname = \"b\"\n[base]\ntrain.lr = 0.1\nmethod.name = \"no-such-method\"\n", "unknown method plugin"},
      {"[sweep]\nname = \"b\"\n[base]\ndataset.name = \"fixture-blobs\"\nstudent.name = \"fixture-mlp\"\n"
       "method.name = \"fixture-ce\"\nteacher.name = \"fixture-teacher\"\n"
       "teacher.checkpoint = \"@ref:missing:run.seed=0:checkpoint\"\n",
       "reference to a missing run"},
      {"[sweep]\nname = \"b\"\n[grid]\n\"train.lr\" = []\n", "empty list"},
  };
  for (const auto& [text, fragment] : bad) {
    const auto file = write("bad.toml", text);
    auto r = run_command(command(file.string()));
    EXPECT_EQ(r.exit_code, 2) << text << r.output;
    expect_contains(r.output, fragment);
    EXPECT_EQ(run_command("sqlite3 " + db() + " '.dump'").output, before) << "database changed by: " << text;
  }
  // An edited sweep file is refused (the frozen run list stands) unless --replan.
  const auto edited = sweep_file("good", 3, 3);
  auto refused = run_command(command(edited));
  EXPECT_EQ(refused.exit_code, 2);
  expect_contains(refused.output, "from a different version of this file");
  auto replanned = run_command(command(edited, "--replan"));
  EXPECT_EQ(replanned.exit_code, 0) << replanned.output;
  expect_contains(replanned.output, "resumed; 1 new");
}

// --gpus: "all" follows CUDA_VISIBLE_DEVICES (entries kept as given, so a worker gets one of them), lists repeat
// per --runs-per-gpu, and nonsense is refused with the flag named.
TEST(GpuSlots, AllListsAndRunsPerGpu) {
  const char* saved = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string keep = saved ? saved : "";
  ::setenv("CUDA_VISIBLE_DEVICES", "3, 5", 1);
  EXPECT_EQ(cab::sweep::visible_gpus(), (std::vector<std::string>{"3", "5"}));
  EXPECT_EQ(cab::sweep::gpu_slots("all", 1), (std::vector<std::string>{"3", "5"}));
  EXPECT_EQ(cab::sweep::gpu_slots("all", 2), (std::vector<std::string>{"3", "5", "3", "5"}));
  ::setenv("CUDA_VISIBLE_DEVICES", "1,-1,2", 1);  // CUDA stops at an invalid entry
  EXPECT_EQ(cab::sweep::visible_gpus(), (std::vector<std::string>{"1"}));
  ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
  try {
    cab::sweep::gpu_slots("all", 1);
    ADD_FAILURE() << "no GPU visible: expected an error";
  } catch (const cab::ConfigError& e) {
    expect_contains(e.what(), "--gpus all");
  }
  if (saved) ::setenv("CUDA_VISIBLE_DEVICES", keep.c_str(), 1);
  else ::unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(cab::sweep::gpu_slots("0,1", 3), (std::vector<std::string>{"0", "1", "0", "1", "0", "1"}));
  EXPECT_THROW(cab::sweep::gpu_slots(",", 1), cab::ConfigError);
  EXPECT_THROW(cab::sweep::gpu_slots("0", 0), cab::ConfigError);
}
