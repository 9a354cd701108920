// The teacher-side transfer set: images (labels optional) and the teacher's
// logits for each of them, computed once at start-up and kept, so that
// serving a batch at any temperature costs a softmax, not a forward pass.
//
// The examples of an epoch are ordered by ShuffledIndices(size, seed, epoch);
// shard s of n takes the positions p with p % n == s, in order, cut into
// batches. Every student that asks for the same (epoch, seed, shard, n,
// batch size) gets the same batches.
//
// Thread-safety: immutable after Create; safe to read from any thread.
#ifndef DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_
#define DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"
#include "common/nn/mlp.h"
#include "common/tensor/tensor.h"

namespace distillery {

class TransferSet {
 public:
  // Runs `teacher` over every image of `data` (Mlp::Infer, batches of 1000,
  // no jitter): the same bits GetSoftTargets gives for the same image.
  static absl::StatusOr<std::unique_ptr<TransferSet>> Create(Dataset data, Mlp& teacher);

  const Dataset& data() const { return data_; }
  // size() x classes.
  const Tensor& logits() const { return logits_; }
  int64_t size() const { return data_.num_examples; }

  // The example ids of shard `shard` of `num_shards` in `epoch`.
  // InvalidArgument unless num_shards >= 1, shard < num_shards and the shard
  // is not empty.
  absl::StatusOr<std::vector<int64_t>> ShardExamples(uint64_t epoch, uint64_t seed, uint32_t shard,
                                                     uint32_t num_shards) const;

 private:
  TransferSet(Dataset data, Tensor logits) : data_(std::move(data)), logits_(std::move(logits)) {}
  Dataset data_;
  Tensor logits_;
};

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_
