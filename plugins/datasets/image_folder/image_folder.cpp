// ImageNet-layout image folders (root/{train,val}/<class>/*.JPEG): classes are the sorted folder names,
// as torchvision's ImageFolder numbers them; JPEGs are decoded batch by batch on a pool of threads, with
// the standard transforms: RandomResizedCrop + horizontal flip for training, Resize + CenterCrop for test.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <cab/util/join.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

#include "example_rng.h"
#include "indices.h"
#include "jpeg_decoder.h"
#include "resample.h"
#include "thread_pool.h"

namespace {

namespace fs = std::filesystem;
using cab::Split;
using cab::datasets::Box;
using cab::datasets::ExampleRng;

struct ImageFolderOptions {
  std::string root;
  std::string train_dir = "train", test_dir = "val";
  /// file name endings counted as images, compared case-insensitively
  std::vector<std::string> extensions;
  /// side of the square network input
  int64_t image_size = 224;
  /// test transform: resize the shorter side to image_size / crop_fraction, then center-crop image_size
  double crop_fraction = 0.875;
  /// RandomResizedCrop: range of the crop's area as a fraction of the image, and of its aspect ratio (w/h)
  std::vector<double> crop_scale{0.08, 1.0}, crop_ratio{3.0 / 4.0, 4.0 / 3.0};
  std::vector<double> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  /// the training split gets the random crop and flip (otherwise the test transform)
  bool augment = true;
  int64_t seed = 0;
  /// decoding threads
  int workers = 1;
  /// decode large photos at a reduced size with libjpeg's DCT scaling where the crop allows it
  bool dct_scaling = true;
  /// treat libjpeg's warnings (truncated file, extraneous bytes) as errors
  bool strict = false;
};

struct Example {
  std::string path;
  int64_t label;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

/// Whether the file's extension is one of `extensions` (lower case).
bool has_extension(const fs::path& file, const std::vector<std::string>& extensions) {
  return std::find(extensions.begin(), extensions.end(), lower(file.extension().string())) != extensions.end();
}

/// The non-hidden entries of a folder in name order. directory_entry keeps the file type readdir() reported,
/// so telling folders from files costs no stat() per image (1.28 M of them in ImageNet's training set).
std::vector<fs::directory_entry> sorted_entries(const fs::path& dir) {
  std::vector<fs::directory_entry> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().front() != '.') out.push_back(*it);
  if (ec) throw cab::Error(fmt::format("image-folder: cannot list {}: {}", dir.string(), ec.message()));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  return out;
}

std::string layout_hint(const ImageFolderOptions& o) {
  return fmt::format("expected the ImageNet layout root/{}/<class>/*.JPEG and root/{}/<class>/*.JPEG", o.train_dir,
                     o.test_dir);
}

/// The examples of one split folder; `classes` is filled from the training folder and checked for the test one.
std::vector<Example> scan_split(const fs::path& dir, const ImageFolderOptions& o, std::vector<std::string>& classes,
                                bool define_classes) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw cab::Error(fmt::format("image-folder: {} is not a folder; {}", dir.string(), layout_hint(o)));
  std::map<std::string, int64_t> label_of;
  for (std::size_t i = 0; i < classes.size(); ++i) label_of[classes[i]] = static_cast<int64_t>(i);
  std::vector<Example> examples;
  std::size_t loose_images = 0;
  for (const fs::directory_entry& entry : sorted_entries(dir)) {
    if (!entry.is_directory(ec)) {
      loose_images += has_extension(entry.path(), o.extensions);
      continue;
    }
    const std::string name = entry.path().filename().string();
    if (define_classes) {
      label_of[name] = static_cast<int64_t>(classes.size());
      classes.push_back(name);
    } else if (!label_of.count(name)) {
      throw cab::Error(fmt::format("image-folder: {} is a class folder with no counterpart in {}; the test split "
                                   "may only hold classes of the training split",
                                   entry.path().string(), (fs::path(o.root) / o.train_dir).string()));
    }
    const std::size_t before = examples.size();
    const int64_t label = label_of[name];
    for (const fs::directory_entry& file : sorted_entries(entry.path()))
      if (has_extension(file.path(), o.extensions) && !file.is_directory(ec))
        examples.push_back({file.path().string(), label});
    if (examples.size() == before)
      throw cab::Error(fmt::format("image-folder: class folder {} holds no images (files ending in {})",
                                   entry.path().string(), cab::join(o.extensions, ", ")));
  }
  if (examples.empty()) {
    if (loose_images > 0)
      throw cab::Error(fmt::format("image-folder: {} holds {} images but no class folders; sort them into one "
                                   "folder per class (for ImageNet's validation set, e.g. with valprep.sh)",
                                   dir.string(), loose_images));
    throw cab::Error(fmt::format("image-folder: {} has no class folders; {}", dir.string(), layout_hint(o)));
  }
  return examples;
}

