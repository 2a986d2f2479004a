// Plugin loading with Boost.DLL: open, find the entry point, check API version and ABI tag, register.
#include "cab/plugin/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <set>
#include <sstream>

#define BOOST_DLL_USE_STD_FS 1
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include "cab/config/schema.h"
#include "cab/config/section.h"
#include "cab/util/did_you_mean.h"

#ifndef CAB_PLUGIN_INSTALL_PATH
#define CAB_PLUGIN_INSTALL_PATH ""
#endif

namespace cab::plugin {

namespace fs = std::filesystem;

namespace {

// Libraries are never unloaded mid-process: every loaded library is also kept here until exit.
std::vector<std::shared_ptr<const Library>>& process_libraries() {
  static auto* libraries = new std::vector<std::shared_ptr<const Library>>();  // intentionally leaked
  return *libraries;
}
std::mutex& process_mutex() {
  static std::mutex m;
  return m;
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

Registry::Registry() = default;
Registry::~Registry() = default;

std::string Registry::host_abi_tag() { return CAB_ABI_TAG; }

std::vector<fs::path> Registry::default_search_path() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("CAB_PLUGIN_PATH")) {
    std::stringstream in(env);
    std::string item;
    while (std::getline(in, item, ':'))
      if (!item.empty()) dirs.emplace_back(item);
  }
  // <libdir>/cab/plugins next to the libcab_core that is running: the build tree or the install prefix.
  std::error_code ec;
  const fs::path core = boost::dll::this_line_location(ec);
  if (!ec) dirs.push_back((core.parent_path() / "cab" / "plugins").lexically_normal());
  if (std::string(CAB_PLUGIN_INSTALL_PATH).size()) dirs.emplace_back(CAB_PLUGIN_INSTALL_PATH);
  // Drop repeats (the same directory reached twice).
  std::vector<fs::path> unique;
  std::set<fs::path> seen;
  for (const auto& d : dirs) {
    const fs::path key = fs::weakly_canonical(d, ec);
    if (seen.insert(ec ? d : key).second) unique.push_back(d);
  }
  return unique;
}

void Registry::load(const fs::path& file) {
  if (!fs::exists(file)) throw PluginError(fmt::format("cannot load plugin {}: no such file", quoted(file)));
  for (const auto& lib : libraries_)
    if (!lib->path.empty() && fs::equivalent(lib->path, file)) return;  // already loaded

  auto shared = std::make_shared<boost::dll::shared_library>();
  try {
    shared->load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw PluginError(fmt::format("cannot load plugin {}: not a loadable shared library for this system: {}",
                                  quoted(file), e.what()));
  }
  if (!shared->has(CAB_PLUGIN_ENTRY_POINT)) {
    throw PluginError(fmt::format("{} is not a cab plugin: it does not export '{}' (build plugins with "
                                  "cab_add_plugin() and define the entry point with CAB_PLUGIN(...))",
                                  quoted(file), CAB_PLUGIN_ENTRY_POINT));
  }
  using EntryPoint = const CabPluginInfo*();
  const CabPluginInfo* info = shared->get<EntryPoint>(CAB_PLUGIN_ENTRY_POINT)();

  auto library = std::make_shared<Library>();
  library->path = fs::absolute(file);
  library->handle = std::shared_ptr<void>(shared, shared.get());
  register_library(info, std::move(library));
}

void Registry::add_builtin(const CabPluginInfo* info, const std::string& label) {
  auto library = std::make_shared<Library>();
  library->path = label;
  register_library(info, std::move(library));
}

void Registry::register_library(const CabPluginInfo* info, std::shared_ptr<Library> library) {
  const std::string file = quoted(library->path);
  if (!info) throw PluginError(fmt::format("plugin {}: its entry point returned no plugin info", file));
  // api_version is read before anything else: other members may differ in layout across versions.
  if (info->api_version != kCabPluginApiVersion) {
    throw PluginError(fmt::format("plugin {} has the wrong plugin API version: got {}, expected {}; rebuild it "
                                  "against this cab SDK",
                                  file, info->api_version, kCabPluginApiVersion));
  }
  const std::string host_tag = host_abi_tag();
  const std::string tag = info->abi_tag ? info->abi_tag : "(null)";
  if (tag != host_tag) {
    throw PluginError(fmt::format("plugin {} has a different ABI tag: got '{}', expected '{}'; rebuild it with "
                                  "the same compiler, LibTorch and CUDA as cab",
                                  file, tag, host_tag));
  }
  if (!info->name || !*info->name || !info->version) {
    throw PluginError(fmt::format("plugin {}: its info has no name or version", file));
  }
  if (!info->factories || info->factory_count == 0) {
    throw PluginError(fmt::format("plugin {} ('{}') declares no factories", file, info->name));
  }
  library->name = info->name;
  library->version = info->version;
  library->abi_tag = tag;

  // Check every factory before registering any: a library is registered whole or not at all.
  std::set<std::pair<Kind, std::string>> own;
  for (std::size_t i = 0; i < info->factory_count; ++i) {
    const Factory& f = info->factories[i];
    if (static_cast<std::uint32_t>(f.kind) > static_cast<std::uint32_t>(Kind::dataset)) {
      throw PluginError(fmt::format("plugin {}: factory #{} has an unknown kind ({})", file, i,
                                    static_cast<std::uint32_t>(f.kind)));
    }
    if (!f.name || !*f.name || !f.create) {
      throw PluginError(fmt::format("plugin {}: factory #{} ({}) has no name or no create function", file, i,
                                    to_string(f.kind)));
    }
    const auto key = std::make_pair(f.kind, std::string(f.name));
    if (!own.insert(key).second) {
      throw PluginError(fmt::format("duplicate {} plugin '{}': defined twice in {}", to_string(f.kind), f.name, file));
    }
    auto existing = factories_.find(key);
    if (existing != factories_.end()) {
      auto& files = conflicts_[key];
      if (files.empty()) files.push_back(existing->second.library->path.string());
      files.push_back(library->path.string());
      throw PluginError(fmt::format("duplicate {} plugin '{}': defined in '{}' and in '{}'; remove or rename one "
                                    "of them",
                                    to_string(f.kind), f.name, existing->second.library->path.string(),
                                    library->path.string()));
    }
  }
  std::shared_ptr<const Library> shared = library;
  {
    std::lock_guard<std::mutex> lock(process_mutex());
    process_libraries().push_back(shared);
  }
  libraries_.push_back(shared);
  for (std::size_t i = 0; i < info->factory_count; ++i) {
    const Factory& f = info->factories[i];
    FactoryEntry entry{f.kind, f.name, f.summary ? f.summary : "", &f, shared};
    factories_.emplace(std::make_pair(f.kind, std::string(f.name)), std::move(entry));
  }
}

std::vector<std::string> Registry::discover(const std::vector<fs::path>& directories) {
  std::vector<std::string> failures;
  for (const auto& dir : directories) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& item : fs::directory_iterator(dir, ec))
      if (item.path().extension() == ".so" && !item.is_directory()) files.push_back(item.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      try {
        load(file);
      } catch (const PluginError& e) {
        failures.emplace_back(e.what());
      }
    }
  }
  problems_.insert(problems_.end(), failures.begin(), failures.end());
  return failures;
}

