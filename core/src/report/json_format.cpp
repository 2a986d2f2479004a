// JSON renderings of tables and figures: every number with its n, std and run counts, for scripts.
#include <nlohmann/json.hpp>

#include "cab/report/render.h"
#include "report_util.h"

namespace cab::report {

namespace {

using nlohmann::json;

const char* aggregate_name(Aggregate a) {
  const char* names[] = {"mean_std", "mean", "sum", "min", "max", "count"};
  return names[static_cast<int>(a)];
}
const char* better_name(Better b) {
  const char* names[] = {"none", "higher", "lower"};
  return names[static_cast<int>(b)];
}

json counts(const StatusCounts& c) {
  json j = json::object();
  for (int s = 0; s < 5; ++s) j[std::string(detail::status_name(static_cast<store::Status>(s)))] = c.count[s];
  j["total"] = c.total();
  return j;
}

json stats(const Stats& s) {
  json j = {{"n", s.n}};
  if (s.n > 0) {
    j["mean"] = s.mean;
    j["min"] = s.min;
    j["max"] = s.max;
    j["sum"] = s.sum;
    j["std"] = s.n > 1 ? json(s.std) : json(nullptr);
  }
  return j;
}

json value_spec(const ValueSpec& v) {
  json metrics = json::array();
  for (const auto& m : v.metric) metrics.push_back(m.str());
  return {{"metric", metrics},        {"label", v.label},   {"aggregate", aggregate_name(v.aggregate)},
          {"digits", v.digits},       {"scale", v.scale},   {"better", better_name(v.better)}};
}

}  // namespace

std::string to_json(const Table& t) {
  json j;
  j["id"] = t.id;
  j["title"] = t.title;
  j["caption"] = t.caption;
  j["kind"] = t.definition ? std::string(to_string(t.definition->kind)) : "table";
  j["sweeps"] = t.sweeps;
  j["missing_sweeps"] = t.missing_sweeps;
  j["runs"] = counts(t.scope);
  j["row_headers"] = t.row_headers;
  j["notes"] = t.notes;
  if (t.listing()) {
    json rows = json::array();
    for (const auto& row : t.row_labels) {
      json r = json::object();
      for (std::size_t i = 0; i < row.size() && i < t.row_headers.size(); ++i) r[t.row_headers[i]] = row[i];
      rows.push_back(r);
    }
    j["rows"] = rows;
    return j.dump(2) + "\n";
  }
  j["column_headers"] = t.column_headers;
  json columns = json::array();
  for (std::size_t c = 0; c < t.column_labels.size(); ++c)
    columns.push_back({{"labels", t.column_labels[c]}, {"value", value_spec(t.column_values[c])}});
  j["columns"] = columns;
  j["uniform_n"] = t.uniform_n ? json(*t.uniform_n) : json(nullptr);
  json rows = json::array();
  for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
    json cells = json::array();
    for (std::size_t c = 0; c < t.column_labels.size(); ++c) {
      const Cell& cell = t.cells[r][c];
      json jc = stats(cell.stats);
      jc["value"] = cell.has_value() ? json(shown_value(t.column_values[c], cell.stats)) : json(nullptr);
      jc["runs"] = counts(cell.runs);
      jc["finished_without_value"] = cell.finished_without_value;
      jc["best"] = cell.best;
      jc["text"] = cell_text(t.column_values[c], cell, false);
      cells.push_back(jc);
    }
    rows.push_back({{"labels", t.row_labels[r]}, {"cells", cells}});
  }
  j["rows"] = rows;
  return j.dump(2) + "\n";
}

std::string to_json(const Figure& f) {
  json j;
  j["id"] = f.id;
  j["title"] = f.title;
  j["caption"] = f.caption;
  j["kind"] = f.definition ? std::string(to_string(f.definition->kind)) : "figure";
  j["sweeps"] = f.sweeps;
  j["missing_sweeps"] = f.missing_sweeps;
  j["runs"] = counts(f.scope);
  j["notes"] = f.notes;
  json panels = json::array();
  for (const auto& p : f.panels) {
    json series = json::array();
    for (const auto& s : p.series) {
      json points = json::array();
      for (const auto& pt : s.points) {
        json jp = stats(pt.stats);
        jp["x"] = pt.x;
        jp["x_label"] = pt.x_label;
        points.push_back(jp);
      }
      series.push_back({{"label", s.label}, {"finished_runs", s.runs}, {"points", points}});
    }
    panels.push_back({{"title", p.title},
                      {"facet", p.facet},
                      {"x_label", p.x_label},
                      {"y_label", p.y_label},
                      {"x_axis", p.x_axis},
                      {"bars", p.bars},
                      {"log_y", p.log_y},
                      {"categories", p.categories},
                      {"value", value_spec(p.value)},
                      {"runs", counts(p.runs)},
                      {"series", series}});
  }
  j["panels"] = panels;
  return j.dump(2) + "\n";
}

}  // namespace cab::report
