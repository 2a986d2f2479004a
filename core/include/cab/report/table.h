// A table computed from a definition and the run database: rows × columns of cells, each cell the runs it
// covers (by status) and the aggregate of their metric (mean, std, n, ...); or, for a run listing, text rows.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cab/export.h"
#include "cab/report/definition.h"
#include "cab/report/run_data.h"

namespace cab::report {

/// Aggregate of one metric over the finished runs of a cell.
struct CAB_API Stats {
  int n = 0;
  double mean = 0, std = 0, min = 0, max = 0, sum = 0;
  static Stats of(const std::vector<double>& values);  ///< std is the sample standard deviation (n − 1)
};

struct CAB_API Cell {
  Stats stats;                 ///< over the finished runs that have the metric
  StatusCounts runs;           ///< every run of the cell, by status
  int finished_without_value = 0;
  bool best = false;           ///< the best value of its column (or of its column within the row group)
  std::string text;            ///< run listings: the field's text
  bool has_value() const { return stats.n > 0; }
};

struct CAB_API Table {
  const Definition* definition = nullptr;
  std::string id, title, caption;
  std::vector<std::string> sweeps;          ///< the sweeps it reads
  std::vector<std::string> missing_sweeps;  ///< patterns that matched no sweep in the database
  StatusCounts scope;                       ///< every run the table covers

  std::vector<std::string> row_headers;                  ///< one per row label column
  std::vector<std::vector<std::string>> row_labels;      ///< [row][label column]
  std::vector<std::string> column_headers;               ///< one per column dimension (may be empty strings)
  std::vector<std::vector<std::string>> column_labels;   ///< [column][dimension]
  std::vector<ValueSpec> column_values;                  ///< how each column's cells are made
  std::vector<std::vector<Cell>> cells;                  ///< [row][column]
  std::optional<int> uniform_n;  ///< every cell with a value has this n (then the cells need not repeat it)
  std::vector<std::string> notes;  ///< what a reader must know: missing sweeps, mixed runs, empty scope

  bool listing() const;  ///< a run listing (cells hold text)
};

/// Computes a table (Kind::table or Kind::runs) from the database. `sweeps`, when not empty, replaces the
/// definition's sweep patterns.
CAB_API Table build_table(const Definition& definition, const RunData& data,
                          const std::vector<std::string>& sweeps = {});

/// The number of each run for a value spec: the first metric alternative the run has, times scale (nothing
/// where it has none). Per-step alternatives are read from the database only for the runs that still need one.
CAB_API std::vector<std::optional<double>> run_values(const ValueSpec& value, const RunData& data,
                                                      const std::vector<const Run*>& runs);

/// The number shown for a cell: its mean, sum, min, max or n, as the aggregate says.
CAB_API double shown_value(const ValueSpec& value, const Stats& stats);

/// Plain text of a cell: "27.8 ± 0.4", with "(n=2)" unless `omit_n`, and what else is there ("1 pending");
/// "no runs" / "no finished run (2 pending)" / "no top1 in 2 finished runs" for cells without a value.
CAB_API std::string cell_text(const ValueSpec& value, const Cell& cell, bool omit_n, const std::string& pm = " ± ");
/// What a cell holds besides its value: "2 pending, 1 failed" (pending includes running), or "".
CAB_API std::string cell_extras(const Cell& cell);
/// The number alone, formatted with the spec's digits ("27.8 ± 0.4", "27.8", "3").
CAB_API std::string number_text(const ValueSpec& value, const Stats& stats, const std::string& pm = " ± ");

/// The runs of the definition's scope: in its sweeps, matching `where`, not matching any `exclude`. `matched`
/// gets the names of the sweeps that contribute runs (all matching sweeps when none does).
CAB_API std::vector<const Run*> scope_runs(const Definition& definition, const RunData& data,
                                           const std::vector<std::string>& sweeps, std::vector<std::string>* matched,
                                           std::vector<std::string>* missing);

/// Notes about the sweeps a table or figure asked for: none matched (listing the database's sweeps), or a sweep
/// named exactly is missing. Glob patterns that match nothing while others match are fine.
CAB_API std::vector<std::string> sweep_notes(const std::vector<std::string>& matched,
                                             const std::vector<std::string>& missing, const RunData& data);

/// Coordinates of runs on an axis: the labels of each coordinate (one per key dimension, or the entry label)
/// and the runs at each. Key coordinates are ordered by the dimensions' `order` lists, then by value.
struct CAB_API AxisGroups {
  std::vector<std::vector<std::string>> labels;
  std::vector<std::vector<const Run*>> runs;
  std::vector<int> entry;  ///< for explicit entries: the entry index of each coordinate
};
CAB_API AxisGroups group_runs(const Axis& axis, const RunData& data, const std::vector<const Run*>& runs);

}  // namespace cab::report
