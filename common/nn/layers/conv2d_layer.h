// A 2-D convolution layer on oneDNN convolution primitives (direct
// algorithm; f32, or bf16 products with f32 accumulation).
//
// Shapes (plain row-major NCHW, common/tensor/tensor.h):
//   input  (batch, in_channels, rows, cols)
//   W      (out_channels, in_channels / groups, kernel_rows, kernel_cols)
//   b      (1, out_channels)
//   output (batch, out_channels, out_rows, out_cols), where per axis
//     out = (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1
//   (integer division: PyTorch's floor mode).
// Forward, with g = o / (out_channels / groups) the group of filter o and
// Cg = in_channels / groups:
//   output[n][o][y][x] = b[o] + sum over c < Cg, i < kernel_rows, j < kernel_cols of
//       W[o][c][i][j] * input[n][g * Cg + c][y * stride_rows - pad_rows + i * dilation_rows]
//                                           [x * stride_cols - pad_cols + j * dilation_cols]
//   (input elements outside the image are zero).
// Backward:
//   dL/dinput  = the transposed convolution of dL/doutput with W (skipped
//                when not asked for)
//   dL/dW[o][c][i][j] = sum over n, y, x of dL/doutput[n][o][y][x] * (the input
//                element above)
//   dL/db[o]   = sum over n, y, x of dL/doutput[n][o][y][x]
// Max-norm, when it applies, clips each filter's incoming weights: the rows
// of W read as (out_channels, in_channels / groups * kernel_rows * kernel_cols).
//
// Cost: with blocked layouts (ConvLayout) a call reorders activations and
// gradients between their layout and oneDNN's only where they differ (a
// network keeps them blocked between image layers, common/nn/layer.h), and
// the weights each call (they change every step). Backward reuses Forward's
// reordered input when it is the same tensor (the Layer contract), and keeps
// one scratch buffer per reordered tensor and input shape. Primitives and
// buffers are cached for a few input shapes (common/nn/primitive_cache.h);
// Forward builds only the forward primitive and its reorders, and the first
// Backward of a shape adds the backward ones, so inference builds none.
#ifndef DISTILLERY_COMMON_NN_LAYERS_CONV2D_LAYER_H_
#define DISTILLERY_COMMON_NN_LAYERS_CONV2D_LAYER_H_

#include <array>
#include <memory>

#include "common/nn/layer.h"
#include "common/nn/primitive_cache.h"
#include "common/tensor/dnnl_context.h"

namespace distillery {

// How the layer lays out data for oneDNN inside. Tensors between layers are
// plain NCHW, or channel-blocked when the network lets them be.
enum class ConvLayout : uint8_t {
  // Plain NCHW activations and OIHW weights given to oneDNN as they are: no
  // reorders; oneDNN runs its im2col + GEMM kernels (or a JIT kernel that
  // takes plain layouts when it has one).
  kPlain = 0,
  // oneDNN picks the layouts (format_tag::any; blocked ones such as nChw16c
  // and OIhw16i16o on AVX-512) and the layer reorders activations, weights
  // and gradients to and from plain at every call.
  kBlocked = 1,
  // Per primitive (forward, backward data, backward weights): oneDNN's own
  // layouts, unless one of them pads a tensor to more than 1.5 times its
  // plain size (the 16-channel blocks of a 1-channel image), then plain.
  // For LeNet's 5x5 1->32 that is blocked forward and weight gradient but
  // plain data gradient; for 32->64 all blocked. The choice depends only on
  // the shapes and the CPU, never on timing, so runs are reproducible.
  kAuto = 2,
};

struct Conv2dOptions {
  int64_t in_channels = 1;
  int64_t out_channels = 1;
  int64_t kernel_rows = 1;
  int64_t kernel_cols = 1;
  int64_t stride_rows = 1;
  int64_t stride_cols = 1;
  int64_t pad_rows = 0;  // zeros added above and below
  int64_t pad_cols = 0;  // zeros added left and right
  int64_t dilation_rows = 1;
  int64_t dilation_cols = 1;
  int64_t groups = 1;  // in_channels and out_channels must be multiples
  bool max_norm_applies = false;
  // kAuto measured fastest on the shapes of bench/conv_bench.cc: forward +
  // backward at batch 128 on 2 AVX-512 threads (best runs, a shared
  // machine), 5x5 1->32 on 28x28: auto ~4.5 ms, plain ~16.5, blocked ~15-29
  // (its 16-channel-blocked data gradient of a 1-channel image); 5x5 32->64
  // on 14x14: auto ~30 ms = blocked, plain ~73 (GEMM kernels). kPlain and
  // kBlocked are kept for comparison.
  ConvLayout layout = ConvLayout::kAuto;
};

class Im2colWeightGradient;

class Conv2dLayer : public Layer {
 public:
  // Weights and biases start at zero; the network initialises them.
  // `index` names the parameters "layer<index>.weight" / "layer<index>.bias".
  // `context` is not owned and must outlive the layer. Invalid options
  // (a zero kernel, channels not a multiple of groups, ...) are reported by
  // OutputShape, Forward and Backward.
  Conv2dLayer(int index, const Conv2dOptions& options, DnnlContext* context);

