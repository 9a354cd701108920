// Portable, seedable randomness. The standard distributions' algorithms are
// implementation-defined, so every draw that must be reproducible across
// machines and resumes goes through these functions instead.
#ifndef DISTILLERY_COMMON_UTIL_RANDOM_H_
#define DISTILLERY_COMMON_UTIL_RANDOM_H_

#include <cstdint>

namespace distillery {

// SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijective hash of a
// 64-bit counter whose outputs pass BigCrush.
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A 32-bit integer hash (Wellons' "lowbias32"), cheap enough to vectorise
// with 32-bit multiplies: used where one draw per tensor element is needed.
inline uint32_t Hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352DU;
  x ^= x >> 15;
  x *= 0x846CA68BU;
  x ^= x >> 16;
  return x;
}

// Mixes two values into one well-spread 64-bit key.
inline uint64_t HashCombine(uint64_t a, uint64_t b) {
  return SplitMix64(SplitMix64(a) ^ (b * 0xD6E8FEB86659FD93ULL));
}

// A uniform float in [0, 1) from the top 24 bits of `bits`.
inline float UnitFloat(uint64_t bits) {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

}  // namespace distillery

#endif  // DISTILLERY_COMMON_UTIL_RANDOM_H_
