// Shared command-line helpers: plugin loading and listing, exit codes.
#include "cab/cli/cli.h"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>

#include "cab/util/version.h"

namespace cab::cli {

std::string exit_codes_help() {
  return "Exit codes:\n"
         "  0  success\n"
         "  1  the work ran and failed\n"
         "  2  bad command line or invalid input (config file, plugin options)\n"
         "  3  a plugin could not be loaded or found\n"
         "  4  the requested feature is not available in this version\n"
         "  5  (cab-sweep) interrupted by Ctrl-C or SIGTERM; run the same command to resume\n"
         "  (cab-sweep exits 1 when the sweep ran and some of its runs failed)\n";
}

std::optional<int> parse(const CommandLine& cl, int argc, char** argv, boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  po::options_description all;
  all.add(cl.visible).add(cl.hidden);
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(cl.positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << cl.program << ": " << e.what() << "\nTry '" << cl.program << " --help'.\n";
    return kUsage;
  }
  if (vm.count("help")) {
    std::cout << cl.usage << "\n" << cl.visible << "\n" << exit_codes_help();
    return kOk;
  }
  if (vm.count("version")) {
    std::cout << version_line(cl.program) << "\n";
    return kOk;
  }
  return std::nullopt;
}

std::vector<std::string> load_plugins(plugin::Registry& registry, const std::vector<std::filesystem::path>& extra_paths) {
  std::vector<std::string> failures;
  std::vector<std::filesystem::path> dirs;
  for (const auto& path : extra_paths) {
    if (std::filesystem::is_directory(path)) {
      dirs.push_back(path);
    } else {
      registry.load(path);  // an explicitly named file must load: errors propagate
    }
  }
  auto defaults = plugin::Registry::default_search_path();
  dirs.insert(dirs.end(), defaults.begin(), defaults.end());
  return registry.discover(dirs);
}

void print_plugins(const plugin::Registry& registry, std::ostream& out) {
  const auto entries = registry.entries();
  std::size_t name_width = 4, lib_width = 7;
  for (const auto* e : entries) {
    name_width = std::max(name_width, e->name.size());
    lib_width = std::max(lib_width, e->library->path.string().size());
  }
  out << fmt::format("{:<10} {:<{}} {:<8} {:<{}} {}\n", "KIND", "NAME", name_width, "VERSION", "LIBRARY", lib_width,
                     "SUMMARY");
  for (const auto* e : entries) {
    out << fmt::format("{:<10} {:<{}} {:<8} {:<{}} {}\n", plugin::to_string(e->kind), e->name, name_width,
                       e->library->version, e->library->path.string(), lib_width, e->summary);
  }
  out << fmt::format("{} plugin(s) from {} librar{}\n", entries.size(), registry.libraries().size(),
                     registry.libraries().size() == 1 ? "y" : "ies");
  for (const auto& problem : registry.problems()) out << "skipped: " << problem << "\n";
}

}  // namespace cab::cli
