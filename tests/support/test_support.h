// Test helpers: run a command capturing its output and exit code; a temporary directory per test.
#pragma once

#include <gtest/gtest.h>

#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace cab::test {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

/// Runs `command` through /bin/sh with stderr merged into stdout.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe)) result.output += buffer.data();
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

/// Deletes a directory tree. Not std::filesystem::remove_all: libtorch.so (2.11 wheel) exports its own copy of
/// libstdc++'s std::filesystem, which interposes on the real one in programs linking LibTorch and crashes there.
inline void remove_tree(const std::filesystem::path& dir) {
  nftw(dir.c_str(), [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
       FTW_DEPTH | FTW_PHYS);
}

/// A fixture owning a fresh temporary directory, removed after the test.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "cab-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    remove_tree(dir_);
  }
  /// Writes `text` to dir_/name and returns the path.
  std::filesystem::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    return path;
  }
  std::filesystem::path dir_;
};

}  // namespace cab::test

namespace cab::test {

/// Starts `command` through /bin/sh in the background (its own process group), output to `log`.
inline pid_t spawn_command(const std::string& command, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", ("exec " + command + " >" + log + " 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

/// Waits for a spawned command; returns its exit code, or 128 + signal.
inline int wait_command(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace cab::test
