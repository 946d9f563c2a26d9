// Batched training's gradients for the paper's MLP (valbench.training.native; the module
// is defined in native_flat.cpp).
#include "native_rows.h"

using namespace valbench_native;
// The same MLP as M stacked copies (valbench.training.stacked, batched training): the
// gradients of the sum over copies of each copy's weighted mean cross-entropy, as
// stacked.py's ``_stacked_grads``, from the same matrix products. M copies' activations
// do not fit in cache, so the work between the products passes over them as few times
// as it can, threads splitting the copies (each thread owns its copies' sums):
// - biases are added in the element-wise pass, not copied into each product's output;
// - the last hidden layer's pass also runs the output layer (K logits per row are K dot
//   products), the loss gradient, the output layer's weight and bias gradients (sums
//   over rows), and the way back to its own pre-activation: all row-local, so neither
//   its output nor the logits are ever stored, and no (M, n, K) products with K = 2 run;
// - the other hidden layers keep their pre-activation and LayerNorm's statistics only:
//   the backward pass recomputes Mish and the layer's output from them;
// - the bias gradients are summed in the passes that write the signals.
// ``params`` alternate weight (M, out, in) and bias (M, out), contiguous; ``x`` (n, in)
// shared or (M, n, in) per copy; ``y`` (n,) or (M, n); ``weight`` (M, n); ``masks``: one
// scaled dropout mask per hidden layer with dropout, (n, h) or (M, n, h); ``dropout[j]``:
// whether hidden layer j has one. At least one hidden layer. Returns the gradients in
// params' order.
// ``workspace``: 2 H + 1 float32 tensors of at least M n (widest hidden layer) elements
// each, for the activations and signals, which the caller keeps from one step to the next:
// allocating them per step (tens of MB at M = 32) made the allocator return them to the
// system and fault them in again every step, which cost as much as the arithmetic.
std::vector<at::Tensor> stacked_grads(std::vector<at::Tensor> params, at::Tensor x, at::Tensor y, at::Tensor weight,
                                      std::vector<at::Tensor> masks, std::vector<bool> dropout, bool norm,
                                      double ln_eps, std::vector<at::Tensor> workspace) {
  const int64_t H = static_cast<int64_t>(params.size()) / 2 - 1;
  TORCH_CHECK(H >= 1 && static_cast<int64_t>(dropout.size()) == H, "params / dropout mismatch");
  const int64_t M = params[0].size(0), n = weight.size(1);
  const float eps = static_cast<float>(ln_eps);
  for (const auto& t : params) TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kFloat, "params: float32");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == M, "weight must be (copies, rows)");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == params[0].size(2) && x.size(-2) == n &&
                  (x.dim() == 2 || (x.dim() == 3 && x.size(0) == M)),
              "x must be float32 (rows, in) or (copies, rows, in)");
  TORCH_CHECK(y.size(-1) == n && (y.dim() == 1 || (y.dim() == 2 && y.size(0) == M)), "y must be (rows,) or (copies, rows)");
  TORCH_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < params[2 * H].size(1),
              "labels must be in [0, classes)");
  TORCH_CHECK(static_cast<int64_t>(workspace.size()) == 2 * H + 1, "stacked_grads needs 2 H + 1 workspace tensors");
  auto buffer = [&](int64_t slot, int64_t width) {  // (M, n, width) in workspace tensor ``slot``
    TORCH_CHECK(workspace[slot].numel() >= M * n * width && workspace[slot].is_contiguous() &&
                workspace[slot].scalar_type() == at::kFloat, "a workspace tensor is too small");
    return workspace[slot].narrow(0, 0, M * n * width).view({M, n, width});
  };
  auto product = [&](const at::Tensor& h, const at::Tensor& w, at::Tensor out) {  // h @ w^T per copy, no bias
    return at::bmm_out(out, h.dim() == 2 ? h.expand({M, n, h.size(1)}) : h, w.transpose(1, 2));
  };
  struct Mask {
    const float* p = nullptr;
    int64_t copy = 0, row = 0;
    const float* at(int64_t m, int64_t i) const { return p ? p + m * copy + i * row : p; }
  };
  std::vector<Mask> mask(H);
  for (int64_t j = 0, k = 0; j < H; ++j) {
    if (!dropout[j]) continue;
    TORCH_CHECK(k < static_cast<int64_t>(masks.size()), "a dropout mask is missing");
    const at::Tensor& t = masks[k++];
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.stride(-1) == 1 && t.size(-1) == params[2 * j].size(1) &&
                    t.size(-2) == n && (t.dim() == 2 || (t.dim() == 3 && t.size(0) == M)),
                "masks must be float32 (rows, width) or (copies, rows, width), rows contiguous");
    mask[j] = {t.data_ptr<float>(), t.dim() == 3 ? t.stride(0) : 0, t.stride(-2)};
  }
  at::Tensor yl = (y.dim() == 1 ? y.expand({M, n}) : y).contiguous();
  at::Tensor wt = weight.to(at::kFloat).contiguous();
  at::Tensor wsum = wt.sum(1).clamp_min(1e-12);
  std::vector<at::Tensor> grads(params.size());
  // sums over rows, in float64 (a float32 running sum over n rows loses ~sqrt(n) roundings;
  // the products' blocked sums lose fewer): every bias, and the output layer's weight
  for (int64_t j = 0; j <= H; ++j) grads[2 * j + 1] = at::zeros(params[2 * j + 1].sizes(), x.options().dtype(at::kDouble));
  auto opts = x.options();

  // forward: every hidden layer's pre-activation (z), output and LayerNorm statistics
  std::vector<at::Tensor> pre(H), act(H), mean(H), rstd(H);
  at::Tensor signal;  // d loss / d (last hidden layer's pre-activation)
  at::Tensor h = x;
  for (int64_t j = 0; j < H; ++j) {
    at::Tensor z = product(h, params[2 * j], buffer(j, params[2 * j].size(1)));  // slots 0 .. H-1
    const int64_t width = z.size(2);
    pre[j] = z;
    mean[j] = at::empty({M, n}, opts);
    rstd[j] = at::empty({M, n}, opts);
    const float *zp = z.data_ptr<float>(), *bp = params[2 * j + 1].data_ptr<float>();
    float *mp = mean[j].data_ptr<float>(), *rp = rstd[j].data_ptr<float>();
    const Mask mk = mask[j];
    if (j + 1 < H) {
      act[j] = buffer(H + j, width);  // slots H .. 2H-2
      float* ap = act[j].data_ptr<float>();
      at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
        std::vector<float> zb(width);
        for (int64_t q = m0 * n; q < m1 * n; ++q) {
          const int64_t m = q / n, i = q % n;
          const float *zr = zp + q * width, *br = bp + m * width;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) zb[c] = zr[c] + br[c];
          rp[q] = hidden_forward_row(zb.data(), ap + q * width, static_cast<float*>(nullptr), mk.at(m, i), 1.0f,
                                     width, norm, eps, mp + q);
        }
      });
      h = act[j];
      continue;
    }
    // the last hidden layer, the output layer, the loss and back again, row by row
    signal = buffer(2 * H - 1, width);  // then signals alternate between slots 2H-1 and 2H
    const int64_t K = params[2 * H].size(1);
    grads[2 * H] = at::zeros(params[2 * H].sizes(), opts.dtype(at::kDouble));
    const float *wo = params[2 * H].data_ptr<float>(), *bo = params[2 * H + 1].data_ptr<float>();
    double *gwo = grads[2 * H].data_ptr<double>(), *gbo = grads[2 * H + 1].data_ptr<double>();
    double* gbh = grads[2 * j + 1].data_ptr<double>();
    const int64_t* yp = yl.data_ptr<int64_t>();
    const float *wp = wt.data_ptr<float>(), *sp = wsum.data_ptr<float>();
    float* gp = signal.data_ptr<float>();
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      std::vector<float> zb(width), der(width), out(width), dl(K);
      BlockSum sw, sbo, sbh;  // the output layer's weight and bias, the hidden layer's bias
      for (int64_t q = m0 * n; q < m1 * n; ++q) {
        const int64_t m = q / n, i = q % n;
        if (i == 0) {
          sw.reset(gwo + m * K * width, K * width);
          sbo.reset(gbo + m * K, K);
          sbh.reset(gbh + m * width, width);
        }
        const float *zr = zp + q * width, *br = bp + m * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) zb[c] = zr[c] + br[c];
        const float rs = hidden_forward_row(zb.data(), out.data(), der.data(), mk.at(m, i), 1.0f, width, norm, eps);
        for (int64_t k = 0; k < K; ++k) {
          const float* wr = wo + (m * K + k) * width;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < width; ++c) dot += wr[c] * out[c];
          dl[k] = dot + bo[m * K + k];
        }
        cross_entropy_row(dl.data(), K, yp[q], wp[q] / sp[m]);
        float* gr = gp + q * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) gr[c] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const float* wr = wo + (m * K + k) * width;
          float* gw = sw.acc.data() + k * width;
          const float dk = dl[k];
          sbo.acc[k] += dk;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) {
            gr[c] += dk * wr[c];
            gw[c] += dk * out[c];
          }
        }
        hidden_backward_row(gr, out.data(), der.data(), rs, width, norm);
        float* gb = sbh.acc.data();
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) gb[c] += gr[c];
        if ((i + 1) % kBlock == 0 || i + 1 == n) {
          sw.flush();
          sbo.flush();
          sbh.flush();
        }
      }
    });
  }

  // backward: the weight gradients, and the signal down to the first layer
  at::Tensor g = signal;
  for (int64_t j = H - 1; j >= 0; --j) {
    grads[2 * j] = at::bmm(g.transpose(1, 2), j > 0 ? act[j - 1] : x.dim() == 2 ? x.expand({M, n, x.size(1)}) : x);
    if (j == 0) break;
    at::Tensor next = buffer((H - j) % 2 ? 2 * H : 2 * H - 1, params[2 * j].size(2));  // not g's slot
    at::bmm_out(next, g, params[2 * j]);
    const int64_t width = next.size(2);
    float* np_ = next.data_ptr<float>();
    const float *zp = pre[j - 1].data_ptr<float>(), *bp = params[2 * (j - 1) + 1].data_ptr<float>();
    const float *mv = mean[j - 1].data_ptr<float>(), *rv = rstd[j - 1].data_ptr<float>();
    double* gbp = grads[2 * (j - 1) + 1].data_ptr<double>();
    const Mask mk = mask[j - 1];
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      std::vector<float> zb(width), tmp(2 * width);
      BlockSum sb;
      for (int64_t q = m0 * n; q < m1 * n; ++q) {
        const int64_t m = q / n, i = q % n;
        if (i == 0) sb.reset(gbp + m * width, width);
        const float *zr = zp + q * width, *br = bp + m * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) zb[c] = zr[c] + br[c];
        float* gr = np_ + q * width;
        hidden_backward_row_from_z(gr, zb.data(), mk.at(m, i), 1.0f, mv[q], rv[q], width, norm, tmp.data());
        float* gb = sb.acc.data();
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) gb[c] += gr[c];
        if ((i + 1) % kBlock == 0 || i + 1 == n) sb.flush();
      }
    });
    g = next;
  }
  grads[2 * H] = grads[2 * H].to(at::kFloat);
  for (int64_t j = 0; j <= H; ++j) grads[2 * j + 1] = grads[2 * j + 1].to(at::kFloat);
  return grads;
}
