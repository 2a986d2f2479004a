// Out-of-tree plugins: install the SDK, build tests/fixtures/out_of_tree_plugin against it as a separate
// CMake project, then load the result through the registry and through the installed cab-sweep.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/config/section.h"
#include "cab/plugin/bridge.h"
#include "cab/plugin/registry.h"
#include "test_support.h"

using cab::test::run_command;

namespace {

std::string quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// The parent build's CMAKE_PREFIX_PATH, '|'-separated in the compile definition, as a CMake list.
std::string prefix_path() {
  std::string list = CAB_TEST_PREFIX_PATH;
  for (char& c : list)
    if (c == '|') c = ';';
  return list;
}

class OutOfTree : public cab::test::TempDirTest {};

}  // namespace

TEST_F(OutOfTree, PluginBuiltAgainstTheInstalledSdkLoadsAndRuns) {
  const auto prefix = dir_ / "prefix";
  const auto build = dir_ / "build";
  const std::string cmake = quote(CAB_TEST_CMAKE);

  auto install = run_command(cmake + " --install " + quote(CAB_TEST_BUILD_DIR) + " --prefix " + quote(prefix));
  ASSERT_EQ(install.exit_code, 0) << install.output;
  ASSERT_TRUE(std::filesystem::exists(prefix / "lib" / "cmake" / "cab" / "cabConfig.cmake"));
  ASSERT_TRUE(std::filesystem::exists(prefix / "include" / "cab" / "plugin" / "abi.h"));

  std::string configure = cmake + " -S " + quote(std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/out_of_tree_plugin") +
                          " -B " + quote(build) + " -G " + quote(CAB_TEST_GENERATOR) + " -DCMAKE_BUILD_TYPE=Release" +
                          " -DCMAKE_CXX_COMPILER=" + quote(CAB_TEST_CXX) + " -Dcab_DIR=" +
                          quote(prefix / "lib" / "cmake" / "cab") + " -DTorch_DIR=" + quote(CAB_TEST_TORCH_DIR) +
                          " -DCMAKE_PREFIX_PATH=" + quote(prefix_path());
  const std::string launcher = CAB_TEST_LAUNCHER;
  if (!launcher.empty() && launcher.find("NOTFOUND") == std::string::npos)
    configure += " -DCMAKE_CXX_COMPILER_LAUNCHER=" + quote(launcher);
  auto configured = run_command(configure);
  ASSERT_EQ(configured.exit_code, 0) << configured.output;
  auto built = run_command(cmake + " --build " + quote(build));
  ASSERT_EQ(built.exit_code, 0) << built.output;
  const auto plugin = build / "cab-my-scaled-bridge.so";
  ASSERT_TRUE(std::filesystem::exists(plugin));

  cab::plugin::Registry registry;
  registry.load(plugin);
  const auto& entry = registry.find(cab::plugin::Kind::bridge, "scaled-tanh");
  EXPECT_EQ(entry.library->version, "0.9.0");
  cab::config::Section options;
  options.set("in_features", std::int64_t{16}).set("out_features", std::int64_t{64});
  auto bridge = registry.create_as<cab::Bridge>(cab::plugin::Kind::bridge, "scaled-tanh", options);
  const at::Tensor y = bridge->forward(at::randn({4, 16}));
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{4, 64}));
  EXPECT_LE(y.abs().max().item<double>(), 3.0);  // scale · tanh
  EXPECT_GT(y.abs().max().item<double>(), 0.0);

  // The installed cab-sweep finds its own plugins in <prefix>/lib/cab/plugins and this one via CAB_PLUGIN_PATH.
  auto listed = run_command("CAB_PLUGIN_PATH=" + quote(build) + " " + quote(prefix / "bin" / "cab-sweep") + " --list-plugins");
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("bridge     scaled-tanh"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find((prefix / "lib" / "cab" / "plugins" / "cab-bridge-mlp.so").string()), std::string::npos)
      << listed.output;
}
