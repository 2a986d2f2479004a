// The `image-folder` dataset on small JPEGs written by the test with TurboJPEG: class numbering, the test
// transform against LibTorch's antialiased resize, seeded train crops and flips, grey and CMYK JPEGs,
// layout and decoding errors, and decoding throughput.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <ATen/ATen.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>

#include "cab/config/section.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::Split;
using cab::plugin::Kind;
namespace fs = std::filesystem;

namespace {

/// A smooth test picture, different per `seed` (packed RGB bytes).
std::vector<std::uint8_t> picture(int width, int height, int seed) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        p[(static_cast<std::size_t>(y) * width + x) * 3 + c] =
            static_cast<std::uint8_t>(std::lround(127.5 + 100 * std::sin(0.11 * x + 0.7 * c + seed) *
                                                              std::cos(0.07 * y - 0.3 * c) +
                                                  20 * std::sin(0.013 * x * y / 4.0)));
  return p;
}

/// Compresses pixels in `format` (TJPF_RGB, TJPF_GRAY, TJPF_CMYK) to JPEG bytes.
std::string jpeg(const std::vector<std::uint8_t>& pixels, int width, int height, int format = TJPF_RGB,
                 int quality = 95) {
  tjhandle h = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int subsampling = format == TJPF_GRAY ? TJSAMP_GRAY : TJSAMP_444;
  const int rc = tjCompress2(h, pixels.data(), width, 0, height, format, &out, &size, subsampling, quality, 0);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(h);
  std::string bytes(reinterpret_cast<char*>(out), size);
  tjFree(out);
  tjDestroy(h);
  return bytes;
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Decodes JPEG bytes at full size into a float [1, 3, h, w] tensor of 0..255 values (the test's reference).
at::Tensor decode_reference(const std::string& bytes) {
  tjhandle h = tjInitDecompress();
  int w = 0, ht = 0, sub = 0, cs = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  EXPECT_EQ(tjDecompressHeader3(h, data, bytes.size(), &w, &ht, &sub, &cs), 0);
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * ht * 3);
  EXPECT_EQ(tjDecompress2(h, data, bytes.size(), rgb.data(), w, 0, ht, TJPF_RGB, 0), 0);
  tjDestroy(h);
  return at::from_blob(rgb.data(), {ht, w, 3}, at::kByte).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).clone();
}

class ImageFolderTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
    root_ = dir_ / "imagenet";
  }
  std::shared_ptr<cab::Dataset> make(cab::config::Section o = {}) {
    if (!o.has("root")) o.set("root", root_.string());
    return registry_.create_as<cab::Dataset>(Kind::dataset, "image-folder", o);
  }
  /// The message of the cab::Error that creating the dataset throws ("" if none).
  std::string create_error(cab::config::Section o = {}) {
    try {
      make(std::move(o));
    } catch (const cab::Error& e) {
      return e.what();
    }
    return "";
  }
  /// An image in root/split/cls/name.
  void add(const std::string& split, const std::string& cls, const std::string& name, const std::string& bytes) {
    write_bytes(root_ / split / cls / name, bytes);
  }
  /// A picture with values in [0, 1]: mean 0, std 1 for every channel.
  static cab::config::Section unnormalized() {
    cab::config::Section o;
    o.set("mean", std::vector<double>{0, 0, 0}).set("std", std::vector<double>{1, 1, 1});
    return o;
  }
  cab::plugin::Registry registry_;
  fs::path root_;
};

}  // namespace

