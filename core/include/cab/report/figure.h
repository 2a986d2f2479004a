// A figure computed from a definition and the run database: panels (one per facet, or per bar metric) of
// series of points, each point the mean, std and n of a metric over finished runs.
#pragma once

#include <string>
#include <vector>

#include "cab/export.h"
#include "cab/report/definition.h"
#include "cab/report/run_data.h"
#include "cab/report/table.h"

namespace cab::report {

struct CAB_API Point {
  double x = 0;         ///< the value (linear/log axes, steps) or the category index
  std::string x_label;  ///< category label, or the value as text
  Stats stats;          ///< y = stats.mean, error = stats.std
};

struct CAB_API PlotSeries {
  std::string label;
  std::vector<Point> points;  ///< by x; only points with finished runs
  int runs = 0;               ///< finished runs behind the series
};

struct CAB_API Panel {
  std::string title, x_label, y_label;
  std::string facet;                      ///< the facet's label ("" without facets)
  std::string x_axis = "category";        ///< category | linear | log
  std::vector<std::string> categories;    ///< category axes: the labels, x = index
  std::vector<PlotSeries> series;
  bool bars = false;                      ///< one bar per category (the series are the categories)
  bool log_y = false;
  ValueSpec value;                        ///< digits and label of the plotted numbers
  StatusCounts runs;                      ///< the runs the panel covers
  bool empty() const;                     ///< nothing to draw
};

struct CAB_API Figure {
  const Definition* definition = nullptr;
  std::string id, title, caption;
  std::vector<std::string> sweeps, missing_sweeps;
  StatusCounts scope;
  std::vector<Panel> panels;
  std::vector<std::string> notes;
};

/// Computes a figure (Kind::line, steps or bars). `sweeps`, when not empty, replaces the definition's.
CAB_API Figure build_figure(const Definition& definition, const RunData& data,
                            const std::vector<std::string>& sweeps = {});

/// The figure's numbers as a table (panel and x as rows, series as columns) for Markdown, LaTeX and CSV.
CAB_API Table figure_table(const Figure& figure);

}  // namespace cab::report
