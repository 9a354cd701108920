// libFuzzer target for the ONNX importer (common/formats/onnx_import.h). The
// input is the bytes of an ONNX model, imported twice: as it is, and with an
// explicit input shape (1, 4, 4) (flat and dynamic inputs take that path).
// The importer must never crash; a model it accepts must be a checkpoint that
// validates, builds its network and runs one example through it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/formats/checkpoint.h"
#include "common/formats/onnx_import.h"

namespace {

void CheckAccepted(const distill::v1::Checkpoint& checkpoint) {
  if (!distillery::ValidateCheckpoint(checkpoint).ok()) std::abort();
  auto network = distillery::NetworkFromCheckpoint(checkpoint);
  if (!network.ok()) std::abort();  // validated, so it must build
  // Run one example when it is small (fuzzed shapes can be large).
  if ((*network)->input_size() <= 4096) {
    distillery::Tensor input(distillery::Shape{1, (*network)->input_size()});
    const distillery::Tensor* logits = nullptr;
    if (!(*network)->Predict(input, &logits).ok()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  distillery::OnnxImportOptions options;
  auto checkpoint = distillery::ImportOnnxModel(bytes, options, "fuzz.onnx");
  if (checkpoint.ok()) CheckAccepted(*checkpoint);
  options.input_shape = {1, 4, 4};
  checkpoint = distillery::ImportOnnxModel(bytes, options, "fuzz.onnx");
  if (checkpoint.ok()) CheckAccepted(*checkpoint);
  return 0;
}
