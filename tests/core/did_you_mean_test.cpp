// Edit distance and suggestions.
#include <gtest/gtest.h>

#include "cab/util/did_you_mean.h"

TEST(EditDistance, CountsInsertionsDeletionsSubstitutions) {
  EXPECT_EQ(cab::edit_distance("", ""), 0u);
  EXPECT_EQ(cab::edit_distance("abc", ""), 3u);
  EXPECT_EQ(cab::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(cab::edit_distance("hiden", "hidden"), 1u);
  EXPECT_EQ(cab::edit_distance("mlp", "mpl"), 2u);
}

TEST(DidYouMean, SuggestsTheClosestCandidate) {
  const std::vector<std::string> keys = {"hidden", "activation", "bias", "in_features"};
  EXPECT_EQ(cab::did_you_mean("hiden", keys), " (did you mean 'hidden'?)");
  EXPECT_EQ(cab::did_you_mean("activaton", keys), " (did you mean 'activation'?)");
  EXPECT_EQ(cab::did_you_mean("completely_different", keys), "");
  EXPECT_EQ(cab::closest_matches("bais", keys, 3), std::vector<std::string>{"bias"});
}

TEST(JoinNames, SortsAndSaysNoneWhenEmpty) {
  EXPECT_EQ(cab::join_names({"mlp", "identity", "linear"}), "identity, linear, mlp");
  EXPECT_EQ(cab::join_names({}), "(none)");
}
