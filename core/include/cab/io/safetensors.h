// safetensors files: memory-mapped reading with full header validation, atomic writing, and loading into a
// LibTorch module that checks every name, shape and dtype before it copies anything.
//
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin,
// end]}, "__metadata__": {str: str}}, then the data buffer (offsets relative to its start).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cab/export.h"

namespace torch::nn {
class Module;
}

namespace cab::io {

struct CAB_API TensorInfo {
  std::string dtype;  ///< "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::uint64_t begin = 0, end = 0;  ///< byte offsets in the data buffer
};

class CAB_API SafeTensorsFile {
 public:
  /// Maps and validates the file; throws cab::Error naming it for: missing file, truncated file, header
  /// length beyond the file, invalid header JSON, unsupported dtype, offsets that do not match shape × dtype
  /// or leave the file.
  explicit SafeTensorsFile(const std::filesystem::path& file);
  ~SafeTensorsFile();

  const std::filesystem::path& path() const { return path_; }
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// A read-only CPU tensor viewing the mapped bytes (it keeps the mapping alive). clone() it to own it.
  at::Tensor get(const std::string& name) const;

 private:
  struct Mapping;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

/// Writes tensors (any device, contiguous or not) to a safetensors file: to a temporary file, then renamed.
CAB_API void save_safetensors(const std::filesystem::path& file,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

/// How checkpoint names map to a module's parameter names.
struct CAB_API LoadOptions {
  /// Checkpoint-name prefixes rewritten before matching: {"backbone.embedding.", "backbone.embeddings."}.
  std::vector<std::pair<std::string, std::string>> rename_prefixes;
  /// Module names that may be absent from the checkpoint (e.g. a tied lm_head.weight).
  std::vector<std::string> optional;
  /// Checkpoint names to ignore (e.g. rotary caches).
  std::vector<std::string> ignore;
};

/// Copies every checkpoint tensor into the module's parameter or buffer of the same name (converted to its
/// dtype and device). All names and shapes are checked first; on any problem cab::Error lists every missing
/// and unexpected key and each shape mismatch (name, expected, got), and the module is left unchanged.
CAB_API void load_into(torch::nn::Module& module, const SafeTensorsFile& file, const LoadOptions& options = {});

/// The module's parameters and buffers as (name, tensor), for save_safetensors.
CAB_API std::vector<std::pair<std::string, at::Tensor>> state_of(const torch::nn::Module& module);

}  // namespace cab::io
