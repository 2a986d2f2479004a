// Section: typed access to validated config values with their source locations.
#include "cab/config/section.h"

#include <fmt/format.h>

#include "cab/util/error.h"

namespace cab::config {

Section::Section(std::string path, Location location) : path_(std::move(path)), location_(std::move(location)) {}

bool Section::has(const std::string& key) const { return entries_.count(key) != 0; }

Section& Section::set(const std::string& key, Value value, Location where) {
  entries_[key] = Entry{std::move(value), std::move(where)};
  return *this;
}

Section& Section::erase(const std::string& key) {
  entries_.erase(key);
  return *this;
}

const Section::Entry& Section::entry(const std::string& key, Type expected) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    throw ConfigError(fmt::format("{}: [{}] has no key '{}' (a {} was expected; is it declared in the schema?)",
                                  location_.str(), path_, key, type_name(expected)));
  }
  if (type_of(it->second.value) != expected) {
    throw ConfigError(fmt::format("{}: [{}] {} holds a {}, read as a {}", it->second.location.str(), path_, key,
                                  type_name(type_of(it->second.value)), type_name(expected)));
  }
  return it->second;
}

bool Section::boolean(const std::string& key) const { return std::get<bool>(entry(key, Type::boolean).value); }
std::int64_t Section::integer(const std::string& key) const {
  return std::get<std::int64_t>(entry(key, Type::integer).value);
}
double Section::number(const std::string& key) const {
  // A number field validated by a Schema always holds a double; an unvalidated integer reads as one too.
  auto it = entries_.find(key);
  if (it != entries_.end() && type_of(it->second.value) == Type::integer)
    return static_cast<double>(std::get<std::int64_t>(it->second.value));
  return std::get<double>(entry(key, Type::number).value);
}
const std::string& Section::string(const std::string& key) const {
  return std::get<std::string>(entry(key, Type::string).value);
}
const std::vector<std::int64_t>& Section::integers(const std::string& key) const {
  return std::get<std::vector<std::int64_t>>(entry(key, Type::integer_list).value);
}
const std::vector<double>& Section::numbers(const std::string& key) const {
  return std::get<std::vector<double>>(entry(key, Type::number_list).value);
}
const std::vector<std::string>& Section::strings(const std::string& key) const {
  return std::get<std::vector<std::string>>(entry(key, Type::string_list).value);
}

const Value& Section::value(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end())
    throw ConfigError(fmt::format("{}: [{}] has no key '{}'", location_.str(), path_, key));
  return it->second.value;
}

Location Section::location(const std::string& key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? location_ : it->second.location;
}

}  // namespace cab::config
