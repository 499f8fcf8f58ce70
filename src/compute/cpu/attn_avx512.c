/*
 * attn_avx512.c - the fast mode's attention over an F16 KV cache (PENSIEVE_KERNELS=fast),
 * AVX-512 F; not in llama.cpp's order. One work item is one token and one KV head: the
 * query heads that share that KV head go through the visible positions together, a tile of
 * ATT_TILE positions at a time: the tile's K and V rows are widened to f32 once for all of
 * them, and the softmax is the online one (a running maximum and sum per head, the output
 * rescaled when the maximum grows), so no score row of the whole context is kept and no
 * position is read twice. Items are taken from a shared counter, the last tokens (the
 * longest rows) first, so threads finish together however busy the machine is.
 * Built with the AVX-512 flags of fast_avx512.c; installed by it.
 */
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

#define ATT_TILE 64
#define ATT_HEADS 16 /* query heads per pass (more share a KV head: several passes) */

/* cpu_attn_fast_scratch_floats (cpu.h) is this layout's size */
_Static_assert(ATT_TILE == 64 && ATT_HEADS == 16, "cpu_attn_fast_scratch_floats");

/* e^x, 16 lanes: x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6 polynomial, times 2^n by
 * vscalefps (which gives 0 and infinity past the ends); relative error ~1e-7 */
static inline __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* in place: r[c] becomes column c of the 16 x 16 matrix whose rows were r[0..15] */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + k], 128-bit lane L: column 4L + k of rows 4i .. 4i + 3 */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
        t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xDD);
        r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xDD);
    }
}

/* n f16 values (n a multiple of 16) -> f32 */
static inline void widen(const uint16_t *h, float *f, int n)
{
    for (int i = 0; i < n; i += 16)
        _mm512_storeu_ps(f + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
}

struct att_job {
    const struct compute_attn *a;
    float *scratch;
    size_t scratch_floats;
    size_t n_items;
    atomic_size_t next;
};

/* heads [h0, h0 + nh) of token t, all of KV head g */
static void attend_heads(const struct compute_attn *a, float *sc, int t, int g, int h0, int nh)
{
    const int hd_k = a->hd_k, hd_v = a->hd_v;
    float *kt = sc, *vt = kt + ATT_TILE * hd_k, *s = vt + ATT_TILE * hd_v;
    float *q = s + ATT_HEADS * ATT_TILE, *o = q + ATT_HEADS * hd_k;
    float *mx = o + ATT_HEADS * hd_v, *sum = mx + ATT_HEADS;
    const uint32_t pos = (uint32_t)a->pos[t];
    const uint32_t j0 = a->n_swa && pos + 1 > a->n_swa ? pos + 1 - a->n_swa : 0;
    const uint32_t *blocks = a->blocks[t];
    const uint32_t mask = (1u << a->block_shift) - 1;
    const char *k0 = (const char *)a->k + (size_t)g * (size_t)hd_k * 2;
    const char *v0 = (const char *)a->v + (size_t)g * (size_t)hd_v * 2;

    for (int h = 0; h < nh; h++) { /* q scaled by both factors once */
        const float *qs = a->q + (size_t)t * a->q_stride + (size_t)(h0 + h) * (size_t)hd_k;
        __m512 f = _mm512_set1_ps(a->q_scale * a->scale);
        for (int i = 0; i < hd_k; i += 16)
            _mm512_storeu_ps(q + h * hd_k + i, _mm512_mul_ps(_mm512_loadu_ps(qs + i), f));
        memset(o + h * hd_v, 0, (size_t)hd_v * sizeof(float));
        mx[h] = -INFINITY;
        sum[h] = 0.0f;
    }
    for (uint32_t jt = j0; jt <= pos; jt += ATT_TILE) {
        const int nj = (int)PV_MIN((uint32_t)ATT_TILE, pos + 1 - jt);
        const uint16_t *krow[ATT_TILE];
        for (int j = 0; j < nj; j++) {
            uint32_t p = jt + (uint32_t)j;
            size_t cell = ((size_t)blocks[p >> a->block_shift] << a->block_shift) | (p & mask);
            krow[j] = (const uint16_t *)(k0 + cell * a->k_row_bytes);
            widen((const uint16_t *)(v0 + cell * a->v_row_bytes), vt + j * hd_v, hd_v);
        }
        /* K transposed, kt[d][j] (64 columns, zero past nj): the scores of 16 positions
           are then one FMA per dimension, no horizontal sums */
        for (int jb = 0; jb < ATT_TILE; jb += 16)
            for (int db = 0; db < hd_k; db += 16) {
                __m512 r[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++)
                    r[i] = jb + i < nj ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(krow[jb + i] + db)))
                                       : _mm512_setzero_ps();
                transpose16(r);
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++)
                    _mm512_store_ps(kt + (size_t)(db + c) * ATT_TILE + jb, r[c]);
            }
        for (int h = 0; h < nh; h++) {
            float *sh = s + h * ATT_TILE;
            const float *qh = q + h * hd_k;
            /* scores of the 64 positions (zero rows past nj: never read below) */
            __m512 sa[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                            _mm512_setzero_ps()};
            for (int d = 0; d < hd_k; d++) {
                __m512 qd = _mm512_set1_ps(qh[d]);
                const float *kd = kt + (size_t)d * ATT_TILE;
                sa[0] = _mm512_fmadd_ps(qd, _mm512_load_ps(kd), sa[0]);
                sa[1] = _mm512_fmadd_ps(qd, _mm512_load_ps(kd + 16), sa[1]);
                sa[2] = _mm512_fmadd_ps(qd, _mm512_load_ps(kd + 32), sa[2]);
                sa[3] = _mm512_fmadd_ps(qd, _mm512_load_ps(kd + 48), sa[3]);
            }
            for (int b = 0; b < 4; b++)
                _mm512_storeu_ps(sh + 16 * b, sa[b]);
            /* online softmax: new maximum, rescale, probabilities of the tile */
            float m = mx[h];
            for (int j = 0; j < nj; j++)
                m = sh[j] > m ? sh[j] : m;
            float f = mx[h] == -INFINITY ? 0.0f : expf(mx[h] - m);
            mx[h] = m;
            __m512 vm = _mm512_set1_ps(m), ps = _mm512_setzero_ps();
            for (int j = 0; j < nj; j += 16) {
                __mmask16 k = nj - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nj - j)) - 1);
                __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sh + j), vm));
                e = _mm512_maskz_mov_ps(k, e);
                _mm512_mask_storeu_ps(sh + j, k, e);
                ps = _mm512_add_ps(ps, e);
            }
            sum[h] = sum[h] * f + _mm512_reduce_add_ps(ps);
            /* values: o = o f + sum_j p_j v_j, 64 dims at a time in registers */
            float *oh = o + h * hd_v;
            __m512 vf = _mm512_set1_ps(f);
            int d = 0;
            for (; d + 64 <= hd_v; d += 64) { /* 64 dims in 4 registers */
                __m512 acc0 = _mm512_mul_ps(_mm512_loadu_ps(oh + d), vf);
                __m512 acc1 = _mm512_mul_ps(_mm512_loadu_ps(oh + d + 16), vf);
                __m512 acc2 = _mm512_mul_ps(_mm512_loadu_ps(oh + d + 32), vf);
                __m512 acc3 = _mm512_mul_ps(_mm512_loadu_ps(oh + d + 48), vf);
                for (int j = 0; j < nj; j++) {
                    __m512 pj = _mm512_set1_ps(sh[j]);
                    const float *vj = vt + j * hd_v + d;
                    acc0 = _mm512_fmadd_ps(pj, _mm512_load_ps(vj), acc0);
                    acc1 = _mm512_fmadd_ps(pj, _mm512_load_ps(vj + 16), acc1);
                    acc2 = _mm512_fmadd_ps(pj, _mm512_load_ps(vj + 32), acc2);
                    acc3 = _mm512_fmadd_ps(pj, _mm512_load_ps(vj + 48), acc3);
                }
                _mm512_storeu_ps(oh + d, acc0);
                _mm512_storeu_ps(oh + d + 16, acc1);
                _mm512_storeu_ps(oh + d + 32, acc2);
                _mm512_storeu_ps(oh + d + 48, acc3);
            }
            for (; d < hd_v; d += 64) { /* the rest, under 64 dims */
                int nd = PV_MIN(64, hd_v - d) / 16;
                __m512 acc[4];
                for (int c = 0; c < 4; c++)
                    acc[c] = c < nd ? _mm512_mul_ps(_mm512_loadu_ps(oh + d + 16 * c), vf) : _mm512_setzero_ps();
                for (int j = 0; j < nj; j++) {
                    __m512 pj = _mm512_set1_ps(sh[j]);
                    const float *vj = vt + j * hd_v + d;
                    acc[0] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), acc[0]);
                    if (nd > 1)
                        acc[1] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), acc[1]);
                    if (nd > 2)
                        acc[2] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), acc[2]);
                    if (nd > 3)
                        acc[3] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), acc[3]);
                }
                for (int c = 0; c < nd; c++)
                    _mm512_storeu_ps(oh + d + 16 * c, acc[c]);
            }
        }
    }
    for (int h = 0; h < nh; h++) {
        float *out = a->out + ((size_t)t * (size_t)a->n_head + (size_t)(h0 + h)) * (size_t)hd_v;
        __m512 inv = _mm512_set1_ps(1.0f / sum[h]);
        for (int d = 0; d < hd_v; d += 16)
            _mm512_storeu_ps(out + d, _mm512_mul_ps(_mm512_loadu_ps(o + h * hd_v + d), inv));
    }
}

