// Reading the run database: parameter values from the store's TOML text, refusing missing, foreign and
// newer-schema databases with clear messages (and without creating or changing anything), and loading
// sweeps, runs, parameters, summaries and per-step metrics as cab-sweep wrote them — also while it writes.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include "cab/report/run_data.h"
#include "report_db.h"
#include "test_support.h"

using cab::report::format_value;
using cab::report::parse_param;
using cab::report::ReportError;
using cab::report::RunData;
using cab::store::Status;

namespace {

class RunDataTest : public cab::test::TempDirTest {};

std::string open_error(const std::filesystem::path& db) {
  try {
    RunData::open(db);
  } catch (const ReportError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ParamValue, ParsesTheStoresTomlText) {
  auto s = parse_param("\"cab\"");
  EXPECT_TRUE(s.is_string);
  EXPECT_EQ(s.text, "cab");
  EXPECT_FALSE(s.number);
  EXPECT_EQ(parse_param(R"("say \"hi\"\\n")").text, R"(say "hi"\n)");
  EXPECT_EQ(parse_param(R"("B+C")").text, "B+C");
  EXPECT_EQ(parse_param(R"("\u00e9")").text, "é");
  auto f = parse_param("0.05");
  EXPECT_FALSE(f.is_string);
  EXPECT_EQ(f.text, "0.05");
  EXPECT_DOUBLE_EQ(*f.number, 0.05);
  EXPECT_DOUBLE_EQ(*parse_param("150").number, 150);
  EXPECT_DOUBLE_EQ(*parse_param("5e-04").number, 5e-4);
  EXPECT_FALSE(parse_param("true").number);
  EXPECT_EQ(parse_param("true").text, "true");
  EXPECT_EQ(parse_param("[0.9, 0.999]").text, "[0.9, 0.999]");
  EXPECT_FALSE(parse_param("[0.9, 0.999]").number);
}

TEST(ParamValue, DisplayFormats) {
  EXPECT_EQ(format_value(parse_param("0.05"), "percent"), "5%");
  EXPECT_EQ(format_value(parse_param("0.001"), "percent"), "0.1%");
  EXPECT_EQ(format_value(parse_param("1.0"), "percent"), "100%");
  EXPECT_EQ(format_value(parse_param("1600000"), "si"), "1.6M");
  EXPECT_EQ(format_value(parse_param("4096000"), "si"), "4.1M");
  EXPECT_EQ(format_value(parse_param("2000000000"), "si"), "2B");
  EXPECT_EQ(format_value(parse_param("\"/usr/share/doc/python3.11-doc/\""), "basename"), "python3.11-doc");
  EXPECT_EQ(format_value(parse_param("0.12345"), "fixed2"), "0.12");
  EXPECT_EQ(format_value(parse_param("\"cab\""), "percent"), "cab");  // not a number: as is
  EXPECT_TRUE(cab::report::value_less(parse_param("2"), parse_param("10")));  // numerically
  EXPECT_TRUE(cab::report::value_less(parse_param("\"a\""), parse_param("\"b\"")));
}

TEST_F(RunDataTest, RefusesMissingForeignAndNewerDatabases) {
  const auto missing = dir_ / "nope" / "cab.sqlite";
  EXPECT_EQ(open_error(missing), "no run database at '" + missing.string() +
                                     "': run a sweep first (cab-sweep SWEEP.toml --db " + missing.string() +
                                     "), or pass --db FILE");
  EXPECT_FALSE(std::filesystem::exists(missing.parent_path()));  // reading creates nothing

  const auto junk = write("junk.sqlite", "this is not a database, just text that is long enough to have a header....");
  EXPECT_NE(open_error(junk).find("(is it a cab SQLite database?)"), std::string::npos) << open_error(junk);

  const auto other = dir_ / "other.sqlite";
  {
    SQLite::Database db(other.string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("CREATE TABLE t(x)");
  }
  EXPECT_EQ(open_error(other), "'" + other.string() + "' is not a cab run database (it has no cab schema; schema version 0)");

  const auto newer = dir_ / "newer.sqlite";
  {
    cab::store::Store store(newer);
    store.database().exec("PRAGMA user_version = 99");
  }
  EXPECT_EQ(open_error(newer), "run database '" + newer.string() +
                                   "' has schema version 99, newer than this cab understands (1); use a newer "
                                   "cab-report, or another --db");
}

TEST_F(RunDataTest, LoadsWhatTheHostWrote) {
  const auto db = dir_ / "cab.sqlite";
  cab::store::Store store(db);  // stays open, as a running cab-sweep keeps it: the report reads alongside
  auto lm = cab::test::distill_params("cab", 1.0, 0, "mamba");
  lm["dataset.seq_len"] = std::int64_t{256};
  lm["dataset.root"] = std::string("/usr/share/doc/python3.11-doc");
  auto run = cab::test::finished_run(lm, 0);
  run.summary["ppl"] = "31.4159";
  cab::test::FakeRun failed;
  failed.params = cab::test::distill_params("soft-kd", 0.05, 1);
  failed.status = Status::failed;
  failed.error = "CUDA out of memory";
  cab::test::record_sweep(store, "lm-table4", {run});
  cab::test::record_sweep(store, "fmnist-distill", {failed, cab::test::finished_run(cab::test::distill_params("cab", 0.05, 0), 27.5)});

  const auto data = RunData::open(db);
  ASSERT_EQ(data.sweeps().size(), 2u);
  EXPECT_EQ(data.sweeps()[0].name, "lm-table4");
  EXPECT_EQ(data.sweeps()[1].counts.str(), "2 runs: 1 finished, 1 failed");
  ASSERT_EQ(data.runs().size(), 3u);
  const auto& r = data.runs()[0];
  EXPECT_EQ(r.status, Status::finished);
  EXPECT_EQ(data.param(r, "method.name")->text, "cab");
  EXPECT_EQ(data.param(r, "sweep")->text, "lm-table4");
  EXPECT_EQ(data.param(r, "status")->text, "finished");
  EXPECT_EQ(data.param(r, "no.such"), nullptr);
  EXPECT_DOUBLE_EQ(*data.param(r, "train.tokens")->number, 150.0 * 64 * 256);  // derived
  EXPECT_DOUBLE_EQ(*data.summary(r, "ppl"), 31.4159);
  EXPECT_FALSE(data.summary(r, "checkpoint"));  // not a number
  EXPECT_EQ(data.runs()[1].error, "CUDA out of memory");
  EXPECT_EQ(data.runs()[1].status, Status::failed);

  const auto series = data.series({&data.runs()[0], &data.runs()[2]}, "attn_similarity");
  ASSERT_EQ(series.size(), 2u);
  ASSERT_EQ(series[1].size(), 4u);
  EXPECT_EQ(series[1][3].first, 3);
  EXPECT_NEAR(series[1][3].second, 0.5 + 27.5 / 1000, 1e-12);

  std::vector<std::string> unmatched;
  EXPECT_EQ(data.match_sweeps({"*distill*", "lm-*", "ablation*"}, &unmatched), (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(unmatched, std::vector<std::string>{"ablation*"});

  // A run finishing after the report opened is seen by the next open (WAL: readers never block the writer).
  cab::test::record_sweep(store, "later", {cab::test::finished_run(cab::test::distill_params("cab", 0.1, 0), 30)});
  EXPECT_EQ(RunData::open(db).sweeps().size(), 3u);
}

TEST_F(RunDataTest, LongCurvesAreSampledBySeeksNotScanned) {
  const auto db = dir_ / "cab.sqlite";
  {
    cab::store::Store store(db);
    auto run = cab::test::finished_run(cab::test::distill_params("cab", 0.05, 0), 27.0, 0);
    for (int step = 0; step < 5000; ++step) run.metrics.emplace_back("loss", step, 1.0 / (1 + step));
    cab::test::record_sweep(store, "long", {run});
  }
  const auto data = RunData::open(db);
  const cab::report::Run* run = &data.runs()[0];
  EXPECT_EQ(data.series({run}, "loss")[0].size(), 5000u);
  const auto sampled = data.series({run}, "loss", 100)[0];
  ASSERT_EQ(sampled.size(), 100u);
  EXPECT_EQ(sampled.front().first, 0);
  EXPECT_EQ(sampled.back().first, 4999);
  for (std::size_t i = 1; i < sampled.size(); ++i) EXPECT_GT(sampled[i].first, sampled[i - 1].first);
  EXPECT_DOUBLE_EQ(sampled[50].second, 1.0 / (1 + sampled[50].first));
  EXPECT_EQ(data.series({run}, "loss", 2000)[0].size(), 5000u);  // few enough steps: all of them
}
