// JPEG decoding with TurboJPEG (libjpeg-turbo 2.x API).
#include "jpeg_decoder.h"

#include <fmt/format.h>
#include <turbojpeg.h>

#include <cab/util/error.h>

namespace cab::datasets {

JpegDecoder::JpegDecoder(bool strict) : handle_(tjInitDecompress()), strict_(strict) {
  if (!handle_) throw Error(fmt::format("image-folder: cannot start a JPEG decoder: {}", tjGetErrorStr2(nullptr)));
}

JpegDecoder::~JpegDecoder() { tjDestroy(handle_); }

JpegDecoder::Header JpegDecoder::header(const std::vector<std::uint8_t>& data, const std::string& file) {
  Header h;
  int subsampling = 0;
  if (data.empty()) throw Error(fmt::format("image-folder: {} is empty, expected a JPEG image", file));
  if (tjDecompressHeader3(handle_, data.data(), data.size(), &h.width, &h.height, &subsampling, &h.colorspace) != 0)
    throw Error(fmt::format("image-folder: {} is not a readable JPEG image ({})", file, tjGetErrorStr2(handle_)));
  if (h.width <= 0 || h.height <= 0)
    throw Error(fmt::format("image-folder: {} is a JPEG of size {}×{}", file, h.width, h.height));
  return h;
}

void JpegDecoder::decode(const std::vector<std::uint8_t>& data, const Header& header, const std::string& file,
                         double min_scale, Rgb& out) {
  // Only 1/2, 1/4 and 1/8: libjpeg-turbo's other factors (3/8, 5/8, ...) use a slow generic IDCT and
  // decode no faster than full size.
  tjscalingfactor chosen{1, 1};
  for (const int denom : {2, 4, 8})
    if (1.0 / denom >= min_scale) chosen = {1, denom};
  out.width = TJSCALED(header.width, chosen);
  out.height = TJSCALED(header.height, chosen);
  out.pixels.resize(static_cast<std::size_t>(out.width) * out.height * 3);

  const bool cmyk = header.colorspace == TJCS_CMYK || header.colorspace == TJCS_YCCK;
  std::uint8_t* target = out.pixels.data();
  if (cmyk) {  // TurboJPEG decodes these only to CMYK pixels
    cmyk_.resize(static_cast<std::size_t>(out.width) * out.height * 4);
    target = cmyk_.data();
  }
  const int flags = strict_ ? TJFLAG_STOPONWARNING : 0;
  if (tjDecompress2(handle_, data.data(), data.size(), target, out.width, 0, out.height, cmyk ? TJPF_CMYK : TJPF_RGB,
                    flags) != 0 &&
      (strict_ || tjGetErrorCode(handle_) != TJERR_WARNING))
    throw Error(fmt::format("image-folder: {} is a corrupt JPEG image ({})", file, tjGetErrorStr2(handle_)));
  if (cmyk) {
    // Adobe stores inverted CMYK (255 = no ink), so R = C'·K'/255 and likewise for G and B.
    const std::size_t n = static_cast<std::size_t>(out.width) * out.height;
    for (std::size_t i = 0; i < n; ++i) {
      const unsigned k = cmyk_[i * 4 + 3];
      for (int c = 0; c < 3; ++c)
        out.pixels[i * 3 + c] = static_cast<std::uint8_t>((cmyk_[i * 4 + c] * k + 127) / 255);
    }
  }
}

}  // namespace cab::datasets
