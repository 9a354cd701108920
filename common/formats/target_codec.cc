#include "common/formats/target_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace distillery {

using distill::v1::DType;
using distill::v1::Representation;

uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t exponent = (bits >> 23) & 0xFFu;
  uint32_t mantissa = bits & 0x7FFFFFu;
  if (exponent == 0xFF) {  // infinity or NaN
    return static_cast<uint16_t>(sign | 0x7C00u | (mantissa != 0 ? 0x200u : 0u));
  }
  const int32_t half_exponent = static_cast<int32_t>(exponent) - 127 + 15;
  if (half_exponent >= 0x1F) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow
  if (half_exponent <= 0) {                                                 // subnormal or zero
    if (half_exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - half_exponent);
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ++half_mantissa;
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  uint32_t half = sign | (static_cast<uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const uint32_t remainder = mantissa & 0x1FFFu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u))) ++half;  // may carry: fine
  return static_cast<uint16_t>(half);
}

float HalfToFloat(uint16_t half) {
  const uint32_t sign = (static_cast<uint32_t>(half) & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  uint32_t mantissa = half & 0x3FFu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int32_t e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3FFu) << 13);
    }
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

absl::StatusOr<distill::v1::SoftTargetContract> ResolveTargetOptions(
    const distill::v1::TargetOptions& options, uint32_t num_classes, float default_temperature,
    const std::string& teacher_hash) {
  distill::v1::SoftTargetContract contract;
  contract.set_teacher_hash(teacher_hash);
  contract.set_num_classes(num_classes);
  const float temperature = options.has_temperature() ? options.temperature() : default_temperature;
  RETURN_IF_ERROR(ValidateTemperature(temperature));
  contract.set_temperature(temperature);
  switch (options.representation()) {
    case distill::v1::REPRESENTATION_UNSPECIFIED:
    case distill::v1::PROBABILITIES:
      contract.set_representation(distill::v1::PROBABILITIES);
      break;
    case distill::v1::LOGITS:
      contract.set_representation(distill::v1::LOGITS);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown representation ", options.representation()));
  }
  switch (options.dtype()) {
    case distill::v1::DTYPE_UNSPECIFIED:
    case distill::v1::FLOAT32:
      contract.set_dtype(distill::v1::FLOAT32);
      break;
    case distill::v1::FLOAT16:
      contract.set_dtype(distill::v1::FLOAT16);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", options.dtype()));
  }
  if (options.top_k() > num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", options.top_k(), " exceeds the ", num_classes, " classes"));
  }
  contract.set_top_k(options.top_k() == num_classes ? 0 : options.top_k());
  return contract;
}

