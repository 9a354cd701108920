// Builds the layer a LayerSpec describes.
#ifndef DISTILLERY_COMMON_NN_LAYER_FACTORY_H_
#define DISTILLERY_COMMON_NN_LAYER_FACTORY_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/nn/layer.h"
#include "common/nn/network_spec.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

// The layer `spec` describes, for examples of `input_shape` (without the
// batch). `parameter_index` names its parameters ("layer<index>.weight");
// `seed` keys dropout masks (with spec.seed_salt). `context` is not owned and
// must outlive the layer. InvalidArgument when the spec's hyperparameters
// are out of range or the input's rank does not fit the kind (the shapes
// themselves are checked by Layer::OutputShape).
absl::StatusOr<std::unique_ptr<Layer>> MakeLayer(const LayerSpec& spec, int parameter_index,
                                                 const Shape& input_shape, uint64_t seed,
                                                 DnnlContext* context);

// Trainable values of the layer `spec` describes for examples of
// `input_shape`, computed without building it (networks refuse to allocate
// more than kMaxNetworkParameters in all).
int64_t LayerParameterCount(const LayerSpec& spec, const Shape& input_shape);
inline constexpr int64_t kMaxNetworkParameters = int64_t{1} << 28;  // 1 GiB of f32

// Multiply-adds per example of a Linear or Conv2d layer from `input_shape`
// to `output_shape`; 0 for other kinds.
int64_t LayerMacsPerExample(const LayerSpec& spec, const Shape& input_shape,
                            const Shape& output_shape);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYER_FACTORY_H_
