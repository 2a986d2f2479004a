// Data-parallel training of one run: the same global batch split over two processes (the TCP-store collectives
// on CPU; CI has no GPU) must follow the single-process loss curve over 100 steps of a real CAB run (a DeiT-style
// teacher distilled into a Vim student on Fashion-MNIST, soft KD + B/C alignment through MLP bridges), with only
// rank 0 writing to the database. On one GPU: NCCL's process group with one rank (two ranks cannot share one
// GPU) against the same run without a process group. On two GPUs: two NCCL ranks against one GPU, and
// `--gpus all` running one run per GPU at the same time.
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include <SQLiteCpp/SQLiteCpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "cab/store/store.h"
#include "cab/train/distributed.h"
#include "test_support.h"

namespace {

const std::string kSweep = std::string(CAB_TEST_BIN_DIR) + "/cab-sweep";
const std::string kFixtures = std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures/train";

std::string run_config(const std::string& device, int steps) {
  return "[run]\nseed = 1\ndevice = \"" + device + "\"\n"
         "[dataset]\nname = \"fashion-mnist\"\n"
         "[teacher]\nname = \"vit\"\nimage_size = 28\npatch_size = 7\nchannels = 1\nclasses = 10\nd_model = 32\n"
         "n_layer = 2\nheads = 2\nmlp_ratio = 2.0\n"
         "[student]\nname = \"vim\"\nimage_size = 28\npatch_size = 7\nchannels = 1\nclasses = 10\nd_model = 32\n"
         "n_layer = 2\nd_state = 8\ninit = \"identity\"\n"
         "[method]\nname = \"cab\"\n[alignment]\nname = \"cab-bc\"\n[bridge]\nname = \"mlp\"\nhidden = 32\n"
         "[train]\nsteps = " + std::to_string(steps) + "\nbatch_size = 32\nlr = 2e-3\nwarmup_steps = 10\n"
         "data_fraction = 0.05\neval_examples = 500\nsimilarity_examples = 0\nprecision = \"fp32\"\n";
}

// The largest |b − a| / |a| over a's steps (b must have every one of them).
double largest_relative_difference(const std::map<std::int64_t, double>& a, const std::map<std::int64_t, double>& b) {
  double worst = 0;
  for (const auto& [step, value] : a) worst = std::max(worst, std::abs(b.at(step) - value) / std::abs(value));
  return worst;
}

class DataParallel : public cab::test::TempDirTest {
 protected:
  // The sweep of one run (the run config's tables as [base] keys).
  std::string sweep_file(const std::string& device, int steps) {
    std::istringstream in(run_config(device, steps));
    std::string line, table, body = "[sweep]\nname = \"dp\"\n[base]\n";
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (line.front() == '[') table = line.substr(1, line.size() - 2);
      else body += table + "." + line + "\n";
    }
    return write("dp.toml", body).string();
  }
  std::map<std::int64_t, double> losses(const std::string& db, std::map<std::string, std::string>* provenance,
                                        std::map<std::string, std::string>* summary, std::size_t* metric_rows) {
    cab::store::Store store(db);
    const auto runs = store.runs(store.find_sweep("dp")->id);
    EXPECT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs.at(0).status, cab::store::Status::finished) << runs.at(0).error;
    *provenance = store.provenance(runs[0].id);
    *summary = store.summary(runs[0].id);
    std::map<std::int64_t, double> out;
    *metric_rows = static_cast<std::size_t>(store.metric_count(runs[0].id));
    SQLite::Statement q(store.database(), "SELECT step, value FROM metrics WHERE run_id = ? AND key = 'loss'");
    q.bind(1, runs[0].id);
    while (q.executeStep()) out[q.getColumn(0).getInt64()] = q.getColumn(1).getDouble();
    return out;
  }
};

}  // namespace

