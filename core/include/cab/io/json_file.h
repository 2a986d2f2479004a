// Reading JSON files such as Hugging Face config.json, with errors that name the file.
#pragma once

#include <filesystem>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cab/export.h"

namespace cab::io {

/// Parses `file`; a missing or unreadable file or invalid JSON is a cab::Error naming it. `hint` says what
/// the file was expected to be, for the message (e.g. "a checkpoint is a folder with config.json ...").
CAB_API nlohmann::json read_json_file(const std::filesystem::path& file, std::string_view hint = {});

}  // namespace cab::io
