// Declared config fields (type, default, range, choices, help) and validation of a Section against them.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "cab/config/section.h"
#include "cab/config/value.h"
#include "cab/export.h"

namespace cab::config {

/// One declared key. Built with chained setters: `schema.add("hidden", Type::integer, "...").fallback(128).min(1)`.
class CAB_API Field {
 public:
  Field(std::string key, Type type, std::string help);

  /// Value used when the key is absent (makes the field optional).
  Field& fallback(Value value);
  /// The key must be given (no default).
  Field& required();
  /// Smallest allowed value (numbers, or each element of a numeric list).
  Field& min(double value);
  /// Largest allowed value (numbers, or each element of a numeric list).
  Field& max(double value);
  /// Allowed strings (strings, or each element of a string list).
  Field& one_of(std::vector<std::string> choices);

  const std::string& key() const { return key_; }
  Type type() const { return type_; }
  const std::string& help() const { return help_; }
  const std::optional<Value>& default_value() const { return default_; }
  bool is_required() const { return required_; }
  /// "integer ≥ 1", "one of silu|gelu|relu", ... — what the field expects, for messages and --help.
  std::string expectation() const;

  /// Converts (int→number) and checks `value`; throws ConfigError naming `where` and `section_path.key`.
  Value check(const Value& value, const Location& where, const std::string& section_path) const;

 private:
  std::string key_;
  Type type_;
  std::string help_;
  std::optional<Value> default_;
  bool required_ = false;
  std::optional<double> min_;
  std::optional<double> max_;
  std::vector<std::string> choices_;
};

/// The set of fields of one config section (a core section such as [train], or a plugin's options).
class CAB_API Schema {
 public:
  Schema() = default;

  /// Declares a field; the reference stays valid for chaining while the Schema lives.
  Field& add(std::string key, Type type, std::string help);

  const Field* find(const std::string& key) const;
  std::vector<std::string> keys() const;
  const std::deque<Field>& fields() const { return fields_; }

  /// Checks every given entry (unknown keys with did-you-mean, types, ranges, choices), reports missing
  /// required keys, and fills defaults. `ignored` keys are passed through unchecked (e.g. a plugin `name`).
  Section validate(const Section& given, const std::vector<std::string>& ignored = {}) const;

 private:
  std::deque<Field> fields_;
};

}  // namespace cab::config
