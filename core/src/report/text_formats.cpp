// Markdown, LaTeX (booktabs) and CSV renderings of tables, with the footnotes they share.
#include <fmt/format.h>

#include <algorithm>

#include "cab/report/render.h"
#include "cab/util/join.h"

namespace cab::report {

namespace {

std::string aggregate_words(const ValueSpec& v, const Table& t) {
  // A cell's runs differ only in their seeds, unless the definition lets more keys vary: then they are "runs".
  const bool seeds = !t.definition || t.definition->vary.empty();
  const std::string over = t.uniform_n ? fmt::format("over {} {} per cell", *t.uniform_n,
                                                     seeds ? (*t.uniform_n == 1 ? "seed" : "seeds")
                                                           : (*t.uniform_n == 1 ? "run" : "runs"))
                                       : "over the n finished runs of each cell (n shown per cell)";
  switch (v.aggregate) {
    case Aggregate::mean_std:
      if (t.uniform_n && *t.uniform_n == 1) return seeds ? "one seed per cell" : "one run per cell";
      return "mean ± std " + over;
    case Aggregate::mean: return "mean " + over;
    case Aggregate::sum: return "sum over the finished runs of each cell";
    case Aggregate::min: return "minimum " + over;
    case Aggregate::max: return "maximum " + over;
    case Aggregate::count: return "number of finished runs per cell";
  }
  return "";
}

const char* better_word(Better b) { return b == Better::higher ? "highest" : "lowest"; }

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string latex_escape(const std::string& s) {
  static const std::pair<const char*, const char*> kUnicode[] = {
      {"→", "$\\rightarrow$"}, {"±", "$\\pm$"}, {"≈", "$\\approx$"}, {"φ", "$\\phi$"}, {"Ā", "$\\bar{A}$"},
      {"×", "$\\times$"},      {"—", "---"},     {"–", "--"},          {"·", "$\\cdot$"}, {"λ", "$\\lambda$"},
      {"τ", "$\\tau$"},        {"α", "$\\alpha$"}, {"≤", "$\\leq$"},   {"≥", "$\\geq$"}, {"…", "\\ldots{}"},
      {"µ", "$\\mu$"},         {"Δ", "$\\Delta$"}, {"↔", "$\\leftrightarrow$"}, {"⏎", " "}};
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    bool replaced = false;
    for (const auto& [from, to] : kUnicode) {
      const std::size_t n = std::char_traits<char>::length(from);
      if (s.compare(i, n, from) == 0) {
        out += to;
        i += n;
        replaced = true;
        break;
      }
    }
    if (replaced) continue;
    const char c = s[i++];
    switch (c) {
      case '&': out += "\\&"; break;
      case '%': out += "\\%"; break;
      case '$': out += "\\$"; break;
      case '#': out += "\\#"; break;
      case '_': out += "\\_"; break;
      case '{': out += "\\{"; break;
      case '}': out += "\\}"; break;
      case '~': out += "\\textasciitilde{}"; break;
      case '^': out += "\\textasciicircum{}"; break;
      case '\\': out += "\\textbackslash{}"; break;
      case '\n': out += ' '; break;
      default: out += c;
    }
  }
  return out;
}

std::string column_label(const Table& t, std::size_t c) { return join(t.column_labels[c], " · "); }

bool omit_n(const Table& t) { return t.uniform_n.has_value(); }

}  // namespace

bool repeats_label(const Table& t, std::size_t r, std::size_t d) {
  if (t.listing() || r == 0 || d + 1 >= t.row_labels[r].size()) return false;  // the last label column always shows
  for (std::size_t i = 0; i <= d; ++i)
    if (t.row_labels[r][i] != t.row_labels[r - 1][i]) return false;
  return true;
}

