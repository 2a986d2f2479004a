// Fashion-MNIST (60k/10k grey 28×28 images of clothes, 10 classes) read with zlib from the IDX files of
// Debian's dataset-fashion-mnist, held in memory as bytes (47 MB) and normalized batch by batch. MNIST's
// files have the same names and format, so `root` may point at them too (with MNIST's mean and std).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

#include "example_rng.h"
#include "indices.h"

namespace {

namespace fs = std::filesystem;
using cab::Split;
using cab::datasets::ExampleRng;

constexpr std::string_view kDebianRoot = "/usr/share/datasets/fashion-mnist";
constexpr std::int64_t kSide = 28;
constexpr std::int64_t kPixels = kSide * kSide;
constexpr std::int64_t kClasses = 10;
constexpr std::uint32_t kImagesMagic = 0x00000803;  // IDX: unsigned bytes, 3 dimensions
constexpr std::uint32_t kLabelsMagic = 0x00000801;  // IDX: unsigned bytes, 1 dimension

/// One IDX file read through zlib (gzread passes files that are not gzip-compressed through unchanged, so
/// the uncompressed files some downloads leave behind work as well).
class IdxFile {
 public:
  explicit IdxFile(fs::path path) : path_(std::move(path)), file_(gzopen(path_.c_str(), "rb")) {
    if (!file_)
      throw cab::Error(fmt::format("fashion-mnist: cannot open {}: {}", path_.string(), std::strerror(errno)));
    gzbuffer(file_, 1 << 20);
  }
  ~IdxFile() { gzclose(file_); }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;

  const fs::path& path() const { return path_; }

  /// Reads exactly `n` bytes of `what` (for the message) or throws naming the file.
  void read(void* out, std::size_t n, std::string_view what) {
    auto* p = static_cast<char*>(out);
    std::size_t got = 0;
    while (got < n) {
      const int r = gzread(file_, p + got, static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30)));
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (got < n)
      throw cab::Error(fmt::format("fashion-mnist: {} is truncated or corrupt ({}): got {} of the {} bytes of {}",
                                   path_.string(), zlib_error(), got, n, what));
  }

  std::uint32_t read_u32(std::string_view what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), b.size(), what);
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
  }

  /// Reading past the end makes zlib check the gzip trailer (CRC-32 and length), which catches corruption
  /// in the last block; extra bytes mean the header's counts do not describe the file.
  void expect_end() {
    char c = 0;
    const int r = gzread(file_, &c, 1);
    int errnum = Z_OK;
    gzerror(file_, &errnum);
    if (r < 0 || errnum != Z_OK)
      throw cab::Error(fmt::format("fashion-mnist: {} is corrupt ({})", path_.string(), zlib_error()));
    if (r > 0)
      throw cab::Error(fmt::format("fashion-mnist: {} has more data than its IDX header announces", path_.string()));
  }

 private:
  std::string zlib_error() {
    int errnum = Z_OK;
    std::string message = gzerror(file_, &errnum);
    if (errnum == Z_OK) return "unexpected end of file";
    // zlib prefixes the path, which our messages already start with.
    if (const std::string prefix = path_.string() + ": "; message.starts_with(prefix)) message.erase(0, prefix.size());
    return message;
  }

  fs::path path_;
  gzFile file_;
};

/// root/name.gz, or root/name when only the uncompressed file is there.
fs::path locate(const fs::path& root, const std::string& name) {
  const fs::path gz = root / (name + ".gz");
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz;
  if (fs::exists(root / name, ec)) return root / name;
  throw cab::Error(fmt::format(
      "fashion-mnist: {} does not exist; install the Debian package dataset-fashion-mnist (apt-get install "
      "dataset-fashion-mnist) or set dataset.root to a folder with the Fashion-MNIST IDX files",
      gz.string()));
}

struct SplitData {
  at::Tensor images;  // uint8 [n, 28, 28]
  at::Tensor labels;  // int64 [n]
};

