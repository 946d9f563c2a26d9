// Row kernels shared by native_flat.cpp and native_stacked.cpp (valbench.training.native):
// the element-wise part of the paper's MLP, [Linear -> Dropout -> Mish -> LayerNorm
// (affine-free)] x H -> Linear, one row at a time, vectorised over the row.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace valbench_native {

constexpr float kMishClamp = 20.0f;  // as valbench.training.mish: tanh(softplus(x)) == 1 beyond it

// Mish at v: its value, and (when ``deriv``) its derivative, from one exp.
inline float mish(float v, float* deriv) {
  const float e = std::exp(std::min(v, kMishClamp));
  const float nn = e * (e + 2.0f);
  const float t = nn / (nn + 2.0f);  // tanh(softplus(v))
  if (deriv) *deriv = t + v * (1.0f - t * t) * (e / (e + 1.0f));
  return v * t;
}

// A hidden layer's element-wise part for one row, after its Linear: dropout (mask[c] *
// scale; no mask: 1), Mish, then (norm) affine-free LayerNorm. Reads the pre-activation
// ``z``, writes the layer's output to ``out`` (may be ``z``) and to ``d`` Mish's derivative
// times the mask (d out / d z before the norm); returns LayerNorm's 1/std (norm) or 0,
// and its mean through ``mean_out`` when given.
// ``d`` may be null: then the backward pass recomputes the derivative from ``z``
// (hidden_backward_row_from_z), which costs an exp but saves storing and re-reading a
// whole activation, the better trade when activations do not fit in cache (batched training).
template <typename MaskT>
inline float hidden_forward_row(const float* z, float* out, float* d, const MaskT* mask, float scale,
                                int64_t width, bool norm, float ln_eps, float* mean_out = nullptr) {
  float sum = 0.0f;
  if (d) {
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < width; ++c) {
      const float m = mask ? static_cast<float>(mask[c]) * scale : 1.0f;
      float dm;
      out[c] = mish(z[c] * m, &dm);
      d[c] = dm * m;
      sum += out[c];
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < width; ++c) {
      const float m = mask ? static_cast<float>(mask[c]) * scale : 1.0f;
      out[c] = mish(z[c] * m, nullptr);
      sum += out[c];
    }
  }
  if (!norm) {
    if (mean_out) *mean_out = 0.0f;
    return 0.0f;
  }
  const float mean = sum / width;
  if (mean_out) *mean_out = mean;
  float var = 0.0f;
#pragma omp simd reduction(+ : var)
  for (int64_t c = 0; c < width; ++c) var += (out[c] - mean) * (out[c] - mean);
  const float rs = 1.0f / std::sqrt(var / width + ln_eps);
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) out[c] = (out[c] - mean) * rs;
  return rs;
}

// The backward of hidden_forward_row, in place: ``g`` (d loss / d the layer's output)
// becomes d loss / d z. ``y``: the layer's output (LayerNorm's, when norm), ``d`` and
// ``rstd`` as the forward row left them.
inline void hidden_backward_row(float* g, const float* y, const float* d, float rstd, int64_t width, bool norm) {
  if (!norm) {
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) g[c] *= d[c];
    return;
  }
  float sg = 0.0f, sgy = 0.0f;  // affine-free LayerNorm: rstd (g - mean(g) - y mean(g y))
#pragma omp simd reduction(+ : sg, sgy)
  for (int64_t c = 0; c < width; ++c) {
    sg += g[c];
    sgy += g[c] * y[c];
  }
  const float mg = sg / width, mgy = sgy / width;
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) g[c] = rstd * (g[c] - mg - y[c] * mgy) * d[c];
}

// hidden_backward_row for a forward row that kept nothing but LayerNorm's statistics:
// Mish's derivative and the layer's output are recomputed from the pre-activation ``z``
// (bias added) and the mask, as hidden_forward_row formed them; ``tmp``: 2 * ``width``
// floats of scratch.
template <typename MaskT>
inline void hidden_backward_row_from_z(float* g, const float* z, const MaskT* mask, float scale, float mean,
                                       float rstd, int64_t width, bool norm, float* tmp) {
  float* der = tmp;
  float* y = tmp + width;
#pragma omp simd
  for (int64_t c = 0; c < width; ++c) {
    const float m = mask ? static_cast<float>(mask[c]) * scale : 1.0f;
    float dm;
    y[c] = (mish(z[c] * m, &dm) - mean) * rstd;
    der[c] = dm * m;
  }
  hidden_backward_row(g, y, der, rstd, width, norm);
}

// d loss / d logits of one row, in place on the logits: (softmax - onehot(label)) * f.
inline void cross_entropy_row(float* row, int64_t k, int64_t label, float f) {
  float mx = row[0];
  for (int64_t c = 1; c < k; ++c) mx = std::max(mx, row[c]);
  float tot = 0.0f;
  for (int64_t c = 0; c < k; ++c) tot += (row[c] = std::exp(row[c] - mx));
  for (int64_t c = 0; c < k; ++c) row[c] = row[c] / tot * f;
  row[label] -= f;
}

// Sums over rows in float over blocks of kBlock rows, each block's sum then added in
// float64: as accurate as a blocked matrix product's sum, at float speed in the row loop.
constexpr int64_t kBlock = 64;

struct BlockSum {
  std::vector<float> acc;
  double* target = nullptr;
  void reset(double* to, int64_t len) {
    target = to;
    acc.assign(len, 0.0f);
  }
  void flush() {
    for (size_t c = 0; c < acc.size(); ++c) {
      target[c] += acc[c];
      acc[c] = 0.0f;
    }
  }
};

}  // namespace valbench_native
