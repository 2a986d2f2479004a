// The run store: schema and pragmas, refusing newer schemas, claiming, status lifecycle, recovery, metrics,
// and many processes writing at once without "database is locked".
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include "cab/store/store.h"
#include "cab/util/error.h"
#include "cab/sweep/sweep_file.h"
#include "test_support.h"

using cab::store::Status;
using cab::store::Store;

namespace {

class StoreTest : public cab::test::TempDirTest {
 protected:
  std::int64_t freeze(Store& store, int runs, const std::string& name = "s") {
    cab::sweep::SweepFile file;
    file.name = name;
    file.path = name + ".toml";
    file.text = "text of " + name;
    file.sha256 = "sha-" + name;
    std::vector<cab::sweep::RunSpec> specs;
    for (int i = 0; i < runs; ++i) {
      cab::sweep::RunSpec spec;
      spec.position = i;
      spec.config_hash = "hash" + std::to_string(i);
      spec.params["train.steps"] = std::int64_t{i};
      specs.push_back(spec);
    }
    return store.freeze_sweep(file, specs, false).sweep_id;
  }
};

}  // namespace

TEST_F(StoreTest, CreatesTheSchemaWithThePragmas) {
  Store store(dir_ / "sub" / "cab.sqlite");
  EXPECT_EQ(store.schema_version(), Store::kSchemaVersion);
  auto& db = store.database();
  EXPECT_EQ(db.execAndGet("PRAGMA journal_mode").getString(), "wal");
  EXPECT_EQ(db.execAndGet("PRAGMA foreign_keys").getInt(), 1);
  EXPECT_EQ(db.execAndGet("PRAGMA synchronous").getInt(), 1);  // NORMAL
  EXPECT_EQ(store.integrity_check(), "ok");
  for (const char* table : {"sweeps", "runs", "params", "metrics", "summary", "provenance"})
    EXPECT_EQ(db.execAndGet(std::string("SELECT count(*) FROM sqlite_master WHERE name = '") + table + "'").getInt(), 1);
}

TEST_F(StoreTest, RefusesANewerSchemaAndNonDatabases) {
  {
    Store store(dir_ / "cab.sqlite");
    store.database().exec("PRAGMA user_version = 99");
  }
  try {
    Store again(dir_ / "cab.sqlite");
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("schema version 99, newer than this cab understands (1)"), std::string::npos)
        << e.what();
  }
  const auto junk = write("junk.sqlite", "this is not a database, just text that is long enough to have a header....");
  EXPECT_THROW(Store{junk}, cab::Error);
}

TEST_F(StoreTest, FreezingIsIdempotentAndAChangedFileNeedsReplan) {
  Store store(dir_ / "cab.sqlite");
  const auto id = freeze(store, 3);
  EXPECT_EQ(store.runs(id).size(), 3u);
  EXPECT_EQ(store.params(store.runs(id)[1].id).at("train.steps"), "1");
  EXPECT_EQ(freeze(store, 3), id);
  EXPECT_EQ(store.runs(id).size(), 3u);
  cab::sweep::SweepFile edited;
  edited.name = "s";
  edited.path = "s.toml";
  edited.text = "edited";
  edited.sha256 = "other-sha";
  std::vector<cab::sweep::RunSpec> specs(4);
  for (int i = 0; i < 4; ++i) specs[i].config_hash = "hash" + std::to_string(i);
  EXPECT_THROW(store.freeze_sweep(edited, specs, false), cab::ConfigError);
  EXPECT_EQ(store.runs(id).size(), 3u);  // nothing changed
  const auto result = store.freeze_sweep(edited, specs, true);
  EXPECT_EQ(result.added, 1u);
  EXPECT_EQ(store.runs(id).size(), 4u);
}

