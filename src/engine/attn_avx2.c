/*
 * attn_avx2.c - AVX2/FMA/F16C versions of the F16 KV row operations of attention.c.
 *
 * Built with -mavx2 -mfma -mf16c (the Makefile does so for *_avx2 files); called only
 * after engine_kv_ops_for has checked the CPU's features at run time.
 */
#include <immintrin.h>

#include "engine/engine.h"

/* sum q[i] * k[i], k in f16 */
float engine_dot_f16_avx2(const float *q, const void *k, int n)
{
    const uint16_t *kh = k;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kh + i)));
        __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kh + i + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), k0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), k1, acc1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kh + i)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), k0, acc0);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++)
        r += q[i] * _cvtsh_ss(kh[i]);
    return r;
}

/* y[i] += a * v[i], v in f16 */
void engine_axpy_f16_avx2(float *y, float a, const void *v, int n)
{
    const uint16_t *vh = v;
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vh + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, v0, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++)
        y[i] += a * _cvtsh_ss(vh[i]);
}
