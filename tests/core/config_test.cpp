// Config: TOML parsing with locations, schema validation, run configs with plugin tables.
#include <gtest/gtest.h>

#include "cab/config/run_config.h"
#include "cab/config/schema.h"
#include "cab/config/toml_reader.h"
#include "cab/plugin/registry.h"

using cab::ConfigError;
using namespace cab::config;

namespace {

// Expects `fn` to throw ConfigError whose message contains every fragment.
template <class Fn>
void expect_config_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    for (const auto& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << "'" << f << "' not in: " << message;
  }
}

Schema bridge_schema() {
  Schema s;
  s.add("hidden", Type::integer, "hidden width").fallback(std::int64_t{128}).min(1);
  s.add("activation", Type::string, "activation").fallback(std::string("silu")).one_of({"silu", "gelu", "relu"});
  s.add("scale", Type::number, "scale").fallback(1.0).min(0).max(10);
  s.add("layers", Type::integer_list, "layers").fallback(std::vector<std::int64_t>{});
  s.add("dim", Type::integer, "width").required();
  return s;
}

}  // namespace

TEST(TomlReader, KeepsLocationsOfEveryValue) {
  const auto doc = parse_toml("[bridge]\nhidden = 64\n  scale = 2.5\n", "cfg.toml");
  ASSERT_TRUE(doc.has("bridge"));
  const auto& s = doc.tables.at("bridge");
  EXPECT_EQ(s.integer("hidden"), 64);
  EXPECT_EQ(s.location("hidden").str(), "cfg.toml:2:1");
  EXPECT_EQ(s.location("scale").str(), "cfg.toml:3:3");
}

TEST(TomlReader, SyntaxErrorNamesFileLineColumn) {
  expect_config_error([] { parse_toml("[train]\nlr = = 3\n", "bad.toml"); }, {"bad.toml:2:", "invalid TOML"});
}

TEST(TomlReader, RejectsValuesOutsideTablesAndNestedTables) {
  expect_config_error([] { parse_toml("lr = 3\n", "f.toml"); }, {"f.toml:1:", "'lr' is outside any table"});
  expect_config_error([] { parse_toml("[train]\n[train.inner]\nx = 1\n", "f.toml"); }, {"f.toml:2:", "nested tables"});
  expect_config_error([] { parse_toml("[train]\nx = [1, \"a\"]\n", "f.toml"); }, {"f.toml:2:", "only numbers or only strings"});
}

TEST(TomlReader, MissingFileIsNamed) {
  expect_config_error([] { read_toml_file("/nonexistent/cab.toml"); }, {"/nonexistent/cab.toml", "no such file"});
}

TEST(Schema, FillsDefaultsAndConvertsIntegersToNumbers) {
  const auto doc = parse_toml("[bridge]\ndim = 8\nscale = 3\n", "f.toml");
  const Section s = bridge_schema().validate(doc.tables.at("bridge"));
  EXPECT_EQ(s.integer("hidden"), 128);
  EXPECT_EQ(s.string("activation"), "silu");
  EXPECT_DOUBLE_EQ(s.number("scale"), 3.0);
  EXPECT_TRUE(s.integers("layers").empty());
  EXPECT_EQ(s.location("hidden").file, "<default>");
}

TEST(Schema, UnknownKeySuggestsTheClosest) {
  const auto doc = parse_toml("[bridge]\ndim = 8\nhiden = 3\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc.tables.at("bridge")); },
                      {"f.toml:3:1", "[bridge] unknown key 'hiden'", "did you mean 'hidden'?", "known keys:"});
}

TEST(Schema, WrongTypeNamesExpectedAndGot) {
  const auto doc = parse_toml("[bridge]\ndim = 8\nhidden = \"wide\"\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc.tables.at("bridge")); },
                      {"f.toml:3:1", "bridge.hidden", "expected integer >= 1", "got string \"wide\""});
  const auto doc2 = parse_toml("[bridge]\ndim = 8.5\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc2.tables.at("bridge")); },
                      {"f.toml:2:1", "bridge.dim", "expected integer", "got number 8.5"});
}

TEST(Schema, RangeAndChoiceViolations) {
  const auto doc = parse_toml("[bridge]\ndim = 8\nscale = 11.0\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc.tables.at("bridge")); },
                      {"f.toml:3:1", "bridge.scale", "expected number in [0, 10]", "got 11.0"});
  const auto doc2 = parse_toml("[bridge]\ndim = 8\nactivation = \"sulu\"\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc2.tables.at("bridge")); },
                      {"f.toml:3:1", "one of silu|gelu|relu", "got \"sulu\"", "did you mean 'silu'?"});
  const auto doc3 = parse_toml("[bridge]\ndim = 8\nhidden = 0\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc3.tables.at("bridge")); }, {"expected integer >= 1", "got 0"});
}

TEST(Schema, MissingRequiredKeyNamesTheTable) {
  const auto doc = parse_toml("\n[bridge]\nhidden = 4\n", "f.toml");
  expect_config_error([&] { bridge_schema().validate(doc.tables.at("bridge")); },
                      {"f.toml:2:", "[bridge] missing required key 'dim'"});
}

TEST(Schema, InvalidDefaultIsRejectedWhenDeclared) {
  Schema s;
  EXPECT_THROW(s.add("x", Type::integer, "x").min(1).fallback(std::string("one")), ConfigError);
}

TEST(Value, RendersAsToml) {
  EXPECT_EQ(to_toml(Value(std::int64_t{3})), "3");
  EXPECT_EQ(to_toml(Value(0.1)), "0.1");
  EXPECT_EQ(to_toml(Value(2.0)), "2.0");
  EXPECT_EQ(to_toml(Value(std::string("a\"b"))), "\"a\\\"b\"");
  EXPECT_EQ(to_toml(Value(std::vector<double>{1.5, 2})), "[1.5, 2.0]");
}

TEST(RunConfig, CoreTablesGetDefaultsAndUnknownTablesAreRejected) {
  cab::plugin::Registry registry;
  const auto config = parse_run_config(parse_toml("[train]\nlr = 1e-3\nsteps = 10\n", "run.toml"), registry);
  EXPECT_DOUBLE_EQ(config.train.number("lr"), 1e-3);
  EXPECT_EQ(config.train.integer("steps"), 10);
  EXPECT_EQ(config.train.string("precision"), "bf16");
  EXPECT_EQ(config.run.integer("seed"), 0);
  expect_config_error([&] { parse_run_config(parse_toml("[trian]\nlr = 1\n", "run.toml"), registry); },
                      {"run.toml:1:", "unknown table [trian]", "did you mean 'train'?"});
  expect_config_error([&] { parse_run_config(parse_toml("[train]\nprecision = \"fp16\"\n", "run.toml"), registry); },
                      {"run.toml:2:1", "train.precision", "one of fp32|bf16"});
}

TEST(RunConfig, PluginTableNeedsAKnownName) {
  cab::plugin::Registry registry;
  expect_config_error([&] { parse_run_config(parse_toml("[bridge]\nhidden = 3\n", "run.toml"), registry); },
                      {"run.toml:1:", "[bridge] needs name = \"...\""});
  expect_config_error([&] { parse_run_config(parse_toml("[bridge]\nname = \"mlp\"\n", "run.toml"), registry); },
                      {"run.toml:2:1", "bridge.name", "unknown bridge plugin 'mlp'"});
}
