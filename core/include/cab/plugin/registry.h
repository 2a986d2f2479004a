// Loads plugin libraries (Boost.DLL), checks their ABI, and creates objects by (kind, name).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cab/config/schema.h"
#include "cab/export.h"
#include "cab/plugin/abi.h"
#include "cab/plugin/component.h"
#include "cab/plugin/kind.h"
#include "cab/util/error.h"

namespace cab::plugin {

/// A loaded plugin library. Kept loaded for the rest of the process (never unloaded mid-process).
struct CAB_API Library {
  std::filesystem::path path;  ///< the file, or "<built-in>" for a plugin linked into the executable
  std::string name;
  std::string version;
  std::string abi_tag;
  std::shared_ptr<void> handle;  ///< the Boost.DLL library object (null for built-ins)
};

/// One factory as registered: what it is, and the library it lives in.
struct CAB_API FactoryEntry {
  Kind kind;
  std::string name;
  std::string summary;
  const Factory* factory = nullptr;
  std::shared_ptr<const Library> library;
};

class CAB_API Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  /// The ABI tag of this cab build ("gcc-12;libstdc++-cxx11abi-1;torch-2.11.0;cuda-13.0").
  static std::string host_abi_tag();

  /// Where plugins are looked for: each directory of CAB_PLUGIN_PATH, then the plugin directory next to
  /// libcab_core (build tree or install prefix: <libdir>/cab/plugins), then the configured install directory.
  static std::vector<std::filesystem::path> default_search_path();

  /// Loads one library and registers all its factories, or nothing. Throws PluginError naming the file:
  /// cannot open, not a cab plugin, API version or ABI tag mismatch, invalid factory, duplicate (kind, name).
  void load(const std::filesystem::path& file);

  /// Registers a plugin linked statically into the executable (same checks as load).
  void add_builtin(const CabPluginInfo* info, const std::string& label = "<built-in>");

  /// Loads every *.so file in the directories (missing directories are skipped). Returns one message per
  /// file that failed; the other files are registered.
  std::vector<std::string> discover(const std::vector<std::filesystem::path>& directories);

  /// The factory for (kind, name). Throws PluginError for an unknown name (listing the available ones of
  /// that kind with a did-you-mean) or for a name defined by two libraries (naming both files).
  const FactoryEntry& find(Kind kind, std::string_view name) const;

  /// All registered factories, sorted by kind then name.
  std::vector<const FactoryEntry*> entries() const;
  std::vector<std::string> names(Kind kind) const;
  const std::vector<std::shared_ptr<const Library>>& libraries() const { return libraries_; }
  /// The messages of files that failed to load during discover().
  const std::vector<std::string>& problems() const { return problems_; }

  /// The factory's option schema.
  config::Schema schema(const FactoryEntry& entry) const;

  /// Validates `options` against the factory's schema (defaults filled, unknown keys rejected) and creates
  /// the object. The object keeps its library alive.
  std::shared_ptr<Component> create(Kind kind, std::string_view name, const config::Section& options) const;

  /// create() and cast to the kind's interface; a PluginError if the object is not a T.
  template <class T>
  std::shared_ptr<T> create_as(Kind kind, std::string_view name, const config::Section& options) const {
    auto object = create(kind, name, options);
    auto typed = std::dynamic_pointer_cast<T>(object);
    if (!typed) throw_wrong_type(kind, name);
    return typed;
  }

 private:
  void register_library(const CabPluginInfo* info, std::shared_ptr<Library> library);
  [[noreturn]] void throw_wrong_type(Kind kind, std::string_view name) const;

  std::vector<std::shared_ptr<const Library>> libraries_;
  std::map<std::pair<Kind, std::string>, FactoryEntry> factories_;
  /// (kind, name) defined by more than one library: the files, for the duplicate error.
  std::map<std::pair<Kind, std::string>, std::vector<std::string>> conflicts_;
  std::vector<std::string> problems_;
};

}  // namespace cab::plugin
