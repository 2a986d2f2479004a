// Seeded randomness for data augmentation, as a pure function of (seed, example index, draw number).
//
// The k-th time training example i is drawn it gets the same crop and flip in every run with the same seed,
// whatever the batch size, the order of examples within a batch or the number of decoding threads: the
// random numbers are a counter-based hash of the three, not the state of a shared generator. The draw
// number is counted per example by the dataset (DrawCounter), so it plays the part of the epoch.
#pragma once

#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

namespace cab::datasets {

/// SplitMix64's finalizer: a bijective 64-bit mix with full avalanche.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The random numbers of one draw of one example. Written out by hand (not <random>'s distributions,
/// whose results differ between standard libraries) so augmentations are the same on every platform.
class ExampleRng {
 public:
  ExampleRng(std::uint64_t seed, std::int64_t index, std::uint64_t draw)
      : state_(mix64(mix64(mix64(seed) ^ static_cast<std::uint64_t>(index)) ^ draw)) {}

  std::uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [lo, hi] (inclusive); the modulo bias is below 2^-40 for the ranges used here.
  std::int64_t integer(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  bool coin() { return (next() >> 63) != 0; }

 private:
  std::uint64_t state_;
};

/// How many times each training example has been drawn so far: the per-example "epoch" of ExampleRng.
/// Saved with checkpoints through Dataset::state() so a resumed run draws exactly what it would have drawn.
class DrawCounter {
 public:
  explicit DrawCounter(std::size_t examples) : counts_(examples, 0) {}
  /// The draw number of each index (indices checked by the caller), counting this draw.
  std::vector<std::uint64_t> next(const std::vector<std::int64_t>& indices) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::uint64_t> draws(indices.size());
    for (std::size_t b = 0; b < indices.size(); ++b) draws[b] = counts_[static_cast<std::size_t>(indices[b])]++;
    return draws;
  }

  std::vector<std::int64_t> snapshot() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {counts_.begin(), counts_.end()};
  }
  /// Restores a snapshot of the same dataset (false when the sizes differ).
  bool restore(const std::vector<std::int64_t>& counts) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (counts.size() != counts_.size()) return false;
    for (std::size_t i = 0; i < counts.size(); ++i) counts_[i] = static_cast<std::uint32_t>(counts[i]);
    return true;
  }

 private:
  std::mutex mutex_;
  std::vector<std::uint32_t> counts_;
};

}  // namespace cab::datasets
