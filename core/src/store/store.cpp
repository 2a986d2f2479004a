// SQLite run store on SQLiteCpp: schema, pragmas, migrations, claiming, metrics.
#include "cab/store/store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <chrono>
#include <ctime>

#include "cab/util/error.h"

namespace cab::store {

namespace {

// Migrations: element i upgrades schema version i to i + 1.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE sweeps(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  file_path TEXT NOT NULL,
  file_text TEXT NOT NULL,
  file_sha256 TEXT NOT NULL,
  created TEXT NOT NULL,
  updated TEXT NOT NULL);
CREATE TABLE runs(
  id INTEGER PRIMARY KEY,
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  config_hash TEXT NOT NULL,
  config_toml TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','running','finished','failed','killed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  created TEXT NOT NULL,
  started TEXT,
  ended TEXT,
  heartbeat REAL,
  worker TEXT,
  gpu TEXT,
  exit_code INTEGER,
  error TEXT,
  UNIQUE (sweep_id, config_hash));
CREATE INDEX runs_by_status ON runs(sweep_id, status, position);
CREATE TABLE params(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run_id, key)) WITHOUT ROWID;
CREATE TABLE metrics(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  step INTEGER NOT NULL,
  value REAL,
  wall_time REAL NOT NULL,
  PRIMARY KEY (run_id, key, step)) WITHOUT ROWID;
CREATE TABLE summary(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run_id, key)) WITHOUT ROWID;
CREATE TABLE provenance(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (run_id, key)) WITHOUT ROWID;
)sql",
};
constexpr int kMigrationCount = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kMigrationCount == Store::kSchemaVersion, "one migration per schema version");

RunRecord read_run(SQLite::Statement& q) {
  RunRecord r;
  r.id = q.getColumn(0).getInt64();
  r.sweep_id = q.getColumn(1).getInt64();
  r.position = q.getColumn(2).getInt64();
  r.config_hash = q.getColumn(3).getString();
  r.config_toml = q.getColumn(4).getString();
  r.status = status_from_string(q.getColumn(5).getString()).value_or(Status::pending);
  r.attempts = q.getColumn(6).getInt();
  r.worker = q.getColumn(7).getString();
  r.gpu = q.getColumn(8).getString();
  r.error = q.getColumn(9).getString();
  r.started = q.getColumn(10).getString();
  r.ended = q.getColumn(11).getString();
  if (!q.getColumn(12).isNull()) r.exit_code = q.getColumn(12).getInt();
  r.heartbeat = q.getColumn(13).getDouble();
  return r;
}
constexpr const char* kRunColumns =
    "id, sweep_id, position, config_hash, config_toml, status, attempts, coalesce(worker,''), coalesce(gpu,''), "
    "coalesce(error,''), coalesce(started,''), coalesce(ended,''), exit_code, coalesce(heartbeat,0)";

std::map<std::string, std::string> key_values(SQLite::Database& db, const char* table, std::int64_t run_id) {
  SQLite::Statement q(db, fmt::format("SELECT key, value FROM {} WHERE run_id = ?", table));
  q.bind(1, run_id);
  std::map<std::string, std::string> out;
  while (q.executeStep()) out[q.getColumn(0).getString()] = q.getColumn(1).getString();
  return out;
}

// Inserts metrics (NaN/Inf as NULL) inside the caller's transaction; `run_id` >= 0 overrides theirs.
// `conflict`: "REPLACE" (a repeated (run, key, step) replaces the earlier value) or "IGNORE" (keeps it).
void insert_metrics(SQLite::Database& db, const std::vector<Metric>& metrics, const char* conflict,
                    std::int64_t run_id = -1) {
  SQLite::Statement q(db, fmt::format("INSERT OR {} INTO metrics(run_id, key, step, value, wall_time) "
                                      "VALUES (?, ?, ?, ?, ?)",
                                      conflict));
  for (const auto& m : metrics) {
    q.bind(1, run_id >= 0 ? run_id : m.run_id);
    q.bind(2, m.key);
    q.bind(3, m.step);
    if (std::isfinite(m.value)) q.bind(4, m.value);
    else q.bind(4);
    q.bind(5, m.wall_time);
    q.exec();
    q.reset();
  }
}

