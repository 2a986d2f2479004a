// Rendezvous, the TCP-store collectives (CPU), and the bucketed gradient all-reduce.
#include "cab/train/distributed.h"

#include <fmt/format.h>
#include <ATen/ops/_foreach_copy.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <cstring>

#include "cab/util/error.h"
#include "distributed_internal.h"

namespace cab::train {

namespace {

int env_int(const char* name, int fallback, int min, int max) {
  const char* text = std::getenv(name);
  if (!text || !*text) return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < min || value > max)
    throw ConfigError(fmt::format("environment variable {}='{}': expected a whole number from {} to {}", name, text,
                                  min, max));
  return static_cast<int>(value);
}

/// Collectives through the TCPStore itself: every rank publishes its tensor under a key of the operation and
/// sums all of them in rank order (so every rank gets the same bits). Slow (a few MB/s), but dependable: for
/// CPU runs and for the tests. Synchronous; the returned wait function does nothing.
class StoreCommunicator final : public Communicator {
 public:
  StoreCommunicator(c10::intrusive_ptr<c10d::Store> store, int rank, int size, std::chrono::milliseconds timeout)
      : store_(std::move(store)), rank_(rank), size_(size), timeout_(timeout) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "tcp-store"; }

  std::function<void()> all_reduce_sum_async(at::Tensor flat) override {
    const std::string prefix = next_prefix("ar");
    const at::Tensor mine = flat.detach().to(at::kCPU).contiguous();
    publish(prefix, mine);
    at::Tensor sum = at::zeros_like(mine);
    for (int r = 0; r < size_; ++r) sum.add_(r == rank_ ? mine : fetch(prefix, r, mine));
    flat.copy_(sum);
    return [] {};
  }
  // The root's values plus everybody else's zeros (exact): every operation is a full exchange, which is what
  // lets next_prefix() delete old keys safely.
  void broadcast(at::Tensor flat, int root) override {
    if (rank_ != root) flat.zero_();
    all_reduce_sum(flat);
  }
  void leave() override { detail::leave(*store_, rank_, size_, timeout_); }

 private:
  std::string next_prefix(const char* op) {
    // A rank at operation s has read every key of operation s − 1, so every rank has finished reading the keys
    // of s − 2: this rank's key from then can go.
    if (seq_ >= 2 && !published_[(seq_ - 2) % 2].empty()) store_->deleteKey(published_[(seq_ - 2) % 2]);
    published_[seq_ % 2].clear();
    return fmt::format("cab/{}/{}/", op, seq_++);
  }
  void publish(const std::string& prefix, const at::Tensor& t) {
    const auto* bytes = static_cast<const std::uint8_t*>(t.data_ptr());
    const std::string key = prefix + std::to_string(rank_);
    store_->set(key, std::vector<std::uint8_t>(bytes, bytes + t.nbytes()));
    published_[(seq_ - 1) % 2] = key;
  }
  at::Tensor fetch(const std::string& prefix, int r, const at::Tensor& like) {
    const auto blob = store_->get(prefix + std::to_string(r));
    if (blob.size() != like.nbytes())
      throw Error(fmt::format("data-parallel: rank {} sent {} bytes for a {}-byte tensor (ranks disagree about the "
                              "model or the step)", r, blob.size(), like.nbytes()));
    at::Tensor out = at::empty_like(like);
    std::memcpy(out.data_ptr(), blob.data(), blob.size());
    return out;
  }

  c10::intrusive_ptr<c10d::Store> store_;
  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::int64_t seq_ = 0;
  std::string published_[2];
};

}  // namespace

void detail::leave(c10d::Store& store, int rank, int size, std::chrono::milliseconds timeout) {
  store.set(fmt::format("cab/left/{}", rank), std::vector<std::uint8_t>{1});
  if (rank != 0) return;
  std::vector<std::string> keys;
  for (int r = 1; r < size; ++r) keys.push_back(fmt::format("cab/left/{}", r));
  try {
    store.wait(keys, timeout);
  } catch (const std::exception&) {
    std::string missing;
    for (int r = 1; r < size; ++r)
      if (!store.check({fmt::format("cab/left/{}", r)})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    throw Error(fmt::format("data-parallel: rank 0 finished, but rank(s) {} did not finish within {} s", missing,
                            std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
  }
}

DistributedEnv DistributedEnv::from_environment() {
  DistributedEnv env;
  const char* world = std::getenv("WORLD_SIZE");
  if (!world || !*world) return env;
  env.launched = true;
  env.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 16);
  env.rank = env_int("RANK", 0, 0, env.world_size - 1);
  env.local_rank = env_int("LOCAL_RANK", env.rank, 0, 1 << 16);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) env.master_addr = addr;
  env.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  return env;
}

Communicator::~Communicator() = default;

std::unique_ptr<Communicator> connect(const DistributedEnv& env, const at::Device& device,
                                      std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = static_cast<std::size_t>(env.world_size);
  options.waitWorkers = true;
  options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw Error(fmt::format("data-parallel rendezvous at MASTER_ADDR={} MASTER_PORT={} failed for rank {} of {}: {}",
                            env.master_addr, env.master_port, env.rank, env.world_size, what.substr(0, what.find('\n'))));
  }
  if (device.is_cuda()) {
#ifdef CAB_WITH_NCCL
    ::setenv("NCCL_NVLS_ENABLE", "0", 1);  // NVLink multicast off (see the GPU host's notes)
    return detail::make_nccl_communicator(store, env.rank, env.world_size, device.index(), timeout);
#else
    throw Error("data-parallel training on GPUs needs NCCL, and this build of cab has none (nccl.h was not found "
                "when it was configured; install NCCL's headers or the nvidia-nccl wheel and reconfigure)");
#endif
  }
  return std::make_unique<StoreCommunicator>(store, env.rank, env.world_size, timeout);
}

