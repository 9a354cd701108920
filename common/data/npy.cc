// NumPy .npy reading, and a data set held as .npy files in a directory. See
// npy.h for the format and the contract.
//
// Memory safety against hostile input: a .npy payload is compared with its
// header before it is copied, so no allocation is ever sized by a header alone.
#include "common/data/npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/data/npy_internal.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

using npy_internal::kMembers;
using npy_internal::Le16;
using npy_internal::Le32;
using npy_internal::ReadWholeFile;

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicBytes = 6;
// The largest element count accepted, as for IDX.
constexpr uint64_t kMaxElements = uint64_t{1} << 31;

std::string ShapeText(const std::vector<uint64_t>& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), shape.size() == 1 ? ",)" : ")");
}

// A strict reader of the header dict (see npy.h). Every error is DataLoss,
// "malformed header", with what was expected and where.
class HeaderParser {
 public:
  HeaderParser(const std::string& name, std::string_view text) : name_(name), text_(text) {}

  absl::Status Parse(std::string* descr, bool* fortran_order, std::vector<uint64_t>* shape) {
    SkipSpaces();
    RETURN_IF_ERROR(Expect('{'));
    bool have_descr = false, have_fortran = false, have_shape = false;
    while (true) {
      SkipSpaces();
      if (Peek() == '}') break;
      std::string key;
      RETURN_IF_ERROR(ParseString(&key));
      SkipSpaces();
      RETURN_IF_ERROR(Expect(':'));
      SkipSpaces();
      if (key == "descr") {
        if (have_descr) return Error("duplicate key 'descr'");
        have_descr = true;
        if (Peek() == '[') {
          return absl::InvalidArgumentError(
              absl::StrCat(name_,
                           ": structured dtypes (a 'descr' list) are not supported; save a plain "
                           "integer array"));
        }
        RETURN_IF_ERROR(ParseString(descr));
      } else if (key == "fortran_order") {
        if (have_fortran) return Error("duplicate key 'fortran_order'");
        have_fortran = true;
        RETURN_IF_ERROR(ParseBool(fortran_order));
      } else if (key == "shape") {
        if (have_shape) return Error("duplicate key 'shape'");
        have_shape = true;
        RETURN_IF_ERROR(ParseShape(shape));
      } else {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      SkipSpaces();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() != '}') return Error("expected ',' or '}'");
    }
    ++pos_;  // '}'
    if (!have_descr || !have_fortran || !have_shape) {
      return Error(absl::StrCat("missing key '",
                                !have_descr ? "descr" : (!have_fortran ? "fortran_order" : "shape"),
                                "'"));
    }
    // Only space padding, then the final newline.
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
    if (pos_ + 1 != text_.size() || text_[pos_] != '\n') {
      return Error("the dict must be followed only by spaces and a final '\\n'");
    }
    return absl::OkStatus();
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void SkipSpaces() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  absl::Status Error(const std::string& what) const {
    return absl::DataLossError(
        absl::StrCat(name_, ": malformed .npy header at byte ", pos_, ": ", what));
  }
  absl::Status Expect(char c) {
    if (Peek() != c) return Error(absl::StrCat("expected '", std::string(1, c), "'"));
    ++pos_;
    return absl::OkStatus();
  }
  // A quoted string without escapes, of printable ASCII.
  absl::Status ParseString(std::string* out) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++pos_;
    out->clear();
    while (pos_ < text_.size() && text_[pos_] != quote) {
      const char c = text_[pos_];
      if (c == '\\' || c < 0x20 || c > 0x7e) return Error("unsupported character in a string");
      out->push_back(c);
      ++pos_;
    }
    if (pos_ >= text_.size()) return Error("unterminated string");
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ParseBool(bool* out) {
    const std::string_view rest = text_.substr(pos_);
    if (rest.substr(0, 4) == "True") {
      *out = true;
      pos_ += 4;
    } else if (rest.substr(0, 5) == "False") {
      *out = false;
      pos_ += 5;
    } else {
      return Error("expected True or False");
    }
    return absl::OkStatus();
  }
  absl::Status ParseInt(uint64_t* out) {
    if (Peek() < '0' || Peek() > '9') return Error("expected a non-negative integer");
    uint64_t v = 0;
    while (Peek() >= '0' && Peek() <= '9') {
      const uint64_t digit = static_cast<uint64_t>(Peek() - '0');
      if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        return Error("dimension too large");
      }
      v = v * 10 + digit;
      ++pos_;
    }
    *out = v;
    return absl::OkStatus();
  }
  // "()", "(n,)", "(a, b)", "(a, b,)".
  absl::Status ParseShape(std::vector<uint64_t>* shape) {
    shape->clear();
    RETURN_IF_ERROR(Expect('('));
    SkipSpaces();
    bool trailing_comma = false;
    while (Peek() != ')') {
      uint64_t d = 0;
      RETURN_IF_ERROR(ParseInt(&d));
      shape->push_back(d);
      if (shape->size() > 32) return Error("more than 32 dimensions");
      SkipSpaces();
      trailing_comma = false;
      if (Peek() == ',') {
        ++pos_;
        trailing_comma = true;
        SkipSpaces();
      } else if (Peek() != ')') {
        return Error("expected ',' or ')' in the shape");
      }
    }
    ++pos_;
    // Python: "(5)" is the integer 5, not a tuple.
    if (shape->size() == 1 && !trailing_comma) return Error("a 1-tuple shape needs a comma");
    return absl::OkStatus();
  }

