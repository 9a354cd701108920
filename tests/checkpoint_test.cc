// Checkpoints: bit-exact round trips, atomic replacement, and refusal of
// corrupt, truncated or inconsistent files with a DataLoss error.
#include "common/formats/checkpoint.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "tests/test_util.h"

namespace distillery {
namespace {

std::string TempPath(const std::string& name) { return UniqueTempPath(name); }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::unique_ptr<Network> SmallNetwork(uint64_t seed) {
  return *Network::Create(*NetworkSpec::Parse("12-7-5-3", {1, 3, 4}, 0.f, 0.5f), seed);
}

TEST(CheckpointTest, RoundTripIsBitExact) {
  auto mlp = SmallNetwork(3);
  // Awkward values must survive too: denormals, negative zero, extremes.
  Parameter* w = mlp->Parameters()[0];
  w->value.at(0, 0) = 1e-40f;
  w->value.at(0, 1) = -0.f;
  w->value.at(0, 2) = 3.4e38f;
  const std::string path = TempPath("roundtrip.ckpt");
  ASSERT_TRUE(SaveCheckpoint(path, MakeCheckpoint(*mlp, "teacher")).ok());
  absl::StatusOr<distill::v1::Checkpoint> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->role(), "teacher");
  EXPECT_EQ(loaded->architecture().image_rows(), 3);
  absl::StatusOr<std::unique_ptr<Network>> restored = NetworkFromCheckpoint(*loaded);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->spec().ArchitectureString(), "12-7-5-3");
  // Dropout after both hidden layers survives the round trip.
  int dropouts = 0;
  for (const LayerSpec& layer : (*restored)->spec().layers) {
    if (layer.kind == LayerSpec::Kind::kDropout) {
      EXPECT_FLOAT_EQ(layer.rate, 0.5f);
      ++dropouts;
    }
  }
  EXPECT_EQ(dropouts, 2);
  std::vector<Parameter*> a = mlp->Parameters(), b = (*restored)->Parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i]->value.size(), b[i]->value.size());
    EXPECT_EQ(std::memcmp(a[i]->value.data(), b[i]->value.data(), a[i]->value.size() * 4), 0)
        << a[i]->name;
  }
  EXPECT_EQ(WeightsFingerprint(*mlp), WeightsFingerprint(**restored));
}

TEST(CheckpointTest, FingerprintChangesWithAnyWeight) {
  auto a = SmallNetwork(3), b = SmallNetwork(3);
  EXPECT_EQ(WeightsFingerprint(*a), WeightsFingerprint(*b));
  b->Parameters()[3]->value.at(0, 1) += 1e-6f;
  EXPECT_NE(WeightsFingerprint(*a), WeightsFingerprint(*b));
  EXPECT_EQ(WeightsFingerprint(*a).size(), 16u);
}

TEST(CheckpointTest, OptimizerStateRoundTrips) {
  auto mlp = SmallNetwork(4);
  auto sgd = MakeSgd(SgdConfig{});
  for (Parameter* p : mlp->Parameters())
    p->grad = RandomMatrix(p->value.rows(), p->value.cols(), 9);
  sgd->Step(mlp->Parameters(), 0.1f, 0);
  const std::string path = TempPath("state.ckpt");
  ASSERT_TRUE(SaveCheckpoint(path, MakeCheckpoint(*mlp, "student", sgd.get(), 2, 17, 5)).ok());
  auto loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->training_state().epochs_completed(), 2);
  EXPECT_EQ(loaded->training_state().steps_completed(), 17);
  auto other = MakeSgd(SgdConfig{});
  ASSERT_TRUE(RestoreOptimizerState(*loaded, *mlp, other.get()).ok());
  for (const auto& [name, m] : sgd->State()) {
    ASSERT_EQ(other->State().count(name), 1u) << name;
    EXPECT_EQ(*other->State().at(name), *m);
  }
  // State that belongs to another network is refused.
  auto wider = *Network::Create(*NetworkSpec::Parse("12-8-5-3", {1, 3, 4}), 1);
  EXPECT_EQ(RestoreOptimizerState(*loaded, *wider, other.get()).code(),
            absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, SaveReplacesAtomicallyAndLeavesNoTemporaryFile) {
  const std::string path = TempPath("atomic.ckpt");
  ASSERT_TRUE(SaveCheckpoint(path, MakeCheckpoint(*SmallNetwork(1), "student")).ok());
  ASSERT_TRUE(SaveCheckpoint(path, MakeCheckpoint(*SmallNetwork(2), "student")).ok());
  auto loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(WeightsFingerprint(**NetworkFromCheckpoint(*loaded)),
            WeightsFingerprint(*SmallNetwork(2)));
  std::ifstream temp(path + ".tmp." + std::to_string(getpid()));
  EXPECT_FALSE(temp.good());
  EXPECT_FALSE(SaveCheckpoint("/nonexistent-dir/x.ckpt", *loaded).ok());
}