TEST_F(ImageFolderTest, ClassesAreSortedFolderNamesAndLabelsFollowTheFiles) {
  const std::string img = jpeg(picture(40, 30, 1), 40, 30);
  add("train", "zebra", "z2.JPEG", img);
  add("train", "zebra", "z1.jpg", img);
  add("train", "cat", "c1.JPEG", img);
  add("train", "cat", "c2.jpeg", img);
  add("train", "cat", "notes.txt", "not an image");  // other files are ignored
  add("train", "cat", ".hidden.JPEG", "ignored too");
  add("train", "dog", "d1.JPEG", img);
  add("val", "dog", "v1.JPEG", img);
  add("val", "zebra", "v2.JPEG", img);
  cab::config::Section o;
  o.set("image_size", std::int64_t{16});
  auto data = make(o);
  EXPECT_EQ(data->num_classes(), 3);
  EXPECT_EQ(data->size(Split::train), 5);
  EXPECT_EQ(data->size(Split::test), 2);
  EXPECT_EQ(data->labels(Split::train), (std::vector<int64_t>{0, 0, 1, 2, 2}));  // cat, cat, dog, zebra, zebra
  EXPECT_EQ(data->labels(Split::test), (std::vector<int64_t>{1, 2}));
  const cab::Batch b = data->get(Split::train, {4, 0});
  EXPECT_EQ(b.inputs.sizes(), (at::IntArrayRef{2, 3, 16, 16}));
  EXPECT_EQ(b.targets[0].item<int64_t>(), 2);
  EXPECT_EQ(b.targets[1].item<int64_t>(), 0);
}

TEST_F(ImageFolderTest, TestTransformIsResizeThenCenterCropWithTheAntialiasedBilinearFilter) {
  // 64×64 → shorter side 28 / 0.875 = 32 → center 28×28: LibTorch's _upsample_bilinear2d_aa, then a crop.
  const std::string img = jpeg(picture(64, 64, 2), 64, 64);
  add("train", "a", "x.JPEG", img);
  add("val", "a", "x.JPEG", img);
  const at::Tensor reference =
      at::_upsample_bilinear2d_aa(decode_reference(img), {32, 32}, false).narrow(2, 2, 28).narrow(3, 2, 28) / 255;
  cab::config::Section o = unnormalized();
  o.set("image_size", std::int64_t{28}).set("dct_scaling", false);
  const at::Tensor exact = make(o)->get(Split::test, {0}).inputs;
  const double exact_diff = (exact - reference).abs().max().item<double>();
  std::cout << "full-size decode vs LibTorch: max |Δ| = " << exact_diff << "\n";
  EXPECT_LT(exact_diff, 1e-5);

  // DCT scaling decodes at 32×32 directly: a different (but also antialiased) filter, close to the reference.
  o.set("dct_scaling", true);
  const at::Tensor fast = make(o)->get(Split::test, {0}).inputs;
  const double mean_diff = (fast - reference).abs().mean().item<double>();
  std::cout << "DCT-scaled decode vs LibTorch: mean |Δ| = " << mean_diff << ", max |Δ| = "
            << (fast - reference).abs().max().item<double>() << "\n";
  EXPECT_LT(mean_diff, 0.02);

  // Normalization: (v − mean) / std per channel.
  cab::config::Section n;
  n.set("image_size", std::int64_t{28}).set("dct_scaling", false);
  const at::Tensor normalized = make(n)->get(Split::test, {0}).inputs;
  const at::Tensor mean = at::tensor({0.485, 0.456, 0.406}, at::kFloat).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor({0.229, 0.224, 0.225}, at::kFloat).view({1, 3, 1, 1});
  EXPECT_LT((normalized - (reference - mean) / std).abs().max().item<double>(), 1e-4);
}

TEST_F(ImageFolderTest, TestTransformKeepsTheCenterOfWideImages) {
  // 96×64, red left half, blue right half: the 16-pixel center crop shows red on the left, blue on the right.
  std::vector<std::uint8_t> p(96 * 64 * 3, 0);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 96; ++x) p[(y * 96 + x) * 3 + (x < 48 ? 0 : 2)] = 255;
  const std::string img = jpeg(p, 96, 64);
  add("train", "a", "x.JPEG", img);
  add("val", "a", "x.JPEG", img);
  cab::config::Section o = unnormalized();
  o.set("image_size", std::int64_t{16});
  const at::Tensor x = make(o)->get(Split::test, {0}).inputs[0];  // [3, 16, 16]
  EXPECT_GT(x[0][8][0].item<float>(), 0.9);
  EXPECT_LT(x[2][8][0].item<float>(), 0.1);
  EXPECT_LT(x[0][8][15].item<float>(), 0.1);
  EXPECT_GT(x[2][8][15].item<float>(), 0.9);
}

