// Tables from a database written the way cab-sweep writes it: Table 3's cells (mean ± std, n), best cells per
// teacher→student group, pending and failed runs counted, empty cells saying why, missing sweeps, runs that
// differ in more than the seed, Table 5's filter rows, the efficiency table's sums and the failed-runs list.
#include <gtest/gtest.h>

#include <cmath>

#include "cab/report/definition.h"
#include "cab/report/render.h"
#include "cab/report/table.h"
#include "cab/util/join.h"
#include "report_db.h"
#include "test_support.h"

using cab::report::build_table;
using cab::report::Definition;
using cab::report::RunData;
using cab::report::Table;
using cab::store::Status;
using cab::test::distill_params;
using cab::test::finished_run;
using cab::test::record_sweep;

namespace {

const std::string kTables = std::string(CAB_TEST_SOURCE_DIR) + "/results/tables";

const Definition& shipped(const std::string& id) {
  static const auto all = cab::report::load_definitions({kTables});
  for (const auto& d : all)
    if (d.id == id) return d;
  throw std::runtime_error("no shipped definition " + id);
}

const cab::report::Cell& cell(const Table& t, const std::vector<std::string>& row, const std::string& column) {
  for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
    if (t.row_labels[r] != row) continue;
    for (std::size_t c = 0; c < t.column_labels.size(); ++c)
      if (t.column_labels[c].back() == column) return t.cells[r][c];
  }
  throw std::runtime_error("no cell " + cab::join(row, "/") + " @ " + column);
}

class TableTest : public cab::test::TempDirTest {
 protected:
  // Table 3's layout: two seeds per (method, fraction) around the paper's DeiT-T→Vim-T numbers (±0.5), a
  // second student with one seed, a pending, a running and a failed run.
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = dir_ / "cab.sqlite";
    cab::store::Store store(db_);
    const std::map<std::string, std::pair<double, double>> paper = {
        {"vanilla", {11.2, 15.3}}, {"soft-kd", {20.4, 23.3}}, {"cab", {27.8, 27.3}}};
    std::vector<cab::test::FakeRun> runs;
    for (const auto& [method, top1] : paper)
      for (double fraction : {0.01, 0.05})
        for (std::int64_t seed : {0, 1})
          runs.push_back(finished_run(distill_params(method, fraction, seed),
                                      (fraction == 0.01 ? top1.first : top1.second) + (seed ? 0.5 : -0.5)));
    cab::test::FakeRun pending;
    pending.params = distill_params("cab", 0.05, 2);
    pending.status = Status::pending;
    runs.push_back(pending);
    cab::test::FakeRun failed;
    failed.params = distill_params("soft-kd", 0.05, 2);
    failed.status = Status::failed;
    failed.error = "non-finite loss nan at step 12\n(see results/logs/fmnist-distill/run-14.log)";
    runs.push_back(failed);
    cab::test::FakeRun running;
    running.params = distill_params("mohawk", 0.01, 0);
    running.status = Status::running;
    runs.push_back(running);
    runs.push_back(finished_run(distill_params("vanilla", 0.01, 0, "mamba2"), 30.0));
    runs.push_back(finished_run(distill_params("cab", 0.01, 0, "mamba2"), 40.0));
    record_sweep(store, "fmnist-distill", runs);
  }
  std::filesystem::path db_;
};

}  // namespace

TEST_F(TableTest, Table3CellsAreMeanStdAndNOverSeeds) {
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("table3"), data);
  ASSERT_EQ(t.row_headers, (std::vector<std::string>{"Teacher → Student", "Method"}));
  std::vector<std::vector<std::string>> rows = {{"vit → mamba2", "Vanilla"},
                                                {"vit → mamba2", "CAB (ours)"},
                                                {"vit → vim", "Vanilla"},
                                                {"vit → vim", "Soft KD"},
                                                {"vit → vim", "MOHAWK-style"},
                                                {"vit → vim", "CAB (ours)"}};
  EXPECT_EQ(t.row_labels, rows);
  ASSERT_EQ(t.column_labels.size(), 2u);
  EXPECT_EQ(t.column_labels[0], std::vector<std::string>{"1%"});
  EXPECT_EQ(t.column_labels[1], std::vector<std::string>{"5%"});

  const auto& vanilla = cell(t, {"vit → vim", "Vanilla"}, "1%");
  EXPECT_EQ(vanilla.stats.n, 2);
  EXPECT_NEAR(vanilla.stats.mean, 11.2, 1e-9);
  EXPECT_NEAR(vanilla.stats.std, std::sqrt(0.5), 1e-9);  // sample std of {10.7, 11.7}
  const auto& spec = t.column_values[0];
  EXPECT_EQ(cab::report::cell_text(spec, vanilla, false), "11.2 ± 0.7 (n=2)");
  EXPECT_EQ(cab::report::cell_text(spec, cell(t, {"vit → vim", "CAB (ours)"}, "5%"), false),
            "27.3 ± 0.7 (n=2; 1 pending)");
  EXPECT_EQ(cab::report::cell_text(spec, cell(t, {"vit → vim", "Soft KD"}, "5%"), false),
            "23.3 ± 0.7 (n=2; 1 failed)");
  EXPECT_EQ(cab::report::cell_text(spec, cell(t, {"vit → vim", "MOHAWK-style"}, "1%"), false),
            "no finished run (1 pending)");
  EXPECT_EQ(cab::report::cell_text(spec, cell(t, {"vit → vim", "MOHAWK-style"}, "5%"), false), "no runs");
  EXPECT_EQ(cab::report::cell_text(spec, cell(t, {"vit → mamba2", "CAB (ours)"}, "1%"), false), "40.0 (n=1)");
  EXPECT_FALSE(t.uniform_n);  // n differs: every cell shows its own
  EXPECT_EQ(t.scope.total(), 17);
  EXPECT_EQ(t.scope[Status::finished], 14);
  EXPECT_TRUE(t.notes.empty()) << cab::join(t.notes, "\n");  // '*table3*' matching nothing is fine: '*distill*' did
}

