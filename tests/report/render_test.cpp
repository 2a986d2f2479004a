// Output formats on a demo database: Markdown (exact), LaTeX booktabs, tidy CSV, JSON, SVG plots and the
// self-contained HTML report. CAB_REPORT_DEMO_DB=FILE keeps a copy of the demo database for a look.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "cab/report/figure.h"
#include "cab/report/render.h"
#include "cab/report/report.h"
#include "cab/report/table.h"
#include "report_db.h"
#include "test_support.h"

using cab::report::build_figure;
using cab::report::build_table;
using cab::report::Definition;
using cab::report::RunData;

namespace {

const std::string kTables = std::string(CAB_TEST_SOURCE_DIR) + "/results/tables";

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

class RenderTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = dir_ / "cab.sqlite";
    cab::test::write_demo_database(db_);
    if (const char* keep = std::getenv("CAB_REPORT_DEMO_DB")) {
      std::filesystem::copy_file(db_, keep, std::filesystem::copy_options::overwrite_existing);
    }
    data_ = std::make_unique<RunData>(RunData::open(db_));
    definitions_ = cab::report::load_definitions({kTables});
  }
  const Definition& def(const std::string& id) {
    for (const auto& d : definitions_)
      if (d.id == id) return d;
    throw std::runtime_error("no definition " + id);
  }
  std::filesystem::path db_;
  std::unique_ptr<RunData> data_;
  std::vector<Definition> definitions_;
};

}  // namespace

TEST_F(RenderTest, MarkdownTable3) {
  const std::string md = cab::report::to_markdown(build_table(def("table3"), *data_));
  EXPECT_EQ(md, R"(### Table 3: top-1 accuracy (%) by fraction of the training data

Students distilled from a Transformer teacher with each method, evaluated on the test split.

| Teacher → Student | Method | 1% | 5% | 10% | 20% |
|---|---|--:|--:|--:|--:|
| vit → vim | Vanilla | 11.2 ± 0.6 | 15.3 ± 0.6 | 27.4 ± 0.6 | 29.2 ± 0.6 |
|  | Soft KD | 20.4 ± 0.6 | 23.3 ± 0.6 | 37.0 ± 0.6 | 41.1 ± 0.6 (1 failed) |
|  | MOHAWK-style | *no finished run (1 pending)* | *no runs* | *no runs* | *no runs* |
|  | CAB (ours) | **27.8 ± 0.6** | **27.3 ± 0.6** | **45.4 ± 0.6** | **46.0 ± 0.6** |

Top-1 (%): mean ± std over 2 seeds per cell.
Bold: the best (highest) value of each column within each Teacher → Student.
Columns: Fraction of the training data.
Sweeps: fmnist-distill (26 runs: 24 finished, 1 pending, 1 failed).
)");
}

TEST_F(RenderTest, LatexIsBooktabsWithEscapes) {
  const std::string tex = cab::report::to_latex(build_table(def("table3"), *data_));
  for (const char* part : {"\\toprule", "\\midrule", "\\bottomrule", "\\label{tab:table3}",
                           "& & \\multicolumn{4}{c}{Fraction of the training data} \\\\\n\\cmidrule(lr){3-6}\n",
                           "Teacher $\\rightarrow$ Student & Method & 1\\% & 5\\% & 10\\% & 20\\% \\\\",
                           "& CAB (ours) & $\\mathbf{27.8 \\pm 0.6}$ & $\\mathbf{27.3 \\pm 0.6}$",
                           "& $41.1 \\pm 0.6$\\,{\\scriptsize(1 failed)} \\\\",
                           "& MOHAWK-style & \\textit{no finished run (1 pending)} & \\textit{no runs}"})
    EXPECT_NE(tex.find(part), std::string::npos) << part << "\n" << tex;
  // Every % in the body is escaped (only the first, comment line starts with %).
  std::istringstream lines(tex);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '%') continue;
    EXPECT_FALSE(std::regex_search(line, std::regex("[^\\\\]%"))) << line;
  }

  const std::string t4 = cab::report::to_latex(build_table(def("table4"), *data_));
  EXPECT_NE(t4.find(" & \\multicolumn{2}{c}{linux-doc-6.1} & \\multicolumn{2}{c}{python3.11-doc} \\\\\n"
                    "\\cmidrule(lr){2-3}\\cmidrule(lr){4-5}\nMethod & 32.8M & 131M & 32.8M & 131M \\\\"),
            std::string::npos)
      << t4;
  EXPECT_NE(t4.find("CAB (ours) & $\\mathbf{23.40}$ & $\\mathbf{18.00}$"), std::string::npos) << t4;  // lower is better
  const std::string failed = cab::report::to_latex(build_table(def("failed"), *data_));
  EXPECT_NE(failed.find("\\begin{tabular}{lllllllp{0.4\\linewidth}}"), std::string::npos) << failed;
}

