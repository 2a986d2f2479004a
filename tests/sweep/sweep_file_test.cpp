// Sweep files: structure, expansion (grid, zip, seeds, rules), stable hashes, order, and rejected files.
#include <gtest/gtest.h>

#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "cab/sweep/expand.h"
#include "cab/sweep/sweep_file.h"

using namespace cab::sweep;

namespace {

const std::string kBase = R"(
[base]
dataset.name = "fixture-blobs"
student.name = "fixture-mlp"
method.name = "fixture-ce"
train.steps = 5
)";

class SweepFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.load(std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures/train/cab-fixture-train.so");
  }
  std::vector<RunSpec> expand_text(const std::string& text) { return expand(parse_sweep(text, "s.toml"), registry_); }
  void expect_error(const std::string& text, const std::vector<std::string>& fragments) {
    try {
      expand_text(text);
      ADD_FAILURE() << "expected an error for:\n" << text;
    } catch (const cab::ConfigError& e) {
      for (const auto& f : fragments)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
    }
  }
  cab::plugin::Registry registry_;
};

std::string value_of(const RunSpec& run, const std::string& key) { return cab::config::to_toml(run.params.at(key)); }

}  // namespace

TEST_F(SweepFileTest, GridIsACartesianProductRepeatedPerSeed) {
  const auto runs = expand_text("[sweep]\nname = \"g\"\nseeds = [0, 1, 2]\n" + kBase +
                                "[grid]\n\"train.lr\" = [0.1, 0.01]\nstudent.hidden = [4, 8]\n");
  ASSERT_EQ(runs.size(), 12u);
  // Axes nest in key order (student.hidden outside train.lr); seeds are innermost.
  EXPECT_EQ(value_of(runs[0], "student.hidden"), "4");
  EXPECT_EQ(value_of(runs[0], "train.lr"), "0.1");
  EXPECT_EQ(value_of(runs[0], "run.seed"), "0");
  EXPECT_EQ(value_of(runs[1], "run.seed"), "1");
  EXPECT_EQ(value_of(runs[3], "train.lr"), "0.01");
  EXPECT_EQ(value_of(runs[6], "student.hidden"), "8");
  EXPECT_EQ(value_of(runs[11], "train.lr"), "0.01");
  // Fully resolved: defaults of core and plugin schemas are part of every run.
  EXPECT_EQ(value_of(runs[0], "train.precision"), "\"bf16\"");
  EXPECT_EQ(value_of(runs[0], "method.crash"), "\"none\"");
  for (std::size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].position, static_cast<std::int64_t>(i));
}

TEST_F(SweepFileTest, HashesAreStableAndIndependentOfHowTheFileIsWritten) {
  const auto a = expand_text("[sweep]\nname = \"h\"\n" + kBase + "[grid]\n\"train.lr\" = [0.1]\n");
  // Same configuration: other key order, sub-table syntax, an explicit default, an integer written as float.
  const auto b = expand_text(R"([sweep]
name = "other-name"
[base.train]
steps = 5
precision = "bf16"
[base.method]
name = "fixture-ce"
[base.student]
name = "fixture-mlp"
[base.dataset]
name = "fixture-blobs"
[grid]
train.lr = [1e-1]
)");
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].config_hash, b[0].config_hash);
  EXPECT_EQ(a[0].config_hash.size(), 64u);
  const auto c = expand_text("[sweep]\nname = \"h\"\n" + kBase + "[grid]\n\"train.lr\" = [0.2]\n");
  EXPECT_NE(a[0].config_hash, c[0].config_hash);
}

TEST_F(SweepFileTest, ZipPairsAxesAndRulesExcludeAndInclude) {
  const auto runs = expand_text("[sweep]\nname = \"z\"\n" + kBase + R"(
[[zip]]
"student.hidden" = [4, 8, 16]
"train.lr" = [0.1, 0.05, 0.01]
[grid]
"train.batch_size" = [16, 32]
[[exclude]]
"student.hidden" = 8
"train.batch_size" = 32
[[include]]
"student.hidden" = 64
"train.lr" = 0.5
)");
  // grid (2) × zip (3) = 6, minus 1 excluded, plus 1 included.
  ASSERT_EQ(runs.size(), 6u);
  int included = 0;
  for (const auto& r : runs) {
    const auto hidden = value_of(r, "student.hidden"), lr = value_of(r, "train.lr");
    if (hidden == "4") EXPECT_EQ(lr, "0.1");
    if (hidden == "16") EXPECT_EQ(lr, "0.01");
    EXPECT_FALSE(hidden == "8" && value_of(r, "train.batch_size") == "32");
    included += hidden == "64";
  }
  EXPECT_EQ(included, 1);
}

