#include "student_trainer/remote_sources.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/util/status_macros.h"

namespace distillery {

absl::Status RemoteSoftTargets::GetSoftTargets(int64_t /*epoch*/, int64_t /*batch*/,
                                               absl::Span<const int64_t> /*ids*/,
                                               const Tensor& inputs, Tensor* soft_targets) {
  // The inputs are uint8 pixels (jittered or not) after the student's own
  // preprocessing (GatherBatch): send the exact pixels back, 4x smaller than
  // floats on the wire; the teacher applies its own preprocessing.
  const int64_t channels = inputs.shape().size() == 4 ? inputs.shape()[1] : 1;
  RETURN_IF_ERROR(student_.Validate(channels));
  const int64_t plane = inputs.cols() / channels;
  std::string pixels(static_cast<size_t>(inputs.size()), '\0');
  for (int64_t i = 0; i < inputs.size(); ++i) {
    const int64_t c = (i / plane) % channels;
    pixels[i] = static_cast<char>(student_.Pixel(c, inputs.data()[i]));
  }
  return client_->SoftTargets(pixels, inputs.rows(), temperature_, soft_targets);
}

absl::StatusOr<std::unique_ptr<TransferStreamSource>> TransferStreamSource::Create(
    TeacherClient* client, const Options& options) {
  const int64_t size = static_cast<int64_t>(client->info().transfer_set_size());
  if (size == 0) return absl::InvalidArgumentError("the teacher serves no transfer set");
  if (options.num_shards < 1 || options.shard_index >= options.num_shards ||
      options.num_shards > size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", options.shard_index, " of ", options.num_shards, " does not exist"));
  }
  if (options.batch_size < 1 || options.batch_size > client->info().max_batch_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch size must be in [1, ", client->info().max_batch_size(), "]"));
  }
  if (options.include_labels && !client->info().transfer_set_has_labels()) {
    return absl::InvalidArgumentError("labels asked for, but the teacher's transfer set has none");
  }
  // Positions p with p % n == s: ceil((size - s) / n) of them.
  const int64_t shard_size =
      (size - options.shard_index + options.num_shards - 1) / options.num_shards;
  return std::unique_ptr<TransferStreamSource>(
      new TransferStreamSource(client, options, shard_size));
}

int64_t TransferStreamSource::BatchesPerEpoch() const {
  return (shard_size_ + options_.batch_size - 1) / options_.batch_size;
}

absl::Status TransferStreamSource::ProduceEpoch(int64_t epoch,
                                                const std::function<bool(TrainingBatch&&)>& sink) {
  distill::v1::TransferSetRequest request;
  request.set_epoch(static_cast<uint64_t>(epoch));
  request.set_seed(options_.seed);
  request.set_shard_index(options_.shard_index);
  request.set_num_shards(options_.num_shards);
  request.set_batch_size(options_.batch_size);
  request.set_include_labels(options_.include_labels);
  request.mutable_options()->set_temperature(options_.temperature);
  const int64_t width = input_size();
  Shape shape = example_shape();
  const int64_t channels = shape.size() == 3 ? shape[0] : 1;
  RETURN_IF_ERROR(options_.student.Validate(channels));
  const std::vector<float> table = options_.student.Table(channels);
  thread_local TemperatureSoftmax softmax;
  absl::Status decode_status;
  RETURN_IF_ERROR(
      client_->StreamTransferSet(request, [&](const distill::v1::TransferBatch& message) {
        const int64_t rows = message.example_ids_size();
        TrainingBatch batch;
        if (rows < 1 || static_cast<int64_t>(message.pixels_u8().size()) != rows * width ||
            (options_.include_labels && static_cast<int64_t>(message.labels().size()) != rows)) {
          decode_status = absl::DataLossError(
              absl::StrCat("transfer batch ", message.batch_index(), " is malformed"));
          return false;
        }
        batch.ids.assign(message.example_ids().begin(), message.example_ids().end());
        shape.insert(shape.begin(), rows);
        batch.inputs.Reshape(shape);
        shape.erase(shape.begin());
        // The student's inputs are its own preprocessing of the pixels,
        // whatever the teacher's.
        ApplyPixelTable(table, channels, width / channels, rows,
                        reinterpret_cast<const uint8_t*>(message.pixels_u8().data()),
                        batch.inputs.data());
        if (options_.include_labels) {
          for (unsigned char label : message.labels()) batch.labels.push_back(label);
        }
        decode_status =
            DecodeTargets(message.targets(), message.contract(), &softmax, &batch.soft_targets);
        if (!decode_status.ok()) return false;
        return sink(std::move(batch));
      }));
  return decode_status;
}

}  // namespace distillery
