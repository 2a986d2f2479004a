// The `fashion-mnist` dataset: Debian's real files (sizes, classes, first label, normalization, seeded
// augmentation) and the errors for missing, truncated, corrupt or malformed IDX files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
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

const fs::path kDebian = "/usr/share/datasets/fashion-mnist";
constexpr double kMean = 0.2860, kStd = 0.3530;

bool have_debian_files() {
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                        "t10k-labels-idx1-ubyte.gz"})
    if (!fs::exists(kDebian / f)) return false;
  return true;
}

#define REQUIRE_DEBIAN_FILES()                                                                     \
  if (!have_debian_files())                                                                        \
  GTEST_SKIP() << "needs the Debian package dataset-fashion-mnist (" << kDebian.string() << ")"

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream(file, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const fs::path& file, const std::string& bytes) {
  gzFile f = gzopen(file.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

/// An IDX image file: header, then n·rows·cols pixel bytes (pixel = (i + offset) mod 256).
std::string idx_images(std::uint32_t n, std::uint32_t rows = 28, std::uint32_t cols = 28, std::uint32_t magic = 0x803) {
  std::string s = be32(magic) + be32(n) + be32(rows) + be32(cols);
  for (std::uint32_t i = 0; i < n * rows * cols; ++i) s += static_cast<char>(i % 256);
  return s;
}

std::string idx_labels(std::uint32_t n, std::uint32_t magic = 0x801) {
  std::string s = be32(magic) + be32(n);
  for (std::uint32_t i = 0; i < n; ++i) s += static_cast<char>(i % 10);
  return s;
}

class FashionMnistTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
  }
  std::shared_ptr<cab::Dataset> make(cab::config::Section o = {}) {
    return registry_.create_as<cab::Dataset>(Kind::dataset, "fashion-mnist", o);
  }
  std::shared_ptr<cab::Dataset> make_at(const fs::path& root) {
    cab::config::Section o;
    o.set("root", root.string());
    return make(o);
  }
  /// The message of the cab::Error that creating a dataset at `root` throws ("" if none).
  std::string error_at(const fs::path& root) {
    try {
      make_at(root);
    } catch (const cab::Error& e) {
      return e.what();
    }
    return "";
  }
  /// A valid small IDX set (12 training and 4 test images) in dir_, written with gzip.
  void write_small_set() {
    write_gz(dir_ / "train-images-idx3-ubyte.gz", idx_images(12));
    write_gz(dir_ / "train-labels-idx1-ubyte.gz", idx_labels(12));
    write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx_images(4));
    write_gz(dir_ / "t10k-labels-idx1-ubyte.gz", idx_labels(4));
  }
  cab::plugin::Registry registry_;
};

at::Tensor all_inputs(const cab::Dataset& d, Split split, int64_t n) {
  std::vector<int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  return d.get(split, idx).inputs;
}

}  // namespace

TEST_F(FashionMnistTest, DebianFilesSizesClassesAndFirstLabel) {
  REQUIRE_DEBIAN_FILES();
  const auto start = std::chrono::steady_clock::now();
  auto data = make();
  std::cout << "fashion-mnist: loaded 70000 images in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";
  EXPECT_EQ(data->size(Split::train), 60000);
  EXPECT_EQ(data->size(Split::test), 10000);
  EXPECT_EQ(data->num_classes(), 10);

  const auto train = data->labels(Split::train);
  const auto test = data->labels(Split::test);
  ASSERT_EQ(train.size(), 60000u);
  std::map<int64_t, int> per_class;
  for (auto y : train) ++per_class[y];
  ASSERT_EQ(per_class.size(), 10u);
  for (const auto& [label, count] : per_class) EXPECT_EQ(count, 6000) << "class " << label;
  std::map<int64_t, int> per_class_test;
  for (auto y : test) ++per_class_test[y];
  for (const auto& [label, count] : per_class_test) EXPECT_EQ(count, 1000) << "class " << label;
  // The first training and test examples are ankle boots (class 9), as in Zalando's files.
  EXPECT_EQ(train[0], 9);
  EXPECT_EQ(test[0], 9);

  const cab::Batch batch = data->get(Split::train, {0, 1, 59999});
  EXPECT_EQ(batch.inputs.sizes(), (at::IntArrayRef{3, 1, 28, 28}));
  EXPECT_EQ(batch.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(batch.targets.scalar_type(), at::kLong);
  EXPECT_EQ(batch.targets[0].item<int64_t>(), 9);
  EXPECT_EQ(batch.targets[2].item<int64_t>(), train[59999]);
}

TEST_F(FashionMnistTest, NormalizedValuesAreWholePixelsWithZeroMeanUnitStd) {
  REQUIRE_DEBIAN_FILES();
  auto data = make();
  const at::Tensor x = all_inputs(*data, Split::train, 60000);
  // Black and white pixels map to −mean/std and (1 − mean)/std.
  EXPECT_NEAR(x.min().item<double>(), (0 - kMean) / kStd, 1e-5);
  EXPECT_NEAR(x.max().item<double>(), (1 - kMean) / kStd, 1e-5);
  // The defaults are the training set's statistics.
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 1e-3);
  EXPECT_NEAR(x.std().item<double>(), 1.0, 0.01);
  // Undoing the normalization gives whole byte values.
  const at::Tensor bytes = (x * kStd + kMean) * 255;
  EXPECT_LT((bytes - bytes.round()).abs().max().item<double>(), 1e-3);
}

