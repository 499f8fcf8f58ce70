/*
 * attn_avx2.c - attention of one query head over an F16 KV cache, AVX2/FMA/F16C.
 *
 * It computes what llama.cpp's CPU graph computes for an F16 cache without flash
 * attention, in the same order of floating-point operations as its native x86 build on
 * the same CPU, so that both engines produce the same bits; a small model turns last-bit
 * differences into visible logit differences (8-bit activation roundings flip), so the
 * order is the contract here. W is llama.cpp's vector width: 16 lanes where the CPU has
 * AVX-512 (F and DQ), else 8.
 *
 *   - q (already scaled, for models that scale q) and the probabilities are rounded to
 *     f16, as the graph converts them to the K / V type before each product;
 *   - a batch (prefill, n >= 2) forms every product as a matrix multiply does (tinyBLAS):
 *     one W-lane accumulator per output, element e in lane e % W, FMA in order, the lanes
 *     summed by halves, then (0 + 2) + (1 + 3);
 *   - one token (decode) forms it as ggml's f16 dot does: 4 accumulators of W lanes,
 *     element e in accumulator (e / W) % 4, summed (a0 + a2) + (a1 + a3), then by halves
 *     and pairs (W = 16) or by halves and two horizontal adds (W = 8); the rest in double;
 *   - softmax: exp by ggml_v_expf's polynomial for that width, summed per W cells
 *     (counted from cell 0) into a double, then scaled by (float)(1 / sum).
 *
 * A 16-lane accumulator is a pair of __m256 (lanes 0-7, 8-15). Cells outside the
 * visible range have probability 0 in llama.cpp, which adds exactly nothing to a lane,
 * so they are skipped here. Built with -mavx2 -mfma -mf16c; used only after
 * cpu_attend_for has checked the CPU.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "compute/expf_avx2.h"
#include "compute/cpu/cpu.h"

static inline __m256 load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline float round_f16(float x)
{
    return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* lanes l + (l + 4), then (0 + 2) + (1 + 3): tinyBLAS's and softmax's sum of 8 lanes */
static inline float hsum8(__m256 x)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    __m128 r = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

/* lanes l + (l + 4), then (0 + 1) + (2 + 3): ggml's f16 dot on AVX2 (two horizontal adds) */
static inline float hsum8_hadd(__m256 x)
{
    __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

/* the sum of 16 lanes (lo = 0-7, hi = 8-15) as _mm512_reduce_add_ps: l + (l + 8), then
 * as hsum8 */
static inline float reduce16(__m256 lo, __m256 hi)
{
    return hsum8(_mm256_add_ps(lo, hi));
}

/* q . k over n elements (a multiple of W) in the batch order */
static ALWAYS_INLINE float dot_batch(const float *q, const uint16_t *k, int n, const int w)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int i = 0; i < n; i += w) {
        lo = _mm256_fmadd_ps(load_f16(k + i), _mm256_loadu_ps(q + i), lo);
        if (w == 16)
            hi = _mm256_fmadd_ps(load_f16(k + i + 8), _mm256_loadu_ps(q + i + 8), hi);
    }
    return w == 16 ? reduce16(lo, hi) : hsum8(lo);
}

/* dot_batch for 4 cells k0..k3 at once (4 independent FMA chains), the same bits */
static ALWAYS_INLINE void dot_batch4(const float *q, const uint16_t *k0, const uint16_t *k1,
                                     const uint16_t *k2, const uint16_t *k3, int n, const int w,
                                     float out[4])
{
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
    __m256 h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    for (int i = 0; i < n; i += w) {
        const __m256 q0 = _mm256_loadu_ps(q + i);
        l0 = _mm256_fmadd_ps(load_f16(k0 + i), q0, l0);
        l1 = _mm256_fmadd_ps(load_f16(k1 + i), q0, l1);
        l2 = _mm256_fmadd_ps(load_f16(k2 + i), q0, l2);
        l3 = _mm256_fmadd_ps(load_f16(k3 + i), q0, l3);
        if (w == 16) {
            const __m256 q1 = _mm256_loadu_ps(q + i + 8);
            h0 = _mm256_fmadd_ps(load_f16(k0 + i + 8), q1, h0);
            h1 = _mm256_fmadd_ps(load_f16(k1 + i + 8), q1, h1);
            h2 = _mm256_fmadd_ps(load_f16(k2 + i + 8), q1, h2);
            h3 = _mm256_fmadd_ps(load_f16(k3 + i + 8), q1, h3);
        }
    }
    out[0] = w == 16 ? reduce16(l0, h0) : hsum8(l0);
    out[1] = w == 16 ? reduce16(l1, h1) : hsum8(l1);
    out[2] = w == 16 ? reduce16(l2, h2) : hsum8(l2);
    out[3] = w == 16 ? reduce16(l3, h3) : hsum8(l3);
}

