#include "teacher_server/metrics.h"

#include "absl/strings/str_cat.h"

namespace distillery {

TeacherMetrics::TeacherMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("distill_requests_total")
                   .Help("Finished calls by method and gRPC status code")
                   .Register(*registry_);
  examples_ = &prometheus::BuildCounter()
                   .Name("distill_examples_total")
                   .Help("Examples whose soft targets were served, by method")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("distill_request_latency_seconds")
                  .Help("Time from a call's arrival to its completion, by method")
                  .Register(*registry_);
  auto& batch = prometheus::BuildHistogram()
                    .Name("distill_forward_pass_examples")
                    .Help("Examples per forward pass of the dynamic batcher")
                    .Register(*registry_);
  batch_examples_ = &batch.Add({}, prometheus::Histogram::BucketBoundaries{
                                       1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096});
  auto& merged = prometheus::BuildHistogram()
                     .Name("distill_forward_pass_requests")
                     .Help("Requests merged into one forward pass")
                     .Register(*registry_);
  batch_requests_ =
      &merged.Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128});
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("distill_queue_depth_examples")
                      .Help("Examples waiting for a forward pass")
                      .Register(*registry_)
                      .Add({});
  inflight_ = &prometheus::BuildGauge()
                   .Name("distill_inflight_calls")
                   .Help("Calls being served")
                   .Register(*registry_)
                   .Add({});
}

absl::StatusOr<std::unique_ptr<TeacherMetrics>> TeacherMetrics::CreateExposed(
    const std::string& address) {
  auto metrics = std::make_unique<TeacherMetrics>();
  try {
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  return metrics;
}

void TeacherMetrics::RecordCall(const std::string& method, const std::string& code,
                                int64_t examples, double seconds) {
  requests_->Add({{"method", method}, {"code", code}}).Increment();
  if (examples > 0) examples_->Add({{"method", method}}).Increment(static_cast<double>(examples));
  latency_
      ->Add({{"method", method}},
            prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                    0.1, 0.2, 0.5, 1, 2, 5})
      .Observe(seconds);
}

void TeacherMetrics::RecordForwardPass(int64_t examples, int64_t requests) {
  batch_examples_->Observe(static_cast<double>(examples));
  batch_requests_->Observe(static_cast<double>(requests));
}

void TeacherMetrics::SetQueueDepth(int64_t examples) {
  queue_depth_->Set(static_cast<double>(examples));
}
void TeacherMetrics::SetInflightCalls(int64_t calls) { inflight_->Set(static_cast<double>(calls)); }

}  // namespace distillery