std::vector<std::string> table_footnotes(const Table& t) {
  std::vector<std::string> out;
  bool any_value = false;
  for (const auto& row : t.cells)
    for (const auto& cell : row) any_value = any_value || cell.has_value();
  if (!t.listing() && any_value && !t.column_values.empty()) {  // how to read the numbers, when there are some
    bool same = true;
    for (const auto& v : t.column_values) same = same && v.aggregate == t.column_values[0].aggregate;
    const ValueSpec& v = t.column_values[0];
    std::string what;
    if (t.column_labels.size() == 1 || same) {
      const bool named = t.column_values.size() == 1 || std::all_of(t.column_values.begin(), t.column_values.end(),
                                                                    [&](const ValueSpec& x) { return x.label == v.label; });
      what = fmt::format("{}{}.", named && !v.label.empty() ? v.label + ": " : "Cells: ", aggregate_words(v, t));
    } else {
      ValueSpec mean = v;
      mean.aggregate = Aggregate::mean_std;
      what = fmt::format("Cells: {}; columns marked as totals or counts aggregate differently (sum, count).",
                         aggregate_words(mean, t));
      bool sums = false;
      for (const auto& c : t.column_values) sums = sums || c.aggregate == Aggregate::sum;
      if (sums) what = fmt::format("Cells: {}; totals are sums over the finished runs.", aggregate_words(mean, t));
    }
    what[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(what[0])));
    out.push_back(what);
    std::vector<std::string> best;
    for (std::size_t c = 0; c < t.column_values.size(); ++c)
      if (t.column_values[c].better != Better::none) {
        const std::string phrase = better_word(t.column_values[c].better);
        if (std::find(best.begin(), best.end(), phrase) == best.end()) best.push_back(phrase);
      }
    bool any_bold = false;
    for (const auto& row : t.cells)
      for (const auto& cell : row) any_bold = any_bold || cell.best;
    if (!best.empty() && any_bold && t.definition && t.definition->best != "none") {
      std::string within;
      if (t.definition->best == "group" && t.row_headers.size() > 1) {
        std::vector<std::string> groups(t.row_headers.begin(), t.row_headers.end() - 1);
        within = " within each " + join(groups, " and ");
      }
      out.push_back(fmt::format("Bold: the best ({}) value of each column{}.", join(best, " or "), within));
    }
    std::vector<std::string> dims;
    for (const auto& h : t.column_headers)
      if (!h.empty()) dims.push_back(h);
    if (!dims.empty()) out.push_back(fmt::format("Columns: {}.", join(dims, " × ")));
  }
  if (!t.sweeps.empty()) out.push_back(fmt::format("Sweeps: {} ({}).", join(t.sweeps), t.scope.str()));
  for (const auto& n : t.notes) out.push_back(n);
  return out;
}

std::string to_markdown(const Table& t) {
  std::string out = fmt::format("### {}\n\n", md_escape(t.title));
  if (!t.caption.empty()) out += md_escape(t.caption) + "\n\n";
  const std::size_t label_cols = t.row_headers.size();
  if (!t.row_labels.empty()) {  // an empty table is left out: its notes say why
    std::vector<std::string> header;
    for (const auto& h : t.row_headers) header.push_back(md_escape(h));
    for (std::size_t c = 0; c < t.column_labels.size(); ++c) header.push_back(md_escape(column_label(t, c)));
    out += "| " + join(header, " | ") + " |\n|";
    for (std::size_t i = 0; i < header.size(); ++i) out += i < label_cols ? "---|" : "--:|";
    out += "\n";
    for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
      std::vector<std::string> row;
      for (std::size_t d = 0; d < label_cols; ++d)
        row.push_back(d < t.row_labels[r].size() && !repeats_label(t, r, d) ? md_escape(t.row_labels[r][d]) : "");
      for (std::size_t c = 0; c < t.column_labels.size() && r < t.cells.size(); ++c) {
        const Cell& cell = t.cells[r][c];
        std::string text = md_escape(cell_text(t.column_values[c], cell, omit_n(t)));
        if (cell.best) text = "**" + text + "**";
        else if (!cell.has_value() && cell.text.empty()) text = "*" + text + "*";
        row.push_back(text);
      }
      out += "| " + join(row, " | ") + " |\n";
    }
    out += "\n";
  }
  for (const auto& note : table_footnotes(t)) out += md_escape(note) + "\n";
  return out;
}

