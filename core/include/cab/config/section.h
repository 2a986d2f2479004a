// A validated config table: typed values by key, each remembering the file location it came from.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cab/config/value.h"
#include "cab/export.h"

namespace cab::config {

class CAB_API Section {
 public:
  struct Entry {
    Value value;
    Location location;
  };

  Section() = default;
  /// `path` is the table name used in messages ("bridge", "train"); `location` is where the table starts.
  Section(std::string path, Location location);

  const std::string& path() const { return path_; }
  const Location& location() const { return location_; }

  bool has(const std::string& key) const;
  /// Sets (or replaces) a value, e.g. runtime facts a host injects before creating a plugin.
  Section& set(const std::string& key, Value value, Location where = {"<set by cab>", 0, 0});
  Section& erase(const std::string& key);

  bool boolean(const std::string& key) const;
  std::int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;
  const std::string& string(const std::string& key) const;
  const std::vector<std::int64_t>& integers(const std::string& key) const;
  const std::vector<double>& numbers(const std::string& key) const;
  const std::vector<std::string>& strings(const std::string& key) const;

  const Value& value(const std::string& key) const;
  /// Where the key's value was written; the table's location when the key is absent.
  Location location(const std::string& key) const;
  const std::map<std::string, Entry>& entries() const { return entries_; }

 private:
  const Entry& entry(const std::string& key, Type expected) const;

  std::string path_;
  Location location_;
  std::map<std::string, Entry> entries_;
};

}  // namespace cab::config
