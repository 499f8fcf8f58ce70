/*
 * quants_avx2.c - AVX2 + FMA + F16C kernels of the CPU backend, laid over the scalar
 * table by cpu_avx2_fill() when the CPU has those features (dispatch.c decides).
 * quants_vnni.c builds this file again with AVX-VNNI (CPU_QUANTS_VNNI), where the sums
 * of four u8 x s8 products take one instruction: the same integers, the same bits.
 *
 * Integer dots follow one pattern: unpack weights to bytes, _mm256_maddubs_epi16(u8, s8)
 * into 16-bit pair sums, _mm256_madd_epi16 (by ones or by the sub-block scales) into
 * 32-bit sums, then one float FMA per block with d_w * d_a. The quantizers round exactly
 * as the scalar ones do, so both paths feed the dots the same integers.
 *
 * The float side of the Q4_0 / Q5_0 / Q8_0 / Q4_K / Q6_K dots keeps the order of
 * llama.cpp's x86 kernels, so that both engines give the same bits: lane m of a block
 * holds the exact integer sum over elements 4m..4m+3 of each 32-element group, one
 * 8-lane accumulator takes acc = fma(d_w * d_a, lane, acc) block after block, and the
 * lanes are summed hi + lo, then pairwise (hsum_ps); Q4_K's minimums go through a
 * 4-lane accumulator of their own. A small model turns last-bit differences into
 * visible logit differences (an 8-bit activation rounding flips), so the order matters.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "compute/cpu/cpu.h"

#define H2F(h) _cvtsh_ss(h)

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int hsum_epi32_128(__m128i v)
{
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(v);
}

/* 32 nibbles of 16 bytes: low nibbles in bytes 0..15, high nibbles in bytes 16..31 */
static inline __m256i nibbles_32(const uint8_t *p)
{
    __m128i t = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* byte j = 0xFF when bit j of the 32 bits at p is set */
static inline __m256i bits_32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, sel), sel);
}

/* 8 f32 sums of 4 products each: u8 x s8 (exact: no 16-bit step saturates for the
 * operands used here; VNNI forms the same sums in one instruction) */
static inline __m256 dot_u8s8_ps(__m256i u, __m256i s)
{
#if defined(CPU_QUANTS_VNNI)
    return _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s));
#else
    __m256i p = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
#endif
}

/* ---- legacy quants against (widened) Q8_0 and Q8_1 ---------------------------------- */

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The fp16 d at the start of a block, as f32 in lane 0 (the other lanes are junk). */
static inline __m128 block_d(const void *blk)
{
    return _mm_cvtph_ps(_mm_loadu_si32(blk));
}

/* A Q4_0 / Q5_0 / Q8_0 block as 32 signed bytes in element order (q - 8, q - 16, q). */
static ALWAYS_INLINE __m256i legacy_bytes(uint32_t type, const void *blk)
{
    if (type == PV_TYPE_Q4_0)
        return _mm256_sub_epi8(nibbles_32(((const struct pv_block_q4_0 *)blk)->qs), _mm256_set1_epi8(8));
    if (type == PV_TYPE_Q5_0) {
        const struct pv_block_q5_0 *b = blk;
        /* q - 16: the nibble, with 0xF0 or-ed in where the fifth bit is clear */
        return _mm256_or_si256(nibbles_32(b->qs), _mm256_andnot_si256(bits_32(b->qh), _mm256_set1_epi8((char)0xF0)));
    }
    return _mm256_loadu_si256((const __m256i *)((const struct pv_block_q8_0 *)blk)->qs);
}

/* acc = fma(d_w d_a, lanes of q . a, acc): |q| and a signed by q, so maddubs sees u8 x s8 */
static ALWAYS_INLINE __m256 legacy_fma(__m256i q, __m256i abs_q, float dw, const struct cpu_block_q8_0x *a,
                                       __m256 acc)
{
    __m256i qa = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a->qs), q);
    return _mm256_fmadd_ps(_mm256_set1_ps(dw * a->d), dot_u8s8_ps(abs_q, qa), acc);
}

/* Q4_0 / Q5_0 / Q8_0 against one widened Q8_0 row (cpu_block_q8_0x), one accumulator */
static ALWAYS_INLINE void legacy_one(uint32_t type, size_t blk_bytes, int n, float *s, const void *vw,
                                     const void *va)
{
    const struct cpu_block_q8_0x *a = va;
    const uint8_t *w = vw;
    const int nb = n / PV_QK8_0;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const void *blk = w + (size_t)i * blk_bytes;
        __m256i q = legacy_bytes(type, blk);
        acc = legacy_fma(q, _mm256_sign_epi8(q, q), _mm_cvtss_f32(block_d(blk)), &a[i], acc);
    }
    *s = hsum_ps(acc);
}

static void vec_dot_q4_0(int n, float *s, const void *w, const void *a)
{
    legacy_one(PV_TYPE_Q4_0, sizeof(struct pv_block_q4_0), n, s, w, a);
}

static void vec_dot_q5_0(int n, float *s, const void *w, const void *a)
{
    legacy_one(PV_TYPE_Q5_0, sizeof(struct pv_block_q5_0), n, s, w, a);
}

static void vec_dot_q8_0(int n, float *s, const void *w, const void *a)
{
    legacy_one(PV_TYPE_Q8_0, sizeof(struct pv_block_q8_0), n, s, w, a);
}

