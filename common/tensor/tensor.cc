#include "common/tensor/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace distillery {

const char* DataTypeName(DataType type) { return type == DataType::kBF16 ? "bf16" : "f32"; }

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace distillery
