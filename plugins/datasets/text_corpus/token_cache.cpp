// Building and opening text-corpus's cache entries: list the documents, hold some out, train or load the
// tokenizer, encode the documents in parallel, write the shards, then map them.
#include "token_cache.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <cab/util/join.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>
#include <unordered_map>

#include <cab/util/error.h>
#include <cab/util/hash.h>

namespace cab::datasets {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "token shards are written in the machine's byte order");

namespace {

constexpr int kFormat = 1;  // bump when the entry's layout or the encoding changes

struct Document {
  std::string name;  // path relative to the root, '/'-separated
  fs::path path;
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

/// Every non-hidden regular file under dir whose name ends in one of `extensions`, in name order.
void list_documents(const fs::path& root, const fs::path& dir, const std::vector<std::string>& extensions,
                    std::vector<Document>& out) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.filename().string().front() == '.') continue;
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) continue;  // a dangling link
    if (S_ISDIR(st.st_mode)) {
      list_documents(root, p, extensions, out);
    } else if (S_ISREG(st.st_mode)) {
      const std::string name = lower(p.filename().string());
      const bool wanted = std::any_of(extensions.begin(), extensions.end(), [&](const std::string& e) {
        const std::string ext = lower(e);
        return name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
      });
      if (wanted)
        out.push_back({p.lexically_relative(root).generic_string(), p, static_cast<std::int64_t>(st.st_size),
                       static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec});
    }
  }
  if (ec) throw Error(fmt::format("text-corpus: cannot list {}: {}", dir.string(), ec.message()));
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(fmt::format("text-corpus: cannot read {}: {}", file.string(), std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Validate UTF-8 (SentencePiece would otherwise turn bad bytes into unknown pieces silently).
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : -1;
    bool ok = extra >= 0 && i + static_cast<std::size_t>(extra) < n;
    for (int k = 1; ok && k <= extra; ++k) ok = (s[i + k] & 0xc0) == 0x80;
    if (!ok)
      throw Error(fmt::format("text-corpus: {} is not UTF-8 (byte 0x{:02x} at offset {}); convert it (iconv -t UTF-8) "
                              "or leave its extension out of dataset.extensions",
                              file.string(), c, i));
    i += static_cast<std::size_t>(extra) + 1;
  }
  return text;
}

/// The non-empty lines of the training documents, one document in memory at a time.
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<const Document*>& docs) : docs_(docs) { advance(); }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void advance() {
    for (;;) {
      while (!rest_.empty()) {
        const std::size_t end = rest_.find('\n');
        std::string_view line = rest_.substr(0, end);
        rest_ = end == std::string_view::npos ? std::string_view() : rest_.substr(end + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (!line.empty()) {
          line_.assign(line);
          return;
        }
      }
      if (next_doc_ == docs_.size()) {
        done_ = true;
        return;
      }
      text_ = read_text(docs_[next_doc_++]->path);
      rest_ = text_;
    }
  }

  const std::vector<const Document*>& docs_;
  std::size_t next_doc_ = 0;
  std::string text_;
  std::string_view rest_;
  std::string line_;
  bool done_ = false;
};

std::string train_tokenizer(const TextCorpusOptions& o, const std::vector<const Document*>& docs) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const std::unordered_map<std::string, std::string> args{
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", fmt::format("{}", o.character_coverage)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"input_sentence_size", std::to_string(o.max_sentences)},
      {"shuffle_input_sentence", "true"},
      // Newlines survive as a piece of their own: documents are encoded whole, line breaks included.
      {"user_defined_symbols", "\n"},
      {"remove_extra_whitespaces", "false"},
      {"num_threads", std::to_string(std::min(threads, 64u))},
      {"minloglevel", "1"},
  };
  LineIterator lines(docs);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  if (!status.ok())
    throw Error(fmt::format("text-corpus: training the SentencePiece tokenizer on the {} training documents of {} "
                            "failed: {} (for a small corpus, lower dataset.vocab_size)",
                            docs.size(), o.root, status.ToString()));
  return model;
}

