#include "teacher_server/transfer_set.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace distillery {

absl::StatusOr<std::unique_ptr<TransferSet>> TransferSet::Create(Dataset data, Mlp& teacher) {
  if (data.input_size() != teacher.input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("transfer-set images have ", data.input_size(),
                                                   " pixels, the teacher takes ",
                                                   teacher.input_size()));
  }
  Tensor logits(data.num_examples, teacher.num_classes());
  Tensor inputs;
  std::vector<int64_t> ids;
  constexpr int64_t kBatch = 1000;
  for (int64_t begin = 0; begin < data.num_examples; begin += kBatch) {
    const int64_t end = std::min(data.num_examples, begin + kBatch);
    ids.resize(end - begin);
    std::iota(ids.begin(), ids.end(), begin);
    GatherBatch(data, ids, 0, nullptr, &inputs, nullptr);
    const Tensor* batch_logits = nullptr;
    RETURN_IF_ERROR(teacher.Infer(inputs, &batch_logits));
    std::copy(batch_logits->data(), batch_logits->data() + batch_logits->size(), logits.row(begin));
  }
  return std::unique_ptr<TransferSet>(new TransferSet(std::move(data), std::move(logits)));
}

absl::StatusOr<std::vector<int64_t>> TransferSet::ShardExamples(uint64_t epoch, uint64_t seed,
                                                                uint32_t shard,
                                                                uint32_t num_shards) const {
  if (num_shards < 1 || shard >= num_shards || num_shards > size()) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", shard, " of ", num_shards,
                                                   " does not exist for a transfer set of ", size(),
                                                   " examples"));
  }
  const std::vector<int64_t> order = ShuffledIndices(size(), seed, static_cast<int64_t>(epoch));
  std::vector<int64_t> ids;
  ids.reserve(order.size() / num_shards + 1);
  for (size_t p = shard; p < order.size(); p += num_shards) ids.push_back(order[p]);
  return ids;
}

}  // namespace distillery
