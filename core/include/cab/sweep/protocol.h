// The line protocol between a worker process and its host (the only database writer).
// One message per line, fields separated by tabs:
//   H                              heartbeat
//   M <step> <wall_s> <key> <value> metric
//   S <key> <value>                summary value
//   P <key> <value>                provenance field
//   E <message>                    why the run is about to fail
//   D                              the run finished
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cab/export.h"

namespace cab::sweep {

/// Writes protocol messages to a file descriptor, buffered; metrics are flushed at most every 100 ms.
class CAB_API Reporter {
 public:
  /// fd < 0: a reporter that discards everything but errors, which go to stderr (runs outside a sweep).
  explicit Reporter(int fd);
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  void metric(std::int64_t step, std::string_view key, double value);
  void summary(std::string_view key, std::string_view value);
  void provenance(std::string_view key, std::string_view value);
  void error(std::string_view message);
  void heartbeat();
  void done();
  /// Sends everything buffered.
  void flush();
  /// Seconds since the reporter was created (the run's wall clock).
  double elapsed() const;

 private:
  void line(std::string text, bool urgent);
  int fd_;
  std::string buffer_;
  double start_;
  double last_flush_;
};

/// Tabs and newlines inside protocol fields become spaces.
CAB_API std::string protocol_field(std::string_view text);

}  // namespace cab::sweep
