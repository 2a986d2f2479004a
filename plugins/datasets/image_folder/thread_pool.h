// A fixed set of worker threads running one parallel loop at a time: image-folder decodes a batch with it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cab::datasets {

class ThreadPool {
 public:
  /// Starts `threads` ≥ 1 workers, which sleep between loops.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }

  /// Calls fn(item, worker) for every item in [0, n), items handed out one by one to the workers (worker in
  /// [0, size()), so per-worker state needs no lock), and returns when all are done. The first exception
  /// stops the loop (items not started are skipped) and is rethrown here. Concurrent calls run one by one.
  void parallel_for(std::int64_t n, const std::function<void(std::int64_t item, int worker)>& fn);

 private:
  void work(int worker);

  std::vector<std::thread> threads_;
  std::mutex loop_mutex_;  // one loop at a time
  std::mutex mutex_;       // guards everything below except next_
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(std::int64_t, int)>* fn_ = nullptr;
  std::int64_t n_ = 0;
  std::atomic<std::int64_t> next_{0};
  std::uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace cab::datasets
