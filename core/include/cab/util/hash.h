// SHA-256 (OpenSSL libcrypto) for config hashes, file provenance and data-subset hashes.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "cab/export.h"

namespace cab {

/// Lower-case hex SHA-256 of the bytes.
CAB_API std::string sha256_hex(std::string_view bytes);
/// Lower-case hex SHA-256 of a file's contents; throws cab::Error naming the file if it cannot be read.
CAB_API std::string sha256_file(const std::filesystem::path& file);

}  // namespace cab
