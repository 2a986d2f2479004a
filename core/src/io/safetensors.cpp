// safetensors reading (mmap + validation), writing (atomic), and checked loading into modules.
#include "cab/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "cab/util/error.h"

namespace cab::io {

namespace {

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  std::size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4},   {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},     {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}
const DtypeEntry* find_dtype(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

std::string shape_str(at::IntArrayRef shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace

struct SafeTensorsFile::Mapping {
  void* data = MAP_FAILED;
  std::size_t size = 0;
  ~Mapping() {
    if (data != MAP_FAILED && size) munmap(data, size);
  }
};

SafeTensorsFile::SafeTensorsFile(const std::filesystem::path& file) : path_(file), mapping_(std::make_shared<Mapping>()) {
  const std::string where = "safetensors file '" + file.string() + "'";
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("cannot open {}: {}", where, std::strerror(errno)));
  struct stat st {};
  fstat(fd, &st);
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(fmt::format("{} is truncated: {} bytes, but the header length alone takes 8", where, size));
  }
  mapping_->data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_->data == MAP_FAILED) throw Error(fmt::format("cannot map {}: {}", where, std::strerror(errno)));
  mapping_->size = size;
  const auto* bytes = static_cast<const unsigned char*>(mapping_->data);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8) {
    throw Error(fmt::format("{}: header length {} goes beyond the file ({} bytes): the file is truncated or not "
                            "safetensors",
                            where, header_len, size));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: invalid header JSON: {}", where, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: the header is not a JSON object", where));
  const std::uint64_t data_size = size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object())
        for (const auto& [k, v] : entry.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    try {
      TensorInfo info;
      info.dtype = entry.at("dtype").get<std::string>();
      info.shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<std::uint64_t>>();
      if (offsets.size() != 2) throw Error("data_offsets must be [begin, end]");
      info.begin = offsets[0];
      info.end = offsets[1];
      const DtypeEntry* dtype = find_dtype(info.dtype);
      if (!dtype) {
        throw Error(fmt::format("unsupported dtype '{}' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                                info.dtype));
      }
      std::uint64_t elements = 1;
      for (auto d : info.shape) {
        if (d < 0) throw Error(fmt::format("negative dimension in shape {}", shape_str(info.shape)));
        elements *= static_cast<std::uint64_t>(d);
      }
      if (info.end < info.begin || info.end > data_size) {
        throw Error(fmt::format("data_offsets [{}, {}] leave the data buffer ({} bytes): truncated file?", info.begin,
                                info.end, data_size));
      }
      if (info.end - info.begin != elements * dtype->size) {
        throw Error(fmt::format("data_offsets span {} bytes, but shape {} of {} needs {}", info.end - info.begin,
                                shape_str(info.shape), info.dtype, elements * dtype->size));
      }
      infos_.emplace(name, std::move(info));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: tensor '{}': malformed header entry: {}", where, name, e.what()));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: tensor '{}': {}", where, name, e.what()));
    }
  }
}

SafeTensorsFile::~SafeTensorsFile() = default;

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, info] : infos_) out.push_back(name);
  return out;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) throw Error(fmt::format("'{}' has no tensor '{}'", path_.string(), name));
  return it->second;
}

at::Tensor SafeTensorsFile::get(const std::string& name) const {
  const TensorInfo& i = info(name);
  auto* bytes = static_cast<unsigned char*>(mapping_->data);
  std::uint64_t header_len = 0;
  for (int b = 7; b >= 0; --b) header_len = (header_len << 8) | bytes[b];
  void* data = bytes + 8 + header_len + i.begin;
  auto keep = mapping_;
  return at::from_blob(data, i.shape, [keep](void*) {}, at::TensorOptions().dtype(find_dtype(i.dtype)->type));
}

void save_safetensors(const std::filesystem::path& file, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  std::uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    if (!seen.insert(name).second) throw Error(fmt::format("save_safetensors('{}'): '{}' twice", file.string(), name));
    const DtypeEntry* dtype = find_dtype(tensor.scalar_type());
    if (!dtype) {
      throw Error(fmt::format("save_safetensors('{}'): '{}' has dtype {}, which safetensors cannot hold here",
                              file.string(), name, c10::toString(tensor.scalar_type())));
    }
    at::Tensor blob = tensor.detach().to(at::kCPU).contiguous();
    const std::uint64_t bytes = blob.numel() * dtype->size;
    header[name] = {{"dtype", dtype->name}, {"shape", blob.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(blob);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8) text += ' ';  // keep the data buffer 8-byte aligned
  const auto tmp = std::filesystem::path(file.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(fmt::format("cannot write '{}'", tmp.string()));
    const std::uint64_t n = text.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& blob : blobs)
      out.write(static_cast<const char*>(blob.data_ptr()), static_cast<std::streamsize>(blob.nbytes()));
    if (!out) throw Error(fmt::format("writing '{}' failed (disk full?)", tmp.string()));
  }
  std::filesystem::rename(tmp, file);
}

std::vector<std::pair<std::string, at::Tensor>> state_of(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

void load_into(torch::nn::Module& module, const SafeTensorsFile& file, const LoadOptions& options) {
  std::map<std::string, at::Tensor> targets;
  for (auto& [name, tensor] : state_of(module)) targets.emplace(name, tensor);
  std::map<std::string, std::string> source_of;  // module name -> checkpoint name
  std::vector<std::string> unexpected, mismatched;
  for (const auto& stored : file.names()) {
    if (std::find(options.ignore.begin(), options.ignore.end(), stored) != options.ignore.end()) continue;
    std::string name = stored;
    for (const auto& [from, to] : options.rename_prefixes)
      if (name.rfind(from, 0) == 0) {
        name = to + name.substr(from.size());
        break;
      }
    auto it = targets.find(name);
    if (it == targets.end()) {
      unexpected.push_back(stored);
      continue;
    }
    const auto& info = file.info(stored);
    if (at::IntArrayRef(info.shape) != it->second.sizes()) {
      mismatched.push_back(fmt::format("{}: expected {}, got {}", stored, shape_str(it->second.sizes()),
                                       shape_str(info.shape)));
      continue;
    }
    source_of[name] = stored;
  }
  std::vector<std::string> missing;
  for (const auto& [name, tensor] : targets) {
    if (source_of.count(name)) continue;
    if (std::find(options.optional.begin(), options.optional.end(), name) != options.optional.end()) continue;
    bool shape_problem = false;
    for (const auto& m : mismatched) shape_problem |= m.rfind(name + ":", 0) == 0;
    if (!shape_problem) missing.push_back(name);
  }
  if (!unexpected.empty() || !missing.empty() || !mismatched.empty()) {
    std::string message = fmt::format("cannot load '{}' into the model; nothing was loaded.", file.path().string());
    auto list = [](const std::vector<std::string>& items) {
      std::string s;
      for (const auto& i : items) s += "\n  " + i;
      return s;
    };
    if (!mismatched.empty()) message += "\nshape mismatches:" + list(mismatched);
    if (!missing.empty()) message += "\nmissing keys (in the model, not in the file):" + list(missing);
    if (!unexpected.empty()) message += "\nunexpected keys (in the file, not in the model):" + list(unexpected);
    throw Error(message);
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, stored] : source_of) {
    at::Tensor& target = targets.at(name);
    target.copy_(file.get(stored).to(target.scalar_type()));
  }
}

}  // namespace cab::io
