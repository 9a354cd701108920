// The machine's matrix-product rate, as the benchmarks' stand-in for its
// peak: the seconds per call of a oneDNN matmul on a given shape and
// element type, averaged over enough calls (at least 50 and 0.5 s, after 20
// untimed ones). The thread count is whatever oneDNN uses at the call
// (SetComputeThreads).
#ifndef DISTILLERY_BENCH_MATMUL_RATE_H_
#define DISTILLERY_BENCH_MATMUL_RATE_H_

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "dnnl.hpp"

namespace distillery {

// Sets every element of `mem` (f32 or bf16) to 0.5: the rate does not
// depend on the values.
inline void FillWithHalf(dnnl::memory* mem) {
  const size_t bytes = mem->get_desc().get_size();
  if (mem->get_desc().data_type() == dnnl::memory::data_type::bf16) {
    auto* p = static_cast<uint16_t*>(mem->get_data_handle());
    std::fill(p, p + bytes / sizeof(uint16_t), uint16_t{0x3f00});  // 0.5 in bf16
  } else {
    auto* p = static_cast<float*>(mem->get_data_handle());
    std::fill(p, p + bytes / sizeof(float), 0.5f);
  }
}

// C(m x n) = A(m x k) B(k x n). In f32, A and C are plain and B is plain or
// (`transposed_b`) transposed in memory, as the engine's f32 passes read
// their operands. In bf16, A is plain bf16, B is bf16 in the layout oneDNN
// picks (format any, as the bf16 layers keep their weights) and C is f32,
// or bf16 with `bf16_output` (a bf16 layer feeding another).
inline double MatmulSeconds(int64_t m, int64_t n, int64_t k, bool transposed_b,
                            dnnl::memory::data_type type = dnnl::memory::data_type::f32,
                            bool bf16_output = false) {
  using Clock = std::chrono::steady_clock;
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const bool bf16 = type == dt::bf16;
  const dnnl::memory::desc a({m, k}, type, tag::ab);
  const dnnl::memory::desc b({k, n}, type, bf16 ? tag::any : transposed_b ? tag::ba : tag::ab);
  const dnnl::memory::desc c({m, n}, bf16 && bf16_output ? dt::bf16 : dt::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), engine);
  dnnl::matmul matmul(pd);
  dnnl::memory ma(a, engine), mb(pd.weights_desc(), engine), mc(c, engine);
  FillWithHalf(&ma);
  FillWithHalf(&mb);
  auto run = [&] {
    matmul.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    stream.wait();
  };
  for (int i = 0; i < 20; ++i) run();
  int calls = 0;
  const auto start = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - start).count() < 0.5 || calls < 50) {
    run();
    ++calls;
  }
  return std::chrono::duration<double>(Clock::now() - start).count() / calls;
}

}  // namespace distillery

#endif  // DISTILLERY_BENCH_MATMUL_RATE_H_
