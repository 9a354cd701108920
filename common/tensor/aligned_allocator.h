// An allocator for std::vector whose storage starts on a cache-line (64-byte)
// boundary, for buffers that oneDNN reads and writes.
//
// Why: the default allocator aligns to 16 bytes, and for large blocks glibc
// returns a page start plus 16. A buffer that starts 16 bytes into a cache
// line makes every 64-byte AVX-512 or AMX load and store touch two lines.
// Measured on an Intel Xeon with AMX (family 6, model 167), 2 threads: the
// bf16 784-1200-1200-10 inference chain on 128 rows took 0.45 ms per pass
// from 64-byte-aligned buffers and 0.88 ms from buffers 16 bytes past it
// (bench/RESULTS.md).
//
// Thread-safety: stateless; as safe as ::operator new.
#ifndef DISTILLERY_COMMON_TENSOR_ALIGNED_ALLOCATOR_H_
#define DISTILLERY_COMMON_TENSOR_ALIGNED_ALLOCATOR_H_

#include <cstddef>
#include <new>

namespace distillery {

inline constexpr std::size_t kTensorAlignment = 64;

template <typename T>
class AlignedAllocator {
 public:
  using value_type = T;

  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}  // NOLINT: rebinding converts implicitly

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kTensorAlignment)));
  }
  void deallocate(T* p, std::size_t /*n*/) {
    ::operator delete(p, std::align_val_t(kTensorAlignment));
  }

  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const {
    return false;
  }
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_TENSOR_ALIGNED_ALLOCATOR_H_
