// One epoch of the flat MLP trainer's Adam steps in one call (valbench.training.native),
// and the extension's module (native_stacked.cpp: batched training's gradients).
//
// The model is valbench.training.models.MLP: [Linear -> Dropout -> Mish -> LayerNorm
// (affine-free)] x H -> Linear, its parameters in one flat buffer (per Linear layer the
// weight (out, in) row-major, then the bias), trained with cross-entropy on minibatches.
// It is the same step as FlatMLPTrainer's Python one (valbench/training/repeated.py and
// the chain passes of chain.py): the matrix products are ATen's (the same kernels), and
// everything between them, per layer dropout + Mish + its derivative + LayerNorm, and the
// softmax, and Adam, is one pass over memory each instead of ~50 dispatched tensor ops
// per step. A DVRL outer iteration is 400 such steps on ~128 rows, where the Python
// step spends most of its time in per-op overhead, not arithmetic.
//
// What the caller (Python) keeps: every random draw (the epoch's row order and the
// dropout keep-masks come in as arguments), so the native and the Python steps train
// on the same rows with the same masks; values agree to float32 rounding.
#include "native_rows.h"

using namespace valbench_native;

namespace {

struct Layer {
  at::Tensor w, b, gw, gb;  // views of the flat parameter and gradient buffers
  int64_t in, out;
};

}  // namespace

std::vector<at::Tensor> stacked_grads(std::vector<at::Tensor> params, at::Tensor x, at::Tensor y, at::Tensor weight,
                                      std::vector<at::Tensor> masks, std::vector<bool> dropout, bool norm,
                                      double ln_eps, std::vector<at::Tensor> workspace);  // native_stacked.cpp

