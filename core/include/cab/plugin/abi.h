// The cab plugin ABI: one extern "C" entry point per shared library returning a versioned description.
//
// A plugin library exports exactly one symbol, `cab_plugin_info`, returning a pointer to a static
// CabPluginInfo. The host reads `api_version` first (it is the first member in every version), then
// compares `abi_tag` with its own, and only then touches the factories. Bump kCabPluginApiVersion
// whenever CabPluginInfo, cab::plugin::Factory, CreateFn or DescribeFn change layout or meaning.
// The ABI tag (compiler, C++ library ABI, LibTorch and CUDA versions) catches plugins built against a
// different toolchain, whose C++ objects (tensors, strings, shared_ptr) cannot cross the boundary.
//
// A complete plugin (build it with cab_add_plugin(my-bridge SOURCES my_bridge.cpp)):
//
//   #include <cab/plugin/abi.h>
//   #include <cab/plugin/bridge.h>
//   class Twice : public cab::Bridge { public: at::Tensor forward(const at::Tensor& x) override { return 2 * x; } };
//   CAB_PLUGIN("my-bridges", "1.0.0", CAB_FACTORY(bridge, "twice", "multiplies by two", nullptr,
//              [](const cab::config::Section&) -> std::shared_ptr<cab::Component> { return std::make_shared<Twice>(); }))
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <torch/headeronly/version.h>

#include "cab/plugin/component.h"
#include "cab/plugin/kind.h"

namespace cab::config {
class Schema;
class Section;
}  // namespace cab::config

/// The plugin API version this header describes (2: Student::forward_layer / layer_modules, Method::lr_scale,
/// LossTerms::backpropagated, MethodContext::record; 3: Bridge::forward_group; 4: Bridge::affine_group).
inline constexpr std::uint32_t kCabPluginApiVersion = 4;

#define CAB_ABI_STR_(x) #x
#define CAB_ABI_STR(x) CAB_ABI_STR_(x)

#if defined(__clang__)
#define CAB_ABI_COMPILER "clang-" CAB_ABI_STR(__clang_major__)
#elif defined(__GNUC__)
#define CAB_ABI_COMPILER "gcc-" CAB_ABI_STR(__GNUC__)
#else
#error "cab plugins are built with GCC or Clang"
#endif

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define CAB_ABI_STDLIB "libstdc++-cxx11abi-" CAB_ABI_STR(_GLIBCXX_USE_CXX11_ABI)
#elif defined(_LIBCPP_VERSION)
#define CAB_ABI_STDLIB "libc++"
#else
#define CAB_ABI_STDLIB "unknown-stdlib"
#endif

// CAB_ABI_CUDA_VERSION is defined by cab_add_plugin() (and for libcab_core) from the build's LibTorch.
#ifndef CAB_ABI_CUDA_VERSION
#define CAB_ABI_CUDA_VERSION "unset"
#endif

/// The ABI tag of the translation unit that expands it, e.g. "gcc-12;libstdc++-cxx11abi-1;torch-2.11.0;cuda-13.0".
#define CAB_ABI_TAG                                                                                   \
  CAB_ABI_COMPILER ";" CAB_ABI_STDLIB ";torch-" CAB_ABI_STR(TORCH_VERSION_MAJOR) "." CAB_ABI_STR(    \
      TORCH_VERSION_MINOR) "." CAB_ABI_STR(TORCH_VERSION_PATCH) ";cuda-" CAB_ABI_CUDA_VERSION

namespace cab::plugin {

/// Creates an object from validated options (defaults filled in, runtime facts set by the host).
using CreateFn = std::shared_ptr<Component> (*)(const config::Section& options);
/// Declares the options the factory accepts; nullptr when it takes none.
using DescribeFn = void (*)(config::Schema& schema);

/// One named factory of a plugin library.
struct Factory {
  Kind kind;
  const char* name;     ///< kebab-case, unique per kind across all loaded plugins
  const char* summary;  ///< one line for --list-plugins
  DescribeFn describe;
  CreateFn create;
};

}  // namespace cab::plugin

extern "C" {
/// What `cab_plugin_info()` returns. `api_version` stays the first member in every version.
struct CabPluginInfo {
  std::uint32_t api_version;
  const char* abi_tag;
  const char* name;     ///< the library's plugin name
  const char* version;  ///< the library's own version
  const cab::plugin::Factory* factories;
  std::size_t factory_count;
};
}

/// Name of the entry point every plugin library exports.
#define CAB_PLUGIN_ENTRY_POINT "cab_plugin_info"

/// Defines the entry point of a plugin library with the given factories (CAB_FACTORY(...), ...).
#define CAB_PLUGIN(plugin_name, plugin_version, ...)                                                    \
  extern "C" __attribute__((visibility("default"))) const CabPluginInfo* cab_plugin_info() {         \
    static const ::cab::plugin::Factory factories[] = {__VA_ARGS__};                                  \
    static const CabPluginInfo info{kCabPluginApiVersion, CAB_ABI_TAG, plugin_name, plugin_version,   \
                                    factories, sizeof(factories) / sizeof(factories[0])};             \
    return &info;                                                                                     \
  }

/// One factory entry: CAB_FACTORY(bridge, "mlp", "summary", describe_fn, create_fn).
#define CAB_FACTORY(kind, name, summary, describe, create) \
  ::cab::plugin::Factory { ::cab::plugin::Kind::kind, name, summary, describe, create }