void read_file(const std::string& path, std::vector<std::uint8_t>& out) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw cab::Error(fmt::format("image-folder: cannot open {}: {}", path, std::strerror(errno)));
  std::fseek(f.get(), 0, SEEK_END);
  const long size = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_SET);
  out.resize(size > 0 ? static_cast<std::size_t>(size) : 0);
  if (std::fread(out.data(), 1, out.size(), f.get()) != out.size())
    throw cab::Error(fmt::format("image-folder: cannot read {}: {}", path, std::strerror(errno)));
}

/// What one decoding thread owns.
struct Worker {
  explicit Worker(bool strict) : decoder(strict) {}
  cab::datasets::JpegDecoder decoder;
  std::vector<std::uint8_t> file;
  cab::datasets::Rgb rgb;
  cab::datasets::ResampleScratch scratch;
};

class ImageFolder final : public cab::Dataset {
 public:
  explicit ImageFolder(ImageFolderOptions options)
      : options_(std::move(options)),
        pool_(options_.workers) {
    const fs::path root(options_.root);
    std::error_code ec;
    if (!fs::is_directory(root, ec))
      throw cab::Error(fmt::format("image-folder: dataset root {} is not a folder; {}", root.string(),
                                   layout_hint(options_)));
    examples_[0] = scan_split(root / options_.train_dir, options_, classes_, true);
    examples_[1] = scan_split(root / options_.test_dir, options_, classes_, false);
    draws_ = std::make_unique<cab::datasets::DrawCounter>(examples_[0].size());
    for (int c = 0; c < 3; ++c) {
      normalize_.scale[c] = static_cast<float>(1.0 / (255.0 * options_.std[c]));
      normalize_.shift[c] = static_cast<float>(-options_.mean[c] / options_.std[c]);
    }
    for (int i = 0; i < pool_.size(); ++i) workers_.push_back(std::make_unique<Worker>(options_.strict));
  }

