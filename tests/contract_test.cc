// The contract's version-2 terms: their hashes and comparisons
// (common/formats/contract.h), and the student's checks of them against an
// in-process fake teacher that lies in one term at a time.
#include "common/formats/contract.h"

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "student_trainer/teacher_client.h"

namespace distillery {
namespace {

distill::v1::TeacherIdentity SomeTeacher() {
  distill::v1::TeacherIdentity t;
  t.set_weights_hash("0123456789abcdef");
  t.set_architecture("4-3-2");
  t.mutable_input()->set_channels(1);
  t.mutable_input()->set_rows(2);
  t.mutable_input()->set_cols(2);
  t.mutable_input()->set_scale(1.f / 255.f);
  t.set_precision(distill::v1::PRECISION_F32);
  t.set_source("distillery");
  return t;
}

TEST(ContractTest, TeacherHashCoversEveryTermButTheSource) {
  const distill::v1::TeacherIdentity base = SomeTeacher();
  const std::string hash = TeacherHash(base);
  EXPECT_EQ(hash.size(), 16u);
  EXPECT_EQ(hash, TeacherHash(SomeTeacher()));
  std::vector<distill::v1::TeacherIdentity> changed(7, base);
  changed[0].set_weights_hash("0123456789abcdee");
  changed[1].set_architecture("4-4-2");
  changed[2].mutable_input()->set_scale(1.f);
  changed[3].mutable_input()->add_mean(0.5f);
  changed[4].set_precision(distill::v1::PRECISION_BF16);
  changed[5].set_ensemble_rule("arithmetic");
  changed[6].add_members()->set_teacher_hash("fedcba9876543210");
  for (size_t i = 0; i < changed.size(); ++i) {
    EXPECT_NE(TeacherHash(changed[i]), hash) << i;
    EXPECT_FALSE(CompareTeacherIdentity(base, changed[i]).ok()) << i;
  }
  EXPECT_NE(CompareTeacherIdentity(base, changed[0]).message().find("weights_hash"),
            std::string::npos);
  EXPECT_NE(CompareTeacherIdentity(base, changed[4]).message().find("PRECISION_BF16"),
            std::string::npos);
  distill::v1::TeacherIdentity imported = base;
  imported.set_source("onnx:pytorch 2.1");
  EXPECT_EQ(TeacherHash(imported), hash);
  EXPECT_TRUE(CompareTeacherIdentity(base, imported).ok());
  // PRECISION_UNSPECIFIED (release 1) reads as F32.
  distill::v1::TeacherIdentity unspecified = base;
  unspecified.set_precision(distill::v1::PRECISION_UNSPECIFIED);
  EXPECT_EQ(TeacherHash(unspecified), hash);
}

TEST(ContractTest, TransferSetComparisonNamesTheTerm) {
  distill::v1::TransferSetIdentity a;
  a.set_fingerprint("1111111111111111");
  a.set_range_begin(0);
  a.set_range_end(5000);
  a.set_order_scheme(kOrderScheme);
  distill::v1::TransferSetIdentity b = a;
  EXPECT_TRUE(CompareTransferSet(a, b).ok());
  b.set_range_begin(5000);
  b.set_range_end(10000);
  EXPECT_NE(CompareTransferSet(b, a).message().find(
                "transfer set range [0,5000) differs from [5000,10000)"),
            std::string::npos)
      << CompareTransferSet(b, a);
  b = a;
  b.set_fingerprint("2222222222222222");
  EXPECT_NE(CompareTransferSet(a, b).message().find("fingerprint 2222222222222222 differs"),
            std::string::npos);
  b = a;
  b.set_order_scheme("other/v1");
  EXPECT_NE(CompareTransferSet(a, b).message().find("order scheme"), std::string::npos);
}

TEST(ContractTest, DatasetFingerprintCoversPixelsLabelsAndOrder) {
  Dataset data;
  data.num_examples = 3;
  data.image_rows = data.image_cols = 2;
  data.pixels = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  data.labels = {0, 1, 2};
  const std::string print = DatasetFingerprint(data);
  Dataset pixel = data, label = data, order = data;
  pixel.pixels[11] = 13;
  label.labels[2] = 3;
  std::swap(order.pixels[0], order.pixels[4]);
  EXPECT_NE(DatasetFingerprint(pixel), print);
  EXPECT_NE(DatasetFingerprint(label), print);
  EXPECT_NE(DatasetFingerprint(order), print);
  data.labels.clear();
  EXPECT_NE(DatasetFingerprint(data), print);
}

// A teacher of 2x2 images and 2 classes with a transfer set of 4 examples,
// whose answers can be made to lie.
class FakeTeacher final : public distill::v1::Teacher::Service {
 public:
  uint32_t info_version = kContractVersion;
  uint32_t batch_version = kContractVersion;
  bool shuffle_ids = false;
  uint64_t range_begin = 0;