TEST_F(DataParallel, TwoProcessesFollowTheSingleProcessLossCurve) {
  const std::string file = sweep_file("cpu", 100);
  const std::string one = (dir_ / "one.sqlite").string(), two = (dir_ / "two.sqlite").string();
  auto r = cab::test::run_command(kSweep + " --plain --db " + one + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = cab::test::run_command(kSweep + " --plain --gpus-per-run 2 --db " + two + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("as 2 processes"), std::string::npos) << r.output;

  std::map<std::string, std::string> p1, p2, s1, s2;
  std::size_t rows1 = 0, rows2 = 0;
  const auto a = losses(one, &p1, &s1, &rows1), b = losses(two, &p2, &s2, &rows2);
  ASSERT_EQ(a.size(), 100u);
  ASSERT_EQ(b.size(), 100u);
  EXPECT_EQ(p1.count("world_size"), 0u);
  EXPECT_EQ(p2.at("world_size"), "2");
  EXPECT_EQ(p2.at("collectives"), "tcp-store");
  EXPECT_GE(std::stoi(p2.at("gradient_buckets")), 1);
  EXPECT_EQ(rows1, rows2) << "rank 1 must not report: the same metrics, once";
  // The loss of each step is the global batch's in both runs; the tolerance covers summation order only.
  const double worst = largest_relative_difference(a, b);
  std::cout << "largest relative loss difference over 100 steps, 2 processes vs 1: " << worst << "\n";
  EXPECT_LT(worst, 1e-5) << "largest relative loss difference over 100 steps";
  EXPECT_GT(a.at(0) - a.at(99), 0.3) << "the run must learn, or matching curves prove little";
  EXPECT_NEAR(std::stod(s1.at("top1")), std::stod(s2.at("top1")), 0.5);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "logs" / "dp" / "run-1-attempt-1.log.rank1"));
}