TEST_F(TableTest, BestCellIsBoldPerColumnWithinEachTeacherStudentGroup) {
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("table3"), data);
  EXPECT_TRUE(cell(t, {"vit → vim", "CAB (ours)"}, "1%").best);
  EXPECT_TRUE(cell(t, {"vit → vim", "CAB (ours)"}, "5%").best);
  EXPECT_FALSE(cell(t, {"vit → vim", "Soft KD"}, "1%").best);
  EXPECT_TRUE(cell(t, {"vit → mamba2", "CAB (ours)"}, "1%").best);  // its own group, though 40 > 27.8 matters not
  EXPECT_FALSE(cell(t, {"vit → mamba2", "Vanilla"}, "1%").best);
  const std::string md = cab::report::to_markdown(t);
  EXPECT_NE(md.find("**27.8 ± 0.7 (n=2)**"), std::string::npos) << md;
  EXPECT_NE(md.find("Bold: the best (highest) value of each column within each Teacher → Student."), std::string::npos)
      << md;
}

TEST_F(TableTest, MissingSweepIsSaidNotFatal) {
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("table5"), data);
  ASSERT_FALSE(t.notes.empty());
  EXPECT_EQ(t.notes[0], "No sweep in the database matches '*ablation*' or '*table5*' (its sweeps: fmnist-distill).");
  EXPECT_EQ(t.row_labels.size(), 7u);  // explicit rows stay, each cell saying "no runs"
  // Table 4 reads every sweep and picks the language-model runs: here there are none.
  const Table t4 = build_table(shipped("table4"), data);
  EXPECT_TRUE(t4.row_labels.empty());
  ASSERT_EQ(t4.notes.size(), 1u);
  EXPECT_EQ(t4.notes[0].rfind("No runs of fmnist-distill match dataset.name = text-corpus, method.name = [vanilla, ", 0), 0u)
      << t4.notes[0];
  const std::string md = cab::report::to_markdown(t4);
  EXPECT_NE(md.find("No runs of fmnist-distill match"), std::string::npos);
  EXPECT_EQ(md.find('|'), std::string::npos) << md;  // no empty table, just the note
  // A sweep named exactly (not a glob) that is missing is noted even when other sweeps match.
  const Table named = build_table(shipped("table3"), data, {"fmnist-distill", "no-such-sweep"});
  EXPECT_EQ(named.notes, std::vector<std::string>{"Sweep 'no-such-sweep' is not in the database."});
}

TEST_F(TableTest, CellsMixingRunsThatDifferInMoreThanTheSeedGetANote) {
  {
    cab::store::Store store(db_);
    auto p = distill_params("vanilla", 0.01, 7);
    p["train.lr"] = 5e-4;
    record_sweep(store, "fmnist-distill-lr", {finished_run(p, 12.0)});
  }
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("table3"), data);
  EXPECT_EQ(cell(t, {"vit → vim", "Vanilla"}, "1%").stats.n, 3);
  ASSERT_EQ(t.notes.size(), 1u) << cab::join(t.notes, "\n");
  EXPECT_NE(t.notes[0].find("1 cell averages runs that differ in more than the seed"), std::string::npos) << t.notes[0];
  EXPECT_NE(t.notes[0].find("vit → vim / Vanilla / 1%: train.lr (0.002, 5e-04)"), std::string::npos) << t.notes[0];
  auto def = shipped("table3");
  def.vary = {"train.lr"};
  EXPECT_TRUE(build_table(def, data).notes.empty());
}

