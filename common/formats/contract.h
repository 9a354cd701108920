// The terms of the wire contract (distill.v1.SoftTargetContract), version 2:
// what a teacher names about itself and the data it streams, and how a
// student compares them term by term.
//
//   TeacherIdentity      weights_hash (the weights alone), architecture, input
//                        spec, precision (and later ensemble members and rule);
//                        teacher_hash = TeacherHash(identity) summarises them.
//   TransferSetIdentity  a fingerprint of the transfer set's pixels and labels
//                        in order, its range in the teacher's data and the name
//                        of the order scheme (kOrderScheme), which fixes the
//                        example ids of every batch of every shard.
#ifndef DISTILLERY_COMMON_FORMATS_CONTRACT_H_
#define DISTILLERY_COMMON_FORMATS_CONTRACT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/dataset.h"
#include "distill/v1/checkpoint.pb.h"
#include "distill/v1/teacher.pb.h"

namespace distillery {

// The contract version this build speaks: a server sends it, a student
// refuses a newer one.
inline constexpr uint32_t kContractVersion = 2;

// The order scheme of TransferSetIdentity: epoch e of a set of n examples is
// ShuffledIndices(n, seed, e) (Fisher-Yates over std::mt19937_64 seeded with
// SplitMix64(seed ^ SplitMix64(e))); shard s of k takes the positions p with
// p % k == s, in order; batch b of size B is the shard's [b*B, (b+1)*B).
inline constexpr char kOrderScheme[] = "fisher-yates-mt19937_64/v1";

// TeacherIdentity.source of networks trained here.
inline constexpr char kSourceDistillery[] = "trained by distillery";

// TeacherIdentity.source of the network in `checkpoint`: "imported from
// <metadata source>" when its metadata names a source (the ONNX import
// writes "onnx:<producer_name> <producer_version>", e.g. "onnx:pytorch
// 1.13.1"), else kSourceDistillery.
std::string TeacherSource(const distill::v1::Checkpoint& checkpoint);

// The summary of everything that decides the teacher's logits: weights_hash,
// architecture, input spec, precision, ensemble rule and members (not
// `source`, which is informational). 16 hex digits. Any new term of
// TeacherIdentity must be added here.
std::string TeacherHash(const distill::v1::TeacherIdentity& identity);

// The weights_hash of an ensemble teacher: a fingerprint of its members'
// weights hashes, in the members' order. 16 hex digits.
std::string EnsembleWeightsHash(const std::vector<std::string>& member_weights_hashes);

// A fingerprint of the examples of `data` in order: their pixels and, when
// present, their labels, with the image shape. 16 hex digits.
std::string DatasetFingerprint(const Dataset& data);

// The example ids of shard `shard` of `num_shards` of epoch `epoch` of a
// transfer set of `size` examples under kOrderScheme. InvalidArgument for a
// shard that does not exist or is empty.
absl::StatusOr<std::vector<int64_t>> ShardExampleIds(int64_t size, uint64_t epoch, uint64_t seed,
                                                     uint32_t shard, uint32_t num_shards);

// Compares the terms of a teacher's identity, `got` against `expected`.
// OK when equal; otherwise FailedPrecondition naming the first term that
// differs, e.g. "weights_hash 1234... differs from abcd...".
absl::Status CompareTeacherIdentity(const distill::v1::TeacherIdentity& expected,
                                    const distill::v1::TeacherIdentity& got);

// Compares the identity of a transfer set, `got` against `expected`. OK when
// equal; otherwise FailedPrecondition naming the term, e.g. "transfer set
// range [0,5000) differs from [5000,10000)".
absl::Status CompareTransferSet(const distill::v1::TransferSetIdentity& expected,
                                const distill::v1::TransferSetIdentity& got);

// "[begin,end)" of a transfer set, for messages.
std::string RangeString(const distill::v1::TransferSetIdentity& set);

}  // namespace distillery

#endif  // DISTILLERY_COMMON_FORMATS_CONTRACT_H_