// A method that calls backward twice per step: the second pass reaches buckets already sent, so GradientSync
// all-reduces everything again after the backward; the result must still equal one process's.
TEST_F(DataParallel, SeveralBackwardPassesPerStepStillAverageExactly) {
  const std::string file = write("dp.toml", "[sweep]\nname = \"dp\"\n[base]\nrun.device = \"cpu\"\n"
                                            "dataset.name = \"fixture-blobs\"\nstudent.name = \"fixture-mlp\"\n"
                                            "method.name = \"fixture-ce\"\nmethod.backward_passes = 2\n"
                                            "train.steps = 60\ntrain.batch_size = 16\ntrain.lr = 0.01\n").string();
  const std::string one = (dir_ / "one.sqlite").string(), two = (dir_ / "two.sqlite").string();
  auto r = cab::test::run_command(kSweep + " -P " + kFixtures + " --plain --db " + one + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = cab::test::run_command(kSweep + " -P " + kFixtures + " --plain --gpus-per-run 2 --db " + two + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, std::string> p1, p2, s1, s2;
  std::size_t rows1 = 0, rows2 = 0;
  const auto a = losses(one, &p1, &s1, &rows1), b = losses(two, &p2, &s2, &rows2);
  ASSERT_EQ(a.size(), 60u);
  ASSERT_EQ(b.size(), 60u);
  const double worst = largest_relative_difference(a, b);
  std::cout << "largest relative loss difference over 60 steps with 2 backward passes per step: " << worst << "\n";
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(a.at(0) - a.at(59), 0.2) << "the run must learn";
}

// One rank dies (abort) while rank 0 waits for it in a collective: the host notices, ends rank 0 after its grace
// and records the run as failed, naming the rank and its log.
TEST_F(DataParallel, ARankThatDiesFailsTheRunWithItsName) {
  const std::string file = write("dp.toml", "[sweep]\nname = \"dp\"\n[base]\nrun.device = \"cpu\"\n"
                                            "dataset.name = \"fixture-blobs\"\nstudent.name = \"fixture-mlp\"\n"
                                            "method.name = \"fixture-ce\"\nmethod.crash = \"abort\"\n"
                                            "method.crash_at_step = 3\nmethod.crash_rank = 1\n"
                                            "train.steps = 20\ntrain.batch_size = 16\n").string();
  const std::string db = (dir_ / "crash.sqlite").string();
  const auto r = cab::test::run_command(kSweep + " -P " + kFixtures + " --plain --gpus-per-run 2 --db " + db + " " + file);
  EXPECT_NE(r.exit_code, 0) << r.output;
  cab::store::Store store(db);
  const auto runs = store.runs(store.find_sweep("dp")->id);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, cab::store::Status::failed);
  EXPECT_NE(runs[0].error.find("data-parallel rank 1 died of signal 6"), std::string::npos) << runs[0].error;
  EXPECT_NE(runs[0].error.find("run-1-attempt-1.log.rank1"), std::string::npos) << runs[0].error;
}

namespace {

// A port nobody listens on now (the kernel's pick for port 0).
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

cab::train::DistributedEnv rank_env(int rank, int port) {
  cab::train::DistributedEnv env;
  env.rank = env.local_rank = rank;
  env.world_size = 2;
  env.master_port = port;
  env.launched = true;
  return env;
}

}  // namespace

// Rank 0 serves the rendezvous store: after the last collective it must stay until the other rank is past it,
// or a rank still reading the last all-reduce finds the store gone (it failed this way under load, 1 run in 12).
TEST(DataParallelDeparture, RankZeroLeavesOnlyAfterEveryRankHas) {
  using Clock = std::chrono::steady_clock;
  const int port = unused_port();
  std::promise<Clock::time_point> rank1_left;
  std::thread rank1([&] {
    auto comm = cab::train::connect(rank_env(1, port), at::Device(at::kCPU), std::chrono::seconds(30));
    at::Tensor x = at::full({3}, 2.0);
    comm->all_reduce_sum(x);
    EXPECT_TRUE(x.eq(3.0).all().item<bool>());
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // a slow rank
    rank1_left.set_value(Clock::now());
    comm->leave();
  });
  auto comm = cab::train::connect(rank_env(0, port), at::Device(at::kCPU), std::chrono::seconds(30));
  at::Tensor x = at::ones({3});
  comm->all_reduce_sum(x);
  EXPECT_TRUE(x.eq(3.0).all().item<bool>());
  comm->leave();
  const auto rank0_done = Clock::now();
  rank1.join();
  EXPECT_GE(rank0_done, rank1_left.get_future().get()) << "rank 0 left before rank 1 did";
}

// A rank that never leaves: rank 0 gives up after the timeout and names it.
TEST(DataParallelDeparture, ARankThatNeverLeavesIsNamed) {
  const int port = unused_port();
  std::promise<void> rank0_gave_up;
  std::thread rank1([&] {
    auto comm = cab::train::connect(rank_env(1, port), at::Device(at::kCPU), std::chrono::seconds(30));
    rank0_gave_up.get_future().wait();  // stays connected without leaving
  });
  auto comm = cab::train::connect(rank_env(0, port), at::Device(at::kCPU), std::chrono::seconds(1));
  try {
    comm->leave();
    ADD_FAILURE() << "leave() returned although rank 1 never left";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("rank(s) 1 did not finish within 1 s"), std::string::npos) << e.what();
  }
  rank0_gave_up.set_value();
  rank1.join();
}

