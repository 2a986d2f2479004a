// SVG plots for figures: line charts with error bars, mean curves with ±std bands, bar charts. Plain SVG 1.1
// with inline attributes, so the files render anywhere (browsers, image viewers, LaTeX via conversion).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "cab/report/render.h"

namespace cab::report {

namespace {

constexpr double kPanelWidth = 520, kPanelHeight = 320;
constexpr const char* kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                   "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr const char* kFont = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

std::string xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string n(double v) { return fmt::format("{:.1f}", v); }

/// Approximate rendered width of text at the given font size (proportional fonts average ~0.58 em).
double text_width(const std::string& s, double size) {
  std::size_t chars = 0;
  for (unsigned char c : s)
    if ((c & 0xc0) != 0x80) ++chars;
  return static_cast<double>(chars) * size * 0.58;
}

std::string fit(const std::string& s, double width, double size) {
  if (text_width(s, size) <= width) return s;
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    out += s[i];
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80 && text_width(out, size) > width - size) break;
  }
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xc0) == 0x80) out.pop_back();
  if (!out.empty()) out.pop_back();
  return out + "…";
}

struct Ticks {
  double lo = 0, hi = 1;
  std::vector<double> values;
  double step = 1;
};

Ticks nice_ticks(double lo, double hi, int target = 5) {
  if (!(hi > lo)) {
    const double d = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  Ticks t;
  t.step = step;
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  for (double v = t.lo; v <= t.hi + step * 1e-6; v += step) t.values.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

Ticks log_ticks(double lo, double hi) {
  Ticks t;
  const int e0 = static_cast<int>(std::floor(std::log10(lo))), e1 = static_cast<int>(std::ceil(std::log10(hi)));
  t.lo = std::pow(10.0, e0);
  t.hi = std::pow(10.0, std::max(e1, e0 + 1));
  for (int e = e0; e <= std::max(e1, e0 + 1); ++e) {
    const double base = std::pow(10.0, e);
    t.values.push_back(base);
    if (e1 - e0 <= 2 && e < std::max(e1, e0 + 1))
      for (double m : {2.0, 5.0}) t.values.push_back(base * m);
  }
  std::sort(t.values.begin(), t.values.end());
  t.step = 0;
  return t;
}

std::string tick_label(double v, double step) {
  if (step == 0) return short_number(v, 3);  // log axis
  if (std::fabs(v) >= 1e4 && step >= 1000) {
    ParamValue p;
    p.number = v;
    return format_value(p, "si");
  }
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s == "-0" || s.rfind("-0.", 0) == 0) {
    bool zero = true;
    for (char c : s.substr(1))
      if (c != '0' && c != '.') zero = false;
    if (zero) s = s.substr(1);
  }
  return s;
}

struct Scale {
  double d0, d1, p0, p1;
  bool log = false;
  double operator()(double v) const {
    if (log) {
      const double a = std::log10(d0), b = std::log10(d1);
      return p0 + (std::log10(v) - a) / (b - a) * (p1 - p0);
    }
    return p0 + (v - d0) / (d1 - d0) * (p1 - p0);
  }
};

std::string panel_svg(const Panel& p, double ox, double oy, Palette& palette) {
  const double W = kPanelWidth, H = kPanelHeight;
  std::string out = fmt::format("<g class=\"panel\" transform=\"translate({},{})\">\n", n(ox), n(oy));
  out += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", n(W), n(H));
  out += fmt::format("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\" {} "
                     "fill=\"#222\">{}</text>\n",
                     n(W / 2), kFont, xml(fit(p.title, W - 20, 13)));

  // Legend (lines only): series that have points.
  std::vector<const PlotSeries*> shown;
  for (const auto& s : p.series)
    if (!s.points.empty()) shown.push_back(&s);
  double legend_width = 0;
  if (!p.bars)
    for (const auto* s : shown) legend_width = std::max(legend_width, std::min(text_width(s->label, 11), 150.0) + 30);

  // Category labels may need rotating.
  const double left = 64, top = 36, right = W - 12 - legend_width;
  const bool category = p.bars || p.x_axis == "category";
  bool rotate = false;
  if (category && !p.categories.empty()) {
    const double slot = (right - left) / static_cast<double>(p.categories.size());
    for (const auto& c : p.categories) rotate = rotate || text_width(c, 11) > slot - 4;
  }
  const double bottom = H - (rotate ? 76 : 46);

  if (p.empty()) {
    out += fmt::format("<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" {} "
                       "fill=\"#888\">no finished runs with {}</text>\n</g>\n",
                       n(W / 2), n(H / 2), kFont, xml(p.value.metric_names()));
    return out;
  }

  // Ranges.
  double ylo = INFINITY, yhi = -INFINITY, xlo = INFINITY, xhi = -INFINITY;
  for (const auto* s : shown)
    for (const auto& pt : s->points) {
      const double err = p.log_y ? 0 : pt.stats.std;
      ylo = std::min(ylo, pt.stats.mean - err);
      yhi = std::max(yhi, pt.stats.mean + err);
      xlo = std::min(xlo, pt.x);
      xhi = std::max(xhi, pt.x);
    }
  if (p.bars) ylo = std::min(ylo, 0.0), yhi = std::max(yhi, 0.0);
  const bool log_y = p.log_y && ylo > 0;
  const Ticks yt = log_y ? log_ticks(ylo, yhi) : nice_ticks(ylo, yhi);
  const Scale y{yt.lo, yt.hi, bottom, top, log_y};

  Ticks xt;
  Scale x{0, 1, left, right};
  double slot = 0;
  if (category) {
    slot = (right - left) / static_cast<double>(std::max<std::size_t>(1, p.categories.size()));
    x = Scale{-0.5, static_cast<double>(p.categories.size()) - 0.5, left, right};
  } else if (p.x_axis == "log" && xlo > 0) {
    xt = log_ticks(xlo, xhi);
    x = Scale{xt.lo, xt.hi, left, right, true};
  } else {
    bool integers = true;  // steps and layer indices: no ticks between whole numbers
    for (const auto* s : shown)
      for (const auto& pt : s->points) integers = integers && pt.x == std::round(pt.x);
    xt = nice_ticks(xlo, xhi);
    if (integers && xt.step < 1) {
      xt.step = 1;
      xt.lo = std::floor(xlo);
      xt.hi = std::max(std::ceil(xhi), xt.lo + 1);
      xt.values.clear();
      for (double v = xt.lo; v <= xt.hi; v += 1) xt.values.push_back(v);
    }
    x = Scale{xt.lo, xt.hi, left, right};
  }

  // Grid, axes, ticks.
  out += "<g class=\"axes\" font-size=\"11\" fill=\"#333\" " + std::string(kFont) + ">\n";
  for (double v : yt.values) {
    const double py = y(v);
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e6e6e6\"/>\n", n(left), n(py), n(right), n(py));
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", n(left - 6), n(py + 4),
                       xml(tick_label(v, yt.step)));
  }
  if (category) {
    for (std::size_t i = 0; i < p.categories.size(); ++i) {
      const double px = x(static_cast<double>(i));
      const std::string label = xml(rotate ? fit(p.categories[i], 110, 11) : p.categories[i]);
      if (rotate)
        out += fmt::format("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\" transform=\"rotate(-35 {0} {1})\">{2}</text>\n",
                           n(px + 4), n(bottom + 14), label);
      else
        out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", n(px), n(bottom + 16), label);
    }
  } else {
    for (double v : xt.values) {
      const double px = x(v);
      out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#333\"/>\n", n(px), n(bottom),
                         n(bottom + 4));
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", n(px), n(bottom + 16),
                         xml(tick_label(v, xt.step)));
    }
  }
  out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#333\"/>\n", n(left), n(top), n(bottom));
  out += fmt::format("<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#333\"/>\n", n(left), n(right), n(bottom));
  if (!p.x_label.empty())
    out += fmt::format("<text class=\"x-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n",
                       n((left + right) / 2), n(H - 8), xml(fit(p.x_label, right - left, 12)));
  if (!p.y_label.empty())
    out += fmt::format("<text class=\"y-label\" x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" font-size=\"12\" "
                       "transform=\"rotate(-90 {0} {1})\">{2}</text>\n",
                       n(16), n((top + bottom) / 2), xml(fit(p.y_label, bottom - top, 12)));
  out += "</g>\n";

  // Data.
  if (p.bars) {
    const double zero = y(log_y ? yt.lo : std::max(0.0, yt.lo));
    for (std::size_t i = 0; i < p.series.size(); ++i) {
      const auto& s = p.series[i];
      if (s.points.empty()) continue;
      const Point& pt = s.points.front();
      const std::string& color = palette.color(s.label);
      const double cx = x(pt.x), w = slot * 0.62, top_y = y(pt.stats.mean);
      out += fmt::format("<g class=\"series bar\" data-label=\"{}\"><title>{}: {} (n={})</title>\n", xml(s.label),
                         xml(s.label), xml(number_text(p.value, pt.stats)), pt.stats.n);
      out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n", n(cx - w / 2),
                         n(std::min(top_y, zero)), n(w), n(std::fabs(zero - top_y)), color);
      double label_y = std::min(top_y, zero);
      if (pt.stats.n > 1 && pt.stats.std > 0 && !log_y) {
        const double a = y(pt.stats.mean - pt.stats.std), b = y(pt.stats.mean + pt.stats.std);
        label_y = std::min(label_y, b);
        out += fmt::format("<path d=\"M{0} {1}V{2}M{3} {1}H{4}M{3} {2}H{4}\" stroke=\"#333\" fill=\"none\"/>\n", n(cx),
                           n(a), n(b), n(cx - 5), n(cx + 5));
      }
      ValueSpec plain = p.value;
      if (plain.aggregate == Aggregate::mean_std) plain.aggregate = Aggregate::mean;
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" {} fill=\"#222\">{}</text>\n",
                         n(cx), n(label_y - 4), kFont, xml(number_text(plain, pt.stats)));
      out += "</g>\n";
    }
  } else {
    const bool bands = !category;  // mean curves: a ±std band; category lines: error bars
    for (const auto* s : shown) {
      const std::string& color = palette.color(s->label);
      out += fmt::format("<g class=\"series line\" data-label=\"{}\"><title>{} ({} finished run{})</title>\n",
                         xml(s->label), xml(s->label), s->runs, s->runs == 1 ? "" : "s");
      bool any_std = false;
      for (const auto& pt : s->points) any_std = any_std || (pt.stats.n > 1 && pt.stats.std > 0);
      if (any_std && !log_y) {
        if (bands && s->points.size() > 1) {
          std::string d;
          for (std::size_t i = 0; i < s->points.size(); ++i)
            d += fmt::format("{}{} {}", i ? "L" : "M", n(x(s->points[i].x)),
                             n(y(s->points[i].stats.mean + s->points[i].stats.std)));
          for (std::size_t i = s->points.size(); i-- > 0;)
            d += fmt::format("L{} {}", n(x(s->points[i].x)), n(y(s->points[i].stats.mean - s->points[i].stats.std)));
          out += fmt::format("<path class=\"band\" d=\"{}Z\" fill=\"{}\" fill-opacity=\"0.15\" stroke=\"none\"/>\n", d, color);
        } else {
          for (const auto& pt : s->points) {
            if (pt.stats.n < 2) continue;
            const double cx = x(pt.x), a = y(pt.stats.mean - pt.stats.std), b = y(pt.stats.mean + pt.stats.std);
            out += fmt::format("<path class=\"error\" d=\"M{0} {1}V{2}M{3} {1}H{4}M{3} {2}H{4}\" stroke=\"{5}\" "
                               "fill=\"none\"/>\n",
                               n(cx), n(a), n(b), n(cx - 4), n(cx + 4), color);
          }
        }
      }
      std::string points;
      for (const auto& pt : s->points) points += fmt::format("{},{} ", n(x(pt.x)), n(y(pt.stats.mean)));
      if (s->points.size() > 1)
        out += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
                           "stroke-linejoin=\"round\"/>\n",
                           points, color);
      if (category || s->points.size() <= 16)
        for (const auto& pt : s->points)
          out += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"1\"/>\n",
                             n(x(pt.x)), n(y(pt.stats.mean)), color);
      out += "</g>\n";
    }
    // Legend.
    double ly = top + 4;
    out += "<g class=\"legend\" font-size=\"11\" fill=\"#222\" " + std::string(kFont) + ">\n";
    for (const auto* s : shown) {
      const double lx = right + 14;
      out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\"/>\n", n(lx),
                         n(ly), n(lx + 16), n(ly), palette.color(s->label));
      out += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", n(lx + 21), n(ly + 4), xml(fit(s->label, 150, 11)));
      ly += 17;
    }
    out += "</g>\n";
  }
  out += "</g>\n";
  return out;
}

}  // namespace

