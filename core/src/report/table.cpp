// Tables from definitions: scope, grouping of runs on rows and columns, per-cell aggregates, best cells,
// and the notes a reader needs (missing sweeps, cells mixing runs that differ in more than the seed).
#include "cab/report/table.h"
#include "report_util.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "cab/util/join.h"

namespace cab::report {

using store::Status;

Stats Stats::of(const std::vector<double>& values) {
  Stats s;
  s.n = static_cast<int>(values.size());
  if (s.n == 0) return s;
  s.min = s.max = values[0];
  for (double v : values) {
    s.sum += v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  s.mean = s.sum / s.n;
  if (s.n > 1) {
    double sq = 0;
    for (double v : values) sq += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(sq / (s.n - 1));
  }
  return s;
}

bool Table::listing() const { return definition && definition->kind == Kind::runs; }

double shown_value(const ValueSpec& value, const Stats& s) {
  switch (value.aggregate) {
    case Aggregate::mean_std:
    case Aggregate::mean: return s.mean;
    case Aggregate::sum: return s.sum;
    case Aggregate::min: return s.min;
    case Aggregate::max: return s.max;
    case Aggregate::count: return s.n;
  }
  return s.mean;
}

std::string number_text(const ValueSpec& value, const Stats& s, const std::string& pm) {
  const int d = value.digits;
  if (value.aggregate == Aggregate::count) return std::to_string(s.n);
  if (value.aggregate == Aggregate::mean_std && s.n > 1) return fmt::format("{:.{}f}{}{:.{}f}", s.mean, d, pm, s.std, d);
  return fmt::format("{:.{}f}", shown_value(value, s), d);
}

std::string cell_extras(const Cell& cell) {
  std::vector<std::string> parts;
  const int pending = cell.runs[Status::pending] + cell.runs[Status::running];
  const int failed = cell.runs[Status::failed];
  const int killed = cell.runs[Status::killed];
  if (pending) parts.push_back(fmt::format("{} pending", pending));
  if (failed) parts.push_back(fmt::format("{} failed", failed));
  if (killed) parts.push_back(fmt::format("{} killed", killed));
  return join(parts, ", ");
}

std::string cell_text(const ValueSpec& value, const Cell& cell, bool omit_n, const std::string& pm) {
  if (!cell.text.empty()) return cell.text;
  const std::string extras = cell_extras(cell);
  if (cell.has_value()) {
    std::vector<std::string> parts;
    if (!omit_n) parts.push_back(fmt::format("n={}", cell.stats.n));
    if (!extras.empty()) parts.push_back(extras);
    std::string out = number_text(value, cell.stats, pm);
    if (!parts.empty()) out += " (" + join(parts, "; ") + ")";
    return out;
  }
  if (cell.runs.total() == 0) return "no runs";
  if (cell.finished_without_value > 0) {
    std::string out = fmt::format("no {} in {} finished run{}", value.metric_names(), cell.finished_without_value,
                                  cell.finished_without_value == 1 ? "" : "s");
    return extras.empty() ? out : out + " (" + extras + ")";
  }
  return "no finished run (" + extras + ")";
}

namespace {

std::optional<double> reduce(const Series& s, Reduce how) {
  if (s.empty()) return std::nullopt;
  double v = how == Reduce::mean ? 0.0 : s.front().second;
  for (const auto& p : s) {
    if (how == Reduce::min) v = std::min(v, p.second);
    else if (how == Reduce::max) v = std::max(v, p.second);
    else if (how == Reduce::mean) v += p.second;
  }
  if (how == Reduce::last) v = s.back().second;
  if (how == Reduce::mean) v /= static_cast<double>(s.size());
  return v;
}

}  // namespace

std::vector<std::optional<double>> run_values(const ValueSpec& value, const RunData& data,
                                              const std::vector<const Run*>& runs) {
  std::vector<std::optional<double>> out(runs.size());
  for (const MetricRef& m : value.metric) {
    std::vector<std::size_t> need;
    for (std::size_t i = 0; i < runs.size(); ++i)
      if (!out[i]) need.push_back(i);
    if (need.empty()) break;
    if (!m.series) {
      for (auto i : need)
        if (auto v = data.summary(*runs[i], m.key); v && std::isfinite(*v)) out[i] = *v * value.scale;
      continue;
    }
    std::vector<const Run*> subset;
    for (auto i : need) subset.push_back(runs[i]);
    const auto series = data.series(subset, m.key);
    for (std::size_t j = 0; j < need.size(); ++j)
      if (auto v = reduce(series[j], m.reduce); v && std::isfinite(*v)) out[need[j]] = *v * value.scale;
  }
  return out;
}

std::vector<const Run*> scope_runs(const Definition& def, const RunData& data, const std::vector<std::string>& sweeps,
                                   std::vector<std::string>* matched, std::vector<std::string>* missing) {
  const auto indices = data.match_sweeps(sweeps.empty() ? def.sweeps : sweeps, missing);
  std::vector<bool> in_scope(data.sweeps().size(), false), contributes(data.sweeps().size(), false);
  for (auto i : indices) in_scope[i] = true;
  std::vector<const Run*> out;
  for (const auto& run : data.runs()) {
    if (!in_scope[run.sweep] || !def.where.matches(data, run)) continue;
    bool excluded = false;
    for (const auto& w : def.exclude)
      if (w.matches(data, run)) {
        excluded = true;
        break;
      }
    if (!excluded) out.push_back(&run), contributes[run.sweep] = true;
  }
  if (matched)
    for (auto i : indices)
      if (out.empty() || contributes[i]) matched->push_back(data.sweeps()[i].name);
  return out;
}

namespace {

struct Part {
  std::string literal, key, format;
};

/// A key dimension prepared for many runs: its template parsed once.
struct PreparedDim {
  const KeyDim* dim;
  std::vector<Part> parts;
  std::string label(const RunData& data, const Run& run) const {
    if (!dim->key.empty() && !dim->labels.empty()) {
      if (const ParamValue* v = data.param(run, dim->key)) {
        auto it = dim->labels.find(v->text);
        if (it != dim->labels.end()) return it->second;
      }
    }
    std::string out;
    for (const auto& p : parts) {
      out += p.literal;
      if (p.key.empty()) continue;
      const ParamValue* v = data.param(run, p.key);
      out += v ? format_value(*v, p.format) : "—";
    }
    if (dim->key.empty()) {
      auto it = dim->labels.find(out);
      if (it != dim->labels.end()) return it->second;
    }
    return out;
  }
};

PreparedDim prepare(const KeyDim& dim) {
  PreparedDim p{&dim, {}};
  const std::string t = !dim.label.empty() ? dim.label
                        : dim.format.empty() ? "{" + dim.key + "}"
                                             : "{" + dim.key + "|" + dim.format + "}";
  Part current;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '{') {
      const auto close = t.find('}', i);
      if (close == std::string::npos) break;
      const std::string field = t.substr(i + 1, close - i - 1);
      const auto bar = field.find('|');
      current.key = field.substr(0, bar);
      if (bar != std::string::npos) current.format = field.substr(bar + 1);
      p.parts.push_back(std::move(current));
      current = {};
      i = close;
    } else {
      current.literal += t[i];
    }
  }
  if (!current.literal.empty()) p.parts.push_back(std::move(current));
  return p;
}

struct SortKey {
  int order = INT_MAX;
  bool missing = false;
  ParamValue value;
};

bool sort_less(const std::vector<SortKey>& a, const std::vector<SortKey>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].order != b[i].order) return a[i].order < b[i].order;
    if (a[i].missing != b[i].missing) return !a[i].missing;
    if (value_less(a[i].value, b[i].value)) return true;
    if (value_less(b[i].value, a[i].value)) return false;
  }
  return false;
}

}  // namespace