// A Slurm task with several GPUs ([slurm] gpus = 2) trains its run data-parallel: the job script passes
// --gpus-per-run, run-one starts the ranks (CPU processes here: the task is shown no GPU), and the collected run
// says so.
TEST_F(DataParallel, SlurmTasksWithSeveralGpusTrainTheirRunDataParallel) {
  const std::string file = write("dp.toml", "[sweep]\nname = \"dp\"\n[base]\nrun.device = \"cpu\"\n"
                                            "dataset.name = \"fixture-blobs\"\nstudent.name = \"fixture-mlp\"\n"
                                            "method.name = \"fixture-ce\"\ntrain.steps = 30\ntrain.batch_size = 16\n"
                                            "[slurm]\ngpus = 2\n").string();
  const std::string db = (dir_ / "slurm.sqlite").string(), plan = (dir_ / "plan").string();
  auto r = cab::test::run_command(kSweep + " -P " + kFixtures + " --db " + db + " " + file + " --emit slurm --out " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(plan + "/job.sbatch");
  const std::string script((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(script.find("#SBATCH --gres=gpu:2\n"), std::string::npos) << script;
  EXPECT_NE(script.find(" --gpus-per-run 2 "), std::string::npos) << script;
  r = cab::test::run_command("CUDA_VISIBLE_DEVICES= " + kSweep + " run-one " + plan +
                             " --index 0 --gpus-per-run 2 -P " + kFixtures);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("as 2 processes"), std::string::npos) << r.output;
  r = cab::test::run_command(kSweep + " collect " + plan + " --db " + db);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, std::string> prov, summary;
  std::size_t rows = 0;
  EXPECT_EQ(losses(db, &prov, &summary, &rows).size(), 30u);
  EXPECT_EQ(prov["world_size"], "2");
}

TEST_F(DataParallel, BatchNotDivisibleByTheProcessesIsAClearError) {
  std::string file = sweep_file("cpu", 3);
  std::string text;
  {
    std::ifstream in(file);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  text.replace(text.find("train.batch_size = 32"), 21, "train.batch_size = 33");
  file = write("dp.toml", text).string();
  const std::string db = (dir_ / "odd.sqlite").string();
  const auto r = cab::test::run_command(kSweep + " --plain --gpus-per-run 2 --db " + db + " " + file);
  EXPECT_NE(r.exit_code, 0);
  cab::store::Store store(db);
  const auto runs = store.runs(store.find_sweep("dp")->id);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, cab::store::Status::failed);
  EXPECT_NE(runs[0].error.find("train.batch_size = 33 is not divisible by the 2"), std::string::npos) << runs[0].error;
}

// `cab-sweep train` under torchrun's variables on one GPU: the NCCL process group with one rank against the same
// run without one.
TEST_F(DataParallel, NcclProcessGroupOnOneGpuMatchesThePlainRun) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto config = write("run.toml", run_config("cuda", 60)).string();
  auto parse = [](const std::string& out, std::map<std::string, std::string>* prov) {
    std::map<std::int64_t, double> loss;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::stringstream ss(line);
      std::string x;
      while (std::getline(ss, x, '\t')) f.push_back(x);
      if (f.size() == 5 && f[0] == "M" && f[3] == "loss") loss[std::stoll(f[1])] = std::stod(f[4]);
      if (f.size() == 3 && f[0] == "P") (*prov)[f[1]] = f[2];
    }
    return loss;
  };
  std::map<std::string, std::string> p1, p2;
  auto r = cab::test::run_command(kSweep + " train " + config);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto a = parse(r.output, &p1);
  r = cab::test::run_command("WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 " + kSweep + " train " + config);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto b = parse(r.output, &p2);
  EXPECT_EQ(p2.at("collectives"), "nccl");
  ASSERT_EQ(a.size(), 60u);
  ASSERT_EQ(b.size(), 60u);
  const double worst = largest_relative_difference(a, b);
  std::cout << "largest relative loss difference over 60 steps, NCCL (1 rank) vs plain: " << worst << "\n";
  EXPECT_LT(worst, 1e-3) << "largest relative loss difference over 60 steps";
}

