// Peak GPU memory (MiB) allocated by LibTorch in this process since the last reset; 0 without CUDA.
#pragma once

namespace cab::train {
double peak_memory_mb();
void reset_peak_memory();
}  // namespace cab::train
