#include "common/nn/softmax.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace distillery {

absl::Status ValidateTemperature(float temperature) {
  if (!std::isfinite(temperature) || temperature <= 0.f) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number > 0, got ", temperature));
  }
  return absl::OkStatus();
}

TemperatureSoftmax::TemperatureSoftmax() : context_(std::make_unique<DnnlContext>()) {}

absl::Status TemperatureSoftmax::GetPrimitives(int64_t cols, Primitives** primitives) {
  if (Primitives* found = primitives_by_cols_.Find(cols); found != nullptr) {
    *primitives = found;
    return absl::OkStatus();
  }
  try {
    dnnl::logsoftmax_forward::primitive_desc pd(
        dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_inference,
                                       PlainMatrixDesc(kTileRows, cols), /*logsoftmax_axis=*/1),
        context_->engine());
    *primitives = primitives_by_cols_.Insert(cols, Primitives{dnnl::logsoftmax_forward(pd)});
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building the log-softmax primitive", e);
  }
  return absl::OkStatus();
}

absl::Status TemperatureSoftmax::Compute(const Tensor& logits, float temperature, Tensor* probs,
                                         Tensor* log_probs) {
  if (absl::Status s = ValidateTemperature(temperature); !s.ok()) return s;
  if (logits.size() == 0) return absl::InvalidArgumentError("softmax of an empty batch");
  const int64_t rows = logits.rows();
  const int64_t cols = logits.cols();
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(cols, &p); !s.ok()) return s;
  Tensor* logp = log_probs != nullptr ? log_probs : &log_probs_;
  logp->Resize(rows, cols);
  scaled_.Resize(kTileRows, cols);
  tile_out_.Resize(kTileRows, cols);
  const float inverse_t = 1.f / temperature;
  const dnnl::memory::desc desc = PlainMatrixDesc(kTileRows, cols);
  dnnl::memory src(desc, context_->engine(), scaled_.data());
  dnnl::memory dst(desc, context_->engine(), tile_out_.data());
  for (int64_t begin = 0; begin < rows; begin += kTileRows) {
    const int64_t count = std::min(kTileRows, rows - begin);
    const float* in = logits.row(begin);
    for (int64_t i = 0; i < count * cols; ++i) scaled_.data()[i] = in[i] * inverse_t;
    std::fill(scaled_.data() + count * cols, scaled_.data() + kTileRows * cols, 0.f);
    if (absl::Status s = context_->Execute("log-softmax", p->log_softmax,
                                           {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
        !s.ok()) {
      return s;
    }
    std::copy(tile_out_.data(), tile_out_.data() + count * cols, logp->row(begin));
  }
  probs->Resize(rows, cols);
  for (int64_t i = 0; i < logits.size(); ++i) probs->data()[i] = std::exp(logp->data()[i]);
  return absl::OkStatus();
}

}  // namespace distillery