// ---- GradientSync ----

GradientSync::GradientSync(Communicator& comm, std::vector<at::Tensor> params, double bucket_mb)
    : comm_(comm), params_(std::move(params)) {
  const auto cap = static_cast<std::int64_t>(bucket_mb * 1024 * 1024);
  bucket_of_.resize(params_.size());
  slot_of_.resize(params_.size());
  seen_.assign(params_.size(), 0);
  std::int64_t bytes = 0;
  for (std::size_t k = params_.size(); k-- > 0;) {  // the backward reaches the last parameters first
    const at::Tensor& p = params_[k];
    if (buckets_.empty() || bytes >= cap || buckets_.back().flat.scalar_type() != p.scalar_type() ||
        buckets_.back().flat.device() != p.device()) {
      buckets_.emplace_back();
      buckets_.back().flat = at::empty({0}, p.options());
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    const std::int64_t offset = b.offsets.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel();
    b.params.push_back(k);
    b.offsets.push_back(offset);
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = b.params.size() - 1;
    bytes += static_cast<std::int64_t>(p.numel() * p.element_size());
  }
  for (auto& b : buckets_) {
    const std::int64_t n = b.offsets.back() + params_[b.params.back()].numel();
    b.flat = at::zeros({n}, b.flat.options());
  }
  for (std::size_t k = 0; k < params_.size(); ++k)
    hooks_.push_back(params_[k].register_hook([this, k](const at::TensorBase& grad) { on_grad(k, at::Tensor(grad)); }));
}

GradientSync::~GradientSync() {
  for (std::size_t k = 0; k < params_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

void GradientSync::begin() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& b : buckets_) {
    b.flat.zero_();
    b.pending = static_cast<int>(b.params.size());
    b.started = false;
    b.wait = nullptr;
  }
  std::fill(seen_.begin(), seen_.end(), 0);
  next_ = 0;
  late_ = false;
  overlapped_ = 0;
  armed_ = true;
}

void GradientSync::on_grad(std::size_t k, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  Bucket& b = buckets_[bucket_of_[k]];
  if (b.started) {  // a second backward reached it after its bucket went: redo everything in finish()
    late_ = true;
    return;
  }
  const std::size_t slot = slot_of_[k];
  b.flat.narrow(0, b.offsets[slot], params_[k].numel()).view(grad.sizes()).add_(grad);
  if (!seen_[k]) {
    seen_[k] = 1;
    --b.pending;
  }
  if (b.pending == 0) start_ready();
}

void GradientSync::start_ready() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    start(buckets_[next_++]);
    if (!in_finish_) ++overlapped_;
  }
}

void GradientSync::start(Bucket& b) {
  b.started = true;
  b.wait = comm_.all_reduce_sum_async(b.flat);
}

void GradientSync::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  in_finish_ = true;
  for (; next_ < buckets_.size(); ++next_) start(buckets_[next_]);  // parameters without a gradient add zeros
  for (auto& b : buckets_) b.wait();
  if (late_) {
    for (auto& b : buckets_) {
      b.flat.zero_();
      for (std::size_t s = 0; s < b.params.size(); ++s) {
        const at::Tensor& g = params_[b.params[s]].grad();
        if (g.defined()) b.flat.narrow(0, b.offsets[s], g.numel()).copy_(g.reshape(-1));
      }
      comm_.all_reduce_sum(b.flat);
    }
  }
  // Average once per bucket, then copy every gradient back in one multi-tensor launch per bucket: the step is
  // launch-bound, and two launches per parameter cost milliseconds.
  const double scale = 1.0 / comm_.size();
  std::vector<at::Tensor> grads, sums;
  for (auto& b : buckets_) {
    b.flat.mul_(scale);
    grads.clear();
    sums.clear();
    for (std::size_t s = 0; s < b.params.size(); ++s) {
      at::Tensor& p = params_[b.params[s]];
      at::Tensor g = p.mutable_grad();
      if (!g.defined()) continue;  // no gradient on this rank, so none on any rank
      grads.push_back(g);
      sums.push_back(b.flat.narrow(0, b.offsets[s], p.numel()).view(g.sizes()));
    }
    if (!grads.empty()) at::_foreach_copy_(grads, sums);
  }
  armed_ = false;
  in_finish_ = false;
}

}  // namespace cab::train
