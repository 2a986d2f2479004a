// Worker side of the host protocol.
#include "cab/sweep/protocol.h"

#include <iostream>

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace cab::sweep {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string protocol_field(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return out;
}

Reporter::Reporter(int fd) : fd_(fd), start_(now_s()), last_flush_(start_) {}

Reporter::~Reporter() { flush(); }

void Reporter::line(std::string text, bool urgent) {
  if (fd_ < 0) return;
  buffer_ += text;
  buffer_ += '\n';
  if (urgent || buffer_.size() > (1 << 16) || now_s() - last_flush_ > 0.1) flush();
}

void Reporter::metric(std::int64_t step, std::string_view key, double value) {
  line(fmt::format("M\t{}\t{:.6f}\t{}\t{:.9g}", step, elapsed(), protocol_field(key), value), false);
}
void Reporter::summary(std::string_view key, std::string_view value) {
  line(fmt::format("S\t{}\t{}", protocol_field(key), protocol_field(value)), false);
}
void Reporter::provenance(std::string_view key, std::string_view value) {
  line(fmt::format("P\t{}\t{}", protocol_field(key), protocol_field(value)), false);
}
void Reporter::error(std::string_view message) {
  if (fd_ < 0) {  // no host to tell (a data-parallel rank other than 0, a run outside a sweep): the log gets it
    std::cerr << "error: " << message << std::endl;
    return;
  }
  line("E\t" + protocol_field(message), true);
}
void Reporter::heartbeat() { line("H", true); }
void Reporter::done() { line("D", true); }

void Reporter::flush() {
  last_flush_ = now_s();
  std::size_t written = 0;
  while (fd_ >= 0 && written < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + written, buffer_.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the host is gone; the worker dies with it (PR_SET_PDEATHSIG)
    written += static_cast<std::size_t>(n);
  }
  buffer_.clear();
}

double Reporter::elapsed() const { return now_s() - start_; }

}  // namespace cab::sweep