const FactoryEntry& Registry::find(Kind kind, std::string_view name) const {
  const auto key = std::make_pair(kind, std::string(name));
  if (auto c = conflicts_.find(key); c != conflicts_.end()) {
    throw PluginError(fmt::format("{} plugin '{}' is ambiguous: it is defined in {}; remove or rename all but one",
                                  to_string(kind), name, join_names(c->second, " and ")));
  }
  auto it = factories_.find(key);
  if (it != factories_.end()) return it->second;
  const auto available = names(kind);
  std::string message = fmt::format("unknown {} plugin '{}'{}; available {} plugins: {}", to_string(kind), name,
                                    did_you_mean(name, available), to_string(kind), join_names(available));
  if (!problems_.empty())
    message += fmt::format(" ({} plugin file(s) failed to load; `cab-sweep --list-plugins` shows why)",
                           problems_.size());
  throw PluginError(message);
}

std::vector<const FactoryEntry*> Registry::entries() const {
  std::vector<const FactoryEntry*> out;
  for (const auto& [key, entry] : factories_) out.push_back(&entry);
  return out;  // std::map order: kind, then name
}

std::vector<std::string> Registry::names(Kind kind) const {
  std::vector<std::string> out;
  for (const auto& [key, entry] : factories_)
    if (key.first == kind) out.push_back(key.second);
  return out;
}

config::Schema Registry::schema(const FactoryEntry& entry) const {
  config::Schema schema;
  if (entry.factory->describe) entry.factory->describe(schema);
  return schema;
}

std::shared_ptr<Component> Registry::create(Kind kind, std::string_view name, const config::Section& options) const {
  const FactoryEntry& entry = find(kind, name);
  config::Section named = options;
  if (named.path().empty()) named = config::Section(std::string(to_string(kind)), options.location());
  for (const auto& [key, value] : options.entries()) named.set(key, value.value, value.location);
  const config::Section validated = schema(entry).validate(named);
  std::shared_ptr<Component> object = entry.factory->create(validated);
  if (!object) {
    throw PluginError(fmt::format("{} plugin '{}' from '{}' returned no object", to_string(kind), name,
                                  entry.library->path.string()));
  }
  // The object keeps its library alive: members are destroyed in reverse order, the object first.
  struct Holder {
    std::shared_ptr<const Library> library;
    std::shared_ptr<Component> object;
  };
  auto holder = std::make_shared<Holder>(Holder{entry.library, std::move(object)});
  return std::shared_ptr<Component>(holder, holder->object.get());
}

void Registry::throw_wrong_type(Kind kind, std::string_view name) const {
  const FactoryEntry& entry = find(kind, name);
  throw PluginError(fmt::format("{} plugin '{}' from '{}' created an object that does not implement the {} "
                                "interface",
                                to_string(kind), name, entry.library->path.string(), to_string(kind)));
}

}  // namespace cab::plugin
