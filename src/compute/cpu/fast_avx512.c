/*
 * fast_avx512.c - the fast kernel mode's matmul (PENSIEVE_KERNELS=fast) on CPUs with
 * AVX-512 F/BW/VL/DQ and AVX512-VNNI. Not in llama.cpp's float order: results differ
 * from the exact modes by rounding (tests/tools/fast_check.c bounds the difference).
 *
 * Every supported weight type is expressed in one form, per 4-element lane l and per
 * 16-element group g of a row:   w[e] = ws[l(e)] * q[e] - mw[g(e)],  q unsigned bytes.
 *   Q4_0: q = nibble, ws = d, mw = 8d        Q4_1: q = nibble, ws = d, mw = -m
 *   Q5_0: q = 5 bits, ws = d, mw = 16d       Q5_1: q = 5 bits, ws = d, mw = -m
 *   Q8_0: q = q8 + 128, ws = d, mw = 128d    Q4_K: ws = d sc_j, mw = dmin m_j (32-blocks)
 *   Q6_K: q = 6 bits, ws = d sc_g, mw = 32 d sc_g (16-groups)
 * The activations are quantized to int8 as the exact kernels quantize them (Q8_0 for the
 * legacy types, Q8_K for the K-quants), kept as a = da * qa with da per 32 elements and,
 * per 16-group, ca = da * sum of its qa. Then
 *   y = sum_l ws_l da_l (q . qa)_l - sum_g mw_g ca_g
 * where (q . qa)_l is one vpdpbusd lane (u8 x s8, 4 products). Weight rows are unpacked
 * into that form a chunk at a time (per call, in cache; nothing repacked at load), and a
 * chunk's rows meet every token of the batch in tiles of 2 rows x 4 tokens.
 * Built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni (plus AVX2/FMA/F16C);
 * dispatch.c installs it only on a CPU that has them.
 */
#include <immintrin.h>
#include <stdatomic.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))


static inline float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* bytes of one row in the unpacked / activation form: q (n), lane scales (n / 4 floats),
 * group terms (n / 16 floats) */
static inline size_t fast_row_bytes(int64_t n)
{
    return (size_t)n + (size_t)n + (size_t)n / 4;
}

/* ---- weight unpacking ------------------------------------------------------------- */

struct fast_row { /* pointers into one unpacked row */
    uint8_t *q;
    float *ws, *mw;
};

static inline struct fast_row fast_row_at(uint8_t *base, int64_t n)
{
    struct fast_row r = {base, (float *)(base + n), (float *)(base + 2 * n)};
    return r;
}

/* one 32-element block with one scale: lanes 8 x ws, groups 2 x mw */
static ALWAYS_INLINE void put_block32(struct fast_row *r, int64_t b, __m256i q, float ws, float mw)
{
    _mm256_storeu_si256((__m256i *)(r->q + 32 * b), q);
    _mm256_storeu_ps(r->ws + 8 * b, _mm256_set1_ps(ws));
    r->mw[2 * b] = mw;
    r->mw[2 * b + 1] = mw;
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles then high nibbles */
static ALWAYS_INLINE __m256i nibbles16(const uint8_t *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

static void unpack_q4_0(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q4_0 *w = vw;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = h2f(w[b].d);
        put_block32(r, b, nibbles16(w[b].qs), d, 8.0f * d);
    }
}

static void unpack_q4_1(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q4_1 *w = vw;
    for (int64_t b = 0; b < n / 32; b++)
        put_block32(r, b, nibbles16(w[b].qs), h2f(w[b].d), -h2f(w[b].m));
}

static ALWAYS_INLINE __m256i five_bits(const uint8_t *qs, const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    return _mm256_mask_add_epi8(nibbles16(qs), (__mmask32)h, nibbles16(qs), _mm256_set1_epi8(16));
}

static void unpack_q5_0(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q5_0 *w = vw;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = h2f(w[b].d);
        put_block32(r, b, five_bits(w[b].qs, w[b].qh), d, 16.0f * d);
    }
}

static void unpack_q5_1(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q5_1 *w = vw;
    for (int64_t b = 0; b < n / 32; b++)
        put_block32(r, b, five_bits(w[b].qs, w[b].qh), h2f(w[b].d), -h2f(w[b].m));
}

static void unpack_q8_0(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q8_0 *w = vw;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = h2f(w[b].d);
        __m256i q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[b].qs),
                                     _mm256_set1_epi8((char)0x80));
        put_block32(r, b, q, d, 128.0f * d);
    }
}

