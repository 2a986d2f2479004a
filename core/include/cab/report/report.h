// cab-report's library entry: the definitions and the database together — render one table or figure in a
// format, list what is defined, or write everything (every format, plus one self-contained HTML report).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cab/export.h"
#include "cab/report/error.h"
#include "cab/report/definition.h"
#include "cab/report/run_data.h"

namespace cab::report {

enum class Format { markdown, latex, csv, json, html, svg };
/// "md"/"markdown", "tex"/"latex", "csv", "json", "html", "svg".
CAB_API std::optional<Format> parse_format(std::string_view name);
CAB_API std::string_view extension(Format format);

class CAB_API Report {
 public:
  /// `sweeps`, when not empty, replaces every definition's sweep patterns.
  Report(const RunData& data, std::vector<Definition> definitions, std::vector<std::string> sweeps = {});

  const std::vector<Definition>& definitions() const { return definitions_; }
  /// Throws ReportError for an unknown id, listing the known ones with a did-you-mean.
  const Definition& definition(const std::string& id) const;

  /// One table or figure. Figures in md/tex/csv give their numbers as a table; svg is for figures only.
  std::string render(const std::string& id, Format format) const;
  /// Everything in one self-contained HTML page.
  std::string html() const;
  /// Everything as one Markdown document (figures linked as <id>.svg).
  std::string markdown() const;
  /// Writes report.html, report.md and every table (md, tex, csv, json) and figure (svg, json, csv) into
  /// `dir`; returns the files written.
  std::vector<std::filesystem::path> write_all(const std::filesystem::path& dir) const;

 private:
  const RunData& data_;
  std::vector<Definition> definitions_;
  std::vector<std::string> sweeps_;
};

/// "cab-report 0.1.0 (git abc123), run database schema 1" — for --version.
CAB_API std::string version_line();

/// `cab-report list`: one line per definition (id, kind, title, sweeps), with the runs each covers when
/// `data` is given.
CAB_API std::string list_definitions(const std::vector<Definition>& definitions, const RunData* data);

}  // namespace cab::report
