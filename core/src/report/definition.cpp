// Report definitions: TOML → Definition, with file:line:column errors and did-you-mean for unknown keys.
#include "cab/report/definition.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <toml++/toml.h>


#include "cab/report/error.h"
#include "report_util.h"
#include "cab/util/join.h"

namespace cab::report {

std::string_view to_string(Kind kind) {
  switch (kind) {
    case Kind::table: return "table";
    case Kind::runs: return "runs";
    case Kind::line: return "line";
    case Kind::steps: return "steps";
    case Kind::bars: return "bars";
  }
  return "?";
}

std::string MetricRef::str() const {
  if (!series) return key;
  const char* reduce_name[] = {"last", "min", "max", "mean"};
  return fmt::format("series:{}:{}", key, reduce_name[static_cast<int>(reduce)]);
}

MetricRef parse_metric(const std::string& text) {
  MetricRef m;
  if (text.rfind("series:", 0) != 0) {
    if (text.empty()) throw std::invalid_argument("an empty metric name");
    m.key = text;
    return m;
  }
  m.series = true;
  std::string rest = text.substr(7);
  const auto colon = rest.rfind(':');
  if (colon != std::string::npos) {
    const std::string reduce = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (reduce == "last") m.reduce = Reduce::last;
    else if (reduce == "min") m.reduce = Reduce::min;
    else if (reduce == "max") m.reduce = Reduce::max;
    else if (reduce == "mean") m.reduce = Reduce::mean;
    else throw std::invalid_argument(fmt::format("unknown reduction '{}' (last, min, max or mean)", reduce));
  }
  if (rest.empty()) throw std::invalid_argument("'series:' needs a metric key, e.g. series:eval/top1:max");
  m.key = rest;
  return m;
}

std::string ValueSpec::metric_names() const {
  std::vector<std::string> names;
  for (const auto& m : metric) names.push_back(m.series ? m.key : m.key);
  return join(names, " or ");
}

bool value_matches(const ParamValue& wanted, const ParamValue* value) {
  if (!value) return false;
  if (wanted.number) {
    if (!value->number) return false;
    const double a = *wanted.number, b = *value->number;
    return std::fabs(a - b) <= 1e-12 * std::max({1.0, std::fabs(a), std::fabs(b)});
  }
  if (wanted.is_string && wanted.text.find_first_of("*?[") != std::string::npos)
    return fnmatch(wanted.text.c_str(), value->text.c_str(), 0) == 0;
  return wanted.text == value->text;
}

bool Where::matches(const RunData& data, const Run& run) const {
  for (const auto& f : filters) {
    const ParamValue* v = data.param(run, f.key);
    bool any = false;
    for (const auto& want : f.any_of)
      if (value_matches(want, v)) {
        any = true;
        break;
      }
    if (!any) return false;
  }
  return true;
}

std::string Where::str() const {
  std::vector<std::string> parts;
  for (const auto& f : filters) {
    std::vector<std::string> values;
    for (const auto& v : f.any_of) values.push_back(v.text);
    parts.push_back(fmt::format("{} = {}", f.key, values.size() == 1 ? values[0] : "[" + join(values) + "]"));
  }
  return join(parts, ", ");
}

namespace {

/// The {key} and {key|format} fields of a label template.
struct TemplatePart {
  std::string literal;  ///< text before the field
  std::string key, format;
};

std::vector<TemplatePart> parse_template(const std::string& text) {
  std::vector<TemplatePart> parts;
  TemplatePart current;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '{') {
      if (text[i] == '}') throw std::invalid_argument(fmt::format("'}}' without '{{' in \"{}\"", text));
      current.literal += text[i];
      continue;
    }
    const auto close = text.find('}', i);
    if (close == std::string::npos) throw std::invalid_argument(fmt::format("'{{' without '}}' in \"{}\"", text));
    std::string field = text.substr(i + 1, close - i - 1);
    const auto bar = field.find('|');
    current.key = field.substr(0, bar);
    if (bar != std::string::npos) current.format = field.substr(bar + 1);
    if (current.key.empty()) throw std::invalid_argument(fmt::format("an empty {{}} field in \"{}\"", text));
    if (!is_value_format(current.format))
      throw std::invalid_argument(fmt::format("unknown value format '{}' (percent, si, basename, fixed1, fixed2, fixed3)",
                                              current.format));
    parts.push_back(std::move(current));
    current = {};
    i = close;
  }
  if (!current.literal.empty()) parts.push_back(std::move(current));
  return parts;
}

// ---- TOML reading with locations ----

