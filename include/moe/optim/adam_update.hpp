#pragma once
// The elementwise Adam/AdamW update of a span of the flat store, in PyTorch's order of operations:
//   p *= decay (AdamW);  g' = g + wd p (Adam with L2);  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// As Eigen array expressions (vectorised at the build's width: std::sqrt in a plain loop is not,
// because of errno), and for float also with AVX2 and AVX-512 intrinsics chosen at run time (see
// detail/simd_level.hpp): in a build without -march the update is otherwise SSE2.
#include <type_traits>

#include "moe/core/types.hpp"
#include "moe/detail/simd_level.hpp"

#ifdef MOE_SIMD_DISPATCH
#include <immintrin.h>
#endif

namespace moe::detail {

/// The per-step scalars of the update, each rounded once from double as PyTorch does.
template <class T>
struct AdamScalars {
    T b1, one_minus_b1, b2, one_minus_b2, wd, decay, bc2_sqrt, step_size, eps;
    bool l2;        ///< Adam's weight decay: added to the gradient
    bool decoupled; ///< AdamW's: p *= decay first
};

/// The update of n elements with Eigen at the build's SIMD width.
template <class T>
void adam_update_compiled(T* p_, T* m_, T* v_, const T* g_, Index n, const AdamScalars<T>& s) {
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    Eigen::Map<Arr> p(p_, n), m(m_, n), v(v_, n);
    const Eigen::Map<const Arr> g(g_, n);
    if (s.decoupled) p *= s.decay;
    if (s.l2) {
        m = s.b1 * m + s.one_minus_b1 * (g + s.wd * p);
        v = s.b2 * v + s.one_minus_b2 * (g + s.wd * p).square();
    } else {
        m = s.b1 * m + s.one_minus_b1 * g;
        v = s.b2 * v + s.one_minus_b2 * g.square();
    }
    p -= s.step_size * (m / (v.sqrt() / s.bc2_sqrt + s.eps));
}

#ifdef MOE_SIMD_DISPATCH
// The same operations, 8 or 16 floats at a time; the remainder (fewer than a vector) as compiled.
// Two written-out copies on purpose: a function carries one target attribute, so a template shared
// by both would need a macro to stamp it, which reads worse than twelve lines twice.
__attribute__((target("avx2,fma"))) inline void adam_update_avx2(float* p, float* m, float* v, const float* g, Index n,
                                                                  const AdamScalars<float>& s) {
    const __m256 b1 = _mm256_set1_ps(s.b1), c1 = _mm256_set1_ps(s.one_minus_b1), b2 = _mm256_set1_ps(s.b2),
                 c2 = _mm256_set1_ps(s.one_minus_b2), wd = _mm256_set1_ps(s.wd), decay = _mm256_set1_ps(s.decay),
                 bc2 = _mm256_set1_ps(s.bc2_sqrt), step = _mm256_set1_ps(s.step_size), eps = _mm256_set1_ps(s.eps);
    Index i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pv = _mm256_loadu_ps(p + i), gv = _mm256_loadu_ps(g + i);
        if (s.decoupled) pv = _mm256_mul_ps(pv, decay);
        if (s.l2) gv = _mm256_add_ps(gv, _mm256_mul_ps(wd, pv));
        const __m256 mv = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gv));
        const __m256 vv = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(c2, _mm256_mul_ps(gv, gv)));
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), bc2), eps);
        pv = _mm256_sub_ps(pv, _mm256_mul_ps(step, _mm256_div_ps(mv, denom)));
        _mm256_storeu_ps(m + i, mv);
        _mm256_storeu_ps(v + i, vv);
        _mm256_storeu_ps(p + i, pv);
    }
    if (i < n) adam_update_compiled(p + i, m + i, v + i, g + i, n - i, s);
}

__attribute__((target("avx512f"))) inline void adam_update_avx512(float* p, float* m, float* v, const float* g, Index n,
                                                                   const AdamScalars<float>& s) {
    const __m512 b1 = _mm512_set1_ps(s.b1), c1 = _mm512_set1_ps(s.one_minus_b1), b2 = _mm512_set1_ps(s.b2),
                 c2 = _mm512_set1_ps(s.one_minus_b2), wd = _mm512_set1_ps(s.wd), decay = _mm512_set1_ps(s.decay),
                 bc2 = _mm512_set1_ps(s.bc2_sqrt), step = _mm512_set1_ps(s.step_size), eps = _mm512_set1_ps(s.eps);
    Index i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 pv = _mm512_loadu_ps(p + i), gv = _mm512_loadu_ps(g + i);
        if (s.decoupled) pv = _mm512_mul_ps(pv, decay);
        if (s.l2) gv = _mm512_add_ps(gv, _mm512_mul_ps(wd, pv));
        const __m512 mv = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_loadu_ps(m + i)), _mm512_mul_ps(c1, gv));
        const __m512 vv = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_loadu_ps(v + i)), _mm512_mul_ps(c2, _mm512_mul_ps(gv, gv)));
        // maskz with every lane set, not _mm512_sqrt_ps: GCC 12 warns (maybe-uninitialized) on the
        // undefined vector the plain form passes its builtin.
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_maskz_sqrt_ps(__mmask16(0xFFFF), vv), bc2), eps);
        pv = _mm512_sub_ps(pv, _mm512_mul_ps(step, _mm512_div_ps(mv, denom)));
        _mm512_storeu_ps(m + i, mv);
        _mm512_storeu_ps(v + i, vv);
        _mm512_storeu_ps(p + i, pv);
    }
    if (i < n) adam_update_compiled(p + i, m + i, v + i, g + i, n - i, s);
}
#endif

/// The update of n elements, at the widest SIMD the CPU offers for float.
template <class T>
void adam_update(T* p, T* m, T* v, const T* g, Index n, const AdamScalars<T>& s) {
#ifdef MOE_SIMD_DISPATCH
    if constexpr (std::is_same_v<T, float>) {
        switch (simd_level()) {
            case SimdLevel::avx512: return adam_update_avx512(p, m, v, g, n, s);
            case SimdLevel::avx2: return adam_update_avx2(p, m, v, g, n, s);
            case SimdLevel::compiled: break;
        }
    }
#endif
    adam_update_compiled(p, m, v, g, n, s);
}

}  // namespace moe::detail