static void att_worker(void *arg, int ith, int nth)
{
    (void)nth;
    struct att_job *job = arg;
    const struct compute_attn *a = job->a;
    const int group = a->n_head / a->n_head_kv;
    float *sc = job->scratch + (size_t)ith * job->scratch_floats;
    sc = (float *)(((uintptr_t)sc + 63) & ~(uintptr_t)63);
    for (;;) {
        size_t k = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (k >= job->n_items)
            break;
        /* the last tokens first: they see the most positions */
        int t = a->n - 1 - (int)(k / (size_t)a->n_head_kv);
        int g = (int)(k % (size_t)a->n_head_kv);
        for (int h0 = 0; h0 < group; h0 += ATT_HEADS)
            attend_heads(a, sc, t, g, g * group + h0, PV_MIN(ATT_HEADS, group - h0));
    }
}

bool cpu_fast_attention_avx512(struct pv_pool *pool, float *scratch, size_t scratch_floats,
                               const struct compute_attn *a)
{
    int nth = pool ? pool_size(pool) : 1;
    if (!a->f16 || a->hd_k % 16 != 0 || a->hd_v % 16 != 0 || a->n_head % a->n_head_kv != 0 ||
        scratch_floats < cpu_attn_fast_scratch_floats(a->hd_k, a->hd_v) ||
        (size_t)a->n * (size_t)a->n_head_kv < 4 * (size_t)nth) /* decode: the per-head kernel */
        return false;
    struct att_job job = {a, scratch, scratch_floats, (size_t)a->n * (size_t)a->n_head_kv};
    atomic_init(&job.next, 0);
    if (pool)
        pool_run(pool, att_worker, &job);
    else
        att_worker(&job, 0, 1);
    return true;
}