// The maps (metadata, settings) are written in key order: the same contents
// give the same bytes whatever order they were filled in.
TEST(CheckpointTest, SameContentsSameBytesWhateverTheMapOrder) {
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) keys.push_back(absl::StrCat("key", i));
  distill::v1::Checkpoint forward = MakeCheckpoint(*SmallNetwork(1), "teacher");
  distill::v1::Checkpoint backward = forward;
  for (size_t i = 0; i < keys.size(); ++i) {
    (*forward.mutable_metadata())[keys[i]] = keys[i];
    (*backward.mutable_metadata())[keys[keys.size() - 1 - i]] = keys[keys.size() - 1 - i];
  }
  const std::string a = TempPath("order_a.ckpt"), b = TempPath("order_b.ckpt");
  ASSERT_TRUE(SaveCheckpoint(a, forward).ok());
  ASSERT_TRUE(SaveCheckpoint(b, backward).ok());
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_GT(read(a).size(), 40u * 10u);
  EXPECT_EQ(read(a), read(b));
}

class CorruptCheckpointTest : public testing::Test {
 protected:
  void SetUp() override {
    path_ = TempPath("corrupt.ckpt");
    ASSERT_TRUE(SaveCheckpoint(path_, MakeCheckpoint(*SmallNetwork(5), "teacher")).ok());
    good_ = ReadBytes(path_);
  }
  // Loads `bytes` written to the file and expects DataLoss mentioning
  // `fragment` and the path.
  void ExpectDataLoss(const std::string& bytes, const std::string& fragment) {
    WriteBytes(path_, bytes);
    absl::StatusOr<distill::v1::Checkpoint> loaded = LoadCheckpoint(path_);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_NE(loaded.status().message().find(fragment), std::string::npos) << loaded.status();
    EXPECT_NE(loaded.status().message().find(path_), std::string::npos) << loaded.status();
  }
  std::string path_, good_;
};

TEST_F(CorruptCheckpointTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadCheckpoint(TempPath("absent.ckpt")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CorruptCheckpointTest, EmptyAndShortFiles) {
  ExpectDataLoss("", "truncated");
  ExpectDataLoss(good_.substr(0, 10), "truncated");
}

TEST_F(CorruptCheckpointTest, WrongMagic) {
  std::string bytes = good_;
  bytes[0] = 'X';
  ExpectDataLoss(bytes, "wrong magic");
}

TEST_F(CorruptCheckpointTest, TruncatedPayload) {
  ExpectDataLoss(good_.substr(0, good_.size() - 1), "truncated");
  ExpectDataLoss(good_.substr(0, good_.size() / 2), "truncated");
}

TEST_F(CorruptCheckpointTest, TrailingBytes) { ExpectDataLoss(good_ + "junk", "unexpected bytes"); }

TEST_F(CorruptCheckpointTest, FlippedBitInWeights) {
  std::string bytes = good_;
  bytes[bytes.size() - 20] ^= 0x01;
  ExpectDataLoss(bytes, "CRC mismatch");
}

TEST_F(CorruptCheckpointTest, DecodeCheckpointVerifiesBytesInMemory) {
  absl::StatusOr<distill::v1::Checkpoint> decoded = DecodeCheckpoint("mem", good_);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->role(), "teacher");
  std::string bytes = good_;
  bytes[bytes.size() - 20] ^= 0x01;
  decoded = DecodeCheckpoint("my-name", bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(decoded.status().message().find("checkpoint my-name: CRC mismatch"), std::string::npos)
      << decoded.status();
}

TEST_F(CorruptCheckpointTest, TensorShapeWhoseProductOverflows) {
  // 2^33 x 2^33 wraps to 0 in 64 bits, the number of values sent (found by
  // fuzz/checkpoint_fuzzer; undefined behaviour before the fix).
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*SmallNetwork(5), "teacher");
  distill::v1::Tensor* state = checkpoint.mutable_training_state()->add_optimizer_state();
  state->set_name("layer0.weight.momentum");
  state->add_shape(int64_t{1} << 33);
  state->add_shape(int64_t{1} << 33);
  ASSERT_TRUE(SaveCheckpoint(path_, checkpoint).ok());
  ExpectDataLoss(ReadBytes(path_), "does not fit its shape");
}

