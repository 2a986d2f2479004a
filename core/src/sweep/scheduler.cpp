// The sweep host: worker processes, the report protocol, failure reasons, clean interruption.
#include "cab/sweep/scheduler.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <thread>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "cab/sweep/expand.h"
#include "cab/sweep/sweep_file.h"

extern char** environ;

namespace cab::sweep {

using store::Status;

namespace {

volatile std::sig_atomic_t g_stop = 0;  // the signal that stops the sweep, 0 while none came
void on_stop_signal(int sig) { g_stop = sig; }

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT (Ctrl-C)";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return fmt::format("signal {}", sig);
  }
}

// The comma-separated entries of `list`, blanks around each removed (empty entries kept).
std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const auto comma = list.find(',', start);
    std::string entry = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    out.push_back(std::move(entry));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// torchrun's variables: the host sets them itself for a data-parallel run and never passes its own on.
bool launcher_variable(const char* entry) {
  for (const char* name : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT="})
    if (std::strncmp(entry, name, std::strlen(name)) == 0) return true;
  return false;
}

struct Active {
  store::RunRecord run;
  std::string slot;  // GPU id(s), or "" for CPU workers
  pid_t pid = -1;    // rank 0 (the only one that reports)
  std::vector<pid_t> peers;  // ranks 1… of a data-parallel run (ranks_per_run > 1); -1 once reaped
  std::string peer_failure;  // why a peer ended the run early
  double peer_deadline = 0;  // when rank 0 is killed after a peer failed (unix time; 0: none)
  int fd = -1;
  std::string partial;
  double started = 0;
  bool done = false;
  bool timed_out = false;
  std::string last_error;
  std::map<std::string, std::string> summary, provenance;
  std::filesystem::path log;
  std::int64_t last_step = -1;
  double last_loss = NAN;
  double last_wall = 0;
};

std::optional<double> as_number(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

std::string unquote(const std::string& text) {
  return text.size() >= 2 && text.front() == '"' && text.back() == '"' ? text.substr(1, text.size() - 2) : text;
}

std::string log_tail(const std::filesystem::path& log) {
  std::ifstream in(log);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(line);
  std::string out;
  for (std::size_t i = lines.size() > 3 ? lines.size() - 3 : 0; i < lines.size(); ++i)
    out += (out.empty() ? "" : " | ") + lines[i].substr(0, 300);
  return out;
}

class Host {
 public:
  Host(store::Store& store, std::int64_t sweep_id, const SchedulerOptions& options, std::ostream& progress)
      : store_(store), sweep_id_(sweep_id), options_(options), progress_(progress), identity_(host_identity()) {
    const int ranks = std::max(1, options_.ranks_per_run);
    if (options_.gpus.empty()) {
      for (int i = 0; i < std::max(1, options_.workers); ++i) free_slots_.push_back("");
    } else {
      if (options_.gpus.size() % static_cast<std::size_t>(ranks) != 0)
        throw ConfigError(fmt::format("--gpus-per-run {}: {} GPU slot(s) do not split into groups of {}", ranks,
                                      options_.gpus.size(), ranks));
      for (std::size_t i = 0; i < options_.gpus.size(); i += static_cast<std::size_t>(ranks)) {
        std::string group;  // a data-parallel run sees its GPUs; rank r takes the r-th (LOCAL_RANK)
        for (int r = 0; r < ranks; ++r) group += (r ? "," : "") + options_.gpus[i + static_cast<std::size_t>(r)];
        free_slots_.push_back(group);
      }
    }
    for (const auto& run : store_.runs(sweep_id_))
      if (!matches(store_.params(run.id), options_.filters)) skip_.insert(run.id);
    total_ = static_cast<int>(store_.runs(sweep_id_).size() - skip_.size());
    std::filesystem::create_directories(options_.log_dir);
  }

  SweepOutcome run() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    struct sigaction old_int {}, old_term {}, old_usr1 {}, old_pipe {};
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
    sigaction(SIGUSR1, &action, &old_usr1);  // Slurm's warning before a time limit (--signal=B:USR1@...)
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe);
    g_stop = 0;

    bool exhausted = false;
    while (true) {
      if (g_stop) {
        stop_signal_ = g_stop;
        stop_all();
        outcome_.interrupted = true;
        break;
      }
      while (!exhausted && !free_slots_.empty()) {
        auto claimed = store_.claim_next(sweep_id_, identity_, free_slots_.front(), skip_);
        if (!claimed) {
          exhausted = true;
          break;
        }
        spawn(*claimed);
      }
      if (active_.empty() && exhausted) break;
      pump(0.2);
      reap();
      housekeeping();
    }
    flush_metrics();
    if (options_.interactive) progress_ << "\n";
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGUSR1, &old_usr1, nullptr);
    sigaction(SIGPIPE, &old_pipe, nullptr);
    return outcome_;
  }

 private:
  void spawn(const store::RunRecord& run) {
    const std::string slot = free_slots_.front();
    std::string config_text;
    try {
      config_text = resolve_references(run.config_toml, store_);
    } catch (const std::exception& e) {
      store_.end(run.id, Status::failed, e.what(), std::nullopt);
      ++outcome_.failed;
      say(fmt::format("run {} failed: {}", run.id, e.what()));
      return;
    }
    store_.begin_attempt(run.id);
    Active a;
    a.run = run;
    a.slot = slot;
    a.started = store::unix_time();
    a.log = options_.log_dir / fmt::format("run-{}-attempt-{}.log", run.id, run.attempts);

    const int ranks = std::max(1, options_.ranks_per_run);
    // Everything the children need is prepared before fork: only async-signal-safe calls happen after it.
    std::vector<std::string> args = {options_.executable.string(), "--worker", "--report-fd", "3"};
    args.insert(args.end(), options_.worker_arguments.begin(), options_.worker_arguments.end());
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
      if ((slot.empty() || std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) && std::strncmp(*e, "CAB_RUN_DIR=", 12) != 0 &&
          !launcher_variable(*e))
        env.emplace_back(*e);
    if (!slot.empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + slot);
    // CPU workers share the cores: without a user setting, each gets its share of OpenMP threads (LibTorch's
    // busy-waiting threads slow everything down when oversubscribed).
    const unsigned processes = static_cast<unsigned>(std::max(1, options_.workers) * ranks);
    if (options_.gpus.empty() && processes > 1 && !std::getenv("OMP_NUM_THREADS")) {
      const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
      env.push_back(fmt::format("OMP_NUM_THREADS={}", std::max(1u, cores / processes)));
    }
    if (!options_.run_dir.empty()) {  // checkpoints and the trained model; the same folder when the run resumes
      const auto dir = std::filesystem::absolute(options_.run_dir / run.config_hash);
      std::filesystem::create_directories(dir);
      env.push_back("CAB_RUN_DIR=" + dir.string());
    }
    if (ranks > 1) {  // torchrun's variables; rank 0 serves the rendezvous on a free local port
      const int port = free_tcp_port();
      env.push_back(fmt::format("WORLD_SIZE={}", ranks));
      env.push_back("MASTER_ADDR=127.0.0.1");
      env.push_back(fmt::format("MASTER_PORT={}", port));
      a.provenance["launch"] = fmt::format("{} data-parallel processes, rendezvous 127.0.0.1:{}", ranks, port);
    }
    for (int r = 0; r < ranks; ++r) {
      std::vector<std::string> rank_env = env;
      if (ranks > 1) {
        rank_env.push_back(fmt::format("RANK={}", r));
        rank_env.push_back(fmt::format("LOCAL_RANK={}", r));
      }
      const auto log = r == 0 ? a.log : std::filesystem::path(a.log.string() + fmt::format(".rank{}", r));
      int report_fd = -1;
      const pid_t pid = launch(args, rank_env, config_text, log, r == 0 ? &report_fd : nullptr);
      if (r == 0) {
        a.pid = pid;
        a.fd = report_fd;
      } else {
        a.peers.push_back(pid);
      }
    }
    free_slots_.erase(free_slots_.begin());
    say(fmt::format("run {} started{} (attempt {}): {}", run.id,
                    slot.empty() ? (ranks > 1 ? fmt::format(" as {} processes", ranks) : std::string())
                                 : (ranks > 1 ? " on GPUs " : " on GPU ") + slot,
                    run.attempts, run.config_hash.substr(0, 12)));
    active_.push_back(std::move(a));
  }

  // Starts one worker process: `config_text` on its stdin, stdout/stderr into `log`, and, when `report_fd` is
  // given, its fd 3 is the write end of a pipe whose read end (non-blocking) is returned there.
  pid_t launch(std::vector<std::string> args, std::vector<std::string> env, const std::string& config_text,
               const std::filesystem::path& log, int* report_fd) {
    int report[2] = {-1, -1}, input[2];
    if ((report_fd && pipe2(report, O_CLOEXEC) != 0) || pipe2(input, O_CLOEXEC) != 0)
      throw Error("cannot create pipes for a worker");
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::vector<char*> argv, envp;
    for (auto& x : args) argv.push_back(x.data());
    argv.push_back(nullptr);
    for (auto& x : env) envp.push_back(x.data());
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) throw Error(fmt::format("fork failed: {}", std::strerror(errno)));
    if (pid == 0) {
      setpgid(0, 0);  // Ctrl-C reaches the host only; the host stops the workers
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(125);
      signal(SIGPIPE, SIG_DFL);
      dup2(input[0], 0);
      if (report_fd) dup2(report[1], 3);
      if (log_fd >= 0) {
        dup2(log_fd, 1);
        dup2(log_fd, 2);
      }
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    ::close(input[0]);
    if (report_fd) ::close(report[1]);
    if (log_fd >= 0) ::close(log_fd);
    const char* data = config_text.data();
    std::size_t left = config_text.size();
    while (left > 0) {
      const ssize_t n = ::write(input[1], data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      data += n;
      left -= static_cast<std::size_t>(n);
    }
    ::close(input[1]);
    if (report_fd) {
      fcntl(report[0], F_SETFL, O_NONBLOCK);
      *report_fd = report[0];
    }
    return pid;
  }

  static int free_tcp_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = 29500;
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
    if (fd >= 0) ::close(fd);
    return port;
  }

  void signal_all(Active& a, int sig) {
    kill(a.pid, sig);
    for (pid_t p : a.peers)
      if (p > 0) kill(p, sig);
  }

  // Waits for the peers of a run whose rank 0 has ended: they end with it (a few seconds at most), or are killed.
  void reap_peers(Active& a) {
    const double deadline = store::unix_time() + 10;
    for (pid_t& p : a.peers) {
      while (p > 0) {
        int status = 0;
        if (waitpid(p, &status, WNOHANG) == p) {
          p = -1;
        } else if (store::unix_time() > deadline) {
          kill(p, SIGKILL);
          waitpid(p, &status, 0);
          p = -1;
        } else {
          usleep(20000);
        }
      }
    }
  }

  void pump(double timeout_s) {
    std::vector<pollfd> fds;
    for (const auto& a : active_)
      if (a.fd >= 0) fds.push_back({a.fd, POLLIN, 0});
    if (fds.empty()) {
      usleep(static_cast<useconds_t>(timeout_s * 1e6));
      return;
    }
    poll(fds.data(), fds.size(), static_cast<int>(timeout_s * 1000));
    for (auto& a : active_) drain(a, false);
  }

  // Reads what the worker sent; at_exit: until end of file.
  void drain(Active& a, bool at_exit) {
    if (a.fd < 0) return;
    char buffer[1 << 16];
    while (true) {
      const ssize_t n = ::read(a.fd, buffer, sizeof buffer);
      if (n > 0) {
        a.partial.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN && at_exit) {
        pollfd p{a.fd, POLLIN, 0};
        if (poll(&p, 1, 1000) > 0) continue;
      }
      if (n == 0) {
        ::close(a.fd);
        a.fd = -1;
      }
      break;
    }
    std::size_t start = 0, end;
    while ((end = a.partial.find('\n', start)) != std::string::npos) {
      handle(a, std::string_view(a.partial).substr(start, end - start));
      start = end + 1;
    }
    a.partial.erase(0, start);
  }

  void handle(Active& a, std::string_view line) {
    std::vector<std::string> f;
    std::size_t start = 0;
    while (true) {
      const auto tab = line.find('\t', start);
      f.emplace_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    if (f.empty() || f[0].empty()) return;
    switch (f[0][0]) {
      case 'M':
        if (f.size() == 5) {
          store::Metric m{a.run.id, f[3], std::strtoll(f[1].c_str(), nullptr, 10), std::strtod(f[4].c_str(), nullptr),
                          std::strtod(f[2].c_str(), nullptr)};
          if (m.key == "loss") {
            a.last_step = m.step;
            a.last_loss = m.value;
            a.last_wall = m.wall_time;
          }
          metrics_.push_back(std::move(m));
        }
        break;
      case 'S':
        if (f.size() == 3) a.summary[f[1]] = f[2];
        break;
      case 'P':
        if (f.size() == 3) a.provenance[f[1]] = f[2];
        break;
      case 'E':
        if (f.size() >= 2) a.last_error = f[1];
        break;
      case 'D':
        a.done = true;
        break;
      default:
        break;  // 'H' and unknown messages only prove the worker is alive
    }
  }

  void reap() {
    for (auto it = active_.begin(); it != active_.end();) {
      int status = 0;
      for (std::size_t k = 0; k < it->peers.size(); ++k) {  // a rank that fails ends the whole run
        pid_t& p = it->peers[k];
        int peer_status = 0;
        if (p > 0 && waitpid(p, &peer_status, WNOHANG) == p) {
          p = -1;
          if (!(WIFEXITED(peer_status) && WEXITSTATUS(peer_status) == 0) && it->peer_failure.empty()) {
            it->peer_failure = fmt::format("rank {} {} [log: {}.rank{}]", k + 1,
                                           WIFEXITED(peer_status) ? fmt::format("exited with code {}", WEXITSTATUS(peer_status))
                                                                  : fmt::format("died of signal {}", WTERMSIG(peer_status)),
                                           it->log.string(), k + 1);
            it->peer_deadline = store::unix_time() + 15;  // rank 0 usually fails the same way and says why
          }
        }
      }
      if (it->peer_deadline > 0 && store::unix_time() > it->peer_deadline) {
        signal_all(*it, SIGKILL);
        it->peer_deadline = 0;
      }
      const pid_t r = waitpid(it->pid, &status, WNOHANG);
      if (r != it->pid) {
        ++it;
        continue;
      }
      reap_peers(*it);
      drain(*it, true);
      if (it->fd >= 0) ::close(it->fd);
      finalize(*it, status);
      free_slots_.push_back(it->slot);
      it = active_.erase(it);
    }
  }

  void finalize(Active& a, int status) {
    flush_metrics();
    if (!a.provenance.empty()) store_.set_provenance(a.run.id, a.provenance);
    const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0 && a.peer_failure.empty();
    if (clean_exit && a.done) {  // even while stopping: a run that completed is finished
      a.summary["host_wall_s"] = fmt::format("{:.3f}", store::unix_time() - a.started);
      store_.finish(a.run.id, a.summary);
      ++outcome_.finished;
      say(fmt::format("run {} finished: loss {:.4g} after {} steps", a.run.id, a.last_loss, a.last_step + 1));
      return;
    }
    std::string reason;
    std::optional<int> code;
    if (WIFEXITED(status)) code = WEXITSTATUS(status);
    if (a.timed_out) {
      reason = fmt::format("timed out after {:.0f} s (per-run limit)", options_.timeout_s);
    } else if (!a.peer_failure.empty() && a.last_error.empty()) {
      reason = "data-parallel " + a.peer_failure;
    } else if (stopping_) {
      reason = fmt::format("interrupted: the sweep was stopped by {}{}; it resumes on the next start",
                           signal_name(stop_signal_),
                           WIFEXITED(status) && WEXITSTATUS(status) == kWorkerStopped ? " after a checkpoint" : "");
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == kWorkerStopped) {
      reason = "stopped by a signal to the worker; it resumes on the next start";
      if (!a.last_error.empty()) reason += " (" + a.last_error + ")";
    } else if (WIFSIGNALED(status)) {
      const int sig = WTERMSIG(status);
      reason = fmt::format("crashed: {} (signal {})", strsignal(sig), sig);
      const auto tail = log_tail(a.log);
      if (!tail.empty()) reason += "; last output: " + tail;
    } else {
      const int c = WEXITSTATUS(status);
      const char* kind = c == kWorkerNonFinite     ? "non-finite loss"
                         : c == kWorkerOutOfMemory ? "out of memory"
                         : c == kWorkerConfig      ? "invalid run config"
                         : c == kWorkerPlugin      ? "plugin error"
                         : c == 0                  ? "exited without finishing"
                                                   : "error";
      const std::string detail = a.last_error.empty() ? log_tail(a.log) : a.last_error;
      reason = fmt::format("{} (exit code {}){}{}", kind, c, detail.empty() ? "" : ": ", detail);
    }
    reason += fmt::format(" [log: {}]", a.log.string());
    const bool resumable = (stopping_ || (WIFEXITED(status) && WEXITSTATUS(status) == kWorkerStopped)) && !a.timed_out;
    const Status final_status = resumable ? Status::killed : Status::failed;
    store_.end(a.run.id, final_status, reason, code);
    (final_status == Status::killed ? outcome_.killed : outcome_.failed) += 1;
    say(fmt::format("run {} {}: {}", a.run.id, store::to_string(final_status), reason));
  }

  void housekeeping() {
    const double now = store::unix_time();
    if (options_.timeout_s > 0) {
      for (auto& a : active_) {
        if (!a.timed_out && now - a.started > options_.timeout_s) {
          a.timed_out = true;
          signal_all(a, SIGKILL);
        }
      }
    }
    if (metrics_.size() >= 50000 || now - last_flush_ > 0.25) flush_metrics();
    if (now - last_heartbeat_ > 2.0) {
      std::vector<std::int64_t> ids;
      for (const auto& a : active_) ids.push_back(a.run.id);
      store_.heartbeat(ids);
      last_heartbeat_ = now;
    }
    // Progress: a redrawn line on a terminal (twice a second), a plain line every 30 s otherwise.
    if (now - last_progress_ > (options_.interactive ? 0.5 : 30.0) && !active_.empty()) {
      std::string line = fmt::format("{}/{} finished, {} failed, {} running", outcome_.finished + already_done(),
                                     total_, outcome_.failed, active_.size());
      for (const auto& a : active_) {
        if (a.last_step < 0) {  // no step recorded yet: no loss to show (NaN would read as a diverged run)
          line += fmt::format(" | run {}: starting", a.run.id);
          continue;
        }
        const double rate = a.last_wall > 0 ? (a.last_step + 1) / a.last_wall : 0;
        line += fmt::format(" | run {}: step {} loss {:.4g} {:.1f} steps/s", a.run.id, a.last_step + 1, a.last_loss, rate);
        auto total = a.provenance.find("total_steps");
        if (total != a.provenance.end() && rate > 0)
          line += fmt::format(" ETA {:.0f} s", (std::stod(total->second) - a.last_step - 1) / rate);
      }
      if (options_.interactive) progress_ << "\r\033[K" << line.substr(0, 200) << std::flush;
      else say(line);
      last_progress_ = now;
    }
  }

  int already_done() {
    if (done_at_start_ < 0) {
      done_at_start_ = 0;
      for (const auto& r : store_.runs(sweep_id_))
        if (r.status == Status::finished && !skip_.count(r.id)) ++done_at_start_;
      done_at_start_ -= outcome_.finished;
    }
    return done_at_start_;
  }

  void flush_metrics() {
    store_.add_metrics(metrics_);
    metrics_.clear();
    last_flush_ = store::unix_time();
  }

  void stop_all() {
    stopping_ = true;
    say("stopping: terminating the running workers");
    for (auto& a : active_) signal_all(a, SIGTERM);
    const double deadline = store::unix_time() + options_.stop_grace_s;
    while (!active_.empty() && store::unix_time() < deadline) {
      pump(0.1);
      reap();
    }
    for (auto& a : active_) signal_all(a, SIGKILL);
    while (!active_.empty()) {
      pump(0.1);
      reap();
    }
  }

  void say(const std::string& message) {
    if (options_.interactive) progress_ << "\r\033[K";
    progress_ << fmt::format("[{}] {}\n", store::utc_timestamp(), message) << std::flush;
  }

  store::Store& store_;
  std::int64_t sweep_id_;
  const SchedulerOptions& options_;
  std::ostream& progress_;
  std::string identity_;
  std::vector<std::string> free_slots_;
  std::vector<Active> active_;
  std::set<std::int64_t> skip_;
  std::vector<store::Metric> metrics_;
  SweepOutcome outcome_;
  int total_ = 0;
  int done_at_start_ = -1;
  bool stopping_ = false;
  int stop_signal_ = 0;
  double last_flush_ = 0, last_heartbeat_ = 0, last_progress_ = 0;
};

}  // namespace

