// softmax(z / T) and its logarithm, on oneDNN's softmax and logsoftmax
// primitives, for a batch of logit rows.
//
//   p_k = exp(z_k / T) / sum_j exp(z_j / T)
//
// T = 1 is the ordinary softmax; as T grows the distribution flattens toward
// uniform while keeping its argmax (Hinton et al. 2015, section 2).
//
// Rows are computed in fixed tiles of kTileRows (the last one padded), so
// that a row's probabilities do not depend on the rows beside it (one
// primitive shape per number of classes) and the cache of primitives stays
// bounded whatever the batch sizes.
//
// Thread-safety: one instance per thread (it caches primitives and buffers).
#ifndef DISTILLERY_COMMON_NN_SOFTMAX_H_
#define DISTILLERY_COMMON_NN_SOFTMAX_H_

#include <memory>

#include "absl/status/status.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"
#include "common/tensor/tensor.h"

namespace distillery {

// InvalidArgument unless `temperature` is a finite number > 0.
absl::Status ValidateTemperature(float temperature);

class TemperatureSoftmax {
 public:
  static constexpr int64_t kTileRows = 128;

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
  absl::Status GetPrimitives(int64_t cols, Primitives** primitives);

  std::unique_ptr<DnnlContext> context_;
  // Keyed by the number of classes; a few at most.
  PrimitiveCache<int64_t, Primitives> primitives_by_cols_;
  Tensor scaled_;     // one tile of logits / T
  Tensor tile_out_;   // one tile of log-probabilities
  Tensor log_probs_;  // scratch when the caller wants no log-probabilities
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_SOFTMAX_H_