/* sum = d_w d_a sum(q a) + m_w s_a */
static void vec_dot_q4_1(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q4_1 *w = vw;
    const struct pv_block_q8_1 *a = va;
    const int nb = n / PV_QK8_1;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < nb; i++) {
        __m256 p = dot_u8s8_ps(nibbles_32(w[i].qs), _mm256_loadu_si256((const __m256i *)a[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(H2F(w[i].d) * H2F(a[i].d)), p, acc);
        summs += H2F(w[i].m) * H2F(a[i].s);
    }
    *s = hsum_ps(acc) + summs;
}

static void vec_dot_q5_1(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q5_1 *w = vw;
    const struct pv_block_q8_1 *a = va;
    const int nb = n / PV_QK8_1;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < nb; i++) {
        __m256i hi = _mm256_and_si256(bits_32(w[i].qh), _mm256_set1_epi8(0x10));
        __m256i q = _mm256_or_si256(nibbles_32(w[i].qs), hi);
        __m256 p = dot_u8s8_ps(q, _mm256_loadu_si256((const __m256i *)a[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(H2F(w[i].d) * H2F(a[i].d)), p, acc);
        summs += H2F(w[i].m) * H2F(a[i].s);
    }
    *s = hsum_ps(acc) + summs;
}

/* vpshufb masks that spread one 16-bit word over a 128-bit lane: k_word[j] puts word j
 * in both lanes, k_pair[k] word 2k in the low lane and word 2k + 1 in the high lane. */
#define W2(j) 2 * (j), 2 * (j) + 1
#define W8(j) W2(j), W2(j), W2(j), W2(j), W2(j), W2(j), W2(j), W2(j)
static const uint8_t k_word[8][32] = {{W8(0), W8(0)}, {W8(1), W8(1)}, {W8(2), W8(2)}, {W8(3), W8(3)},
                                      {W8(4), W8(4)}, {W8(5), W8(5)}, {W8(6), W8(6)}, {W8(7), W8(7)}};
static const uint8_t k_pair[4][32] = {{W8(0), W8(1)}, {W8(2), W8(3)}, {W8(4), W8(5)}, {W8(6), W8(7)}};
#undef W8
#undef W2

static inline __m256i spread(__m256i words, const uint8_t *mask)
{
    return _mm256_shuffle_epi8(words, _mm256_loadu_si256((const __m256i *)mask));
}

/* 8 bytes -> 8 words in both 128-bit lanes (zero- or sign-extended) */
static inline __m256i words_u8(const uint8_t *p)
{
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p)));
}

static inline __m256i words_s8(const int8_t *p)
{
    return _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)));
}

/* ---- K-quants against Q8_K --------------------------------------------------------- */

/* The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K / Q5_K block, in a
 * register (no store and reload of a small array). */
static inline __m128i k4_scales_mins(const uint8_t *scales)
{
    uint32_t u[3];
    memcpy(u, scales, 12);
    const uint32_t m6 = 0x3F3F3F3F, m4 = 0x0F0F0F0F, m2 = 0x03030303;
    return _mm_setr_epi32((int)(u[0] & m6),                                  /* scales 0..3 */
                          (int)((u[2] & m4) | (((u[0] >> 6) & m2) << 4)),    /* scales 4..7 */
                          (int)(u[1] & m6),                                  /* mins 0..3 */
                          (int)(((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4))); /* mins 4..7 */
}

/* lanes j = m_2j s_2j + m_2j+1 s_2j+1, s_k = bsums[2k] + bsums[2k+1] (the sub-block sums),
 * the mins in bytes 8..15 of sm */
static inline __m128i k4_min_lanes(__m128i sm, const int16_t *bsums)
{
    __m128i b = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums),
                               _mm_loadu_si128((const __m128i *)(bsums + 8)));
    __m128i m = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    return _mm_madd_epi16(m, b);
}

/* sum_j m_j * (bsums[2j] + bsums[2j+1]) */
static inline int k4_min_sum(__m128i sm, const int16_t *bsums)
{
    return hsum_epi32_128(k4_min_lanes(sm, bsums));
}

/* acc_m += dmin * lanes (dmin negative), 4 lanes */
static inline __m128 k4_min_fma(float dmin, __m128i sm, const int16_t *bsums, __m128 acc_m)
{
    return _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_lanes(sm, bsums)), acc_m);
}

