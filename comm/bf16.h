// bfloat16 <-> float: a bf16 is the upper 16 bits of an IEEE-754 float32 (1 sign, 8 exponent,
// 7 mantissa bits). The MPI backend sums bf16 buffers through float with these conversions.
#pragma once

#include <cstdint>
#include <cstring>

namespace qat::comm {

inline float Bf16ToFloat(uint16_t bits) {
  const uint32_t word = uint32_t{bits} << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// Rounds to nearest, ties to even; NaNs stay NaN (quiet, sign kept), infinities stay infinite.
inline uint16_t FloatToBf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((word >> 16) | 0x0040u);
  const uint32_t lsb = (word >> 16) & 1u;
  word += 0x7fffu + lsb;
  return static_cast<uint16_t>(word >> 16);
}

}  // namespace qat::comm
