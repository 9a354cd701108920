// Prometheus metrics of the teacher server (prometheus-cpp), exposed on
// http://<metrics address>/metrics.
//
// Thread-safety: all members are safe to update from any thread.
#ifndef DISTILLERY_TEACHER_SERVER_METRICS_H_
#define DISTILLERY_TEACHER_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace distillery {

class TeacherMetrics {
 public:
  // Metrics registered but not exposed (tests, benchmarks).
  TeacherMetrics();
  // Also serves them over HTTP on `address` ("0.0.0.0:9464"). Unavailable
  // when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<TeacherMetrics>> CreateExposed(const std::string& address);

  // One finished call of `method` ("GetSoftTargets", ...) with gRPC status
  // `code` (e.g. "OK", "INVALID_ARGUMENT"), `examples` examples served and
  // `seconds` from arrival to completion.
  void RecordCall(const std::string& method, const std::string& code, int64_t examples,
                  double seconds);
  // One forward pass of the dynamic batcher over `examples` examples merged
  // from `requests` requests.
  void RecordForwardPass(int64_t examples, int64_t requests);
  void SetQueueDepth(int64_t examples);
  void SetInflightCalls(int64_t calls);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* examples_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Histogram* batch_examples_;
  prometheus::Histogram* batch_requests_;
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* inflight_;
};

}  // namespace distillery

#endif  // DISTILLERY_TEACHER_SERVER_METRICS_H_