/* (a0 + a2) + (a1 + a3) */
static inline float hsum4_ps(__m128 v)
{
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

/* the 8 scales of sm as words in both 128-bit lanes */
static inline __m256i k4_scale_words(__m128i sm)
{
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
}

static void vec_dot_q4_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q4_K *w = vw;
    const struct pv_block_q8_K *a = va;
    const int nb = n / PV_QK_K;
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        const float d = a[i].d * H2F(w[i].d), dmin = -a[i].d * H2F(w[i].dmin);
        acc_m = k4_min_fma(dmin, sm, a[i].bsums, acc_m);
        const uint8_t *q = w[i].qs;
        const int8_t *q8 = a[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        __m256i scw = k4_scale_words(sm);
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            __m256i bits = _mm256_loadu_si256((const __m256i *)q);
            __m256i ql = _mm256_and_si256(bits, lo4);
            __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), lo4);
            __m256i pl = _mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8));
            __m256i ph = _mm256_maddubs_epi16(qh, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            pl = _mm256_madd_epi16(pl, spread(scw, k_word[2 * c]));
            ph = _mm256_madd_epi16(ph, spread(scw, k_word[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc) + hsum4_ps(acc_m);
}

static void vec_dot_q5_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q5_K *w = vw;
    const struct pv_block_q8_K *a = va;
    const int nb = n / PV_QK_K;
    const __m256i lo4 = _mm256_set1_epi8(0x0F), b5 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f; /* the minimums, fused as llama.cpp's build fuses them */
    for (int i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        const float d = a[i].d * H2F(w[i].d), dmin = -a[i].d * H2F(w[i].dmin);
        summs = fmaf(dmin, (float)k4_min_sum(sm, a[i].bsums), summs);
        const uint8_t *q = w[i].qs;
        const int8_t *q8 = a[i].qs;
        __m256i hbits = _mm256_loadu_si256((const __m256i *)w[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        __m256i scw = k4_scale_words(sm);
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            __m256i bits = _mm256_loadu_si256((const __m256i *)q);
            __m256i ql = _mm256_or_si256(_mm256_and_si256(bits, lo4),
                                         _mm256_and_si256(_mm256_slli_epi16(hbits, 4), b5));
            __m256i qh = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), lo4),
                                         _mm256_and_si256(_mm256_slli_epi16(hbits, 3), b5));
            hbits = _mm256_srli_epi16(hbits, 2);
            __m256i pl = _mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8));
            __m256i ph = _mm256_maddubs_epi16(qh, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            pl = _mm256_madd_epi16(pl, spread(scw, k_word[2 * c]));
            ph = _mm256_madd_epi16(ph, spread(scw, k_word[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc) + summs;
}

/* q6 is unsigned 0..63 here; the -32 is applied once through bsums: -32 sum_j sc_j bsum_j */
static void vec_dot_q6_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q6_K *w = vw;
    const struct pv_block_q8_K *a = va;
    const int nb = n / PV_QK_K;
    const __m256i lo4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = a[i].d * H2F(w[i].d);
        const uint8_t *ql = w[i].ql, *qh = w[i].qh;
        const int8_t *sc = w[i].scales, *q8 = a[i].qs;
        __m128i sc16 = _mm_loadu_si128((const __m128i *)sc);
        __m256i sc_w = _mm256_cvtepi8_epi16(sc16);
        __m256i bs = _mm256_loadu_si256((const __m256i *)a[i].bsums);
        __m256i corr = _mm256_madd_epi16(sc_w, bs); /* sum_j sc_j bsum_j, 8 lanes */
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, q8 += 128) {
            __m256i scw = words_s8(sc);
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, lo4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, lo4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                                         _mm256_and_si256(hb, m2));
            __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                                         _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
            __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)q8));
            __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(q8 + 64)));
            __m256i p4 = _mm256_maddubs_epi16(q4, _mm256_loadu_si256((const __m256i *)(q8 + 96)));
            p1 = _mm256_madd_epi16(p1, spread(scw, k_pair[0]));
            p2 = _mm256_madd_epi16(p2, spread(scw, k_pair[1]));
            p3 = _mm256_madd_epi16(p3, spread(scw, k_pair[2]));
            p4 = _mm256_madd_epi16(p4, spread(scw, k_pair[3]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p1, p2),
                                                           _mm256_add_epi32(p3, p4)));
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* 2-bit q in 16-groups with 4-bit scales and mins: d sum_g sc_g (q . a)_g - dmin sum_g m_g bsum_g */
static void vec_dot_q2_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q2_K *w = vw;
    const struct pv_block_q8_K *a = va;
    const int nb = n / PV_QK_K;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = a[i].d * H2F(w[i].d), dmin = -a[i].d * H2F(w[i].dmin);
        __m128i sc8 = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
        __m256i pm = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)a[i].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(pm), acc); /* minimums first */
        const uint8_t *sc = w[i].scales;
        const int8_t *q8 = a[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++, sc += 8) {
            __m256i qb = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            __m256i scw = _mm256_and_si256(words_u8(sc), _mm256_set1_epi16(0xF));
            for (int j = 0; j < 4; j++, q8 += 32) {
                __m256i q = _mm256_and_si256(qb, m3);
                qb = _mm256_srli_epi16(qb, 2);
                __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)q8));
                p = _mm256_madd_epi16(p, spread(scw, k_pair[j]));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* 3-bit q - 4 in 16-groups, signed 6-bit scales: the low 2 bits (0..3) times a, minus
 * 4 a where the high bit is clear, per pair in 16 bits (as llama.cpp's lanes hold it) */
static void vec_dot_q3_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q3_K *w = vw;
    const struct pv_block_q8_K *a = va;
    const int nb = n / PV_QK_K;
    const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = a[i].d * H2F(w[i].d);
        /* 16 scales: low 4 bits from bytes 0..7 (low, then high nibbles), 2 high bits
         * from bytes 8..11, four at a time in 32-bit words, minus 32 */
        uint32_t u[3];
        memcpy(u, w[i].scales, 12);
        const uint32_t m4 = 0x0F0F0F0F, m2 = 0x03030303;
        __m128i sc8 = _mm_setr_epi32((int)((u[0] & m4) | ((u[2] & m2) << 4)),
                                     (int)((u[1] & m4) | (((u[2] >> 2) & m2) << 4)),
                                     (int)(((u[0] >> 4) & m4) | (((u[2] >> 4) & m2) << 4)),
                                     (int)(((u[1] >> 4) & m4) | (((u[2] >> 6) & m2) << 4)));
        sc8 = _mm_sub_epi8(sc8, _mm_set1_epi8(32));
        __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        const int8_t *q8 = a[i].qs;
        __m256i hm = _mm256_loadu_si256((const __m256i *)w[i].hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qb = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            /* this half's 8 scales as words in both lanes */
            __m256i scw = h ? _mm256_permute4x64_epi64(sc16, 0xEE) : _mm256_permute4x64_epi64(sc16, 0x44);
            for (int j = 0; j < 4; j++, q8 += 32) {
                __m256i q = _mm256_and_si256(qb, m3);
                __m256i four = _mm256_slli_epi16(_mm256_andnot_si256(hm, m1), 2); /* 4: bit clear */
                qb = _mm256_srli_epi16(qb, 2);
                hm = _mm256_srli_epi16(hm, 1);
                __m256i a8 = _mm256_loadu_si256((const __m256i *)q8);
                __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, a8), _mm256_maddubs_epi16(four, a8));
                p = _mm256_madd_epi16(p, spread(scw, k_pair[j]));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* ---- one weight row against several tokens (prefill) -------------------------------- */

/* activation row t of a batch */
#define ACT_ROW(type, a, stride, t) ((const type *)((const uint8_t *)(a) + (size_t)(t) * (stride)))

/* Q4_0 / Q5_0 / Q8_0 against up to 4 widened Q8_0 rows, as legacy_one, each weight block
 * unpacked once. Accumulators are named variables (not arrays) so they stay in registers. */
static ALWAYS_INLINE void legacy_multi(uint32_t type, size_t blk_bytes, int n, float *s, size_t ss,
                                       const void *vw, const void *va, size_t as, const int nt)
{
    const uint8_t *w = vw;
    const int nb = n / PV_QK8_0;
    const struct cpu_block_q8_0x *a0 = ACT_ROW(struct cpu_block_q8_0x, va, as, 0);
    const struct cpu_block_q8_0x *a1 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 1 ? 1 : 0);
    const struct cpu_block_q8_0x *a2 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 2 ? 2 : 0);
    const struct cpu_block_q8_0x *a3 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 3 ? 3 : 0);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int i = 0; i < nb; i++) {
        const void *blk = w + (size_t)i * blk_bytes;
        __m256i q = legacy_bytes(type, blk), abs_q = _mm256_sign_epi8(q, q);
        float dw = _mm_cvtss_f32(block_d(blk));
        acc0 = legacy_fma(q, abs_q, dw, &a0[i], acc0);
        if (nt > 1)
            acc1 = legacy_fma(q, abs_q, dw, &a1[i], acc1);
        if (nt > 2)
            acc2 = legacy_fma(q, abs_q, dw, &a2[i], acc2);
        if (nt > 3)
            acc3 = legacy_fma(q, abs_q, dw, &a3[i], acc3);
    }
    s[0] = hsum_ps(acc0);
    if (nt > 1)
        s[ss] = hsum_ps(acc1);
    if (nt > 2)
        s[2 * ss] = hsum_ps(acc2);
    if (nt > 3)
        s[3 * ss] = hsum_ps(acc3);
}

