// cab-report: regenerates the paper's tables and figures from the run database.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <iostream>

#include "cab/cli/cli.h"
#include "cab/util/version.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description visible("Options");
  visible.add_options()
      ("help,h", "show this help")
      ("version", "show version information");
  po::options_description hidden;
  hidden.add_options()("command", po::value<std::vector<std::string>>(), "command and its arguments");
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("command", -1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "cab-report: " << e.what() << "\nTry 'cab-report --help'.\n";
    return cab::cli::kUsage;
  }
  if (vm.count("help")) {
    std::cout << "Usage: cab-report [options] COMMAND ...\n\n"
                 "Regenerates tables and figures from a cab run database. Not implemented in this version:\n"
                 "every command exits with code 4.\n\n"
              << visible << "\n"
              << cab::cli::exit_codes_help();
    return cab::cli::kOk;
  }
  if (vm.count("version")) {
    std::cout << cab::version_line("cab-report") << "\n";
    return cab::cli::kOk;
  }
  if (vm.count("command")) {
    std::cerr << fmt::format("cab-report: '{}' is not implemented in cab {} yet: reports need the run store.\n",
                             vm["command"].as<std::vector<std::string>>().front(), cab::version());
    return cab::cli::kNotAvailable;
  }
  std::cerr << "cab-report: nothing to do. Try 'cab-report --help'.\n";
  return cab::cli::kUsage;
}