AxisGroups group_runs(const Axis& axis, const RunData& data, const std::vector<const Run*>& runs) {
  AxisGroups g;
  if (!axis.entries.empty()) {
    for (std::size_t e = 0; e < axis.entries.size(); ++e) {
      g.labels.push_back({axis.entries[e].label});
      g.entry.push_back(static_cast<int>(e));
      std::vector<const Run*> at;
      for (const Run* r : runs)
        if (axis.entries[e].where.matches(data, *r)) at.push_back(r);
      g.runs.push_back(std::move(at));
    }
    return g;
  }
  if (axis.keys.empty()) {
    g.labels.push_back({});
    g.runs.push_back(runs);
    return g;
  }
  std::vector<PreparedDim> dims;
  for (const auto& d : axis.keys) dims.push_back(prepare(d));
  std::map<std::vector<std::string>, std::size_t> index;
  std::vector<std::vector<SortKey>> keys;
  std::vector<std::string> labels(dims.size());
  for (const Run* r : runs) {
    for (std::size_t d = 0; d < dims.size(); ++d) labels[d] = dims[d].label(data, *r);
    auto [it, added] = index.emplace(labels, g.labels.size());
    if (added) {
      g.labels.push_back(labels);
      g.runs.emplace_back();
      std::vector<SortKey> key(dims.size());
      for (std::size_t d = 0; d < dims.size(); ++d) {
        const KeyDim& dim = *dims[d].dim;
        const ParamValue* v = dim.key.empty() ? nullptr : data.param(*r, dim.key);
        if (dim.key.empty()) key[d].value.text = labels[d];
        else if (v) key[d].value = *v;
        else key[d].missing = true;
        const ParamValue& shown = dim.key.empty() ? key[d].value : (v ? *v : key[d].value);
        for (std::size_t o = 0; o < dim.order.size(); ++o) {
          if ((v || dim.key.empty()) && value_matches(dim.order[o], &shown)) {
            key[d].order = static_cast<int>(o);
            break;
          }
        }
      }
      keys.push_back(std::move(key));
    }
    g.runs[it->second].push_back(r);
  }
  std::vector<std::size_t> perm(g.labels.size());
  for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = i;
  std::stable_sort(perm.begin(), perm.end(), [&](std::size_t a, std::size_t b) { return sort_less(keys[a], keys[b]); });
  AxisGroups sorted;
  for (auto i : perm) {
    sorted.labels.push_back(std::move(g.labels[i]));
    sorted.runs.push_back(std::move(g.runs[i]));
  }
  return sorted;
}