// Train one epoch in place. ``flat``/``grad``/``exp_avg``/``exp_avg_sq``: the flat buffers
// (float32, contiguous); ``step``: Adam's step count before the epoch (returned after it).
// ``x`` (n, in) float32, ``y`` (n,) int64, ``weight`` (n,) float32 or an empty tensor (all
// 1); ``order`` (R,) int64 rows of x in the epoch's order; ``bounds`` (S+1,) int64: step s
// trains on order[bounds[s]:bounds[s+1]] (empty ranges are skipped); ``keep`` one uint8
// (R, width) 0/1 mask per hidden layer with dropout, ``keep_scale`` per hidden layer
// 1 / (1 - p), or 0 for no dropout; ``widths`` = (in, hidden..., out).
int64_t train_epoch(at::Tensor flat, at::Tensor grad, at::Tensor exp_avg, at::Tensor exp_avg_sq, int64_t step,
                    at::Tensor x, at::Tensor y, at::Tensor weight, at::Tensor order, at::Tensor bounds,
                    std::vector<at::Tensor> keep, std::vector<double> keep_scale, std::vector<int64_t> widths,
                    bool norm, double ln_eps, double lr, double beta1, double beta2, double adam_eps) {
  TORCH_CHECK(flat.is_contiguous() && flat.scalar_type() == at::kFloat && flat.device().is_cpu(),
              "flat must be a contiguous float32 CPU tensor");
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == at::kFloat, "x must be contiguous float32");
  TORCH_CHECK(y.scalar_type() == at::kLong && order.scalar_type() == at::kLong && bounds.scalar_type() == at::kLong,
              "y, order and bounds must be int64");
  const int64_t hidden = static_cast<int64_t>(widths.size()) - 2;
  TORCH_CHECK(hidden >= 0 && static_cast<int64_t>(keep_scale.size()) == hidden, "widths / keep_scale mismatch");
  const bool weighted = weight.defined() && weight.numel() > 0;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == widths.front() && y.numel() == x.size(0), "x / y do not match the model");
  TORCH_CHECK(!weighted || (weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.numel() == x.size(0)),
              "weight must be float32, one per row of x");
  TORCH_CHECK(y.numel() == 0 || (y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < widths.back()),
              "labels must be in [0, classes)");

  std::vector<Layer> layers;
  int64_t offset = 0;
  for (int64_t j = 0; j + 1 < static_cast<int64_t>(widths.size()); ++j) {
    const int64_t in = widths[j], out = widths[j + 1];
    Layer l;
    l.in = in;
    l.out = out;
    l.w = flat.narrow(0, offset, out * in).view({out, in});
    l.gw = grad.narrow(0, offset, out * in).view({out, in});
    offset += out * in;
    l.b = flat.narrow(0, offset, out);
    l.gb = grad.narrow(0, offset, out);
    offset += out;
    layers.push_back(l);
  }
  TORCH_CHECK(offset == flat.numel(), "widths do not match the flat buffer");
  std::vector<const uint8_t*> keep_ptr(hidden, nullptr);
  for (int64_t j = 0, k = 0; j < hidden; ++j) {
    if (keep_scale[j] > 0) {
      TORCH_CHECK(k < static_cast<int64_t>(keep.size()), "a keep mask is missing");
      TORCH_CHECK(keep[k].scalar_type() == at::kByte && keep[k].is_contiguous() && keep[k].dim() == 2 &&
                  keep[k].size(0) == order.numel() && keep[k].size(1) == widths[j + 1],
                  "keep masks must be contiguous uint8, (rows of the epoch, layer width)");
      keep_ptr[j] = keep[k++].data_ptr<uint8_t>();
    }
  }

  const int64_t n_rows = order.numel(), n_in = widths.front(), n_out = widths.back();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* bnd = bounds.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  const int64_t* yp = y.data_ptr<int64_t>();
  const float* wp = weighted ? weight.data_ptr<float>() : nullptr;
  int64_t max_rows = 0;
  for (int64_t s = 0; s + 1 < bounds.numel(); ++s) max_rows = std::max(max_rows, bnd[s + 1] - bnd[s]);
  if (max_rows == 0) return step;
  TORCH_CHECK(bnd[bounds.numel() - 1] <= n_rows, "bounds run past the order");

  // Per-step buffers, sized for the largest minibatch: the input rows, per hidden layer
  // its output (the next layer's input), Mish's derivative times the dropout mask, and
  // LayerNorm's 1/std; the logits; two backward signals.
  auto opts = x.options();
  at::Tensor xin = at::empty({max_rows, n_in}, opts);
  std::vector<at::Tensor> act(hidden), dmish(hidden), rstd(hidden);
  int64_t widest = n_out;
  for (int64_t j = 0; j < hidden; ++j) {
    act[j] = at::empty({max_rows, widths[j + 1]}, opts);
    dmish[j] = at::empty({max_rows, widths[j + 1]}, opts);
    rstd[j] = at::empty({max_rows}, opts);
    widest = std::max(widest, widths[j + 1]);
  }
  at::Tensor logits = at::empty({max_rows, n_out}, opts);
  at::Tensor sig_a = at::empty({max_rows * widest}, opts), sig_b = at::empty({max_rows * widest}, opts);

  const int64_t P = flat.numel();
  float* pp = flat.data_ptr<float>();
  float* gp = grad.data_ptr<float>();
  float* mp = exp_avg.data_ptr<float>();
  float* vp = exp_avg_sq.data_ptr<float>();

  for (int64_t s = 0; s + 1 < bounds.numel(); ++s) {
    const int64_t a = bnd[s], r = bnd[s + 1] - bnd[s];
    if (r == 0) continue;
    // gather the minibatch's rows
    float* xb = xin.data_ptr<float>();
    for (int64_t i = 0; i < r; ++i) std::memcpy(xb + i * n_in, xp + ord[a + i] * n_in, sizeof(float) * n_in);
    at::Tensor h = xin.narrow(0, 0, r);

    // ---- forward
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t width = widths[j + 1];
      at::Tensor z = act[j].narrow(0, 0, r);
      at::addmm_out(z, layers[j].b, h, layers[j].w.t());
      float* zp = z.data_ptr<float>();
      float* dp = dmish[j].data_ptr<float>();
      float* rp = rstd[j].data_ptr<float>();
      const uint8_t* kp = keep_ptr[j] ? keep_ptr[j] + a * width : nullptr;
      const float scale = static_cast<float>(keep_scale[j]);
      for (int64_t i = 0; i < r; ++i)
        rp[i] = hidden_forward_row(zp + i * width, zp + i * width, dp + i * width, kp ? kp + i * width : kp, scale,
                                   width, norm, static_cast<float>(ln_eps));
      h = z;
    }
    at::Tensor lg = logits.narrow(0, 0, r);
    at::addmm_out(lg, layers[hidden].b, h, layers[hidden].w.t());

    // ---- d loss / d logits: (softmax - onehot) * w_i / sum(w), w = 1 unweighted
    float wsum = static_cast<float>(r);
    if (weighted) {
      wsum = 0.0f;
      for (int64_t i = 0; i < r; ++i) wsum += wp[ord[a + i]];
      wsum = std::max(wsum, 1e-12f);
    }
    float* lp = lg.data_ptr<float>();
    for (int64_t i = 0; i < r; ++i)
      cross_entropy_row(lp + i * n_out, n_out, yp[ord[a + i]], (weighted ? wp[ord[a + i]] : 1.0f) / wsum);

    // ---- backward: the weight gradients into ``grad``, layer by layer
    at::Tensor g = lg;
    for (int64_t j = hidden; j >= 0; --j) {
      Layer& l = layers[j];
      at::Tensor inp = j > 0 ? act[j - 1].narrow(0, 0, r) : xin.narrow(0, 0, r);
      at::mm_out(l.gw, g.t(), inp);
      at::sum_out(l.gb, g, {0});
      if (j == 0) break;
      const int64_t width = l.in;  // the hidden layer j - 1 below
      at::Tensor next = ((j % 2) ? sig_a : sig_b).narrow(0, 0, r * width).view({r, width});
      at::mm_out(next, g, l.w);
      float* np_ = next.data_ptr<float>();
      const float* yv = act[j - 1].data_ptr<float>();  // LayerNorm's output (its input if no norm)
      const float* dv = dmish[j - 1].data_ptr<float>();
      const float* rv = rstd[j - 1].data_ptr<float>();
      for (int64_t i = 0; i < r; ++i)
        hidden_backward_row(np_ + i * width, yv + i * width, dv + i * width, rv[i], width, norm);
      g = next;
    }

    // ---- Adam (torch.optim.Adam's update, no weight decay)
    ++step;
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const float step_size = static_cast<float>(lr / bc1), bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    // 1 - beta in double, then rounded once: in float, 1 - 0.999f is off by 1.3e-5 (relative),
    // a bias that every step would repeat
    const float w1 = static_cast<float>(1.0 - beta1), w2 = static_cast<float>(1.0 - beta2);
    const float b2 = static_cast<float>(beta2), eps = static_cast<float>(adam_eps);
#pragma omp simd
    for (int64_t k = 0; k < P; ++k) {
      const float gk = gp[k];
      mp[k] += w1 * (gk - mp[k]);
      vp[k] = b2 * vp[k] + w2 * gk * gk;
      pp[k] -= step_size * mp[k] / (std::sqrt(vp[k]) / bc2_sqrt + eps);
    }
  }
  return step;
}


PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("train_epoch", &train_epoch, "One epoch of the flat MLP trainer's Adam steps (see the file's header)");
  m.def("stacked_grads", &stacked_grads, "The stacked MLP's gradients (see stacked_grads' comment)");
}