absl::Status EncodeTargets(const Tensor& logits, const distill::v1::SoftTargetContract& contract,
                           TemperatureSoftmax* softmax, distill::v1::Targets* targets) {
  Tensor probabilities;
  const Tensor* values = &logits;
  if (contract.representation() == distill::v1::PROBABILITIES) {
    RETURN_IF_ERROR(softmax->Compute(logits, contract.temperature(), &probabilities));
    // Finite logits over a tiny (but valid) temperature can overflow; NaN
    // would also break the top-k sort below.
    for (int64_t i = 0; i < probabilities.size(); ++i) {
      if (!std::isfinite(probabilities.data()[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("temperature ", contract.temperature(),
                         " is too small for these logits: their softmax is not finite"));
      }
    }
    values = &probabilities;
  }
  return EncodeTargetValues(*values, contract, targets);
}

absl::Status EncodeTargetValues(const Tensor& values,
                                const distill::v1::SoftTargetContract& contract,
                                distill::v1::Targets* targets) {
  const int64_t rows = values.rows(), classes = values.cols();
  const int64_t k = contract.top_k() > 0 ? contract.top_k() : classes;
  targets->set_num_examples(static_cast<uint32_t>(rows));
  targets->set_width(static_cast<uint32_t>(k));
  std::vector<float> row_values(static_cast<size_t>(rows * k));
  if (contract.top_k() > 0) {
    std::vector<int> order(classes);
    targets->mutable_class_indices()->Reserve(static_cast<int>(rows * k));
    for (int64_t n = 0; n < rows; ++n) {
      const float* row = values.row(n);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [row](int a, int b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      for (int64_t j = 0; j < k; ++j) {
        row_values[n * k + j] = row[order[j]];
        targets->add_class_indices(static_cast<uint32_t>(order[j]));
      }
    }
  } else {
    std::copy(values.data(), values.data() + rows * classes, row_values.begin());
  }
  if (contract.dtype() == distill::v1::FLOAT16) {
    std::string bytes(row_values.size() * 2, '\0');
    for (size_t i = 0; i < row_values.size(); ++i) {
      const uint16_t h = FloatToHalf(row_values[i]);
      bytes[2 * i] = static_cast<char>(h & 0xFF);
      bytes[2 * i + 1] = static_cast<char>(h >> 8);
    }
    targets->set_values_f16(std::move(bytes));
  } else {
    targets->mutable_values()->Assign(row_values.begin(), row_values.end());
  }
  return absl::OkStatus();
}

namespace {

// The values sent, as floats: exactly rows x width of them (the width is the
// contract's top_k, or its classes), fp16 or f32 as the contract says, every
// one finite. Counts are compared before anything is allocated.
absl::StatusOr<std::vector<float>> ReadTargetValues(
    const distill::v1::Targets& targets, const distill::v1::SoftTargetContract& contract) {
  const int64_t rows = targets.num_examples();
  const int64_t classes = contract.num_classes();
  const int64_t width = targets.width();
  const int64_t expected_width = contract.top_k() > 0 ? contract.top_k() : classes;
  if (classes < 1 || width != expected_width) {
    return absl::DataLossError(
        absl::StrCat("targets are ", width, " wide, the contract says ", expected_width));
  }
  // rows and width are below 2^32, so their product fits in 64 unsigned bits
  // (not always in int64_t).
  const uint64_t expected_count = static_cast<uint64_t>(rows) * static_cast<uint64_t>(width);
  const bool fp16 = contract.dtype() == distill::v1::FLOAT16;
  const uint64_t sent_count =
      fp16 ? targets.values_f16().size() / 2 : static_cast<uint64_t>(targets.values_size());
  if (fp16 && (sent_count != expected_count || targets.values_f16().size() % 2 != 0)) {
    return absl::DataLossError(absl::StrCat("expected ", expected_count, " fp16 targets (", rows,
                                            " rows of ", width, "), got ",
                                            targets.values_f16().size(), " bytes"));
  }
  if (!fp16 && sent_count != expected_count) {
    return absl::DataLossError(absl::StrCat("expected ", expected_count, " target values (", rows,
                                            " rows of ", width, "), got ", sent_count));
  }
  const int64_t count = static_cast<int64_t>(expected_count);
  std::vector<float> values(static_cast<size_t>(count));
  if (fp16) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(targets.values_f16().data());
    for (int64_t i = 0; i < count; ++i) {
      values[i] = HalfToFloat(static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
    }
  } else {
    std::copy(targets.values().begin(), targets.values().end(), values.begin());
  }
  for (float v : values) {
    if (!std::isfinite(v)) return absl::DataLossError("targets hold a non-finite value");
  }
  return values;
}

// Top-k rows spread over every class: the classes not sent get the row's
// smallest logit, or an equal share of the probability left over.
absl::StatusOr<Tensor> ExpandTopK(const distill::v1::Targets& targets, int64_t classes, bool logits,
                                  const std::vector<float>& values) {
  const int64_t rows = targets.num_examples();
  const int64_t width = targets.width();
  if (targets.class_indices_size() != static_cast<int64_t>(values.size())) {
    return absl::DataLossError("top-k targets without one class index per value");
  }
  Tensor full(rows, classes);
  for (int64_t n = 0; n < rows; ++n) {
    const auto row = values.begin() + n * width;
    float filler = 0.f;
    if (logits) {
      filler = *std::min_element(row, row + width);
    } else {
      double sent = 0;
      for (int64_t j = 0; j < width; ++j) sent += row[j];
      filler =
          classes > width ? static_cast<float>(std::max(0.0, 1.0 - sent) / (classes - width)) : 0.f;
    }
    float* out = full.row(n);
    std::fill(out, out + classes, filler);
    for (int64_t j = 0; j < width; ++j) {
      const uint32_t c = targets.class_indices(static_cast<int>(n * width + j));
      if (c >= classes) {
        return absl::DataLossError(absl::StrCat("class index ", c, " out of range"));
      }
      out[c] = row[j];
    }
  }
  return full;
}

}  // namespace

absl::Status DecodeTargets(const distill::v1::Targets& targets,
                           const distill::v1::SoftTargetContract& contract,
                           TemperatureSoftmax* softmax, Tensor* probabilities) {
  ASSIGN_OR_RETURN(const std::vector<float> values, ReadTargetValues(targets, contract));
  const int64_t classes = contract.num_classes();
  const bool logits = contract.representation() == distill::v1::LOGITS;
  Tensor full;
  if (contract.top_k() > 0) {
    ASSIGN_OR_RETURN(full, ExpandTopK(targets, classes, logits, values));
  } else {
    full = Tensor(targets.num_examples(), classes);
    std::copy(values.begin(), values.end(), full.data());
  }
  if (logits) {
    RETURN_IF_ERROR(softmax->Compute(full, contract.temperature(), probabilities));
    // Finite logits over a tiny (but valid) temperature can still overflow.
    for (int64_t i = 0; i < probabilities->size(); ++i) {
      if (!std::isfinite(probabilities->data()[i])) {
        return absl::DataLossError(absl::StrCat(
            "the logits sent give non-finite probabilities at T=", contract.temperature()));
      }
    }
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < full.size(); ++i) {
    if (full.data()[i] < 0.f) return absl::DataLossError("negative probability in targets");
  }
  *probabilities = std::move(full);
  return absl::OkStatus();
}

}  // namespace distillery
