// Internal: conversion of toml++ nodes into cab config values with locations (shared by config and sweep files).
#pragma once

#include <string>

#include <toml++/toml.h>

#include "cab/config/value.h"

namespace cab::config::detail {

/// The location of a toml++ source region.
Location where(const toml::source_region& region, const std::string& file);

/// A boolean, integer, float, string or homogeneous array; anything else is a ConfigError naming `key`.
Value convert(const toml::node& node, const Location& loc, const std::string& key);

/// Parses TOML text, turning syntax errors into ConfigError "file:line:column: invalid TOML: ...".
toml::table parse(std::string_view text, const std::string& file_label);

}  // namespace cab::config::detail