  const std::string& name_;
  std::string_view text_;
  size_t pos_ = 0;
};

// Interprets a dtype string: sets item_bytes and is_signed, or refuses it.
absl::Status ParseDescr(const std::string& name, const std::string& descr, NpyArray* array) {
  if (descr.size() >= 2 && descr[1] == 'O') {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": dtype '", descr,
                     "' is an object array (pickled Python objects): refused, never unpickled"));
  }
  if (!descr.empty() && descr[0] == '>') {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": big-endian dtype '", descr,
                     "' is not supported: save it little-endian (arr.astype('<",
                     descr.substr(std::min<size_t>(1, descr.size())), "'))"));
  }
  static const struct {
    const char* descr;
    int bytes;
    bool is_signed;
  } kTypes[] = {{"|u1", 1, false}, {"|i1", 1, true}, {"<u2", 2, false}, {"<i2", 2, true},
                {"<u4", 4, false}, {"<i4", 4, true}, {"<u8", 8, false}, {"<i8", 8, true}};
  for (const auto& t : kTypes) {
    if (descr == t.descr) {
      array->descr = descr;
      array->item_bytes = t.bytes;
      array->is_signed = t.is_signed;
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": dtype '", descr,
                   "' is not supported: only the integer dtypes |u1 |i1 <u2 <i2 <u4 <i4 <u8 <i8 "
                   "are read"));
}

// The planar (count, channels, rows, cols) copy of (count, rows, cols,
// channels) pixels.
std::vector<uint8_t> InterleavedToPlanar(const std::vector<uint8_t>& interleaved, int64_t count,
                                         int64_t plane, int channels) {
  std::vector<uint8_t> planar(interleaved.size());
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* src = interleaved.data() + i * plane * channels;
    uint8_t* dst = planar.data() + i * plane * channels;
    for (int64_t p = 0; p < plane; ++p) {
      for (int c = 0; c < channels; ++c) dst[c * plane + p] = src[p * channels + c];
    }
  }
  return planar;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Reorders the elements of a Fortran-order (column-major) array into C
