// Antialiased bilinear resampling of a box of an RGB image into normalized, planar floats.
//
// The filter is PIL's BILINEAR, which torchvision's Resize uses (antialias=True) and LibTorch has as
// at::_upsample_bilinear2d_aa: a triangle whose support widens with the reduction factor, so shrinking
// averages every source pixel instead of sampling four (which aliases); enlarging is plain bilinear.
// Output pixel i of a box [x, x + width) is centred on x + (i + 0.5) · width / out in source pixels.
#pragma once

#include <cstdint>
#include <vector>

namespace cab::datasets {

/// A rectangle in source pixels; fractional, because the test transform's center crop is.
struct Box {
  double x = 0, y = 0, width = 0, height = 0;
};

/// Filter taps of one axis: output i reads `count[i]` source pixels from `first[i]` with weights
/// weights[i·stride ...], which sum to 1.
struct Taps {
  std::vector<int> first, count;
  std::vector<float> weights;
  int stride = 0;
};

/// Taps resampling [start, start + length) into `out` pixels, reading source pixels only from [lo, hi).
void make_taps(double start, double length, int lo, int hi, int out, Taps& taps);

/// Buffers reused between calls (one per decoding thread).
struct ResampleScratch {
  Taps x, y;
  std::vector<float> rows;
};

/// How resampled values become the network's input: dst = v · scale[c] + shift[c] for v in 0..255,
/// i.e. scale = 1 / (255 · std), shift = −mean / std.
struct Normalize {
  float scale[3];
  float shift[3];
};

/// Resamples `box` of `src` (RGB bytes, [height, width, 3], rows packed) to out_w × out_h, mirrored left to right
/// when `flip`, into dst ([3, out_h, out_w] floats). With `clamp_to_box` the filter reads only pixels inside
/// the box (crop, then resize: torchvision's RandomResizedCrop); otherwise it may read the neighbours of
/// its edge pixels (resize, then crop: Resize + CenterCrop).
void resample(const std::uint8_t* src, int width, int height, const Box& box, bool clamp_to_box, int out_w, int out_h,
              bool flip, const Normalize& normalize, float* dst, ResampleScratch& scratch);

}  // namespace cab::datasets
