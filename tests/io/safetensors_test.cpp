// safetensors: round trips, Hugging Face files, every malformed-file case, and all-or-nothing loading.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <fstream>

#include "cab/io/safetensors.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::io::SafeTensorsFile;

namespace {

class SafeTensorsTest : public cab::test::TempDirTest {
 protected:
  // A file with the given header JSON and `data_bytes` zero bytes of data.
  std::filesystem::path raw(const std::string& name, const std::string& header, std::size_t data_bytes,
                            std::uint64_t claimed_length = 0) {
    const auto path = dir_ / name;
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t n = claimed_length ? claimed_length : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << std::string(data_bytes, '\0');
    return path;
  }
  void expect_error(const std::filesystem::path& file, const std::string& fragment) {
    try {
      SafeTensorsFile f(file);
      ADD_FAILURE() << "no error for " << file;
    } catch (const cab::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
    }
  }
};

struct Tiny : torch::nn::Module {
  Tiny() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    scale = register_buffer("scale", at::ones({3}));
  }
  torch::nn::Linear fc{nullptr};
  at::Tensor scale;
};

}  // namespace

TEST_F(SafeTensorsTest, RoundTripKeepsValuesDtypesAndMetadata) {
  const at::Tensor a = at::randn({3, 5}), b = at::arange(7, at::kLong), c = at::randn({2, 2}).to(at::kBFloat16);
  const at::Tensor strided = at::randn({4, 6}).t();  // non-contiguous input
  const auto path = dir_ / "x.safetensors";
  cab::io::save_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"s", strided}}, {{"format", "pt"}});
  SafeTensorsFile f(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "c", "s"}));
  EXPECT_TRUE(at::equal(f.get("a"), a));
  EXPECT_TRUE(at::equal(f.get("b"), b));
  EXPECT_TRUE(at::equal(f.get("c"), c));
  EXPECT_TRUE(at::equal(f.get("s"), strided));
  EXPECT_EQ(f.info("c").dtype, "BF16");
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(SafeTensorsTest, ReadsHuggingFaceFiles) {
  SafeTensorsFile f(std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/vit/model.safetensors");
  EXPECT_TRUE(f.contains("vit.embeddings.cls_token"));
  EXPECT_TRUE(f.contains("vit.encoder.layer.0.attention.attention.query.weight"));
  EXPECT_TRUE(f.contains("classifier.weight"));
  EXPECT_EQ(f.get("classifier.weight").sizes(), (at::IntArrayRef{10, 32}));
  EXPECT_EQ(f.info("classifier.weight").dtype, "F32");
}

TEST_F(SafeTensorsTest, MalformedFilesAreNamedAndExplained) {
  const auto tiny = dir_ / "tiny.safetensors";
  std::ofstream(tiny) << "abc";
  expect_error(tiny, "is truncated: 3 bytes");
  expect_error(raw("long.safetensors", "{}", 0, 1000), "header length 1000 goes beyond the file");
  expect_error(raw("json.safetensors", "{\"a\": {\"dtype\": ", 0), "invalid header JSON");
  expect_error(raw("dtype.safetensors", R"({"a":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[0,2]}})", 2),
               "tensor 'a': unsupported dtype 'F8_E8M0'");
  expect_error(raw("span.safetensors", R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 16),
               "data_offsets span 12 bytes, but shape [2, 2] of F32 needs 16");
  expect_error(raw("short.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
               "leave the data buffer (8 bytes): truncated file?");
  expect_error(raw("entry.safetensors", R"({"a":{"dtype":"F32","shape":"x","data_offsets":[0,0]}})", 0),
               "tensor 'a': malformed header entry");
  expect_error(dir_ / "missing.safetensors", "cannot open");
}

TEST_F(SafeTensorsTest, LoadIntoIsAllOrNothingAndListsEveryProblem) {
  Tiny source, target;
  const auto good = dir_ / "good.safetensors";
  {
    at::NoGradGuard g;
    source.scale.fill_(2.0);
  }
  cab::io::save_safetensors(good, cab::io::state_of(source));
  cab::io::load_into(target, SafeTensorsFile(good));
  EXPECT_TRUE(at::equal(target.fc->weight, source.fc->weight));
  EXPECT_TRUE(at::equal(target.scale, source.scale));

  Tiny fresh;
  const at::Tensor before = fresh.fc->weight.clone();
  const auto bad = dir_ / "bad.safetensors";
  cab::io::save_safetensors(bad, {{"fc.weight", at::zeros({3, 5})}, {"fc.bias", at::zeros({3})}, {"extra", at::zeros({1})}});
  try {
    cab::io::load_into(fresh, SafeTensorsFile(bad));
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("nothing was loaded"), std::string::npos) << m;
    EXPECT_NE(m.find("fc.weight: expected [3, 4], got [3, 5]"), std::string::npos) << m;
    EXPECT_NE(m.find("missing keys (in the model, not in the file):\n  scale"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected keys (in the file, not in the model):\n  extra"), std::string::npos) << m;
  }
  EXPECT_TRUE(at::equal(fresh.fc->weight, before));  // untouched
  EXPECT_FALSE(at::equal(fresh.fc->bias, at::zeros({3})));

  // Renamed prefixes and optional keys.
  const auto renamed = dir_ / "renamed.safetensors";
  cab::io::save_safetensors(renamed, {{"old.weight", source.fc->weight}, {"old.bias", source.fc->bias}});
  Tiny other;
  cab::io::LoadOptions options;
  options.rename_prefixes = {{"old.", "fc."}};
  options.optional = {"scale"};
  cab::io::load_into(other, SafeTensorsFile(renamed), options);
  EXPECT_TRUE(at::equal(other.fc->bias, source.fc->bias));
}