/* sumi += sc1 (ql . a[0..31]) + sc2 (qh . a[32..63]) for one token */
static ALWAYS_INLINE __m256i q4_K_chunk(__m256i sumi, __m256i ql, __m256i qh, __m256i s1, __m256i s2,
                                        const int8_t *q8)
{
    __m256i pl = _mm256_maddubs_epi16(ql, _mm256_loadu_si256((const __m256i *)q8));
    __m256i ph = _mm256_maddubs_epi16(qh, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
    return _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(pl, s1), _mm256_madd_epi16(ph, s2)));
}

/* accumulators in named variables (not arrays) so that they stay in registers */
static ALWAYS_INLINE void q4_K_multi(int n, float *s, size_t ss, const void *vw, const void *va,
                                     size_t as, const int nt)
{
    const struct pv_block_q4_K *w = vw;
    const int nb = n / PV_QK_K;
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    const struct pv_block_q8_K *a0 = ACT_ROW(struct pv_block_q8_K, va, as, 0);
    const struct pv_block_q8_K *a1 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 1 ? 1 : 0);
    const struct pv_block_q8_K *a2 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 2 ? 2 : 0);
    const struct pv_block_q8_K *a3 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 3 ? 3 : 0);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __m128 m0 = _mm_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
    for (int i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        const float dw = H2F(w[i].d), dminw = H2F(w[i].dmin);
        m0 = k4_min_fma(-a0[i].d * dminw, sm, a0[i].bsums, m0);
        if (nt > 1)
            m1 = k4_min_fma(-a1[i].d * dminw, sm, a1[i].bsums, m1);
        if (nt > 2)
            m2 = k4_min_fma(-a2[i].d * dminw, sm, a2[i].bsums, m2);
        if (nt > 3)
            m3 = k4_min_fma(-a3[i].d * dminw, sm, a3[i].bsums, m3);
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        __m256i scw = k4_scale_words(sm);
        for (int c = 0; c < 4; c++) {
            __m256i bits = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * c));
            __m256i ql = _mm256_and_si256(bits, lo4);
            __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), lo4);
            __m256i c1 = spread(scw, k_word[2 * c]), c2 = spread(scw, k_word[2 * c + 1]);
            s0 = q4_K_chunk(s0, ql, qh, c1, c2, a0[i].qs + 64 * c);
            if (nt > 1)
                s1 = q4_K_chunk(s1, ql, qh, c1, c2, a1[i].qs + 64 * c);
            if (nt > 2)
                s2 = q4_K_chunk(s2, ql, qh, c1, c2, a2[i].qs + 64 * c);
            if (nt > 3)
                s3 = q4_K_chunk(s3, ql, qh, c1, c2, a3[i].qs + 64 * c);
        }
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(a0[i].d * dw), _mm256_cvtepi32_ps(s0), acc0);
        if (nt > 1)
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(a1[i].d * dw), _mm256_cvtepi32_ps(s1), acc1);
        if (nt > 2)
            acc2 = _mm256_fmadd_ps(_mm256_set1_ps(a2[i].d * dw), _mm256_cvtepi32_ps(s2), acc2);
        if (nt > 3)
            acc3 = _mm256_fmadd_ps(_mm256_set1_ps(a3[i].d * dw), _mm256_cvtepi32_ps(s3), acc3);
    }
    s[0] = hsum_ps(acc0) + hsum4_ps(m0);
    if (nt > 1)
        s[ss] = hsum_ps(acc1) + hsum4_ps(m1);
    if (nt > 2)
        s[2 * ss] = hsum_ps(acc2) + hsum4_ps(m2);
    if (nt > 3)
        s[3 * ss] = hsum_ps(acc3) + hsum4_ps(m3);
}

