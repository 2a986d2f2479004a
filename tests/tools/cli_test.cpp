// cab-sweep and cab-report as a user runs them: help, version, plugin listing, config checks, exit codes.
#include <gtest/gtest.h>

#include "cab/plugin/abi.h"
#include "test_support.h"

using cab::test::run_command;

namespace {

const std::string kSweep = std::string(CAB_TEST_BIN_DIR) + "/cab-sweep";
const std::string kReport = std::string(CAB_TEST_BIN_DIR) + "/cab-report";

void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "'" << fragment << "' not in:\n" << text;
}

class CliTest : public cab::test::TempDirTest {};

}  // namespace

TEST_F(CliTest, HelpAndVersion) {
  auto help = run_command(kSweep + " --help");
  EXPECT_EQ(help.exit_code, 0);
  expect_contains(help.output, "Usage: cab-sweep");
  expect_contains(help.output, "--list-plugins");
  expect_contains(help.output, "Exit codes:");
  auto version = run_command(kSweep + " --version");
  EXPECT_EQ(version.exit_code, 0);
  expect_contains(version.output, "cab-sweep 0.1.0");
  expect_contains(version.output, "LibTorch 2.11.0");
  expect_contains(version.output, "plugin API " + std::to_string(kCabPluginApiVersion));
  EXPECT_EQ(run_command(kReport + " --version").exit_code, 0);
  EXPECT_EQ(run_command(kReport + " --help").exit_code, 0);
}

TEST_F(CliTest, ListPluginsShowsKindNameVersionLibrary) {
  auto r = run_command(kSweep + " --list-plugins");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "KIND       NAME");
  for (const char* name : {"identity", "linear", "mlp"}) expect_contains(r.output, std::string("bridge     ") + name);
  expect_contains(r.output, "cab-bridge-mlp.so");
  expect_contains(r.output, "student    mamba");
  expect_contains(r.output, "student    vim");
  expect_contains(r.output, "student    mamba2");
  expect_contains(r.output, "student    phi-mamba");
  expect_contains(r.output, "teacher    vit");
  expect_contains(r.output, "plugin(s) from");
}

TEST_F(CliTest, BrokenPluginFilesAreReportedAndTheRestStillLoads) {
  const std::string fixtures = std::string(CAB_TEST_BUILD_DIR) + "/tests/fixtures";
  auto r = run_command("CAB_PLUGIN_PATH=" + fixtures + "/not-a-library:" + fixtures + "/wrong-abi " + kSweep +
                       " --list-plugins");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "skipped: cannot load plugin");
  expect_contains(r.output, "cab-fixture-text.so");
  expect_contains(r.output, "different ABI tag: got 'gcc-9");
  expect_contains(r.output, "bridge     mlp");
  // An explicitly named file must load: its error is fatal with exit code 3.
  auto explicit_bad = run_command(kSweep + " --plugin-path " + fixtures + "/wrong-api/cab-fixture-wrong-api.so --list-plugins");
  EXPECT_EQ(explicit_bad.exit_code, 3);
  expect_contains(explicit_bad.output, "got 99, expected " + std::to_string(kCabPluginApiVersion));
}

TEST_F(CliTest, CheckPrintsTheResolvedConfig) {
  const auto file = write("run.toml", "[train]\nlr = 1e-3\n\n[bridge]\nname = \"mlp\"\nin_features = 16\nout_features = 192\n");
  auto r = run_command(kSweep + " --check " + file.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "valid");
  expect_contains(r.output, "lr = 0.001");
  expect_contains(r.output, "hidden = 128  # <default>");
  expect_contains(r.output, "name = \"mlp\"");
}

TEST_F(CliTest, CheckReportsBadInputWithLocationAndExitCode2) {
  const auto typo = write("typo.toml", "[bridge]\nname = \"mpl\"\n");
  auto r = run_command(kSweep + " --check " + typo.string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, typo.string() + ":2:1: bridge.name: unknown bridge plugin 'mpl' (did you mean 'mlp'?)");

  const auto key = write("key.toml", "[bridge]\nname = \"mlp\"\nin_features = 4\nout_features = 4\nhiden = 3\n");
  r = run_command(kSweep + " --check " + key.string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, key.string() + ":5:1: [bridge] unknown key 'hiden' (did you mean 'hidden'?)");

  const auto syntax = write("syntax.toml", "[train\nlr = 1\n");
  r = run_command(kSweep + " --check " + syntax.string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, syntax.string() + ":1:");
  expect_contains(r.output, "invalid TOML");

  r = run_command(kSweep + " --check " + (dir_ / "missing.toml").string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "missing.toml: cannot open config file (no such file)");
}

TEST_F(CliTest, SweepWithoutTheRequiredPluginsIsRejectedBeforeAnythingIsWritten) {
  const auto file = write("sweep.toml", "[sweep]\nname = \"x\"\n");
  const auto db = dir_ / "db" / "cab.sqlite";
  auto r = run_command(kSweep + " --db " + db.string() + " " + file.string());
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "runs need a dataset plugin: set \"dataset.name\" in [base]");
  EXPECT_FALSE(std::filesystem::exists(db));
}

TEST_F(CliTest, BadFlagsAreUsageErrors) {
  auto r = run_command(kSweep + " --no-such-flag");
  EXPECT_EQ(r.exit_code, 2);
  expect_contains(r.output, "unrecognised option '--no-such-flag'");
  EXPECT_EQ(run_command(kSweep).exit_code, 2);
}
