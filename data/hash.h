// The hashes behind data's deterministic choices (windows, mixture sources, the validation
// split): SplitMix64's finalizer, a bijection on 64 bits with full avalanche.
#pragma once

#include <cstdint>

namespace qat::data {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace qat::data
