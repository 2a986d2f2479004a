// Shared pieces of cab's command-line tools: exit codes, plugin discovery and listing.
#pragma once

#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "cab/export.h"
#include "cab/plugin/registry.h"

namespace cab::cli {

/// Exit codes of every cab tool (documented in --help and the README).
enum ExitCode : int {
  kOk = 0,
  kFailure = 1,         ///< the work ran and failed (runtime error)
  kUsage = 2,           ///< bad command line or invalid input (config, plugin options)
  kPluginError = 3,     ///< a plugin could not be loaded or found
  kNotAvailable = 4,    ///< the requested feature is not implemented in this version
};

/// The exit-code section of --help.
CAB_API std::string exit_codes_help();

/// A tool's command line: its visible options (always including --help and --version), hidden positional
/// arguments, and the text --help prints above the options.
struct CAB_API CommandLine {
  std::string program;
  std::string usage;  ///< "Usage: ...\n\nWhat the tool does.\n"
  boost::program_options::options_description visible{"Options"};
  boost::program_options::options_description hidden;
  boost::program_options::positional_options_description positional;
};

/// Parses argv into `vm`. Handles --help, --version and parse errors itself and then returns the exit code
/// the tool should return; returns nothing when the tool should go on.
CAB_API std::optional<int> parse(const CommandLine& command_line, int argc, char** argv,
                                 boost::program_options::variables_map& vm);

/// Loads plugins: the explicit files/directories first, then the default search path.
/// Returns the messages of files that failed to load (they are also in registry.problems()).
CAB_API std::vector<std::string> load_plugins(plugin::Registry& registry,
                                              const std::vector<std::filesystem::path>& extra_paths);

/// A table of the registered plugins (kind, name, version, library path, summary) and the load problems.
CAB_API void print_plugins(const plugin::Registry& registry, std::ostream& out);

}  // namespace cab::cli
