// Report definitions as data: one TOML file per table or figure (results/tables/*.toml, installed under
// share/cab/tables), saying which sweeps and runs it uses, what makes its rows, columns or series, which
// metric it shows and how runs are aggregated. The format is documented in results/tables/README.md.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cab/export.h"
#include "cab/report/error.h"
#include "cab/report/run_data.h"

namespace cab::report {

enum class Kind {
  table,  ///< rows × columns of one metric aggregated over runs (mean ± std, n)
  runs,   ///< a list of runs with chosen fields (e.g. the runs that failed, with their reasons)
  line,   ///< figure: a summary metric against a parameter, one line per series (e.g. top-1 vs data fraction)
  steps,  ///< figure: a per-step metric against its step, mean over runs (learning curves, per-layer values)
  bars,   ///< figure: one bar per series for each of several metrics (memory, time)
};
CAB_API std::string_view to_string(Kind kind);

enum class Aggregate { mean_std, mean, sum, min, max, count };
enum class Better { none, higher, lower };
enum class Reduce { last, min, max, mean };

/// Where a run's number comes from: a summary key ("top1"), or a per-step metric reduced to one number
/// ("series:eval/top1:max").
struct CAB_API MetricRef {
  bool series = false;
  std::string key;
  Reduce reduce = Reduce::last;
  std::string str() const;
};
CAB_API MetricRef parse_metric(const std::string& text);  ///< throws std::invalid_argument with the reason

/// How a cell's number is made and shown.
struct CAB_API ValueSpec {
  std::vector<MetricRef> metric;  ///< alternatives: the first the run has is used
  std::string label;              ///< axis or column label ("Top-1 (%)")
  Aggregate aggregate = Aggregate::mean_std;
  int digits = 1;
  double scale = 1.0;  ///< the run's value is multiplied by this first
  Better better = Better::none;
  std::string metric_names() const;  ///< "top1" or "a or b"
};

/// key = value (any of several values; strings may be globs), all of which a run must match.
struct CAB_API Where {
  struct Filter {
    std::string key;
    std::vector<ParamValue> any_of;  ///< strings may hold glob characters
  };
  std::vector<Filter> filters;
  bool matches(const RunData& data, const Run& run) const;
  bool empty() const { return filters.empty(); }
  std::string str() const;  ///< "method.name = cab, alignment.terms = B"
};

/// An axis coordinate made from parameters: one key's distinct values, or a label template over several keys
/// ("{teacher.name} → {student.name}"; "{key|percent}" formats a value).
struct CAB_API KeyDim {
  std::string header;
  std::string key;                            ///< the key whose values make the coordinate (empty: template only)
  std::string label;                          ///< template; defaults to "{key}" with `format`
  std::string format;                         ///< value format of `key` (see format_value)
  std::vector<ParamValue> order;              ///< values placed first, in this order
  std::map<std::string, std::string> labels;  ///< value → label shown
};

/// An explicitly defined row, column, series or panel: a label and the filters its runs match, optionally with
/// its own value (a column of another metric, a bar panel).
struct CAB_API Entry {
  std::string label;
  Where where;
  std::optional<ValueSpec> value;
};

/// Rows, columns, series or facets: either coordinates from parameter keys, or explicit entries.
struct CAB_API Axis {
  std::string header;  ///< header of the label column of explicit entries
  std::vector<KeyDim> keys;
  std::vector<Entry> entries;
  bool empty() const { return keys.empty() && entries.empty(); }
};

/// A field of a run listing: "sweep", "run", "status", "attempts", "error", "exit_code", "worker", "gpu",
/// "started", "ended", a parameter key, or "summary:KEY".
struct CAB_API ListField {
  std::string key, header;
};

struct CAB_API Definition {
  std::string id;    ///< the file name without .toml
  std::string file;  ///< where it was read from
  Kind kind = Kind::table;
  int order = 100;   ///< position in listings and in the report (then by id)
  std::string title, caption;
  std::vector<std::string> sweeps{"*"};  ///< sweep names or globs
  Where where;
  std::vector<Where> exclude;  ///< runs matching any of these are left out
  ValueSpec value;
  Axis rows, columns;           ///< table
  std::string best = "group";   ///< table: bold the best cell per "column", per "group" of rows, or "none"
  std::vector<std::string> vary;  ///< keys (or globs; "*": all) that may differ within a cell without a note
  std::vector<std::string> statuses;  ///< runs: which statuses are listed
  std::vector<ListField> fields;      ///< runs: the columns
  std::size_t max_text = 160;          ///< runs: longer texts (errors) are cut
  Axis series, facets;                 ///< figures
  KeyDim x;                            ///< line: the parameter on the x axis
  std::string x_axis = "category";     ///< line: category | linear | log
  std::string x_label, y_label;
  bool log_y = false;
  std::vector<Entry> bars;  ///< bars: one panel per entry (label + value)
  bool is_figure() const { return kind == Kind::line || kind == Kind::steps || kind == Kind::bars; }
};

/// Whether a run's value (null: unset) matches a wanted value: numbers numerically, strings exactly or as a
/// glob (fnmatch) when they hold *, ? or [.
CAB_API bool value_matches(const ParamValue& wanted, const ParamValue* value);

/// Parses one definition; `id` names it. Throws ReportError with file:line:column for malformed files,
/// unknown keys (with a did-you-mean) and bad values.
CAB_API Definition parse_definition(const std::string& text, const std::string& id, const std::string& file);

/// Every *.toml definition in `dirs`, in order (an id found again in a later directory is ignored, so earlier
/// directories override the shipped definitions), sorted by (order, id). Missing directories are skipped.
CAB_API std::vector<Definition> load_definitions(const std::vector<std::filesystem::path>& dirs);

/// Where the shipped definitions are: share/cab/tables next to the installed binary, or the source tree's
/// results/tables for a build-tree binary.
CAB_API std::vector<std::filesystem::path> default_definition_dirs(const std::filesystem::path& executable);

}  // namespace cab::report
