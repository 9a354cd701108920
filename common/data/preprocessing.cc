#include "common/data/preprocessing.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/data/batches.h"

namespace distillery {

absl::Status Preprocessing::Validate(int64_t channels) const {
  if (!(std::isfinite(scale) && scale > 0.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input scale ", scale, " is not a finite number > 0"));
  }
  for (const auto* list : {&mean, &std}) {
    const char* name = list == &mean ? "mean" : "std";
    if (!list->empty() && static_cast<int64_t>(list->size()) != channels) {
      return absl::InvalidArgumentError(absl::StrCat("input ", name, " has ", list->size(),
                                                     " values for ", channels, " channel",
                                                     channels == 1 ? "" : "s"));
    }
  }
  for (float m : mean) {
    if (!std::isfinite(m)) {
      return absl::InvalidArgumentError(absl::StrCat("input mean ", m, " is not finite"));
    }
  }
  for (float s : std) {
    if (!(std::isfinite(s) && s > 0.f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input std ", s, " is not a finite number > 0"));
    }
  }
  return absl::OkStatus();
}

bool Preprocessing::IsDefault() const {
  if (scale != kPixelScale) return false;
  for (float m : mean) {
    if (m != 0.f) return false;
  }
  for (float s : std) {
    if (s != 1.f) return false;
  }
  return true;
}

float Preprocessing::ValueOf(int64_t c, float x) const {
  const float scaled = scale == kPixelScale ? x / 255.f : x * scale;
  const float m = Mean(c), s = Std(c);
  if (m == 0.f && s == 1.f) return scaled;
  return (scaled - m) / s;
}

std::vector<float> Preprocessing::Table(int64_t channels) const {
  std::vector<float> table(static_cast<size_t>(channels) * 256);
  for (int64_t c = 0; c < channels; ++c) {
    for (int p = 0; p < 256; ++p) table[c * 256 + p] = Value(c, p);
  }
  return table;
}

uint8_t Preprocessing::Pixel(int64_t c, float input) const {
  // Invert in double, then correct by comparing with the exact forward
  // values, so that Pixel(c, Value(c, p)) == p for every p.
  const double estimate = (static_cast<double>(input) * Std(c) + Mean(c)) / scale;
  if (!(estimate > 0.0)) return 0;  // also NaN
  if (estimate >= 255.0) return 255;
  int best = static_cast<int>(std::lround(estimate));
  float best_error = std::fabs(Value(c, best) - input);
  for (int p : {best - 1, best + 1}) {
    if (p < 0 || p > 255) continue;
    const float error = std::fabs(Value(c, p) - input);
    if (error < best_error) best = p, best_error = error;
  }
  return static_cast<uint8_t>(best);
}

std::string Preprocessing::Describe() const {
  auto list = [](const std::vector<float>& v, const char* empty) {
    return v.empty() ? std::string(empty) : absl::StrCat("[", absl::StrJoin(v, ","), "]");
  };
  return absl::StrCat("scale ", scale, ", mean ", list(mean, "0"), ", std ", list(std, "1"));
}

absl::StatusOr<std::vector<float>> ParseFloatList(const std::string& text,
                                                  const std::string& what) {
  std::vector<float> values;
  if (text.empty()) return values;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    float v = 0.f;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(item), &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": \"", item, "\" is not a number (give a comma-separated list)"));
    }
    values.push_back(v);
  }
  return values;
}

void ApplyPixelTable(const std::vector<float>& table, int64_t channels, int64_t plane,
                     int64_t examples, const uint8_t* pixels, float* out) {
  for (int64_t n = 0; n < examples; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float* values = table.data() + c * 256;
      for (int64_t i = 0; i < plane; ++i) *out++ = values[*pixels++];
    }
  }
}

void ApplyToValues(const Preprocessing& preprocessing, int64_t channels, int64_t plane,
                   int64_t examples, const float* in, float* out) {
  for (int64_t n = 0; n < examples; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t i = 0; i < plane; ++i) *out++ = preprocessing.ValueOf(c, *in++);
    }
  }
}

void GatherPreprocessedBatch(const Dataset& data, absl::Span<const int64_t> indices,
                             const Preprocessing& preprocessing, Tensor* inputs,
                             std::vector<int>* labels) {
  GatherBatch(data, indices, 0, nullptr, inputs, labels);
  if (preprocessing.IsDefault()) return;
  const std::vector<float> table = preprocessing.Table(data.channels);
  const int64_t plane = int64_t{data.image_rows} * data.image_cols;
  for (size_t k = 0; k < indices.size(); ++k) {
    ApplyPixelTable(table, data.channels, plane, 1, data.image(indices[k]),
                    inputs->row(static_cast<int64_t>(k)));
  }
}

}  // namespace distillery
