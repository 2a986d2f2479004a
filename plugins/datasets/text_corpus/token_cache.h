// text-corpus's on-disk cache: the SentencePiece tokenizer and the corpus as token shards, built once per
// (file list, tokenizer options) and memory-mapped on later runs.
//
// An entry is <cache>/<sha256 of the file names, sizes and mtimes + tokenizer options + test_fraction>/:
//   tokenizer.model  the SentencePiece model (trained by cab on the training documents, or a copy of the given one)
//   train.bin        the training documents' tokens: flat little-endian uint16 (vocab ≤ 65536) or uint32
//   test.bin         the held-out documents' tokens, same format
//   meta.json        token width and counts, vocabulary size, the held-out files; written last, so an entry
//                    without it is incomplete
// Each document is encoded whole (cab's tokenizers keep "\n" as a piece, so the text decodes back) and
// ends with </s>. Entries are built under a lock file, so concurrent runs build one entry once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cab::datasets {

struct TextCorpusOptions {
  /// folder of UTF-8 files, searched recursively (hidden files and folders skipped)
  std::string root;
  /// file name endings of documents (case-insensitive)
  std::vector<std::string> extensions{".txt"};
  /// a SentencePiece .model to load; empty: cab trains one on the training documents
  std::string tokenizer;
  /// trained tokenizer: vocabulary size, "bpe" or "unigram", character coverage, bytes for unknown characters
  std::int64_t vocab_size = 8000;
  std::string model_type = "bpe";
  double character_coverage = 0.9995;
  bool byte_fallback = true;
  /// trained tokenizer: at most this many lines, sampled from the training documents (0: all)
  std::int64_t max_sentences = 2'000'000;
  /// cache folder; empty: ${CAB_HOME:-~/.cache/cab}/text-corpus
  std::string cache;
  /// fraction of the documents held out as the test split
  double test_fraction = 0.01;
};

/// A read-only memory-mapped file of tokens.
class TokenShard {
 public:
  TokenShard() = default;
  /// Maps `file`, which must hold exactly `tokens` tokens of `width` bytes.
  TokenShard(const std::filesystem::path& file, int width, std::int64_t tokens);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  std::int64_t size() const { return tokens_; }
  /// Copies tokens [start, start + n) into out.
  void copy(std::int64_t start, std::int64_t n, std::int64_t* out) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  int width_ = 2;
  std::int64_t tokens_ = 0;
};

/// An opened cache entry.
struct TokenCache {
  std::filesystem::path dir;
  std::int64_t vocab_size = 0;
  TokenShard train, test;
  std::int64_t train_documents = 0, test_documents = 0;
};

/// The cache folder to use: options.cache, else ${CAB_HOME:-$HOME/.cache/cab}/text-corpus.
std::filesystem::path cache_base(const TextCorpusOptions& options);

/// Opens the entry for the corpus and options, building it first if it is not there.
TokenCache open_token_cache(const TextCorpusOptions& options);

}  // namespace cab::datasets