TEST_F(ImageFolderTest, TrainingCropsAndFlipsAreSeededPerExampleAndDraw) {
  // A horizontal ramp: each random crop is still a ramp, rising left to right unless mirrored.
  std::vector<std::uint8_t> ramp(80 * 60 * 3);
  for (int y = 0; y < 60; ++y)
    for (int x = 0; x < 80; ++x)
      for (int c = 0; c < 3; ++c) ramp[(y * 80 + x) * 3 + c] = static_cast<std::uint8_t>(x * 3);
  const std::string img = jpeg(ramp, 80, 60);
  for (int i = 0; i < 4; ++i) add("train", "a", "r" + std::to_string(i) + ".JPEG", img);
  add("val", "a", "r.JPEG", img);
  cab::config::Section o = unnormalized();
  o.set("image_size", std::int64_t{24}).set("seed", std::int64_t{3});
  auto a = make(o);
  auto b = make(o);
  int rising = 0, falling = 0;
  std::vector<at::Tensor> draws;
  for (int round = 0; round < 8; ++round) {
    const at::Tensor x = a->get(Split::train, {0, 1, 2, 3}).inputs;
    EXPECT_TRUE(at::equal(x, b->get(Split::train, {0, 1, 2, 3}).inputs)) << "same seed, same draw: same crops";
    for (int64_t k = 0; k < 4; ++k) {
      const at::Tensor row = x[k][0].mean(0);  // [24]: the ramp across the crop
      const double slope = (row[23] - row[0]).item<double>();
      (slope > 0 ? rising : falling)++;
      draws.push_back(x[k]);
    }
  }
  std::cout << rising << " rising and " << falling << " mirrored crops of 32\n";
  EXPECT_GT(rising, 4);
  EXPECT_GT(falling, 4);
  int distinct = 0;
  for (std::size_t i = 1; i < draws.size(); ++i) distinct += !at::allclose(draws[i], draws[0]);
  EXPECT_GE(distinct, 30) << "random-resized crops differ between draws";
  // Without augment the training split gets the test transform.
  o.set("augment", false);
  auto plain = make(o);
  EXPECT_TRUE(at::equal(plain->get(Split::train, {0}).inputs, plain->get(Split::test, {0}).inputs));
}

TEST_F(ImageFolderTest, GreyAndCmykJpegsDecodeToRgb) {
  add("train", "grey", "g.JPEG", jpeg(std::vector<std::uint8_t>(32 * 32, 100), 32, 32, TJPF_GRAY));
  // Adobe-style inverted CMYK: C' = 255, M' = Y' = 0, K' = 255 (no black ink) is pure red.
  std::vector<std::uint8_t> cmyk(32 * 32 * 4);
  for (std::size_t i = 0; i < 32 * 32; ++i) {
    cmyk[i * 4 + 0] = 255;
    cmyk[i * 4 + 3] = 255;
  }
  add("train", "cmyk", "c.JPEG", jpeg(cmyk, 32, 32, TJPF_CMYK));
  add("val", "grey", "g.JPEG", jpeg(std::vector<std::uint8_t>(32 * 32, 100), 32, 32, TJPF_GRAY));
  cab::config::Section o = unnormalized();
  o.set("image_size", std::int64_t{16}).set("augment", false);
  auto data = make(o);
  const at::Tensor x = data->get(Split::train, {0, 1}).inputs;  // cmyk, grey (sorted class names)
  EXPECT_NEAR(x[0][0].mean().item<double>(), 1.0, 0.03);
  EXPECT_NEAR(x[0][1].mean().item<double>(), 0.0, 0.03);
  EXPECT_NEAR(x[0][2].mean().item<double>(), 0.0, 0.03);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(x[1][c].mean().item<double>(), 100 / 255.0, 2 / 255.0) << "channel " << c;
}