class Reader {
 public:
  Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const toml::node& node, const std::string& message) const {
    const auto& b = node.source().begin;
    throw ReportError(fmt::format("{}:{}:{}: {}", file_, b.line, b.column, message));
  }
  [[noreturn]] void fail_top(const std::string& message) const { throw ReportError(fmt::format("{}: {}", file_, message)); }

  void check_keys(const toml::table& table, const std::string& where, const std::vector<std::string>& allowed) const {
    for (const auto& [k, node] : table) {
      const std::string key(k.str());
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        const auto& b = k.source().begin;  // the key's own position, not its value's
        throw ReportError(fmt::format("{}:{}:{}: unknown key '{}' in {}{}", file_, b.line, b.column, key, where,
                                      detail::did_you_mean(key, allowed)));
      }
    }
  }

  std::string string(const toml::node& node, const std::string& key) const {
    if (auto s = node.as_string()) return s->get();
    fail(node, fmt::format("{} must be a string", key));
  }
  bool boolean(const toml::node& node, const std::string& key) const {
    if (auto b = node.as_boolean()) return b->get();
    fail(node, fmt::format("{} must be true or false", key));
  }
  std::int64_t integer(const toml::node& node, const std::string& key) const {
    if (auto i = node.as_integer()) return i->get();
    fail(node, fmt::format("{} must be an integer", key));
  }
  double number(const toml::node& node, const std::string& key) const {
    if (auto i = node.as_integer()) return static_cast<double>(i->get());
    if (auto f = node.as_floating_point()) return f->get();
    fail(node, fmt::format("{} must be a number", key));
  }
  std::vector<std::string> strings(const toml::node& node, const std::string& key) const {
    std::vector<std::string> out;
    if (auto s = node.as_string()) return {s->get()};
    if (auto a = node.as_array()) {
      for (const auto& e : *a) out.push_back(string(e, key));
      return out;
    }
    fail(node, fmt::format("{} must be a string or a list of strings", key));
  }
  ParamValue value(const toml::node& node, const std::string& key) const {
    ParamValue v;
    if (auto s = node.as_string()) {
      v.text = s->get();
      v.is_string = true;
    } else if (auto i = node.as_integer()) {
      v.number = static_cast<double>(i->get());
      v.text = std::to_string(i->get());
    } else if (auto f = node.as_floating_point()) {
      v.number = f->get();
      v.text = short_number(f->get(), 15);
    } else if (auto b = node.as_boolean()) {
      v.text = b->get() ? "true" : "false";
    } else {
      fail(node, fmt::format("{}: a value must be a string, number or boolean", key));
    }
    return v;
  }
  std::vector<ParamValue> values(const toml::node& node, const std::string& key) const {
    if (auto a = node.as_array()) {
      std::vector<ParamValue> out;
      for (const auto& e : *a) out.push_back(value(e, key));
      if (out.empty()) fail(node, fmt::format("{}: an empty list matches nothing", key));
      return out;
    }
    return {value(node, key)};
  }
  const toml::table& table(const toml::node& node, const std::string& key) const {
    if (auto t = node.as_table()) return *t;
    fail(node, fmt::format("{} must be a table", key));
  }
  std::vector<const toml::table*> tables(const toml::node& node, const std::string& key) const {
    std::vector<const toml::table*> out;
    if (auto t = node.as_table()) return {t};
    if (auto a = node.as_array()) {
      for (const auto& e : *a) out.push_back(&table(e, key));
      return out;
    }
    fail(node, fmt::format("{} must be a table or a list of tables", key));
  }

  Where where(const toml::node& node, const std::string& key) const {
    Where w;
    for (const auto& [k, v] : table(node, key)) w.filters.push_back({std::string(k.str()), values(v, key + "." + std::string(k.str()))});
    return w;
  }

  std::string templ(const toml::node& node, const std::string& key) const {
    std::string t = string(node, key);
    try {
      parse_template(t);
    } catch (const std::invalid_argument& e) {
      fail(node, fmt::format("{}: {}", key, e.what()));
    }
    return t;
  }

  void value_fields(const toml::table& t, ValueSpec& v, const std::string& where) const {
    if (auto n = t.get("metric")) {
      v.metric.clear();
      for (const auto& name : strings(*n, "metric")) {
        try {
          v.metric.push_back(parse_metric(name));
        } catch (const std::invalid_argument& e) {
          fail(*n, fmt::format("metric: {}", e.what()));
        }
      }
      if (v.metric.empty()) fail(*n, "metric: an empty list");
    }
    if (auto n = t.get("label")) v.label = string(*n, "label");
    if (auto n = t.get("aggregate")) {
      const std::string a = string(*n, "aggregate");
      const std::vector<std::string> names{"mean_std", "mean", "sum", "min", "max", "count"};
      auto it = std::find(names.begin(), names.end(), a);
      if (it == names.end())
        fail(*n, fmt::format("unknown aggregate '{}' in {} (one of {}){}", a, where, join(names), detail::did_you_mean(a, names)));
      v.aggregate = static_cast<Aggregate>(it - names.begin());
    }
    if (auto n = t.get("digits")) {
      v.digits = static_cast<int>(integer(*n, "digits"));
      if (v.digits < 0 || v.digits > 9) fail(*n, "digits must be 0 to 9");
    }
    if (auto n = t.get("scale")) v.scale = number(*n, "scale");
    if (auto n = t.get("better")) {
      const std::string b = string(*n, "better");
      if (b == "higher") v.better = Better::higher;
      else if (b == "lower") v.better = Better::lower;
      else if (b == "none") v.better = Better::none;
      else fail(*n, fmt::format("better must be higher, lower or none, not '{}'", b));
    }
  }

  KeyDim key_dim(const toml::table& t, const std::string& where) const {
    check_keys(t, where, {"header", "key", "label", "format", "order", "labels"});
    KeyDim d;
    if (auto n = t.get("header")) d.header = string(*n, "header");
    if (auto n = t.get("key")) d.key = string(*n, "key");
    if (auto n = t.get("label")) d.label = templ(*n, "label");
    if (auto n = t.get("format")) {
      d.format = string(*n, "format");
      if (!is_value_format(d.format))
        fail(*n, fmt::format("unknown format '{}' (percent, si, basename, fixed1, fixed2, fixed3)", d.format));
    }
    if (auto n = t.get("order")) {
      if (!n->as_array()) fail(*n, "order must be a list of values");
      d.order = values(*n, "order");
    }
    if (auto n = t.get("labels")) {
      for (const auto& [k, v] : table(*n, "labels")) d.labels[std::string(k.str())] = string(v, "labels." + std::string(k.str()));
    }
    if (d.key.empty() && d.label.empty()) fail_top(fmt::format("{} needs a key or a label template", where));
    if (d.header.empty()) d.header = d.key.empty() ? "" : d.key;
    return d;
  }

  Entry entry(const toml::table& t, const std::string& where, bool with_value, const ValueSpec& base) const {
    std::vector<std::string> allowed{"label", "where"};
    if (with_value)
      for (const char* k : {"metric", "aggregate", "digits", "scale", "better"}) allowed.push_back(k);
    check_keys(t, where, allowed);
    Entry e;
    if (auto n = t.get("label")) e.label = string(*n, "label");
    else fail_top(fmt::format("every {} needs a label", where));
    if (auto n = t.get("where")) e.where = this->where(*n, "where");
    if (with_value && (t.contains("metric") || t.contains("aggregate") || t.contains("digits") || t.contains("scale") ||
                       t.contains("better"))) {
      ValueSpec v = base;
      v.label = e.label;
      value_fields(t, v, where);
      e.value = v;
    }
    return e;
  }

  void axis(const toml::table& doc, Axis& axis, const std::string& keys_name, const std::string& entries_name,
            bool with_value, const ValueSpec& base) const {
    if (auto n = doc.get(keys_name))
      for (const auto* t : tables(*n, "[[" + keys_name + "]]")) axis.keys.push_back(key_dim(*t, "[[" + keys_name + "]]"));
    if (auto n = doc.get(entries_name))
      for (const auto* t : tables(*n, "[[" + entries_name + "]]"))
        axis.entries.push_back(entry(*t, "[[" + entries_name + "]]", with_value, base));
    if (!axis.keys.empty() && !axis.entries.empty())
      fail_top(fmt::format("use either [[{}]] or [[{}]], not both", keys_name, entries_name));
  }

 private:
  std::string file_;
};

}  // namespace

