// Helpers shared by the CPU kernel tests (kernels_test.cc, lowbit_test.cc): random inputs,
// random packed ternary matrices in either packing, and the instruction sets to loop over.
#pragma once

#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"

namespace qat::kernels {

// Names the instruction set in test output (found by GoogleTest through argument lookup).
inline void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }

namespace testing_util {

inline constexpr Isa kSimdIsas[] = {Isa::kAvx2, Isa::kAvx512};
inline constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};

// n values from N(0, 1).
inline std::vector<float> RandomFloats(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// n trits uniform in {-1, 0, 1}.
inline std::vector<int8_t> RandomTrits(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> trit(-1, 1);
  std::vector<int8_t> v(n);
  for (int8_t& t : v) t = static_cast<int8_t>(trit(rng));
  return v;
}

// sum |x[c]| over n values: the scale of the rounding error of any order of summation.
inline double AbsSum(const float* x, int64_t n) {
  double s = 0;
  for (int64_t c = 0; c < n; ++c) s += std::fabs(x[c]);
  return s;
}

// A random ternary matrix packed as View says (TernaryView: ternary2, Ternary3View: ternary3),
// with its trits and scales (one, or one per row, uniform in [0.01, 2)).
template <typename View>
struct PackedTernary {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> trits;
  std::vector<uint8_t> packed;
  std::vector<float> scales;

  View view() const {
    return View{rows, cols, packed.data(), scales.data(), static_cast<int64_t>(scales.size())};
  }
  float scale(int64_t r) const { return scales.size() == 1 ? scales[0] : scales[r]; }
};
using Ternary2 = PackedTernary<TernaryView>;
using Ternary3 = PackedTernary<Ternary3View>;

// The packed buffer starts as `garbage`, which packing must overwrite entirely.
template <typename View>
PackedTernary<View> RandomPackedTernary(int64_t rows, int64_t cols, bool per_row, std::mt19937& rng,
                                        uint8_t garbage) {
  constexpr bool kTernary3 = std::is_same_v<View, Ternary3View>;
  PackedTernary<View> t;
  t.rows = rows;
  t.cols = cols;
  t.trits = RandomTrits(rows * cols, rng);
  t.packed.assign(rows * (kTernary3 ? Ternary3RowBytes(cols) : TernaryRowBytes(cols)), garbage);
  if constexpr (kTernary3) {
    PackTernary3(t.trits.data(), rows, cols, t.packed.data());
  } else {
    PackTernary(t.trits.data(), rows, cols, t.packed.data());
  }
  std::uniform_real_distribution<float> scale(0.01f, 2.0f);
  t.scales.resize(per_row ? rows : 1);
  for (float& s : t.scales) s = scale(rng);
  return t;
}
inline Ternary2 RandomTernary2(int64_t rows, int64_t cols, bool per_row, std::mt19937& rng,
                               uint8_t garbage = 0xAA) {
  return RandomPackedTernary<TernaryView>(rows, cols, per_row, rng, garbage);
}
inline Ternary3 RandomTernary3(int64_t rows, int64_t cols, bool per_row, std::mt19937& rng,
                               uint8_t garbage = 0xFF) {
  return RandomPackedTernary<Ternary3View>(rows, cols, per_row, rng, garbage);
}

// Random int8 activation codes over the whole range, -128 included.
inline std::vector<int8_t> RandomInt8(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> v(-128, 127);  // the whole range, -128 included
  std::vector<int8_t> x(n);
  for (int8_t& q : x) q = static_cast<int8_t>(v(rng));
  return x;
}

// A row-major int2/int4 matrix (lowbit.h) with its codes.
struct IntK {
  int64_t rows = 0, cols = 0;
  int bits = 4;
  int64_t group = 32;
  std::vector<uint8_t> q;  // codes, row-major
  std::vector<uint8_t> packed;
  std::vector<float> scales, zeros;

  IntKView view() const {
    return IntKView{rows, cols, bits, group, packed.data(), scales.data(), zeros.data()};
  }
  int64_t groups() const { return IntKGroupsPerRow(group, cols); }
  // The documented value, in float, as the kernels compute it.
  float value(int64_t r, int64_t c) const {
    const int64_t g = r * groups() + c / group;
    return scales[g] * (static_cast<float>(q[r * cols + c]) - zeros[g]);
  }
};

// Random codes, scales and (fractional) zero points; the packed buffer starts as 0xEE, so a byte
// PackIntK did not write shows.
inline IntK RandomIntK(int64_t rows, int64_t cols, int bits, int64_t group, std::mt19937& rng) {
  IntK w;
  w.rows = rows;
  w.cols = cols;
  w.bits = bits;
  w.group = group;
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  w.q.resize(rows * cols);
  for (uint8_t& v : w.q) v = static_cast<uint8_t>(code(rng));
  w.packed.assign(rows * IntKRowBytes(bits, cols), 0xEE);
  PackIntK(w.q.data(), rows, cols, bits, w.packed.data());
  std::uniform_real_distribution<float> scale(0.01f, 1.0f), zero(0.0f, (1 << bits) - 1.0f);
  w.scales.resize(rows * w.groups());
  w.zeros.resize(rows * w.groups());
  for (float& s : w.scales) s = scale(rng);
  for (float& z : w.zeros) z = zero(rng);
  return w;
}

}  // namespace testing_util
}  // namespace qat::kernels