/* sumi += (q . a[0..31]) scaled per 16 by sc */
static ALWAYS_INLINE __m256i q6_K_step(__m256i sumi, __m256i q, __m256i sc, const int8_t *q8)
{
    __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)q8));
    return _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
}

/* -32 sum_j sc_j bsum_j: the offset of the unsigned 6-bit q, for one token */
static ALWAYS_INLINE __m256i q6_K_offset(__m256i sc_w, const int16_t *bsums)
{
    __m256i corr = _mm256_madd_epi16(sc_w, _mm256_loadu_si256((const __m256i *)bsums));
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
}

static ALWAYS_INLINE void q6_K_multi(int n, float *s, size_t ss, const void *vw, const void *va,
                                     size_t as, const int nt)
{
    const struct pv_block_q6_K *w = vw;
    const int nb = n / PV_QK_K;
    const __m256i lo4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    const struct pv_block_q8_K *a0 = ACT_ROW(struct pv_block_q8_K, va, as, 0);
    const struct pv_block_q8_K *a1 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 1 ? 1 : 0);
    const struct pv_block_q8_K *a2 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 2 ? 2 : 0);
    const struct pv_block_q8_K *a3 = ACT_ROW(struct pv_block_q8_K, va, as, nt > 3 ? 3 : 0);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int i = 0; i < nb; i++) {
        const int8_t *sc = w[i].scales;
        __m256i sc_w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        __m256i s0 = q6_K_offset(sc_w, a0[i].bsums), s1 = s0, s2 = s0, s3 = s0;
        if (nt > 1)
            s1 = q6_K_offset(sc_w, a1[i].bsums);
        if (nt > 2)
            s2 = q6_K_offset(sc_w, a2[i].bsums);
        if (nt > 3)
            s3 = q6_K_offset(sc_w, a3[i].bsums);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h, *qh = w[i].qh + 32 * h;
            const int8_t *sch = sc + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i scw = words_s8(sch);
            const int8_t *b0 = a0[i].qs + 128 * h, *b1 = a1[i].qs + 128 * h;
            const int8_t *b2 = a2[i].qs + 128 * h, *b3 = a3[i].qs + 128 * h;
#define Q6_TOKENS(qv, k)                                                                   \
    do {                                                                                   \
        __m256i q_ = (qv), sc_ = spread(scw, k_pair[k]);                                   \
        s0 = q6_K_step(s0, q_, sc_, b0 + 32 * (k));                                        \
        if (nt > 1)                                                                        \
            s1 = q6_K_step(s1, q_, sc_, b1 + 32 * (k));                                    \
        if (nt > 2)                                                                        \
            s2 = q6_K_step(s2, q_, sc_, b2 + 32 * (k));                                    \
        if (nt > 3)                                                                        \
            s3 = q6_K_step(s3, q_, sc_, b3 + 32 * (k));                                    \
    } while (0)
            Q6_TOKENS(_mm256_or_si256(_mm256_and_si256(l0, lo4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2)), 0);
            Q6_TOKENS(_mm256_or_si256(_mm256_and_si256(l1, lo4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2)), 1);
            Q6_TOKENS(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4), _mm256_and_si256(hb, m2)), 2);
            Q6_TOKENS(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                                      _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2)),
                      3);
#undef Q6_TOKENS
        }
        const float dw = H2F(w[i].d);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(a0[i].d * dw), _mm256_cvtepi32_ps(s0), acc0);
        if (nt > 1)
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(a1[i].d * dw), _mm256_cvtepi32_ps(s1), acc1);
        if (nt > 2)
            acc2 = _mm256_fmadd_ps(_mm256_set1_ps(a2[i].d * dw), _mm256_cvtepi32_ps(s2), acc2);
        if (nt > 3)
            acc3 = _mm256_fmadd_ps(_mm256_set1_ps(a3[i].d * dw), _mm256_cvtepi32_ps(s3), acc3);
    }
    s[0] = hsum_ps(acc0);
    if (nt > 1)
        s[ss] = hsum_ps(acc1);
    if (nt > 2)
        s[2 * ss] = hsum_ps(acc2);
    if (nt > 3)
        s[3 * ss] = hsum_ps(acc3);
}

/* ---- prefill over weights unpacked once per chunk ----------------------------------- */

static ALWAYS_INLINE void unpack_legacy(uint32_t type, size_t blk_bytes, const void *vw, void *vout,
                                        int64_t n)
{
    const uint8_t *w = vw;
    struct cpu_block_s8 *out = vout;
    for (int64_t i = 0; i < n / PV_QK8_0; i++) {
        const void *blk = w + (size_t)i * blk_bytes;
        out[i].d = _mm_cvtss_f32(block_d(blk));
        _mm256_storeu_si256((__m256i *)out[i].q, legacy_bytes(type, blk));
    }
}

static void unpack_q4_0(const void *w, void *out, int64_t n)
{
    unpack_legacy(PV_TYPE_Q4_0, sizeof(struct pv_block_q4_0), w, out, n);
}

static void unpack_q5_0(const void *w, void *out, int64_t n)
{
    unpack_legacy(PV_TYPE_Q5_0, sizeof(struct pv_block_q5_0), w, out, n);
}