Definition parse_definition(const std::string& text, const std::string& id, const std::string& file) {
  toml::table doc;
  try {
    doc = toml::parse(text, std::string_view(file));
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ReportError(fmt::format("{}:{}:{}: invalid TOML: {}", file, b.line, b.column, e.description()));
  }
  Reader r(file);
  Definition d;
  d.id = id;
  d.file = file;
  const std::vector<std::string> top{"table", "runs", "figure", "value", "row_key", "row", "column_key", "column",
                                     "series_key", "series", "facet_key", "facet", "x", "bar"};
  r.check_keys(doc, "the definition (top level)", top);
  const int heads = doc.contains("table") + doc.contains("runs") + doc.contains("figure");
  if (heads != 1) r.fail_top("a definition has exactly one of [table], [runs] or [figure]");

  std::vector<std::string> common{"title", "caption", "sweeps", "where", "exclude", "order"};
  const char* head_name = doc.contains("table") ? "table" : doc.contains("runs") ? "runs" : "figure";
  const toml::table& head = r.table(*doc.get(head_name), head_name);
  std::vector<std::string> allowed = common;
  if (doc.contains("table")) {
    d.kind = Kind::table;
    for (const char* k : {"best", "vary", "row_header"}) allowed.push_back(k);
  } else if (doc.contains("runs")) {
    d.kind = Kind::runs;
    for (const char* k : {"status", "fields", "headers", "max_text"}) allowed.push_back(k);
  } else {
    for (const char* k : {"kind", "x_axis", "x_label", "y_label", "log_y"}) allowed.push_back(k);
    const toml::node* kind = head.get("kind");
    if (!kind) r.fail_top("[figure] needs kind = \"line\", \"steps\" or \"bars\"");
    const std::string k = r.string(*kind, "kind");
    if (k == "line") d.kind = Kind::line;
    else if (k == "steps") d.kind = Kind::steps;
    else if (k == "bars") d.kind = Kind::bars;
    else r.fail(*kind, fmt::format("unknown figure kind '{}' (line, steps or bars){}", k,
                                   detail::did_you_mean(k, {"line", "steps", "bars"})));
  }
  r.check_keys(head, fmt::format("[{}]", head_name), allowed);
  if (auto n = head.get("title")) d.title = r.string(*n, "title");
  if (auto n = head.get("caption")) d.caption = r.string(*n, "caption");
  if (auto n = head.get("sweeps")) {
    d.sweeps = r.strings(*n, "sweeps");
    if (d.sweeps.empty()) r.fail(*n, "sweeps: an empty list");
  }
  if (auto n = head.get("where")) d.where = r.where(*n, "where");
  if (auto n = head.get("exclude"))
    for (const auto* t : r.tables(*n, "exclude")) d.exclude.push_back(r.where(*t, "exclude"));
  if (auto n = head.get("order")) d.order = static_cast<int>(r.integer(*n, "order"));
  if (d.title.empty()) d.title = id;

  if (auto n = doc.get("value")) {
    const auto& t = r.table(*n, "[value]");
    r.check_keys(t, "[value]", {"metric", "label", "aggregate", "digits", "scale", "better"});
    r.value_fields(t, d.value, "[value]");
  }
  auto forbid = [&](std::initializer_list<const char*> keys, const char* why) {
    for (const char* k : keys)
      if (auto n = doc.get(k)) r.fail(*n, fmt::format("[{}] is not used by {}", k, why));
  };

  switch (d.kind) {
    case Kind::table: {
      if (d.value.metric.empty() && !doc.contains("column"))
        r.fail_top("a table needs [value] metric = \"...\" (a summary key such as top1, or series:KEY:last)");
      if (auto n = head.get("best")) {
        d.best = r.string(*n, "best");
        if (d.best != "group" && d.best != "column" && d.best != "none")
          r.fail(*n, fmt::format("best must be group, column or none, not '{}'", d.best));
      }
      if (auto n = head.get("vary")) d.vary = r.strings(*n, "vary");
      if (auto n = head.get("row_header")) d.rows.header = r.string(*n, "row_header");
      r.axis(doc, d.rows, "row_key", "row", false, d.value);
      r.axis(doc, d.columns, "column_key", "column", true, d.value);
      if (d.rows.empty()) r.fail_top("a table needs rows: [[row_key]] (a parameter's values) or [[row]] entries");
      for (const auto& c : d.columns.entries)
        if (d.value.metric.empty() && (!c.value || c.value->metric.empty()))
          r.fail_top(fmt::format("column '{}' has no metric (set [value] metric or the column's metric)", c.label));
      forbid({"series_key", "series", "facet_key", "facet", "x", "bar"}, "a [table]");
      break;
    }
    case Kind::runs: {
      d.statuses = {"failed", "killed"};
      if (auto n = head.get("status")) {
        d.statuses = r.strings(*n, "status");
        for (const auto& s : d.statuses)
          if (!detail::parse_status(s))
            r.fail(*n, fmt::format("unknown status '{}' (pending, running, finished, failed, killed)", s));
      }
      std::vector<std::string> fields{"sweep", "run", "status", "error"};
      if (auto n = head.get("fields")) fields = r.strings(*n, "fields");
      std::map<std::string, std::string> headers;
      if (auto n = head.get("headers"))
        for (const auto& [k, v] : r.table(*n, "headers")) headers[std::string(k.str())] = r.string(v, "headers");
      for (const auto& f : fields) d.fields.push_back({f, headers.count(f) ? headers[f] : f});
      if (auto n = head.get("max_text")) d.max_text = static_cast<std::size_t>(std::max<std::int64_t>(8, r.integer(*n, "max_text")));
      forbid({"value", "row_key", "row", "column_key", "column", "series_key", "series", "facet_key", "facet", "x", "bar"},
             "a [runs] listing");
      break;
    }
    case Kind::line:
    case Kind::steps:
    case Kind::bars: {
      if (auto n = head.get("x_axis")) {
        d.x_axis = r.string(*n, "x_axis");
        if (d.x_axis != "category" && d.x_axis != "linear" && d.x_axis != "log")
          r.fail(*n, fmt::format("x_axis must be category, linear or log, not '{}'", d.x_axis));
      }
      if (auto n = head.get("x_label")) d.x_label = r.string(*n, "x_label");
      if (auto n = head.get("y_label")) d.y_label = r.string(*n, "y_label");
      if (auto n = head.get("log_y")) d.log_y = r.boolean(*n, "log_y");
      r.axis(doc, d.series, "series_key", "series", false, d.value);
      r.axis(doc, d.facets, "facet_key", "facet", false, d.value);
      forbid({"row_key", "row", "column_key", "column"}, "a [figure]");
      if (d.kind == Kind::line) {
        const toml::node* x = doc.get("x");
        if (!x) r.fail_top("a line figure needs x = \"a parameter key\" (or an [x] table)");
        if (auto s = x->as_string()) d.x.key = s->get();
        else d.x = r.key_dim(r.table(*x, "[x]"), "[x]");
        if (d.x_label.empty()) d.x_label = d.x.header.empty() ? d.x.key : d.x.header;
        if (d.value.metric.empty()) r.fail_top("a line figure needs [value] metric = \"a summary key\"");
        forbid({"bar"}, "a line figure");
      } else if (d.kind == Kind::steps) {
        if (d.value.metric.empty()) r.fail_top("a steps figure needs [value] metric = \"a per-step metric key\"");
        for (auto& m : d.value.metric) m.series = true;
        if (d.x_label.empty()) d.x_label = "step";
        forbid({"bar", "x"}, "a steps figure");
      } else {
        if (auto n = doc.get("bar"))
          for (const auto* t : r.tables(*n, "[[bar]]")) {
            Entry e = r.entry(*t, "[[bar]]", true, d.value);
            if (!e.value) e.value = d.value, e.value->label = e.label;
            if (e.value->metric.empty()) r.fail_top(fmt::format("bar '{}' has no metric", e.label));
            d.bars.push_back(std::move(e));
          }
        if (d.bars.empty()) r.fail_top("a bars figure needs [[bar]] entries (label, metric)");
        forbid({"x"}, "a bars figure");
      }
      if (d.value.label.empty()) d.value.label = d.y_label;
      if (d.y_label.empty()) d.y_label = d.value.label.empty() ? d.value.metric_names() : d.value.label;
      break;
    }
  }
  if (d.value.label.empty()) d.value.label = d.value.metric_names();
  return d;
}

