// The `text-corpus` dataset on a small corpus written by the test: a tokenizer trained by cab, next-token
// windows, the held-out split by document, the cache (reuse, keying, a loaded tokenizer) and the errors.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "cab/config/section.h"
#include "cab/plugin/objective.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::Split;
using cab::plugin::Kind;
namespace fs = std::filesystem;

namespace {

const char* const kWords[] = {
    "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
    "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all",
    "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their",
    "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would",
    "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way",
    "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long",
    "down", "day", "did", "get", "come", "made", "may", "part", "module", "function", "returns", "value", "list",
    "string", "object", "class", "method", "argument", "naïve", "café", "résumé"};

/// A document of English-like sentences, starting with a marker line "[doc-NN]" that identifies it.
std::string document(int n, std::mt19937& rng) {
  std::string text = "[doc-" + std::to_string(100 + n) + "]\n";
  const int paragraphs = 3 + static_cast<int>(rng() % 4);
  for (int p = 0; p < paragraphs; ++p) {
    const int sentences = 4 + static_cast<int>(rng() % 6);
    for (int s = 0; s < sentences; ++s) {
      const int words = 5 + static_cast<int>(rng() % 10);
      for (int w = 0; w < words; ++w) {
        std::string word = kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
        if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
        text += (w ? " " : "") + word;
      }
      text += (s % 3 == 2) ? ".\n" : ". ";
    }
    text += "\n\n";
  }
  return text;
}

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TextCorpusTest : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
    corpus_ = dir_ / "corpus";
    cache_ = dir_ / "cache";
    std::mt19937 rng(1234);
    for (int i = 0; i < 20; ++i) {
      const fs::path file = corpus_ / (i < 10 ? "library" : "tutorial") / ("doc" + std::to_string(i) + ".txt");
      fs::create_directories(file.parent_path());
      texts_[100 + i] = document(i, rng);
      std::ofstream(file, std::ios::binary) << texts_[100 + i];
    }
    texts_[120] = document(20, rng);
    std::ofstream(corpus_ / "index.rst", std::ios::binary) << texts_[120];
    std::ofstream(corpus_ / "README.md") << "not a document: .md is not among the extensions\n";
    std::ofstream(corpus_ / ".hidden.txt") << "[doc-999] hidden files are skipped\n";
  }
  cab::config::Section options() const {
    cab::config::Section o;
    o.set("root", corpus_.string())
        .set("extensions", std::vector<std::string>{".txt", ".rst"})
        .set("vocab_size", std::int64_t{400})
        .set("seq_len", std::int64_t{32})
        .set("test_fraction", 0.2)
        .set("cache", cache_.string());
    return o;
  }
  std::shared_ptr<cab::Dataset> make(const cab::config::Section& o) {
    return registry_.create_as<cab::Dataset>(Kind::dataset, "text-corpus", o);
  }
  std::string create_error(const cab::config::Section& o) {
    try {
      make(o);
    } catch (const cab::Error& e) {
      return e.what();
    }
    return "";
  }
  /// The cache entries (folders named by their key).
  std::vector<fs::path> entries() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(cache_))
      if (e.is_directory()) out.push_back(e.path());
    return out;
  }
  fs::path corpus_, cache_;
  std::map<int, std::string> texts_;  // by marker number
  cab::plugin::Registry registry_;
};

/// The token stream of a split, rebuilt from its windows: every window's inputs, then the last target.
std::vector<int> stream(const cab::Dataset& d, Split split) {
  std::vector<int64_t> all(static_cast<std::size_t>(d.size(split)));
  std::iota(all.begin(), all.end(), 0);
  if (all.empty()) return {};
  const cab::Batch b = d.get(split, all);
  const at::Tensor tokens = at::cat({b.inputs.reshape({-1}), b.targets[-1].narrow(0, b.targets.size(1) - 1, 1)});
  return {tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + tokens.numel()};
}

/// The document markers found in a decoded text.
std::set<int> markers(const std::string& text) {
  std::set<int> out;
  for (std::size_t at = text.find("[doc-"); at != std::string::npos; at = text.find("[doc-", at + 1))
    out.insert(std::stoi(text.substr(at + 5, 3)));
  return out;
}

}  // namespace