// Inserts key = value rows of a run into `table` (summary, provenance) inside the caller's transaction.
void insert_key_values(SQLite::Database& db, const char* table, std::int64_t run_id,
                       const std::map<std::string, std::string>& values, const char* conflict) {
  SQLite::Statement q(db, fmt::format("INSERT OR {} INTO {}(run_id, key, value) VALUES (?, ?, ?)", conflict, table));
  for (const auto& [k, v] : values) {
    q.bind(1, run_id);
    q.bind(2, k);
    q.bind(3, v);
    q.exec();
    q.reset();
  }
}

}  // namespace

std::string_view to_string(Status status) {
  switch (status) {
    case Status::pending: return "pending";
    case Status::running: return "running";
    case Status::finished: return "finished";
    case Status::failed: return "failed";
    case Status::killed: return "killed";
  }
  return "?";
}

std::optional<Status> status_from_string(std::string_view name) {
  for (auto s : {Status::pending, Status::running, Status::finished, Status::failed, Status::killed})
    if (to_string(s) == name) return s;
  return std::nullopt;
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

Store::Store(const std::filesystem::path& file) : path_(file) {
  std::error_code ec;
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ec);
  try {
    db_ = std::make_unique<SQLite::Database>(file.string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db_->setBusyTimeout(60000);
    db_->exec("PRAGMA journal_mode = WAL");
    db_->exec("PRAGMA synchronous = NORMAL");
    db_->exec("PRAGMA foreign_keys = ON");
    migrate();
  } catch (const SQLite::Exception& e) {
    throw Error(fmt::format("run store '{}': {} (is it a cab SQLite database?)", file.string(), e.what()));
  }
}

Store::~Store() = default;

int Store::schema_version() const { return db_->execAndGet("PRAGMA user_version").getInt(); }

void Store::migrate() {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  const int version = schema_version();
  if (version > kSchemaVersion) {
    throw Error(fmt::format("run store '{}' has schema version {}, newer than this cab understands ({}); use a "
                            "newer cab, or another --db",
                            path_.string(), version, kSchemaVersion));
  }
  for (int v = version; v < kSchemaVersion; ++v) db_->exec(kMigrations[v]);
  if (version != kSchemaVersion) db_->exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion));
  tx.commit();
}