TEST_F(RenderTest, CsvHasOneLinePerCell) {
  const std::string csv = cab::report::to_csv(build_table(def("table3"), *data_));
  EXPECT_EQ(count(csv, "\n"), 1u + 4 * 4);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "Teacher → Student,Method,Fraction of the training data,value,std,n,min,max,pending,failed,best,text");
  EXPECT_NE(csv.find("\nvit → vim,CAB (ours),1%,27.8000,0.5657,2,27.4000,28.2000,0,0,1,27.8 ± 0.6 (n=2)\n"),
            std::string::npos)
      << csv;
  EXPECT_NE(csv.find("\nvit → vim,MOHAWK-style,1%,,,0,,,1,0,0,no finished run (1 pending)\n"), std::string::npos) << csv;
  const std::string t4 = cab::report::to_csv(build_table(def("table4"), *data_));
  EXPECT_EQ(t4.substr(0, t4.find('\n')),
            "Method,Evaluation corpus,Token budget,value,std,n,min,max,pending,failed,best,text");
  EXPECT_NE(t4.find("\nCAB (ours),linux-doc-6.1,131M,18.0000,,1,18.0000,18.0000,0,0,1,18.00 (n=1)\n"),
            std::string::npos)
      << t4;
}

TEST_F(RenderTest, JsonHasTheNumbersAndRunCounts) {
  const auto j = nlohmann::json::parse(cab::report::to_json(build_table(def("table3"), *data_)));
  EXPECT_EQ(j["id"], "table3");
  EXPECT_EQ(j["uniform_n"], 2);
  EXPECT_EQ(j["columns"][0]["value"]["metric"][0], "top1");
  EXPECT_EQ(j["runs"]["pending"], 1);
  ASSERT_EQ(j["rows"].size(), 4u);
  const auto& cab_row = j["rows"][3];
  EXPECT_EQ(cab_row["labels"], nlohmann::json({"vit → vim", "CAB (ours)"}));
  EXPECT_NEAR(cab_row["cells"][0]["mean"].get<double>(), 27.8, 1e-9);
  EXPECT_NEAR(cab_row["cells"][0]["std"].get<double>(), std::sqrt(0.32), 1e-9);
  EXPECT_EQ(cab_row["cells"][0]["n"], 2);
  EXPECT_EQ(cab_row["cells"][0]["best"], true);
  const auto& mohawk = j["rows"][2]["cells"][0];
  EXPECT_TRUE(mohawk["value"].is_null());
  EXPECT_EQ(mohawk["runs"]["pending"], 1);
  EXPECT_EQ(mohawk["text"], "no finished run (1 pending)");
  EXPECT_EQ(j["rows"][1]["cells"][3]["runs"]["failed"], 1);

  const auto f = nlohmann::json::parse(cab::report::to_json(build_figure(def("figure2"), *data_)));
  ASSERT_EQ(f["panels"].size(), 1u);
  EXPECT_EQ(f["panels"][0]["title"], "vit → vim");
  const auto& series = f["panels"][0]["series"];
  ASSERT_EQ(series.size(), 4u);
  EXPECT_EQ(series[3]["label"], "CAB (ours)");
  ASSERT_EQ(series[3]["points"].size(), 4u);
  EXPECT_EQ(series[3]["points"][0]["x_label"], "1%");
  EXPECT_NEAR(series[3]["points"][2]["mean"].get<double>(), 45.4, 1e-9);
  EXPECT_TRUE(series[2]["points"].empty());  // MOHAWK: its only run is pending
}