namespace {

int visible_gpus() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

// "2026-11-24T10:00:03Z" as seconds since the epoch.
std::int64_t iso_seconds(const std::string& text) {
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  EXPECT_FALSE(in.fail()) << "not an ISO time: " << text;
  return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace

// Two GPUs, two NCCL ranks (one per GPU, gradients all-reduced through NCCL) against one GPU, same global batch:
// the 100-step loss curves must agree. Unlike the CPU test, the tolerance also covers cuBLAS/cuDNN choosing other
// kernels for the half batch, and TF32-free fp32 rounding drifting over 100 steps.
TEST_F(DataParallel, TwoGpusWithNcclFollowTheSingleGpuLossCurve) {
  if (visible_gpus() < 2) GTEST_SKIP() << "needs 2 CUDA devices, sees " << visible_gpus();
  const std::string file = sweep_file("cuda", 100);
  const std::string one = (dir_ / "one.sqlite").string(), two = (dir_ / "two.sqlite").string();
  auto r = cab::test::run_command(kSweep + " --plain --gpus 0 --db " + one + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = cab::test::run_command(kSweep + " --plain --gpus 0,1 --gpus-per-run 2 --db " + two + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("started on GPUs 0,1"), std::string::npos) << r.output;

  std::map<std::string, std::string> p1, p2, s1, s2;
  std::size_t rows1 = 0, rows2 = 0;
  const auto a = losses(one, &p1, &s1, &rows1), b = losses(two, &p2, &s2, &rows2);
  ASSERT_EQ(a.size(), 100u);
  ASSERT_EQ(b.size(), 100u);
  EXPECT_EQ(p2.at("world_size"), "2");
  EXPECT_EQ(p2.at("collectives"), "nccl");
  EXPECT_EQ(p2.at("cuda_visible_devices"), "0,1") << "the run sees both GPUs; rank r takes the r-th";
  EXPECT_EQ(p2.at("cuda_devices"), "2");
  EXPECT_EQ(rows1, rows2) << "rank 1 must not report: the same metrics, once";
  const double worst = largest_relative_difference(a, b);
  std::cout << "largest relative loss difference over 100 steps, 2 GPUs (NCCL) vs 1 GPU: " << worst << "\n";
  EXPECT_LT(worst, 1e-3) << "largest relative loss difference over 100 steps";
  EXPECT_GT(a.at(0) - a.at(99), 0.3) << "the run must learn, or matching curves prove little";
  EXPECT_NEAR(std::stod(s1.at("top1")), std::stod(s2.at("top1")), 1.0);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "logs" / "dp" / "run-1-attempt-1.log.rank1"));
}

// `--gpus all` on a host with several GPUs: one worker per GPU, each run on its own GPU, the GPUs busy at the
// same time, every run finished once.
TEST_F(DataParallel, GpusAllRunsOneRunPerGpuAtOnce) {
  const int gpus = visible_gpus();
  if (gpus < 2) GTEST_SKIP() << "needs 2 CUDA devices, sees " << gpus;
  std::string text;
  {
    std::ifstream in(sweep_file("cuda", 300));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  text.erase(text.find("run.seed = 1\n"), 13);  // the seeds come from [sweep] seeds
  text.replace(text.find("name = \"dp\"\n"), 12, "name = \"dp\"\nseeds = [" + [&] {
    std::string s;
    for (int i = 0; i < 2 * gpus; ++i) s += (i ? ", " : "") + std::to_string(i + 1);
    return s;
  }() + "]\n");
  const std::string file = write("dp.toml", text).string(), db = (dir_ / "all.sqlite").string();
  const auto r = cab::test::run_command(kSweep + " --plain --gpus all --db " + db + " " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  cab::store::Store store(db);
  const auto runs = store.runs(store.find_sweep("dp")->id);
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(2 * gpus));
  std::map<std::string, int> per_gpu;
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, cab::store::Status::finished) << run.error;
    EXPECT_EQ(run.attempts, 1);
    EXPECT_EQ(store.provenance(run.id).at("cuda_visible_devices"), run.gpu) << "a worker sees only its own GPU";
    EXPECT_EQ(store.metric_count(run.id), store.metric_count(runs[0].id));
    ++per_gpu[run.gpu];
  }
  EXPECT_EQ(per_gpu.size(), static_cast<std::size_t>(gpus)) << "every GPU ran runs";
  // Busy at once: some run on one GPU overlapped in time a run on another.
  bool overlap = false;
  for (const auto& x : runs)
    for (const auto& y : runs)
      if (x.gpu != y.gpu && iso_seconds(x.started) < iso_seconds(y.ended) && iso_seconds(y.started) < iso_seconds(x.ended))
        overlap = true;
  EXPECT_TRUE(overlap) << "runs on different GPUs never ran at the same time";
  for (const auto& run : runs) std::cout << "run " << run.id << " gpu " << run.gpu << " " << run.started << " .. " << run.ended << "\n";
}