const std::string& Palette::color(const std::string& label) {
  auto it = assigned_.find(label);
  if (it != assigned_.end()) return it->second;
  const std::size_t i = assigned_.size();
  return assigned_.emplace(label, kColors[i % (sizeof kColors / sizeof kColors[0])]).first->second;
}

std::string to_svg(const Figure& f, Palette& palette) {
  const std::size_t panels = std::max<std::size_t>(1, f.panels.size());
  const std::size_t cols = panels == 1 ? 1 : 2;
  const std::size_t rows = (panels + cols - 1) / cols;
  const double width = kPanelWidth * static_cast<double>(cols), height = kPanelHeight * static_cast<double>(rows);
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"cab-figure\" data-figure=\"{}\" width=\"{}\" height=\"{}\" "
      "viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n<title>{}</title>\n",
      xml(f.id), n(width), n(height), n(width), n(height), xml(f.title), xml(f.title));
  if (f.panels.empty()) {
    out += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"#fff\"/><text class=\"empty\" x=\"{}\" y=\"{}\" "
                       "text-anchor=\"middle\" font-size=\"12\" {} fill=\"#888\">no runs to plot</text>\n",
                       n(width), n(height), n(width / 2), n(height / 2), kFont);
  }
  for (std::size_t i = 0; i < f.panels.size(); ++i)
    out += panel_svg(f.panels[i], kPanelWidth * static_cast<double>(i % cols),
                     kPanelHeight * static_cast<double>(i / cols), palette);
  out += "</svg>\n";
  return out;
}

}  // namespace cab::report
