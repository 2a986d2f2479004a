// A folder of UTF-8 text as a language-modelling dataset: SentencePiece tokens (tokenizer trained by cab or
// loaded), cached as memory-mapped shards with documents held out for perplexity. Example i of a split is
// the window of seq_len + 1 tokens from i·seq_len: inputs its first seq_len tokens, targets the next ones.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include <cab/config/schema.h>
#include <cab/config/section.h>
#include <cab/plugin/abi.h>
#include <cab/plugin/objective.h>
#include <cab/util/error.h>

#include "indices.h"
#include "token_cache.h"

namespace {

using cab::Split;
using cab::datasets::TextCorpusOptions;

class TextCorpus final : public cab::Dataset {
 public:
  TextCorpus(const TextCorpusOptions& options, int64_t seq_len)
      : cache_(cab::datasets::open_token_cache(options)), seq_len_(seq_len) {
    if (size(Split::train) == 0)
      throw cab::Error(fmt::format("text-corpus: the training documents of {} have {} tokens, fewer than seq_len + 1 "
                                   "= {}; use a larger corpus or a smaller dataset.seq_len",
                                   options.root, cache_.train.size(), seq_len_ + 1));
  }

  /// Non-overlapping windows: window i covers tokens [i·seq_len, (i + 1)·seq_len], its last token the first
  /// of window i + 1 (as the target of its last input).
  int64_t size(Split split) const override {
    const int64_t tokens = shard(split).size();
    return tokens > seq_len_ ? (tokens - 1) / seq_len_ : 0;
  }
  /// The vocabulary size: the width of the model's logits.
  int64_t num_classes() const override { return cache_.vocab_size; }
  /// Text is unlabelled: the trainer takes fractions of it uniformly.
  std::vector<int64_t> labels(Split) const override { return {}; }

  cab::Batch get(Split split, const std::vector<int64_t>& indices) const override {
    cab::datasets::check_indices("text-corpus", split, indices, size(split));
    const auto batch = static_cast<int64_t>(indices.size());
    at::Tensor window = at::empty({batch, seq_len_ + 1}, at::kLong);
    int64_t* out = window.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b)
      shard(split).copy(indices[b] * seq_len_, seq_len_ + 1, out + b * (seq_len_ + 1));
    return {window.narrow(1, 0, seq_len_).contiguous(),   // [b, seq_len]
            window.narrow(1, 1, seq_len_).contiguous()};  // [b, seq_len], shifted by one
  }

 private:
  const cab::datasets::TokenShard& shard(Split split) const {
    return split == Split::train ? cache_.train : cache_.test;
  }

  cab::datasets::TokenCache cache_;
  int64_t seq_len_;
};

void describe(cab::config::Schema& s) {
  using cab::config::Type;
  s.add("root", Type::string, "folder of UTF-8 text files (searched recursively)").required();
  s.add("extensions", Type::string_list, "file name endings of the documents (case-insensitive)")
      .fallback(std::vector<std::string>{".txt"});
  s.add("tokenizer", Type::string, "SentencePiece .model file to use; empty: cab trains one on the training documents")
      .fallback(std::string());
  s.add("vocab_size", Type::integer, "trained tokenizer: vocabulary size").fallback(std::int64_t{8000}).min(8)
      .max(1 << 22);
  s.add("model_type", Type::string, "trained tokenizer: SentencePiece model type").fallback(std::string("bpe"))
      .one_of({"bpe", "unigram"});
  s.add("character_coverage", Type::number, "trained tokenizer: fraction of characters covered by the vocabulary")
      .fallback(0.9995).min(0.5).max(1.0);
  s.add("byte_fallback", Type::boolean, "trained tokenizer: spell characters outside the vocabulary as UTF-8 bytes")
      .fallback(true);
  s.add("max_sentences", Type::integer, "trained tokenizer: lines sampled from the training documents (0: all)")
      .fallback(std::int64_t{2'000'000}).min(0);
  s.add("cache", Type::string, "folder for tokenizers and token shards; empty: ${CAB_HOME:-~/.cache/cab}/text-corpus")
      .fallback(std::string());
  s.add("test_fraction", Type::number, "fraction of the documents held out as the test split").fallback(0.01).min(0.0)
      .max(0.5);
  s.add("seq_len", Type::integer, "tokens per example (inputs; the targets are the next seq_len tokens)")
      .fallback(std::int64_t{256}).min(1);
}

std::shared_ptr<cab::Component> create(const cab::config::Section& o) {
  TextCorpusOptions options;
  options.root = o.string("root");
  options.extensions = o.strings("extensions");
  options.tokenizer = o.string("tokenizer");
  options.vocab_size = o.integer("vocab_size");
  options.model_type = o.string("model_type");
  options.character_coverage = o.number("character_coverage");
  options.byte_fallback = o.boolean("byte_fallback");
  options.max_sentences = o.integer("max_sentences");
  options.cache = o.string("cache");
  options.test_fraction = o.number("test_fraction");
  if (options.extensions.empty())
    throw cab::ConfigError(fmt::format("{}: text-corpus: extensions is empty; expected file name endings such as "
                                       "[\".txt\", \".rst\"]",
                                       o.location("extensions").str()));
  return std::make_shared<TextCorpus>(options, o.integer("seq_len"));
}

}  // namespace

CAB_PLUGIN("dataset-text-corpus", "1.0.0",
           CAB_FACTORY(dataset, "text-corpus",
                       "a folder of UTF-8 text, SentencePiece-tokenized into cached shards, with held-out documents",
                       describe, create))
