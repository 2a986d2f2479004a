// cab-report as a user runs it: help and version, list, one table in each format to stdout or a file, all,
// --sweep and --tables, and the errors (missing, foreign or newer-schema database, unknown table or format,
// bad definitions) with exit code 2 — and the database left exactly as it was.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <fstream>
#include <sstream>

#include "report_db.h"
#include "test_support.h"

using cab::test::run_command;

namespace {

const std::string kReport = std::string(CAB_TEST_BIN_DIR) + "/cab-report";

void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "'" << fragment << "' not in:\n" << text;
}

std::string read(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class ReportCliTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = dir_ / "cab.sqlite";
    cab::test::write_demo_database(db_);
  }
  std::string report(const std::string& args) { return kReport + " --db " + db_.string() + " " + args; }
  std::filesystem::path db_;
};

}  // namespace

TEST_F(ReportCliTest, HelpAndVersion) {
  auto help = run_command(kReport + " --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* part : {"Usage: cab-report [--db FILE] --table ID [--format md|tex|csv|json|html|svg] [--out FILE]",
                           "cab-report [--db FILE] all [--out-dir DIR]", "cab-report [--db FILE] list", "--sweep arg",
                           "--tables arg", "Exit codes:", "results/cab.sqlite"})
    expect_contains(help.output, part);
  auto version = run_command(kReport + " --version");
  EXPECT_EQ(version.exit_code, 0);
  expect_contains(version.output, "cab-report 0.1.0");
  expect_contains(version.output, "run database schema 1");
}

TEST_F(ReportCliTest, ListShowsDefinitionsAndTheirRuns) {
  auto r = run_command(report("list"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "ID               KIND   TITLE / SWEEPS / RUNS");
  expect_contains(r.output, "table3           table  Table 3: top-1 accuracy (%) by fraction of the training data");
  expect_contains(r.output, "sweeps *distill*, *table3* → fmnist-distill: 26 runs: 24 finished, 1 pending, 1 failed");
  expect_contains(r.output, "figure3          steps");
  auto no_db = run_command(kReport + " --db " + (dir_ / "none.sqlite").string() + " list");
  EXPECT_EQ(no_db.exit_code, 0);
  expect_contains(no_db.output, "(no database at " + (dir_ / "none.sqlite").string() + ": run counts not shown)");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "none.sqlite"));
}

TEST_F(ReportCliTest, OneTableInEachFormat) {
  auto md = run_command(report("--table table3"));
  EXPECT_EQ(md.exit_code, 0) << md.output;
  expect_contains(md.output, "| vit → vim | Vanilla | 11.2 ± 0.6 | 15.3 ± 0.6 | 27.4 ± 0.6 | 29.2 ± 0.6 |");
  expect_contains(run_command(report("--table table3 --format tex")).output, "\\toprule");
  expect_contains(run_command(report("-t table3 -f csv")).output, "vit → vim,CAB (ours),1%,27.8000");
  expect_contains(run_command(report("--table table3 --format json")).output, "\"id\": \"table3\"");
  expect_contains(run_command(report("--table table5 --format html")).output, "data-table=\"table5\"");
  expect_contains(run_command(report("--table figure2 --format svg")).output, "<svg xmlns=");
  expect_contains(run_command(report("--table figure3 --format md")).output, "| Student layer |");

  const auto out = dir_ / "tables" / "table3.tex";
  auto file = run_command(report("--table table3 --format tex --out " + out.string()));
  EXPECT_EQ(file.exit_code, 0) << file.output;
  expect_contains(file.output, "cab-report: wrote " + out.string());
  expect_contains(read(out), "\\label{tab:table3}");
}