static void unpack_q4_K(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q4_K *w = vw;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        const float d = h2f(w[i].d), dmin = h2f(w[i].dmin);
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * j));
            uint8_t sc, m;
            cpu_scale_min_k4(2 * j, w[i].scales, &sc, &m);
            put_block32(r, 8 * i + 2 * j, _mm256_and_si256(v, m4), d * sc, dmin * m);
            cpu_scale_min_k4(2 * j + 1, w[i].scales, &sc, &m);
            put_block32(r, 8 * i + 2 * j + 1, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                        d * sc, dmin * m);
        }
    }
}

static void unpack_q6_K(const void *vw, struct fast_row *r, int64_t n)
{
    const struct pv_block_q6_K *w = vw;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        const float d = h2f(w[i].d);
        uint8_t *q = r->q + PV_QK_K * i;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h, *qh = w[i].qh + 32 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_and_si256(hb, m2));
            __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
            _mm256_storeu_si256((__m256i *)(q + 128 * h), q1);
            _mm256_storeu_si256((__m256i *)(q + 128 * h + 32), q2);
            _mm256_storeu_si256((__m256i *)(q + 128 * h + 64), q3);
            _mm256_storeu_si256((__m256i *)(q + 128 * h + 96), q4);
        }
        for (int g = 0; g < 16; g++) {
            float s = d * (float)w[i].scales[g];
            _mm_storeu_ps(r->ws + 64 * i + 4 * g, _mm_set1_ps(s));
            r->mw[16 * i + g] = 32.0f * s;
        }
    }
}

typedef void (*fast_unpack_fn)(const void *w, struct fast_row *r, int64_t n);

static fast_unpack_fn unpack_for(uint32_t type)
{
    switch (type) {
    case PV_TYPE_Q4_0: return unpack_q4_0;
    case PV_TYPE_Q4_1: return unpack_q4_1;
    case PV_TYPE_Q5_0: return unpack_q5_0;
    case PV_TYPE_Q5_1: return unpack_q5_1;
    case PV_TYPE_Q8_0: return unpack_q8_0;
    case PV_TYPE_Q4_K: return unpack_q4_K;
    case PV_TYPE_Q6_K: return unpack_q6_K;
    default: return NULL;
    }
}

/* ---- activations -------------------------------------------------------------------- */

/* An activation row: q int8[n], then per 32-block da, per 16-group ca16 = da * sum q, per
 * 32-block ca32 = the block's two ca16 summed. */
struct fast_act {
    const int8_t *q;
    const float *da, *ca16, *ca32;
};

static inline size_t act_row_bytes(int64_t n)
{
    return ((size_t)n + (size_t)(n / 32) * 16 + 63) & ~(size_t)63;
}

static inline struct fast_act act_at(const uint8_t *base, int64_t n)
{
    const float *f = (const float *)(base + n);
    struct fast_act a = {(const int8_t *)base, f, f + n / 32, f + 3 * (n / 32)};
    return a;
}

/* x[n] -> one activation row at out, quantized as the exact kernels quantize it (so the
 * fast mode differs from them by float order, not by its inputs): Q8_0 (an fp16 scale per
 * 32) for the legacy types, Q8_K (an f32 scale per 256) for the K-quants; tmp holds one
 * row of that type */
static void quantize_row(cpu_quantize_fn quantize, bool k_type, const float *x, uint8_t *out,
                         int64_t n, void *tmp)
{
    const int64_t nb = n / 32;
    int8_t *q = (int8_t *)out;
    float *da = (float *)(out + n), *ca16 = da + nb, *ca32 = da + 3 * nb;
    quantize(x, tmp, n);
    if (k_type) {
        const struct pv_block_q8_K *a = tmp;
        for (int64_t i = 0; i < n / PV_QK_K; i++) {
            memcpy(q + PV_QK_K * i, a[i].qs, PV_QK_K);
            for (int b = 0; b < 8; b++)
                da[8 * i + b] = a[i].d;
            for (int g = 0; g < 16; g++)
                ca16[16 * i + g] = a[i].d * (float)a[i].bsums[g];
        }
    } else {
        const struct pv_block_q8_0 *a = tmp;
        for (int64_t b = 0; b < nb; b++) {
            memcpy(q + 32 * b, a[b].qs, 32);
            da[b] = h2f(a[b].d);
            __m512i i0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)a[b].qs));
            __m512i i1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a[b].qs + 16)));
            ca16[2 * b] = da[b] * (float)_mm512_reduce_add_epi32(i0);
            ca16[2 * b + 1] = da[b] * (float)_mm512_reduce_add_epi32(i1);
        }
    }
    for (int64_t b = 0; b < nb; b++)
        ca32[b] = ca16[2 * b] + ca16[2 * b + 1];
}

/* ---- 16 interleaved rows -------------------------------------------------------------- */