TEST_F(ImageFolderTest, CorruptJpegsAreNamed) {
  const std::string good = jpeg(picture(64, 48, 3), 64, 48);
  add("train", "a", "good.JPEG", good);
  add("train", "a", "text.JPEG", "this is not a JPEG at all");
  add("train", "a", "truncated.JPEG", good.substr(0, good.size() / 2));
  add("val", "a", "good.JPEG", good);
  cab::config::Section o;
  o.set("image_size", std::int64_t{16}).set("workers", std::int64_t{2});
  auto data = make(o);  // files are decoded lazily, in get()
  ASSERT_EQ(data->size(Split::train), 3);                     // good, text, truncated
  EXPECT_NO_THROW(data->get(Split::train, {0}));
  try {
    data->get(Split::train, {0, 1});
    FAIL() << "expected an error";
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find((root_ / "train/a/text.JPEG").string() + " is not a readable JPEG image"),
              std::string::npos)
        << e.what();
  }
  // A truncated file decodes with a warning, as in PIL, unless strict.
  EXPECT_NO_THROW(data->get(Split::train, {2}));
  o.set("strict", true);
  try {
    make(o)->get(Split::train, {2});
    FAIL() << "expected an error";
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find((root_ / "train/a/truncated.JPEG").string() + " is a corrupt JPEG image"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(ImageFolderTest, LayoutErrorsNameTheFolder) {
  std::string message = create_error();
  EXPECT_NE(message.find("dataset root " + root_.string() + " is not a folder"), std::string::npos) << message;
  EXPECT_NE(message.find("root/train/<class>/*.JPEG"), std::string::npos) << message;

  const std::string img = jpeg(picture(20, 20, 4), 20, 20);
  add("train", "cat", "c.JPEG", img);
  message = create_error();
  EXPECT_NE(message.find((root_ / "val").string() + " is not a folder"), std::string::npos) << message;

  // ImageNet's validation images as distributed: no class folders.
  write_bytes(root_ / "val" / "v1.JPEG", img);
  write_bytes(root_ / "val" / "v2.JPEG", img);
  message = create_error();
  EXPECT_NE(message.find((root_ / "val").string() + " holds 2 images but no class folders"), std::string::npos)
      << message;

  add("val", "cat", "c.JPEG", img);
  fs::create_directories(root_ / "train" / "dog");
  message = create_error();
  EXPECT_NE(message.find("class folder " + (root_ / "train" / "dog").string() + " holds no images"),
            std::string::npos)
      << message;

  add("train", "dog", "d.JPEG", img);
  add("val", "cow", "x.JPEG", img);
  message = create_error();
  EXPECT_NE(message.find((root_ / "val" / "cow").string() + " is a class folder with no counterpart"),
            std::string::npos)
      << message;

  fs::remove(root_ / "val" / "cow" / "x.JPEG");
  fs::remove(root_ / "val" / "cow");
  EXPECT_EQ(create_error(), "");
}

TEST_F(ImageFolderTest, ThreadsGiveTheSameBatchesAndThroughputIsReported) {
  // ImageNet-sized photos (500×375, quality 90): 48 per split.
  constexpr int kImages = 96;
  for (int i = 0; i < kImages; ++i)
    add(i < kImages / 2 ? "train" : "val", fmt::format("c{}", i % 4), fmt::format("{:03}.JPEG", i),
        jpeg(picture(500, 375, i), 500, 375, TJPF_RGB, 90));
  std::vector<int64_t> all(kImages / 2);
  std::iota(all.begin(), all.end(), 0);
  std::map<bool, at::Tensor> one_worker;
  for (const bool dct : {true, false})
    for (const int workers : {1, 2}) {
      cab::config::Section o;
      o.set("workers", std::int64_t{workers}).set("dct_scaling", dct).set("seed", std::int64_t{5});
      auto data = make(o);
      const at::Tensor first = at::cat({data->get(Split::train, all).inputs, data->get(Split::test, all).inputs});
      if (workers == 1) one_worker[dct] = first;
      else EXPECT_TRUE(at::equal(one_worker[dct], first)) << "the number of threads changes nothing";
      // Best of 3 (the files are in the page cache after the first pass).
      double best[2] = {1e9, 1e9};
      for (int repeat = 0; repeat < 3; ++repeat)
        for (const Split split : {Split::train, Split::test}) {
          const auto start = std::chrono::steady_clock::now();
          data->get(split, all);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          best[static_cast<int>(split)] = std::min(best[static_cast<int>(split)], s);
        }
      std::cout << fmt::format("500×375 JPEG → 224², {} thread(s), dct_scaling {}: train transform {:.0f} images/s, "
                               "test transform {:.0f} images/s\n",
                               workers, dct, all.size() / best[0], all.size() / best[1]);
    }
}
