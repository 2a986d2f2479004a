// Read-only loading of the run database for reports: a few full-table reads, keys interned, values parsed once.
#include "cab/report/run_data.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>
#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <limits>

#include "cab/report/error.h"
#include "report_util.h"

namespace cab::report {

namespace {

std::optional<double> parse_number(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double value = 0;
  const char* first = text.data();
  if (*first == '+') ++first;
  auto [end, ec] = std::from_chars(first, text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string unescape_toml_string(std::string_view quoted) {
  std::string out;
  out.reserve(quoted.size());
  const std::size_t end = quoted.size() >= 2 && quoted.back() == '"' ? quoted.size() - 1 : quoted.size();
  for (std::size_t i = 1; i < end; ++i) {
    char c = quoted[i];
    if (c != '\\' || i + 1 >= end) {
      out += c;
      continue;
    }
    c = quoted[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'u':
        if (i + 4 < end) {
          const unsigned code = std::strtoul(std::string(quoted.substr(i + 1, 4)).c_str(), nullptr, 16);
          if (code < 0x80) out += static_cast<char>(code);
          else if (code < 0x800) out += static_cast<char>(0xc0 | (code >> 6)), out += static_cast<char>(0x80 | (code & 0x3f));
          else
            out += static_cast<char>(0xe0 | (code >> 12)), out += static_cast<char>(0x80 | ((code >> 6) & 0x3f)),
                out += static_cast<char>(0x80 | (code & 0x3f));
          i += 4;
        }
        break;
      default: out += c;  // \" and \\ .
    }
  }
  return out;
}

struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

/// Keys interned by one reader thread.
struct LocalKeys {
  std::vector<std::string> names;
  std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>> ids;
  std::uint32_t id(std::string_view key) {
    auto it = ids.find(key);
    if (it != ids.end()) return it->second;
    const auto id = static_cast<std::uint32_t>(names.size());
    names.emplace_back(key);
    ids.emplace(names.back(), id);
    return id;
  }
};

/// A read-only connection for one thread: readers never block cab-sweep's writes (WAL), and no mutex is taken
/// per call (each connection stays on the thread that opened it).
std::unique_ptr<SQLite::Database> open_read_only(const std::filesystem::path& file) {
  auto db = std::make_unique<SQLite::Database>(file.string(), SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX);
  db->setBusyTimeout(10000);
  return db;
}

/// A statement on the C API: these loops read millions of values, and SQLiteCpp's per-column objects (a
/// shared_ptr each) cost more than the reading.
class RawStatement {
 public:
  RawStatement(SQLite::Database& db, const char* sql) {
    if (const int rc = sqlite3_prepare_v2(db.getHandle(), sql, -1, &st_, nullptr); rc != SQLITE_OK)
      throw SQLite::Exception(db.getHandle(), rc);
  }
  ~RawStatement() { sqlite3_finalize(st_); }
  RawStatement(const RawStatement&) = delete;
  RawStatement& operator=(const RawStatement&) = delete;
  bool step() {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw SQLite::Exception(sqlite3_db_handle(st_), rc);
  }
  void reset() { sqlite3_reset(st_); }
  sqlite3_stmt* get() const { return st_; }

 private:
  sqlite3_stmt* st_ = nullptr;
};

std::string_view text_of(sqlite3_stmt* st, int column) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, column));
  return text ? std::string_view(text, static_cast<std::size_t>(sqlite3_column_bytes(st, column))) : std::string_view();
}

}  // namespace

ParamValue parse_param(std::string_view text) {
  ParamValue v;
  if (!text.empty() && text.front() == '"') {
    v.text = unescape_toml_string(text);
    v.is_string = true;
    return v;
  }
  v.text = std::string(text);
  v.number = parse_number(text);
  return v;
}

std::string short_number(double value, int significant) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf");
  if (value == std::round(value) && std::fabs(value) < 1e15) return fmt::format("{}", static_cast<long long>(value));
  std::string s = fmt::format("{:.{}g}", value, significant);
  return s;
}

bool is_value_format(std::string_view format) {
  return format.empty() || format == "percent" || format == "si" || format == "basename" || format == "fixed1" ||
         format == "fixed2" || format == "fixed3";
}

