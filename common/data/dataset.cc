// Data sets in memory: slices, ranges, filters. See dataset.h for the
// contracts.
#include "common/data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/util/status_macros.h"

namespace distillery {
namespace {

// Aborts with `message`: for broken preconditions of functions that return
// nothing (a programming error, never a data error).
[[noreturn]] void FailPrecondition(const std::string& message) {
  std::fprintf(stderr, "distillery: %s\n", message.c_str());
  std::abort();
}

// A dataset with `data`'s image shape and classes and no examples.
Dataset EmptyLike(const Dataset& data) {
  Dataset empty;
  empty.channels = data.channels;
  empty.image_rows = data.image_rows;
  empty.image_cols = data.image_cols;
  empty.num_classes = data.num_classes;
  return empty;
}

}  // namespace

absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t begin, int64_t end) {
  if (begin < 0 || begin >= end || end > data.num_examples) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice [", begin, ", ", end, ") is empty or outside [0, ", data.num_examples, ")"));
  }
  Dataset slice = EmptyLike(data);
  slice.num_examples = end - begin;
  slice.pixels.assign(data.image(begin), data.image(end));
  if (data.has_labels())
    slice.labels.assign(data.labels.begin() + begin, data.labels.begin() + end);
  return slice;
}

absl::StatusOr<HeldOutSplit> SplitHeldOut(const Dataset& data, std::pair<int64_t, int64_t> range,
                                          std::pair<int64_t, int64_t> held_out) {
  if (held_out.first < range.first || held_out.second > range.second ||
      held_out.first >= held_out.second || held_out == range) {
    return absl::InvalidArgumentError(
        absl::StrCat("the validation range [", held_out.first, ", ", held_out.second,
                     ") must lie within the training range [", range.first, ", ", range.second,
                     ") and leave examples to train on"));
  }
  HeldOutSplit split;
  ASSIGN_OR_RETURN(split.validation, SliceDataset(data, held_out.first, held_out.second));
  if (held_out.first > range.first) {
    ASSIGN_OR_RETURN(split.train, SliceDataset(data, range.first, held_out.first));
  }
  if (held_out.second < range.second) {
    ASSIGN_OR_RETURN(Dataset after, SliceDataset(data, held_out.second, range.second));
    if (split.train.num_examples == 0) {
      split.train = std::move(after);
    } else {
      AppendDataset(after, &split.train);
    }
  }
  return split;
}

absl::StatusOr<Dataset> WithoutClasses(const Dataset& data, const std::vector<int>& classes) {
  if (!data.has_labels()) {
    return absl::InvalidArgumentError("cannot drop classes from unlabeled data");
  }
  Dataset kept = EmptyLike(data);
  for (int64_t i = 0; i < data.num_examples; ++i) {
    if (std::find(classes.begin(), classes.end(), data.labels[i]) != classes.end()) continue;
    kept.pixels.insert(kept.pixels.end(), data.image(i), data.image(i) + data.input_size());
    kept.labels.push_back(data.labels[i]);
    ++kept.num_examples;
  }
  return kept;
}

void AppendDataset(const Dataset& more, Dataset* data) {
  if (more.example_shape() != data->example_shape() || more.num_classes != data->num_classes ||
      more.has_labels() != data->has_labels()) {
    FailPrecondition("AppendDataset: the data sets differ in shape, classes or labeling");
  }
  data->pixels.insert(data->pixels.end(), more.pixels.begin(), more.pixels.end());
  data->labels.insert(data->labels.end(), more.labels.begin(), more.labels.end());
  data->num_examples += more.num_examples;
}

Dataset WithoutLabels(const Dataset& data) {
  Dataset copy = EmptyLike(data);
  copy.num_examples = data.num_examples;
  copy.pixels = data.pixels;
  return copy;
}

absl::StatusOr<std::pair<int64_t, int64_t>> ParseRange(const std::string& text, int64_t size) {
  if (text.empty()) return std::make_pair(int64_t{0}, size);
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int64_t begin = 0, end = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &begin) ||
      !absl::SimpleAtoi(parts[1], &end) || begin < 0 || end > size || begin >= end) {
    return absl::InvalidArgumentError(
        absl::StrCat("range \"", text, "\" is not begin:end with 0 <= begin < end <= ", size));
  }
  return std::make_pair(begin, end);
}

}  // namespace distillery