FreezeResult Store::freeze_sweep(const sweep::SweepFile& file, const std::vector<sweep::RunSpec>& runs, bool replan) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  FreezeResult result;
  const std::string now = utc_timestamp();
  SQLite::Statement find(*db_, "SELECT id, file_sha256 FROM sweeps WHERE name = ?");
  find.bind(1, file.name);
  if (find.executeStep()) {
    result.existed = true;
    result.sweep_id = find.getColumn(0).getInt64();
    const std::string sha = find.getColumn(1).getString();
    if (sha != file.sha256) {
      if (!replan) {
        throw ConfigError(fmt::format("{}: sweep '{}' is already in {} from a different version of this file "
                                      "(sha256 {} there, {} now); its frozen run list is unchanged. Rerun with "
                                      "--replan to add the new runs, or rename the sweep",
                                      file.path, file.name, path_.string(), sha.substr(0, 12),
                                      file.sha256.substr(0, 12)));
      }
      SQLite::Statement update(*db_, "UPDATE sweeps SET file_text = ?, file_sha256 = ?, file_path = ?, updated = ? "
                                     "WHERE id = ?");
      update.bind(1, file.text);
      update.bind(2, file.sha256);
      update.bind(3, file.path);
      update.bind(4, now);
      update.bind(5, result.sweep_id);
      update.exec();
    } else {
      tx.commit();
      return result;  // the frozen list stands
    }
  } else {
    SQLite::Statement insert(*db_, "INSERT INTO sweeps(name, file_path, file_text, file_sha256, created, updated) "
                                   "VALUES (?, ?, ?, ?, ?, ?)");
    insert.bind(1, file.name);
    insert.bind(2, file.path);
    insert.bind(3, file.text);
    insert.bind(4, file.sha256);
    insert.bind(5, now);
    insert.bind(6, now);
    insert.exec();
    result.sweep_id = db_->getLastInsertRowid();
  }
  std::int64_t next_position = db_->execAndGet(
      fmt::format("SELECT coalesce(max(position) + 1, 0) FROM runs WHERE sweep_id = {}", result.sweep_id)).getInt64();
  SQLite::Statement insert_run(*db_, "INSERT OR IGNORE INTO runs(sweep_id, position, config_hash, config_toml, created) "
                                     "VALUES (?, ?, ?, ?, ?)");
  SQLite::Statement insert_param(*db_, "INSERT INTO params(run_id, key, value) VALUES (?, ?, ?)");
  for (const auto& run : runs) {
    insert_run.bind(1, result.sweep_id);
    insert_run.bind(2, next_position);
    insert_run.bind(3, run.config_hash);
    insert_run.bind(4, sweep::to_toml_document(run.params));
    insert_run.bind(5, now);
    const int changed = insert_run.exec();
    insert_run.reset();
    if (changed == 0) continue;  // already there (replan)
    ++next_position;
    ++result.added;
    const std::int64_t run_id = db_->getLastInsertRowid();
    for (const auto& [key, value] : run.params) {
      insert_param.bind(1, run_id);
      insert_param.bind(2, key);
      insert_param.bind(3, config::to_toml(value));
      insert_param.exec();
      insert_param.reset();
    }
  }
  tx.commit();
  return result;
}

std::optional<SweepRecord> Store::find_sweep(const std::string& name) const {
  SQLite::Statement q(*db_, "SELECT id, name, file_path, file_sha256, file_text, created FROM sweeps WHERE name = ?");
  q.bind(1, name);
  if (!q.executeStep()) return std::nullopt;
  return SweepRecord{q.getColumn(0).getInt64(), q.getColumn(1).getString(), q.getColumn(2).getString(),
                     q.getColumn(3).getString(), q.getColumn(4).getString(), q.getColumn(5).getString()};
}

std::vector<SweepRecord> Store::sweeps() const {
  SQLite::Statement q(*db_, "SELECT id, name, file_path, file_sha256, '', created FROM sweeps ORDER BY id");
  std::vector<SweepRecord> out;
  while (q.executeStep())
    out.push_back({q.getColumn(0).getInt64(), q.getColumn(1).getString(), q.getColumn(2).getString(),
                   q.getColumn(3).getString(), q.getColumn(4).getString(), q.getColumn(5).getString()});
  return out;
}

std::vector<RunRecord> Store::runs(std::int64_t sweep_id) const {
  SQLite::Statement q(*db_, fmt::format("SELECT {} FROM runs WHERE sweep_id = ? ORDER BY position", kRunColumns));
  q.bind(1, sweep_id);
  std::vector<RunRecord> out;
  while (q.executeStep()) out.push_back(read_run(q));
  return out;
}

std::optional<RunRecord> Store::run(std::int64_t run_id) const {
  SQLite::Statement q(*db_, fmt::format("SELECT {} FROM runs WHERE id = ?", kRunColumns));
  q.bind(1, run_id);
  if (!q.executeStep()) return std::nullopt;
  return read_run(q);
}

std::map<std::string, std::string> Store::params(std::int64_t run_id) const { return key_values(*db_, "params", run_id); }
std::map<std::string, std::string> Store::summary(std::int64_t run_id) const { return key_values(*db_, "summary", run_id); }
std::map<std::string, std::string> Store::provenance(std::int64_t run_id) const {
  return key_values(*db_, "provenance", run_id);
}

