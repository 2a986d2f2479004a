// The report as a whole: rendering one definition in a format, the HTML and Markdown reports, writing all files.
#include "cab/report/report.h"

#include <fmt/format.h>

#include <fstream>
#include <future>
#include <optional>

#include "cab/report/figure.h"
#include "cab/report/render.h"
#include "cab/report/table.h"

#include "cab/report/error.h"
#include "report_util.h"
#include "cab/util/join.h"
#include "cab/build_info.h"

namespace cab::report {

std::optional<Format> parse_format(std::string_view name) {
  if (name == "md" || name == "markdown") return Format::markdown;
  if (name == "tex" || name == "latex") return Format::latex;
  if (name == "csv") return Format::csv;
  if (name == "json") return Format::json;
  if (name == "html") return Format::html;
  if (name == "svg") return Format::svg;
  return std::nullopt;
}

std::string_view extension(Format format) {
  switch (format) {
    case Format::markdown: return "md";
    case Format::latex: return "tex";
    case Format::csv: return "csv";
    case Format::json: return "json";
    case Format::html: return "html";
    case Format::svg: return "svg";
  }
  return "txt";
}

Report::Report(const RunData& data, std::vector<Definition> definitions, std::vector<std::string> sweeps)
    : data_(data), definitions_(std::move(definitions)), sweeps_(std::move(sweeps)) {}

const Definition& Report::definition(const std::string& id) const {
  std::vector<std::string> ids;
  for (const auto& d : definitions_) {
    if (d.id == id) return d;
    ids.push_back(d.id);
  }
  throw ReportError(fmt::format("unknown table '{}'{}; the defined tables and figures are: {} (cab-report list)", id,
                          detail::did_you_mean(id, ids), ids.empty() ? "none" : join(ids)));
}

std::string Report::render(const std::string& id, Format format) const {
  const Definition& def = definition(id);
  if (def.is_figure()) {
    const Figure f = build_figure(def, data_, sweeps_);
    Palette palette;
    switch (format) {
      case Format::svg: return to_svg(f, palette);
      case Format::json: return to_json(f);
      case Format::html: return html_page(f.title, html_figure(f, palette));
      case Format::markdown: return to_markdown(figure_table(f));
      case Format::latex: return to_latex(figure_table(f));
      case Format::csv: return to_csv(figure_table(f));
    }
  }
  if (format == Format::svg)
    throw ReportError(fmt::format("'{}' is a table: svg is for figures; use md, tex, csv, json or html", id));
  const Table t = build_table(def, data_, sweeps_);
  switch (format) {
    case Format::markdown: return to_markdown(t);
    case Format::latex: return to_latex(t);
    case Format::csv: return to_csv(t);
    case Format::json: return to_json(t);
    case Format::html: return html_page(t.title, html_table(t));
    case Format::svg: break;
  }
  return "";
}

namespace {

std::string sweeps_markup(const RunData& data) {
  std::string out = "<section class=\"item\" id=\"sweeps\">\n<h2>Sweeps in the database</h2>\n";
  if (data.sweeps().empty()) return out + "<p class=\"caption\">The database holds no sweeps yet.</p>\n</section>\n";
  out += "<div class=\"scroll\"><table class=\"cab-sweeps\">\n<thead><tr><th>sweep</th><th class=\"num\">runs</th>"
         "<th class=\"num\">finished</th><th class=\"num\">running</th><th class=\"num\">pending</th>"
         "<th class=\"num\">failed</th><th class=\"num\">killed</th><th>created</th></tr></thead>\n<tbody>\n";
  using store::Status;
  for (const auto& s : data.sweeps()) {
    out += fmt::format("<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                       "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
                       html_escape(s.name), s.counts.total(), s.counts[Status::finished], s.counts[Status::running],
                       s.counts[Status::pending], s.counts[Status::failed], s.counts[Status::killed],
                       html_escape(s.created));
  }
  return out + "</tbody>\n</table></div>\n</section>\n";
}

void write_file(const std::filesystem::path& path, const std::string& text, std::vector<std::filesystem::path>& written) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw ReportError(fmt::format("cannot write '{}'", path.string()));
  written.push_back(path);
}

std::string report_page(const RunData& data, const std::string& nav, const std::string& items) {
  std::string body = "<header>\n<h1>cab report</h1>\n";
  body += fmt::format("<p class=\"meta\">Run database <code>{}</code> · {} sweep{} · generated {} by cab {} (git {}{})</p>\n",
                      html_escape(data.path().string()), data.sweeps().size(), data.sweeps().size() == 1 ? "" : "s",
                      detail::utc_now(), CAB_BUILD_VERSION, CAB_BUILD_GIT_SHA, CAB_BUILD_GIT_DIRTY ? ", dirty" : "");
  body += "</header>\n<nav><ol>\n" + nav + "<li><a href=\"#sweeps\">Sweeps in the database</a></li>\n</ol></nav>\n<main>\n";
  body += items + sweeps_markup(data) + "</main>\n";
  body += "<footer>Regenerate with <code>cab-report all --db " + html_escape(data.path().string()) +
          " --out-dir DIR</code>; the table and figure definitions are listed by <code>cab-report list</code>.</footer>\n";
  return html_page("cab report", body);
}

std::string nav_entry(const Definition& d) {
  return fmt::format("<li><a href=\"#{}\">{}</a></li>\n", html_escape(d.id), html_escape(d.title));
}

std::string markdown_head(const RunData& data) {
  return fmt::format("# cab report\n\nRun database `{}`, generated {} by cab {}.\n\n", data.path().string(),
                     detail::utc_now(), CAB_BUILD_VERSION);
}

std::string markdown_figure(const Figure& f) {
  std::string out = fmt::format("### {}\n\n![{}]({}.svg)\n\n", f.title, f.title, f.id);
  for (const auto& n : f.notes) out += n + "\n";
  return out + "\n";
}

/// Every definition built, each on its own thread (they only read the loaded data; per-step metrics come
/// through their own connections), in definition order.
struct Built {
  std::optional<Table> table;
  std::optional<Figure> figure;
};

std::vector<Built> build_all(const std::vector<Definition>& definitions, const RunData& data,
                             const std::vector<std::string>& sweeps) {
  std::vector<std::future<Built>> futures;
  for (const auto& d : definitions)
    futures.push_back(std::async(std::launch::async, [&d, &data, &sweeps] {
      Built b;
      if (d.is_figure()) b.figure = build_figure(d, data, sweeps);
      else b.table = build_table(d, data, sweeps);
      return b;
    }));
  std::vector<Built> out;
  for (auto& f : futures) out.push_back(f.get());
  return out;
}

}  // namespace

