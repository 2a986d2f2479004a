// cab::kernels::causal_conv1d: LibTorch's conv1d on the CPU, the CUDA kernels (kernels/cuda/causal_conv1d*) on a GPU.
#include "cab/kernels/conv.h"

#include <ATen/ATen.h>

#include "conv_cuda.h"

namespace cab::kernels {

namespace {

void check_conv_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 3, "causal_conv1d: x must be [batch, dim, L], got ", x.sizes());
  const int64_t dim = x.size(1);
  TORCH_CHECK((weight.dim() == 3 && weight.size(1) == 1) || weight.dim() == 2,
              "causal_conv1d: weight must be [dim, 1, K] or [dim, K], got ", weight.sizes());
  TORCH_CHECK(weight.size(0) == dim, "causal_conv1d: weight has ", weight.size(0), " channels, x has ", dim);
  const int64_t K = weight.size(-1);
  TORCH_CHECK(K >= 1 && K <= 8, "causal_conv1d: kernel width ", K, " is not in 1..8");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == dim), "causal_conv1d: bias must be [", dim,
              "], got ", bias.defined() ? bias.sizes() : at::IntArrayRef{});
  TORCH_CHECK(weight.device() == x.device() && (!bias.defined() || bias.device() == x.device()),
              "causal_conv1d: x, weight and bias must be on one device");
}

}  // namespace

at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool reverse,
                         bool silu) {
  check_conv_inputs(x, weight, bias);
#ifdef CAB_KERNELS_WITH_CUDA
  if (x.is_cuda()) return detail::causal_conv1d_cuda(x, weight, bias, reverse, silu);
#endif
  const int64_t dim = x.size(1), L = x.size(2), K = weight.size(-1);
  at::Tensor w = weight.reshape({dim, 1, K});
  if (reverse) w = w.flip(-1);
  const at::Tensor out = at::conv1d(x, w, bias, 1, K - 1, 1, dim).narrow(2, reverse ? K - 1 : 0, L);
  return silu ? at::silu(out) : out;
}

}  // namespace cab::kernels