TEST_F(SweepFileTest, RunsOfOneTeacherStayTogether) {
  // method.crash_at_step nests outside teacher.hidden, so in grid order the teacher changes every run;
  // the expanded order keeps each teacher's runs together (the teacher loads the fewest times).
  const auto runs = expand_text(R"([sweep]
name = "t"
[base]
dataset.name = "fixture-blobs"
method.name = "fixture-ce"
student.name = "fixture-mlp"
teacher.name = "fixture-teacher"
[grid]
"method.crash_at_step" = [1, 2, 3]
"teacher.hidden" = [32, 64]
)");
  ASSERT_EQ(runs.size(), 6u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(value_of(runs[i], "teacher.hidden"), "32") << i;
  for (int i = 3; i < 6; ++i) EXPECT_EQ(value_of(runs[i], "teacher.hidden"), "64") << i;
  EXPECT_EQ(value_of(runs[0], "method.crash_at_step"), "1");
  EXPECT_EQ(value_of(runs[2], "method.crash_at_step"), "3");
  EXPECT_EQ(value_of(runs[3], "method.crash_at_step"), "1");
}

TEST_F(SweepFileTest, ReferencesAreParsed) {
  const auto ref = parse_reference(cab::config::Value(std::string("@ref:teachers:model.size=\"s\",run.seed=0:checkpoint")), {});
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->sweep, "teachers");
  ASSERT_EQ(ref->filter.size(), 2u);
  EXPECT_EQ(ref->filter[1].first, "run.seed");
  EXPECT_EQ(ref->artifact, "checkpoint");
  EXPECT_FALSE(parse_reference(cab::config::Value(std::string("plain")), {}).has_value());
}

TEST_F(SweepFileTest, MalformedFilesAreRejectedWithTheirLocation) {
  const std::string head = "[sweep]\nname = \"m\"\n";
  expect_error(head + "[grid\n", {"s.toml:3:", "invalid TOML"});
  expect_error("[base]\ntrain.lr = 1\n", {"missing [sweep] table"});
  expect_error("[sweep]\nnmae = \"x\"\n", {"s.toml:2:1", "unknown key 'nmae'", "did you mean 'name'?"});
  expect_error(head + "[gird]\n", {"s.toml:3:", "unknown table [gird]", "did you mean 'grid'?"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = []\n", {"empty list: the sweep would have no runs"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = 0.1\n", {"expected a list of values to sweep over"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = [0.1]\n[[zip]]\n\"train.lr\" = [0.1, 0.2]\n\"train.steps\" = [1, 2]\n",
               {"s.toml:", "duplicate axis 'train.lr'", "already varied at s.toml:"});
  expect_error(head + kBase + "[[zip]]\n\"train.lr\" = [0.1, 0.2]\n\"train.steps\" = [1]\n",
               {"1 values, but train.lr has 2"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = [\"fast\"]\n",
               {"s.toml:", "train.lr: expected number >= 0, got string \"fast\""});
  expect_error(head + kBase + "[grid]\n\"train.lrr\" = [0.1]\n", {"[train] unknown key 'lrr'", "did you mean 'lr'?"});
  expect_error(head + kBase + "[grid]\n\"trian.lr\" = [0.1]\n", {"unknown table 'trian'", "did you mean 'train'?"});
  expect_error(head + kBase + "[grid]\n\"method.name\" = [\"fixture-cee\"]\n",
               {"unknown method plugin 'fixture-cee'", "did you mean 'fixture-ce'?"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = [0.1]\n[[exclude]]\n\"train.batch\" = 3\n",
               {"[[exclude]] train.batch: the sweep never sets this key"});
  expect_error(head + kBase + "[grid]\n\"train.lr\" = [0.1]\n[[exclude]]\n\"train.lr\" = 0.1\n",
               {"the sweep has no runs"});
  expect_error(head + kBase + "teacher.checkpoint = \"@ref:bad\"\n", {"malformed reference \"@ref:bad\""});
  expect_error("[sweep]\nname = \"has space\"\n", {"sweep.name: expected a non-empty string without spaces"});
  expect_error("[sweep]\nname = \"s\"\nseeds = [1, 1]\n", {"seeds must be distinct"});
}
