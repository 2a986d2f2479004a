// cab-report: regenerates the paper's tables and figures from the run database.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <iostream>

#include "cab/cli/cli.h"
#include "cab/util/version.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-report";
  cl.usage =
      "Usage: cab-report [options] COMMAND ...\n\n"
      "Regenerates tables and figures from a cab run database. Not implemented in this version:\n"
      "every command exits with code 4.\n";
  cl.visible.add_options()("help,h", "show this help")("version", "show version information");
  cl.hidden.add_options()("command", po::value<std::vector<std::string>>(), "command and its arguments");
  cl.positional.add("command", -1);
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;
  if (vm.count("command")) {
    std::cerr << fmt::format("cab-report: '{}' is not implemented in cab {} yet: reports need the run store.\n",
                             vm["command"].as<std::vector<std::string>>().front(), cab::version());
    return cab::cli::kNotAvailable;
  }
  std::cerr << "cab-report: nothing to do. Try 'cab-report --help'.\n";
  return cab::cli::kUsage;
}