/// The tokens of the documents, in order, each followed by </s> (if the vocabulary has it). A document is
/// encoded whole, newlines included (cab's tokenizers have a "\n" piece), so decoding gives its text back;
/// documents over 64 KiB go in pieces cut after a newline, which bounds the encoder's memory.
std::vector<std::uint32_t> encode(const sentencepiece::SentencePieceProcessor& sp,
                                  const std::vector<const Document*>& docs) {
  constexpr std::size_t kChunk = 64 * 1024;
  const int eos = sp.eos_id();
  std::vector<std::vector<std::uint32_t>> per_doc(docs.size());
  at::parallel_for(0, static_cast<std::int64_t>(docs.size()), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<int> ids;
    for (std::int64_t d = begin; d < end; ++d) {
      std::string text = read_text(docs[d]->path);
      text.erase(std::remove(text.begin(), text.end(), '\r'), text.end());  // CRLF → LF
      auto& out = per_doc[static_cast<std::size_t>(d)];
      for (std::size_t pos = 0; pos < text.size();) {
        std::size_t stop = std::min(pos + kChunk, text.size());
        if (stop < text.size()) {
          const std::size_t newline = text.rfind('\n', stop - 1);
          if (newline != std::string::npos && newline >= pos) stop = newline + 1;
        }
        const auto status = sp.Encode(std::string_view(text).substr(pos, stop - pos), &ids);
        if (!status.ok())
          throw Error(fmt::format("text-corpus: cannot tokenize {}: {}", docs[d]->path.string(), status.ToString()));
        out.insert(out.end(), ids.begin(), ids.end());
        pos = stop;
      }
      if (eos >= 0) out.push_back(static_cast<std::uint32_t>(eos));
    }
  });
  std::size_t total = 0;
  for (const auto& v : per_doc) total += v.size();
  std::vector<std::uint32_t> tokens;
  tokens.reserve(total);
  for (auto& v : per_doc) tokens.insert(tokens.end(), v.begin(), v.end());
  return tokens;
}

void write_file(const fs::path& file, const void* data, std::size_t bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  out.close();
  if (!out) throw Error(fmt::format("text-corpus: cannot write {}: {}", file.string(), std::strerror(errno)));
}

void write_shard(const fs::path& file, const std::vector<std::uint32_t>& tokens, int width) {
  if (width == 4) return write_file(file, tokens.data(), tokens.size() * 4);
  std::vector<std::uint16_t> narrow(tokens.begin(), tokens.end());
  write_file(file, narrow.data(), narrow.size() * 2);
}

const char* const kEntryFiles[] = {"tokenizer.model", "train.bin", "test.bin", "meta.json.tmp", "meta.json"};

/// Removes a partly built entry (by name: std::filesystem::remove_all crashes in processes with LibTorch).
void remove_entry(const fs::path& dir) {
  for (const char* name : kEntryFiles) ::unlink((dir / name).c_str());
  ::rmdir(dir.c_str());
}