SplitData load_split(const fs::path& root, const std::string& prefix) {
  IdxFile images(locate(root, prefix + "-images-idx3-ubyte"));
  IdxFile labels(locate(root, prefix + "-labels-idx1-ubyte"));

  const std::uint32_t image_magic = images.read_u32("the IDX header");
  if (image_magic != kImagesMagic)
    throw cab::Error(fmt::format("fashion-mnist: {} is not an IDX image file: magic number 0x{:08x}, expected "
                                 "0x{:08x} (unsigned bytes, 3 dimensions)",
                                 images.path().string(), image_magic, kImagesMagic));
  const std::uint32_t n = images.read_u32("the IDX header");
  const std::uint32_t rows = images.read_u32("the IDX header");
  const std::uint32_t cols = images.read_u32("the IDX header");
  if (rows != kSide || cols != kSide)
    throw cab::Error(fmt::format("fashion-mnist: {} holds {}×{} images, expected {}×{}", images.path().string(),
                                 rows, cols, kSide, kSide));
  const std::uint32_t label_magic = labels.read_u32("the IDX header");
  if (label_magic != kLabelsMagic)
    throw cab::Error(fmt::format("fashion-mnist: {} is not an IDX label file: magic number 0x{:08x}, expected "
                                 "0x{:08x} (unsigned bytes, 1 dimension)",
                                 labels.path().string(), label_magic, kLabelsMagic));
  const std::uint32_t n_labels = labels.read_u32("the IDX header");
  if (n_labels != n)
    throw cab::Error(fmt::format("fashion-mnist: {} has {} images but {} has {} labels; expected the same count",
                                 images.path().string(), n, labels.path().string(), n_labels));
  if (n == 0) throw cab::Error(fmt::format("fashion-mnist: {} holds no images", images.path().string()));

  SplitData data;
  data.images = at::empty({static_cast<int64_t>(n), kSide, kSide}, at::kByte);
  images.read(data.images.data_ptr<std::uint8_t>(), static_cast<std::size_t>(n) * kPixels,
              fmt::format("{} images", n));
  images.expect_end();

  std::vector<std::uint8_t> raw(n);
  labels.read(raw.data(), raw.size(), fmt::format("{} labels", n));
  labels.expect_end();
  data.labels = at::empty({static_cast<int64_t>(n)}, at::kLong);
  auto* out = data.labels.data_ptr<int64_t>();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] >= kClasses)
      throw cab::Error(fmt::format("fashion-mnist: {}: label {} of example {} is outside 0..{}",
                                   labels.path().string(), raw[i], i, kClasses - 1));
    out[i] = raw[i];
  }
  return data;
}

struct FashionMnistOptions {
  /// folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
  std::string root{kDebianRoot};
  /// per-pixel mean and standard deviation of the training images, in [0, 1] units
  double mean = 0.2860, std = 0.3530;
  /// random horizontal flip and random crop after zero padding, on the training split only
  bool augment = false;
  /// padding of the random crop, in pixels on each side
  int64_t crop_padding = 2;
  /// seed of the augmentation (see example_rng.h)
  int64_t seed = 0;
};

class FashionMnist final : public cab::Dataset {
 public:
  explicit FashionMnist(FashionMnistOptions options)
      : options_(std::move(options)),
        splits_{load_split(options_.root, "train"), load_split(options_.root, "t10k")},
        draws_(static_cast<std::size_t>(splits_[0].labels.numel())) {}

  int64_t size(Split split) const override { return data(split).labels.numel(); }
  int64_t num_classes() const override { return kClasses; }

  std::vector<int64_t> labels(Split split) const override {
    const at::Tensor& y = data(split).labels;
    return {y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + y.numel()};
  }