TEST_F(CorruptCheckpointTest, ValidFrameAroundInconsistentContents) {
  // A well-framed checkpoint whose tensors do not fit its architecture.
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*SmallNetwork(5), "teacher");
  checkpoint.mutable_architecture()->mutable_layers(0)->set_units(8);
  ASSERT_TRUE(SaveCheckpoint(path_, checkpoint).ok());
  ExpectDataLoss(ReadBytes(path_), "layer0.weight");
  // Non-finite weights.
  checkpoint = MakeCheckpoint(*SmallNetwork(5), "teacher");
  checkpoint.mutable_parameters(2)->set_values(0, std::nanf(""));
  ASSERT_TRUE(SaveCheckpoint(path_, checkpoint).ok());
  ExpectDataLoss(ReadBytes(path_), "non-finite");
}

std::unique_ptr<Network> SmallConvNetwork(uint64_t seed) {
  return *Network::Create(*NetworkSpec::Parse("conv3x3:4/same+bn,maxpool2,fc:3", {2, 6, 6}), seed);
}

TEST_F(CorruptCheckpointTest, NewerFormatVersionIsRefusedNamingIt) {
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*SmallConvNetwork(1), "teacher");
  checkpoint.set_format_version(kCheckpointFormatVersion + 1);
  ASSERT_TRUE(SaveCheckpoint(path_, checkpoint).ok());
  ExpectDataLoss(ReadBytes(path_), "format version 3 is not one this release reads");
  ExpectDataLoss(ReadBytes(path_), "written by a newer release");
}

TEST_F(CorruptCheckpointTest, ConvolutionalCheckpointsWithInconsistentContents) {
  distill::v1::Checkpoint checkpoint = MakeCheckpoint(*SmallConvNetwork(1), "teacher");
  ASSERT_EQ(checkpoint.buffers_size(), 2);
  // A missing batch-norm buffer, a buffer of the wrong shape, an unknown
  // layer kind, a kernel larger than the image, a truncated file.
  distill::v1::Checkpoint c = checkpoint;
  c.mutable_buffers()->RemoveLast();
  ASSERT_TRUE(SaveCheckpoint(path_, c).ok());
  ExpectDataLoss(ReadBytes(path_), "the network needs 2 buffer tensors, found 1");
  c = checkpoint;
  c.mutable_buffers(0)->set_shape(1, 5);
  ASSERT_TRUE(SaveCheckpoint(path_, c).ok());
  ExpectDataLoss(ReadBytes(path_), "layer1.running_mean");
  c = checkpoint;
  c.mutable_architecture()->mutable_layers(0)->set_kind("lstm");
  ASSERT_TRUE(SaveCheckpoint(path_, c).ok());
  ExpectDataLoss(ReadBytes(path_), "unknown layer kind \"lstm\"");
  c = checkpoint;
  c.mutable_architecture()->mutable_layers(0)->set_kernel_rows(9);
  ASSERT_TRUE(SaveCheckpoint(path_, c).ok());
  ExpectDataLoss(ReadBytes(path_), "invalid architecture");
  ASSERT_TRUE(SaveCheckpoint(path_, checkpoint).ok());
  const std::string good = ReadBytes(path_);
  ExpectDataLoss(good.substr(0, good.size() / 2), "truncated");
}

TEST(CheckpointTest, DescribeNamesTheLayersShapesAndVersion) {
  auto network = SmallConvNetwork(2);
  absl::StatusOr<std::string> text = DescribeCheckpoint(MakeCheckpoint(*network, "student"));
  ASSERT_TRUE(text.ok()) << text.status();
  for (const std::string& part :
       {std::string("format version:  2"), std::string("input shape:     (2, 6, 6)"),
        std::string("Conv2d(2->4, 3x3, stride 1, pad 1)"), std::string("-> (4, 6, 6)"),
        std::string("BatchNorm(4)"), std::string("-> (4, 3, 3)"), std::string("-> (3)"),
        absl::StrCat("parameters:      ", network->ParameterCount()),
        absl::StrCat("weights hash:    ", WeightsFingerprint(*network))}) {
    EXPECT_NE(text->find(part), std::string::npos) << part << " not in\n" << *text;
  }
}
}  // namespace
}  // namespace distillery
