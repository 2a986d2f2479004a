// Output formats of tables and figures: Markdown, LaTeX (booktabs), CSV (one line per cell), JSON, SVG plots,
// and self-contained HTML (inline CSS and SVG; no scripts, no network).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "cab/export.h"
#include "cab/report/figure.h"
#include "cab/report/table.h"

namespace cab::report {

/// What a reader needs below a table, as sentences: how cells are aggregated ("mean ± std over 2 seeds per
/// cell"), what bold means, the column dimension, the runs it covers, and its notes.
CAB_API std::vector<std::string> table_footnotes(const Table& table);
/// Whether the cell in row `r` repeats the leading labels of the row above up to label column `d`.
CAB_API bool repeats_label(const Table& table, std::size_t r, std::size_t d);

CAB_API std::string to_markdown(const Table& table);
CAB_API std::string to_latex(const Table& table);
/// Tidy CSV: the row and column labels, then value, std, n, min, max, pending, failed, best, text.
/// Run listings: one line per run with its fields.
CAB_API std::string to_csv(const Table& table);
CAB_API std::string to_json(const Table& table);
CAB_API std::string to_json(const Figure& figure);

/// Series colours that stay the same across the figures of one report (assigned in order of first use).
class CAB_API Palette {
 public:
  const std::string& color(const std::string& label);

 private:
  std::map<std::string, std::string> assigned_;
};

/// One SVG with the figure's panels side by side (two per row), axes, labels and legend.
CAB_API std::string to_svg(const Figure& figure, Palette& palette);

/// HTML fragments and pages.
CAB_API std::string html_escape(const std::string& text);
CAB_API std::string html_table(const Table& table);
CAB_API std::string html_figure(const Figure& figure, Palette& palette);
/// A complete page around `body` (inline stylesheet).
CAB_API std::string html_page(const std::string& title, const std::string& body);

}  // namespace cab::report