  // "Conv2d(1->32, 5x5, stride 1, pad 2)", plus ", dilation d" and
  // ", groups g" when not 1; per-axis values as "RxC" when they differ.
  std::string Describe() const override;
  // Takes (in_channels, rows, cols), gives (out_channels, out_rows, out_cols).
  absl::StatusOr<Shape> OutputShape(const Shape& example_shape) const override;
  absl::Status Forward(const Tensor& input, bool training, Tensor* output) override;
  absl::Status Backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                        Tensor* grad_input) override;
  std::vector<Parameter*> Parameters() override { return {&weight_, &bias_}; }
  // Takes plain or channel-blocked inputs; gives its output in oneDNN's
  // channel-blocked layout (nChw16c on AVX-512, nChw8c on AVX2) when
  // allowed and oneDNN picked one, else plain.
  bool TakesBlocked() const override { return true; }
  void AllowBlockedOutput(bool allow) override { allow_blocked_output_ = allow; }
  // In bf16 every product reads bf16 copies (made by the layout bridges)
  // and accumulates in f32: Forward convolves bf16 copies of the input and
  // the weights to an f32 output (f32 bias); Backward computes dL/dinput
  // from bf16 dL/doutput and weights, and dL/dW from bf16 input and
  // dL/doutput, both in f32 (dL/db in f32). The f32 weights stay the
  // master copy. Training passes also take a bf16 input as it is, and then
  // give dL/dinput in bf16 (rounded once from the f32 accumulation); told
  // so (SetTrainingOutputBf16), they give the output rounded to bf16, and
  // Backward then takes a bf16 dL/doutput.
  void SetPrecision(Precision precision) override { precision_ = precision; }
  bool TakesBf16InTraining() const override { return precision_ == Precision::kBF16; }
  bool SetTrainingOutputBf16(bool bf16) override {
    training_output_bf16_ = bf16;
    return true;
  }
  // Inference in bf16 runs its own primitive (forward_inference, so oneDNN
  // may pick another kernel than training's) with f32 accumulation: the
  // input may be bf16 (TakesBf16), in any layout the layer takes; a
  // per-channel affine map after it (a batch norm, SetInferenceAffine) is
  // folded into the weights and bias it converts at each call,
  //   W'[o] = W[o] * scale[o],  b'[o] = b[o] * scale[o] + shift[o]
  // (so the bf16 weights are rounded after scaling; oneDNN's binary post-ops
  // cost more than the convolution's own time on these shapes); a ReLU is a
  // post-op; and the output may be bf16 (SetInferenceOutput):
  //   output = round(max(conv(input, W') + b', 0)).
  // The output stays in a channel-blocked layout when allowed, even where
  // oneDNN would pick one the other layers do not take (nhwc). In f32 the
  // layer fuses nothing.
  bool TakesBf16() const override { return precision_ == Precision::kBF16; }
  bool SetInferenceOutput(bool relu, DataType type) override;
  bool SetInferenceAffine(const Tensor* scale, const Tensor* shift) override;