std::string hostname() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

std::vector<std::string> visible_gpus() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES")) {
    // The ordinals a child sees are the positions in this list (CUDA renumbers them from 0); keep the user's
    // entries (ids or UUIDs) so each worker gets exactly one of them. An entry CUDA cannot parse ends the list.
    for (auto& entry : split_commas(env)) {
      if (entry.empty() || entry == "-1") break;
      out.push_back(std::move(entry));
    }
    return out;
  }
  std::error_code ec;
  int count = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)e;
    ++count;
  }
  for (int i = 0; i < count; ++i) out.push_back(std::to_string(i));
  return out;
}

std::vector<std::string> gpu_slots(const std::string& spec, int runs_per_gpu) {
  if (runs_per_gpu < 1)
    throw ConfigError(fmt::format("--runs-per-gpu {}: expected a whole number ≥ 1", runs_per_gpu));
  std::vector<std::string> gpus;
  if (spec == "all") {
    gpus = visible_gpus();
    if (gpus.empty())
      throw ConfigError("--gpus all: no GPU is visible (CUDA_VISIBLE_DEVICES lists none, or it is unset and "
                        "/proc/driver/nvidia/gpus has no entries); leave --gpus out to run on CPU workers");
  } else {
    for (auto& gpu : split_commas(spec))
      if (!gpu.empty()) gpus.push_back(std::move(gpu));
    if (gpus.empty())
      throw ConfigError(fmt::format("--gpus '{}': expected 'all' or a comma-separated list of GPU ids such as 0,1", spec));
  }
  std::vector<std::string> slots;
  for (int r = 0; r < runs_per_gpu; ++r) slots.insert(slots.end(), gpus.begin(), gpus.end());
  return slots;
}

