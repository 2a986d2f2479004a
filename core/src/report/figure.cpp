// Figures from definitions: facets → panels, series → lines or bars, points → aggregates over finished runs.
#include "cab/report/figure.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_set>

#include "cab/util/join.h"

namespace cab::report {

using store::Status;

bool Panel::empty() const {
  for (const auto& s : series)
    if (!s.points.empty()) return false;
  return true;
}

namespace {

constexpr std::size_t kMaxStepPoints = 300;  // learning curves are binned to this many points

std::vector<const Run*> finished(const std::vector<const Run*>& runs) {
  std::vector<const Run*> out;
  for (const Run* r : runs)
    if (r->status == Status::finished) out.push_back(r);
  return out;
}

std::vector<const Run*> intersect(const std::vector<const Run*>& a, const std::vector<const Run*>& b) {
  std::unordered_set<const Run*> in_b(b.begin(), b.end());
  std::vector<const Run*> out;
  for (const Run* r : a)
    if (in_b.count(r)) out.push_back(r);
  return out;
}

Stats stats_of(const ValueSpec& value, const RunData& data, const std::vector<const Run*>& runs) {
  std::vector<double> values;
  for (const auto& v : run_values(value, data, runs))
    if (v) values.push_back(*v);
  return Stats::of(values);
}

std::string panel_title(const std::vector<std::string>& labels, const std::vector<KeyDim>& dims) {
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const bool header = i < dims.size() && !dims[i].header.empty() && dims[i].label.empty() && dims[i].labels.empty();
    parts.push_back(header ? fmt::format("{} = {}", dims[i].header, labels[i]) : labels[i]);
  }
  return join(parts, " · ");
}

/// Running mean, variance (Welford), min and max of the values at one step; mergeable (Chan et al.).
struct Accumulator {
  double n = 0, mean = 0, m2 = 0, min = INFINITY, max = -INFINITY;
  void add(double v) {
    n += 1;
    const double d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
    min = std::min(min, v);
    max = std::max(max, v);
  }
  void merge(const Accumulator& o) {
    if (o.n == 0) return;
    const double total = n + o.n, d = o.mean - mean;
    mean += d * o.n / total;
    m2 += o.m2 + d * d * n * o.n / total;
    n = total;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
  }
  Stats stats() const {
    Stats s;
    s.n = static_cast<int>(n);
    s.mean = mean;
    s.std = n > 1 ? std::sqrt(m2 / (n - 1)) : 0;
    s.min = min;
    s.max = max;
    s.sum = mean * n;
    return s;
  }
};

/// Mean curve of per-step series over runs; binned when there are many steps.
std::vector<Point> mean_curve(const std::vector<Series>& runs) {
  std::map<std::int64_t, Accumulator> by_step;
  for (const auto& s : runs) {
    auto hint = by_step.begin();
    for (const auto& [step, value] : s) {  // each run's steps ascend: insert with a hint
      hint = by_step.try_emplace(hint, step);
      hint->second.add(value);
    }
  }
  std::vector<Point> out;
  if (by_step.empty()) return out;
  if (by_step.size() <= kMaxStepPoints) {
    for (const auto& [step, acc] : by_step) {
      Point p;
      p.x = static_cast<double>(step);
      p.x_label = std::to_string(step);
      p.stats = acc.stats();
      out.push_back(std::move(p));
    }
    return out;
  }
  const double lo = static_cast<double>(by_step.begin()->first), hi = static_cast<double>(by_step.rbegin()->first);
  const double width = (hi - lo) / kMaxStepPoints;
  std::vector<Accumulator> bins(kMaxStepPoints);
  std::vector<double> step_sum(kMaxStepPoints, 0);
  std::vector<int> step_count(kMaxStepPoints, 0);
  for (const auto& [step, acc] : by_step) {
    auto b = static_cast<std::size_t>((static_cast<double>(step) - lo) / width);
    b = std::min(b, kMaxStepPoints - 1);
    bins[b].merge(acc);
    step_sum[b] += static_cast<double>(step);
    step_count[b] += 1;
  }
  for (std::size_t b = 0; b < kMaxStepPoints; ++b) {
    if (bins[b].n == 0) continue;
    Point p;
    p.x = step_sum[b] / step_count[b];
    p.x_label = short_number(std::round(p.x));
    p.stats = bins[b].stats();
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

Figure build_figure(const Definition& def, const RunData& data, const std::vector<std::string>& sweeps) {
  Figure f;
  f.definition = &def;
  f.id = def.id;
  f.title = def.title;
  f.caption = def.caption;
  const auto scope = scope_runs(def, data, sweeps, &f.sweeps, &f.missing_sweeps);
  for (const Run* r : scope) f.scope[r->status] += 1;

  const AxisGroups facets = group_runs(def.facets, data, scope);
  for (std::size_t fi = 0; fi < facets.labels.size(); ++fi) {
    const auto& facet_runs = facets.runs[fi];
    const std::string facet_title = panel_title(facets.labels[fi], def.facets.keys);
    const AxisGroups series = group_runs(def.series, data, facet_runs);
    auto base_panel = [&](const std::string& title) {
      Panel p;
      p.title = title;
      p.facet = facet_title;
      p.x_label = def.x_label;
      p.y_label = def.y_label;
      p.log_y = def.log_y;
      p.value = def.value;
      for (const Run* r : facet_runs) p.runs[r->status] += 1;
      return p;
    };
    auto series_label = [&](std::size_t s) {
      return series.labels[s].empty() ? def.value.label : join(series.labels[s], " · ");
    };

    if (def.kind == Kind::line) {
      Panel p = base_panel(facet_title);
      p.x_axis = def.x_axis;
      Axis x_axis;
      x_axis.keys = {def.x};
      const AxisGroups xs = group_runs(x_axis, data, facet_runs);
      for (std::size_t xi = 0; xi < xs.labels.size(); ++xi) p.categories.push_back(xs.labels[xi].front());
      for (std::size_t s = 0; s < series.labels.size(); ++s) {
        PlotSeries line;
        line.label = series_label(s);
        const auto series_runs = finished(series.runs[s]);
        line.runs = static_cast<int>(series_runs.size());
        for (std::size_t xi = 0; xi < xs.labels.size(); ++xi) {
          const auto runs = intersect(series_runs, xs.runs[xi]);
          Point pt;
          pt.x_label = xs.labels[xi].front();
          pt.x = static_cast<double>(xi);
          if (def.x_axis != "category") {
            const ParamValue* v = runs.empty() || def.x.key.empty() ? nullptr : data.param(*runs.front(), def.x.key);
            if (!v || !v->number) continue;
            pt.x = *v->number;
            if (def.x_axis == "log" && pt.x <= 0) continue;
          }
          pt.stats = stats_of(def.value, data, runs);
          if (pt.stats.n > 0) line.points.push_back(std::move(pt));
        }
        p.series.push_back(std::move(line));
      }
      f.panels.push_back(std::move(p));
    } else if (def.kind == Kind::steps) {
      Panel p = base_panel(facet_title);
      p.x_axis = "linear";
      for (std::size_t s = 0; s < series.labels.size(); ++s) {
        PlotSeries line;
        line.label = series_label(s);
        const auto runs = finished(series.runs[s]);
        line.runs = static_cast<int>(runs.size());
        std::vector<Series> curves(runs.size());
        for (const auto& metric : def.value.metric) {  // the first alternative a run has
          std::vector<const Run*> need;
          std::vector<std::size_t> where;
          for (std::size_t i = 0; i < runs.size(); ++i)
            if (curves[i].empty()) need.push_back(runs[i]), where.push_back(i);
          if (need.empty()) break;
          auto got = data.series(need, metric.key, kMaxStepPoints);
          for (std::size_t i = 0; i < need.size(); ++i) curves[where[i]] = std::move(got[i]);
        }
        if (def.value.scale != 1.0)
          for (auto& c : curves)
            for (auto& pt : c) pt.second *= def.value.scale;
        line.points = mean_curve(curves);
        p.series.push_back(std::move(line));
      }
      f.panels.push_back(std::move(p));
    } else {  // bars: one panel per bar metric, one bar per series
      for (const auto& bar : def.bars) {
        Panel p = base_panel(facet_title.empty() ? bar.label : facet_title + " · " + bar.label);
        p.bars = true;
        p.value = *bar.value;
        p.y_label = bar.label;
        p.x_label = "";
        const auto bar_runs = bar.where.empty() ? facet_runs : [&] {
          std::vector<const Run*> out;
          for (const Run* r : facet_runs)
            if (bar.where.matches(data, *r)) out.push_back(r);
          return out;
        }();
        for (std::size_t s = 0; s < series.labels.size(); ++s) {
          p.categories.push_back(series_label(s));
          PlotSeries one;
          one.label = series_label(s);
          const auto runs = finished(intersect(series.runs[s], bar_runs));
          one.runs = static_cast<int>(runs.size());
          Point pt;
          pt.x = static_cast<double>(s);
          pt.x_label = one.label;
          pt.stats = stats_of(*bar.value, data, runs);
          if (pt.stats.n > 0) one.points.push_back(std::move(pt));
          p.series.push_back(std::move(one));
        }
        f.panels.push_back(std::move(p));
      }
    }
  }

  f.notes = sweep_notes(f.sweeps, f.missing_sweeps, data);
  if (scope.empty() && !f.sweeps.empty()) f.notes.push_back("No runs to plot.");
  else if (f.scope[Status::finished] < f.scope.total())
    f.notes.push_back("Only finished runs are plotted.");
  for (const auto& p : f.panels)
    if (!scope.empty() && p.empty())
      f.notes.push_back(fmt::format("{}: no finished run has {}.", p.title.empty() ? f.title : p.title,
                                    p.value.metric_names()));
  return f;
}

Table figure_table(const Figure& f) {
  Table t;
  t.definition = f.definition;
  t.id = f.id;
  t.title = f.title;
  t.caption = f.caption;
  t.sweeps = f.sweeps;
  t.missing_sweeps = f.missing_sweeps;
  t.scope = f.scope;
  t.notes = f.notes;
  t.column_headers = {""};
  const bool bars = !f.panels.empty() && f.panels.front().bars;
  bool facets = false;
  for (const auto& p : f.panels) facets = facets || !p.facet.empty();

  if (bars) {  // rows: (facet,) series; columns: the bar metrics
    if (facets) t.row_headers.push_back("panel");
    std::vector<std::string> headers;
    if (f.definition)
      for (const auto& k : f.definition->series.keys) headers.push_back(k.header);
    t.row_headers.push_back(headers.empty() ? "series" : join(headers, " · "));
    std::vector<std::string> columns;
    std::map<std::pair<std::string, std::string>, std::size_t> row_of;
    for (const auto& p : f.panels) {
      if (std::find(columns.begin(), columns.end(), p.y_label) == columns.end()) {
        columns.push_back(p.y_label);
        t.column_labels.push_back({p.y_label});
        t.column_values.push_back(p.value);
      }
      for (const auto& s : p.series)
        if (row_of.emplace(std::make_pair(p.facet, s.label), t.row_labels.size()).second) {
          std::vector<std::string> labels;
          if (facets) labels.push_back(p.facet);
          labels.push_back(s.label);
          t.row_labels.push_back(labels);
        }
    }
    t.cells.assign(t.row_labels.size(), std::vector<Cell>(columns.size()));
    for (auto& row : t.cells)
      for (auto& cell : row) cell.text = "no finished run";
    for (const auto& p : f.panels) {
      const auto c = static_cast<std::size_t>(std::find(columns.begin(), columns.end(), p.y_label) - columns.begin());
      for (const auto& s : p.series) {
        Cell& cell = t.cells[row_of[{p.facet, s.label}]][c];
        if (!s.points.empty()) cell.stats = s.points.front().stats, cell.text.clear();
      }
    }
    return t;
  }

  // Lines: rows (facet,) x; columns: the series.
  if (facets) t.row_headers.push_back("panel");
  t.row_headers.push_back(f.panels.empty() || f.panels.front().x_label.empty() ? "x" : f.panels.front().x_label);
  std::vector<std::string> columns;
  for (const auto& p : f.panels)
    for (const auto& s : p.series)
      if (std::find(columns.begin(), columns.end(), s.label) == columns.end()) columns.push_back(s.label);
  for (const auto& c : columns) t.column_labels.push_back({c});
  ValueSpec v = f.panels.empty() ? ValueSpec{} : f.panels.front().value;
  if (v.digits < 3 && f.definition && f.definition->kind == Kind::steps) v.digits = 4;
  t.column_values.assign(columns.size(), v);
  for (const auto& p : f.panels) {
    std::map<std::pair<double, std::string>, std::vector<Cell>> rows;  // by x
    for (const auto& s : p.series) {
      const auto c = static_cast<std::size_t>(std::find(columns.begin(), columns.end(), s.label) - columns.begin());
      for (const auto& pt : s.points) {
        auto& row = rows[{pt.x, pt.x_label}];
        row.resize(columns.size());
        row[c].stats = pt.stats;
      }
    }
    for (auto& [x, row] : rows) {
      std::vector<std::string> labels;
      if (facets) labels.push_back(p.facet);
      labels.push_back(x.second);
      for (auto& cell : row)
        if (!cell.has_value()) cell.text = "—";
      t.row_labels.push_back(labels);
      t.cells.push_back(row);
    }
  }
  return t;
}

}  // namespace cab::report
