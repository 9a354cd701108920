// Writes the seed corpus of the fuzz targets with the project's own code:
// tiny IDX files (plain and gzip, made up here: never MNIST), tiny
// checkpoints saved by SaveCheckpoint, a few valid SoftTargetsRequests and
// SoftTargetsResponses encoded by EncodeTargets.
// Usage: fuzz_seed_corpus OUT_DIR (writes OUT_DIR/<fuzzer>/<seed>). The
// corpus kept in fuzz/corpus/ was made by it; rerun it after a format change.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/data/idx.h"
#include "common/formats/checkpoint.h"
#include "common/formats/target_codec.h"
#include "common/nn/network.h"
#include "common/nn/optimizer.h"
#include "common/nn/softmax.h"
#include "distill/v1/teacher.pb.h"
#include "tests/onnx_test_models.h"

namespace distillery {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "fuzz_seed_corpus: %s\n", message.c_str());
  std::exit(1);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out.flush()) Die("cannot write " + path);
}

// One gzip member holding `bytes`.
std::string Gzip(const std::string& bytes) {
  z_stream stream{};
  // 15 + 16: the largest window, with a gzip wrapper.
  if (deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    Die("deflateInit2 failed");
  }
  std::string out(deflateBound(&stream, bytes.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  if (deflate(&stream, Z_FINISH) != Z_STREAM_END) Die("deflate failed");
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// An IDX file of `dims` with made-up bytes, written by WriteIdxFile.
std::string IdxFile(const std::string& dir, const std::string& name,
                    const std::vector<uint32_t>& dims) {
  IdxArray array{dims, {}};
  size_t elements = 1;
  for (uint32_t d : dims) elements *= d;
  for (size_t i = 0; i < elements; ++i) array.data.push_back(static_cast<uint8_t>(i * 37 % 256));
  const std::string path = dir + "/" + name;
  if (absl::Status s = WriteIdxFile(path, array); !s.ok()) Die(std::string(s.message()));
  return ReadFile(path);
}

void IdxSeeds(const std::string& dir) {
  const std::string images = IdxFile(dir, "images_2x4x4.idx", {2, 4, 4});
  const std::string labels = IdxFile(dir, "labels_2.idx", {2});
  WriteFile(dir + "/images_2x4x4.idx.gz", Gzip(images));
  WriteFile(dir + "/labels_2.idx.gz", Gzip(labels));
  // Two gzip members, split inside the header (ReadIdxFile accepts these).
  WriteFile(dir + "/labels_2_two_members.idx.gz",
            Gzip(labels.substr(0, 6)) + Gzip(labels.substr(6)));
}

// The checkpoint of network `architecture` on `input` images, with the state
// of `optimizer` after one step when it is not null.
void CheckpointSeed(const std::string& path, Optimizer* optimizer,
                    const std::string& architecture = "6-4-3", const Shape& input = {1, 2, 3}) {
  absl::StatusOr<NetworkSpec> spec = NetworkSpec::Parse(architecture, input);
  if (!spec.ok()) Die(std::string(spec.status().message()));
  absl::StatusOr<std::unique_ptr<Network>> mlp = Network::Create(*spec, /*seed=*/1);
  if (!mlp.ok()) Die(std::string(mlp.status().message()));
  if (optimizer != nullptr) optimizer->Step((*mlp)->Parameters(), 0.1f, 0);
  const distill::v1::Checkpoint checkpoint = MakeCheckpoint(**mlp, "teacher", optimizer, 1, 1, 7);
  if (absl::Status s = SaveCheckpoint(path, checkpoint); !s.ok()) Die(std::string(s.message()));
}

// The corpus also keeps release 0.1's seeds (format version 1), written by
// that release's version of this program: release1_mlp_6_4_3*.ckpt.
void CheckpointSeeds(const std::string& dir) {
  CheckpointSeed(dir + "/mlp_6_4_3.ckpt", nullptr);
  CheckpointSeed(dir + "/mlp_6_4_3_sgd.ckpt", MakeSgd({}).get());
  CheckpointSeed(dir + "/mlp_6_4_3_adam.ckpt", MakeAdam({}).get());
  // Format 2's typed layers: convolution, batch norm (with its buffers),
  // both poolings, flatten, on two channels.
  CheckpointSeed(dir + "/conv_bn_pool.ckpt", MakeSgd({}).get(),
                 "conv3x3:2/same+bn,maxpool2,conv2x2:3,avgpool2/inclpad,fc:3", {2, 6, 6});
}

void RequestSeed(const std::string& path, const distill::v1::SoftTargetsRequest& request) {
  std::string bytes;
  if (!request.SerializeToString(&bytes)) Die("cannot serialize " + path);
  WriteFile(path, bytes);
}

// Requests for a 28x28 teacher (as in soft_targets_request_fuzzer.cc).
void RequestSeeds(const std::string& dir) {
  constexpr int kWidth = 28 * 28;
  distill::v1::SoftTargetsRequest pixels;
  pixels.set_num_examples(1);
  for (int i = 0; i < kWidth; ++i) pixels.mutable_pixels_u8()->push_back(static_cast<char>(i));
  RequestSeed(dir + "/pixels_1.pb", pixels);

  distill::v1::SoftTargetsRequest options = pixels;
  options.set_num_examples(2);
  options.mutable_pixels_u8()->append(pixels.pixels_u8());
  options.mutable_options()->set_temperature(2.5f);
  options.mutable_options()->set_representation(distill::v1::LOGITS);
  options.mutable_options()->set_top_k(3);
  options.mutable_options()->set_dtype(distill::v1::FLOAT16);
  RequestSeed(dir + "/pixels_2_logits_top3_f16.pb", options);

  distill::v1::SoftTargetsRequest floats;
  floats.set_num_examples(1);
  for (int i = 0; i < kWidth; ++i) floats.add_inputs_f32(static_cast<float>(i % 256) / 255.f);
  floats.mutable_options()->set_representation(distill::v1::PROBABILITIES);
  floats.mutable_options()->set_dtype(distill::v1::FLOAT32);
  RequestSeed(dir + "/floats_1_probabilities.pb", floats);
}

// Answers of a 10-class teacher to 2 examples, encoded by EncodeTargets.
void ResponseSeed(const std::string& path, distill::v1::Representation representation,
                  distill::v1::DType dtype, uint32_t top_k) {
  distill::v1::TargetOptions options;
  options.set_temperature(2.f);
  options.set_representation(representation);
  options.set_dtype(dtype);
  options.set_top_k(top_k);
  absl::StatusOr<distill::v1::SoftTargetContract> contract =
      ResolveTargetOptions(options, 10, 1.f, "0123456789abcdef");
  if (!contract.ok()) Die(std::string(contract.status().message()));
  Tensor logits(2, 10);
  for (int64_t i = 0; i < logits.size(); ++i) logits.data()[i] = static_cast<float>(i % 7) - 3.f;
  distill::v1::SoftTargetsResponse response;
  *response.mutable_contract() = *contract;
  TemperatureSoftmax softmax;
  if (absl::Status s = EncodeTargets(logits, *contract, &softmax, response.mutable_targets());
      !s.ok()) {
    Die(std::string(s.message()));
  }
  std::string bytes;
  if (!response.SerializeToString(&bytes)) Die("cannot serialize " + path);
  WriteFile(path, bytes);
}

void ResponseSeeds(const std::string& dir) {
  ResponseSeed(dir + "/probabilities_f32.pb", distill::v1::PROBABILITIES, distill::v1::FLOAT32, 0);
  ResponseSeed(dir + "/probabilities_top3_f32.pb", distill::v1::PROBABILITIES, distill::v1::FLOAT32,
               3);
  ResponseSeed(dir + "/logits_top3_f16.pb", distill::v1::LOGITS, distill::v1::FLOAT16, 3);
  ResponseSeed(dir + "/logits_f16.pb", distill::v1::LOGITS, distill::v1::FLOAT16, 0);
}

// ONNX models of the importer's tests (tests/onnx_test_models.h).
void OnnxSeeds(const std::string& dir) {
  WriteFile(dir + "/conv_bn_softmax.onnx", onnx_test::ConvBnModel().SerializeAsString());
  WriteFile(dir + "/view_matmul_add.onnx", onnx_test::ViewModel().SerializeAsString());
  onnx_test::ModelBuilder flat({-1, 16});
  flat.Node("Gemm", {"", flat.Weight("w", {16, 3}, onnx_test::Values(48, 1)),
                     flat.Weight("b", {3}, onnx_test::Values(3, 2))});
  WriteFile(dir + "/flat_gemm.onnx", flat.Finish().SerializeAsString());
}

}  // namespace
}  // namespace distillery

int main(int argc, char** argv) {
  if (argc != 2) distillery::Die("usage: fuzz_seed_corpus OUT_DIR");
  const std::string out = argv[1];
  for (const char* fuzzer : {"idx_fuzzer", "checkpoint_fuzzer", "soft_targets_request_fuzzer",
                             "target_codec_fuzzer", "onnx_import_fuzzer"}) {
    std::filesystem::create_directories(out + "/" + fuzzer);
  }
  distillery::IdxSeeds(out + "/idx_fuzzer");
  distillery::CheckpointSeeds(out + "/checkpoint_fuzzer");
  distillery::RequestSeeds(out + "/soft_targets_request_fuzzer");
  distillery::ResponseSeeds(out + "/target_codec_fuzzer");
  distillery::OnnxSeeds(out + "/onnx_import_fuzzer");
  return 0;
}
