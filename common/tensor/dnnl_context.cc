#include "common/tensor/dnnl_context.h"

#include <omp.h>

#include "absl/strings/str_cat.h"

namespace distillery {

DnnlContext::DnnlContext() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

absl::Status DnnlContext::Execute(const char* what, const dnnl::primitive& primitive,
                                  const std::unordered_map<int, dnnl::memory>& args) {
  try {
    primitive.execute(stream_, args);
    stream_.wait();
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus(what, e);
  }
  return absl::OkStatus();
}

dnnl::memory::desc PlainMatrixDesc(int64_t rows, int64_t cols) {
  return dnnl::memory::desc({rows, cols}, dnnl::memory::data_type::f32,
                            dnnl::memory::format_tag::ab);
}

dnnl::memory::desc PlainVectorDesc(int64_t n) {
  return dnnl::memory::desc({n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
}

absl::Status DnnlErrorToStatus(const char* what, const dnnl::error& e) {
  return absl::InternalError(
      absl::StrCat("oneDNN failed in ", what, ": ", e.what(), " (status ", e.status, ")"));
}

void SetComputeThreads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

}  // namespace distillery