TEST_F(ReportCliTest, AllWritesTheReportAndLeavesTheDatabaseAsItWas) {
  const std::string before = read(db_);
  const auto dir = dir_ / "report";
  auto r = run_command(report("all --out-dir " + dir.string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "cab-report: wrote 38 files to " + dir.string());
  for (const char* name : {"report.html", "report.md", "table3.md", "table4.tex", "table5.csv", "efficiency.json",
                           "failed.md", "figure2.svg", "learning_curves.svg", "efficiency_bars.svg", "figure3.svg"})
    EXPECT_TRUE(std::filesystem::is_regular_file(dir / name)) << name;
  EXPECT_EQ(read(db_), before);
}

TEST_F(ReportCliTest, SweepsAndDefinitionsCanBeChosen) {
  auto r = run_command(report("--table table3 --sweep no-such-sweep"));
  EXPECT_EQ(r.exit_code, 0) << r.output;  // said in the output, not a crash
  expect_contains(r.output, "No sweep in the database matches 'no-such-sweep' (its sweeps: fmnist-distill, "
                            "fmnist-ablation, lm-table4).");
  r = run_command(report("--table table5 --sweep 'fmnist-*'"));
  expect_contains(r.output, "| B only | *no runs* | 24.9 ± 0.4 (n=2) | *no runs* | *no runs* |");  // one table, two sweeps
  expect_contains(r.output, "| Vanilla | 11.2 ± 0.6 (n=2) | 15.3 ± 0.4 (n=4) |");
  expect_contains(r.output, "Sweeps: fmnist-distill, fmnist-ablation (40 runs: 38 finished, 1 pending, 1 failed).");

  const auto mine = dir_ / "mine";
  std::filesystem::create_directories(mine);
  std::ofstream(mine / "by_seed.toml") << "[table]\ntitle = \"CAB by seed\"\nwhere = { \"method.name\" = \"cab\" }\n"
                                          "sweeps = \"fmnist-distill\"\n[value]\nmetric = \"best_top1\"\ndigits = 2\n"
                                          "[[row_key]]\nheader = \"Seed\"\nkey = \"run.seed\"\n[[column_key]]\n"
                                          "key = \"train.data_fraction\"\nformat = \"percent\"\n";
  r = run_command(report("--tables " + mine.string() + " --table by_seed"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "| Seed | 1% | 5% | 10% | 20% |");
  expect_contains(r.output, "| 0 | 27.90 | 27.40 | 45.50 | 46.10 |");
}

TEST_F(ReportCliTest, ErrorsSayWhatIsWrongWithExitCode2) {
  const auto missing = dir_ / "missing.sqlite";
  auto r = run_command(kReport + " --db " + missing.string() + " --table table3");
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "cab-report: no run database at '" + missing.string() + "'");
  EXPECT_FALSE(std::filesystem::exists(missing));

  const auto newer = dir_ / "newer.sqlite";
  std::filesystem::copy_file(db_, newer);
  SQLite::Database(newer.string(), SQLite::OPEN_READWRITE).exec("PRAGMA user_version = 7");
  r = run_command(kReport + " --db " + newer.string() + " all --out-dir " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "has schema version 7, newer than this cab understands (1)");

  const auto junk = write("junk.sqlite", "not a database at all, but long enough to look like one to a reader......");
  r = run_command(kReport + " --db " + junk.string() + " --table table3");
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "(is it a cab SQLite database?)");

  r = run_command(report("--table tabel3"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "cab-report: unknown table 'tabel3' (did you mean 'table3'?); the defined tables and "
                            "figures are: table3, table4,");
  r = run_command(report("--table table3 --format pdf"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "unknown format 'pdf' (md, tex, csv, json, html, svg)");
  r = run_command(report("--table table3 --format svg"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "'table3' is a table: svg is for figures");
  r = run_command(report("everything"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "unknown command 'everything' (commands: all, list; or --table ID)");
  EXPECT_EQ(run_command(report("")).exit_code, 2);
  EXPECT_EQ(run_command(report("all --table table3")).exit_code, 2);
  EXPECT_EQ(run_command(report("--no-such-flag")).exit_code, 2);

  const auto bad = dir_ / "bad";
  std::filesystem::create_directories(bad);
  std::ofstream(bad / "t.toml") << "[table]\n[value]\nmetric = \"top1\"\ndigts = 2\n";
  r = run_command(report("--tables " + bad.string() + " list"));
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, (bad / "t.toml").string() + ":4:1: unknown key 'digts' in [value] (did you mean 'digits'?)");
}