std::string format_value(const ParamValue& value, std::string_view format) {
  if (format.empty()) return value.text;
  if (format == "basename") {
    std::string_view t = value.text;
    while (t.size() > 1 && t.back() == '/') t.remove_suffix(1);
    const auto slash = t.rfind('/');
    return std::string(slash == std::string_view::npos ? t : t.substr(slash + 1));
  }
  if (!value.number) return value.text;
  const double x = *value.number;
  if (format == "percent") return short_number(x * 100.0, 4) + "%";
  if (format == "si") {
    const double a = std::fabs(x);
    if (a >= 1e12) return short_number(x / 1e12, 3) + "T";
    if (a >= 1e9) return short_number(x / 1e9, 3) + "B";
    if (a >= 1e6) return short_number(x / 1e6, 3) + "M";
    if (a >= 1e3) return short_number(x / 1e3, 3) + "k";
    return short_number(x, 3);
  }
  if (format == "fixed1") return fmt::format("{:.1f}", x);
  if (format == "fixed2") return fmt::format("{:.2f}", x);
  if (format == "fixed3") return fmt::format("{:.3f}", x);
  return value.text;
}

bool value_less(const ParamValue& a, const ParamValue& b) {
  if (a.number && b.number) return *a.number < *b.number;
  if (a.number != b.number) return a.number.has_value();  // numbers before text
  return a.text < b.text;
}

std::string StatusCounts::str() const {
  std::string out = fmt::format("{} run{}", total(), total() == 1 ? "" : "s");
  const store::Status order[] = {store::Status::finished, store::Status::pending, store::Status::running,
                                 store::Status::failed, store::Status::killed};
  bool first = true;
  for (auto s : order) {
    if ((*this)[s] == 0) continue;
    out += fmt::format("{}{} {}", first ? ": " : ", ", (*this)[s], detail::status_name(s));
    first = false;
  }
  return out;
}

RunData::RunData(RunData&&) noexcept = default;
RunData& RunData::operator=(RunData&&) noexcept = default;
RunData::~RunData() = default;

