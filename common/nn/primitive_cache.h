// A small least-recently-used map for per-shape oneDNN primitives.
//
// Layers build their primitives for each input shape they see; a cache
// that never forgets grows with every new batch size (and pays oneDNN's
// JIT time for each). Inference runs in fixed-size tiles (tiled_inference.h)
// and training uses one or two batch sizes, so a handful of entries covers
// every steady use; anything beyond is evicted, least recently used first.
//
// Thread-safety: none (one cache per layer, one layer per thread).
#ifndef DISTILLERY_COMMON_NN_PRIMITIVE_CACHE_H_
#define DISTILLERY_COMMON_NN_PRIMITIVE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <utility>

namespace distillery {

template <typename Key, typename Value>
class PrimitiveCache {
 public:
  // Shapes kept by default: the inference tile, the training batch, the
  // last partial training batch, and one spare.
  static constexpr size_t kDefaultCapacity = 4;

  explicit PrimitiveCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}

  // The entry for `key`, marked most recently used, or null.
  Value* Find(const Key& key) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        if (it != entries_.begin()) entries_.splice(entries_.begin(), entries_, it);
        return &entries_.front().second;
      }
    }
    return nullptr;
  }

  // Adds `value` under `key` (not present), evicting the least recently
  // used entry when full. The pointer stays valid until that entry is
  // evicted.
  Value* Insert(const Key& key, Value value) {
    while (entries_.size() >= capacity_) entries_.pop_back();
    entries_.emplace_front(key, std::move(value));
    return &entries_.front().second;
  }

  // Forgets every entry (when what the primitives compute changes).
  void Clear() { entries_.clear(); }

  // How many entries satisfy `pred(const Value&)` (for tests and metrics).
  template <typename Pred>
  size_t CountIf(Pred pred) const {
    size_t n = 0;
    for (const auto& entry : entries_) n += pred(entry.second) ? 1 : 0;
    return n;
  }

  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  size_t capacity_;
  std::list<std::pair<Key, Value>> entries_;  // most recently used first
};

}  // namespace distillery

#endif  // DISTILLERY_COMMON_NN_PRIMITIVE_CACHE_H_