/* q . k over n elements in the one-token order: 4 x W lanes per 4W elements, rest in double */
static ALWAYS_INLINE float dot_one(const float *q, const uint16_t *k, int n, const int w)
{
    __m256 lo[4], hi[4];
    for (int a = 0; a < 4; a++)
        lo[a] = hi[a] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 4 * w <= n; i += 4 * w)
        for (int a = 0; a < 4; a++) {
            const int e = i + w * a;
            lo[a] = _mm256_fmadd_ps(load_f16(k + e), _mm256_loadu_ps(q + e), lo[a]);
            if (w == 16)
                hi[a] = _mm256_fmadd_ps(load_f16(k + e + 8), _mm256_loadu_ps(q + e + 8), hi[a]);
        }
    __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    double sum = w == 16 ? reduce16(l, h) : hsum8_hadd(l);
    for (; i < n; i++)
        sum += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)sum;
}

/* the sum of one output's W lanes l[0..W) (8 floats each: 8 outputs side by side), in the
 * batch order (one_token false) or the one-token order */
static ALWAYS_INLINE __m256 lanes_sum(const __m256 *l, const int w, bool one_token)
{
    if (w == 16) {
        __m256 h[8], q[4];
        for (int s = 0; s < 8; s++)
            h[s] = _mm256_add_ps(l[s], l[s + 8]);
        for (int s = 0; s < 4; s++)
            q[s] = _mm256_add_ps(h[s], h[s + 4]);
        return _mm256_add_ps(_mm256_add_ps(q[0], q[2]), _mm256_add_ps(q[1], q[3]));
    }
    __m256 t[4];
    for (int s = 0; s < 4; s++)
        t[s] = _mm256_add_ps(l[s], l[s + 4]);
    if (one_token) /* two horizontal adds */
        return _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]));
    return _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]));
}

/* out[d] = sum_j p[j] v_j[d] for cells [j0, pos], cell j in slot j % slots of the lane
 * accumulators (slots = W for a batch, 4W for one token), then the slots summed in order */
static ALWAYS_INLINE void weighted_values(const struct cpu_attn_item *it, const float *p,
                                          const int w)
{
    const int hd_v = it->hd_v, slots = it->batch ? w : 4 * w;
    const uint32_t count = it->pos - it->j0 + 1;
    float *lanes = it->lanes;
    /* a slot no cell reaches stays 0; only the ones in use are cleared */
    for (uint32_t c = 0; c < (uint32_t)slots && c < count; c++)
        memset(lanes + (size_t)((it->j0 + c) % (uint32_t)slots) * hd_v, 0, (size_t)hd_v * sizeof(float));
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        const uint16_t *v = (const uint16_t *)((const char *)it->v + cpu_attn_cell(it, j) * it->v_stride);
        const __m256 pj = _mm256_set1_ps(p[j]);
        float *acc = lanes + (size_t)(j % (uint32_t)slots) * hd_v;
        for (int d = 0; d < hd_v; d += 8) /* hd_v is a multiple of 8 (cpu_attend_for) */
            _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(load_f16(v + d), pj, _mm256_loadu_ps(acc + d)));
    }
    bool used[64];
    for (int s = 0; s < slots; s++)
        used[s] = count >= (uint32_t)slots || (uint32_t)((s - (int)(it->j0 % (uint32_t)slots) + slots) % slots) < count;
