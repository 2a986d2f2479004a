// Plugin loader: loading real plugin libraries, every loader error, lifetimes, discovery, creation.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>

#include "cab/config/section.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/registry.h"

namespace fs = std::filesystem;
using cab::PluginError;
using cab::plugin::Kind;
using cab::plugin::Registry;

namespace {

const fs::path kFixtures = fs::path(CAB_TEST_BUILD_DIR) / "tests" / "fixtures";

fs::path fixture(const std::string& dir, const std::string& file) { return kFixtures / dir / file; }

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const PluginError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a PluginError";
  return {};
}

void expect_contains(const std::string& message, const std::vector<std::string>& fragments) {
  for (const auto& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << "'" << f << "' not in: " << message;
}

}  // namespace

TEST(Registry, LoadsAPluginAndListsItsFactories) {
  Registry registry;
  registry.load(fixture("good", "cab-fixture-good.so"));
  ASSERT_EQ(registry.entries().size(), 2u);
  const auto& entry = registry.find(Kind::bridge, "fixture-scale");
  EXPECT_EQ(entry.summary, "multiplies by a factor");
  EXPECT_EQ(entry.library->name, "fixture-good");
  EXPECT_EQ(entry.library->version, "0.3.1");
  EXPECT_EQ(entry.library->abi_tag, Registry::host_abi_tag());
  EXPECT_EQ(registry.names(Kind::dataset), std::vector<std::string>{"fixture-counted"});
  registry.load(fixture("good", "cab-fixture-good.so"));  // loading the same file again is a no-op
  EXPECT_EQ(registry.libraries().size(), 1u);
}

TEST(Registry, CreatesObjectsWithValidatedOptions) {
  Registry registry;
  registry.load(fixture("good", "cab-fixture-good.so"));
  cab::config::Section options;
  options.set("factor", 3.0);
  auto bridge = registry.create_as<cab::Bridge>(Kind::bridge, "fixture-scale", options);
  EXPECT_EQ(bridge->in_features(), 4);  // default filled in from the plugin's schema
  const at::Tensor y = bridge->forward(at::ones({2, 4}));
  EXPECT_DOUBLE_EQ(y.sum().item<double>(), 24.0);

  cab::config::Section bad;
  bad.set("factr", 3.0);
  try {
    registry.create(Kind::bridge, "fixture-scale", bad);
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const cab::ConfigError& e) {
    expect_contains(e.what(), {"unknown key 'factr'", "did you mean 'factor'?"});
  }
}

TEST(Registry, ObjectOfTheWrongInterfaceIsReported) {
  Registry registry;
  registry.load(fixture("good", "cab-fixture-good.so"));
  const auto message = error_of([&] { registry.create_as<cab::Bridge>(Kind::dataset, "fixture-counted", {}); });
  expect_contains(message, {"dataset plugin 'fixture-counted'", "cab-fixture-good.so", "does not implement"});
}