void build_entry(const TextCorpusOptions& o, const std::vector<Document>& docs, const fs::path& dir) {
  // Held out: the first ⌈test_fraction · n⌉ documents in the order of their names' hashes — deterministic,
  // and a document keeps its split when others are added.
  std::vector<std::pair<std::string, const Document*>> by_hash;
  for (const Document& d : docs) by_hash.emplace_back(sha256_hex(d.name), &d);
  std::sort(by_hash.begin(), by_hash.end());
  std::size_t n_test = 0;
  if (o.test_fraction > 0 && docs.size() >= 2)
    n_test = std::clamp<std::size_t>(static_cast<std::size_t>(std::ceil(o.test_fraction * docs.size() - 1e-9)), 1,
                                     docs.size() - 1);
  std::vector<const Document*> train, test;
  for (std::size_t i = 0; i < by_hash.size(); ++i) (i < n_test ? test : train).push_back(by_hash[i].second);
  const auto by_name = [](const Document* a, const Document* b) { return a->name < b->name; };
  std::sort(train.begin(), train.end(), by_name);
  std::sort(test.begin(), test.end(), by_name);

  std::string model;
  if (o.tokenizer.empty()) {
    model = train_tokenizer(o, train);
  } else {
    std::ifstream in(o.tokenizer, std::ios::binary);
    model.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  sentencepiece::SentencePieceProcessor sp;
  if (const auto status = sp.LoadFromSerializedProto(model); !status.ok())
    throw Error(fmt::format("text-corpus: {} is not a SentencePiece model: {}",
                            o.tokenizer.empty() ? "the trained tokenizer" : o.tokenizer, status.ToString()));
  write_file(dir / "tokenizer.model", model.data(), model.size());

  const std::int64_t vocab = sp.GetPieceSize();
  const int width = vocab <= 65536 ? 2 : 4;
  const std::vector<std::uint32_t> train_tokens = encode(sp, train);
  const std::vector<std::uint32_t> test_tokens = encode(sp, test);
  write_shard(dir / "train.bin", train_tokens, width);
  write_shard(dir / "test.bin", test_tokens, width);

  nlohmann::json meta;
  meta["format"] = kFormat;
  meta["root"] = o.root;
  meta["tokenizer"] = o.tokenizer.empty() ? std::string("trained by cab") : o.tokenizer;
  meta["vocab_size"] = vocab;
  meta["bytes_per_token"] = width;
  meta["train"] = {{"documents", train.size()}, {"tokens", train_tokens.size()}};
  std::vector<std::string> held_out;
  for (const Document* d : test) held_out.push_back(d->name);
  meta["test"] = {{"documents", test.size()}, {"tokens", test_tokens.size()}, {"files", held_out}};
  const std::string text = meta.dump(2) + "\n";
  write_file(dir / "meta.json.tmp", text.data(), text.size());
  if (::rename((dir / "meta.json.tmp").c_str(), (dir / "meta.json").c_str()) != 0)
    throw Error(fmt::format("text-corpus: cannot write {}: {}", (dir / "meta.json").string(), std::strerror(errno)));
}

TokenCache open_entry(const fs::path& dir) {
  const fs::path meta_file = dir / "meta.json";
  std::ifstream in(meta_file);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(fmt::format("text-corpus: cache file {} is unreadable ({}); delete {} to rebuild it",
                            meta_file.string(), e.what(), dir.string()));
  }
  if (meta.value("format", 0) != kFormat)
    throw Error(fmt::format("text-corpus: cache entry {} has format {}, expected {}; delete it to rebuild it",
                            dir.string(), meta.value("format", 0), kFormat));
  TokenCache cache;
  cache.dir = dir;
  cache.vocab_size = meta.at("vocab_size").get<std::int64_t>();
  const int width = meta.at("bytes_per_token").get<int>();
  cache.train = TokenShard(dir / "train.bin", width, meta.at("train").at("tokens").get<std::int64_t>());
  cache.test = TokenShard(dir / "test.bin", width, meta.at("test").at("tokens").get<std::int64_t>());
  cache.train_documents = meta.at("train").at("documents").get<std::int64_t>();
  cache.test_documents = meta.at("test").at("documents").get<std::int64_t>();
  return cache;
}

/// An exclusive flock() on a file, released when destroyed.
class FileLock {
 public:
  explicit FileLock(const fs::path& file) : fd_(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0)
      throw Error(fmt::format("text-corpus: cannot lock {}: {}", file.string(), std::strerror(errno)));
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

}  // namespace

TokenShard::TokenShard(const fs::path& file, int width, std::int64_t tokens) : width_(width), tokens_(tokens) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("text-corpus: cannot open {}: {}", file.string(), std::strerror(errno)));
  struct stat st {};
  ::fstat(fd, &st);
  bytes_ = static_cast<std::size_t>(tokens) * static_cast<std::size_t>(width);
  if (static_cast<std::size_t>(st.st_size) != bytes_) {
    ::close(fd);
    throw Error(fmt::format("text-corpus: {} has {} bytes, expected {} ({} tokens of {} bytes); delete its folder "
                            "to rebuild the cache",
                            file.string(), st.st_size, bytes_, tokens, width));
  }
  if (bytes_ > 0) {
    data_ = ::mmap(nullptr, bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      data_ = nullptr;
      ::close(fd);
      throw Error(fmt::format("text-corpus: cannot map {}: {}", file.string(), std::strerror(errno)));
    }
  }
  ::close(fd);
}