TEST_F(TextCorpusTest, TrainsATokenizerAndServesNextTokenWindows) {
  const auto start = std::chrono::steady_clock::now();
  auto data = make(options());
  std::cout << "text-corpus: tokenizer trained and 21 documents tokenized in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";
  EXPECT_EQ(data->num_classes(), 400);
  EXPECT_TRUE(data->labels(Split::train).empty());
  EXPECT_TRUE(data->labels(Split::test).empty());

  // One cache entry: tokenizer, 16-bit shards whose sizes give the split sizes.
  const auto dirs = entries();
  ASSERT_EQ(dirs.size(), 1u);
  const auto meta = nlohmann::json::parse(read_bytes(dirs[0] / "meta.json"));
  EXPECT_EQ(meta["bytes_per_token"], 2);
  EXPECT_EQ(meta["train"]["documents"], 16);
  EXPECT_EQ(meta["test"]["documents"], 5);  // ⌈0.2 · 21⌉
  const int64_t train_tokens = meta["train"]["tokens"], test_tokens = meta["test"]["tokens"];
  EXPECT_EQ(static_cast<int64_t>(fs::file_size(dirs[0] / "train.bin")), 2 * train_tokens);
  EXPECT_EQ(data->size(Split::train), (train_tokens - 1) / 32);
  EXPECT_EQ(data->size(Split::test), (test_tokens - 1) / 32);
  EXPECT_GT(data->size(Split::test), 10);

  // Windows: targets are the inputs shifted by one token, and window i + 1 starts where window i's targets end.
  const cab::Batch b = data->get(Split::train, {0, 1, 7});
  EXPECT_EQ(b.inputs.sizes(), (at::IntArrayRef{3, 32}));
  EXPECT_EQ(b.targets.sizes(), (at::IntArrayRef{3, 32}));
  EXPECT_EQ(b.inputs.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(b.targets.narrow(1, 0, 31), b.inputs.narrow(1, 1, 31)));
  EXPECT_EQ(b.inputs[1][0].item<int64_t>(), b.targets[0][31].item<int64_t>());
  EXPECT_GE(b.inputs.min().item<int64_t>(), 0);
  EXPECT_LT(b.inputs.max().item<int64_t>(), 400);

  // Decoding the streams with the cached tokenizer gives the documents back, each in exactly one split.
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load((dirs[0] / "tokenizer.model").string()).ok());
  std::string train_text, test_text;
  ASSERT_TRUE(sp.Decode(stream(*data, Split::train), &train_text).ok());
  ASSERT_TRUE(sp.Decode(stream(*data, Split::test), &test_text).ok());
  const std::set<int> in_train = markers(train_text), in_test = markers(test_text);
  EXPECT_EQ(in_train.size(), 16u);
  EXPECT_EQ(in_test.size(), 5u);
  for (int m : in_test) EXPECT_EQ(in_train.count(m), 0u) << "document " << m << " is in both splits";
  EXPECT_EQ(in_train.count(999), 0u) << "hidden files are skipped";
  std::set<std::string> held_out(meta["test"]["files"].begin(), meta["test"]["files"].end());
  EXPECT_EQ(held_out.size(), 5u);
  // The first training document (in name order) comes back exactly, newlines and accents included.
  const int first = *markers(train_text.substr(0, 12)).begin();
  EXPECT_EQ(train_text.substr(0, texts_[first].size()), texts_[first]);

  // The split is a function of the file names: a fresh cache holds out the same documents.
  cab::config::Section again = options();
  again.set("cache", (dir_ / "cache2").string());
  std::string again_text;
  ASSERT_TRUE(sp.Decode(stream(*make(again), Split::test), &again_text).ok());
  EXPECT_EQ(markers(again_text), in_test);
}

TEST_F(TextCorpusTest, LaterRunsMapTheCacheAndALoadedTokenizerGivesTheSameTokens) {
  auto first = make(options());
  const auto t0 = std::chrono::steady_clock::now();
  auto second = make(options());
  std::cout << "text-corpus: cached entry opened in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  ASSERT_EQ(entries().size(), 1u);
  const auto all = [](const cab::Dataset& d) {
    std::vector<int64_t> idx(static_cast<std::size_t>(d.size(Split::train)));
    std::iota(idx.begin(), idx.end(), 0);
    return d.get(Split::train, idx).inputs;
  };
  EXPECT_TRUE(at::equal(all(*first), all(*second)));

  // The trained model, given as dataset.tokenizer: another entry (keyed by the model's bytes), same tokens.
  cab::config::Section o = options();
  o.set("tokenizer", (entries()[0] / "tokenizer.model").string());
  auto loaded = make(o);
  EXPECT_EQ(entries().size(), 2u);
  EXPECT_TRUE(at::equal(all(*first), all(*loaded)));

  // A smaller window length reads the same shards.
  o = options();
  o.set("seq_len", std::int64_t{8});
  auto short_windows = make(o);
  EXPECT_EQ(entries().size(), 2u);
  EXPECT_TRUE(at::equal(short_windows->get(Split::train, {4}).inputs[0],
                        first->get(Split::train, {1}).inputs[0].narrow(0, 0, 8)));
}