std::optional<RunRecord> Store::claim_next(std::int64_t sweep_id, const std::string& worker, const std::string& gpu,
                                           const std::set<std::int64_t>& skip) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  SQLite::Statement q(*db_, fmt::format("SELECT {} FROM runs WHERE sweep_id = ? AND status = 'pending' "
                                        "ORDER BY position",
                                        kRunColumns));
  q.bind(1, sweep_id);
  std::optional<RunRecord> claimed;
  while (q.executeStep()) {
    RunRecord r = read_run(q);
    if (!skip.count(r.id)) {
      claimed = r;
      break;
    }
  }
  if (!claimed) return std::nullopt;
  q.reset();
  SQLite::Statement update(*db_, "UPDATE runs SET status = 'running', attempts = attempts + 1, started = ?, ended = "
                                 "NULL, heartbeat = ?, worker = ?, gpu = ?, error = NULL, exit_code = NULL "
                                 "WHERE id = ? AND status = 'pending'");
  update.bind(1, utc_timestamp());
  update.bind(2, unix_time());
  update.bind(3, worker);
  update.bind(4, gpu);
  update.bind(5, claimed->id);
  if (update.exec() != 1) return std::nullopt;
  tx.commit();
  claimed->status = Status::running;
  claimed->attempts += 1;
  claimed->worker = worker;
  claimed->gpu = gpu;
  return claimed;
}

void Store::begin_attempt(std::int64_t run_id) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  for (const char* table : {"metrics", "summary", "provenance"}) {
    SQLite::Statement del(*db_, fmt::format("DELETE FROM {} WHERE run_id = ?", table));
    del.bind(1, run_id);
    del.exec();
  }
  tx.commit();
}

void Store::heartbeat(const std::vector<std::int64_t>& run_ids) {
  if (run_ids.empty()) return;
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  SQLite::Statement q(*db_, "UPDATE runs SET heartbeat = ? WHERE id = ? AND status = 'running'");
  const double now = unix_time();
  for (auto id : run_ids) {
    q.bind(1, now);
    q.bind(2, id);
    q.exec();
    q.reset();
  }
  tx.commit();
}

void Store::finish(std::int64_t run_id, const std::map<std::string, std::string>& summary) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  insert_key_values(*db_, "summary", run_id, summary, "REPLACE");
  SQLite::Statement q(*db_, "UPDATE runs SET status = 'finished', ended = ?, exit_code = 0, error = NULL WHERE id = ?");
  q.bind(1, utc_timestamp());
  q.bind(2, run_id);
  q.exec();
  tx.commit();
}

void Store::end(std::int64_t run_id, Status status, const std::string& error, std::optional<int> exit_code) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  SQLite::Statement q(*db_, "UPDATE runs SET status = ?, ended = ?, error = ?, exit_code = ? WHERE id = ?");
  q.bind(1, std::string(to_string(status)));
  q.bind(2, utc_timestamp());
  q.bind(3, error);
  if (exit_code) q.bind(4, *exit_code);
  else q.bind(4);
  q.bind(5, run_id);
  q.exec();
  tx.commit();
}

int Store::requeue(std::int64_t sweep_id, const std::set<Status>& from) {
  if (from.empty()) return 0;
  std::string list;
  for (auto s : from) list += fmt::format("{}'{}'", list.empty() ? "" : ",", to_string(s));
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  const int n = db_->exec(fmt::format("UPDATE runs SET status = 'pending' WHERE sweep_id = {} AND status IN ({})",
                                      sweep_id, list));
  tx.commit();
  return n;
}

