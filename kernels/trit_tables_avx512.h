// Internal to the AVX-512 ternary files (ternary_avx512.cc, ternary_x16_avx512.cc), which are
// compiled with -mavx512f; nothing else may include this.
//
// vpermps picks lane (index & 15) of a 16-float table. The low 4 bits of a lane holding packed
// ternary2 codes are two codes, lo = bits [1:0] and hi = bits [3:2]; these tables map such a
// nibble to the trit of lo, or of hi (trit = code - 1; the invalid code 3 maps to 0, as in
// UnpackTernary).
#pragma once

// GCC 12's AVX-512 intrinsics build "undefined" vectors from self-initialized variables, which
// trips -Wuninitialized once they are inlined (GCC bug 105593): the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace qat::kernels::avx512 {

inline __m512 TritTableLo() {
  return _mm512_setr_ps(-1, 0, 1, 0, -1, 0, 1, 0, -1, 0, 1, 0, -1, 0, 1, 0);
}
inline __m512 TritTableHi() {
  return _mm512_setr_ps(-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
}

}  // namespace qat::kernels::avx512
