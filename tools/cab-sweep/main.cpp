// cab-sweep: runs a TOML grid of distillation experiments; lists plugins; validates run configs.
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <iostream>

#include "cab/cli/cli.h"
#include "cab/config/run_config.h"
#include "cab/util/version.h"

namespace po = boost::program_options;

namespace {

void print_section(const cab::config::Section& section, std::ostream& out) {
  out << "[" << section.path() << "]\n";
  for (const auto& [key, entry] : section.entries()) {
    out << fmt::format("{} = {}", key, cab::config::to_toml(entry.value));
    if (entry.location.line == 0) out << "  # " << entry.location.file;
    out << "\n";
  }
}

int check_config(const std::string& file, const cab::plugin::Registry& registry) {
  const auto config = cab::config::load_run_config(file, registry);
  std::cout << "# " << file << ": valid; resolved values (defaults marked)\n";
  print_section(config.run, std::cout);
  print_section(config.train, std::cout);
  for (const auto& [kind, choice] : config.plugins) {
    cab::config::Section shown = choice.options;
    shown.set("name", choice.name, choice.location);
    print_section(shown, std::cout);
  }
  return cab::cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  cab::cli::CommandLine cl;
  cl.program = "cab-sweep";
  cl.usage =
      "Usage: cab-sweep [options] [SWEEP.toml]\n\n"
      "Runs a grid of distillation experiments and records them in SQLite. This version lists and\n"
      "checks plugins and validates run configs; running sweeps is not implemented yet.\n";
  cl.visible.add_options()
      ("help,h", "show this help")
      ("version", "show version, LibTorch/CUDA versions and the plugin ABI tag")
      ("list-plugins", "list the available plugins (kind, name, version, library) and files that failed to load")
      ("plugin-path,P", po::value<std::vector<std::string>>()->composing(),
       "plugin file or directory to load first (repeatable; CAB_PLUGIN_PATH also adds directories)")
      ("check", po::value<std::string>(), "validate a run config file and print it with all defaults resolved");
  cl.hidden.add_options()("sweep", po::value<std::string>(), "sweep file");
  cl.positional.add("sweep", 1);
  po::variables_map vm;
  if (auto code = cab::cli::parse(cl, argc, argv, vm)) return *code;

  try {
    cab::plugin::Registry registry;
    std::vector<std::filesystem::path> extra;
    if (vm.count("plugin-path"))
      for (const auto& p : vm["plugin-path"].as<std::vector<std::string>>()) extra.emplace_back(p);
    cab::cli::load_plugins(registry, extra);

    if (vm.count("list-plugins")) {
      cab::cli::print_plugins(registry, std::cout);
      return cab::cli::kOk;
    }
    if (vm.count("check")) return check_config(vm["check"].as<std::string>(), registry);
    if (vm.count("sweep")) {
      std::cerr << fmt::format("cab-sweep: cannot run '{}': running sweeps is not implemented in cab {} yet. "
                               "Use --check FILE to validate a run config.\n",
                               vm["sweep"].as<std::string>(), cab::version());
      return cab::cli::kNotAvailable;
    }
    std::cerr << "cab-sweep: nothing to do. Try 'cab-sweep --help'.\n";
    return cab::cli::kUsage;
  } catch (const cab::ConfigError& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kUsage;
  } catch (const cab::PluginError& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kPluginError;
  } catch (const std::exception& e) {
    std::cerr << "cab-sweep: " << e.what() << "\n";
    return cab::cli::kFailure;
  }
}
