#include "common/nn/softmax.h"

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

absl::Status TemperatureSoftmax::GetPrimitives(int64_t rows, int64_t cols,
                                               Primitives** primitives) {
  auto key = std::make_pair(rows, cols);
  auto it = primitives_by_shape_.find(key);
  if (it != primitives_by_shape_.end()) {
    *primitives = &it->second;
    return absl::OkStatus();
  }
  try {
    dnnl::logsoftmax_forward::primitive_desc pd(
        dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_inference,
                                       PlainMatrixDesc(rows, cols), /*logsoftmax_axis=*/1),
        context_->engine());
    Primitives built{dnnl::logsoftmax_forward(pd)};
    *primitives = &primitives_by_shape_.emplace(key, std::move(built)).first->second;
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building the log-softmax primitive", e);
  }
  return absl::OkStatus();
}

absl::Status TemperatureSoftmax::Compute(const Tensor& logits, float temperature, Tensor* probs,
                                         Tensor* log_probs) {
  if (absl::Status s = ValidateTemperature(temperature); !s.ok()) return s;
  if (logits.size() == 0) return absl::InvalidArgumentError("softmax of an empty batch");
  Primitives* p = nullptr;
  if (absl::Status s = GetPrimitives(logits.rows(), logits.cols(), &p); !s.ok()) return s;
  scaled_.Resize(logits.rows(), logits.cols());
  const float inverse_t = 1.f / temperature;
  for (int64_t i = 0; i < logits.size(); ++i) scaled_.data()[i] = logits.data()[i] * inverse_t;
  Tensor* logp = log_probs != nullptr ? log_probs : &log_probs_;
  logp->Resize(logits.rows(), logits.cols());
  const dnnl::memory::desc desc = PlainMatrixDesc(logits.rows(), logits.cols());
  dnnl::memory src(desc, context_->engine(), scaled_.data());
  dnnl::memory dst(desc, context_->engine(), logp->data());
  if (absl::Status s = context_->Execute("log-softmax", p->log_softmax,
                                         {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
      !s.ok()) {
    return s;
  }
  probs->Resize(logits.rows(), logits.cols());
  for (int64_t i = 0; i < logits.size(); ++i) probs->data()[i] = std::exp(logp->data()[i]);
  return absl::OkStatus();
}

}  // namespace distillery
