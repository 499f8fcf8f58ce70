/*
 * attn_avx2.c - attention of one query head over an F16 KV cache, AVX2/FMA/F16C.
 *
 * It computes what llama.cpp's CPU graph computes for an F16 cache without flash
 * attention, in the same order of floating-point operations as its x86 build with
 * AVX-512 (what a native build gives on the machines we test on), so that both engines
 * produce the same bits; a small model turns last-bit differences into visible logit
 * differences (8-bit activation roundings flip), so the order is the contract here:
 *
 *   - q (already scaled, for models that scale q) and the probabilities are rounded to
 *     f16, as the graph converts them to the K / V type before each product;
 *   - a batch (prefill, n >= 2) forms every product as a matrix multiply does (tinyBLAS):
 *     one 16-lane accumulator per output, element e in lane e % 16, FMA in order;
 *   - one token (decode) forms it as ggml's f16 dot does: 4 accumulators of 16 lanes,
 *     element e in accumulator (e / 16) % 4, summed (a0 + a2) + (a1 + a3), rest in double;
 *   - 16 lanes reduce as _mm512_reduce_add_ps does: halves, quarters, then pairs;
 *   - softmax: exp by the same polynomial as ggml_v_expf, summed per 16 cells (counted
 *     from cell 0) into a double, then scaled by (float)(1 / sum).
 *
 * A 16-lane accumulator is a pair of __m256 (lanes 0-7, 8-15). Cells outside the
 * visible range have probability 0 in llama.cpp, which adds exactly nothing to a lane,
 * so they are skipped here. Built with -mavx2 -mfma -mf16c; used only after
 * engine_attend_for has checked the CPU.
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

/* the sum of 16 lanes (lo = 0-7, hi = 8-15): l + (l + 8), then + 4, then (0 + 2) + (1 + 3) */
static inline float reduce16(__m256 lo, __m256 hi)
{
    __m256 h = _mm256_add_ps(lo, hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    __m128 r = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

/* q . k over n elements in the batch order (n a multiple of 16; else the tail in double) */
static float dot_batch(const float *q, const uint16_t *k, int n)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_fmadd_ps(load_f16(k + i), _mm256_loadu_ps(q + i), lo);
        hi = _mm256_fmadd_ps(load_f16(k + i + 8), _mm256_loadu_ps(q + i + 8), hi);
    }
    double sum = reduce16(lo, hi);
    for (; i < n; i++)
        sum += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)sum;
}

/* q . k over n elements in the one-token order: 4 x 16 lanes per 64 elements, rest in double */
static float dot_one(const float *q, const uint16_t *k, int n)
{
    __m256 lo[4], hi[4];
    for (int a = 0; a < 4; a++)
        lo[a] = hi[a] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64)
        for (int a = 0; a < 4; a++) {
            const int e = i + 16 * a;
            lo[a] = _mm256_fmadd_ps(load_f16(k + e), _mm256_loadu_ps(q + e), lo[a]);
            hi[a] = _mm256_fmadd_ps(load_f16(k + e + 8), _mm256_loadu_ps(q + e + 8), hi[a]);
        }
    __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    double sum = reduce16(l, h);
    for (; i < n; i++)
        sum += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)sum;
}

/* e^x for x <= 0 by ggml_v_expf's reduction and polynomial; 0 below 2^-126 (such terms
 * vanish in every sum they reach and round to 0 in f16) */
static inline __m256 exp_neg_ps(__m256 x)
{
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    __m256 n = _mm256_sub_ps(z, shift);
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    __m256 u = _mm256_mul_ps(b, b);
    __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    /* j * 2^n, exact as a product (one rounding if it is subnormal) */
    __m256 ok = _mm256_cmp_ps(n, _mm256_set1_ps(-126.0f), _CMP_GE_OQ);
    __m256 nc = _mm256_max_ps(n, _mm256_set1_ps(-126.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nc), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(ok, _mm256_mul_ps(j, _mm256_castsi256_ps(e)));
}

/* out[d] = sum_j p[j] v_j[d] for cells [j0, pos], each cell j in slot j % slots of the
 * lane accumulators (slots = 16 batch, 64 one token), then the slots reduced in order */
static void weighted_values(const struct engine_attn_item *it, const float *p, int slots)
{
    const int hd_v = it->hd_v;
    float *lanes = it->lanes;
    memset(lanes, 0, (size_t)slots * (size_t)hd_v * sizeof(float));
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        const uint16_t *v = (const uint16_t *)((const char *)it->v + (size_t)j * it->v_stride);
        const __m256 pj = _mm256_set1_ps(p[j]);
        float *acc = lanes + (size_t)(j % (uint32_t)slots) * hd_v;
        int d = 0;
        for (; d + 8 <= hd_v; d += 8)
            _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(load_f16(v + d), pj, _mm256_loadu_ps(acc + d)));
        for (; d < hd_v; d++)
            acc[d] = fmaf(_cvtsh_ss(v[d]), p[j], acc[d]);
    }
