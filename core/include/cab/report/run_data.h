// The run database as cab-report sees it: sweeps, runs with status, parameters and numeric summaries, loaded
// read-only into memory in a few full-table reads; per-step metrics are read on demand, per run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cab/export.h"
#include "cab/report/error.h"
#include "cab/store/store.h"

namespace cab::report {

/// One parameter value as the store holds it (TOML text), ready to display, compare and sort.
struct CAB_API ParamValue {
  std::string text;              ///< display form: strings without their quotes, numbers and booleans as written
  std::optional<double> number;  ///< set for integers and floats
  bool is_string = false;
};

/// Parses the store's TOML text of a value: "\"cab\"" → cab (a string), "0.05" → 0.05, "true" → true.
CAB_API ParamValue parse_param(std::string_view toml_text);

/// Display formats of a value: "" (as stored), "percent" (0.05 → 5%), "si" (1600000 → 1.6M),
/// "basename" (the last part of a path), "fixed1"/"fixed2"/"fixed3" (that many decimals).
CAB_API bool is_value_format(std::string_view format);
CAB_API std::string format_value(const ParamValue& value, std::string_view format);
/// A number in the shortest form that round-trips at the given significant digits (12 → "12", 0.5 → "0.5").
CAB_API std::string short_number(double value, int significant = 6);

/// Orders values numerically when both are numbers, else by text.
CAB_API bool value_less(const ParamValue& a, const ParamValue& b);

/// Run counts by status, indexed by cab::store::Status.
struct CAB_API StatusCounts {
  int count[5] = {0, 0, 0, 0, 0};
  int& operator[](store::Status s) { return count[static_cast<int>(s)]; }
  int operator[](store::Status s) const { return count[static_cast<int>(s)]; }
  int total() const { return count[0] + count[1] + count[2] + count[3] + count[4]; }
  /// "12 runs: 8 finished, 2 pending, 1 running, 1 failed" (zero counts left out).
  std::string str() const;
};

struct CAB_API SweepInfo {
  std::int64_t id = 0;
  std::string name, created;
  ParamValue name_value;  ///< the name as the value of the pseudo-key "sweep"
  StatusCounts counts;
};

struct CAB_API Run {
  std::int64_t id = 0;
  std::size_t sweep = 0;  ///< index into RunData::sweeps()
  std::int64_t position = 0;
  store::Status status = store::Status::pending;
  int attempts = 0;
  std::string error, worker, gpu, started, ended;
  std::optional<int> exit_code;
  std::vector<std::pair<std::uint32_t, ParamValue>> params;  ///< sorted by key id
  std::vector<std::pair<std::uint32_t, double>> summary;     ///< numeric summary values, sorted by key id
};

/// (step, value) pairs of one run's per-step metric, by step.
using Series = std::vector<std::pair<std::int64_t, double>>;

class CAB_API RunData {
 public:
  /// Opens `db` read-only and loads sweeps, runs, parameters and summaries. Throws ReportError naming the file
  /// when it does not exist, is not a cab run database, or has a schema other than this cab's.
  static RunData open(const std::filesystem::path& db);
  RunData(RunData&&) noexcept;
  RunData& operator=(RunData&&) noexcept;
  ~RunData();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SweepInfo>& sweeps() const { return sweeps_; }
  const std::vector<Run>& runs() const { return runs_; }

  /// Indices of the sweeps whose name equals or glob-matches (fnmatch) one of `patterns`, in database order.
  /// Patterns that match no sweep are appended to `unmatched`.
  std::vector<std::size_t> match_sweeps(const std::vector<std::string>& patterns,
                                        std::vector<std::string>* unmatched = nullptr) const;

  /// A run's parameter, or the pseudo-keys "sweep" (its sweep's name) and "status"; null when unset.
  /// "train.tokens" is derived (train.steps · train.batch_size · dataset.seq_len) where not a parameter itself.
  const ParamValue* param(const Run& run, std::string_view key) const;
  /// A run's numeric summary value.
  std::optional<double> summary(const Run& run, std::string_view key) const;
  const std::string& key_name(std::uint32_t id) const { return key_names_[id]; }

  /// Per-step values of `key` for each of `runs` (same order), NULL values left out. With `max_points`, a run
  /// logged over many more steps is sampled at that many evenly spaced steps (index seeks, not a scan), so that
  /// curves of long runs cost the same as short ones. Safe to call from several threads (each call reads on its
  /// own connection).
  std::vector<Series> series(const std::vector<const Run*>& runs, const std::string& key,
                             std::size_t max_points = 0) const;

 private:
  RunData() = default;
  std::uint32_t intern(const std::string& key);
  std::optional<std::uint32_t> key_id(std::string_view key) const;

  std::filesystem::path path_;
  std::vector<SweepInfo> sweeps_;
  std::vector<Run> runs_;
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> key_names_;
  std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>> key_ids_;
  ParamValue status_values_[5];
};

}  // namespace cab::report
