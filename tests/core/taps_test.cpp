// Tap requests (what a model must compute) and captured taps.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cab/plugin/taps.h"
#include "cab/util/error.h"

TEST(TapRequest, AllLayersOrChosenLayers) {
  cab::TapRequest request;
  request.add("k", {1, 3}).add("q");
  EXPECT_TRUE(request.wants("k", 1));
  EXPECT_TRUE(request.wants("k", 3));
  EXPECT_FALSE(request.wants("k", 2));
  EXPECT_TRUE(request.wants("q", 11));
  EXPECT_FALSE(request.wants("v", 0));
  EXPECT_EQ(request.names(), (std::vector<std::string>{"k", "q"}));
}

TEST(TapRequest, MergeWidensToAllLayers) {
  cab::TapRequest a, b;
  a.add("B", {0});
  b.add("B");
  a.merge(b);
  EXPECT_TRUE(a.wants("B", 7));
  cab::TapRequest c;
  c.add("C", {2}).add("C", {4});
  EXPECT_TRUE(c.wants("C", 2));
  EXPECT_TRUE(c.wants("C", 4));
  EXPECT_FALSE(c.wants("C", 3));
}

TEST(TapRequest, CheckRejectsUnknownNamesAndLayers) {
  cab::TapRequest request;
  request.add("kk", {0});
  try {
    request.check({"q", "k", "v"}, 12, "deit-tiny");
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("deit-tiny has no tap 'kk' (did you mean 'k'?)"), std::string::npos) << e.what();
  }
  cab::TapRequest deep;
  deep.add("k", {12});
  EXPECT_THROW(deep.check({"k"}, 12, "deit-tiny"), cab::Error);
  cab::TapRequest ok;
  ok.add("k", {11});
  EXPECT_NO_THROW(ok.check({"k"}, 12, "deit-tiny"));
}

TEST(Taps, StoresPerLayerAndDirection) {
  cab::Taps taps;
  taps.put({"B", 2, cab::Direction::forward}, at::ones({1, 3, 4}));
  taps.put({"B", 2, cab::Direction::backward}, at::zeros({1, 3, 4}));
  EXPECT_EQ(taps.size(), 2u);
  EXPECT_DOUBLE_EQ(taps.at({"B", 2, cab::Direction::forward}).sum().item<double>(), 12.0);
  EXPECT_DOUBLE_EQ(taps.at({"B", 2, cab::Direction::backward}).sum().item<double>(), 0.0);
  try {
    taps.at({"C", 2});
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tap C@2 was not captured"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("B@2, B@2/bwd"), std::string::npos) << e.what();
  }
}
