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

int ComputeThreads() { return omp_get_max_threads(); }

std::string CpuIsaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "isa_" + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa()));
  }
}

void SetComputeThreads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

}  // namespace distillery