/*
 * A chunk of 16 weight rows; block b of 32 elements at b * CH_BLOCK bytes: 8 steps of 64
 * bytes (step s holds row i's elements 32b + 4s .. + 3 at bytes 4i .. 4i + 3, so one
 * vpdpbusd against 4 broadcast activation bytes advances all 16 rows), then ws[2][16] and
 * mw[2][16], the scales and minimums of the block's two 16-groups per row (types with one
 * scale per 32 elements read [0] only). Rows past the matrix are zero.
 */
#define CH_ROWS 16
#define CH_BLOCK (8 * 64 + 4 * 16 * 4)

/* rows [0, nrows) of a chunk from nrows weight rows at w (w_row_bytes apart); tmp holds one
 * unpacked row (fast_row_bytes) */
static void interleave_rows(fast_unpack_fn unpack, const uint8_t *w, size_t w_row_bytes, int64_t n,
                            int nrows, uint8_t *ch, uint8_t *tmp)
{
    const int64_t nb = n / 32;
    if (nrows < CH_ROWS)
        memset(ch, 0, (size_t)nb * CH_BLOCK);
    for (int i = 0; i < nrows; i++) {
        struct fast_row fr = fast_row_at(tmp, n);
        unpack(w + (size_t)i * w_row_bytes, &fr, n);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = ch + (size_t)b * CH_BLOCK;
            const uint32_t *src = (const uint32_t *)(fr.q + 32 * b);
            uint32_t *dst = (uint32_t *)blk + i;
            for (int st = 0; st < 8; st++)
                dst[16 * st] = src[st];
            float *ws = (float *)(blk + 512), *mw = ws + 32;
            ws[i] = fr.ws[8 * b];
            ws[16 + i] = fr.ws[8 * b + 4];
            mw[i] = fr.mw[2 * b];
            mw[16 + i] = fr.mw[2 * b + 1];
        }
    }
}

/* y[t * ys + i] for the chunk's 16 rows (i < nrows) and T activation rows (ab bytes apart);
 * g16: the rows have a scale per 16 elements (two per block), else one per 32 */
static ALWAYS_INLINE void rows16(int T, bool g16, int64_t n, const uint8_t *ch, const uint8_t *a,
                                 size_t ab, float *y, size_t ys, int nrows)
{
    const int64_t nb = n / 32;
    __m512 af[8];
    struct fast_act act[8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        af[t] = _mm512_setzero_ps();
        act[t] = act_at(a + (size_t)t * ab, n);
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = ch + (size_t)b * CH_BLOCK;
        const float *ws = (const float *)(blk + 512), *mw = ws + 32;
        for (int h = 0; h < (g16 ? 2 : 1); h++) {
            __m512i ai[8];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                ai[t] = _mm512_setzero_si512();
            for (int st = (g16 ? 4 * h : 0); st < (g16 ? 4 * h + 4 : 8); st++) {
                __m512i wv = _mm512_load_si512(blk + 64 * st);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    int32_t q4;
                    memcpy(&q4, act[t].q + 32 * b + 4 * st, 4);
                    ai[t] = _mm512_dpbusd_epi32(ai[t], wv, _mm512_set1_epi32(q4));
                }
            }
            __m512 wsv = _mm512_load_ps(ws + 16 * h), mwv = _mm512_load_ps(mw + 16 * h);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(ai[t]), wsv);
                af[t] = _mm512_fmadd_ps(p, _mm512_set1_ps(act[t].da[b]), af[t]);
                float c = g16 ? act[t].ca16[2 * b + h] : act[t].ca32[b];
                af[t] = _mm512_fnmadd_ps(mwv, _mm512_set1_ps(c), af[t]);
            }
        }
    }
    __mmask16 k = (__mmask16)((1u << nrows) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, k, af[t]);
}

#define FAST_T 8 /* tokens per pass over a chunk */
#define ROWS_FN(T)                                                                              \
    static void rows16_##T(bool g16, int64_t n, const uint8_t *ch, const uint8_t *a, size_t ab,  \
                           float *y, size_t ys, int nrows)                                      \
    {                                                                                           \
        if (g16)                                                                                \
            rows16(T, true, n, ch, a, ab, y, ys, nrows);                                        \
        else                                                                                    \
            rows16(T, false, n, ch, a, ab, y, ys, nrows);                                       \
    }
ROWS_FN(1)
ROWS_FN(2)
ROWS_FN(3)
ROWS_FN(4)
ROWS_FN(5)
ROWS_FN(6)
ROWS_FN(7)
ROWS_FN(8)
#undef ROWS_FN

typedef void (*rows_fn)(bool g16, int64_t n, const uint8_t *ch, const uint8_t *a, size_t ab,
                        float *y, size_t ys, int nrows);
static const rows_fn k_rows[FAST_T] = {rows16_1, rows16_2, rows16_3, rows16_4,
                                       rows16_5, rows16_6, rows16_7, rows16_8};