std::string to_latex(const Table& t) {
  const std::size_t label_cols = t.row_headers.size();
  const std::size_t cols = t.column_labels.size();
  std::string out = "% Generated by cab-report; needs \\usepackage{booktabs}.\n\\begin{table}[t]\n\\centering\n";
  std::string caption = latex_escape(t.title);
  if (!t.caption.empty()) caption += ". " + latex_escape(t.caption);
  out += fmt::format("\\caption{{{}}}\n\\label{{tab:{}}}\n", caption, t.id);
  if (t.row_labels.empty()) {  // nothing to tabulate: the caption and the notes say why
    std::vector<std::string> escaped;
    for (const auto& n : table_footnotes(t)) escaped.push_back(latex_escape(n));
    return out + "{\\footnotesize " + join(escaped, " ") + "}\n\\end{table}\n";
  }
  std::string spec;
  for (std::size_t d = 0; d < label_cols; ++d)  // long texts (a failed run's reason) wrap in a paragraph column
    spec += t.listing() && t.definition && d < t.definition->fields.size() && t.definition->fields[d].key == "error"
                ? "p{0.4\\linewidth}"
                : "l";
  out += "\\begin{tabular}{" + spec + std::string(cols, 'c') + "}\n\\toprule\n";
  // Column header rows: one per column dimension (spanning equal outer labels); a single dimension with a
  // name gets a spanning name row above it.
  const std::size_t levels = cols == 0 ? 0 : t.column_labels[0].size();
  if (levels == 1 && t.column_headers.size() == 1 && !t.column_headers[0].empty() && cols > 0) {
    out += std::string(label_cols > 0 ? label_cols - 1 : 0, '&') + (label_cols > 0 ? " & " : "");
    out += fmt::format("\\multicolumn{{{}}}{{c}}{{{}}} \\\\\n", cols, latex_escape(t.column_headers[0]));
    out += fmt::format("\\cmidrule(lr){{{}-{}}}\n", label_cols + 1, label_cols + cols);
  }
  for (std::size_t level = 0; level < levels; ++level) {
    const bool last = level + 1 == levels;
    std::vector<std::string> cells;
    for (std::size_t d = 0; d < label_cols; ++d) cells.push_back(last ? latex_escape(t.row_headers[d]) : "");
    std::string rules;
    for (std::size_t c = 0; c < cols;) {
      std::size_t span = 1;
      if (!last)
        while (c + span < cols &&
               std::equal(t.column_labels[c].begin(), t.column_labels[c].begin() + static_cast<std::ptrdiff_t>(level) + 1,
                          t.column_labels[c + span].begin()))
          ++span;
      const std::string label = latex_escape(t.column_labels[c][level]);
      cells.push_back(span > 1 ? fmt::format("\\multicolumn{{{}}}{{c}}{{{}}}", span, label) : label);
      if (!last) rules += fmt::format("\\cmidrule(lr){{{}-{}}}", label_cols + c + 1, label_cols + c + span);
      c += span;
    }
    out += join(cells, " & ") + " \\\\\n";
    if (!rules.empty()) out += rules + "\n";
  }
  if (levels == 0) {
    std::vector<std::string> cells;
    for (const auto& h : t.row_headers) cells.push_back(latex_escape(h));
    out += join(cells, " & ") + " \\\\\n";
  }
  out += "\\midrule\n";
  for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
    if (r > 0 && label_cols > 1 && !t.listing() && !repeats_label(t, r, 0)) out += "\\midrule\n";
    std::vector<std::string> cells;
    for (std::size_t d = 0; d < label_cols; ++d)
      cells.push_back(d < t.row_labels[r].size() && !repeats_label(t, r, d) ? latex_escape(t.row_labels[r][d]) : "");
    for (std::size_t c = 0; c < cols && r < t.cells.size(); ++c) {
      const Cell& cell = t.cells[r][c];
      const ValueSpec& v = t.column_values[c];
      if (!cell.text.empty()) {
        cells.push_back(latex_escape(cell.text));
      } else if (!cell.has_value()) {
        cells.push_back("\\textit{" + latex_escape(cell_text(v, cell, true)) + "}");
      } else {
        std::string number = number_text(v, cell.stats, " \\pm ");
        number = cell.best ? "$\\mathbf{" + number + "}$" : "$" + number + "$";
        std::vector<std::string> extra;
        if (!omit_n(t)) extra.push_back(fmt::format("n={}", cell.stats.n));
        if (const auto e = cell_extras(cell); !e.empty()) extra.push_back(e);
        if (!extra.empty()) number += "\\,{\\scriptsize(" + latex_escape(join(extra, "; ")) + ")}";
        cells.push_back(number);
      }
    }
    out += join(cells, " & ") + " \\\\\n";
  }
  out += "\\bottomrule\n\\end{tabular}\n";
  const auto notes = table_footnotes(t);
  if (!notes.empty()) {
    std::vector<std::string> escaped;
    for (const auto& n : notes) escaped.push_back(latex_escape(n));
    out += "\\par\\smallskip{\\footnotesize " + join(escaped, " ") + "}\n";
  }
  out += "\\end{table}\n";
  return out;
}