/* unpacked Q4_0 / Q5_0 rows against up to 4 widened Q8_0 rows, in legacy_one's order */
static ALWAYS_INLINE void s8_multi(int n, float *s, size_t ss, const void *vw, const void *va,
                                   size_t as, const int nt)
{
    const struct cpu_block_s8 *w = vw;
    const int nb = n / PV_QK8_0;
    const struct cpu_block_q8_0x *a0 = ACT_ROW(struct cpu_block_q8_0x, va, as, 0);
    const struct cpu_block_q8_0x *a1 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 1 ? 1 : 0);
    const struct cpu_block_q8_0x *a2 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 2 ? 2 : 0);
    const struct cpu_block_q8_0x *a3 = ACT_ROW(struct cpu_block_q8_0x, va, as, nt > 3 ? 3 : 0);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int i = 0; i < nb; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)w[i].q), abs_q = _mm256_sign_epi8(q, q);
        acc0 = legacy_fma(q, abs_q, w[i].d, &a0[i], acc0);
        if (nt > 1)
            acc1 = legacy_fma(q, abs_q, w[i].d, &a1[i], acc1);
        if (nt > 2)
            acc2 = legacy_fma(q, abs_q, w[i].d, &a2[i], acc2);
        if (nt > 3)
            acc3 = legacy_fma(q, abs_q, w[i].d, &a3[i], acc3);
    }
    s[0] = hsum_ps(acc0);
    if (nt > 1)
        s[ss] = hsum_ps(acc1);
    if (nt > 2)
        s[2 * ss] = hsum_ps(acc2);
    if (nt > 3)
        s[3 * ss] = hsum_ps(acc3);
}

static void vec_dot_s8(int n, float *s, size_t ss, const void *w, const void *a, size_t as, int nt)
{
    switch (nt) {
    case 1: s8_multi(n, s, ss, w, a, as, 1); break;
    case 2: s8_multi(n, s, ss, w, a, as, 2); break;
    case 3: s8_multi(n, s, ss, w, a, as, 3); break;
    default: s8_multi(n, s, ss, w, a, as, 4); break;
    }
}

/* one instance per constant nt, so the accumulators live in registers */
#define MULTI_ENTRY(name, call)                                                            \
    static void name(int n, float *s, size_t ss, const void *w, const void *a, size_t as,  \
                     int nt)                                                               \
    {                                                                                      \
        switch (nt) {                                                                      \
        case 1: call(1); break;                                                            \
        case 2: call(2); break;                                                            \
        case 3: call(3); break;                                                            \
        default: call(4); break;                                                           \
        }                                                                                  \
    }
#define CALL_Q4_0(k) legacy_multi(PV_TYPE_Q4_0, sizeof(struct pv_block_q4_0), n, s, ss, w, a, as, k)
#define CALL_Q5_0(k) legacy_multi(PV_TYPE_Q5_0, sizeof(struct pv_block_q5_0), n, s, ss, w, a, as, k)
#define CALL_Q8_0(k) legacy_multi(PV_TYPE_Q8_0, sizeof(struct pv_block_q8_0), n, s, ss, w, a, as, k)
#define CALL_Q4_K(k) q4_K_multi(n, s, ss, w, a, as, k)
#define CALL_Q6_K(k) q6_K_multi(n, s, ss, w, a, as, k)
MULTI_ENTRY(vec_dot_multi_q4_0, CALL_Q4_0)
MULTI_ENTRY(vec_dot_multi_q5_0, CALL_Q5_0)
MULTI_ENTRY(vec_dot_multi_q8_0, CALL_Q8_0)
MULTI_ENTRY(vec_dot_multi_q4_K, CALL_Q4_K)
MULTI_ENTRY(vec_dot_multi_q6_K, CALL_Q6_K)

/* ---- float types ------------------------------------------------------------------- */

static inline __m256 load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* 8 elements of an F32 or F16 row, as f32 */
static ALWAYS_INLINE __m256 load_f8(const void *p, int i, bool f16)
{
    return f16 ? load_f16((const uint16_t *)p + i) : _mm256_loadu_ps((const float *)p + i);
}

/*
 * F32 and F16 rows (activations of the same type) in llama.cpp's two orders, for its
 * vector width of `lanes` (cpu_llama_lanes):
 *   - a batch is a matrix multiply (tinyBLAS): one accumulator of `lanes` lanes, element
 *     e in lane e % lanes;
 *   - one token is ggml's vec_dot: 4 accumulators per 4 * lanes elements, summed
 *     (a0 + a2) + (a1 + a3), then 16 lanes as _mm512_reduce_add_ps or 8 by two horizontal
 *     adds; the rest in float (F32) or double (F16).
 * A 16-lane accumulator is two __m256.
 */
static ALWAYS_INLINE float dot_f_batch(const void *w, const void *a, int n, bool f16, int lanes)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + lanes <= n; i += lanes) {
        lo = _mm256_fmadd_ps(load_f8(w, i, f16), load_f8(a, i, f16), lo);
        if (lanes == 16)
            hi = _mm256_fmadd_ps(load_f8(w, i + 8, f16), load_f8(a, i + 8, f16), hi);
    }
    float sum = hsum_ps(lanes == 16 ? _mm256_add_ps(lo, hi) : lo);
    for (; i < n; i++) /* not a case llama.cpp's matrix multiply takes (matmul.c) */
        sum = fmaf(f16 ? H2F(((const uint16_t *)w)[i]) : ((const float *)w)[i],
                   f16 ? H2F(((const uint16_t *)a)[i]) : ((const float *)a)[i], sum);
    return sum;
}

static ALWAYS_INLINE float dot_f_one(const void *w, const void *a, int n, bool f16, int lanes)
{
    __m256 lo[4], hi[4];
    for (int k = 0; k < 4; k++)
        lo[k] = hi[k] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes)
        for (int k = 0; k < 4; k++) {
            const int e = i + lanes * k;
            lo[k] = _mm256_fmadd_ps(load_f8(w, e, f16), load_f8(a, e, f16), lo[k]);
            if (lanes == 16)
                hi[k] = _mm256_fmadd_ps(load_f8(w, e + 8, f16), load_f8(a, e + 8, f16), hi[k]);
        }
    __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    float sum;
    if (lanes == 16) {
        __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
        sum = hsum_ps(_mm256_add_ps(l, h));
    } else {
        __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
        __m128 t1 = _mm_hadd_ps(t0, t0);
        sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    }
    if (f16) {
        double d = sum;
        for (; i < n; i++)
            d += (double)(H2F(((const uint16_t *)w)[i]) * H2F(((const uint16_t *)a)[i]));
        return (float)d;
    }
    for (; i < n; i++)
        sum = fmaf(((const float *)w)[i], ((const float *)a)[i], sum);
    return sum;
}

