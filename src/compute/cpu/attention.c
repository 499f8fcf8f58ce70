/*
 * attention.c - scaled dot-product attention over a block KV cache, threaded over heads
 * (the CPU backend's attention op).
 *
 * For each query token and head: scores against every visible position of the token's
 * sequence (causal, and inside the sliding window on SWA layers), read through the
 * sequence's block table, softmax in f32 with the max subtracted, then the
 * probability-weighted sum of the values. Grouped-query attention maps query head h to
 * KV head h / (n_head / n_head_kv). One (token, head) pair is one work item; the items
 * are split across the pool. The per-item kernel is picked at context creation: the
 * AVX2/F16C one for an F16 cache (attn_avx2.c), else the portable one below.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

/* Element i of a cache row of F16 (f16 true) or F32 values. */
static inline float kv_at(const void *row, int i, bool f16)
{
    return f16 ? cpu_fp16_table[((const uint16_t *)row)[i]] : ((const float *)row)[i];
}

/* The portable kernel: plain f32 arithmetic over either cache type. */
static void attend_generic(const struct cpu_attn_item *it, bool f16)
{
    float *s = it->scores, *q = it->qbuf, max = -INFINITY, sum = 0.0f;

    for (int i = 0; i < it->hd_k; i++)
        q[i] = it->q[i] * it->q_scale;
    /* s_j = scale * q . k_j */
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        const void *k = (const char *)it->k + cpu_attn_cell(it, j) * it->k_stride;
        float dot = 0.0f;
        for (int i = 0; i < it->hd_k; i++)
            dot += q[i] * kv_at(k, i, f16);
        s[j] = it->scale * dot;
        max = s[j] > max ? s[j] : max;
    }
    /* p_j = exp(s_j - max) / sum */
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        s[j] = expf(s[j] - max);
        sum += s[j];
    }
    /* out = sum_j p_j v_j */
    memset(it->out, 0, (size_t)it->hd_v * sizeof(float));
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        const void *v = (const char *)it->v + cpu_attn_cell(it, j) * it->v_stride;
        const float p = s[j] / sum;
        for (int d = 0; d < it->hd_v; d++)
            it->out[d] += p * kv_at(v, d, f16);
    }
}

static void attend_f16(const struct cpu_attn_item *it)
{
    attend_generic(it, true);
}

static void attend_f32(const struct cpu_attn_item *it)
{
    attend_generic(it, false);
}

cpu_attend_fn cpu_attend_for(bool f16, uint32_t head_dim_v)
{
    if (!f16)
        return attend_f32;
    /* the SIMD kernels in use imply AVX2, FMA and F16C (dispatch.c checked them) */
    if (cpu_simd_active() && head_dim_v % 8 == 0)
        return cpu_llama_lanes() == 16 ? cpu_attend_f16_avx512_order : cpu_attend_f16_avx2;
    return attend_f16; /* cpu_simd_active filled cpu_fp16_table */
}

size_t cpu_attn_scratch_floats(uint32_t n_ctx, int hd_k, int hd_v)
{
    /* scores [n_ctx] + q [hd_k] + 64 accumulator lanes of [hd_v], or the fast mode's */
    size_t exact = (size_t)n_ctx + (size_t)hd_k + 64 * (size_t)hd_v;
    return PV_MAX(exact, cpu_attn_fast_scratch_floats(hd_k, hd_v));
}

struct attn_job {
    const struct compute_attn *a;
    cpu_attend_fn attend;
    float *scratch;
    uint32_t n_ctx;
};

static void attn_worker(void *arg, int ith, int nth)
{
    const struct attn_job *job = arg;
    const struct compute_attn *a = job->a;
    const int group = a->n_head / a->n_head_kv;
    const size_t elt = a->f16 ? 2 : 4;
    float *scratch = job->scratch + (size_t)ith * cpu_attn_scratch_floats(job->n_ctx, a->hd_k, a->hd_v);
    struct cpu_attn_item it = {
        .k_stride = a->k_row_bytes,
        .v_stride = a->v_row_bytes,
        .block_shift = a->block_shift,
        .hd_k = a->hd_k,
        .hd_v = a->hd_v,
        .q_scale = a->q_scale,
        .scale = a->scale,
        .scores = scratch,
        .qbuf = scratch + job->n_ctx,
        .lanes = scratch + job->n_ctx + a->hd_k,
    };
    size_t begin, end;

    pool_split((size_t)a->n * (size_t)a->n_head, ith, nth, &begin, &end);
    for (size_t item = begin; item < end; item++) {
        const int t = (int)(item / (size_t)a->n_head), h = (int)(item % (size_t)a->n_head);
        const int g = h / group;
        /* a sequence with several tokens in the step is attended in the batch order */
        it.batch = t >= a->n_one;
        it.blocks = a->blocks[t];
        it.pos = (uint32_t)a->pos[t];
        it.j0 = a->n_swa && it.pos + 1 > a->n_swa ? it.pos + 1 - a->n_swa : 0;
        it.q = a->q + (size_t)t * a->q_stride + (size_t)h * a->hd_k;
        it.k = (const char *)a->k + (size_t)g * a->hd_k * elt;
        it.v = (const char *)a->v + (size_t)g * a->hd_v * elt;
        it.out = a->out + ((size_t)t * a->n_head + h) * a->hd_v;
        job->attend(&it);
    }
}

void cpu_attention(struct pv_pool *pool, cpu_attend_fn attend, float *scratch, uint32_t n_ctx,
                   const struct compute_attn *a)
{
    const struct cpu_kernels *k = cpu_kernels_get();
    if (k->attention && k->attention(pool, scratch, cpu_attn_scratch_floats(n_ctx, a->hd_k, a->hd_v), a))
        return; /* the fast mode's */
    struct attn_job job = {a, attend, scratch, n_ctx};
    if (pool)
        pool_run(pool, attn_worker, &job);
    else
        attn_worker(&job, 0, 1);
}
