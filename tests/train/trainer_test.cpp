// The trainer: learning-rate schedules, exact resume from a checkpoint on CPU (optimizer, schedule, EMA, data
// order, RNG), evaluation, and the saved model; with the fixture plugins (tiny MLPs on Gaussian blobs).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/config/run_config.h"
#include "cab/config/toml_reader.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/registry.h"
#include "cab/train/trainer.h"
#include "test_support.h"

namespace {

using cab::train::learning_rate;

class TrainerTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.load(std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures/train/cab-fixture-train.so");
  }
  cab::config::RunConfig config(const std::string& extra = "") {
    const std::string text = R"(
[run]
seed = 3
device = "cpu"
[train]
steps = 40
batch_size = 16
lr = 0.01
warmup_steps = 5
schedule = "cosine"
ema_decay = 0.9
weight_decay = 0.05
checkpoint_every = 10
eval_every = 20
data_fraction = 0.5
[dataset]
name = "fixture-blobs"
n = 200
[student]
name = "fixture-mlp"
[method]
name = "fixture-ce"
)" + extra;
    return cab::config::parse_run_config(cab::config::parse_toml(text, "run.toml"), registry_);
  }
  cab::train::TrainResult run(const cab::config::RunConfig& c, const std::filesystem::path& dir, int64_t stop_after = 0) {
    cab::sweep::Reporter reporter(-1);
    cab::train::TrainOptions options;
    options.run_dir = dir;
    options.stop_after = stop_after;
    return cab::train::train(c, registry_, reporter, options);
  }
  cab::plugin::Registry registry_;
};

}  // namespace

TEST(LearningRate, WarmupThenSchedules) {
  EXPECT_DOUBLE_EQ(learning_rate("cosine", 1.0, 0.0, 10, 110, 0), 0.1);   // linear warm-up from lr/10
  EXPECT_DOUBLE_EQ(learning_rate("cosine", 1.0, 0.0, 10, 110, 9), 1.0);   // peak at the end of warm-up
  EXPECT_DOUBLE_EQ(learning_rate("cosine", 1.0, 0.0, 10, 110, 10), 1.0);
  EXPECT_NEAR(learning_rate("cosine", 1.0, 0.0, 10, 110, 60), 0.5, 1e-12);  // half way: half the range
  EXPECT_NEAR(learning_rate("cosine", 1.0, 0.1, 10, 110, 110), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate("linear", 1.0, 0.0, 0, 100, 25), 0.75, 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate("constant", 0.3, 0.0, 0, 100, 99), 0.3);
}

TEST_F(TrainerTest, ResumedRunEndsExactlyLikeAnUninterruptedOne) {
  const auto c = config();
  const auto whole = run(c, dir_ / "whole");
  EXPECT_EQ(whole.steps, 40);
  EXPECT_FALSE(whole.resumed);
  EXPECT_GT(whole.eval_top1, 50.0);  // separable blobs: far above chance (25 %)

  // Killed after 15 steps: the checkpoint of step 10 remains; the rerun resumes there.
  const auto first = run(c, dir_ / "split", 15);
  EXPECT_TRUE(first.stopped);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "split" / "checkpoint" / "state.json"));
  const auto second = run(c, dir_ / "split");
  EXPECT_TRUE(second.resumed);
  EXPECT_EQ(second.steps, 40);
  EXPECT_EQ(second.final_loss, whole.final_loss);  // bit for bit
  EXPECT_EQ(second.eval_top1, whole.eval_top1);
  // The saved models (EMA weights) are identical, and the resume state is gone once the run finished.
  cab::io::SafeTensorsFile a(dir_ / "whole" / "model" / "model.safetensors");
  cab::io::SafeTensorsFile b(dir_ / "split" / "model" / "model.safetensors");
  for (const auto& name : a.names()) EXPECT_TRUE(at::equal(a.get(name), b.get(name))) << name;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "split" / "checkpoint"));
}

TEST_F(TrainerTest, SameSeedSameResultOtherSeedDiffers) {
  const auto base = run(config(), dir_ / "a");
  EXPECT_EQ(run(config(), dir_ / "b").final_loss, base.final_loss);  // deterministic on CPU
  auto c = config();
  c.run.set("seed", std::int64_t{4});
  EXPECT_NE(run(c, dir_ / "c").final_loss, base.final_loss);
}

TEST_F(TrainerTest, NonFiniteLossStopsWithTheStep) {
  auto c = config("crash = \"nan\"\ncrash_at_step = 7\n");
  try {
    run(c, dir_ / "nan");
    FAIL() << "expected NonFiniteLoss";
  } catch (const cab::train::NonFiniteLoss& e) {
    EXPECT_EQ(e.step, 7);
  }
}

class TrainerRealData : public cab::test::TempDirTest {};

TEST_F(TrainerRealData, AugmentedVimOnFashionMnistResumesExactly) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed (tools/setup installs it)";
  cab::plugin::Registry registry;
  registry.discover({CAB_TEST_PLUGIN_DIR});
  const auto c = cab::config::parse_run_config(cab::config::parse_toml(R"(
[run]
seed = 1
device = "cpu"
[train]
steps = 12
batch_size = 16
lr = 0.003
warmup_steps = 2
checkpoint_every = 4
data_fraction = 0.0004  # 24 images: each is drawn (and augmented) several times before the checkpoint
eval_examples = 200
[dataset]
name = "fashion-mnist"
augment = true
[student]
name = "vim"
image_size = 28
patch_size = 7
channels = 1
classes = 10
d_model = 16
n_layer = 1
d_state = 4
[method]
name = "vanilla"
)", "vim.toml"), registry);
  auto run = [&](const std::string& sub, int64_t stop_after) {
    cab::sweep::Reporter reporter(-1);
    cab::train::TrainOptions options;
    options.run_dir = dir_ / sub;
    options.stop_after = stop_after;
    return cab::train::train(c, registry, reporter, options);
  };
  const auto whole = run("whole", 0);
  EXPECT_TRUE(run("split", 6).stopped);  // killed after 6 steps: the checkpoint of step 4 remains
  const auto resumed = run("split", 0);
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(resumed.final_loss, whole.final_loss);  // augmentation counters were restored too
  EXPECT_EQ(resumed.eval_top1, whole.eval_top1);
}