#define SLOT(s) (lanes + (size_t)(s) * hd_v + d)
    int d = 0;
    for (; d + 8 <= hd_v; d += 8) {
        __m256 l[16];
        for (int s = 0; s < 16; s++) {
            l[s] = _mm256_loadu_ps(SLOT(s));
            if (slots == 64) /* (a0 + a2) + (a1 + a3) for 16-lane accumulator a */
                l[s] = _mm256_add_ps(_mm256_add_ps(l[s], _mm256_loadu_ps(SLOT(32 + s))),
                                     _mm256_add_ps(_mm256_loadu_ps(SLOT(16 + s)), _mm256_loadu_ps(SLOT(48 + s))));
        }
        __m256 h[8], q[4];
        for (int s = 0; s < 8; s++)
            h[s] = _mm256_add_ps(l[s], l[s + 8]);
        for (int s = 0; s < 4; s++)
            q[s] = _mm256_add_ps(h[s], h[s + 4]);
        _mm256_storeu_ps(it->out + d, _mm256_add_ps(_mm256_add_ps(q[0], q[2]), _mm256_add_ps(q[1], q[3])));
    }
    for (; d < hd_v; d++) {
        float l[16], h[8], q[4];
        for (int s = 0; s < 16; s++) {
            l[s] = *SLOT(s);
            if (slots == 64)
                l[s] = (l[s] + *SLOT(32 + s)) + (*SLOT(16 + s) + *SLOT(48 + s));
        }
        for (int s = 0; s < 8; s++)
            h[s] = l[s] + l[s + 8];
        for (int s = 0; s < 4; s++)
            q[s] = h[s] + h[s + 4];
        it->out[d] = (q[0] + q[2]) + (q[1] + q[3]);
    }
#undef SLOT
}

void engine_attend_f16_avx2(const struct engine_attn_item *it)
{
    const int hd_k = it->hd_k;
    const uint32_t j0 = it->j0, pos = it->pos;
    float *s = it->scores, *q = it->qbuf;
    float max = -INFINITY;
    double sum = 0.0;

    /* q in f16 precision, after the scale that models like Gemma apply to q */
    for (int i = 0; i < hd_k; i++)
        q[i] = round_f16(it->q[i] * it->q_scale);

    /* s_j = (q . k_j) * scale for the visible cells [j0, pos] */
    for (uint32_t j = j0; j <= pos; j++) {
        const uint16_t *k = (const uint16_t *)((const char *)it->k + (size_t)j * it->k_stride);
        /* a matrix multiply needs rows of whole 16-lane steps, else llama.cpp falls back */
        s[j] = (it->batch && hd_k % 16 == 0 ? dot_batch(q, k, hd_k) : dot_one(q, k, hd_k)) * it->scale;
        max = s[j] > max ? s[j] : max;
    }

    /* e_j = exp(s_j - max) per 16 cells counted from cell 0 (hidden cells are 0) */
    for (uint32_t c = j0 / 16; c <= pos / 16; c++) {
        float x[16];
        for (uint32_t l = 0; l < 16; l++) {
            uint32_t j = 16 * c + l;
            x[l] = j >= j0 && j <= pos ? s[j] - max : -INFINITY;
        }
        __m256 lo = exp_neg_ps(_mm256_loadu_ps(x)), hi = exp_neg_ps(_mm256_loadu_ps(x + 8));
        _mm256_storeu_ps(x, lo);
        _mm256_storeu_ps(x + 8, hi);
        for (uint32_t l = 0; l < 16; l++) {
            uint32_t j = 16 * c + l;
            if (j >= j0 && j <= pos)
                s[j] = x[l];
        }
        sum += reduce16(lo, hi);
    }

    /* p_j = f16(e_j * (float)(1 / sum)), then the weighted sum of the values */
    const float inv = (float)(1.0 / sum);
    for (uint32_t j = j0; j <= pos; j++)
        s[j] = round_f16(s[j] * inv);
    weighted_values(it, s, it->batch ? 16 : 64);
}