TEST_F(RenderTest, SvgPlotsHaveAxesSeriesAndLegends) {
  cab::report::Palette palette;
  const std::string svg = cab::report::to_svg(build_figure(def("figure2"), *data_), palette);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"cab-figure\" data-figure=\"figure2\"", 0), 0u);
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "class=\"series line\""), 3u);  // MOHAWK has nothing finished to draw
  EXPECT_EQ(count(svg, "<polyline"), 3u);
  EXPECT_EQ(count(svg, "class=\"error\""), 12u);  // ± std at each of 4 fractions × 3 methods
  for (const char* text : {">Fraction of the training data</text>", ">Top-1 (%)</text>", ">CAB (ours)</text>",
                           ">Soft KD</text>", ">1%</text>", ">20%</text>", ">vit → vim</text>"})
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  // The same series keeps its colour in the next figure.
  const std::string cab_color = palette.color("CAB (ours)");
  const std::string steps = cab::report::to_svg(build_figure(def("figure3"), *data_), palette);
  EXPECT_NE(steps.find(">Student layer</text>"), std::string::npos);
  EXPECT_EQ(count(steps, "class=\"band\""), 4u * 3);  // a panel per data fraction; mean ± std over seeds per layer
  EXPECT_NE(steps.find("data-label=\"CAB (ours)\""), std::string::npos);
  EXPECT_NE(steps.find("stroke=\"" + cab_color + "\""), std::string::npos);

  const std::string bars = cab::report::to_svg(build_figure(def("efficiency_bars"), *data_), palette);
  // Per dataset: Fashion-MNIST has both metrics for three methods; the LM runs recorded no peak memory (CPU).
  EXPECT_EQ(count(bars, "class=\"series bar\""), 2u * 3 + 3);
  EXPECT_NE(bars.find(">dataset = text-corpus · ms / step</text>"), std::string::npos) << bars;
  EXPECT_NE(bars.find(">Peak memory (MB)</text>"), std::string::npos);
  EXPECT_NE(bars.find(">2305</text>"), std::string::npos) << bars;  // CAB's mean peak memory on the bar

  const std::string empty = cab::report::to_svg(build_figure(def("figure2"), *data_, {"no-such-sweep"}), palette);
  EXPECT_NE(empty.find("no runs to plot"), std::string::npos);
}

TEST_F(RenderTest, HtmlReportIsSelfContained) {
  const cab::report::Report report(*data_, definitions_);
  const std::string html = report.html();
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* id : {"table3", "table4", "table5", "efficiency", "failed"})
    EXPECT_NE(html.find(std::string("data-table=\"") + id + "\""), std::string::npos) << id;
  for (const char* id : {"figure2", "learning_curves", "efficiency_bars", "figure3"})
    EXPECT_NE(html.find(std::string("data-figure=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(count(html, "<script"), 0u);
  EXPECT_EQ(count(html, " src="), 0u);
  EXPECT_EQ(count(html, "<link"), 0u);
  EXPECT_EQ(count(html, "http"), count(html, "http://www.w3.org/2000/svg"));  // nothing to fetch
  EXPECT_NE(html.find("<td class=\"num best\"><strong>27.8 ± 0.6</strong></td>"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"num empty\">no finished run (1 pending)</td>"), std::string::npos);
  EXPECT_NE(html.find("CUDA out of memory: tried to allocate 2.00 GiB"), std::string::npos);
  EXPECT_NE(html.find("<th rowspan=\"4\">vit → vim</th>"), std::string::npos);
}

TEST_F(RenderTest, WriteAllWritesEveryFormat) {
  const cab::report::Report report(*data_, definitions_);
  const auto files = report.write_all(dir_ / "out");
  EXPECT_EQ(files.size(), 6u * 4 + 4u * 3 + 2);  // 6 tables in 4 formats, 4 figures in 3, report.{html,md}
  for (const char* name : {"table3.md", "table3.tex", "table3.csv", "table3.json", "failed.md", "figure2.svg",
                           "figure2.json", "figure2.csv", "report.html", "report.md"})
    EXPECT_TRUE(std::filesystem::is_regular_file(dir_ / "out" / name)) << name;
  std::ifstream md(dir_ / "out" / "report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("![Figure 2: top-1 accuracy vs fraction of the training data](figure2.svg)"), std::string::npos);
  EXPECT_NE(text.find("| B+C, Ā ≈ I (CAB) | **27.3 ± 0.4** |"), std::string::npos) << text;
}

TEST_F(RenderTest, UnknownTablesAndFormatsAreClearErrors) {
  const cab::report::Report report(*data_, definitions_);
  try {
    report.render("tabel3", cab::report::Format::markdown);
    ADD_FAILURE();
  } catch (const cab::report::ReportError& e) {
    EXPECT_EQ(std::string(e.what()),
              "unknown table 'tabel3' (did you mean 'table3'?); the defined tables and figures are: table3, table4, "
              "table5, cab_variants, efficiency, failed, figure2, learning_curves, efficiency_bars, figure3 (cab-report list)");
  }
  EXPECT_THROW(report.render("table3", cab::report::Format::svg), cab::report::ReportError);
  EXPECT_EQ(report.render("figure2", cab::report::Format::svg).rfind("<svg", 0), 0u);
  EXPECT_EQ(report.render("table3", cab::report::Format::html).rfind("<!DOCTYPE html>", 0), 0u);
}
