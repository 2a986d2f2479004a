// Self-contained HTML: tables with grouped row labels and spanning column headers, figures as inline SVG with
// their numbers in a collapsible table, one inline stylesheet; no scripts and nothing fetched from a network.
#include <fmt/format.h>

#include "cab/report/render.h"
#include "cab/util/join.h"

namespace cab::report {

namespace {

constexpr const char* kStyle = R"css(
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d1d1f;
       max-width: 1120px; margin: 2rem auto; padding: 0 1.25rem; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin: 2.2rem 0 .4rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta, .caption { color: #555; margin: .2rem 0 .8rem; }
nav ol { columns: 2; padding-left: 1.2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0; font-variant-numeric: tabular-nums; }
thead { border-top: 2px solid #222; border-bottom: 1px solid #222; }
tbody { border-bottom: 2px solid #222; }
th, td { padding: .28rem .7rem; text-align: left; vertical-align: top; }
th { white-space: nowrap; }
th.span { text-align: center; border-bottom: 1px solid #999; }
td.num, th.num { text-align: center; white-space: nowrap; }
tr.group-start td { border-top: 1px solid #bbb; }
td.best strong { font-weight: 700; }
td.empty { color: #888; font-style: italic; }
td.text { max-width: 40rem; word-break: break-word; font-size: .9em; }
.n { display: block; color: #666; font-size: .78em; line-height: 1.2; }
ul.notes { color: #555; font-size: .88em; padding-left: 1.1rem; margin-top: .3rem; }
figure { margin: .4rem 0; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; border: 1px solid #eee; }
details { margin: .3rem 0; font-size: .9em; }
footer { margin-top: 3rem; color: #777; font-size: .85em; }
)css";

std::string table_markup(const Table& t, const std::string& css_class) {
  const std::size_t label_cols = t.row_headers.size();
  const std::size_t cols = t.column_labels.size();
  std::string out = fmt::format("<div class=\"scroll\"><table class=\"{}\" data-table=\"{}\">\n<thead>\n", css_class,
                                html_escape(t.id));
  const std::size_t levels = cols == 0 ? 0 : t.column_labels[0].size();
  if (levels == 1 && t.column_headers.size() == 1 && !t.column_headers[0].empty() && cols > 1) {
    out += fmt::format("<tr>{}<th class=\"span\" colspan=\"{}\">{}</th></tr>\n",
                       label_cols ? fmt::format("<th colspan=\"{}\"></th>", label_cols) : "", cols,
                       html_escape(t.column_headers[0]));
  }
  for (std::size_t level = 0; level < std::max<std::size_t>(levels, 1); ++level) {
    const bool last = levels == 0 || level + 1 == levels;
    out += "<tr>";
    if (last)
      for (const auto& h : t.row_headers) out += "<th scope=\"col\">" + html_escape(h) + "</th>";
    else if (label_cols)
      out += fmt::format("<th colspan=\"{}\"></th>", label_cols);
    for (std::size_t c = 0; c < cols && levels > 0;) {
      std::size_t span = 1;
      if (!last)
        while (c + span < cols && std::equal(t.column_labels[c].begin(),
                                             t.column_labels[c].begin() + static_cast<std::ptrdiff_t>(level) + 1,
                                             t.column_labels[c + span].begin()))
          ++span;
      out += fmt::format("<th class=\"num{}\" scope=\"col\"{}>{}</th>", span > 1 ? " span" : "",
                         span > 1 ? fmt::format(" colspan=\"{}\"", span) : "", html_escape(t.column_labels[c][level]));
      c += span;
    }
    out += "</tr>\n";
  }
  out += "</thead>\n<tbody>\n";
  for (std::size_t r = 0; r < t.row_labels.size(); ++r) {
    const bool group_start = r > 0 && label_cols > 1 && !t.listing() && !repeats_label(t, r, 0);
    out += group_start ? "<tr class=\"group-start\">" : "<tr>";
    for (std::size_t d = 0; d < label_cols && d < t.row_labels[r].size(); ++d) {
      if (repeats_label(t, r, d)) continue;  // covered by a rowspan above
      std::size_t span = 1;
      while (r + span < t.row_labels.size() && repeats_label(t, r + span, d)) ++span;
      const char* cls = t.listing() ? " class=\"text\"" : "";
      out += fmt::format("<{0}{1}{2}>{3}</{0}>", t.listing() ? "td" : "th", cls,
                         span > 1 ? fmt::format(" rowspan=\"{}\"", span) : "", html_escape(t.row_labels[r][d]));
    }
    for (std::size_t c = 0; c < cols && r < t.cells.size(); ++c) {
      const Cell& cell = t.cells[r][c];
      const ValueSpec& v = t.column_values[c];
      if (!cell.text.empty()) {
        out += "<td class=\"num\">" + html_escape(cell.text) + "</td>";
      } else if (!cell.has_value()) {
        out += "<td class=\"num empty\">" + html_escape(cell_text(v, cell, true)) + "</td>";
      } else {
        std::string number = html_escape(number_text(v, cell.stats));
        if (cell.best) number = "<strong>" + number + "</strong>";
        std::vector<std::string> extra;
        if (!t.uniform_n) extra.push_back(fmt::format("n={}", cell.stats.n));
        if (const auto e = cell_extras(cell); !e.empty()) extra.push_back(e);
        if (!extra.empty()) number += " <span class=\"n\">(" + html_escape(join(extra, "; ")) + ")</span>";
        out += fmt::format("<td class=\"num{}\">{}</td>", cell.best ? " best" : "", number);
      }
    }
    out += "</tr>\n";
  }
  out += "</tbody>\n</table></div>\n";
  return out;
}

std::string notes_markup(const std::vector<std::string>& notes) {
  if (notes.empty()) return "";
  std::string out = "<ul class=\"notes\">\n";
  for (const auto& n : notes) out += "<li>" + html_escape(n) + "</li>\n";
  return out + "</ul>\n";
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string html_table(const Table& t) {
  std::string out = fmt::format("<section class=\"item table\" id=\"{}\">\n<h2>{}</h2>\n", html_escape(t.id),
                                html_escape(t.title));
  if (!t.caption.empty()) out += "<p class=\"caption\">" + html_escape(t.caption) + "</p>\n";
  if (!t.row_labels.empty()) out += table_markup(t, "cab-table");  // an empty table is left out: the notes say why
  out += notes_markup(table_footnotes(t));
  return out + "</section>\n";
}

std::string html_figure(const Figure& f, Palette& palette) {
  std::string out = fmt::format("<section class=\"item figure\" id=\"{}\">\n<h2>{}</h2>\n", html_escape(f.id),
                                html_escape(f.title));
  if (!f.caption.empty()) out += "<p class=\"caption\">" + html_escape(f.caption) + "</p>\n";
  out += "<figure>\n" + to_svg(f, palette) + "</figure>\n";
  const Table data = figure_table(f);
  if (!data.row_labels.empty())
    out += "<details><summary>The numbers</summary>\n" + table_markup(data, "cab-data") + "</details>\n";
  std::vector<std::string> notes;
  if (!f.sweeps.empty()) notes.push_back(fmt::format("Sweeps: {} ({}).", join(f.sweeps), f.scope.str()));
  notes.insert(notes.end(), f.notes.begin(), f.notes.end());
  out += notes_markup(notes);
  return out + "</section>\n";
}

std::string html_page(const std::string& title, const std::string& body) {
  return fmt::format("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                     "<meta name=\"generator\" content=\"cab-report\">\n<title>{}</title>\n<style>{}</style>\n"
                     "</head>\n<body>\n{}</body>\n</html>\n",
                     html_escape(title), kStyle, body);
}

}  // namespace cab::report
