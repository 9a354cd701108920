#include "common/formats/contract.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/data/batches.h"
#include "common/util/random.h"

namespace distillery {
namespace {

// Hashes bytes 8 at a time (the tail zero-padded), after their length.
uint64_t HashBytes(uint64_t hash, const void* data, size_t size) {
  hash = HashCombine(hash, size);
  const auto* bytes = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    hash = HashCombine(hash, word);
  }
  if (i < size) {
    uint64_t word = 0;
    std::memcpy(&word, bytes + i, size - i);
    hash = HashCombine(hash, word);
  }
  return hash;
}

uint64_t HashString(uint64_t hash, const std::string& s) {
  return HashBytes(hash, s.data(), s.size());
}

uint64_t HashFloat(uint64_t hash, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return HashCombine(hash, bits);
}

uint64_t HashInput(uint64_t hash, const distill::v1::InputSpec& input) {
  hash = HashCombine(hash, input.channels());
  hash = HashCombine(hash, input.rows());
  hash = HashCombine(hash, input.cols());
  hash = HashFloat(hash, input.scale());
  hash = HashCombine(hash, static_cast<uint64_t>(input.mean_size()));
  for (float m : input.mean()) hash = HashFloat(hash, m);
  hash = HashCombine(hash, static_cast<uint64_t>(input.std_size()));
  for (float s : input.std()) hash = HashFloat(hash, s);
  return hash;
}

// PRECISION_UNSPECIFIED is read as F32.
distill::v1::Precision EffectivePrecision(distill::v1::Precision p) {
  return p == distill::v1::PRECISION_UNSPECIFIED ? distill::v1::PRECISION_F32 : p;
}

std::string Floats(const google::protobuf::RepeatedField<float>& values) {
  return absl::StrCat("[", absl::StrJoin(values, ","), "]");
}

std::string DescribeInput(const distill::v1::InputSpec& input) {
  return absl::StrCat(input.channels(), "x", input.rows(), "x", input.cols(), " scale ",
                      input.scale(), " mean ", Floats(input.mean()), " std ", Floats(input.std()));
}

absl::Status Differs(const std::string& term, const std::string& got, const std::string& expected) {
  return absl::FailedPreconditionError(
      absl::StrCat(term, " ", got, " differs from ", expected, ", the one this student trains on"));
}

}  // namespace

std::string TeacherSource(const distill::v1::Checkpoint& checkpoint) {
  const auto it = checkpoint.metadata().find("source");
  if (it == checkpoint.metadata().end() || it->second.empty()) return kSourceDistillery;
  return absl::StrCat("imported from ", it->second);
}

std::string TeacherHash(const distill::v1::TeacherIdentity& identity) {
  uint64_t hash = SplitMix64(0x5465616368657232ULL);  // "Teacher2"
  hash = HashString(hash, identity.weights_hash());
  hash = HashString(hash, identity.architecture());
  hash = HashInput(hash, identity.input());
  hash = HashCombine(hash, static_cast<uint64_t>(EffectivePrecision(identity.precision())));
  hash = HashString(hash, identity.ensemble_rule());
  hash = HashCombine(hash, static_cast<uint64_t>(identity.members_size()));
  for (const distill::v1::EnsembleMember& member : identity.members()) {
    hash = HashString(hash, member.teacher_hash());
    hash = HashString(hash, member.architecture());
    hash = HashInput(hash, member.input());
    hash = HashCombine(hash, static_cast<uint64_t>(EffectivePrecision(member.precision())));
  }
  return absl::StrFormat("%016x", hash);
}

std::string EnsembleWeightsHash(const std::vector<std::string>& member_weights_hashes) {
  uint64_t hash = SplitMix64(0x456E73656D626C65ULL);  // "Ensemble"
  hash = HashCombine(hash, static_cast<uint64_t>(member_weights_hashes.size()));
  for (const std::string& h : member_weights_hashes) hash = HashString(hash, h);
  return absl::StrFormat("%016x", hash);
}