std::string Report::html() const {
  std::string nav, items;
  Palette palette;
  const auto built = build_all(definitions_, data_, sweeps_);
  for (std::size_t i = 0; i < definitions_.size(); ++i) {
    nav += nav_entry(definitions_[i]);
    items += built[i].figure ? html_figure(*built[i].figure, palette) : html_table(*built[i].table);
  }
  return report_page(data_, nav, items);
}

std::string Report::markdown() const {
  std::string out = markdown_head(data_);
  for (const auto& b : build_all(definitions_, data_, sweeps_))
    out += b.figure ? markdown_figure(*b.figure) : to_markdown(*b.table) + "\n";
  return out;
}

std::vector<std::filesystem::path> Report::write_all(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw ReportError(fmt::format("cannot create the output directory '{}': {}", dir.string(), ec.message()));
  std::vector<std::filesystem::path> written;
  Palette palette;  // one palette: a series has the same colour in every figure and in the standalone SVGs
  std::string nav, items, md = markdown_head(data_);
  const auto built = build_all(definitions_, data_, sweeps_);
  for (std::size_t i = 0; i < definitions_.size(); ++i) {
    const Definition& d = definitions_[i];
    nav += nav_entry(d);
    const std::string base = (dir / d.id).string();
    if (d.is_figure()) {
      const Figure& f = *built[i].figure;
      items += html_figure(f, palette);
      write_file(base + ".svg", to_svg(f, palette), written);
      write_file(base + ".json", to_json(f), written);
      write_file(base + ".csv", to_csv(figure_table(f)), written);
      md += markdown_figure(f);
    } else {
      const Table& t = *built[i].table;
      items += html_table(t);
      const std::string table_md = to_markdown(t);
      write_file(base + ".md", table_md, written);
      write_file(base + ".tex", to_latex(t), written);
      write_file(base + ".csv", to_csv(t), written);
      write_file(base + ".json", to_json(t), written);
      md += table_md + "\n";
    }
  }
  write_file(dir / "report.html", report_page(data_, nav, items), written);
  write_file(dir / "report.md", md, written);
  return written;
}

std::string version_line() {
  return fmt::format("cab-report {} (git {}{}), run database schema {}", CAB_BUILD_VERSION, CAB_BUILD_GIT_SHA,
                     CAB_BUILD_GIT_DIRTY ? ", dirty" : "", store::Store::kSchemaVersion);
}

std::string list_definitions(const std::vector<Definition>& definitions, const RunData* data) {
  std::size_t id_w = 2, kind_w = 4;
  for (const auto& d : definitions) {
    id_w = std::max(id_w, d.id.size());
    kind_w = std::max(kind_w, to_string(d.kind).size());
  }
  std::string out = fmt::format("{:<{}}  {:<{}}  {}\n", "ID", id_w, "KIND", kind_w, "TITLE / SWEEPS / RUNS");
  for (const auto& d : definitions) {
    out += fmt::format("{:<{}}  {:<{}}  {}\n", d.id, id_w, to_string(d.kind), kind_w, d.title);
    std::string detail = "sweeps " + join(d.sweeps);
    if (data) {
      std::vector<std::string> matched, missing;
      const auto runs = scope_runs(d, *data, {}, &matched, &missing);
      StatusCounts counts;
      for (const Run* r : runs) counts[r->status] += 1;
      detail += matched.empty() ? " (none in the database)" : fmt::format(" → {}: {}", join(matched), counts.str());
    }
    out += fmt::format("{:<{}}  {:<{}}  {}\n", "", id_w, "", kind_w, detail);
  }
  return out;
}

}  // namespace cab::report
