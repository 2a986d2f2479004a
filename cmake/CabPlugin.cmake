# cab_add_plugin(): build a cab plugin as a MODULE library — used by cab itself and installed with the SDK
# so that out-of-tree plugins build the same way:
#   find_package(cab REQUIRED)
#   cab_add_plugin(my-bridge SOURCES my_bridge.cpp)
include_guard(GLOBAL)

# Settings every cab target shares: C++20, warnings, hidden visibility, position-independent code.
function(cab_target_defaults target)
  target_compile_features(${target} PRIVATE cxx_std_20)
  set_target_properties(${target} PROPERTIES
    CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON
    INSTALL_RPATH_USE_LINK_PATH ON)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()

# The CUDA part of the plugin ABI tag: the CUDA version of the LibTorch this build links, or "none".
function(_cab_abi_cuda_version out)
  if(TARGET torch_cuda AND DEFINED CUDAToolkit_VERSION_MAJOR)
    set(${out} "${CUDAToolkit_VERSION_MAJOR}.${CUDAToolkit_VERSION_MINOR}" PARENT_SCOPE)
  else()
    set(${out} "none" PARENT_SCOPE)
  endif()
endfunction()

# cab_add_plugin(NAME SOURCES file... [LINK target...] [OUTPUT_DIRECTORY dir] [NO_INSTALL])
# Produces cab-NAME.so exporting only the cab_plugin_info entry point.
function(cab_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LINK" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "cab_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  cab_target_defaults(${name})
  target_link_libraries(${name} PRIVATE cab::core ${ARG_LINK})
  _cab_abi_cuda_version(cuda_version)
  target_compile_definitions(${name} PRIVATE CAB_ABI_CUDA_VERSION="${cuda_version}")
  if(NOT ARG_OUTPUT_DIRECTORY)
    if(DEFINED CAB_PLUGIN_BUILD_DIR)
      set(ARG_OUTPUT_DIRECTORY "${CAB_PLUGIN_BUILD_DIR}")
    else()
      set(ARG_OUTPUT_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}")
    endif()
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "cab-${name}"
    LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}"
    INSTALL_RPATH "$ORIGIN/../..")
  if(COMMAND cab_use_torch_pch)
    cab_use_torch_pch(${name})
  endif()
  if(NOT ARG_NO_INSTALL)
    if(NOT DEFINED CAB_PLUGIN_INSTALL_DIR)
      include(GNUInstallDirs)
      set(CAB_PLUGIN_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cab/plugins")
    endif()
    install(TARGETS ${name} LIBRARY DESTINATION "${CAB_PLUGIN_INSTALL_DIR}")
  endif()
endfunction()
