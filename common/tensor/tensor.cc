#include "common/tensor/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace distillery {

const char* DataTypeName(DataType type) { return type == DataType::kBF16 ? "bf16" : "f32"; }

const char* LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kBlocked8:
      return "nChw8c";
    case Layout::kBlocked16:
      return "nChw16c";
    case Layout::kChannelsLast:
      return "nhwc";
    case Layout::kPlain:
      break;
  }
  return "plain";
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace distillery