int Store::recover_stale(double stale_after_s, const std::string& this_host) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  SQLite::Statement q(*db_, "SELECT id, coalesce(worker,''), coalesce(heartbeat,0) FROM runs WHERE status = 'running'");
  std::vector<std::int64_t> stale;
  const double now = unix_time();
  while (q.executeStep()) {
    const std::string worker = q.getColumn(1).getString();
    bool gone = q.getColumn(2).getDouble() < now - stale_after_s;
    const auto colon = worker.rfind(':');
    if (!gone && colon != std::string::npos && worker.substr(0, colon) == this_host) {
      const long pid = std::strtol(worker.c_str() + colon + 1, nullptr, 10);
      gone = pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    if (gone) stale.push_back(q.getColumn(0).getInt64());
  }
  SQLite::Statement up(*db_, "UPDATE runs SET status = 'pending', error = 'recovered: its host process had stopped' "
                             "WHERE id = ?");
  for (auto id : stale) {
    up.bind(1, id);
    up.exec();
    up.reset();
  }
  tx.commit();
  return static_cast<int>(stale.size());
}

void Store::add_metrics(const std::vector<Metric>& metrics) {
  if (metrics.empty()) return;
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  insert_metrics(*db_, metrics, "REPLACE");
  tx.commit();
}

std::int64_t Store::metric_count(std::int64_t run_id) const {
  SQLite::Statement q(*db_, "SELECT count(*) FROM metrics WHERE run_id = ?");
  q.bind(1, run_id);
  q.executeStep();
  return q.getColumn(0).getInt64();
}

void Store::set_provenance(std::int64_t run_id, const std::map<std::string, std::string>& fields) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  insert_key_values(*db_, "provenance", run_id, fields, "REPLACE");
  tx.commit();
}

std::map<Status, int> Store::counts(std::int64_t sweep_id) const {
  SQLite::Statement q(*db_, "SELECT status, count(*) FROM runs WHERE sweep_id = ? GROUP BY status");
  q.bind(1, sweep_id);
  std::map<Status, int> out;
  while (q.executeStep()) out[status_from_string(q.getColumn(0).getString()).value_or(Status::pending)] = q.getColumn(1).getInt();
  return out;
}

void Store::set_attempts(std::int64_t run_id, int attempts) {
  SQLite::Statement q(*db_, "UPDATE runs SET attempts = ? WHERE id = ?");
  q.bind(1, attempts);
  q.bind(2, run_id);
  q.exec();
}

void Store::carry_forward(std::int64_t run_id, const ResultFile& earlier, std::int64_t before_step) {
  std::vector<Metric> before;  // the steps after it were redone by the resumed attempt
  for (const auto& m : earlier.metrics)
    if (m.step < before_step) before.push_back(m);
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  insert_metrics(*db_, before, "IGNORE", run_id);
  insert_key_values(*db_, "summary", run_id, earlier.summary, "IGNORE");
  tx.commit();
}

MergeAction Store::merge_result(std::int64_t run_id, const ResultFile& result) {
  SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
  const auto here = run(run_id);
  if (!here) throw Error(fmt::format("run store '{}': no run {}", path_.string(), run_id));
  const auto& r = result.run;
  if (here->status == r.status && here->attempts == r.attempts && here->ended == r.ended) return MergeAction::unchanged;
  if (here->status == Status::finished) return MergeAction::kept_finished;
  if (here->status == Status::running) return MergeAction::running;
  SQLite::Statement update(*db_, "UPDATE runs SET status = ?, attempts = ?, started = ?, ended = ?, heartbeat = ?, "
                                 "worker = ?, gpu = ?, exit_code = ?, error = ? WHERE id = ?");
  update.bind(1, std::string(to_string(r.status)));
  update.bind(2, r.attempts);
  update.bind(3, r.started);
  update.bind(4, r.ended);
  update.bind(5, r.heartbeat);
  update.bind(6, r.worker);
  update.bind(7, r.gpu);
  if (r.exit_code) update.bind(8, *r.exit_code);
  else update.bind(8);
  if (r.error.empty()) update.bind(9);
  else update.bind(9, r.error);
  update.bind(10, run_id);
  update.exec();
  for (const char* table : {"metrics", "summary", "provenance"}) {
    SQLite::Statement del(*db_, fmt::format("DELETE FROM {} WHERE run_id = ?", table));
    del.bind(1, run_id);
    del.exec();
  }
  insert_key_values(*db_, "summary", run_id, result.summary, "REPLACE");
  insert_key_values(*db_, "provenance", run_id, result.provenance, "REPLACE");
  insert_metrics(*db_, result.metrics, "REPLACE", run_id);
  tx.commit();
  return MergeAction::merged;
}