std::vector<Definition> load_definitions(const std::vector<std::filesystem::path>& dirs) {
  namespace fs = std::filesystem;
  std::vector<Definition> out;
  std::set<std::string> seen;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.path().extension() == ".toml") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      const std::string id = file.stem().string();
      if (!seen.insert(id).second) continue;
      std::ifstream in(file);
      if (!in) throw ReportError(fmt::format("cannot read report definition '{}'", file.string()));
      std::stringstream text;
      text << in.rdbuf();
      out.push_back(parse_definition(text.str(), id, file.string()));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Definition& a, const Definition& b) {
    return a.order != b.order ? a.order < b.order : a.id < b.id;
  });
  return out;
}

std::vector<std::filesystem::path> default_definition_dirs(const std::filesystem::path& executable) {
  std::vector<std::filesystem::path> dirs;
  std::error_code ec;
  const auto installed = executable.parent_path().parent_path() / "share" / "cab" / "tables";
  if (std::filesystem::is_directory(installed, ec)) dirs.push_back(installed);
#ifdef CAB_REPORT_SOURCE_TABLES_DIR
  if (std::filesystem::is_directory(CAB_REPORT_SOURCE_TABLES_DIR, ec)) dirs.emplace_back(CAB_REPORT_SOURCE_TABLES_DIR);
#endif
  return dirs;
}

}  // namespace cab::report
