// Symbol visibility for libcab_core: everything is hidden unless marked CAB_API.
#pragma once

#if defined(_WIN32)
#error "cab supports Linux only"
#endif
#define CAB_API __attribute__((visibility("default")))