TEST_F(TableTest, Table5RowsAreParameterFilters) {
  {
    cab::store::Store store(db_);
    std::vector<cab::test::FakeRun> runs;
    auto variant = [&](const std::string& terms, bool shared, const std::string& init, double top1) {
      for (std::int64_t seed : {0, 1}) {
        auto p = distill_params("cab", 0.05, seed);
        p["alignment.terms"] = terms;
        p["alignment.shared_bridge"] = shared;
        p["student.init"] = init;
        runs.push_back(finished_run(p, top1 + seed));
      }
    };
    variant("B", false, "identity", 24.0);
    variant("C", false, "identity", 25.0);
    variant("B+C", true, "identity", 26.0);
    variant("B+C", false, "s4d", 21.0);
    variant("B+C", false, "identity", 27.0);
    for (std::int64_t seed : {0, 1}) runs.push_back(finished_run(distill_params("vanilla", 0.05, seed), 15.0 + seed));
    record_sweep(store, "fmnist-ablation", runs);
  }
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("table5"), data);
  EXPECT_EQ(t.row_headers, std::vector<std::string>{"Variant"});
  ASSERT_EQ(t.row_labels.size(), 7u);
  EXPECT_EQ(t.row_labels[2], std::vector<std::string>{"B only"});
  EXPECT_EQ(t.column_labels, (std::vector<std::vector<std::string>>{{"5%"}}));
  EXPECT_EQ(t.uniform_n, 2);
  EXPECT_NEAR(cell(t, {"B only"}, "5%").stats.mean, 24.5, 1e-9);
  EXPECT_NEAR(cell(t, {"C only"}, "5%").stats.mean, 25.5, 1e-9);
  EXPECT_NEAR(cell(t, {"Shared φ (φ_B ≡ φ_C)"}, "5%").stats.mean, 26.5, 1e-9);
  EXPECT_NEAR(cell(t, {"B+C, default Ā (s4d)"}, "5%").stats.mean, 21.5, 1e-9);
  EXPECT_NEAR(cell(t, {"B+C, Ā ≈ I (CAB)"}, "5%").stats.mean, 27.5, 1e-9);
  EXPECT_TRUE(cell(t, {"B+C, Ā ≈ I (CAB)"}, "5%").best);
  EXPECT_EQ(cab::report::cell_text(t.column_values[0], cell(t, {"Soft KD"}, "5%"), true), "no runs");
  const std::string md = cab::report::to_markdown(t);
  EXPECT_NE(md.find("Top-1 (%): mean ± std over 2 seeds per cell."), std::string::npos) << md;
  EXPECT_NE(md.find("| B only | 24.5 ± 0.7 |"), std::string::npos) << md;  // n is in the footnote, not each cell
}

TEST_F(TableTest, EfficiencyColumnsHaveTheirOwnMetricsAndTotalsAreSums) {
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("efficiency"), data);
  ASSERT_EQ(t.column_labels.size(), 4u);
  const auto& hours = cell(t, {"fashion-mnist", "CAB (ours)"}, "Total hours");
  EXPECT_EQ(hours.stats.n, 5);  // both students' CAB runs
  EXPECT_NEAR(cab::report::shown_value(t.column_values[3], hours.stats), 5 * 36.0 / 3600, 1e-9);
  EXPECT_EQ(cab::report::cell_text(t.column_values[3], hours, true), "0.05 (1 pending)");
  const auto& memory = cell(t, {"fashion-mnist", "CAB (ours)"}, "Peak memory (MB)");
  EXPECT_FALSE(memory.has_value());  // CPU runs record no peak memory: the cell says so
  EXPECT_EQ(cab::report::cell_text(t.column_values[0], memory, true),
            "no peak_memory_mb in 5 finished runs (1 pending)");
  EXPECT_NEAR(cell(t, {"fashion-mnist", "Vanilla"}, "ms / step").stats.mean, 12.5, 1e-9);
}

TEST_F(TableTest, FailedRunsAreListedWithTheirReasons) {
  const auto data = RunData::open(db_);
  const Table t = build_table(shipped("failed"), data);
  EXPECT_TRUE(t.listing());
  ASSERT_EQ(t.row_labels.size(), 1u);
  EXPECT_EQ(t.row_headers,
            (std::vector<std::string>{"Sweep", "Run", "Method", "Data fraction", "Seed", "Status", "Attempts", "Reason"}));
  EXPECT_EQ(t.row_labels[0][0], "fmnist-distill");
  EXPECT_EQ(t.row_labels[0][2], "soft-kd");
  EXPECT_EQ(t.row_labels[0][5], "failed");
  EXPECT_EQ(t.row_labels[0][7], "non-finite loss nan at step 12 (see results/logs/fmnist-distill/run-14.log)");
  const std::string csv = cab::report::to_csv(t);
  EXPECT_NE(csv.find("fmnist-distill,14,soft-kd,0.05,2,failed,1,non-finite loss nan at step 12"), std::string::npos)
      << csv;
}

TEST_F(TableTest, NoFailedRunsSaysSo) {
  const auto db = dir_ / "clean.sqlite";
  {
    cab::store::Store store(db);
    record_sweep(store, "ok", {finished_run(distill_params("cab", 0.1, 0), 50)});
  }
  const auto data = RunData::open(db);
  const Table t = build_table(shipped("failed"), data);
  EXPECT_TRUE(t.row_labels.empty());
  EXPECT_EQ(t.notes, std::vector<std::string>{"No failed or killed runs (of 1 run: 1 finished)."});
}
