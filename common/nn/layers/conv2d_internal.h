// Internal to the convolution layer (conv2d_layer.cc and
// conv2d_inference.cc): the oneDNN descriptor helpers both halves use.
#ifndef DISTILLERY_COMMON_NN_LAYERS_CONV2D_INTERNAL_H_
#define DISTILLERY_COMMON_NN_LAYERS_CONV2D_INTERNAL_H_

#include <initializer_list>
#include <utility>

#include "common/nn/layers/conv2d_layer.h"

namespace distillery {
namespace conv2d_internal {

using memory = dnnl::memory;

using ForwardPd = dnnl::convolution_forward::primitive_desc;
using DataPd = dnnl::convolution_backward_data::primitive_desc;
using WeightsPd = dnnl::convolution_backward_weights::primitive_desc;
constexpr auto kF32 = memory::data_type::f32;
constexpr auto kBf16 = memory::data_type::bf16;

// The convolution's strides, dilations (oneDNN counts 0 for none) and
// padding, as every primitive descriptor takes them.
struct Geometry {
  memory::dims strides, dilates, padding;
  explicit Geometry(const Conv2dOptions& o)
      : strides{o.stride_rows, o.stride_cols},
        dilates{o.dilation_rows - 1, o.dilation_cols - 1},
        padding{o.pad_rows, o.pad_cols} {}
};

// `plain`'s dims in `type`, in the layout oneDNN picks.
inline memory::desc AnyOf(const memory::desc& plain, memory::data_type type) {
  return memory::desc(plain.dims(), type, memory::format_tag::any);
}

// `plain`'s dims in `type`, plain row-major (nchw, oihw or goihw).
inline memory::desc PlainOf(const memory::desc& plain, memory::data_type type) {
  return memory::desc(
      plain.dims(), type,
      plain.dims().size() == 5 ? memory::format_tag::abcde : memory::format_tag::abcd);
}

// Whether oneDNN's chosen layouts pad no tensor beyond 1.5x its plain size
// (counted in elements, whatever their type).
inline bool Compact(std::initializer_list<std::pair<memory::desc, memory::desc>> chosen) {
  const auto elements = [](const memory::desc& d) {
    return d.get_size() / (d.data_type() == kBf16 ? 2 : 4);
  };
  for (const auto& [inner, plain] : chosen) {
    if (elements(inner) * 2 > elements(plain) * 3) return false;
  }
  return true;
}

}  // namespace conv2d_internal
}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_CONV2D_INTERNAL_H_
