/*
 * attn_avx2.c - attention of one query head over an F16 KV cache, AVX2/FMA/F16C.
 *
 * It computes what llama.cpp's CPU graph computes (F16 cache, no flash attention), in
 * the same order of floating-point operations as its one-token (decode) path: q and the
 * probabilities rounded to f16, dot products accumulated in 4 x 8 lanes (by element, or
 * by cell index for the values) and reduced pairwise, softmax sums per 8-cell chunk in
 * double. The model's output is sensitive to last-bit differences (8-bit activation
 * rounding amplifies them), so keeping the order keeps logits close to the oracle's.
 * Built with -mavx2 -mfma -mf16c; used only after engine_attend_for has checked the CPU.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/engine.h"

static inline __m256 load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline float round_f16(float x)
{
    return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

/* sum of 8 lanes: (l0+l4, l1+l5, l2+l6, l3+l7) -> (a0+a2, a1+a3) -> b0+b1 */
static inline float reduce8(__m256 x)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

/* (l0+l4, l1+l5, l2+l6, l3+l7) -> (a0+a1, a2+a3) -> sum: the order of two hadds */
static inline float reduce8_hadd(__m256 x)
{
    __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

/* sum q[i]*k[i]: 4 accumulators of 8 lanes per 32 elements, pairwise reduced; rest in double */
static float dot_f16_lanes(const float *q, const uint16_t *k, int n)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int a = 0; a < 4; a++)
            acc[a] = _mm256_fmadd_ps(load_f16(k + i + 8 * a), _mm256_loadu_ps(q + i + 8 * a), acc[a]);
    acc[0] = _mm256_add_ps(acc[0], acc[2]);
    acc[1] = _mm256_add_ps(acc[1], acc[3]);
    double sum = reduce8_hadd(_mm256_add_ps(acc[0], acc[1]));
    for (; i < n; i++)
        sum += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)sum;
}

void engine_attend_f16_avx2(const struct engine_attn_item *it)
{
    const int hd_k = it->hd_k, hd_v = it->hd_v;
    const uint32_t j0 = it->j0, pos = it->pos, count = pos - j0 + 1;
    float *s = it->scores, *q = it->qbuf, *lanes = it->lanes;
    float max = -INFINITY;
    double sum = 0.0;

    /* q in f16 precision */
    for (int i = 0; i < hd_k; i++)
        q[i] = round_f16(it->q[i]);

    /* s_j = (q . k_j) * scale for the visible cells [j0, pos] */
    for (uint32_t j = j0; j <= pos; j++) {
        const uint16_t *k = (const uint16_t *)((const char *)it->k + (size_t)j * it->k_stride);
        s[j] = dot_f16_lanes(q, k, hd_k) * it->scale;
        max = s[j] > max ? s[j] : max;
    }

    /* e_j = exp(s_j - max), summed per 8-cell chunk (masked cells are 0) */
    for (uint32_t c = j0 / 8; c <= pos / 8; c++) {
        float e[8];
        for (uint32_t l = 0; l < 8; l++) {
            uint32_t j = 8 * c + l;
            e[l] = j >= j0 && j <= pos ? expf(s[j] - max) : 0.0f;
            if (j >= j0 && j <= pos)
                s[j] = e[l];
        }
        sum += reduce8(_mm256_loadu_ps(e));
    }

    /* out[d] = sum_j f16(p_j) v_j[d], in 32 lanes by cell index j % 32, reduced as
       dot_f16_lanes reduces its accumulators */
    {
        const float inv = (float)(1.0 / sum);
        if (count < 32)
            for (uint32_t l = 0; l < 32; l++)
                memset(lanes + (size_t)l * hd_v, 0, (size_t)hd_v * sizeof(float));
        for (uint32_t j = j0; j <= pos; j++) {
            const uint16_t *v = (const uint16_t *)((const char *)it->v + (size_t)j * it->v_stride);
            const __m256 p = _mm256_set1_ps(round_f16(s[j] * inv));
            float *acc = lanes + (size_t)(j % 32) * hd_v;
            const bool first = j - j0 < 32 && count >= 32;
            int d = 0;
            for (; d + 8 <= hd_v; d += 8) {
                __m256 prev = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + d);
                _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(load_f16(v + d), p, prev));
            }
            for (; d < hd_v; d++)
                acc[d] = fmaf(_cvtsh_ss(v[d]), _mm256_cvtss_f32(p), first ? 0.0f : acc[d]);
        }
        int d = 0;
        for (; d + 8 <= hd_v; d += 8) {
            __m256 a[8];
            for (int l = 0; l < 8; l++) {
                __m256 x0 = _mm256_add_ps(_mm256_loadu_ps(lanes + (size_t)l * hd_v + d),
                                          _mm256_loadu_ps(lanes + (size_t)(16 + l) * hd_v + d));
                __m256 x1 = _mm256_add_ps(_mm256_loadu_ps(lanes + (size_t)(8 + l) * hd_v + d),
                                          _mm256_loadu_ps(lanes + (size_t)(24 + l) * hd_v + d));
                a[l] = _mm256_add_ps(x0, x1);
            }
            __m256 t0 = _mm256_add_ps(a[0], a[4]), t1 = _mm256_add_ps(a[1], a[5]);
            __m256 t2 = _mm256_add_ps(a[2], a[6]), t3 = _mm256_add_ps(a[3], a[7]);
            _mm256_storeu_ps(it->out + d, _mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3)));
        }
        for (; d < hd_v; d++) {
            float a[8];
            for (int l = 0; l < 8; l++) {
                float x0 = lanes[(size_t)l * hd_v + d] + lanes[(size_t)(16 + l) * hd_v + d];
                float x1 = lanes[(size_t)(8 + l) * hd_v + d] + lanes[(size_t)(24 + l) * hd_v + d];
                a[l] = x0 + x1;
            }
            float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
            it->out[d] = (t0 + t1) + (t2 + t3);
        }
    }
}