std::string to_csv(const Table& t) {
  std::vector<std::string> header;
  for (const auto& h : t.row_headers) header.push_back(csv_field(h.empty() ? "row" : h));
  std::string out;
  if (t.listing()) {
    out = join(header, ",") + "\n";
    for (const auto& row : t.row_labels) {
      std::vector<std::string> fields;
      for (const auto& f : row) fields.push_back(csv_field(f));
      out += join(fields, ",") + "\n";
    }
    return out;
  }
  const std::size_t levels = t.column_labels.empty() ? 0 : t.column_labels[0].size();
  for (std::size_t l = 0; l < levels; ++l)
    header.push_back(csv_field(l < t.column_headers.size() && !t.column_headers[l].empty()
                                   ? t.column_headers[l]
                                   : (levels == 1 ? "column" : fmt::format("column {}", l + 1))));
  for (const char* h : {"value", "std", "n", "min", "max", "pending", "failed", "best", "text"}) header.push_back(h);
  out = join(header, ",") + "\n";
  for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
    for (std::size_t c = 0; c < t.column_labels.size(); ++c) {
      const Cell& cell = t.cells[r][c];
      const ValueSpec& v = t.column_values[c];
      std::vector<std::string> fields;
      for (const auto& l : t.row_labels[r]) fields.push_back(csv_field(l));
      for (const auto& l : t.column_labels[c]) fields.push_back(csv_field(l));
      if (cell.has_value()) {
        const double shown = shown_value(v, cell.stats);
        fields.push_back(fmt::format("{:.{}f}", shown, std::max(v.digits, 4)));
        fields.push_back(cell.stats.n > 1 ? fmt::format("{:.{}f}", cell.stats.std, std::max(v.digits, 4)) : "");
        fields.push_back(std::to_string(cell.stats.n));
        fields.push_back(fmt::format("{:.{}f}", cell.stats.min, std::max(v.digits, 4)));
        fields.push_back(fmt::format("{:.{}f}", cell.stats.max, std::max(v.digits, 4)));
      } else {
        for (const char* empty : {"", "", "0", "", ""}) fields.push_back(empty);  // value, std, n, min, max
      }
      fields.push_back(std::to_string(cell.runs[store::Status::pending] + cell.runs[store::Status::running]));
      fields.push_back(std::to_string(cell.runs[store::Status::failed] + cell.runs[store::Status::killed]));
      fields.push_back(cell.best ? "1" : "0");
      fields.push_back(csv_field(cell_text(v, cell, false)));
      out += join(fields, ",") + "\n";
    }
  }
  return out;
}

}  // namespace cab::report
