// Schema validation: unknown keys (with did-you-mean), types, ranges, choices, required keys, defaults.
#include "cab/config/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cab/util/did_you_mean.h"
#include "cab/util/error.h"

namespace cab::config {

Field::Field(std::string key, Type type, std::string help)
    : key_(std::move(key)), type_(type), help_(std::move(help)) {}

Field& Field::fallback(Value value) {
  default_ = check(value, {"<default>", 0, 0}, "<schema>");
  required_ = false;
  return *this;
}
Field& Field::required() {
  required_ = true;
  default_.reset();
  return *this;
}
Field& Field::min(double value) {
  min_ = value;
  return *this;
}
Field& Field::max(double value) {
  max_ = value;
  return *this;
}
Field& Field::one_of(std::vector<std::string> choices) {
  choices_ = std::move(choices);
  return *this;
}

namespace {

std::string format_bound(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

bool is_list(Type t) { return t == Type::integer_list || t == Type::number_list || t == Type::string_list; }

bool is_empty_list(const Value& v) {
  return std::visit(
      [](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::vector<std::int64_t>> || std::is_same_v<T, std::vector<double>> ||
                      std::is_same_v<T, std::vector<std::string>>)
          return x.empty();
        else
          return false;
      },
      v);
}

// Converts `value` to `type` where that loses nothing (integer → number, empty list → any list).
std::optional<Value> coerce(const Value& value, Type type) {
  const Type given = type_of(value);
  if (given == type) return value;
  if (type == Type::number && given == Type::integer)
    return Value(static_cast<double>(std::get<std::int64_t>(value)));
  if (type == Type::number_list && given == Type::integer_list) {
    const auto& ints = std::get<std::vector<std::int64_t>>(value);
    return Value(std::vector<double>(ints.begin(), ints.end()));
  }
  if (is_list(type) && is_empty_list(value)) {
    if (type == Type::integer_list) return Value(std::vector<std::int64_t>{});
    if (type == Type::number_list) return Value(std::vector<double>{});
    return Value(std::vector<std::string>{});
  }
  return std::nullopt;
}

}  // namespace

std::string Field::expectation() const {
  std::string out(type_name(type_));
  if (min_ && max_) out += fmt::format(" in [{}, {}]", format_bound(*min_), format_bound(*max_));
  else if (min_) out += fmt::format(" >= {}", format_bound(*min_));
  else if (max_) out += fmt::format(" <= {}", format_bound(*max_));
  if (!choices_.empty()) {
    std::string joined;
    for (const auto& c : choices_) joined += (joined.empty() ? "" : "|") + c;
    out += " (one of " + joined + ")";
  }
  return out;
}

Value Field::check(const Value& value, const Location& where, const std::string& section_path) const {
  const std::string key = section_path.empty() ? key_ : section_path + "." + key_;
  auto converted = coerce(value, type_);
  if (!converted) {
    throw ConfigError(fmt::format("{}: {}: expected {}, got {} {}", where.str(), key, expectation(),
                                  type_name(type_of(value)), to_toml(value)));
  }
  auto check_number = [&](double v) {
    if (std::isnan(v) || (min_ && v < *min_) || (max_ && v > *max_)) {
      throw ConfigError(fmt::format("{}: {}: expected {}, got {}", where.str(), key, expectation(), to_toml(value)));
    }
  };
  auto check_choice = [&](const std::string& s) {
    if (!choices_.empty() && std::find(choices_.begin(), choices_.end(), s) == choices_.end()) {
      throw ConfigError(fmt::format("{}: {}: expected {}, got \"{}\"{}", where.str(), key, expectation(), s,
                                    did_you_mean(s, choices_)));
    }
  };
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) check_number(static_cast<double>(v));
        else if constexpr (std::is_same_v<T, std::string>) check_choice(v);
        else if constexpr (std::is_same_v<T, std::vector<std::int64_t>> || std::is_same_v<T, std::vector<double>>)
          for (auto x : v) check_number(static_cast<double>(x));
        else if constexpr (std::is_same_v<T, std::vector<std::string>>)
          for (const auto& s : v) check_choice(s);
      },
      *converted);
  return *converted;
}

Field& Schema::add(std::string key, Type type, std::string help) {
  if (find(key)) throw Error(fmt::format("config schema declares '{}' twice", key));
  return fields_.emplace_back(std::move(key), type, std::move(help));
}

const Field* Schema::find(const std::string& key) const {
  for (const auto& f : fields_)
    if (f.key() == key) return &f;
  return nullptr;
}

std::vector<std::string> Schema::keys() const {
  std::vector<std::string> out;
  for (const auto& f : fields_) out.push_back(f.key());
  return out;
}

Section Schema::validate(const Section& given, const std::vector<std::string>& ignored) const {
  Section out(given.path(), given.location());
  for (const auto& [key, entry] : given.entries()) {
    if (std::find(ignored.begin(), ignored.end(), key) != ignored.end()) {
      out.set(key, entry.value, entry.location);
      continue;
    }
    const Field* field = find(key);
    if (!field) {
      auto known = keys();
      throw ConfigError(fmt::format("{}: [{}] unknown key '{}'{}; known keys: {}", entry.location.str(), given.path(),
                                    key, did_you_mean(key, known), join_names(known)));
    }
    out.set(key, field->check(entry.value, entry.location, given.path()), entry.location);
  }
  for (const auto& field : fields_) {
    if (out.has(field.key())) continue;
    if (field.is_required()) {
      throw ConfigError(fmt::format("{}: [{}] missing required key '{}' ({}: {})", given.location().str(),
                                    given.path(), field.key(), field.expectation(), field.help()));
    }
    if (field.default_value()) out.set(field.key(), *field.default_value(), {"<default>", 0, 0});
  }
  return out;
}

}  // namespace cab::config
