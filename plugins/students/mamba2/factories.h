// The factories of the student-mamba2 plugin library (registered together in plugin.cpp).
#pragma once

#include <memory>

#include <cab/plugin/component.h>

namespace cab::config {
class Schema;
class Section;
}  // namespace cab::config

namespace cab::mamba2 {

void describe_mamba2(cab::config::Schema& schema);
std::shared_ptr<cab::Component> create_mamba2(const cab::config::Section& options);

void describe_phi_mamba(cab::config::Schema& schema);
std::shared_ptr<cab::Component> create_phi_mamba(const cab::config::Section& options);

}  // namespace cab::mamba2