/* ---- the matmul --------------------------------------------------------------------- */


struct fast_job {
    fast_unpack_fn unpack;
    cpu_quantize_fn quantize; /* the exact table's, to Q8_0 or (k_type) Q8_K */
    bool k_type;
    uint8_t *qtmp;            /* [nth] rows of qtmp_bytes */
    size_t qtmp_bytes;
    bool g16;
    const uint8_t *w;
    size_t w_row_bytes;
    const float *x;
    uint8_t *a;          /* [n_tokens] activation rows of a_row_bytes */
    size_t a_row_bytes;
    uint8_t *work;       /* [nth] areas of work_bytes: a chunk, then one unpacked row */
    size_t work_bytes, chunk_bytes;
    float *y;
    int64_t ne0, n_rows;
    int n_tokens;
    size_t n_chunks;
    atomic_size_t next_chunk;
};

static void fast_quantize(void *p, int ith, int nth)
{
    struct fast_job *job = p;
    size_t begin, end;
    pool_split((size_t)job->n_tokens, ith, nth, &begin, &end);
    for (size_t t = begin; t < end; t++)
        quantize_row(job->quantize, job->k_type, job->x + t * (size_t)job->ne0,
                     job->a + t * job->a_row_bytes, job->ne0, job->qtmp + (size_t)ith * job->qtmp_bytes);
}

static void fast_rows(void *p, int ith, int nth)
{
    (void)nth;
    struct fast_job *job = p;
    const int64_t n = job->ne0;
    uint8_t *ch = job->work + (size_t)ith * job->work_bytes, *tmp = ch + job->chunk_bytes;
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed);
        if (c >= job->n_chunks)
            break;
        int64_t r0 = (int64_t)c * CH_ROWS;
        int nrows = (int)PV_MIN(CH_ROWS, job->n_rows - r0);
        interleave_rows(job->unpack, job->w + (size_t)r0 * job->w_row_bytes, job->w_row_bytes, n,
                        nrows, ch, tmp);
        for (int t = 0; t < job->n_tokens; t += FAST_T) {
            int nt = PV_MIN(FAST_T, job->n_tokens - t);
            k_rows[nt - 1](job->g16, n, ch, job->a + (size_t)t * job->a_row_bytes, job->a_row_bytes,
                           job->y + (size_t)t * (size_t)job->n_rows + r0, (size_t)job->n_rows, nrows);
        }
    }
}

bool cpu_fast_matmul_avx512(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                            int n_tokens)
{
    fast_unpack_fn unpack = unpack_for(W->type);
    if (!unpack || W->ne[0] % 64 != 0 || W->ne[0] > INT32_MAX || n_tokens < CPU_FAST_MIN_TOKENS)
        return false;
    if (W->ne[1] <= 0)
        return true;
    const int64_t n = W->ne[0];
    const bool k_type = cpu_type_blck(W->type) == PV_QK_K;
    const uint32_t dot_type = k_type ? PV_TYPE_Q8_K : PV_TYPE_Q8_0;
    struct fast_job job = {
        .unpack = unpack,
        .quantize = cpu_kernels_get()->quantize[dot_type],
        .k_type = k_type,
        .qtmp_bytes = (cpu_row_bytes(dot_type, n) + 63) & ~(size_t)63,
        .g16 = W->type == PV_TYPE_Q6_K,
        .w = W->data,
        .w_row_bytes = cpu_row_bytes(W->type, n),
        .x = x,
        .a_row_bytes = act_row_bytes(n),
        .chunk_bytes = (size_t)(n / 32) * CH_BLOCK,
        .y = y,
        .ne0 = n,
        .n_rows = W->ne[1],
        .n_tokens = n_tokens,
    };
    job.work_bytes = job.chunk_bytes + ((fast_row_bytes(n) + 63) & ~(size_t)63);
    int nth = pool ? pool_size(pool) : 1;
    job.n_chunks = (size_t)((job.n_rows + CH_ROWS - 1) / CH_ROWS);
    atomic_init(&job.next_chunk, 0);

    size_t act = job.a_row_bytes * (size_t)n_tokens;
    uint8_t *base = cpu_matmul_scratch(act + (job.work_bytes + job.qtmp_bytes) * (size_t)nth + 64);
    base = (uint8_t *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    job.a = base;
    job.work = base + act;
    job.qtmp = job.work + job.work_bytes * (size_t)nth;
    if (pool && n_tokens >= nth && n_tokens > 1)
        pool_run(pool, fast_quantize, &job);
    else
        fast_quantize(&job, 0, 1);
    if (pool && nth > 1)
        pool_run(pool, fast_rows, &job);
    else
        fast_rows(&job, 0, 1);
    return true;
}