std::string host_identity() { return fmt::format("{}:{}", hostname(), getpid()); }

bool matches(const std::map<std::string, std::string>& params,
             const std::vector<std::pair<std::string, std::string>>& filters) {
  for (const auto& [key, want] : filters) {
    auto it = params.find(key);
    if (it == params.end()) return false;
    const auto a = as_number(it->second), b = as_number(want);
    if (a && b) {
      if (*a != *b) return false;
    } else if (unquote(it->second) != unquote(want)) {
      return false;
    }
  }
  return true;
}

std::string resolve_references(const std::string& config_toml, const store::Store& store) {
  if (config_toml.find("\"@ref:") == std::string::npos) return config_toml;
  Params flat = from_toml_document(config_toml, "<run config>");
  for (auto& [key, value] : flat) {
    const auto ref = parse_reference(value, {"<run config>", 0, 0});
    if (!ref) continue;
    const auto sweep = store.find_sweep(ref->sweep);
    if (!sweep) throw Error(fmt::format("{}: reference {}: no sweep '{}' in the store", key, ref->str(), ref->sweep));
    std::vector<store::RunRecord> hits;
    for (const auto& r : store.runs(sweep->id))
      if (matches(store.params(r.id), ref->filter)) hits.push_back(r);
    if (hits.size() != 1) {
      throw Error(fmt::format("{}: reference {} matches {} runs of sweep '{}'; it must match exactly one", key,
                              ref->str(), hits.size(), ref->sweep));
    }
    if (hits[0].status != Status::finished) {
      throw Error(fmt::format("{}: reference {}: run {} of sweep '{}' is {}, not finished; finish that sweep "
                              "first, then rerun this one with --retry-failed",
                              key, ref->str(), hits[0].id, ref->sweep, store::to_string(hits[0].status)));
    }
    const auto summary = store.summary(hits[0].id);
    auto it = summary.find(ref->artifact);
    if (it == summary.end()) {
      throw Error(fmt::format("{}: reference {}: run {} recorded no '{}'", key, ref->str(), hits[0].id,
                              ref->artifact));
    }
    value = it->second;
  }
  return to_toml_document(flat);
}

SweepOutcome run_sweep(store::Store& store, std::int64_t sweep_id, const SchedulerOptions& options,
                       std::ostream& progress) {
  Host host(store, sweep_id, options, progress);
  return host.run();
}

}  // namespace cab::sweep
