#include "common/tensor/dnnl_context.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

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

absl::Status DnnlContext::Convert(const Tensor& from, Layout layout, DataType type, Tensor* to) {
  to->Reshape(from.shape(), type);
  if (!to->SetLayout(layout)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", ShapeString(from.shape()), " tensor cannot be laid out as ", LayoutName(layout)));
  }
  if (from.layout() == layout && from.dtype() == type) {
    const size_t bytes = static_cast<size_t>(from.size()) * (type == DataType::kF32 ? 4 : 2);
    std::memcpy(to->raw_data(), from.raw_data(), bytes);
    return absl::OkStatus();
  }
  try {
    const dnnl::memory::desc src_desc = TensorDesc(from.shape(), from.layout(), from.dtype());
    const dnnl::memory::desc dst_desc = TensorDesc(from.shape(), layout, type);
    dnnl::memory src(src_desc, engine_, const_cast<void*>(from.raw_data()));
    dnnl::memory dst(dst_desc, engine_, to->raw_data());
    // oneDNN's primitive cache makes the repeated construction cheap.
    dnnl::reorder reorder(dnnl::reorder::primitive_desc(engine_, src_desc, engine_, dst_desc));
    return Execute("layout conversion", reorder, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus("building a layout conversion", e);
  }
}

dnnl::memory::data_type DnnlType(DataType type) {
  return type == DataType::kBF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

dnnl::memory::desc TensorDesc(const Shape& shape, Layout layout, DataType type) {
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::dims dims(shape.begin(), shape.end());
  if (shape.size() == 4) {
    const tag t = layout == Layout::kBlocked16      ? tag::nChw16c
                  : layout == Layout::kBlocked8     ? tag::nChw8c
                  : layout == Layout::kChannelsLast ? tag::nhwc
                                                    : tag::nchw;
    return dnnl::memory::desc(dims, DnnlType(type), t);
  }
  // Row-major strides: the last dimension varies fastest.
  dnnl::memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  return dnnl::memory::desc(dims, DnnlType(type), strides);
}

std::optional<Layout> LayoutOfDesc(const dnnl::memory::desc& desc) {
  const dnnl::memory::dims dims = desc.dims();
  const Shape shape(dims.begin(), dims.end());
  for (Layout layout :
       {Layout::kPlain, Layout::kBlocked8, Layout::kBlocked16, Layout::kChannelsLast}) {
    if (layout != Layout::kPlain && (shape.size() != 4 || shape[1] % LayoutBlock(layout) != 0)) {
      continue;
    }
    const DataType type =
        desc.data_type() == dnnl::memory::data_type::bf16 ? DataType::kBF16 : DataType::kF32;
    if (desc == TensorDesc(shape, layout, type)) return layout;
  }
  return std::nullopt;
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
