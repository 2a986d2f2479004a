// Antialiased bilinear resampling (PIL's BILINEAR filter), separable: a horizontal pass into float rows,
// then a vertical pass that also normalizes and writes planar channels.
#include "resample.h"

#include <algorithm>
#include <cmath>

namespace cab::datasets {

void make_taps(double start, double length, int lo, int hi, int out, Taps& taps) {
  const double scale = length / out;
  const double filter_scale = std::max(scale, 1.0);  // widen the triangle when shrinking
  const double support = filter_scale;                // the triangle's half-width is 1 source pixel at 1:1
  const double inv = 1.0 / filter_scale;
  taps.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.assign(static_cast<std::size_t>(out), 0);
  taps.count.assign(static_cast<std::size_t>(out), 0);
  taps.weights.assign(static_cast<std::size_t>(out) * taps.stride, 0.0F);
  for (int i = 0; i < out; ++i) {
    const double center = start + (i + 0.5) * scale;
    int first = std::max(static_cast<int>(std::floor(center - support + 0.5)), lo);
    const int last = std::min(static_cast<int>(std::floor(center + support + 0.5)), hi);
    const int n = std::min(last - first, taps.stride);
    float* w = &taps.weights[static_cast<std::size_t>(i) * taps.stride];
    double total = 0;
    for (int j = 0; j < n; ++j) {
      const double t = std::abs((first + j - center + 0.5) * inv);
      w[j] = static_cast<float>(t < 1.0 ? 1.0 - t : 0.0);
      total += w[j];
    }
    if (total > 0) {
      for (int j = 0; j < n; ++j) w[j] = static_cast<float>(w[j] / total);
      taps.count[static_cast<std::size_t>(i)] = n;
    } else {  // a box reaching past the image: repeat the nearest edge pixel
      first = std::clamp(static_cast<int>(std::floor(center)), lo, hi - 1);
      w[0] = 1.0F;
      taps.count[static_cast<std::size_t>(i)] = 1;
    }
    taps.first[static_cast<std::size_t>(i)] = first;
  }
}

void resample(const std::uint8_t* src, int width, int height, const Box& box, bool clamp_to_box, int out_w, int out_h,
              bool flip, const Normalize& normalize, float* dst, ResampleScratch& scratch) {
  int x_lo = 0, x_hi = width, y_lo = 0, y_hi = height;
  if (clamp_to_box) {
    x_lo = std::max(0, static_cast<int>(std::floor(box.x)));
    x_hi = std::min(width, std::max(x_lo + 1, static_cast<int>(std::ceil(box.x + box.width))));
    y_lo = std::max(0, static_cast<int>(std::floor(box.y)));
    y_hi = std::min(height, std::max(y_lo + 1, static_cast<int>(std::ceil(box.y + box.height))));
  }
  make_taps(box.x, box.width, x_lo, x_hi, out_w, scratch.x);
  make_taps(box.y, box.height, y_lo, y_hi, out_h, scratch.y);
  const Taps& tx = scratch.x;
  const Taps& ty = scratch.y;

  // Horizontal pass over the source rows the vertical taps read: rows[r][x][c], r from row0.
  int row0 = height, row1 = 0;
  for (int i = 0; i < out_h; ++i) {
    row0 = std::min(row0, ty.first[i]);
    row1 = std::max(row1, ty.first[i] + ty.count[i]);
  }
  const std::size_t row_floats = static_cast<std::size_t>(out_w) * 3;
  scratch.rows.resize(static_cast<std::size_t>(row1 - row0) * row_floats);
  for (int r = row0; r < row1; ++r) {
    const std::uint8_t* line = src + static_cast<std::size_t>(r) * width * 3;
    float* out = &scratch.rows[static_cast<std::size_t>(r - row0) * row_floats];
    for (int x = 0; x < out_w; ++x) {
      const float* w = &tx.weights[static_cast<std::size_t>(x) * tx.stride];
      const std::uint8_t* p = line + static_cast<std::size_t>(tx.first[x]) * 3;
      float s0 = 0, s1 = 0, s2 = 0;
      for (int j = 0; j < tx.count[x]; ++j, p += 3) {
        s0 += w[j] * p[0];
        s1 += w[j] * p[1];
        s2 += w[j] * p[2];
      }
      out[x * 3 + 0] = s0;
      out[x * 3 + 1] = s1;
      out[x * 3 + 2] = s2;
    }
  }

  // Vertical pass, normalized, into planar channels.
  const std::size_t plane = static_cast<std::size_t>(out_w) * out_h;
  for (int y = 0; y < out_h; ++y) {
    const float* w = &ty.weights[static_cast<std::size_t>(y) * ty.stride];
    const float* base = &scratch.rows[static_cast<std::size_t>(ty.first[y] - row0) * row_floats];
    for (int x = 0; x < out_w; ++x) {
      float s0 = 0, s1 = 0, s2 = 0;
      const float* p = base + x * 3;
      for (int j = 0; j < ty.count[y]; ++j, p += row_floats) {
        s0 += w[j] * p[0];
        s1 += w[j] * p[1];
        s2 += w[j] * p[2];
      }
      const std::size_t at = static_cast<std::size_t>(y) * out_w + (flip ? out_w - 1 - x : x);
      dst[at] = s0 * normalize.scale[0] + normalize.shift[0];
      dst[plane + at] = s1 * normalize.scale[1] + normalize.shift[1];
      dst[2 * plane + at] = s2 * normalize.scale[2] + normalize.shift[2];
    }
  }
}

}  // namespace cab::datasets