void Store::export_to(const std::filesystem::path& file) const {
  const std::string partial = file.string() + ".partial";
  ::unlink(partial.c_str());
  try {
    SQLite::Statement vacuum(*db_, "VACUUM INTO ?");
    vacuum.bind(1, partial);
    vacuum.exec();
    SQLite::Database copy(partial, SQLite::OPEN_READWRITE);
    copy.exec("PRAGMA journal_mode = DELETE");
  } catch (const SQLite::Exception& e) {
    throw Error(fmt::format("cannot write '{}': {}", partial, e.what()));
  }
  const int fd = ::open(partial.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  std::filesystem::rename(partial, file, ec);
  if (ec) throw Error(fmt::format("cannot rename '{}' to '{}': {}", partial, file.string(), ec.message()));
}

std::string Store::integrity_check() const { return db_->execAndGet("PRAGMA integrity_check").getString(); }

ResultFile read_result_file(const std::filesystem::path& file, bool with_rows) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) throw Error(fmt::format("'{}': no such file", file.string()));
  ResultFile out;
  try {
    SQLite::Database db(file.string(), SQLite::OPEN_READONLY);
    const std::string check = db.execAndGet("PRAGMA quick_check").getString();
    if (check != "ok") throw Error(fmt::format("'{}': corrupt ({})", file.string(), check));
    const int version = db.execAndGet("PRAGMA user_version").getInt();
    if (version != Store::kSchemaVersion) {
      throw Error(fmt::format("'{}': schema version {}, expected {} (an empty or truncated file, or another cab)",
                              file.string(), version, Store::kSchemaVersion));
    }
    SQLite::Statement sweeps(db, "SELECT name, file_sha256 FROM sweeps");
    int n = 0;
    while (sweeps.executeStep()) {
      out.sweep_name = sweeps.getColumn(0).getString();
      out.sweep_sha256 = sweeps.getColumn(1).getString();
      ++n;
    }
    SQLite::Statement runs(db, fmt::format("SELECT {} FROM runs", kRunColumns));
    int m = 0;
    while (runs.executeStep()) {
      out.run = read_run(runs);
      ++m;
    }
    if (n != 1 || m != 1) {
      throw Error(fmt::format("'{}': {} sweeps and {} runs; a task's result holds one of each", file.string(), n, m));
    }
    if (out.run.status == Status::pending || out.run.status == Status::running) {
      throw Error(fmt::format("'{}': its run never ended (status {}): the task was killed before it could record "
                              "how the run ended",
                              file.string(), to_string(out.run.status)));
    }
    if (!with_rows) return out;
    out.summary = key_values(db, "summary", out.run.id);
    out.provenance = key_values(db, "provenance", out.run.id);
    SQLite::Statement q(db, "SELECT key, step, value, wall_time FROM metrics WHERE run_id = ?");
    q.bind(1, out.run.id);
    while (q.executeStep()) {
      out.metrics.push_back({0, q.getColumn(0).getString(), q.getColumn(1).getInt64(),
                             q.getColumn(2).isNull() ? NAN : q.getColumn(2).getDouble(), q.getColumn(3).getDouble()});
    }
  } catch (const SQLite::Exception& e) {
    throw Error(fmt::format("'{}': not a complete cab result database ({})", file.string(), e.what()));
  }
  return out;
}

}  // namespace cab::store