// order: C order's element (i0, ..., ik) is Fortran order's element at
// offset i0 + d0 * (i1 + d1 * (i2 + ...)).
void FortranToCOrder(NpyArray* array) {
  const std::vector<uint64_t>& dims = array->shape;
  const size_t rank = dims.size();
  if (rank < 2) return;  // the same bytes
  const size_t item = static_cast<size_t>(array->item_bytes);
  std::vector<uint64_t> stride(rank, 1);  // Fortran strides, in elements
  for (size_t k = 1; k < rank; ++k) stride[k] = stride[k - 1] * dims[k - 1];
  std::vector<uint8_t> c_order(array->data.size());
  std::vector<uint64_t> index(rank, 0);
  uint64_t from = 0;
  const uint64_t elements = array->num_elements();
  for (uint64_t e = 0; e < elements; ++e) {
    std::memcpy(&c_order[e * item], &array->data[from * item], item);
    for (size_t k = rank; k-- > 0;) {  // the next C-order index, last dimension fastest
      if (++index[k] < dims[k]) {
        from += stride[k];
        break;
      }
      from -= stride[k] * (dims[k] - 1);
      index[k] = 0;
    }
  }
  array->data = std::move(c_order);
}

}  // namespace

namespace npy_internal {

absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": is a directory, not a file"));
  }
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot stat: ", ec.message()));
  std::vector<uint8_t> bytes(size);
  if (std::fread(bytes.data(), 1, bytes.size(), file.get()) != bytes.size()) {
    return absl::DataLossError(
        absl::StrCat(path, ": read error or file truncated while reading ", size, " bytes"));
  }
  return bytes;
}

absl::Status CheckSameImageShape(const std::string& name, const MnistFormatData& data) {
  if (data.train.example_shape() != data.test.example_shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": train images are ", ShapeString(data.train.example_shape()),
                     " but test images are ", ShapeString(data.test.example_shape())));
  }
  return absl::OkStatus();
}

}  // namespace npy_internal

int64_t NpyArray::Int(uint64_t i) const {
  const uint8_t* p = data.data() + i * item_bytes;
  uint64_t v = 0;
  for (int b = 0; b < item_bytes; ++b) v |= uint64_t{p[b]} << (8 * b);
  if (is_signed) {
    if (item_bytes < 8 && (v >> (8 * item_bytes - 1)) != 0) {
      v |= ~uint64_t{0} << (8 * item_bytes);  // sign extension
    }
    return static_cast<int64_t>(v);
  }
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? -1
                                                                        : static_cast<int64_t>(v);
}

absl::StatusOr<NpyArray> ParseNpy(const std::string& name, const std::vector<uint8_t>& bytes) {
  if (bytes.size() < kNpyMagicBytes + 2 ||
      std::memcmp(bytes.data(), kNpyMagic, kNpyMagicBytes) != 0) {
    return absl::DataLossError(absl::StrCat(name, ": not a .npy file: ",
                                            bytes.size() < kNpyMagicBytes + 2
                                                ? "shorter than the 8-byte magic and version"
                                                : "wrong magic (must start with \\x93NUMPY)"));
  }
  const int major = bytes[6], minor = bytes[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    return absl::DataLossError(absl::StrCat(name, ": unsupported .npy version ", major, ".", minor,
                                            " (1.0, 2.0 and 3.0 are read)"));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = kNpyMagicBytes + 2 + length_bytes;
  if (bytes.size() < prefix) {
    return absl::DataLossError(absl::StrCat(name, ": truncated header: ", bytes.size(),
                                            " bytes, the header length needs ", prefix));
  }
  const uint64_t header_length =
      major == 1 ? Le16(bytes.data() + 8) : uint64_t{Le32(bytes.data() + 8)};
  if (bytes.size() - prefix < header_length) {
    return absl::DataLossError(absl::StrCat(name, ": truncated header: ", bytes.size(),
                                            " bytes, the header needs ", prefix + header_length));
  }
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + prefix),
                                static_cast<size_t>(header_length));
  std::string descr;
  bool fortran_order = false;
  NpyArray array;
  RETURN_IF_ERROR(HeaderParser(name, header).Parse(&descr, &fortran_order, &array.shape));
  RETURN_IF_ERROR(ParseDescr(name, descr, &array));
  uint64_t elements = 1;
  for (size_t d = 0; d < array.shape.size(); ++d) {
    if (array.shape[d] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": dimension ", d, " of shape ", ShapeText(array.shape), " is zero"));
    }
    if (array.shape[d] > kMaxElements || elements * array.shape[d] > kMaxElements) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": absurd shape ",
                                                     ShapeText(array.shape), ": more than 2^31 (",
                                                     kMaxElements, ") elements"));
    }
    elements *= array.shape[d];
  }
  const uint64_t payload = elements * static_cast<uint64_t>(array.item_bytes);
  const uint64_t found = bytes.size() - prefix - header_length;
  if (found < payload) {
    return absl::DataLossError(
        absl::StrCat(name, ": truncated payload: ", found, " bytes after the header, shape ",
                     ShapeText(array.shape), " of ", descr, " needs ", payload));
  }
  if (found > payload) {
    return absl::DataLossError(absl::StrCat(name, ": ", found - payload,
                                            " trailing bytes after the ", payload,
                                            "-byte payload of shape ", ShapeText(array.shape)));
  }
  array.data.assign(bytes.begin() + static_cast<ptrdiff_t>(prefix + header_length), bytes.end());
  if (fortran_order) FortranToCOrder(&array);
  return array;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadWholeFile(path));
  return ParseNpy(path, bytes);
}

