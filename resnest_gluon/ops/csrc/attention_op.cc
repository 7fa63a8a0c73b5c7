// resnest_radix_weighted_sum: the tail of a split-attention block in one pass over memory.
//
//   out[b, c] = sum_r attn[b, r*C + c] * x[b, r*C + c]      x: (B, R*C, H, W), attn: (B, R*C[, 1, 1])
//
// MXNet runs it as broadcast_mul + R slice_axis + add_n: four full-size passes that took 27% of a ResNeSt-50
// inference batch on CPU. Built and loaded by resnest_gluon/attention_op.py (MXNet's operator library API).
#include <cstdint>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using Attrs = std::unordered_map<std::string, std::string>;

namespace {

int Radix(const Attrs& attrs) {
  auto it = attrs.find("radix");
  return it == attrs.end() ? 1 : std::stoi(it->second);
}

struct Dims {
  int64_t batch, channels, radix, spatial;  // channels per split (C), radix (R), H * W
};

Dims DimsOf(const MXTensor& x, int radix) {
  int64_t spatial = 1;
  for (size_t i = 2; i < x.shape.size(); ++i) spatial *= x.shape[i];
  return {x.shape[0], x.shape[1] / radix, radix, spatial};
}

MXReturnValue Forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Dims d = DimsOf((*inputs)[0], Radix(attrs));
  const float* x = (*inputs)[0].data<float>();
  const float* attn = (*inputs)[1].data<float>();
  float* out = (*outputs)[0].data<float>();
  const int64_t rc = d.radix * d.channels;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t c = 0; c < d.channels; ++c) {  // each output channel is written once
      float* o = out + (b * d.channels + c) * d.spatial;
      const float* x0 = x + (b * rc + c) * d.spatial;
      const float a0 = attn[b * rc + c];
#pragma omp simd
      for (int64_t i = 0; i < d.spatial; ++i) o[i] = a0 * x0[i];
      for (int64_t r = 1; r < d.radix; ++r) {
        const float* xr = x + (b * rc + r * d.channels + c) * d.spatial;
        const float ar = attn[b * rc + r * d.channels + c];
#pragma omp simd
        for (int64_t i = 0; i < d.spatial; ++i) o[i] += ar * xr[i];
      }
    }
  }
  return MXReturnValue::MX_SUCCESS;
}

// inputs: d_out, x, attn, out; outputs: d_x, d_attn
MXReturnValue Backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  const Dims d = DimsOf((*inputs)[1], Radix(attrs));
  const float* d_out = (*inputs)[0].data<float>();
  const float* x = (*inputs)[1].data<float>();
  const float* attn = (*inputs)[2].data<float>();
  float* d_x = (*outputs)[0].data<float>();
  float* d_attn = (*outputs)[1].data<float>();
  const int64_t rc = d.radix * d.channels;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t k = 0; k < rc; ++k) {
      const float* g = d_out + (b * d.channels + k % d.channels) * d.spatial;
      const float* xk = x + (b * rc + k) * d.spatial;
      float* dx = d_x + (b * rc + k) * d.spatial;
      const float a = attn[b * rc + k];
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < d.spatial; ++i) {
        dx[i] = a * g[i];
        dot += xk[i] * g[i];
      }
      d_attn[b * rc + k] = dot;
    }
  }
  return MXReturnValue::MX_SUCCESS;
}

MXReturnValue ParseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  auto it = attrs.find("radix");
  if (it != attrs.end() && std::stoi(it->second) < 1) {
    MX_ERROR_MSG << "resnest_radix_weighted_sum: radix must be >= 1, got " << it->second;
    return MXReturnValue::MX_FAIL;
  }
  return MXReturnValue::MX_SUCCESS;
}

MXReturnValue InferType(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    const int t = (*in_types)[i];
    if (t != -1 && t != mxnet::ext::kFloat32) {  // -1: not inferred yet
      MX_ERROR_MSG << "resnest_radix_weighted_sum: input " << i << " has dtype code " << t
                   << "; only float32 (0) is implemented (MXNet's library API cannot pass bfloat16)";
      return MXReturnValue::MX_FAIL;
    }
  }
  (*out_types)[0] = (*in_types)[0];
  return MXReturnValue::MX_SUCCESS;
}

MXReturnValue InferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  const unsigned radix = Radix(attrs);
  const auto& x = (*in_shapes)[0];
  const auto& attn = (*in_shapes)[1];
  if (x.size() < 2 || x[1] % radix) {
    MX_ERROR_MSG << "resnest_radix_weighted_sum: x must be (B, radix * C, ...) with radix=" << radix;
    return MXReturnValue::MX_FAIL;
  }
  size_t attn_size = 1;
  for (unsigned v : attn) attn_size *= v;
  if (attn.empty() || attn[0] != x[0] || attn_size != static_cast<size_t>(x[0]) * x[1]) {
    MX_ERROR_MSG << "resnest_radix_weighted_sum: attn must hold B x (radix * C) = " << x[0] << " x " << x[1]
                 << " weights";
    return MXReturnValue::MX_FAIL;
  }
  std::vector<unsigned int> out = x;
  out[1] = x[1] / radix;
  (*out_shapes)[0] = out;
  return MXReturnValue::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(resnest_radix_weighted_sum)
    .setForward(Forward, "cpu")
    .setBackward(Backward, "cpu")
    .setParseAttrs(ParseAttrs)
    .setInferType(InferType)
    .setInferShape(InferShape);

MXReturnValue initialize(int version) {
  return version >= 10900 ? MXReturnValue::MX_SUCCESS : MXReturnValue::MX_FAIL;  // lib_api version 11: MXNet 1.9
}