namespace {

bool ignored_difference(const std::string& key, const Definition& def) {
  static const std::set<std::string> kAlways{"run.seed", "run.device", "run.tag", "train.num_workers", "train.tokens"};
  if (kAlways.count(key)) return true;
  auto ends_with = [&](std::string_view s) { return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0; };
  if (ends_with(".seed") || ends_with(".workers") || ends_with(".num_workers")) return true;
  for (const auto& pattern : def.vary)
    if (pattern == key || fnmatch(pattern.c_str(), key.c_str(), 0) == 0) return true;
  return false;
}

/// Keys (with a few of their values) in which the runs differ, besides the ignored ones.
std::map<std::string, std::set<std::string>> differences(const std::vector<const Run*>& runs, const RunData& data,
                                                         const Definition& def) {
  std::map<std::string, std::set<std::string>> out;
  if (runs.size() < 2 || std::find(def.vary.begin(), def.vary.end(), "*") != def.vary.end()) return out;
  std::set<std::uint32_t> differing;
  const auto& ref = runs[0]->params;
  for (std::size_t i = 1; i < runs.size(); ++i) {
    const auto& other = runs[i]->params;
    std::size_t a = 0, b = 0;
    while (a < ref.size() || b < other.size()) {
      if (b == other.size() || (a < ref.size() && ref[a].first < other[b].first)) {
        differing.insert(ref[a++].first);
      } else if (a == ref.size() || other[b].first < ref[a].first) {
        differing.insert(other[b++].first);
      } else {
        if (ref[a].second.text != other[b].second.text) differing.insert(ref[a].first);
        ++a, ++b;
      }
    }
  }
  for (auto id : differing) {
    const std::string& key = data.key_name(id);
    if (ignored_difference(key, def)) continue;
    auto& values = out[key];
    for (const Run* r : runs) {
      const ParamValue* v = data.param(*r, key);
      values.insert(v ? v->text : "(unset)");
    }
  }
  return out;
}

std::string flatten(std::string text, std::size_t max) {
  for (char& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  std::string out;
  for (char c : text)
    if (!(c == ' ' && !out.empty() && out.back() == ' ')) out += c;
  if (out.size() > max) {
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;  // not inside a UTF-8 character
    out = out.substr(0, cut) + "…";
  }
  return out;
}

std::string field_text(const ListField& f, const RunData& data, const Run& run, std::size_t max) {
  const std::string& k = f.key;
  if (k == "sweep") return data.sweeps()[run.sweep].name;
  if (k == "run") return std::to_string(run.id);
  if (k == "status") return std::string(detail::status_name(run.status));
  if (k == "attempts") return std::to_string(run.attempts);
  if (k == "error") return run.error.empty() ? "—" : flatten(run.error, max);
  if (k == "exit_code") return run.exit_code ? std::to_string(*run.exit_code) : "—";
  if (k == "worker") return run.worker.empty() ? "—" : run.worker;
  if (k == "gpu") return run.gpu.empty() ? "—" : run.gpu;
  if (k == "started") return run.started.empty() ? "—" : run.started;
  if (k == "ended") return run.ended.empty() ? "—" : run.ended;
  if (k.rfind("summary:", 0) == 0) {
    auto v = data.summary(run, k.substr(8));
    return v ? short_number(*v) : "—";
  }
  const ParamValue* v = data.param(run, k);
  return v ? flatten(v->text, max) : "—";
}

void scope_notes(Table& t, const Definition& def, const RunData& data, bool empty_scope) {
  t.notes = sweep_notes(t.sweeps, t.missing_sweeps, data);
  if (empty_scope && !t.sweeps.empty())
    t.notes.push_back(fmt::format("No runs of {} match{}.", join(t.sweeps),
                                  def.where.empty() ? std::string() : fmt::format(" {}", def.where.str())));
}

}  // namespace

std::vector<std::string> sweep_notes(const std::vector<std::string>& matched, const std::vector<std::string>& missing,
                                     const RunData& data) {
  std::vector<std::string> notes;
  if (matched.empty()) {
    std::vector<std::string> names;
    for (const auto& s : data.sweeps()) names.push_back(s.name);
    std::vector<std::string> quoted;
    for (const auto& m : missing) quoted.push_back("'" + m + "'");
    notes.push_back(fmt::format("No sweep in the database matches {}{}.", join(quoted, " or "),
                                names.empty() ? " (the database has no sweeps yet)"
                                              : fmt::format(" (its sweeps: {})", join(names))));
    return notes;
  }
  for (const auto& m : missing)  // a sweep named exactly (not a glob) is expected to be there
    if (m.find_first_of("*?[") == std::string::npos) notes.push_back(fmt::format("Sweep '{}' is not in the database.", m));
  return notes;
}

Table build_table(const Definition& def, const RunData& data, const std::vector<std::string>& sweeps) {
  Table t;
  t.definition = &def;
  t.id = def.id;
  t.title = def.title;
  t.caption = def.caption;
  const auto scope = scope_runs(def, data, sweeps, &t.sweeps, &t.missing_sweeps);
  for (const Run* r : scope) t.scope[r->status] += 1;

  if (def.kind == Kind::runs) {
    for (const auto& f : def.fields) t.row_headers.push_back(f.header);
    std::vector<Status> wanted;
    for (const auto& s : def.statuses) wanted.push_back(*detail::parse_status(s));
    for (const Run* r : scope) {
      if (std::find(wanted.begin(), wanted.end(), r->status) == wanted.end()) continue;
      std::vector<std::string> row;
      for (const auto& f : def.fields) row.push_back(field_text(f, data, *r, def.max_text));
      t.row_labels.push_back(std::move(row));
    }
    t.cells.resize(t.row_labels.size());
    scope_notes(t, def, data, scope.empty());
    if (!scope.empty() && t.row_labels.empty())
      t.notes.push_back(fmt::format("No {} runs (of {}).", join(def.statuses, " or "), t.scope.str()));
    return t;
  }

  AxisGroups rows = group_runs(def.rows, data, scope);
  AxisGroups cols = group_runs(def.columns, data, scope);
  if (!def.rows.entries.empty()) t.row_headers = {def.rows.header};
  else
    for (const auto& d : def.rows.keys) t.row_headers.push_back(d.header);
  if (!def.columns.entries.empty()) t.column_headers = {def.columns.header};
  else if (!def.columns.keys.empty())
    for (const auto& d : def.columns.keys) t.column_headers.push_back(d.header);
  else
    t.column_headers = {""};
  if (def.columns.keys.empty() && def.columns.entries.empty()) cols.labels = {{def.value.label}};
  if (cols.labels.empty()) {  // key columns without any run: one column, named after the value
    cols.labels = {std::vector<std::string>(def.columns.keys.size(), "")};
    cols.labels[0][0] = def.value.label;
    cols.runs = {{}};
  }
  t.row_labels = rows.labels;
  t.column_labels = cols.labels;
  for (std::size_t c = 0; c < cols.labels.size(); ++c) {
    const int e = c < cols.entry.size() ? cols.entry[c] : -1;
    t.column_values.push_back(e >= 0 && def.columns.entries[e].value ? *def.columns.entries[e].value : def.value);
  }

  // Runs → cells, through each run's row and column coordinates.
  std::unordered_map<const Run*, std::vector<std::uint32_t>> col_of;
  for (std::size_t c = 0; c < cols.runs.size(); ++c)
    for (const Run* r : cols.runs[c]) col_of[r].push_back(static_cast<std::uint32_t>(c));
  std::vector<std::vector<std::vector<const Run*>>> at(rows.runs.size(),
                                                       std::vector<std::vector<const Run*>>(cols.labels.size()));
  for (std::size_t r = 0; r < rows.runs.size(); ++r)
    for (const Run* run : rows.runs[r]) {
      auto it = col_of.find(run);
      if (it == col_of.end()) continue;
      for (auto c : it->second) at[r][c].push_back(run);
    }

  t.cells.assign(rows.labels.size(), std::vector<Cell>(cols.labels.size()));
  std::vector<std::string> mixed;
  std::set<int> ns;
  for (std::size_t r = 0; r < at.size(); ++r) {
    for (std::size_t c = 0; c < at[r].size(); ++c) {
      Cell& cell = t.cells[r][c];
      const ValueSpec& spec = t.column_values[c];
      std::vector<const Run*> finished;
      for (const Run* run : at[r][c]) {
        cell.runs[run->status] += 1;
        if (run->status == Status::finished) finished.push_back(run);
      }
      const auto run_numbers = run_values(spec, data, finished);
      std::vector<double> values;
      std::vector<const Run*> with_value;
      for (std::size_t i = 0; i < finished.size(); ++i) {
        if (run_numbers[i]) values.push_back(*run_numbers[i]), with_value.push_back(finished[i]);
        else ++cell.finished_without_value;
      }
      cell.stats = Stats::of(values);
      if (cell.has_value()) ns.insert(cell.stats.n);
      const auto diff = differences(with_value, data, def);
      if (!diff.empty()) {
        std::vector<std::string> parts;
        for (const auto& [key, vals] : diff) {
          if (parts.size() == 3) {
            parts.push_back(fmt::format("{} more key{}", diff.size() - 3, diff.size() == 4 ? "" : "s"));
            break;
          }
          std::vector<std::string> shown(vals.begin(), vals.end());
          if (shown.size() > 4) shown.resize(4), shown.push_back("…");
          parts.push_back(fmt::format("{} ({})", key, join(shown)));
        }
        std::vector<std::string> where = t.row_labels[r];
        for (const auto& l : t.column_labels[c]) where.push_back(l);
        mixed.push_back(fmt::format("{}: {}", join(where, " / "), join(parts, "; ")));
      }
    }
  }
  if (ns.size() == 1) t.uniform_n = *ns.begin();

  // Best cells: per column, within groups of rows sharing every label but the last (or the whole column).
  if (def.best != "none") {
    for (std::size_t c = 0; c < t.column_labels.size(); ++c) {
      const ValueSpec& spec = t.column_values[c];
      if (spec.better == Better::none) continue;
      std::map<std::vector<std::string>, std::vector<std::size_t>> groups;
      for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
        std::vector<std::string> group;
        if (def.best == "group" && t.row_labels[r].size() > 1)
          group.assign(t.row_labels[r].begin(), t.row_labels[r].end() - 1);
        groups[group].push_back(r);
      }
      const double unit = std::pow(10.0, spec.digits);
      for (const auto& [key, members] : groups) {
        std::optional<double> best;
        int with_values = 0;
        for (auto r : members) {
          const Cell& cell = t.cells[r][c];
          if (!cell.has_value()) continue;
          ++with_values;
          const double v = std::round(shown_value(spec, cell.stats) * unit);
          if (!best || (spec.better == Better::higher ? v > *best : v < *best)) best = v;
        }
        if (with_values < 2) continue;  // nothing to compare against
        std::vector<std::size_t> winners;
        for (auto r : members) {
          const Cell& cell = t.cells[r][c];
          if (cell.has_value() && std::round(shown_value(spec, cell.stats) * unit) == *best) winners.push_back(r);
        }
        if (static_cast<int>(winners.size()) == with_values) continue;  // all equal: nothing stands out
        for (auto r : winners) t.cells[r][c].best = true;
      }
    }
  }

  scope_notes(t, def, data, scope.empty());
  if (!mixed.empty()) {
    const std::size_t shown = std::min<std::size_t>(mixed.size(), 5);
    std::string note = fmt::format(
        "{} cell{} average{} runs that differ in more than the seed (add a row or column key or a filter, or list the "
        "key under vary): ",
        mixed.size(), mixed.size() == 1 ? "" : "s", mixed.size() == 1 ? "s" : "");
    std::vector<std::string> head(mixed.begin(), mixed.begin() + static_cast<std::ptrdiff_t>(shown));
    note += join(head, " | ");
    if (mixed.size() > shown) note += fmt::format(" | … and {} more", mixed.size() - shown);
    t.notes.push_back(note);
  }
  return t;
}

}  // namespace cab::report