static void vec_dot_f32_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_batch(w, a, n, false, 16);
}

static void vec_dot_f32_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_batch(w, a, n, false, 8);
}

static void vec_dot_f16_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_batch(w, a, n, true, 16);
}

static void vec_dot_f16_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_batch(w, a, n, true, 8);
}

static void vec_dot_one_f32_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_one(w, a, n, false, 16);
}

static void vec_dot_one_f32_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_one(w, a, n, false, 8);
}

static void vec_dot_one_f16_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_one(w, a, n, true, 16);
}

static void vec_dot_one_f16_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_f_one(w, a, n, true, 8);
}

static inline __m256 load_bf16(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/*
 * BF16 rows (BF16 activations) in llama.cpp's two orders without AVX512-BF16, for its
 * vector width of `lanes`:
 *   - a batch is tinyBLAS, as for F32/F16: one accumulator, FMA, element e in lane e % lanes;
 *   - one token is ggml's vec_dot_bf16: 32 elements a step, each product added (no FMA)
 *     into 8-lane groups c0..c3 (elements +0, +8, +16, +24); with 8 lanes the groups sum
 *     (c0 + c2) + (c1 + c3) before one reduction, with 16 lanes c0c1 and c2c3 are two
 *     accumulators reduced one after the other into a double, as is the tail.
 */
static ALWAYS_INLINE float dot_bf16_batch(const uint16_t *w, const uint16_t *a, int n, int lanes)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + lanes <= n; i += lanes) {
        lo = _mm256_fmadd_ps(load_bf16(w + i), load_bf16(a + i), lo);
        if (lanes == 16)
            hi = _mm256_fmadd_ps(load_bf16(w + i + 8), load_bf16(a + i + 8), hi);
    }
    float sum = hsum_ps(lanes == 16 ? _mm256_add_ps(lo, hi) : lo);
    for (; i < n; i++) /* not a case llama.cpp's matrix multiply takes (matmul.c) */
        sum = fmaf(pv_bf16_to_f32(w[i]), pv_bf16_to_f32(a[i]), sum);
    return sum;
}

static ALWAYS_INLINE float dot_bf16_one(const uint16_t *w, const uint16_t *a, int n, int lanes)
{
    __m256 c[4];
    for (int k = 0; k < 4; k++)
        c[k] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            c[k] = _mm256_add_ps(_mm256_mul_ps(load_bf16(w + i + 8 * k), load_bf16(a + i + 8 * k)), c[k]);
    double sum = 0.0;
    if (lanes == 16) {
        sum += hsum_ps(_mm256_add_ps(c[0], c[1]));
        sum += hsum_ps(_mm256_add_ps(c[2], c[3]));
    } else {
        sum += hsum_ps(_mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3])));
    }
    for (; i < n; i++)
        sum += (double)(pv_bf16_to_f32(w[i]) * pv_bf16_to_f32(a[i]));
    return (float)sum;
}

static void vec_dot_bf16_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_bf16_batch(w, a, n, 8);
}

static void vec_dot_bf16_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_bf16_batch(w, a, n, 16);
}

static void vec_dot_one_bf16_8(int n, float *s, const void *w, const void *a)
{
    *s = dot_bf16_one(w, a, n, 8);
}

static void vec_dot_one_bf16_16(int n, float *s, const void *w, const void *a)
{
    *s = dot_bf16_one(w, a, n, 16);
}

static float dot_f32_f16(const float *x, const uint16_t *h, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_f16(h + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_f16(h + i + 8), acc1);
    }
    float sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += x[i] * H2F(h[i]);
    return sum;
}

static void axpy_f16(float *y, float a, const uint16_t *h, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16(h + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * H2F(h[i]);
}

static void f16_to_f32(const uint16_t *h, float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, load_f16(h + i));
    for (; i < n; i++)
        y[i] = H2F(h[i]);
}

static void quantize_f16(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* ---- activation quantizers ---------------------------------------------------------- */

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* round to nearest, ties to even */
static inline __m256i round_even_epi32(__m256 v)
{
    return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 32 int32 in four vectors -> 32 int8 in order */
static inline __m256i pack_32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* 32 values: amax, then q = round(x * id) with ref.c's d and id */
static inline __m256i q8_0_block(const float *x, float *d_out)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    float amax = hmax_ps(m);
    float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    *d_out = d;
    return pack_32(round_even_epi32(_mm256_mul_ps(v0, vid)), round_even_epi32(_mm256_mul_ps(v1, vid)),
                   round_even_epi32(_mm256_mul_ps(v2, vid)), round_even_epi32(_mm256_mul_ps(v3, vid)));
}

static void quantize_q8_0(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / PV_QK8_0; i++, x += PV_QK8_0) {
        float d;
        __m256i q = q8_0_block(x, &d);
        y[i].d = pv_f32_to_fp16(d);
        _mm256_storeu_si256((__m256i *)y[i].qs, q);
    }
}

static void quantize_q8_1(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / PV_QK8_1; i++, x += PV_QK8_1) {
        float d;
        __m256i q = q8_0_block(x, &d);
        _mm256_storeu_si256((__m256i *)y[i].qs, q);
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        int sum = hsum_epi32_128(_mm_add_epi32(_mm256_castsi256_si128(s32),
                                               _mm256_extracti128_si256(s32, 1)));
        y[i].d = pv_f32_to_fp16(d);
        y[i].s = pv_f32_to_fp16((float)sum * d);
    }
}

