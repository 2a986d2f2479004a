// The run store: one SQLite database (default results/cab.sqlite) holding sweeps, runs and their status,
// parameters, metrics, summaries and provenance. WAL, busy timeout, foreign keys, BEGIN IMMEDIATE writes,
// schema version in PRAGMA user_version with migrations; a database newer than this code is refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cab/export.h"
#include "cab/sweep/expand.h"
#include "cab/sweep/sweep_file.h"

namespace SQLite {
class Database;
}

namespace cab::store {

enum class Status { pending, running, finished, failed, killed };
CAB_API std::string_view to_string(Status status);
CAB_API std::optional<Status> status_from_string(std::string_view name);

struct CAB_API SweepRecord {
  std::int64_t id = 0;
  std::string name, file_path, file_sha256, file_text, created;
};

struct CAB_API RunRecord {
  std::int64_t id = 0, sweep_id = 0, position = 0;
  std::string config_hash, config_toml;
  Status status = Status::pending;
  int attempts = 0;
  std::string worker, gpu, error, started, ended;
  std::optional<int> exit_code;
  double heartbeat = 0;  ///< unix time of the last sign of life
};

struct CAB_API Metric {
  std::int64_t run_id;
  std::string key;
  std::int64_t step;
  double value;
  double wall_time;  ///< seconds since the run started
};

/// One task's result database (`cab-sweep run-one` on a cluster node): the same schema as the main store,
/// holding one sweep and one run that has ended.
struct CAB_API ResultFile {
  std::string sweep_name, sweep_sha256;
  RunRecord run;
  std::map<std::string, std::string> summary, provenance;
  std::vector<Metric> metrics;  ///< run_id 0
};

/// What merge_result did with a result.
enum class MergeAction {
  merged,         ///< the run now holds the result
  unchanged,      ///< the run already held this very result (collecting twice)
  kept_finished,  ///< the run had finished already; an unfinished or other result does not replace it
  running,        ///< the run is running under a local host; left alone
};

/// What freeze_sweep did.
struct CAB_API FreezeResult {
  std::int64_t sweep_id = 0;
  std::size_t added = 0;  ///< runs inserted now
  bool existed = false;   ///< the sweep was already in the store
};

class CAB_API Store {
 public:
  static constexpr int kSchemaVersion = 1;

  /// Opens or creates the database (and its folder). Throws cab::Error naming the file when it cannot be
  /// opened, is not a SQLite database, or has a newer schema than this cab.
  explicit Store(const std::filesystem::path& file);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::filesystem::path& path() const { return path_; }
  int schema_version() const;

  /// Records the sweep and its expanded runs (status pending), once. Running the same file again adds
  /// nothing. A changed file is refused unless `replan`, which records the new text and adds the runs
  /// whose config hash is new (existing runs keep their status).
  FreezeResult freeze_sweep(const sweep::SweepFile& file, const std::vector<sweep::RunSpec>& runs, bool replan);
  std::optional<SweepRecord> find_sweep(const std::string& name) const;
  std::vector<SweepRecord> sweeps() const;

  std::vector<RunRecord> runs(std::int64_t sweep_id) const;
  std::optional<RunRecord> run(std::int64_t run_id) const;
  std::map<std::string, std::string> params(std::int64_t run_id) const;
  std::map<std::string, std::string> summary(std::int64_t run_id) const;

  /// Atomically takes the first pending run (by position) of the sweep, not in `skip`, and marks it running.
  std::optional<RunRecord> claim_next(std::int64_t sweep_id, const std::string& worker, const std::string& gpu,
                                      const std::set<std::int64_t>& skip = {});
  /// Marks a claimed run's fresh attempt: clears metrics and summary of earlier attempts.
  void begin_attempt(std::int64_t run_id);
  void heartbeat(const std::vector<std::int64_t>& run_ids);
  void finish(std::int64_t run_id, const std::map<std::string, std::string>& summary);
  /// Ends a run as failed or killed, with the reason.
  void end(std::int64_t run_id, Status status, const std::string& error, std::optional<int> exit_code);
  /// Sets runs of the sweep with the given statuses back to pending; returns how many.
  int requeue(std::int64_t sweep_id, const std::set<Status>& from);
  /// Running runs whose worker process on this host is gone, or whose heartbeat is older than
  /// `stale_after_s`, go back to pending. Returns how many.
  int recover_stale(double stale_after_s, const std::string& this_host);

  /// Inserts metrics in one transaction (a repeated (run, key, step) replaces the earlier value).
  void add_metrics(const std::vector<Metric>& metrics);
  /// Sets how many attempts a run has had (a task's fresh store continues the count of earlier tasks).
  void set_attempts(std::int64_t run_id, int attempts);
  /// After an attempt that resumed from a checkpoint at `before_step`: adds the earlier attempt's metrics of
  /// the steps before it and the summary values this run lacks (e.g. the teacher's accuracy, measured once).
  void carry_forward(std::int64_t run_id, const ResultFile& earlier, std::int64_t before_step);
  /// Puts a task's result into run `run_id` (the same config hash): status, attempts, times, worker, error,
  /// metrics, summary and provenance. Idempotent: the same result again changes nothing.
  MergeAction merge_result(std::int64_t run_id, const ResultFile& result);
  /// Writes a compact, self-contained copy (rollback journal, no -wal file) to `file`, atomically: it is
  /// written as FILE.partial and renamed, so `file` is never seen half written.
  void export_to(const std::filesystem::path& file) const;
  std::int64_t metric_count(std::int64_t run_id) const;
  void set_provenance(std::int64_t run_id, const std::map<std::string, std::string>& fields);
  std::map<std::string, std::string> provenance(std::int64_t run_id) const;

  std::map<Status, int> counts(std::int64_t sweep_id) const;
  /// "ok", or what PRAGMA integrity_check reports.
  std::string integrity_check() const;

  SQLite::Database& database() { return *db_; }

 private:
  void migrate();
  std::filesystem::path path_;
  std::unique_ptr<SQLite::Database> db_;
};

/// Reads a task's result database, read-only. Throws cab::Error saying why it is not a complete result:
/// unreadable, truncated or corrupt, another schema version, not one sweep with one run, or a run that never
/// ended (its task was killed while running). `with_rows = false` reads the sweep and run records only.
CAB_API ResultFile read_result_file(const std::filesystem::path& file, bool with_rows = true);

/// Seconds since the epoch, as a double.
CAB_API double unix_time();
/// "2026-11-23T18:05:00Z"
CAB_API std::string utc_timestamp();

}  // namespace cab::store
