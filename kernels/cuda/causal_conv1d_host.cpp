// Host side of the CUDA causal conv1d (causal_conv1d.cuh): the autograd function over its two kernels.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/autograd.h>

#include <optional>

#include "causal_conv1d.cuh"
#include "conv_cuda.h"

namespace cab::kernels::detail {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

cuda::ScanDtype conv_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::ScanDtype::f32;
    case at::kHalf: return cuda::ScanDtype::f16;
    case at::kBFloat16: return cuda::ScanDtype::bf16;
    default: TORCH_CHECK(false, "causal_conv1d: x must be float32, float16 or bfloat16, got ", x.scalar_type());
  }
}

cuda::Strides strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

/// The parameters shared by both passes; w32, b32 hold the fp32 weights they point to.
cuda::ConvParams params(const at::Tensor& x, const at::Tensor& w32, const at::Tensor& b32, bool reverse, bool silu) {
  cuda::ConvParams p;
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.len = x.size(2);
  p.K = static_cast<int>(w32.size(1));
  p.segment = cuda::plan_conv(p.batch, p.dim, p.len, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  p.reverse = reverse;
  p.silu = silu;
  p.x = x.data_ptr();
  p.x_st = strides(x);
  p.w = w32.data_ptr<float>();
  p.bias = b32.defined() ? b32.data_ptr<float>() : nullptr;
  return p;
}

/// [batch, L, dim] memory seen as [batch, dim, L].
at::Tensor time_major_like(const at::Tensor& x) {
  return at::empty({x.size(0), x.size(2), x.size(1)}, x.options()).transpose(1, 2);
}

class CausalConvFunction : public torch::autograd::Function<CausalConvFunction> {
 public:
  // bias is optional: an undefined tensor cannot be an autograd input.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias_opt, bool reverse, bool silu) {
    const at::Tensor bias = bias_opt.value_or(at::Tensor());
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t K = weight.size(-1);
    const at::Tensor w32 = weight.reshape({weight.size(0), K}).to(at::kFloat).contiguous();
    const at::Tensor b32 = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
    at::Tensor out = time_major_like(x);
    if (out.numel() > 0) {
      cuda::ConvParams p = params(x, w32, b32, reverse, silu);
      p.out = out.data_ptr();
      const cudaError_t err = cuda::causal_conv1d_forward(p, conv_dtype(x), at::cuda::getCurrentCUDAStream());
      TORCH_CHECK(err == cudaSuccess, "causal_conv1d: forward launch failed: ", cudaGetErrorString(err));
    }
    ctx->save_for_backward({x, w32, b32});
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["weight_sizes"] = weight.sizes().vec();
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.defined() ? bias.scalar_type() : at::kFloat);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w32 = saved[1], &b32 = saved[2];
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor dout = grads[0].defined() ? grads[0].to(x.scalar_type()) : at::zeros_like(x);
    at::Tensor dx = time_major_like(x);
    at::Tensor dw = at::zeros_like(w32);
    at::Tensor db = b32.defined() ? at::zeros_like(b32) : at::Tensor();
    if (x.numel() > 0) {
      cuda::ConvParams p = params(x, w32, b32, ctx->saved_data["reverse"].toBool(), ctx->saved_data["silu"].toBool());
      p.dout = dout.data_ptr();
      p.dout_st = strides(dout);
      p.dx = dx.data_ptr();
      p.dw = dw.data_ptr<float>();
      p.dbias = db.defined() ? db.data_ptr<float>() : nullptr;
      const cudaError_t err = cuda::causal_conv1d_backward(p, conv_dtype(x), at::cuda::getCurrentCUDAStream());
      TORCH_CHECK(err == cudaSuccess, "causal_conv1d: backward launch failed: ", cudaGetErrorString(err));
    }
    const auto weight_dtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    dw = dw.reshape(ctx->saved_data["weight_sizes"].toIntVector()).to(weight_dtype);
    if (db.defined()) db = db.to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));
    return {dx, dw, db, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool reverse,
                              bool silu) {
  conv_dtype(x);  // a clear error for other dtypes
  TORCH_CHECK(x.size(0) <= 65535, "causal_conv1d: batch ", x.size(0), " is more than the CUDA kernels take (65535)");
  return CausalConvFunction::apply(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, reverse,
                                   silu);
}

}  // namespace cab::kernels::detail
