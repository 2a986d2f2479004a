// Report definitions: the shipped ones parse; errors name file:line:column with a did-you-mean; filters match
// numbers numerically and strings exactly or as globs; a user's directory overrides a shipped id.
#include <gtest/gtest.h>

#include "cab/report/definition.h"
#include "test_support.h"

using cab::report::Definition;
using cab::report::Kind;
using cab::report::parse_definition;
using cab::report::parse_param;
using cab::report::ReportError;

namespace {

const std::string kTables = std::string(CAB_TEST_SOURCE_DIR) + "/results/tables";

std::string error_of(const std::string& text) {
  try {
    parse_definition(text, "t", "t.toml");
  } catch (const ReportError& e) {
    return e.what();
  }
  return "(no error)";
}

class DefinitionTest : public cab::test::TempDirTest {};

}  // namespace

TEST(Definitions, ShippedOnesParseInReportOrder) {
  const auto defs = cab::report::load_definitions({kTables});
  std::vector<std::string> ids;
  for (const auto& d : defs) ids.push_back(d.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"table3", "table4", "table5", "cab_variants", "efficiency", "failed",
                                           "figure2", "learning_curves", "efficiency_bars", "figure3"}));
  EXPECT_EQ(defs[0].kind, Kind::table);
  EXPECT_EQ(defs[0].rows.keys.size(), 2u);
  EXPECT_EQ(defs[0].value.metric.front().key, "top1");
  EXPECT_EQ(defs[2].rows.entries.size(), 7u);  // Table 5's seven ablation rows
  EXPECT_EQ(defs[3].rows.entries.size(), 3u);  // CAB variants: gradient to the student or not, early stop
  EXPECT_EQ(defs[5].kind, Kind::runs);
  EXPECT_EQ(defs[6].kind, Kind::line);
  EXPECT_EQ(defs[7].kind, Kind::steps);
  EXPECT_EQ(defs[8].kind, Kind::bars);
  EXPECT_EQ(defs[9].value.metric.front().key, "attn_similarity");
  EXPECT_TRUE(defs[9].value.metric.front().series);
}

TEST(Definitions, ErrorsNameTheLineAndSuggest) {
  EXPECT_EQ(error_of("[table]\nsweeps = \"x\"\n[value]\nmetrc = \"top1\"\n"),
            "t.toml:4:1: unknown key 'metrc' in [value] (did you mean 'metric'?)");
  EXPECT_EQ(error_of("[tabel]\n"), "t.toml:1:2: unknown key 'tabel' in the definition (top level) (did you mean 'table'?)");
  EXPECT_EQ(error_of("[value]\nmetric = \"top1\"\n"), "t.toml: a definition has exactly one of [table], [runs] or [figure]");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"top1\"\naggregate = \"avg\"\n[[row_key]]\nkey = \"m\"\n"),
            "t.toml:4:13: unknown aggregate 'avg' in [value] (one of mean_std, mean, sum, min, max, count)");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"top1\"\n[[row_key]]\nkey = \"a\"\n[[row]]\nlabel = \"x\"\n"),
            "t.toml: use either [[row_key]] or [[row]], not both");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"top1\"\n"),
            "t.toml: a table needs rows: [[row_key]] (a parameter's values) or [[row]] entries");
  EXPECT_EQ(error_of("[table]\n[[row_key]]\nkey = \"a\"\n"),
            "t.toml: a table needs [value] metric = \"...\" (a summary key such as top1, or series:KEY:last)");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"series:loss:median\"\n"),
            "t.toml:3:10: metric: unknown reduction 'median' (last, min, max or mean)");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"top1\"\n[[row_key]]\nlabel = \"{teacher.name\"\n"),
            "t.toml:5:9: label: '{' without '}' in \"{teacher.name\"");
  EXPECT_EQ(error_of("[table]\n[value]\nmetric = \"top1\"\n[[row_key]]\nkey = \"a\"\nformat = \"percentage\"\n"),
            "t.toml:6:10: unknown format 'percentage' (percent, si, basename, fixed1, fixed2, fixed3)");
  EXPECT_EQ(error_of("[figure]\nkind = \"lines\"\n"), "t.toml:2:8: unknown figure kind 'lines' (line, steps or bars) "
                                                       "(did you mean 'line'?)");
  EXPECT_EQ(error_of("[runs]\nstatus = [\"crashed\"]\n"),
            "t.toml:2:10: unknown status 'crashed' (pending, running, finished, failed, killed)");
  EXPECT_NE(error_of("[table\n").find("t.toml:1:7: invalid TOML"), std::string::npos) << error_of("[table\n");
}

TEST(Definitions, FiltersMatchNumbersNumericallyAndStringsAsGlobs) {
  using cab::report::value_matches;
  const auto want = [](const std::string& toml_key_value) {
    return parse_definition("[runs]\nwhere = { k = " + toml_key_value + " }\n", "t", "t.toml").where.filters[0].any_of;
  };
  const auto fraction = parse_param("0.05");
  EXPECT_TRUE(value_matches(want("0.05")[0], &fraction));
  EXPECT_FALSE(value_matches(want("0.1")[0], &fraction));
  const auto steps = parse_param("150");
  EXPECT_TRUE(value_matches(want("150.0")[0], &steps));  // integer and float compare as numbers
  const auto name = parse_param("\"soft-kd\"");
  EXPECT_TRUE(value_matches(want("\"soft-kd\"")[0], &name));
  EXPECT_TRUE(value_matches(want("\"*-kd\"")[0], &name));
  EXPECT_FALSE(value_matches(want("\"soft\"")[0], &name));
  EXPECT_FALSE(value_matches(want("\"soft-kd\"")[0], nullptr));  // unset never matches
  const auto flag = parse_param("false");
  EXPECT_TRUE(value_matches(want("false")[0], &flag));
  EXPECT_FALSE(value_matches(want("true")[0], &flag));
  EXPECT_EQ(want("[\"a\", \"b\"]").size(), 2u);  // a list: any of
}

TEST_F(DefinitionTest, AnEarlierDirectoryOverridesAShippedId) {
  write("table3.toml", "[table]\ntitle = \"My Table 3\"\n[value]\nmetric = \"best_top1\"\n[[row_key]]\nkey = \"method.name\"\n");
  write("notes.txt", "not a definition");
  const auto defs = cab::report::load_definitions({dir_, kTables, dir_ / "missing"});
  ASSERT_EQ(defs.size(), 10u);
  const auto& t3 = *std::find_if(defs.begin(), defs.end(), [](const Definition& d) { return d.id == "table3"; });
  EXPECT_EQ(t3.title, "My Table 3");
  EXPECT_EQ(t3.file, (dir_ / "table3.toml").string());
  EXPECT_EQ(t3.value.metric.front().key, "best_top1");
}