TEST_F(TextCorpusTest, ChangedFilesOrOptionsMakeANewEntry) {
  auto before = make(options());
  std::ofstream(corpus_ / "library" / "doc3.txt", std::ios::app) << "One more sentence about the module.\n";
  auto after = make(options());
  EXPECT_EQ(entries().size(), 2u);
  cab::config::Section o = options();
  o.set("model_type", std::string("unigram"));
  auto unigram = make(o);
  EXPECT_EQ(entries().size(), 3u);
  EXPECT_EQ(unigram->num_classes(), 400);
  o.set("test_fraction", 0.0);
  EXPECT_EQ(make(o)->size(Split::test), 0);
  EXPECT_EQ(entries().size(), 4u);
}

TEST_F(TextCorpusTest, ErrorsNameTheFileOrOption) {
  cab::config::Section o = options();
  o.set("root", (dir_ / "absent").string());
  std::string message = create_error(o);
  EXPECT_NE(message.find("corpus folder " + (dir_ / "absent").string() + " does not exist"), std::string::npos)
      << message;

  o = options();
  o.set("extensions", std::vector<std::string>{".tex"});
  message = create_error(o);
  EXPECT_NE(message.find("holds no files ending in .tex"), std::string::npos) << message;

  o = options();
  o.set("seq_len", std::int64_t{1'000'000});
  message = create_error(o);
  EXPECT_NE(message.find("fewer than seq_len + 1 = 1000001"), std::string::npos) << message;

  o = options();
  o.set("vocab_size", std::int64_t{100000});
  message = create_error(o);
  EXPECT_NE(message.find("training the SentencePiece tokenizer"), std::string::npos) << message;
  EXPECT_NE(message.find("lower dataset.vocab_size"), std::string::npos) << message;

  o = options();
  o.set("tokenizer", (dir_ / "absent.model").string());
  message = create_error(o);
  EXPECT_NE(message.find("tokenizer " + (dir_ / "absent.model").string() + " does not exist"), std::string::npos)
      << message;

  std::ofstream(corpus_ / "latin1.txt", std::ios::binary) << "caf\xe9 au lait\n";
  message = create_error(options());
  EXPECT_NE(message.find((corpus_ / "latin1.txt").string() + " is not UTF-8 (byte 0xe9 at offset 3)"),
            std::string::npos)
      << message;

  // Failed builds leave no partial entries behind: only the complete entry of the seq_len case (its shards
  // are fine; the windows are too long) and lock files.
  for (const auto& e : fs::directory_iterator(cache_)) {
    EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << e.path();
    if (e.is_directory()) {
      EXPECT_TRUE(fs::exists(e.path() / "meta.json")) << e.path();
    }
  }
  EXPECT_EQ(entries().size(), 1u);
}

TEST_F(TextCorpusTest, PythonDocumentationWhenInstalled) {
  // Debian's python3.11-doc (reStructuredText sources as *.txt), or any folder named by CAB_TEST_TEXT_CORPUS.
  const char* env = std::getenv("CAB_TEST_TEXT_CORPUS");
  const fs::path root = env ? fs::path(env) : fs::path("/usr/share/doc/python3.11/html/_sources");
  if (!fs::is_directory(root)) GTEST_SKIP() << "no " << root << " (apt-get install python3.11-doc)";
  cab::config::Section o;
  o.set("root", root.string()).set("cache", cache_.string());  // defaults: BPE, 8000 pieces, 256-token windows
  auto start = std::chrono::steady_clock::now();
  auto data = make(o);
  const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  start = std::chrono::steady_clock::now();
  auto again = make(o);
  const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto meta = nlohmann::json::parse(read_bytes(entries().at(0) / "meta.json"));
  std::cout << fmt::format("{}: {} + {} documents, {} + {} tokens; tokenizer trained and corpus tokenized in {:.1f} s, "
                           "cache opened in {:.4f} s\n",
                           root.string(), meta["train"]["documents"].get<int64_t>(),
                           meta["test"]["documents"].get<int64_t>(), meta["train"]["tokens"].get<int64_t>(),
                           meta["test"]["tokens"].get<int64_t>(), build_s, open_s);
  EXPECT_EQ(data->num_classes(), 8000);
  EXPECT_GT(data->size(Split::test), 0);
  EXPECT_EQ(data->size(Split::train), again->size(Split::train));
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load((entries().at(0) / "tokenizer.model").string()).ok());
  const at::Tensor window = data->get(Split::test, {0}).inputs[0];
  std::string text;
  ASSERT_TRUE(sp.Decode(std::vector<int>(window.data_ptr<int64_t>(), window.data_ptr<int64_t>() + 256), &text).ok());
  std::cout << "first held-out window: " << text.substr(0, 200) << "…\n";
  // Real English in a tokenizer of 8000 pieces: about 4 bytes per token.
  const double bytes_per_token = static_cast<double>(text.size()) / 256;
  EXPECT_GT(bytes_per_token, 2.5);
}