std::uint32_t RunData::intern(const std::string& key) {
  auto it = key_ids_.find(key);
  if (it != key_ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(key_names_.size());
  key_names_.push_back(key);
  key_ids_.emplace(key, id);
  return id;
}

std::optional<std::uint32_t> RunData::key_id(std::string_view key) const {
  auto it = key_ids_.find(key);
  if (it == key_ids_.end()) return std::nullopt;
  return it->second;
}

RunData RunData::open(const std::filesystem::path& file) {
  RunData data;
  data.path_ = file;
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    throw ReportError(fmt::format("no run database at '{}': run a sweep first (cab-sweep SWEEP.toml --db {}), or pass "
                            "--db FILE",
                            file.string(), file.string()));
  }
  try {
    auto connection = open_read_only(file);
    auto& db = *connection;
    const int version = db.execAndGet("PRAGMA user_version").getInt();
    if (version > store::Store::kSchemaVersion) {
      throw ReportError(fmt::format("run database '{}' has schema version {}, newer than this cab understands ({}); use a "
                              "newer cab-report, or another --db",
                              file.string(), version, store::Store::kSchemaVersion));
    }
    const bool has_runs = db.execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'")
                              .getInt() > 0;
    if (version == 0 || !has_runs) {
      throw ReportError(fmt::format("'{}' is not a cab run database (it has no cab schema; schema version {})",
                              file.string(), version));
    }
    if (version < store::Store::kSchemaVersion) {
      throw ReportError(fmt::format("run database '{}' has schema version {}, older than this cab's ({}); upgrade it by "
                              "opening it once with this cab's cab-sweep (cab-sweep status --db {})",
                              file.string(), version, store::Store::kSchemaVersion, file.string()));
    }

    for (int s = 0; s < 5; ++s) {
      data.status_values_[s].text = std::string(detail::status_name(static_cast<store::Status>(s)));
      data.status_values_[s].is_string = true;
    }
    std::unordered_map<std::int64_t, std::size_t> sweep_index;
    {
      SQLite::Statement q(db, "SELECT id, name, created FROM sweeps ORDER BY id");
      while (q.executeStep()) {
        SweepInfo s;
        s.id = q.getColumn(0).getInt64();
        s.name = q.getColumn(1).getString();
        s.created = q.getColumn(2).getString();
        s.name_value.text = s.name;
        s.name_value.is_string = true;
        sweep_index[s.id] = data.sweeps_.size();
        data.sweeps_.push_back(std::move(s));
      }
    }
    std::vector<std::int64_t> index_of_id;  // run id → index in runs_, -1 where absent
    {
      SQLite::Statement q(db, "SELECT id, sweep_id, position, status, attempts, coalesce(error,''), "
                              "coalesce(worker,''), coalesce(gpu,''), coalesce(started,''), coalesce(ended,''), "
                              "exit_code FROM runs ORDER BY sweep_id, position");
      while (q.executeStep()) {
        Run r;
        r.id = q.getColumn(0).getInt64();
        auto it = sweep_index.find(q.getColumn(1).getInt64());
        if (it == sweep_index.end()) continue;
        r.sweep = it->second;
        r.position = q.getColumn(2).getInt64();
        r.status = detail::parse_status(q.getColumn(3).getText()).value_or(store::Status::pending);
        r.attempts = q.getColumn(4).getInt();
        r.error = q.getColumn(5).getString();
        r.worker = q.getColumn(6).getString();
        r.gpu = q.getColumn(7).getString();
        r.started = q.getColumn(8).getString();
        r.ended = q.getColumn(9).getString();
        if (!q.getColumn(10).isNull()) r.exit_code = q.getColumn(10).getInt();
        data.sweeps_[r.sweep].counts[r.status] += 1;
        if (r.id >= 0) {
          if (static_cast<std::size_t>(r.id) >= index_of_id.size()) index_of_id.resize(r.id + 1, -1);
          index_of_id[r.id] = static_cast<std::int64_t>(data.runs_.size());
        }
        data.runs_.push_back(std::move(r));
      }
    }
    auto run_at = [&](std::int64_t id) -> Run* {
      if (id < 0 || static_cast<std::size_t>(id) >= index_of_id.size() || index_of_id[id] < 0) return nullptr;
      return &data.runs_[index_of_id[id]];
    };
    // Parameters (the bulk: every resolved key of every run) in two halves by run id, and the summaries, read
    // at once on their own connections; each reader interns keys locally, merged below.
    std::vector<std::int64_t> ids;
    for (const auto& r : data.runs_) ids.push_back(r.id);
    std::sort(ids.begin(), ids.end());
    const std::int64_t mid = ids.empty() ? 0 : ids[ids.size() / 2];
    LocalKeys param_keys[2], summary_keys;
    auto read_params = [&](std::int64_t lo, std::int64_t hi, LocalKeys& keys) {
      auto conn = open_read_only(file);
      RawStatement q(*conn, "SELECT run_id, key, value FROM params WHERE run_id >= ? AND run_id < ?");
      sqlite3_stmt* st = q.get();
      sqlite3_bind_int64(st, 1, lo);
      sqlite3_bind_int64(st, 2, hi);
      std::int64_t last_id = -1;
      Run* run = nullptr;
      while (q.step()) {
        const std::int64_t id = sqlite3_column_int64(st, 0);
        if (id != last_id) run = run_at(id), last_id = id;
        if (run) run->params.emplace_back(keys.id(text_of(st, 1)), parse_param(text_of(st, 2)));
      }
    };
    auto read_summary = [&](LocalKeys& keys) {
      auto conn = open_read_only(file);
      RawStatement q(*conn, "SELECT run_id, key, value FROM summary");
      sqlite3_stmt* st = q.get();
      std::int64_t last_id = -1;
      Run* run = nullptr;
      while (q.step()) {
        const std::int64_t id = sqlite3_column_int64(st, 0);
        if (id != last_id) run = run_at(id), last_id = id;
        if (!run) continue;
        if (const auto number = parse_number(text_of(st, 2))) run->summary.emplace_back(keys.id(text_of(st, 1)), *number);
      }
    };
    auto low = std::async(std::launch::async, read_params, std::numeric_limits<std::int64_t>::min(), mid,
                          std::ref(param_keys[0]));
    auto high = std::async(std::launch::async, read_params, mid, std::numeric_limits<std::int64_t>::max(),
                           std::ref(param_keys[1]));
    read_summary(summary_keys);
    low.get();
    high.get();
    std::vector<std::uint32_t> remap[2], summary_remap;
    for (int t = 0; t < 2; ++t)
      for (const auto& name : param_keys[t].names) remap[t].push_back(data.intern(name));
    for (const auto& name : summary_keys.names) summary_remap.push_back(data.intern(name));
    for (auto& run : data.runs_) {
      const auto& m = remap[run.id < mid ? 0 : 1];
      for (auto& [key, value] : run.params) key = m[key];
      for (auto& [key, value] : run.summary) key = summary_remap[key];
    }
  } catch (const SQLite::Exception& e) {
    throw ReportError(fmt::format("run database '{}': {} (is it a cab SQLite database?)", file.string(), e.what()));
  }

  const std::uint32_t tokens = data.intern("train.tokens");
  const auto steps = data.key_id("train.steps"), batch = data.key_id("train.batch_size"),
             seq_len = data.key_id("dataset.seq_len");
  auto by_key = [](const auto& a, const auto& b) { return a.first < b.first; };
  for (auto& run : data.runs_) {
    std::sort(run.params.begin(), run.params.end(), by_key);
    std::sort(run.summary.begin(), run.summary.end(), by_key);
    if (!steps || !batch || !seq_len || data.param(run, "train.tokens")) continue;
    const ParamValue* s = data.param(run, "train.steps");
    const ParamValue* b = data.param(run, "train.batch_size");
    const ParamValue* l = data.param(run, "dataset.seq_len");
    if (!s || !b || !l || !s->number || !b->number || !l->number || *s->number <= 0) continue;
    const double n = *s->number * *b->number * *l->number;
    ParamValue v;
    v.number = n;
    v.text = short_number(n, 15);
    run.params.emplace_back(tokens, std::move(v));
    std::sort(run.params.begin(), run.params.end(), by_key);
  }
  return data;
}

