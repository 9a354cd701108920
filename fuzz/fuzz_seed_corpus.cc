// Writes the seed corpus of the fuzz targets with the project's own code:
// tiny IDX files (plain and gzip, made up here: never MNIST), tiny .npy
// files and .npz archives (stored and deflated) encoded here, tiny
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
#include <utility>
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

// `bytes` compressed with zlib's deflate at the largest window:
// `window_bits` 15 + 16 gives one gzip member, -15 a raw deflate stream.
std::string Compress(const std::string& bytes, int window_bits) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) !=
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

// One gzip member holding `bytes`.
std::string Gzip(const std::string& bytes) { return Compress(bytes, 15 + 16); }

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

// A .npy file (version `major`) of `descr` and `shape` holding `payload`,
// encoded here by the layout common/data/npy.h describes.
std::string NpyFile(const std::string& descr, const std::string& shape, const std::string& payload,
                    int major = 1) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  if (major != 1) out += std::string(2, '\0');
  return out + header + payload;
}

void AppendLe(uint32_t v, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// A raw deflate stream of `bytes`.
std::string Deflate(const std::string& bytes) { return Compress(bytes, -15); }

// A zip archive of `members`, stored or deflated.
std::string ZipFile(const std::vector<std::pair<std::string, std::string>>& members, bool deflate) {
  std::string out, central;
  for (const auto& [name, data] : members) {
    const std::string body = deflate ? Deflate(data) : data;
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint32_t method = deflate ? 8 : 0;
    AppendLe(0x04034b50, 4, &out);
    for (uint32_t v : {20u, 0u, method, 0u, 0u}) AppendLe(v, 2, &out);
    AppendLe(crc, 4, &out);
    AppendLe(static_cast<uint32_t>(body.size()), 4, &out);
    AppendLe(static_cast<uint32_t>(data.size()), 4, &out);
    AppendLe(static_cast<uint32_t>(name.size()), 2, &out);
    AppendLe(0, 2, &out);
    out += name + body;
    AppendLe(0x02014b50, 4, &central);
    for (uint32_t v : {20u, 20u, 0u, method, 0u, 0u}) AppendLe(v, 2, &central);
    AppendLe(crc, 4, &central);
    AppendLe(static_cast<uint32_t>(body.size()), 4, &central);
    AppendLe(static_cast<uint32_t>(data.size()), 4, &central);
    AppendLe(static_cast<uint32_t>(name.size()), 2, &central);
    for (int i = 0; i < 4; ++i) AppendLe(0, 2, &central);
    AppendLe(0, 4, &central);
    AppendLe(offset, 4, &central);
    central += name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += central;
  AppendLe(0x06054b50, 4, &out);
  AppendLe(0, 2, &out);
  AppendLe(0, 2, &out);
  AppendLe(static_cast<uint32_t>(members.size()), 2, &out);
  AppendLe(static_cast<uint32_t>(members.size()), 2, &out);
  AppendLe(static_cast<uint32_t>(central.size()), 4, &out);
  AppendLe(cd_offset, 4, &out);
  AppendLe(0, 2, &out);
  return out;
}

void NpySeeds(const std::string& dir) {
  std::string pixels, pixels_rgb;
  for (int i = 0; i < 2 * 4 * 4; ++i) pixels.push_back(static_cast<char>(i * 37 % 256));
  for (int i = 0; i < 2 * 2 * 2 * 3; ++i) pixels_rgb.push_back(static_cast<char>(i * 11 % 256));
  const std::string images = NpyFile("|u1", "(2, 4, 4)", pixels);
  const std::string labels =
      NpyFile("<i8", "(2,)", std::string("\x03\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0", 16));
  const std::string labels_u1 = NpyFile("|u1", "(2,)", "\x01\x09", 3);
  WriteFile(dir + "/images_2x4x4.npy", images);
  WriteFile(dir + "/labels_2_i8.npy", labels);
  WriteFile(dir + "/labels_2_u1_v3.npy", labels_u1);
  WriteFile(dir + "/images_2x2x2x3_v2.npy", NpyFile("|u1", "(2, 2, 2, 3)", pixels_rgb, 2));
  const std::vector<std::pair<std::string, std::string>> members = {{"x_train.npy", images},
                                                                    {"y_train.npy", labels},
                                                                    {"x_test.npy", images},
                                                                    {"y_test.npy", labels_u1}};
  WriteFile(dir + "/stored.npz", ZipFile(members, false));
  WriteFile(dir + "/deflated.npz", ZipFile(members, true));
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
                             "target_codec_fuzzer", "onnx_import_fuzzer", "npy_fuzzer"}) {
    std::filesystem::create_directories(out + "/" + fuzzer);
  }
  distillery::IdxSeeds(out + "/idx_fuzzer");
  distillery::NpySeeds(out + "/npy_fuzzer");
  distillery::CheckpointSeeds(out + "/checkpoint_fuzzer");
  distillery::RequestSeeds(out + "/soft_targets_request_fuzzer");
  distillery::ResponseSeeds(out + "/target_codec_fuzzer");
  distillery::OnnxSeeds(out + "/onnx_import_fuzzer");
  return 0;
}
