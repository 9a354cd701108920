#include "teacher_server/transfer_set.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/formats/contract.h"
#include "common/util/status_macros.h"

namespace distillery {

absl::StatusOr<std::unique_ptr<TransferSet>> TransferSet::Create(Dataset data,
                                                                 TeacherModel& teacher,
                                                                 uint64_t range_begin) {
  const Preprocessing& preprocessing = teacher.input_preprocessing();
  RETURN_IF_ERROR(preprocessing.Validate(data.channels));
  if (data.input_size() != teacher.input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("transfer-set images have ", data.input_size(),
                                                   " pixels, the teacher takes ",
                                                   teacher.input_size()));
  }
  Tensor logits(data.num_examples, teacher.num_members() * teacher.num_classes());
  Tensor inputs;
  std::vector<int64_t> ids;
  constexpr int64_t kBatch = 1000;
  for (int64_t begin = 0; begin < data.num_examples; begin += kBatch) {
    const int64_t end = std::min(data.num_examples, begin + kBatch);
    ids.resize(end - begin);
    std::iota(ids.begin(), ids.end(), begin);
    GatherPreprocessedBatch(data, ids, preprocessing, &inputs, nullptr);
    const Tensor* batch_logits = nullptr;
    RETURN_IF_ERROR(teacher.Infer(inputs, &batch_logits));
    std::copy(batch_logits->data(), batch_logits->data() + batch_logits->size(), logits.row(begin));
  }
  distill::v1::TransferSetIdentity identity;
  identity.set_fingerprint(DatasetFingerprint(data));
  identity.set_range_begin(range_begin);
  identity.set_range_end(range_begin + static_cast<uint64_t>(data.num_examples));
  identity.set_order_scheme(kOrderScheme);
  return std::unique_ptr<TransferSet>(
      new TransferSet(std::move(data), std::move(logits), std::move(identity)));
}

absl::StatusOr<std::vector<int64_t>> TransferSet::ShardExamples(uint64_t epoch, uint64_t seed,
                                                                uint32_t shard,
                                                                uint32_t num_shards) const {
  return ShardExampleIds(size(), epoch, seed, shard, num_shards);
}

}  // namespace distillery
