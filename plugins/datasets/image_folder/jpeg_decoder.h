// JPEG files to RGB bytes with libjpeg-turbo's TurboJPEG API, at full size or reduced by DCT scaling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cab::datasets {

/// An image as packed RGB bytes, [height, width, 3].
struct Rgb {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;
};

/// One decoder per thread (a TurboJPEG handle is not thread-safe); buffers are reused between images.
class JpegDecoder {
 public:
  struct Header {
    int width = 0, height = 0;
    int colorspace = 0;  // TJCS_*
  };

  /// With `strict`, libjpeg's warnings (a truncated file, extraneous bytes before a marker) are errors;
  /// otherwise the image decodes as far as it can, as with PIL.
  explicit JpegDecoder(bool strict);
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  /// The image's size; throws cab::Error naming `file` when the data is not a JPEG.
  Header header(const std::vector<std::uint8_t>& data, const std::string& file);

  /// Decodes into `out`, shrunk by the smallest DCT scaling factor (1/8, 1/4, 1/2 or 1) that is at least
  /// `min_scale`; min_scale ≥ 1 decodes at full size.
  /// CMYK/YCCK images (Adobe's inverted CMYK, as Photoshop writes them) are converted to RGB.
  void decode(const std::vector<std::uint8_t>& data, const Header& header, const std::string& file, double min_scale,
              Rgb& out);

 private:
  void* handle_;
  bool strict_;
  std::vector<std::uint8_t> cmyk_;
};

}  // namespace cab::datasets