TEST(Registry, ObjectsKeepTheirLibraryAliveAfterTheRegistryIsGone) {
  std::shared_ptr<cab::Component> object;
  {
    Registry registry;
    registry.load(fixture("good", "cab-fixture-good.so"));
    object = registry.create(Kind::dataset, "fixture-counted", {});
  }
  // The registry is destroyed; the library must still be mapped, and the object alive.
  void* handle = dlopen(fixture("good", "cab-fixture-good.so").c_str(), RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(handle, nullptr) << "library was unloaded while an object from it is alive";
  auto live = reinterpret_cast<int (*)()>(dlsym(handle, "cab_fixture_live_objects"));
  ASSERT_NE(live, nullptr);
  EXPECT_EQ(live(), 1);
  object.reset();
  EXPECT_EQ(live(), 0);  // destroyed by the plugin's own code, library still loaded (never unloaded)
  dlclose(handle);
}

TEST(Registry, MissingFile) {
  Registry registry;
  expect_contains(error_of([&] { registry.load(kFixtures / "nowhere" / "cab-missing.so"); }),
                  {"cab-missing.so", "no such file"});
}

TEST(Registry, NotASharedLibrary) {
  Registry registry;
  const auto file = fixture("not-a-library", "cab-fixture-text.so");
  expect_contains(error_of([&] { registry.load(file); }),
                  {"cannot load plugin '" + file.string() + "'", "not a loadable shared library", "invalid ELF header"});
}

TEST(Registry, NoEntryPointIsNotACabPlugin) {
  Registry registry;
  const auto file = fixture("no-entry", "cab-fixture-no-entry.so");
  expect_contains(error_of([&] { registry.load(file); }),
                  {"'" + file.string() + "' is not a cab plugin", "cab_plugin_info"});
}

TEST(Registry, WrongApiVersion) {
  Registry registry;
  const auto file = fixture("wrong-api", "cab-fixture-wrong-api.so");
  expect_contains(error_of([&] { registry.load(file); }),
                  {file.string(), "wrong plugin API version", "got 99, expected " + std::to_string(kCabPluginApiVersion)});
  EXPECT_TRUE(registry.entries().empty());
}

TEST(Registry, WrongAbiTag) {
  Registry registry;
  const auto file = fixture("wrong-abi", "cab-fixture-wrong-abi.so");
  expect_contains(error_of([&] { registry.load(file); }),
                  {file.string(), "got 'gcc-9;libstdc++-cxx11abi-0;torch-1.13.0;cuda-11.7'",
                   "expected '" + Registry::host_abi_tag() + "'"});
}

TEST(Registry, FactoryWithoutCreateFunctionIsRejected) {
  Registry registry;
  expect_contains(error_of([&] { registry.load(fixture("bad-factory", "cab-fixture-bad-factory.so")); }),
                  {"cab-fixture-bad-factory.so", "no name or no create function"});
}

TEST(Registry, DuplicateNamesBothFilesAndMakesTheNameAmbiguous) {
  Registry registry;
  const auto good = fixture("good", "cab-fixture-good.so");
  const auto dup = fixture("duplicate", "cab-fixture-duplicate.so");
  registry.load(good);
  expect_contains(error_of([&] { registry.load(dup); }),
                  {"duplicate bridge plugin 'fixture-scale'", good.string(), dup.string()});
  expect_contains(error_of([&] { registry.find(Kind::bridge, "fixture-scale"); }),
                  {"ambiguous", good.string(), dup.string()});
  EXPECT_NO_THROW(registry.find(Kind::dataset, "fixture-counted"));  // the rest of the good library is intact
}

TEST(Registry, UnknownNameListsAvailableWithDidYouMean) {
  Registry registry;
  registry.load(fixture("good", "cab-fixture-good.so"));
  expect_contains(error_of([&] { registry.find(Kind::bridge, "fixture-scal"); }),
                  {"unknown bridge plugin 'fixture-scal'", "did you mean 'fixture-scale'?",
                   "available bridge plugins: fixture-scale"});
  expect_contains(error_of([&] { registry.find(Kind::teacher, "deit"); }),
                  {"unknown teacher plugin 'deit'", "available teacher plugins: (none)"});
}

TEST(Registry, DiscoverCollectsProblemsAndKeepsTheGoodPlugins) {
  Registry registry;
  const auto problems = registry.discover({kFixtures / "good", kFixtures / "wrong-api", kFixtures / "not-a-library",
                                           kFixtures / "no-entry", kFixtures / "does-not-exist"});
  EXPECT_EQ(problems.size(), 3u);
  EXPECT_EQ(registry.problems().size(), 3u);
  EXPECT_NO_THROW(registry.find(Kind::bridge, "fixture-scale"));
  expect_contains(error_of([&] { registry.find(Kind::bridge, "nope"); }), {"3 plugin file(s) failed to load"});
}

TEST(Registry, DefaultSearchPathHasCabPluginPathFirstThenTheBuildPluginDirectory) {
  ASSERT_EQ(setenv("CAB_PLUGIN_PATH", (kFixtures / "good").c_str(), 1), 0);
  const auto dirs = Registry::default_search_path();
  unsetenv("CAB_PLUGIN_PATH");
  ASSERT_GE(dirs.size(), 2u);
  EXPECT_EQ(dirs[0], kFixtures / "good");
  EXPECT_TRUE(fs::equivalent(dirs[1], fs::path(CAB_TEST_PLUGIN_DIR)));
  Registry registry;
  EXPECT_TRUE(registry.discover(dirs).empty());
  EXPECT_NO_THROW(registry.find(Kind::bridge, "mlp"));
  EXPECT_NO_THROW(registry.find(Kind::bridge, "fixture-scale"));
}

namespace {
std::shared_ptr<cab::Component> create_static(const cab::config::Section&) { return std::make_shared<cab::Component>(); }
const cab::plugin::Factory kStaticFactories[] = {CAB_FACTORY(method, "linked-in", "a statically linked plugin", nullptr, create_static)};
const CabPluginInfo kStaticInfo{kCabPluginApiVersion, CAB_ABI_TAG, "static-test", "1.0.0", kStaticFactories, 1};
const CabPluginInfo kStaticWrongApi{7, CAB_ABI_TAG, "static-bad", "1.0.0", kStaticFactories, 1};
}  // namespace

TEST(Registry, BuiltinPluginsLinkedIntoTheExecutable) {
  Registry registry;
  registry.add_builtin(&kStaticInfo);
  EXPECT_EQ(registry.find(Kind::method, "linked-in").library->path, "<built-in>");
  EXPECT_NE(registry.create(Kind::method, "linked-in", {}), nullptr);
  expect_contains(error_of([&] { registry.add_builtin(&kStaticWrongApi, "<static-bad>"); }), {"<static-bad>", "got 7, expected " + std::to_string(kCabPluginApiVersion)});
}
