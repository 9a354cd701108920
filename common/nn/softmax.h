// softmax(z / T) and its logarithm, on oneDNN's softmax and logsoftmax
// primitives, for a batch of logit rows.
//
//   p_k = exp(z_k / T) / sum_j exp(z_j / T)
//
// T = 1 is the ordinary softmax; as T grows the distribution flattens toward
// uniform while keeping its argmax (Hinton et al. 2015, section 2).
//
// Thread-safety: one instance per thread (it caches primitives and buffers).
#ifndef DISTILLERY_COMMON_NN_SOFTMAX_H_
#define DISTILLERY_COMMON_NN_SOFTMAX_H_

#include <map>
#include <memory>

#include "absl/status/status.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

// InvalidArgument unless `temperature` is a finite number > 0.
absl::Status ValidateTemperature(float temperature);

class TemperatureSoftmax {
 public:
  TemperatureSoftmax();

  // Writes softmax(logits / temperature) into `probs` and, when not null, its
  // natural logarithm (computed directly, not as log(p), so it stays finite)
  // into `log_probs`. Both are resized to logits' shape.
  absl::Status Compute(const Tensor& logits, float temperature, Tensor* probs,
                       Tensor* log_probs = nullptr);

 private:
  struct Primitives {
    dnnl::logsoftmax_forward log_softmax;
  };
  absl::Status GetPrimitives(int64_t rows, int64_t cols, Primitives** primitives);

  std::unique_ptr<DnnlContext> context_;
  std::map<std::pair<int64_t, int64_t>, Primitives> primitives_by_shape_;
  Tensor scaled_;     // logits / T
  Tensor log_probs_;  // scratch when the caller wants no log-probabilities
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_SOFTMAX_H_