  cab::Batch get(Split split, const std::vector<int64_t>& indices) const override {
    cab::datasets::check_indices("fashion-mnist", split, indices, size(split));
    const SplitData& d = data(split);
    const at::Tensor index = at::tensor(indices, at::kLong);
    at::Tensor pixels;  // uint8 [b, 28, 28]
    if (options_.augment && split == Split::train) {
      pixels = at::empty({static_cast<int64_t>(indices.size()), kSide, kSide}, at::kByte);
      const std::vector<std::uint64_t> draw = draws_.next(indices);
      const auto* src = d.images.data_ptr<std::uint8_t>();
      auto* dst = pixels.data_ptr<std::uint8_t>();
      for (std::size_t b = 0; b < indices.size(); ++b) {
        ExampleRng rng(static_cast<std::uint64_t>(options_.seed), indices[b], draw[b]);
        augment(src + indices[b] * kPixels, dst + static_cast<int64_t>(b) * kPixels, rng);
      }
    } else {
      pixels = d.images.index_select(0, index);
    }
    // x/255 normalized: (x/255 − mean)/std = x·(1/(255·std)) − mean/std.
    at::Tensor inputs = pixels.to(at::kFloat).mul_(1.0 / (255.0 * options_.std)).sub_(options_.mean / options_.std);
    return {inputs.unsqueeze(1), d.labels.index_select(0, index)};  // [b, 1, 28, 28], [b]
  }

 private:
  const SplitData& data(Split split) const { return splits_[split == Split::train ? 0 : 1]; }

  /// Random crop of the zero-padded image, then a random horizontal flip (the CIFAR-style recipe).
  void augment(const std::uint8_t* src, std::uint8_t* dst, ExampleRng& rng) const {
    const int64_t pad = options_.crop_padding;
    const int64_t dy = rng.integer(0, 2 * pad) - pad, dx = rng.integer(0, 2 * pad) - pad;
    const bool flip = rng.coin();
    for (int64_t y = 0; y < kSide; ++y) {
      const int64_t sy = y + dy;
      for (int64_t x = 0; x < kSide; ++x) {
        const int64_t sx = (flip ? kSide - 1 - x : x) + dx;
        dst[y * kSide + x] = (sy >= 0 && sy < kSide && sx >= 0 && sx < kSide) ? src[sy * kSide + sx] : 0;
      }
    }
  }

  FashionMnistOptions options_;
  SplitData splits_[2];
  mutable cab::datasets::DrawCounter draws_;

 public:
  std::vector<int64_t> state() const override { return draws_.snapshot(); }
  void restore(const std::vector<int64_t>& s) override {
    if (!draws_.restore(s))
      throw cab::Error(fmt::format("fashion-mnist: checkpoint state has {} draw counters, the dataset {} examples",
                                   s.size(), splits_[0].labels.numel()));
  }
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("root", Type::string,
        "folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (Debian's dataset-fashion-mnist)")
      .fallback(std::string(kDebianRoot));
  s.add("mean", Type::number, "mean pixel value of the training images in [0, 1] units (subtracted)").fallback(0.2860);
  s.add("std", Type::number, "pixel standard deviation of the training images (divided by)").fallback(0.3530).min(1e-6);
  s.add("augment", Type::boolean, "random crop after zero padding and random horizontal flip, training split only")
      .fallback(false);
  s.add("crop_padding", Type::integer, "zero padding of the random crop, pixels per side").fallback(std::int64_t{2})
      .min(0).max(kSide - 1);
  s.add("seed", Type::integer, "augmentation seed; the k-th draw of example i is a function of (seed, i, k)")
      .fallback(std::int64_t{0}).min(0);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  FashionMnistOptions options;
  options.root = o.string("root");
  options.mean = o.number("mean");
  options.std = o.number("std");
  options.augment = o.boolean("augment");
  options.crop_padding = o.integer("crop_padding");
  options.seed = o.integer("seed");
  return std::make_shared<FashionMnist>(std::move(options));
}

}  // namespace

CAB_PLUGIN("dataset-fashion-mnist", "1.0.0",
           CAB_FACTORY(dataset, "fashion-mnist",
                       "Fashion-MNIST from Debian's IDX files: 60k/10k grey 28×28 images, 10 classes", describe,
                       create))