TokenShard::~TokenShard() {
  if (data_) ::munmap(data_, bytes_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      width_(other.width_),
      tokens_(std::exchange(other.tokens_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, bytes_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    width_ = other.width_;
    tokens_ = std::exchange(other.tokens_, 0);
  }
  return *this;
}

void TokenShard::copy(std::int64_t start, std::int64_t n, std::int64_t* out) const {
  if (width_ == 2) {
    const auto* p = static_cast<const std::uint16_t*>(data_) + start;
    std::copy(p, p + n, out);
  } else {
    const auto* p = static_cast<const std::uint32_t*>(data_) + start;
    std::copy(p, p + n, out);
  }
}

fs::path cache_base(const TextCorpusOptions& options) {
  if (!options.cache.empty()) return options.cache;
  if (const char* home = std::getenv("CAB_HOME"); home && *home) return fs::path(home) / "text-corpus";
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache" / "cab" / "text-corpus";
  throw Error("text-corpus: neither CAB_HOME nor HOME is set; set dataset.cache to a folder for the token cache");
}

TokenCache open_token_cache(const TextCorpusOptions& o) {
  const fs::path root(o.root);
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(fmt::format("text-corpus: corpus folder {} does not exist (dataset.root); expected a folder of UTF-8 "
                            "text files",
                            root.string()));
  std::vector<Document> docs;
  list_documents(root, root, o.extensions, docs);
  if (docs.empty())
    throw Error(fmt::format("text-corpus: {} holds no files ending in {} (dataset.extensions)", root.string(),
                            cab::join(o.extensions, ", ")));
  std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) { return a.name < b.name; });

  // The key: every document's name, size and mtime, the tokenizer (its bytes when given) and the split.
  std::string material = fmt::format("cab text-corpus format {}\n", kFormat);
  for (const Document& d : docs) material += fmt::format("{}\t{}\t{}\n", d.name, d.size, d.mtime_ns);
  if (!o.tokenizer.empty()) {
    if (::stat(o.tokenizer.c_str(), &st) != 0)
      throw Error(fmt::format("text-corpus: tokenizer {} does not exist (dataset.tokenizer: a SentencePiece .model "
                              "file, or empty to let cab train one)",
                              o.tokenizer));
    material += "tokenizer sha256 " + sha256_file(o.tokenizer) + "\n";
  } else {
    material += fmt::format("trained {} vocab {} coverage {} byte_fallback {} sentences {}\n", o.model_type,
                            o.vocab_size, o.character_coverage, o.byte_fallback, o.max_sentences);
  }
  material += fmt::format("test_fraction {}\n", o.test_fraction);
  const std::string key = sha256_hex(material);

  const fs::path base = cache_base(o);
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec) throw Error(fmt::format("text-corpus: cannot create the cache folder {}: {}", base.string(), ec.message()));
  const fs::path dir = base / key;
  if (::access((dir / "meta.json").c_str(), F_OK) == 0) return open_entry(dir);

  FileLock lock(base / (key + ".lock"));
  if (::access((dir / "meta.json").c_str(), F_OK) == 0) return open_entry(dir);  // built while we waited
  const fs::path partial = base / fmt::format("{}.partial-{}", key, ::getpid());
  remove_entry(partial);
  if (::mkdir(partial.c_str(), 0755) != 0)
    throw Error(fmt::format("text-corpus: cannot create {}: {}", partial.string(), std::strerror(errno)));
  try {
    build_entry(o, docs, partial);
    remove_entry(dir);  // an incomplete entry left by a crashed build
    if (::rename(partial.c_str(), dir.c_str()) != 0)
      throw Error(fmt::format("text-corpus: cannot move {} to {}: {}", partial.string(), dir.string(),
                              std::strerror(errno)));
  } catch (...) {
    remove_entry(partial);
    throw;
  }
  return open_entry(dir);
}

}  // namespace cab::datasets