TEST_F(FashionMnistTest, MissingRootNamesTheFileAndThePackage) {
  const std::string message = error_at(dir_ / "absent");
  EXPECT_NE(message.find((dir_ / "absent" / "train-images-idx3-ubyte.gz").string() + " does not exist"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("set dataset.root"), std::string::npos) << message;
}

TEST_F(FashionMnistTest, TheMissingFileIsNamedAndUncompressedFilesAreRead) {
  write_small_set();
  fs::remove(dir_ / "t10k-labels-idx1-ubyte.gz");
  const std::string message = error_at(dir_);
  EXPECT_NE(message.find((dir_ / "t10k-labels-idx1-ubyte.gz").string() + " does not exist"), std::string::npos)
      << message;
  // Uncompressed IDX files (as some downloads leave them) are read too.
  write_bytes(dir_ / "t10k-labels-idx1-ubyte", idx_labels(4));
  auto data = make_at(dir_);
  EXPECT_EQ(data->size(Split::train), 12);
  EXPECT_EQ(data->size(Split::test), 4);
  EXPECT_EQ(data->labels(Split::test), (std::vector<int64_t>{0, 1, 2, 3}));
  // Pixel i of the synthetic files is i mod 256: check one through the normalization.
  const float v = data->get(Split::train, {1}).inputs[0][0][0][5].item<float>();  // pixel 784 + 5
  EXPECT_NEAR(v, ((789 % 256) / 255.0 - kMean) / kStd, 1e-5);
}

TEST_F(FashionMnistTest, TruncatedGzipNamesTheFile) {
  REQUIRE_DEBIAN_FILES();
  const std::string whole = read_bytes(kDebian / "train-images-idx3-ubyte.gz");
  write_bytes(dir_ / "train-images-idx3-ubyte.gz", whole.substr(0, whole.size() / 2));
  for (const char* f : {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    fs::create_symlink(kDebian / f, dir_ / f);
  const std::string message = error_at(dir_);
  EXPECT_NE(message.find((dir_ / "train-images-idx3-ubyte.gz").string() + " is truncated or corrupt"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("of the 47040000 bytes of 60000 images"), std::string::npos) << message;
}

TEST_F(FashionMnistTest, CorruptGzipNamesTheFile) {
  REQUIRE_DEBIAN_FILES();
  // Flip bits in the middle of the compressed labels: the deflate stream or its CRC-32 no longer checks out.
  std::string bytes = read_bytes(kDebian / "t10k-labels-idx1-ubyte.gz");
  for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 8; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  write_bytes(dir_ / "t10k-labels-idx1-ubyte.gz", bytes);
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"})
    fs::create_symlink(kDebian / f, dir_ / f);
  const std::string message = error_at(dir_);
  EXPECT_NE(message.find((dir_ / "t10k-labels-idx1-ubyte.gz").string()), std::string::npos) << message;
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
}

TEST_F(FashionMnistTest, WrongMagicShapeOrCountIsExplained) {
  write_small_set();
  write_gz(dir_ / "train-images-idx3-ubyte.gz", idx_labels(12));  // a label file where the images belong
  std::string message = error_at(dir_);
  EXPECT_NE(message.find("train-images-idx3-ubyte.gz is not an IDX image file: magic number 0x00000801, expected "
                         "0x00000803"),
            std::string::npos)
      << message;

  write_gz(dir_ / "train-images-idx3-ubyte.gz", idx_images(12, 32, 32));
  message = error_at(dir_);
  EXPECT_NE(message.find("holds 32×32 images, expected 28×28"), std::string::npos) << message;

  write_gz(dir_ / "train-images-idx3-ubyte.gz", idx_images(12));
  write_gz(dir_ / "train-labels-idx1-ubyte.gz", idx_labels(11));
  message = error_at(dir_);
  EXPECT_NE(message.find("has 12 images but"), std::string::npos) << message;
  EXPECT_NE(message.find("has 11 labels"), std::string::npos) << message;

  write_gz(dir_ / "train-labels-idx1-ubyte.gz", idx_labels(12) + "extra");
  message = error_at(dir_);
  EXPECT_NE(message.find("has more data than its IDX header announces"), std::string::npos) << message;
}

TEST_F(FashionMnistTest, AugmentationIsASeededShiftAndFlipOfTheTrainingImages) {
  REQUIRE_DEBIAN_FILES();
  cab::config::Section o;
  o.set("augment", true).set("seed", std::int64_t{7});
  auto a = make(o);
  auto b = make(o);
  auto plain = make();
  const std::vector<int64_t> idx{0, 5, 123, 59999, 5};  // example 5 twice: its first and second draw
  const at::Tensor first = a->get(Split::train, idx).inputs;
  EXPECT_TRUE(at::equal(first, b->get(Split::train, idx).inputs)) << "same seed, same draws: same batch";
  EXPECT_FALSE(at::equal(first[1], first[4])) << "a second draw of an example is augmented afresh";
  const at::Tensor second = a->get(Split::train, idx).inputs;
  EXPECT_FALSE(at::equal(first, second));
  // The batch order does not matter: the draw is counted per example.
  const at::Tensor reversed = b->get(Split::train, {5, 59999, 123, 5, 0}).inputs;
  EXPECT_TRUE(at::equal(second[0], reversed[4]));
  EXPECT_TRUE(at::equal(second[2], reversed[2]));

  // Every augmented image is the original shifted by at most 2 pixels (zero fill) and maybe mirrored.
  const at::Tensor originals = plain->get(Split::train, idx).inputs;
  const double background = -kMean / kStd;
  int flipped = 0;
  for (int64_t k = 0; k < first.size(0); ++k) {
    const at::Tensor padded = at::constant_pad_nd(originals[k][0], {2, 2, 2, 2}, background);  // [32, 32]
    bool found = false;
    for (int flip = 0; flip < 2 && !found; ++flip)
      for (int64_t dy = 0; dy <= 4 && !found; ++dy)
        for (int64_t dx = 0; dx <= 4 && !found; ++dx) {
          at::Tensor crop = padded.narrow(0, dy, 28).narrow(1, dx, 28);
          if (flip) crop = crop.flip({1});
          if (at::allclose(crop, first[k][0])) {
            found = true;
            flipped += flip;
          }
        }
    EXPECT_TRUE(found) << "augmented example " << idx[k] << " is not a shift/flip of the original";
  }
  std::cout << flipped << " of " << first.size(0) << " augmented images mirrored\n";

  // The test split is never augmented, and another seed gives other crops.
  EXPECT_TRUE(at::equal(a->get(Split::test, {0, 1}).inputs, plain->get(Split::test, {0, 1}).inputs));
  o.set("seed", std::int64_t{8});
  EXPECT_FALSE(at::equal(make(o)->get(Split::train, idx).inputs, first));
}

TEST_F(FashionMnistTest, OutOfRangeIndexIsAnError) {
  write_small_set();
  auto data = make_at(dir_);
  try {
    data->get(Split::test, {0, 4});
    FAIL() << "expected an error";
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 4 is out of range for the test split, which has 4 examples"),
              std::string::npos)
        << e.what();
  }
}