absl::StatusOr<Dataset> DatasetFromNpy(const std::string& images_name, const NpyArray& images,
                                       const std::string& labels_name, const NpyArray* labels,
                                       int num_classes) {
  if (num_classes < 1 || num_classes > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes ", num_classes, " must be in [1, 256] for uint8 labels"));
  }
  if (images.descr != "|u1") {
    return absl::InvalidArgumentError(absl::StrCat(images_name, ": images must be |u1 (uint8), ",
                                                   "this array is ", images.descr));
  }
  if (images.shape.size() != 3 && images.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        images_name,
        ": images must have rank 3 (count, rows, cols) or 4 (count, rows, cols, channels), "
        "this array has shape ",
        ShapeText(images.shape)));
  }
  for (size_t d = 1; d < images.shape.size(); ++d) {
    if (images.shape[d] > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(images_name, ": image size ", ShapeText(images.shape), " too large"));
    }
  }
  Dataset data;
  data.num_examples = static_cast<int64_t>(images.shape[0]);
  data.image_rows = static_cast<int>(images.shape[1]);
  data.image_cols = static_cast<int>(images.shape[2]);
  data.channels = images.shape.size() == 4 ? static_cast<int>(images.shape[3]) : 1;
  data.num_classes = num_classes;
  data.pixels = data.channels == 1 ? images.data
                                   : InterleavedToPlanar(images.data, data.num_examples,
                                                         int64_t{data.image_rows} * data.image_cols,
                                                         data.channels);
  if (labels == nullptr) return data;
  if (labels->shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(labels_name,
                                                   ": labels must have rank 1, this array has "
                                                   "shape ",
                                                   ShapeText(labels->shape)));
  }
  if (labels->shape[0] != images.shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat(labels_name, ": ", labels->shape[0],
                                                   " labels, but ", images_name, " has ",
                                                   images.shape[0], " images"));
  }
  data.labels.resize(labels->shape[0]);
  for (uint64_t i = 0; i < labels->shape[0]; ++i) {
    const int64_t label = labels->Int(i);
    if (label < 0 || label >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(labels_name, ": label ", label, " of example ",
                                                     i, " is outside [0, ", num_classes, ")"));
    }
    data.labels[i] = static_cast<uint8_t>(label);
  }
  return data;
}

absl::StatusOr<MnistFormatData> LoadNpyDirectory(const std::string& dir) {
  NpyArray arrays[4];
  std::string paths[4];
  for (int k = 0; k < 4; ++k) {
    paths[k] = (std::filesystem::path(dir) / kMembers[k]).string();
    ASSIGN_OR_RETURN(arrays[k], ReadNpyFile(paths[k]));
  }
  MnistFormatData data;
  ASSIGN_OR_RETURN(data.train, DatasetFromNpy(paths[0], arrays[0], paths[1], &arrays[1]));
  ASSIGN_OR_RETURN(data.test, DatasetFromNpy(paths[2], arrays[2], paths[3], &arrays[3]));
  RETURN_IF_ERROR(npy_internal::CheckSameImageShape(dir, data));
  return data;
}

}  // namespace distillery
