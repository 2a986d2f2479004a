# Build helpers used inside the cab tree: compiler settings per target, ccache, precompiled headers, tests.
include_guard(GLOBAL)
include("${CMAKE_CURRENT_LIST_DIR}/CabPlugin.cmake")

# Use ccache for every language when it is installed (the launcher is a per-target default, not a flag).
function(cab_enable_ccache)
  find_program(CAB_CCACHE ccache)
  if(CAB_CCACHE)
    foreach(lang CXX CUDA)
      set(CMAKE_${lang}_COMPILER_LAUNCHER "${CAB_CCACHE}" PARENT_SCOPE)
    endforeach()
    message(STATUS "cab: using ccache (${CAB_CCACHE})")
  endif()
endfunction()

# The heavy LibTorch headers are compiled once, into one precompiled header that every torch-using
# C++ target of the tree reuses (all of them share cab_target_defaults, so the flags match).
function(cab_use_torch_pch target)
  if(NOT TARGET cab_torch_pch)
    add_library(cab_torch_pch OBJECT "${PROJECT_SOURCE_DIR}/cmake/pch_anchor.cpp")
    cab_target_defaults(cab_torch_pch)
    target_link_libraries(cab_torch_pch PRIVATE torch fmt::fmt-header-only)
    target_precompile_headers(cab_torch_pch PRIVATE
      <ATen/ATen.h> <torch/nn/module.h> <torch/nn/modules/linear.h> <torch/types.h>
      <fmt/format.h> <string> <vector> <memory> <map>)
  endif()
  target_precompile_headers(${target} REUSE_FROM cab_torch_pch)
endfunction()

# cab_add_test(NAME SOURCES file... [LINK target...] [LABELS label...] [GPU])
# One GoogleTest executable registered with CTest; GPU tests skip themselves without a device.
function(cab_add_test name)
  cmake_parse_arguments(ARG "TORCH" "" "SOURCES;LINK;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  cab_target_defaults(${name})
  target_link_libraries(${name} PRIVATE GTest::gtest GTest::gtest_main ${ARG_LINK})
  if(ARG_TORCH)
    # The shared PCH is compiled -fPIC (for the libraries); compile the test the same way to reuse it.
    set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${name} PRIVATE -fPIC)
    cab_use_torch_pch(${name})
  endif()
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/tests/support")
  target_compile_definitions(${name} PRIVATE
    CAB_TEST_BUILD_DIR="${PROJECT_BINARY_DIR}"
    CAB_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    CAB_TEST_PLUGIN_DIR="${CAB_PLUGIN_BUILD_DIR}")
  _cab_abi_cuda_version(cuda_version)
  target_compile_definitions(${name} PRIVATE CAB_ABI_CUDA_VERSION="${cuda_version}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests")
  add_test(NAME ${name} COMMAND ${name} --gtest_color=no)
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

# A thin command-line tool: one folder, one main.cpp, linking the library.
function(cab_add_tool name)
  add_executable(${name} main.cpp)
  cab_target_defaults(${name})
  target_link_libraries(${name} PRIVATE cab::core Boost::program_options fmt::fmt-header-only ${ARGN})
  set_target_properties(${name} PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
  install(TARGETS ${name} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()