std::string DatasetFingerprint(const Dataset& data) {
  uint64_t hash = SplitMix64(0x5472616E73666572ULL);  // "Transfer"
  hash = HashCombine(hash, static_cast<uint64_t>(data.num_examples));
  hash = HashCombine(hash, static_cast<uint64_t>(data.image_rows));
  hash = HashCombine(hash, static_cast<uint64_t>(data.image_cols));
  hash = HashBytes(hash, data.pixels.data(), data.pixels.size());
  hash = HashCombine(hash, data.has_labels() ? 1 : 0);
  hash = HashBytes(hash, data.labels.data(), data.labels.size());
  return absl::StrFormat("%016x", hash);
}

absl::StatusOr<std::vector<int64_t>> ShardExampleIds(int64_t size, uint64_t epoch, uint64_t seed,
                                                     uint32_t shard, uint32_t num_shards) {
  if (num_shards < 1 || shard >= num_shards || num_shards > size) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", shard, " of ", num_shards,
                                                   " does not exist for a transfer set of ", size,
                                                   " examples"));
  }
  const std::vector<int64_t> order = ShuffledIndices(size, seed, static_cast<int64_t>(epoch));
  std::vector<int64_t> ids;
  ids.reserve(order.size() / num_shards + 1);
  for (size_t p = shard; p < order.size(); p += num_shards) ids.push_back(order[p]);
  return ids;
}

absl::Status CompareTeacherIdentity(const distill::v1::TeacherIdentity& expected,
                                    const distill::v1::TeacherIdentity& got) {
  if (got.weights_hash() != expected.weights_hash()) {
    return Differs("weights_hash", got.weights_hash(), expected.weights_hash());
  }
  if (got.architecture() != expected.architecture()) {
    return Differs("architecture", got.architecture(), expected.architecture());
  }
  if (HashInput(0, got.input()) != HashInput(0, expected.input())) {
    return Differs("input", DescribeInput(got.input()), DescribeInput(expected.input()));
  }
  if (EffectivePrecision(got.precision()) != EffectivePrecision(expected.precision())) {
    return Differs("precision", distill::v1::Precision_Name(EffectivePrecision(got.precision())),
                   distill::v1::Precision_Name(EffectivePrecision(expected.precision())));
  }
  if (got.ensemble_rule() != expected.ensemble_rule()) {
    return Differs("ensemble_rule", absl::StrCat("\"", got.ensemble_rule(), "\""),
                   absl::StrCat("\"", expected.ensemble_rule(), "\""));
  }
  if (got.members_size() != expected.members_size()) {
    return Differs("ensemble of", absl::StrCat(got.members_size(), " members"),
                   absl::StrCat(expected.members_size()));
  }
  for (int i = 0; i < got.members_size(); ++i) {
    if (got.members(i).SerializeAsString() != expected.members(i).SerializeAsString()) {
      return Differs(absl::StrCat("ensemble member ", i), got.members(i).teacher_hash(),
                     expected.members(i).teacher_hash());
    }
  }
  return absl::OkStatus();
}

std::string RangeString(const distill::v1::TransferSetIdentity& set) {
  return absl::StrCat("[", set.range_begin(), ",", set.range_end(), ")");
}

absl::Status CompareTransferSet(const distill::v1::TransferSetIdentity& expected,
                                const distill::v1::TransferSetIdentity& got) {
  if (got.range_begin() != expected.range_begin() || got.range_end() != expected.range_end()) {
    return Differs("transfer set range", RangeString(got), RangeString(expected));
  }
  if (got.order_scheme() != expected.order_scheme()) {
    return Differs("transfer set order scheme", absl::StrCat("\"", got.order_scheme(), "\""),
                   absl::StrCat("\"", expected.order_scheme(), "\""));
  }
  if (got.fingerprint() != expected.fingerprint()) {
    return Differs(absl::StrCat("transfer set ", RangeString(got), " fingerprint"),
                   got.fingerprint(), expected.fingerprint());
  }
  return absl::OkStatus();
}

}  // namespace distillery
