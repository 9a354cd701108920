// The teacher-side transfer set: images (labels optional) and the teacher's
// logits for each of them (every member's, for an ensemble: per-member
// logits are what any temperature needs), computed once at start-up and kept, so that
// serving a batch at any temperature costs a softmax, not a forward pass.
//
// The examples of an epoch are ordered by ShuffledIndices(size, seed, epoch);
// shard s of n takes the positions p with p % n == s, in order, cut into
// batches (kOrderScheme, common/formats/contract.h). Every student that asks
// for the same (epoch, seed, shard, n, batch size) gets the same batches, and
// identity() names the set (content fingerprint, range, order scheme) so that
// a student can tell it from another replica's.
//
// Thread-safety: immutable after Create; safe to read from any thread.
#ifndef DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_
#define DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"
#include "common/data/preprocessing.h"
#include "common/tensor/tensor.h"
#include "distill/v1/teacher.pb.h"
#include "teacher_server/teacher_model.h"

namespace distillery {

class TransferSet {
 public:
  // Runs `teacher` over every image of `data` (TeacherModel::Infer of the
  // images after teacher.input_preprocessing(), batches of 1000, no
  // jitter): the same bits GetSoftTargets gives for the same image.
  // `range_begin` is the index of data's first example in the teacher's
  // training data (for identity()). InvalidArgument when the images do not
  // fit the teacher, or its preprocessing is invalid for data's channels.
  static absl::StatusOr<std::unique_ptr<TransferSet>> Create(Dataset data, TeacherModel& teacher,
                                                             uint64_t range_begin = 0);

  const Dataset& data() const { return data_; }
  // size() x (members * classes), as TeacherModel::Infer gives them.
  const Tensor& logits() const { return logits_; }
  int64_t size() const { return data_.num_examples; }
  // What every TransferBatch's contract names as its transfer set.
  const distill::v1::TransferSetIdentity& identity() const { return identity_; }

  // The example ids of shard `shard` of `num_shards` in `epoch`.
  // InvalidArgument unless num_shards >= 1, shard < num_shards and the shard
  // is not empty.
  absl::StatusOr<std::vector<int64_t>> ShardExamples(uint64_t epoch, uint64_t seed, uint32_t shard,
                                                     uint32_t num_shards) const;

 private:
  TransferSet(Dataset data, Tensor logits, distill::v1::TransferSetIdentity identity)
      : data_(std::move(data)), logits_(std::move(logits)), identity_(std::move(identity)) {}
  Dataset data_;
  Tensor logits_;
  distill::v1::TransferSetIdentity identity_;
};

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_TRANSFER_SET_H_
