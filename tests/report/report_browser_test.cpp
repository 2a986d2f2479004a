// The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by tools/setup) loads
// report.html from disk with the network off; its DOM dump must hold every table and figure, and a probe
// script in a copy of the page measures what the browser laid out: table rows, SVG plots with drawn series,
// bold best cells, empty cells. A screenshot is taken too. Skips, saying why, only when no Chromium exists.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <sstream>

#include "report_db.h"
#include "test_support.h"

using cab::test::run_command;

namespace {

const std::string kReport = std::string(CAB_TEST_BIN_DIR) + "/cab-report";

std::string find_chromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    auto r = run_command(std::string("command -v ") + name);
    if (r.exit_code == 0 && !r.output.empty()) return r.output.substr(0, r.output.find('\n'));
  }
  return "";
}

std::string read(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs after the body is parsed; reading layout boxes makes the browser lay the page out.
constexpr const char* kProbe = R"(<script>
(function () {
  const r = {};
  r.tables = Array.from(document.querySelectorAll('table.cab-table')).map(t => ({
    id: t.dataset.table, rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
    height: t.getBoundingClientRect().height }));
  r.figures = Array.from(document.querySelectorAll('svg.cab-figure')).map(s => {
    const box = s.getBoundingClientRect();
    const drawn = Array.from(s.querySelectorAll('g.series polyline, g.series rect, g.series circle'))
        .filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
    return { id: s.dataset.figure, width: box.width, height: box.height,
             series: s.querySelectorAll('g.series').length, drawn: drawn,
             panels: s.querySelectorAll('g.panel').length };
  });
  r.bold = document.querySelectorAll('td.best strong').length;
  r.empty = document.querySelectorAll('td.empty').length;
  r.title = document.title;
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = 'PROBE' + JSON.stringify(r) + 'END';
  document.body.appendChild(pre);
})();
</script>
)";

class ReportBrowserTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    chromium_ = find_chromium();
    if (chromium_.empty())
      GTEST_SKIP() << "no Chromium (chromium, chromium-browser or google-chrome) on PATH: the HTML report was not "
                      "checked in a browser; tools/setup installs Debian's chromium";
    cab::test::write_demo_database(dir_ / "cab.sqlite");
    auto r = run_command(kReport + " --db " + (dir_ / "cab.sqlite").string() + " all --out-dir " + (dir_ / "report").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  /// Headless Chromium with its own profile, no network, no GPU, no sandbox (containers), bounded in time.
  cab::test::CommandResult browse(const std::string& args) {
    return run_command("timeout 120 " + chromium_ + " --headless --disable-gpu --no-sandbox --no-first-run "
                       "--disable-extensions --disable-background-networking --proxy-server=127.0.0.1:9 "
                       "--user-data-dir=" + (dir_ / "profile").string() + " " + args + " 2>/dev/null");
  }
  std::string chromium_;
};

}  // namespace

TEST_F(ReportBrowserTest, DomHoldsEveryTableAndFigure) {
  const auto page = dir_ / "report" / "report.html";
  auto r = browse("--dump-dom file://" + page.string());
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  const std::string& dom = r.output;
  for (const char* id : {"table3", "table4", "table5", "efficiency", "failed"})
    EXPECT_NE(dom.find(std::string("<table class=\"cab-table\" data-table=\"") + id + "\">"), std::string::npos) << id;
  for (const char* id : {"figure2", "learning_curves", "efficiency_bars", "figure3"})
    EXPECT_TRUE(std::regex_search(dom, std::regex(std::string("<figure>\\s*<svg [^>]*data-figure=\"") + id + "\"")))
        << id;
  EXPECT_NE(dom.find("<tbody>"), std::string::npos);  // parsed by the browser, not just echoed
  EXPECT_NE(dom.find("<strong>27.8 ± 0.6</strong>"), std::string::npos);
}

TEST_F(ReportBrowserTest, BrowserLaysOutTablesAndDrawsThePlots) {
  std::string html = read(dir_ / "report" / "report.html");
  const auto body_end = html.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  html.insert(body_end, kProbe);
  const auto probe_page = dir_ / "report" / "probe.html";
  std::ofstream(probe_page) << html;
  auto r = browse("--dump-dom file://" + probe_page.string());
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  const std::string marker = "<pre id=\"probe\">PROBE";  // the element the probe added (not its source)
  const auto begin = r.output.find(marker), end = r.output.find("END</pre>", begin);
  ASSERT_TRUE(begin != std::string::npos && end != std::string::npos) << "the probe did not run:\n"
                                                                      << r.output.substr(0, 2000);
  std::string text = r.output.substr(begin + marker.size(), end - begin - marker.size());
  for (auto [from, to] : {std::pair<std::string, std::string>{"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}})
    for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + 1)) text.replace(pos, from.size(), to);
  const auto probe = nlohmann::json::parse(text);

  EXPECT_EQ(probe["title"], "cab report");
  std::map<std::string, nlohmann::json> tables, figures;
  for (const auto& t : probe["tables"]) tables[t["id"]] = t;
  for (const auto& f : probe["figures"]) figures[f["id"]] = f;
  ASSERT_EQ(tables.size(), 6u) << probe.dump(2);
  EXPECT_EQ(tables["table3"]["rows"], 4);  // Vanilla, Soft KD, MOHAWK-style, CAB under vit → vim
  EXPECT_EQ(tables["table5"]["rows"], 7);
  EXPECT_EQ(tables["failed"]["rows"], 1);
  for (const auto& [id, t] : tables) EXPECT_GT(t["height"].get<double>(), 20) << id;
  ASSERT_EQ(figures.size(), 4u) << probe.dump(2);
  EXPECT_EQ(figures["figure2"]["series"], 3);
  EXPECT_GE(figures["figure2"]["drawn"].get<int>(), 3 * 5);  // a line and four markers per method
  EXPECT_EQ(figures["learning_curves"]["panels"], 4 + 1);      // Fashion-MNIST's four data fractions, the LM runs
  EXPECT_EQ(figures["efficiency_bars"]["series"], 2 * 3 + 3);  // per dataset: two metrics × three methods (LM: time only)
  EXPECT_EQ(figures["figure3"]["panels"], 4 + 1);
  for (const auto& [id, f] : figures) {
    EXPECT_GT(f["width"].get<double>(), 300) << id;
    EXPECT_GT(f["height"].get<double>(), 200) << id;
    EXPECT_GT(f["drawn"].get<int>(), 0) << id;
  }
  EXPECT_GE(probe["bold"].get<int>(), 4);   // CAB's four Table 3 cells at least
  EXPECT_GE(probe["empty"].get<int>(), 3);  // MOHAWK's cells without finished runs
}

TEST_F(ReportBrowserTest, Screenshot) {
  const auto shot = dir_ / "report.png";
  auto r = browse("--hide-scrollbars --window-size=1200,3000 --screenshot=" + shot.string() + " file://" +
                  (dir_ / "report" / "report.html").string());
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  ASSERT_TRUE(std::filesystem::exists(shot));
  const std::string png = read(shot);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_GT(png.size(), 50'000u);  // a page of tables and plots, not a blank one (~5 kB)
}
