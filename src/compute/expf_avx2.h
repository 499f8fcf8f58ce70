/*
 * expf_avx2.h - e^x over 8 lanes with the arithmetic of ggml's vectorized expf
 * (ggml_v_expf), for the kernels that must give llama.cpp's bits: SiLU (compute/cpu/
 * ops_avx2.c) and attention's softmax (engine/attn_avx2.c). Include only from files
 * built with -mavx2 -mfma.
 *
 * x = n ln2 + b with n = round(x log2 e) and ln2 split in two parts; e^b = 1 + b c1 +
 * b^2 q(b). ggml's 16-lane (AVX-512) version rounds (1 + b c1) + b^2 q as one FMA
 * chain and scales by 2^n; its 8-lane version rounds 1 + (b c1 + b^2 q). Scaling by
 * 2^n is exact in both, with one rounding where the result over- or underflows, which
 * is what both versions give; |n| > 192 is 0 or infinity.
 */
#ifndef PV_EXPF_AVX2_H
#define PV_EXPF_AVX2_H

#include <immintrin.h>

/* m * 2^n for integral n in [-192, 192] (as floats), exact but for one final rounding */
static inline __m256 pv_scale_pow2_ps(__m256 m, __m256 n)
{
    /* n split as n1 + n2 with both powers of 2 normal floats: n1 in [-126, 127] */
    __m256 n1 = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
    __m256 n2 = _mm256_sub_ps(n, n1);
    __m256i b1 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n1), _mm256_set1_epi32(127)), 23);
    __m256i b2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n2), _mm256_set1_epi32(127)), 23);
    /* n2 != 0 only when n1 is at an end: m 2^n2 is then exact, and the 2^n1 rounds */
    return _mm256_mul_ps(_mm256_mul_ps(m, _mm256_castsi256_ps(b2)), _mm256_castsi256_ps(b1));
}

/* e^x in the order of ggml_v_expf for a vector width of `lanes` (16 or 8) */
static inline __m256 pv_expf_ps(__m256 x, int lanes)
{
    const __m256 shift = _mm256_set1_ps(0x1.8p23f), c1 = _mm256_set1_ps(0x1.ffffecp-1f);
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    __m256 n = _mm256_sub_ps(z, shift);
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    __m256 u = _mm256_mul_ps(b, b);
    __m256 q = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)),
                               u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f)));
    __m256 m = lanes == 16 ? _mm256_fmadd_ps(q, u, _mm256_fmadd_ps(c1, b, one))
                           : _mm256_add_ps(_mm256_fmadd_ps(q, u, _mm256_mul_ps(c1, b)), one);
    /* |n| > 192: 0 below, infinity above; x = -inf gives n = -inf, x = NaN stays NaN */
    __m256 nc = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-192.0f)), _mm256_set1_ps(192.0f));
    __m256 r = pv_scale_pow2_ps(m, nc);
    __m256 big = _mm256_cmp_ps(n, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    __m256 small = _mm256_cmp_ps(n, _mm256_set1_ps(-192.0f), _CMP_LT_OQ);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(__builtin_inff()), big);
    return _mm256_andnot_ps(small, r);
}

#endif /* PV_EXPF_AVX2_H */