  int64_t size(Split split) const override { return static_cast<int64_t>(examples(split).size()); }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }

  std::vector<int64_t> labels(Split split) const override {
    std::vector<int64_t> out;
    out.reserve(examples(split).size());
    for (const Example& e : examples(split)) out.push_back(e.label);
    return out;
  }

  cab::Batch get(Split split, const std::vector<int64_t>& indices) const override {
    cab::datasets::check_indices("image-folder", split, indices, size(split));
    const bool augment = options_.augment && split == Split::train;
    const std::vector<std::uint64_t> draws = augment ? draws_->next(indices) : std::vector<std::uint64_t>();
    const int64_t side = options_.image_size;
    at::Tensor inputs = at::empty({static_cast<int64_t>(indices.size()), 3, side, side}, at::kFloat);
    at::Tensor targets = at::empty({static_cast<int64_t>(indices.size())}, at::kLong);
    float* in = inputs.data_ptr<float>();
    int64_t* tg = targets.data_ptr<int64_t>();
    const std::vector<Example>& ex = examples(split);
    pool_.parallel_for(static_cast<int64_t>(indices.size()), [&](int64_t b, int worker) {
      const Example& e = ex[static_cast<std::size_t>(indices[b])];
      std::optional<ExampleRng> rng;
      if (augment) rng.emplace(static_cast<std::uint64_t>(options_.seed), indices[b], draws[b]);
      load(e.path, rng ? &*rng : nullptr, *workers_[worker], in + b * 3 * side * side);
      tg[b] = e.label;
    });
    return {inputs, targets};  // [b, 3, side, side], [b]
  }

 private:
  const std::vector<Example>& examples(Split split) const { return examples_[split == Split::train ? 0 : 1]; }

  /// Reads, decodes and transforms one image into dst ([3, side, side]); random crop and flip when rng is set.
  void load(const std::string& path, ExampleRng* rng, Worker& w, float* dst) const {
    read_file(path, w.file);
    const auto header = w.decoder.header(w.file, path);
    const int out = static_cast<int>(options_.image_size);
    bool flip = false;
    const Box box =
        rng ? random_resized_crop(header.width, header.height, *rng) : center_crop(header.width, header.height);
    if (rng) flip = rng->coin();
    // Decode at the smallest DCT scale that still gives the crop at least `out` pixels each way.
    const double min_scale = options_.dct_scaling ? out / std::min(box.width, box.height) : 1.0;
    w.decoder.decode(w.file, header, path, min_scale, w.rgb);
    const double sx = static_cast<double>(w.rgb.width) / header.width;
    const double sy = static_cast<double>(w.rgb.height) / header.height;
    const Box scaled{box.x * sx, box.y * sy, box.width * sx, box.height * sy};
    cab::datasets::resample(w.rgb.pixels.data(), w.rgb.width, w.rgb.height, scaled, rng != nullptr, out, out, flip,
                            normalize_, dst, w.scratch);
  }

  /// torchvision's RandomResizedCrop.get_params: 10 tries at a random area and log-uniform aspect ratio,
  /// then a center crop with the ratio clamped to the allowed range.
  Box random_resized_crop(int width, int height, ExampleRng& rng) const {
    const double area = static_cast<double>(width) * height;
    const double log_lo = std::log(options_.crop_ratio[0]), log_hi = std::log(options_.crop_ratio[1]);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target = area * rng.uniform(options_.crop_scale[0], options_.crop_scale[1]);
      const double ratio = std::exp(rng.uniform(log_lo, log_hi));
      const auto w = static_cast<int64_t>(std::lround(std::sqrt(target * ratio)));
      const auto h = static_cast<int64_t>(std::lround(std::sqrt(target / ratio)));
      if (w > 0 && w <= width && h > 0 && h <= height) {
        const int64_t top = rng.integer(0, height - h), left = rng.integer(0, width - w);
        return {static_cast<double>(left), static_cast<double>(top), static_cast<double>(w), static_cast<double>(h)};
      }
    }
    const double in_ratio = static_cast<double>(width) / height;
    double w = width, h = height;
    if (in_ratio < options_.crop_ratio[0]) h = std::round(w / options_.crop_ratio[0]);
    else if (in_ratio > options_.crop_ratio[1]) w = std::round(h * options_.crop_ratio[1]);
    return {std::floor((width - w) / 2), std::floor((height - h) / 2), w, h};
  }

  /// Resize the shorter side to image_size / crop_fraction, center-crop image_size: as one box of the
  /// original image (resampling it once is the same filter as resizing, then cropping).
  Box center_crop(int width, int height) const {
    const double scale = std::min(width, height) / (options_.image_size / options_.crop_fraction);
    const double side = options_.image_size * scale;
    return {(width - side) / 2, (height - side) / 2, side, side};
  }

  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  std::vector<Example> examples_[2];
  std::unique_ptr<cab::datasets::DrawCounter> draws_;

 public:
  std::vector<int64_t> state() const override { return draws_ ? draws_->snapshot() : std::vector<int64_t>{}; }
  void restore(const std::vector<int64_t>& s) override {
    if (draws_ && !draws_->restore(s))
      throw cab::Error(fmt::format("image-folder: checkpoint state has {} draw counters, the dataset {} examples",
                                   s.size(), examples_[0].size()));
  }
  cab::datasets::Normalize normalize_{};
  mutable cab::datasets::ThreadPool pool_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