#define SLOT(s) (used[s] ? _mm256_loadu_ps(lanes + (size_t)(s) * hd_v + d) : _mm256_setzero_ps())
    for (int d = 0; d < hd_v; d += 8) {
        __m256 l[16];
        for (int s = 0; s < w; s++)
            l[s] = slots == w ? SLOT(s)
                              : _mm256_add_ps(_mm256_add_ps(SLOT(s), SLOT(2 * w + s)),
                                              _mm256_add_ps(SLOT(w + s), SLOT(3 * w + s)));
        _mm256_storeu_ps(it->out + d, lanes_sum(l, w, slots != w));
    }
#undef SLOT
}

static ALWAYS_INLINE void attend(const struct cpu_attn_item *it, const int w)
{
    const int hd_k = it->hd_k;
    const uint32_t j0 = it->j0, pos = it->pos;
    float *s = it->scores, *q = it->qbuf;
    float max = -INFINITY;
    double sum = 0.0;

    /* q in f16 precision, after the scale that models like Gemma apply to q */
    for (int i = 0; i < hd_k; i++)
        q[i] = round_f16(it->q[i] * it->q_scale);

    /* s_j = (q . k_j) * scale for the visible cells [j0, pos]; a matrix multiply needs
       rows of whole W-lane steps, else llama.cpp takes the one-token dot */
    const bool batch = it->batch && hd_k % w == 0;
#define K_ROW(j) ((const uint16_t *)((const char *)it->k + cpu_attn_cell(it, j) * it->k_stride))
    {
        uint32_t j = j0;
        if (batch)
            for (; j + 3 <= pos; j += 4) {
                float d4[4];
                dot_batch4(q, K_ROW(j), K_ROW(j + 1), K_ROW(j + 2), K_ROW(j + 3), hd_k, w, d4);
                for (int c = 0; c < 4; c++) {
                    s[j + c] = d4[c] * it->scale;
                    max = s[j + c] > max ? s[j + c] : max;
                }
            }
        for (; j <= pos; j++) {
            s[j] = (batch ? dot_batch(q, K_ROW(j), hd_k, w) : dot_one(q, K_ROW(j), hd_k, w)) * it->scale;
            max = s[j] > max ? s[j] : max;
        }
    }
#undef K_ROW

    /* e_j = exp(s_j - max) per W cells counted from cell 0 (hidden cells are 0) */
    for (uint32_t c = j0 / (uint32_t)w; c <= pos / (uint32_t)w; c++) {
        float x[16];
        for (int l = 0; l < w; l++) {
            uint32_t j = (uint32_t)w * c + (uint32_t)l;
            x[l] = j >= j0 && j <= pos ? s[j] - max : -INFINITY;
        }
        __m256 lo = pv_expf_ps(_mm256_loadu_ps(x), w);
        __m256 hi = w == 16 ? pv_expf_ps(_mm256_loadu_ps(x + 8), w) : _mm256_setzero_ps();
        _mm256_storeu_ps(x, lo);
        if (w == 16)
            _mm256_storeu_ps(x + 8, hi);
        for (int l = 0; l < w; l++) {
            uint32_t j = (uint32_t)w * c + (uint32_t)l;
            if (j >= j0 && j <= pos)
                s[j] = x[l];
        }
        sum += w == 16 ? reduce16(lo, hi) : hsum8(lo);
    }

    /* p_j = f16(e_j * (float)(1 / sum)), then the weighted sum of the values */
    const float inv = (float)(1.0 / sum);
    for (uint32_t j = j0; j <= pos; j++)
        s[j] = round_f16(s[j] * inv);
    weighted_values(it, s, w);
}

void cpu_attend_f16_avx2(const struct cpu_attn_item *it)
{
    attend(it, 8);
}

void cpu_attend_f16_avx512_order(const struct cpu_attn_item *it)
{
    attend(it, 16);
}