/* Q8_K: like cpu_quantize_q8_K_ref (ties of |max| fall back to it to keep its choice) */
static void quantize_q8_K(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / PV_QK_K; i++, x += PV_QK_K) {
        __m256 vmax = _mm256_loadu_ps(x), vmin = vmax;
        for (int j = 8; j < PV_QK_K; j += 8) {
            __m256 v = _mm256_loadu_ps(x + j);
            vmax = _mm256_max_ps(vmax, v);
            vmin = _mm256_min_ps(vmin, v);
        }
        float hi = hmax_ps(vmax), lo = -hmax_ps(_mm256_sub_ps(_mm256_setzero_ps(), vmin));
        if (hi == -lo || !(hi == hi && lo == lo)) {
            cpu_quantize_q8_K_ref(x, &y[i], PV_QK_K);
            continue;
        }
        float max = hi > -lo ? hi : lo;
        float iscale = -127.0f / max;
        __m256 vs = _mm256_set1_ps(iscale);
        const __m256i top = _mm256_set1_epi32(127);
        for (int j = 0; j < PV_QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                __m256 v = _mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * k));
                v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(v), top);
            }
            __m256i b = pack_32(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), b);
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), b); /* pairs */
            __m128i s = _mm_add_epi16(_mm256_castsi256_si128(s16), _mm_setzero_si128());
            __m128i t = _mm256_extracti128_si256(s16, 1);
            /* 8 pairs per 16 bytes -> one sum of 16 */
            __m128i s4 = _mm_hadd_epi16(s, t);  /* quads */
            __m128i s8 = _mm_hadd_epi16(s4, s4); /* octets */
            __m128i s16g = _mm_hadd_epi16(s8, s8);
            y[i].bsums[j / 16] = (int16_t)_mm_extract_epi16(s16g, 0);
            y[i].bsums[j / 16 + 1] = (int16_t)_mm_extract_epi16(s16g, 1);
        }
        y[i].d = 1.0f / iscale;
    }
}

#if defined(CPU_QUANTS_VNNI)
void cpu_vnni_fill(struct cpu_kernels *k, int lanes)
#else
void cpu_avx2_fill(struct cpu_kernels *k, int lanes)
#endif
{
#if defined(CPU_QUANTS_VNNI)
    k->name = "avx2+vnni";
#else
    k->name = "avx2";
#endif
    k->widen_q8_0 = true;
    /* F32 / F16: a batch in tinyBLAS's order, one token in ggml vec_dot's (matmul.c picks) */
    const bool l16 = lanes == 16;
    k->f_lanes = l16 ? 16 : 8;
    k->vec_dot[PV_TYPE_F32] = l16 ? vec_dot_f32_16 : vec_dot_f32_8;
    k->vec_dot[PV_TYPE_F16] = l16 ? vec_dot_f16_16 : vec_dot_f16_8;
    k->vec_dot_one[PV_TYPE_F32] = l16 ? vec_dot_one_f32_16 : vec_dot_one_f32_8;
    k->vec_dot_one[PV_TYPE_F16] = l16 ? vec_dot_one_f16_16 : vec_dot_one_f16_8;
    k->vec_dot[PV_TYPE_BF16] = l16 ? vec_dot_bf16_16 : vec_dot_bf16_8;
    k->vec_dot_one[PV_TYPE_BF16] = l16 ? vec_dot_one_bf16_16 : vec_dot_one_bf16_8;
    k->vec_dot[PV_TYPE_Q4_0] = vec_dot_q4_0;
    k->vec_dot[PV_TYPE_Q4_1] = vec_dot_q4_1;
    k->vec_dot[PV_TYPE_Q5_0] = vec_dot_q5_0;
    k->vec_dot[PV_TYPE_Q5_1] = vec_dot_q5_1;
    k->vec_dot[PV_TYPE_Q8_0] = vec_dot_q8_0;
    k->vec_dot[PV_TYPE_Q2_K] = vec_dot_q2_K;
    k->vec_dot[PV_TYPE_Q3_K] = vec_dot_q3_K;
    k->vec_dot[PV_TYPE_Q4_K] = vec_dot_q4_K;
    k->vec_dot[PV_TYPE_Q5_K] = vec_dot_q5_K;
    k->vec_dot[PV_TYPE_Q6_K] = vec_dot_q6_K;
    k->vec_dot_multi[PV_TYPE_Q4_0] = vec_dot_multi_q4_0;
    k->vec_dot_multi[PV_TYPE_Q5_0] = vec_dot_multi_q5_0;
    k->vec_dot_multi[PV_TYPE_Q8_0] = vec_dot_multi_q8_0;
    k->vec_dot_multi[PV_TYPE_Q4_K] = vec_dot_multi_q4_K;
    k->vec_dot_multi[PV_TYPE_Q6_K] = vec_dot_multi_q6_K;
    k->unpack[PV_TYPE_Q4_0] = unpack_q4_0;
    k->unpack[PV_TYPE_Q5_0] = unpack_q5_0;
    k->vec_dot_s8 = vec_dot_s8;
    k->quantize[PV_TYPE_F16] = quantize_f16;
    k->quantize[PV_TYPE_Q8_0] = quantize_q8_0;
    k->quantize[PV_TYPE_Q8_1] = quantize_q8_1;
    k->quantize[PV_TYPE_Q8_K] = quantize_q8_K;
    k->dot_f32_f16 = dot_f32_f16;
    k->axpy_f16 = axpy_f16;
    k->f16_to_f32 = f16_to_f32;
}