std::vector<std::size_t> RunData::match_sweeps(const std::vector<std::string>& patterns,
                                               std::vector<std::string>* unmatched) const {
  std::vector<std::size_t> out;
  std::vector<bool> used(patterns.size(), false);
  for (std::size_t s = 0; s < sweeps_.size(); ++s) {
    bool any = false;
    for (std::size_t p = 0; p < patterns.size(); ++p) {
      if (patterns[p] == sweeps_[s].name || fnmatch(patterns[p].c_str(), sweeps_[s].name.c_str(), 0) == 0) {
        used[p] = true;
        any = true;
      }
    }
    if (any) out.push_back(s);
  }
  if (unmatched)
    for (std::size_t p = 0; p < patterns.size(); ++p)
      if (!used[p]) unmatched->push_back(patterns[p]);
  return out;
}

const ParamValue* RunData::param(const Run& run, std::string_view key) const {
  if (key == "sweep") return &sweeps_[run.sweep].name_value;
  if (key == "status") return &status_values_[static_cast<int>(run.status)];
  const auto id = key_id(key);
  if (!id) return nullptr;
  auto it = std::lower_bound(run.params.begin(), run.params.end(), *id,
                             [](const auto& entry, std::uint32_t k) { return entry.first < k; });
  if (it == run.params.end() || it->first != *id) return nullptr;
  return &it->second;
}

std::optional<double> RunData::summary(const Run& run, std::string_view key) const {
  const auto id = key_id(key);
  if (!id) return std::nullopt;
  auto it = std::lower_bound(run.summary.begin(), run.summary.end(), *id,
                             [](const auto& entry, std::uint32_t k) { return entry.first < k; });
  if (it == run.summary.end() || it->first != *id) return std::nullopt;
  return it->second;
}

std::vector<Series> RunData::series(const std::vector<const Run*>& runs, const std::string& key,
                                    std::size_t max_points) const {
  std::vector<Series> out(runs.size());
  if (runs.empty()) return out;
  try {
    auto db = open_read_only(path_);  // a connection per call: figures and tables are built on several threads
    RawStatement all(*db, "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? AND value IS NOT NULL "
                          "ORDER BY step");
    // The PRIMARY KEY (run_id, key, step) makes these seeks, however long the run.
    RawStatement range(*db, "SELECT min(step), max(step) FROM metrics WHERE run_id = ? AND key = ?");
    RawStatement at(*db, "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? AND step >= ? AND value IS "
                         "NOT NULL ORDER BY step LIMIT 1");
    for (RawStatement* q : {&all, &range, &at})
      sqlite3_bind_text(q->get(), 2, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
    const std::size_t scan_limit = max_points > 0 ? 4 * max_points : SIZE_MAX;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      sqlite3_bind_int64(all.get(), 1, runs[i]->id);
      bool long_run = false;
      while (all.step()) {
        out[i].emplace_back(sqlite3_column_int64(all.get(), 0), sqlite3_column_double(all.get(), 1));
        if (out[i].size() > scan_limit) {
          long_run = true;
          break;
        }
      }
      all.reset();
      if (!long_run) continue;
      // A long run: evenly spaced steps between its first and last, each one seek.
      out[i].clear();
      sqlite3_bind_int64(range.get(), 1, runs[i]->id);
      std::int64_t lo = 0, hi = 0;
      if (range.step()) lo = sqlite3_column_int64(range.get(), 0), hi = sqlite3_column_int64(range.get(), 1);
      range.reset();
      sqlite3_bind_int64(at.get(), 1, runs[i]->id);
      for (std::size_t k = 0; k < max_points; ++k) {
        const std::int64_t target = lo + static_cast<std::int64_t>(static_cast<double>(hi - lo) * k / (max_points - 1));
        if (!out[i].empty() && target <= out[i].back().first) continue;
        sqlite3_bind_int64(at.get(), 3, target);
        if (at.step()) out[i].emplace_back(sqlite3_column_int64(at.get(), 0), sqlite3_column_double(at.get(), 1));
        at.reset();
      }
    }
  } catch (const SQLite::Exception& e) {
    throw ReportError(fmt::format("run database '{}': reading metric '{}': {}", path_.string(), key, e.what()));
  }
  return out;
}

}  // namespace cab::report
