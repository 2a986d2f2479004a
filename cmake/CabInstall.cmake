# Installs the SDK: libraries, headers, tools, plugins and the CMake package (find_package(cab)).
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(CAB_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/cab")
install(TARGETS cab_core cab_kernels EXPORT cabTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# cab/report/ belongs to cab-report's static library, which is not part of the SDK.
install(DIRECTORY core/include/cab kernels/include/cab DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  PATTERN report EXCLUDE)
# cab-report's table and figure definitions (found next to the installed binary: ../share/cab/tables).
install(DIRECTORY results/tables/ DESTINATION ${CMAKE_INSTALL_DATADIR}/cab/tables
  FILES_MATCHING PATTERN "*.toml" PATTERN "README.md")
install(EXPORT cabTargets NAMESPACE cab:: DESTINATION "${CAB_CMAKE_INSTALL_DIR}")
configure_package_config_file(cmake/cabConfig.cmake.in "${PROJECT_BINARY_DIR}/cabConfig.cmake"
  INSTALL_DESTINATION "${CAB_CMAKE_INSTALL_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/cabConfigVersion.cmake" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/cabConfig.cmake" "${PROJECT_BINARY_DIR}/cabConfigVersion.cmake"
  cmake/CabPlugin.cmake DESTINATION "${CAB_CMAKE_INSTALL_DIR}")
