// Helpers of the Slurm tests: tiny sweeps of the fixture plugin, cab-sweep commands, reading a plan folder.
#pragma once

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <SQLiteCpp/SQLiteCpp.h>

#include "cab/store/store.h"
#include "test_support.h"

namespace cab::test {

inline const std::string kSweepBin = std::string(CAB_TEST_BIN_DIR) + "/cab-sweep";
inline const std::string kFixturePlugins = std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures/train";

inline void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "'" << fragment << "' not in:\n" << text;
}

inline std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class SlurmSweepTest : public TempDirTest {
 protected:
  std::string db() const { return (dir_ / "db" / "cab.sqlite").string(); }
  std::string plan_dir() const { return (dir_ / "job").string(); }
  /// cab-sweep with the fixture plugins and this test's database.
  std::string sweep(const std::string& args) const {
    return kSweepBin + " -P " + kFixturePlugins + " --db " + db() + " " + args;
  }
  /// A sweep of `runs` runs (train.lr varies) of `steps` steps; `extra` goes into [base] or after it.
  std::string sweep_file(const std::string& name, int runs, int steps, const std::string& extra = "") {
    std::string lrs;
    for (int i = 0; i < runs; ++i) lrs += (i ? ", " : "") + std::to_string(0.001 * (i + 1));
    return write(name + ".toml", "[sweep]\nname = \"" + name + "\"\n[base]\ndataset.name = \"fixture-blobs\"\n"
                                 "student.name = \"fixture-mlp\"\nmethod.name = \"fixture-ce\"\nrun.device = \"cpu\"\n"
                                 "train.batch_size = 16\ntrain.steps = " + std::to_string(steps) + "\n" + extra +
                                 "\n[grid]\n\"train.lr\" = [" + lrs + "]\n")
        .string();
  }
  /// Array index -> config hash, from DIR/runs.tsv.
  std::map<int, std::string> plan_hashes() const {
    std::map<int, std::string> out;
    std::istringstream tsv(read_file(std::filesystem::path(plan_dir()) / "runs.tsv"));
    std::string line;
    std::getline(tsv, line);  // header
    while (std::getline(tsv, line)) {
      const auto tab = line.find('\t');
      out[std::stoi(line.substr(0, tab))] = line.substr(tab + 1, 64);
    }
    return out;
  }
  /// The runs of a sweep in the database, by config hash.
  std::map<std::string, store::RunRecord> runs_by_hash(store::Store& store, const std::string& name) const {
    std::map<std::string, store::RunRecord> out;
    const auto sweep = store.find_sweep(name);
    if (!sweep) return out;
    for (const auto& r : store.runs(sweep->id)) out[r.config_hash] = r;
    return out;
  }
  /// How many values of one metric a run has.
  static int metric_rows(store::Store& store, std::int64_t run_id, const std::string& key) {
    int n = 0;
    SQLite::Statement q(store.database(), "SELECT count(*) FROM metrics WHERE run_id = ? AND key = ?");
    q.bind(1, run_id);
    q.bind(2, key);
    if (q.executeStep()) n = q.getColumn(0).getInt();
    return n;
  }
};

}  // namespace cab::test
