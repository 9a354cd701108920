// The one place where oneDNN (v2.6 API) is touched directly, and where its
// exceptions stop: everything above this wrapper sees absl::Status.
//
// Thread-safety: a DnnlContext (engine + stream) belongs to one thread at a
// time; give each concurrently used network its own context.
#ifndef DISTILLERY_COMMON_TENSOR_DNNL_CONTEXT_H_
#define DISTILLERY_COMMON_TENSOR_DNNL_CONTEXT_H_

#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "common/tensor/tensor.h"
#include "dnnl.hpp"

namespace distillery {

class DnnlContext {
 public:
  // A CPU engine and an in-order stream on it.
  DnnlContext();

  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }

  // Executes `primitive` with `args` and waits for it, converting any oneDNN
  // error into an Internal status naming `what`.
  absl::Status Execute(const char* what, const dnnl::primitive& primitive,
                       const std::unordered_map<int, dnnl::memory>& args);

  // Writes `from`'s elements into `to` (reshaped to from's shape) in
  // `layout` and `type` (f32 to bf16 rounds to nearest even). InvalidArgument
  // when the layout does not fit the shape (tensor.h). A copy when both
  // are the same.
  absl::Status Convert(const Tensor& from, Layout layout, DataType type, Tensor* to);
  // Convert to `layout`, keeping the element type.
  absl::Status ConvertLayout(const Tensor& from, Layout layout, Tensor* to) {
    return Convert(from, layout, from.dtype(), to);
  }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
};

// A plain row-major (rows x cols) f32 memory descriptor: oneDNN's `ab` layout,
// which is both `nc` for activations and `oi` for weights.
dnnl::memory::desc PlainMatrixDesc(int64_t rows, int64_t cols);
// A plain vector of `n` f32 values (layout `a`), for biases.
dnnl::memory::desc PlainVectorDesc(int64_t n);

// The descriptor of elements of `type` of `shape` in `layout`: nchw, nChw8c
// or nChw16c for rank 4; plain row-major (a, ab, abc, ...) for other ranks,
// which have only the plain layout.
dnnl::memory::desc TensorDesc(const Shape& shape, Layout layout = Layout::kPlain,
                              DataType type = DataType::kF32);
// oneDNN's data type for `type`.
dnnl::memory::data_type DnnlType(DataType type);
// The layout whose TensorDesc `desc` is (for its own dims), or nullopt when
// it is none of them (oneDNN picked another blocking, or padded channels).
std::optional<Layout> LayoutOfDesc(const dnnl::memory::desc& desc);

// Converts a oneDNN error thrown while doing `what` into a Status.
absl::Status DnnlErrorToStatus(const char* what, const dnnl::error& e);

// Sets the number of threads oneDNN (OpenMP) uses in this process. 0 keeps
// the OpenMP default.
void SetComputeThreads(int threads);
// The threads oneDNN (OpenMP) uses now (omp_get_max_threads).
int ComputeThreads();
// The instruction set oneDNN dispatches to on this machine
// (dnnl::get_effective_cpu_isa), e.g. "avx512_core".
std::string CpuIsaName();

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TENSOR_DNNL_CONTEXT_H_
