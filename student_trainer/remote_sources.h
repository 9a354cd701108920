// Where a student's training batches come from when its teacher is remote.
//
//   RemoteSoftTargets: the student reads its own transfer set (IDX files,
//     labels optional) and asks the teacher for soft targets of exactly the
//     inputs it trains on, jittered ones included, so that the teacher labels
//     the view the student sees.
//   TransferStreamSource: the student pulls its shard of the teacher-side
//     transfer set, soft targets included, one epoch at a time.
#ifndef DISTILLERY_STUDENT_TRAINER_REMOTE_SOURCES_H_
#define DISTILLERY_STUDENT_TRAINER_REMOTE_SOURCES_H_

#include "common/data/preprocessing.h"
#include "common/train/trainer.h"
#include "student_trainer/teacher_client.h"

namespace distillery {

class RemoteSoftTargets : public SoftTargetSource {
 public:
  // `client` is not owned and must outlive this object. `student` is the
  // preprocessing of the student's own inputs (GatherBatch's pixels / 255
  // for every network trained here): GetSoftTargets rebuilds the exact raw
  // pixels from it and sends them, and the teacher applies its own.
  RemoteSoftTargets(TeacherClient* client, float temperature,
                    const Preprocessing& student = Preprocessing())
      : client_(client), temperature_(temperature), student_(student) {}
  absl::Status GetSoftTargets(int64_t epoch, int64_t batch, absl::Span<const int64_t> ids,
                              const Tensor& inputs, Tensor* soft_targets) override;

 private:
  TeacherClient* client_;
  float temperature_;
  Preprocessing student_;
};

class TransferStreamSource : public BatchSource {
 public:
  struct Options {
    uint64_t seed = 1;
    uint32_t shard_index = 0;
    uint32_t num_shards = 1;
    uint32_t batch_size = 128;
    float temperature = 20.f;
    // Ask for the transfer set's labels (trained with weight 1 - alpha).
    bool include_labels = false;
    // The student's own preprocessing of the raw pixels it receives
    // (whatever the teacher's).
    Preprocessing student;
  };
  // `client` is not owned and must outlive this object. InvalidArgument when
  // the teacher has no transfer set or the shard does not exist.
  static absl::StatusOr<std::unique_ptr<TransferStreamSource>> Create(TeacherClient* client,
                                                                      const Options& options);

  Shape example_shape() const override { return client_->example_shape(); }
  int64_t BatchesPerEpoch() const override;
  int64_t ExamplesPerEpoch() const override { return shard_size_; }
  absl::Status ProduceEpoch(int64_t epoch,
                            const std::function<bool(TrainingBatch&&)>& sink) override;

 private:
  TransferStreamSource(TeacherClient* client, const Options& options, int64_t shard_size)
      : client_(client), options_(options), shard_size_(shard_size) {}
  TeacherClient* client_;
  const Options options_;
  const int64_t shard_size_;
};

}  // namespace distillery

#endif  // DISTILLERY_STUDENT_TRAINER_REMOTE_SOURCES_H_
