// The C++ student's TeacherClient from the command line: the reference that
// the Python client (python/distillery_client) is compared with, bit for
// bit in tests/python/distillery_client_test.py and for speed in
// bench/python_client_bench.py.
//
//   client_tool --teacher=127.0.0.1:50051 --mode=soft_targets
//               --pixels_file=in.u8 --temperature=4 --out=probs.f32
//     Soft targets of the raw uint8 images in --pixels_file (rows of
//     ModelInfo's input size), through TeacherClient::SoftTargets: writes
//     rows x num_classes float32 probabilities to --out.
//
//   client_tool --teacher=... --mode=stream --epoch=0 --seed=1 --shard_index=0
//               --num_shards=1 --batch_size=100 --temperature=4 [--top_k=3]
//               [--dtype=f16] [--out=prefix] [--rounds=1]
//     Streams one shard of the transfer set through
//     TeacherClient::StreamTransferSet and decodes every batch with
//     DecodeTargets (as student_trainer's TransferStreamSource does). With
//     --out, writes prefix.ids (uint64), prefix.pixels (uint8) and
//     prefix.probs (float32 rows of num_classes). Prints one line per round:
//     "client_tool: stream round R examples N seconds S examples_per_s X".
//
// TLS, mutual TLS and the bearer token come from the usual flags
// (--tls_ca_file, --auth_token_file, ...: student_trainer/teacher_client_flags.h).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/formats/target_codec.h"
#include "common/nn/softmax.h"
#include "common/tensor/dnnl_context.h"
#include "spdlog/spdlog.h"
#include "student_trainer/teacher_client.h"
#include "student_trainer/teacher_client_flags.h"

ABSL_FLAG(std::string, mode, "stream", "soft_targets or stream");
ABSL_FLAG(std::string, pixels_file, "", "soft_targets: raw uint8 images, row-major");
ABSL_FLAG(std::string, out, "", "Output file (soft_targets) or prefix (stream); empty: none");
ABSL_FLAG(double, temperature, 20, "Temperature of the soft targets");
ABSL_FLAG(uint64_t, epoch, 0, "stream: epoch");
ABSL_FLAG(uint64_t, seed, 1, "stream: seed of the order");
ABSL_FLAG(uint32_t, shard_index, 0, "stream: shard");
ABSL_FLAG(uint32_t, num_shards, 1, "stream: shards");
ABSL_FLAG(uint32_t, batch_size, 128, "stream: examples per batch");
ABSL_FLAG(uint64_t, start_batch, 0, "stream: first batch");
ABSL_FLAG(uint32_t, top_k, 0, "stream: classes per row sent (0 = all)");
ABSL_FLAG(std::string, dtype, "f32", "stream: f32 or f16 on the wire");
ABSL_FLAG(bool, logits, false, "stream: ask for logits instead of probabilities");
ABSL_FLAG(int32_t, rounds, 1, "stream: passes over the shard (timed one by one)");

namespace distillery {
namespace {

bool WriteFile(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  return static_cast<bool>(out);
}

int SoftTargetsMode(TeacherClient* client) {
  std::ifstream in(absl::GetFlag(FLAGS_pixels_file), std::ios::binary);
  if (!in) {
    spdlog::error("cannot read --pixels_file={}", absl::GetFlag(FLAGS_pixels_file));
    return 2;
  }
  const std::string pixels((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t width = client->input_size();
  if (pixels.empty() || static_cast<int64_t>(pixels.size()) % width != 0) {
    spdlog::error("--pixels_file holds {} bytes, not rows of {}", pixels.size(), width);
    return 2;
  }
  const int64_t rows = static_cast<int64_t>(pixels.size()) / width;
  Tensor probabilities;
  const absl::Status status = client->SoftTargets(
      pixels, rows, static_cast<float>(absl::GetFlag(FLAGS_temperature)), &probabilities);
  if (!status.ok()) {
    spdlog::error("{}", status.ToString());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_out).empty() &&
      !WriteFile(absl::GetFlag(FLAGS_out), probabilities.data(),
                 static_cast<size_t>(probabilities.size()) * sizeof(float))) {
    spdlog::error("cannot write {}", absl::GetFlag(FLAGS_out));
    return 2;
  }
  std::printf("client_tool: soft_targets rows %lld classes %lld\n", static_cast<long long>(rows),
              static_cast<long long>(probabilities.cols()));
  return 0;
}

int StreamMode(TeacherClient* client) {
  distill::v1::TransferSetRequest request;
  request.set_epoch(absl::GetFlag(FLAGS_epoch));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  request.set_shard_index(absl::GetFlag(FLAGS_shard_index));
  request.set_num_shards(absl::GetFlag(FLAGS_num_shards));
  request.set_batch_size(absl::GetFlag(FLAGS_batch_size));
  distill::v1::TargetOptions* options = request.mutable_options();
  options->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  options->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (absl::GetFlag(FLAGS_dtype) == "f16") {
    options->set_dtype(distill::v1::FLOAT16);
  } else if (absl::GetFlag(FLAGS_dtype) != "f32") {
    spdlog::error("--dtype must be f32 or f16");
    return 2;
  }
  if (absl::GetFlag(FLAGS_logits)) options->set_representation(distill::v1::LOGITS);
  TemperatureSoftmax softmax;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    request.set_start_batch(absl::GetFlag(FLAGS_start_batch));
    std::vector<uint64_t> ids;
    std::string pixels;
    std::vector<float> probs;
    const bool keep = !absl::GetFlag(FLAGS_out).empty();
    int64_t examples = 0;
    absl::Status decode_status;
    Tensor decoded;
    const auto start = std::chrono::steady_clock::now();
    absl::Status status =
        client->StreamTransferSet(request, [&](const distill::v1::TransferBatch& batch) {
          decode_status = DecodeTargets(batch.targets(), batch.contract(), &softmax, &decoded);
          if (!decode_status.ok()) return false;
          examples += batch.example_ids_size();
          if (keep) {
            ids.insert(ids.end(), batch.example_ids().begin(), batch.example_ids().end());
            pixels += batch.pixels_u8();
            probs.insert(probs.end(), decoded.data(), decoded.data() + decoded.size());
          }
          return true;
        });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (status.ok()) status = decode_status;
    if (!status.ok()) {
      spdlog::error("{}", status.ToString());
      return 1;
    }
    std::printf("client_tool: stream round %d examples %lld seconds %.4f examples_per_s %.1f\n",
                round, static_cast<long long>(examples), seconds,
                static_cast<double>(examples) / seconds);
    std::fflush(stdout);
    if (keep) {
      const std::string prefix = absl::GetFlag(FLAGS_out);
      if (!WriteFile(prefix + ".ids", ids.data(), ids.size() * sizeof(uint64_t)) ||
          !WriteFile(prefix + ".pixels", pixels.data(), pixels.size()) ||
          !WriteFile(prefix + ".probs", probs.data(), probs.size() * sizeof(float))) {
        spdlog::error("cannot write {}.*", prefix);
        return 2;
      }
    }
  }
  return 0;
}

int Run() {
  SetComputeThreads(1);
  absl::StatusOr<TeacherClientConfig> config = TeacherClientConfigFromFlags();
  if (!config.ok()) {
    spdlog::error("{}", config.status().ToString());
    return 2;
  }
  auto client = TeacherClient::Connect(*config);
  if (!client.ok()) {
    spdlog::error("{}", client.status().ToString());
    return 1;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "soft_targets") return SoftTargetsMode(client->get());
  if (mode == "stream") return StreamMode(client->get());
  spdlog::error("--mode must be soft_targets or stream");
  return 2;
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return distillery::Run();
}