  const Conv2dOptions& options() const { return options_; }
  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }

  // For tests and metrics: the input shapes with cached primitives (at most
  // PrimitiveCache::kDefaultCapacity), and how many of them have their
  // backward primitives built.
  size_t CachedShapes() const { return primitives_by_shape_.size(); }
  size_t CachedBackwardShapes() const {
    return primitives_by_shape_.CountIf([](const Primitives& p) { return p.has_backward; });
  }

 private:
  // A plain tensor given to a primitive that wants another layout: the
  // reorder and a buffer in that layout. `needed` is false when the
  // primitive takes the plain layout itself.
  struct Bridge {
    bool needed = false;
    dnnl::memory::desc inner;
    dnnl::reorder reorder;  // plain -> inner, or inner -> plain for outputs
    dnnl::memory buffer;    // in `inner`, allocated by oneDNN
  };
  // The primitives for one input shape, built once and then reused: the
  // forward ones by the first Forward or Backward of the shape, the backward
  // ones (and their bridges) by its first Backward. The forward
  // primitive_desc is kept as the hint the backward ones are built from.
  struct Primitives {
    // src in the input's layout, dst in the output's (dst_layout), weights
    // and bias plain; plain_src and plain_dst are the plain NCHW ones.
    dnnl::memory::desc src, weights, bias, dst, plain_src, plain_dst;
    Layout dst_layout = Layout::kPlain;
    dnnl::convolution_forward::primitive_desc forward_pd;
    dnnl::convolution_forward forward;
    Bridge forward_src, forward_weights, forward_dst;
    bool has_backward = false;
    dnnl::convolution_backward_data backward_data;
    dnnl::convolution_backward_weights backward_weights;
    Bridge data_diff_dst, data_weights, data_diff_src;
    Bridge weights_src, weights_diff_dst, weights_diff_weights;
    // Instead of backward_weights and its bridges, where it applies
    // (conv2d_im2col_weights.h).
    std::shared_ptr<Im2colWeightGradient> im2col_weights;
  };
  // batch, rows, cols, input layout, whether blocked output is allowed,
  // whether the products are bf16, the input's type, whether the output
  // (and dL/doutput) is bf16
  using ShapeKey = std::array<int64_t, 8>;
  // A bf16 inference pass's primitive and bridges for one input shape and
  // one setting of its inference output: src in the input's layout and
  // type, dst in the output's (dst_layout, dst_type), weights plain f32.
  struct InferencePrimitives {
    dnnl::memory::desc src, weights, bias, dst;
    Layout dst_layout = Layout::kPlain;
    DataType dst_type = DataType::kF32;
    dnnl::convolution_forward forward;
    Bridge src_bridge, weights_bridge, dst_bridge;
  };
  // batch, rows, cols, input layout, input type, blocked output allowed,
  // ReLU, bf16 output
  using InferenceKey = std::array<int64_t, 8>;
  absl::Status CheckOptions() const;
  absl::Status CheckInput(const char* what, const Tensor& input) const;
  // The entry for `input`'s shape and type, the precision (`bf16`) and the
  // output's type (`bf16_output`), with the backward primitives built when
  // `backward`. The pointer is valid until the next call. The helpers below
  // throw dnnl::error, which it converts.
  absl::Status GetPrimitives(const Tensor& input, bool backward, bool bf16, bool bf16_output,
                             Primitives** primitives);
  // The forward primitive and its bridges for `input`'s shape and type.
  absl::StatusOr<Primitives> BuildForward(const Tensor& input, bool bf16, bool bf16_output) const;
  dnnl::convolution_forward::primitive_desc ForwardDesc(const Primitives& p,
                                                        const dnnl::memory::desc& src,
                                                        const dnnl::memory::desc& weights,
                                                        const dnnl::memory::desc& dst) const;
  // The bf16 inference primitive for `input` and the inference settings.
  absl::StatusOr<InferencePrimitives> BuildInference(const Tensor& input) const;
  // The inference primitive's descriptor, with `dst` for its output.
  dnnl::convolution_forward::primitive_desc InferenceDesc(const dnnl::memory::desc& src,
                                                          const dnnl::memory::desc& weights,
                                                          const dnnl::memory::desc& bias,
                                                          const dnnl::memory::desc& dst) const;
  // The weights and bias with the affine map folded in (folded_*_), or the
  // layer's own.
  void FoldAffine(const float** weights, const float** bias);
  absl::Status InferBf16(const Tensor& input, Tensor* output);
  // The memory a primitive reads for `plain`: `plain` itself, or the
  // bridge's buffer after its reorder into it.
  absl::StatusOr<dnnl::memory> ToInner(const char* what, const Bridge& bridge,
                                       const dnnl::memory& plain) const;
  // Reorders a primitive's output from the bridge's buffer `inner` into
  // `plain`, when the bridge is needed.
  absl::Status FromInner(const char* what, const Bridge& bridge, const dnnl::memory& inner,
                         const dnnl::memory& plain) const;
  // Backward's weight and bias gradients; *diff_dst_used is dL/doutput as
  // the weights pass read it (BackwardData may read it too).
  absl::Status BackwardWeights(const Primitives& p, const Tensor& input, const Tensor& grad_output,
                               const dnnl::memory& diff_dst, dnnl::memory* diff_dst_used);
  // Backward's dL/dinput into `grad_input`, in the input's layout and type.
  absl::Status BackwardData(const Primitives& p, const Tensor& input, const dnnl::memory& diff_dst,
                            const dnnl::memory& diff_dst_for_weights, Tensor* grad_input);
  // Runs `forward` on src, weights and bias into dst, through the bridges'
  // reorders where they are needed.
  absl::Status RunForward(const dnnl::convolution_forward& forward, Bridge& src_bridge,
                          Bridge& weights_bridge, Bridge& dst_bridge, dnnl::memory src,
                          dnnl::memory weights, dnnl::memory bias, dnnl::memory dst) const;
  // The weights' plain f32 descriptor (oihw, or goihw with groups).
  dnnl::memory::desc WeightsDesc() const;
  // Adds the backward primitives and their bridges to `entry`.
  void AddBackward(bool bf16, Primitives* entry) const;
  // The backward-data and backward-weights descriptors for the forward
  // pass in `p`, in the layouts the layer's ConvLayout allows.
  dnnl::convolution_backward_data::primitive_desc BackwardDataPd(bool bf16,
                                                                 const Primitives& p) const;
  dnnl::convolution_backward_weights::primitive_desc BackwardWeightsPd(bool bf16,
                                                                       const Primitives& p) const;
  // A bridge between `plain` and `inner`: none when they are equal.
  Bridge MakeBridge(const dnnl::memory::desc& plain, const dnnl::memory::desc& inner,
                    bool to_inner) const;

  Conv2dOptions options_;
  DnnlContext* context_;
  bool allow_blocked_output_ = false;
  bool training_output_bf16_ = false;  // SetTrainingOutputBf16's
  Precision precision_ = Precision::kF32;
  Parameter weight_;
  Parameter bias_;
  // A few shapes at most (common/nn/primitive_cache.h).
  PrimitiveCache<ShapeKey, Primitives> primitives_by_shape_;
  PrimitiveCache<InferenceKey, InferencePrimitives> inference_primitives_;
  // SetInferenceOutput's and SetInferenceAffine's (scale and shift (1, C)).
  bool inference_relu_ = false;
  bool inference_bf16_output_ = false;
  bool inference_affine_ = false;
  Tensor inference_scale_, inference_shift_;  // (1, C)
  Tensor folded_weights_, folded_bias_;
  // The input of the last Forward, whose reordered copy in
  // forward_src.buffer Backward reuses; cleared when a new cache entry may
  // have evicted that buffer.
  const void* last_input_ = nullptr;
  Shape last_input_shape_;
  bool last_input_bf16_ = false;  // the products' precision
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_LAYERS_CONV2D_LAYER_H_