TEST_F(StoreTest, ClaimFinishFailRequeue) {
  Store store(dir_ / "cab.sqlite");
  const auto id = freeze(store, 3);
  auto a = store.claim_next(id, "host:1", "0");
  auto b = store.claim_next(id, "host:1", "1");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->position, 0);
  EXPECT_EQ(b->position, 1);
  EXPECT_EQ(a->status, Status::running);
  store.add_metrics({{a->id, "loss", 0, 1.5, 0.1}, {a->id, "loss", 1, 1.0, 0.2}, {a->id, "loss", 1, 0.9, 0.3}});
  EXPECT_EQ(store.metric_count(a->id), 2);  // (run, key, step) is unique: a repeat replaces
  store.finish(a->id, {{"final_loss", "0.9"}});
  store.end(b->id, Status::failed, "crashed: Segmentation fault (signal 11)", std::nullopt);
  auto c = store.claim_next(id, "host:1", "0");
  ASSERT_TRUE(c);
  EXPECT_FALSE(store.claim_next(id, "host:1", "0"));
  EXPECT_EQ(store.run(a->id)->status, Status::finished);
  EXPECT_EQ(store.summary(a->id).at("final_loss"), "0.9");
  EXPECT_EQ(store.run(b->id)->error, "crashed: Segmentation fault (signal 11)");
  EXPECT_EQ(store.requeue(id, {Status::failed}), 1);
  auto again = store.claim_next(id, "host:1", "0");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, b->id);
  EXPECT_EQ(again->attempts, 2);
  const auto counts = store.counts(id);
  EXPECT_EQ(counts.at(Status::finished), 1);
  EXPECT_EQ(counts.at(Status::running), 2);
}

TEST_F(StoreTest, RecoversRunsOfADeadHostAndStaleHeartbeats) {
  Store store(dir_ / "cab.sqlite");
  const auto id = freeze(store, 3);
  auto mine = store.claim_next(id, "thishost:999999999", "");  // no such pid
  auto alive = store.claim_next(id, "thishost:" + std::to_string(getpid()), "");
  auto remote = store.claim_next(id, "otherhost:1", "");
  store.database().exec("UPDATE runs SET heartbeat = heartbeat - 1000 WHERE id = " + std::to_string(remote->id));
  EXPECT_EQ(store.recover_stale(600, "thishost"), 2);
  EXPECT_EQ(store.run(mine->id)->status, Status::pending);
  EXPECT_EQ(store.run(alive->id)->status, Status::running);
  EXPECT_EQ(store.run(remote->id)->status, Status::pending);
}

TEST_F(StoreTest, SixteenProcessesWriteAtOnceWithoutLockErrors) {
  const auto path = dir_ / "cab.sqlite";
  std::vector<std::int64_t> run_ids;
  {
    Store store(path);
    const auto id = freeze(store, 16);
    for (const auto& r : store.runs(id)) run_ids.push_back(r.id);
  }
  constexpr int kProcesses = 16, kBatches = 40, kPerBatch = 250;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = fork();
    if (pid == 0) {
      int code = 0;
      try {
        Store store(path);
        for (int b = 0; b < kBatches; ++b) {
          std::vector<cab::store::Metric> batch;
          for (int i = 0; i < kPerBatch; ++i) batch.push_back({run_ids[p], "loss", b * kPerBatch + i, 1.0 / (i + 1), 0.0});
          store.add_metrics(batch);
          store.heartbeat({run_ids[p]});
        }
      } catch (const std::exception& e) {
        fprintf(stderr, "writer %d: %s\n", p, e.what());
        code = 1;
      }
      _exit(code);
    }
    pids.push_back(pid);
  }
  int failures = 0;
  for (auto pid : pids) failures += cab::test::wait_command(pid) != 0;
  EXPECT_EQ(failures, 0);
  Store store(path);
  for (auto id : run_ids) EXPECT_EQ(store.metric_count(id), kBatches * kPerBatch);
  EXPECT_EQ(store.integrity_check(), "ok");
}
