// cab-report: regenerates the paper's tables and figures from the run database.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "cab/report/report.h"
#include "cab/util/join.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

// The exit codes of every cab tool (cab::cli::ExitCode; cab-report does not link libcab_core, see CMakeLists).
enum ExitCode : int { kOk = 0, kFailure = 1, kUsage = 2 };

constexpr const char* kExitCodes =
    "Exit codes:\n"
    "  0  success\n"
    "  1  the work ran and failed (an output file could not be written)\n"
    "  2  bad command line or invalid input (no or a foreign database, a newer schema, an unknown table,\n"
    "     a bad definition file)\n";

std::vector<fs::path> definition_dirs(const po::variables_map& vm) {
  std::vector<fs::path> dirs;
  if (vm.count("tables"))
    for (const auto& d : vm["tables"].as<std::vector<std::string>>()) {
      if (!fs::is_directory(d)) throw cab::report::ReportError(fmt::format("--tables {}: no such directory", d));
      dirs.emplace_back(d);
    }
  const auto shipped = cab::report::default_definition_dirs(fs::read_symlink("/proc/self/exe"));
  dirs.insert(dirs.end(), shipped.begin(), shipped.end());
  return dirs;
}

int write_output(const std::string& text, const po::variables_map& vm) {
  if (!vm.count("out")) {
    std::cout << text;
    return kOk;
  }
  const fs::path out = vm["out"].as<std::string>();
  std::error_code ec;
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);
  std::ofstream file(out, std::ios::binary);
  file << text;
  file.close();
  if (!file) {
    std::cerr << fmt::format("cab-report: cannot write '{}'\n", out.string());
    return kFailure;
  }
  std::cerr << fmt::format("cab-report: wrote {}\n", out.string());
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::string usage =
      "Usage: cab-report [--db FILE] --table ID [--format md|tex|csv|json|html|svg] [--out FILE]\n"
      "       cab-report [--db FILE] all [--out-dir DIR]\n"
      "       cab-report [--db FILE] list\n\n"
      "Regenerates the paper's tables and figures from a cab run database (read only). Each table or figure\n"
      "is a TOML definition: sweeps, filters, rows, columns, metric, aggregation, format (README.md next to the\n"
      "shipped definitions describes it). Shipped: Table 3 (top-1 by data fraction), Table 4 (perplexity by\n"
      "corpus and token budget), Table 5 (the ablations), an efficiency table, the failed runs, and figures of\n"
      "top-1 vs data fraction, learning curves, memory/time bars and per-layer attention similarity.\n\n"
      "  --table ID      one table or figure, on standard output or into --out; md is the default format, svg is\n"
      "                  for figures (figures in md/tex/csv give their numbers)\n"
      "  all             every table (md, tex, csv, json) and figure (svg, json, csv) into --out-dir, plus\n"
      "                  report.html (self-contained: inline CSS and SVG, no scripts, no network) and report.md\n"
      "  list            the definitions and, with a database, the runs each covers\n\n"
      "Cells show mean ± std over seeds and n (the number of finished runs); the best value of each column is\n"
      "bold; cells without a finished run say so and count the runs still pending, running or failed.\n";
  const auto shipped = cab::report::default_definition_dirs(fs::read_symlink("/proc/self/exe"));
  usage += shipped.empty() ? std::string("\nNo shipped definitions found: pass --tables DIR.\n")
                           : "\nShipped definitions: " + shipped.front().string() + "\n";
  po::options_description visible("Options");
  visible.add_options()("help,h", "show this help")("version", "show version information")(
      "db", po::value<std::string>()->default_value("results/cab.sqlite"), "the run database (read only)")(
      "table,t", po::value<std::string>(), "the table or figure to render (an id from 'cab-report list')")(
      "format,f", po::value<std::string>()->default_value("md"), "md, tex, csv, json, html, or svg (figures)")(
      "out,o", po::value<std::string>(), "write to this file instead of standard output")(
      "out-dir", po::value<std::string>()->default_value("results/report"), "with all: the output directory")(
      "sweep", po::value<std::vector<std::string>>()->composing(),
      "use these sweeps (names or globs; repeatable) instead of each definition's own")(
      "tables", po::value<std::vector<std::string>>()->composing(),
      "read definitions from this directory first (repeatable; same id: it overrides the shipped one)");
  po::options_description hidden;
  hidden.add_options()("command", po::value<std::vector<std::string>>(), "command");
  po::positional_options_description positional;
  positional.add("command", -1);
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "cab-report: " << e.what() << "\nTry 'cab-report --help'.\n";
    return kUsage;
  }
  if (vm.count("help")) {
    std::cout << usage << "\n" << visible << "\n" << kExitCodes;
    return kOk;
  }
  if (vm.count("version")) {
    std::cout << cab::report::version_line() << "\n";
    return kOk;
  }

  const auto commands = vm.count("command") ? vm["command"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (commands.size() > 1 || (!commands.empty() && commands[0] != "all" && commands[0] != "list")) {
    std::cerr << fmt::format("cab-report: unknown command '{}' (commands: all, list; or --table ID)\n"
                             "Try 'cab-report --help'.\n",
                             cab::join(commands, " "));
    return kUsage;
  }
  const std::string command = commands.empty() ? "" : commands[0];
  if (command.empty() && !vm.count("table")) {
    std::cerr << "cab-report: nothing to do: give --table ID, all or list. Try 'cab-report --help'.\n";
    return kUsage;
  }
  if (!command.empty() && vm.count("table")) {
    std::cerr << fmt::format("cab-report: --table goes without a command ('{}' renders everything or lists)\n", command);
    return kUsage;
  }
  const auto format = cab::report::parse_format(vm["format"].as<std::string>());
  if (!format) {
    std::cerr << fmt::format("cab-report: unknown format '{}' (md, tex, csv, json, html, svg)\n",
                             vm["format"].as<std::string>());
    return kUsage;
  }
  const std::vector<std::string> sweeps =
      vm.count("sweep") ? vm["sweep"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const fs::path db = vm["db"].as<std::string>();

  try {
    auto definitions = cab::report::load_definitions(definition_dirs(vm));
    if (command == "list") {
      std::optional<cab::report::RunData> data;
      if (fs::exists(db)) data = cab::report::RunData::open(db);
      std::cout << cab::report::list_definitions(definitions, data ? &*data : nullptr);
      if (!data) std::cout << fmt::format("(no database at {}: run counts not shown)\n", db.string());
      return kOk;
    }
    if (definitions.empty()) {
      std::cerr << "cab-report: no table definitions found (pass --tables DIR)\n";
      return kUsage;
    }
    const auto data = cab::report::RunData::open(db);
    const cab::report::Report report(data, std::move(definitions), sweeps);
    if (command == "all") {
      const fs::path dir = vm["out-dir"].as<std::string>();
      const auto files = report.write_all(dir);
      std::cerr << fmt::format("cab-report: wrote {} files to {} (open {})\n", files.size(), dir.string(),
                               (dir / "report.html").string());
      return kOk;
    }
    return write_output(report.render(vm["table"].as<std::string>(), *format), vm);
  } catch (const cab::report::ReportError& e) {
    std::cerr << "cab-report: " << e.what() << "\n";
    return kUsage;
  } catch (const std::exception& e) {
    std::cerr << "cab-report: " << e.what() << "\n";
    return kFailure;
  }
}