int default_workers() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hardware, 1u, 8u));
}

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("root", Type::string, "folder holding the split folders, each with one folder of JPEGs per class").required();
  s.add("train_dir", Type::string, "training split folder under root").fallback(std::string("train"));
  s.add("test_dir", Type::string, "test split folder under root").fallback(std::string("val"));
  s.add("extensions", Type::string_list, "file extensions of images (case-insensitive)")
      .fallback(std::vector<std::string>{".jpeg", ".jpg"});
  s.add("image_size", Type::integer, "side of the square network input, pixels").fallback(std::int64_t{224}).min(8);
  s.add("crop_fraction", Type::number, "test transform: resize the shorter side to image_size / crop_fraction, "
                                       "then center-crop").fallback(0.875).min(0.05).max(1.0);
  s.add("crop_scale", Type::number_list, "training crop area as a fraction of the image: [min, max]")
      .fallback(std::vector<double>{0.08, 1.0}).min(1e-4).max(1.0);
  s.add("crop_ratio", Type::number_list, "training crop aspect ratio w/h: [min, max]")
      .fallback(std::vector<double>{3.0 / 4.0, 4.0 / 3.0}).min(1e-2).max(100.0);
  s.add("mean", Type::number_list, "per-channel (RGB) mean in [0, 1] units (ImageNet's by default)")
      .fallback(std::vector<double>{0.485, 0.456, 0.406});
  s.add("std", Type::number_list, "per-channel (RGB) standard deviation (ImageNet's by default)")
      .fallback(std::vector<double>{0.229, 0.224, 0.225})
      .min(1e-6);
  s.add("augment", Type::boolean, "training split: RandomResizedCrop + horizontal flip (else the test transform)")
      .fallback(true);
  s.add("seed", Type::integer, "augmentation seed; the k-th draw of example i is a function of (seed, i, k)")
      .fallback(std::int64_t{0}).min(0);
  s.add("workers", Type::integer, "JPEG decoding threads; 0 = min(8, hardware threads)").fallback(std::int64_t{0})
      .min(0).max(256);
  s.add("dct_scaling", Type::boolean, "decode large images at 1/2, 1/4 or 1/8 size where the crop keeps enough pixels")
      .fallback(true);
  s.add("strict", Type::boolean, "treat libjpeg warnings (truncated file, extraneous bytes) as errors").fallback(false);
}

std::vector<double> pair_option(const cab::config::Section& o, const std::string& key, std::size_t n) {
  std::vector<double> v = o.numbers(key);
  if (v.size() != n || (n == 2 && v[0] > v[1]))
    throw cab::ConfigError(fmt::format("{}: image-folder: {} must be a list of {} numbers{}, got {}",
                                       o.location(key).str(), key, n, n == 2 ? " [min, max] with min ≤ max" : "",
                                       cab::config::to_toml(o.value(key))));
  return v;
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  ImageFolderOptions options;
  options.root = o.string("root");
  options.train_dir = o.string("train_dir");
  options.test_dir = o.string("test_dir");
  for (const std::string& e : o.strings("extensions"))
    options.extensions.push_back(lower(e.starts_with('.') ? e : "." + e));
  options.image_size = o.integer("image_size");
  options.crop_fraction = o.number("crop_fraction");
  options.crop_scale = pair_option(o, "crop_scale", 2);
  options.crop_ratio = pair_option(o, "crop_ratio", 2);
  options.mean = pair_option(o, "mean", 3);
  options.std = pair_option(o, "std", 3);
  options.augment = o.boolean("augment");
  options.seed = o.integer("seed");
  options.workers = o.integer("workers") > 0 ? static_cast<int>(o.integer("workers")) : default_workers();
  options.dct_scaling = o.boolean("dct_scaling");
  options.strict = o.boolean("strict");
  return std::make_shared<ImageFolder>(std::move(options));
}

}  // namespace

CAB_PLUGIN("dataset-image-folder", "1.0.0",
           CAB_FACTORY(dataset, "image-folder",
                       "ImageNet-layout folders of JPEGs (root/{train,val}/<class>/*.JPEG), decoded on threads",
                       describe, create))