  distill::v1::SoftTargetContract Contract() const {
    distill::v1::SoftTargetContract c;
    c.set_contract_version(kContractVersion);
    *c.mutable_teacher() = SomeTeacher();
    c.set_teacher_hash(TeacherHash(c.teacher()));
    c.set_temperature(1.f);
    c.set_representation(distill::v1::PROBABILITIES);
    c.set_dtype(distill::v1::FLOAT32);
    c.set_num_classes(2);
    distill::v1::TransferSetIdentity* set = c.mutable_transfer_set();
    set->set_fingerprint("1111111111111111");
    set->set_range_begin(range_begin);
    set->set_range_end(range_begin + 4);
    set->set_order_scheme(kOrderScheme);
    return c;
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const distill::v1::GetModelInfoRequest*,
                            distill::v1::ModelInfo* info) override {
    *info->mutable_contract() = Contract();
    info->mutable_contract()->set_contract_version(info_version);
    info->set_teacher_hash(info->contract().teacher_hash());
    info->set_architecture("4-3-2");
    info->set_image_rows(2);
    info->set_image_cols(2);
    info->set_image_channels(1);
    info->set_input_scale(1.f / 255.f);
    info->set_num_classes(2);
    info->set_default_temperature(1.f);
    info->set_max_batch_size(4);
    info->set_max_message_bytes(1 << 20);
    info->set_transfer_set_size(4);
    return grpc::Status::OK;
  }

  grpc::Status StreamTransferSet(grpc::ServerContext*, const distill::v1::TransferSetRequest* r,
                                 grpc::ServerWriter<distill::v1::TransferBatch>* writer) override {
    std::vector<int64_t> ids =
        *ShardExampleIds(4, r->epoch(), r->seed(), r->shard_index(), r->num_shards());
    if (shuffle_ids) std::swap(ids.front(), ids.back());
    const uint64_t num_batches = (ids.size() + r->batch_size() - 1) / r->batch_size();
    for (uint64_t b = r->start_batch(); b < num_batches; ++b) {
      distill::v1::TransferBatch batch;
      *batch.mutable_contract() = Contract();
      batch.mutable_contract()->set_contract_version(batch_version);
      batch.set_batch_index(b);
      batch.set_num_batches(num_batches);
      const uint64_t end = std::min<uint64_t>(ids.size(), (b + 1) * r->batch_size());
      for (uint64_t i = b * r->batch_size(); i < end; ++i) {
        batch.add_example_ids(static_cast<uint64_t>(ids[i]));
        batch.mutable_pixels_u8()->append(4, static_cast<char>(ids[i]));
        batch.mutable_targets()->add_values(0.25f);
        batch.mutable_targets()->add_values(0.75f);
      }
      batch.mutable_targets()->set_num_examples(static_cast<uint32_t>(batch.example_ids_size()));
      batch.mutable_targets()->set_width(2);
      writer->Write(batch);
    }
    return grpc::Status::OK;
  }
};

class ContractClientTest : public testing::Test {
 protected:
  void Start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }
  absl::StatusOr<std::unique_ptr<TeacherClient>> Connect() {
    TeacherClientConfig config;
    config.target = "127.0.0.1:" + std::to_string(port_);
    config.give_up_after = absl::Seconds(5);
    return TeacherClient::Connect(config);
  }
  static distill::v1::TransferSetRequest Request() {
    distill::v1::TransferSetRequest request;
    request.set_seed(3);
    request.set_num_shards(1);
    request.set_batch_size(2);
    request.mutable_options()->set_temperature(1.f);
    return request;
  }
  // Streams Request(); the batches that reached the sink are counted.
  absl::Status Stream(TeacherClient& client, int* delivered) {
    *delivered = 0;
    return client.StreamTransferSet(Request(), [delivered](const distill::v1::TransferBatch&) {
      ++*delivered;
      return true;
    });
  }
  FakeTeacher fake_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(ContractClientTest, HonestTeacherIsAccepted) {
  Start();
  auto client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->input_size(), 4);
  int delivered = 0;
  EXPECT_TRUE(Stream(**client, &delivered).ok());
  EXPECT_EQ(delivered, 2);
}

TEST_F(ContractClientTest, NewerContractVersionIsRefusedNamingIt) {
  fake_.info_version = kContractVersion + 1;
  Start();
  auto client = Connect();
  ASSERT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition) << client.status();
  EXPECT_NE(client.status().message().find("contract version 3"), std::string::npos)
      << client.status();
  // Also in the middle of a stream (an upgraded replica).
  fake_.info_version = kContractVersion;
  fake_.batch_version = kContractVersion + 1;
  client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  int delivered = 0;
  absl::Status s = Stream(**client, &delivered);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("contract version 3"), std::string::npos) << s;
  EXPECT_EQ(delivered, 0);
}

TEST_F(ContractClientTest, ExampleIdsOutsideTheOrderSchemeAreRefused) {
  fake_.shuffle_ids = true;
  Start();
  auto client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  int delivered = 0;
  absl::Status s = Stream(**client, &delivered);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("the order scheme gives"), std::string::npos) << s;
  EXPECT_EQ(delivered, 0);
}

TEST_F(ContractClientTest, AnotherTransferSetIsRefusedNamingTheRanges) {
  Start();
  auto client = Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  fake_.range_begin = 4;  // the replica now serves other data
  int delivered = 0;
  absl::Status s = Stream(**client, &delivered);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("transfer set range [4,8) differs from [0,4)"), std::string::npos)
      << s;
  EXPECT_EQ(delivered, 0);
}

}  // namespace
}  // namespace distillery
