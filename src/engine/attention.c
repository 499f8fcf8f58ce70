/*
 * attention.c - scaled dot-product attention over the KV cache, threaded over heads.
 *
 * For each query token and head: scores against every visible cell (causal, and inside
 * the sliding window on SWA layers), softmax in f32 with the max subtracted, then the
 * probability-weighted sum of the values. Grouped-query attention maps query head h to
 * KV head h / (n_head / n_head_kv). One (token, head) pair is one work item; the items
 * are split across the pool. The per-item kernel is picked at context creation: the
 * AVX2/F16C one for an F16 cache (attn_avx2.c), else the portable one below.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute/compute.h"
#include "engine/engine.h"

static float f16_table[65536]; /* f16 bits -> f32, filled once */
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        f16_table[i] = pv_fp16_to_f32((uint16_t)i);
}

/* Element i of a cache row of F16 (f16 true) or F32 values. */
static inline float kv_at(const void *row, int i, bool f16)
{
    return f16 ? f16_table[((const uint16_t *)row)[i]] : ((const float *)row)[i];
}

/* The portable kernel: plain f32 arithmetic over either cache type. */
static void attend_generic(const struct engine_attn_item *it, bool f16)
{
    float *s = it->scores, *q = it->qbuf, max = -INFINITY, sum = 0.0f;

    for (int i = 0; i < it->hd_k; i++)
        q[i] = it->q[i] * it->q_scale;
    /* s_j = scale * q . k_j */
    for (uint32_t j = it->j0; j <= it->pos; j++) {
        const void *k = (const char *)it->k + (size_t)j * it->k_stride;
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
        const void *v = (const char *)it->v + (size_t)j * it->v_stride;
        const float p = s[j] / sum;
        for (int d = 0; d < it->hd_v; d++)
            it->out[d] += p * kv_at(v, d, f16);
    }
}

static void attend_f16(const struct engine_attn_item *it)
{
    attend_generic(it, true);
}

static void attend_f32(const struct engine_attn_item *it)
{
    attend_generic(it, false);
}

engine_attend_fn engine_attend_for(enum pv_kv_type type, uint32_t head_dim_v)
{
    if (type == PV_KV_F32)
        return attend_f32;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && head_dim_v % 8 == 0 && cpu_simd_active()) {
        /* in the lane width of the kernel mode */
        return cpu_llama_lanes() == 16 ? engine_attend_f16_avx512_order : engine_attend_f16_avx2;
    }
#endif
    pthread_once(&f16_table_once, f16_table_init);
    return attend_f16;
}

size_t engine_attn_scratch_floats(const struct model_hparams *hp, uint32_t n_ctx)
{
    /* scores [n_ctx] + q [hd_k] + 64 accumulator lanes of [hd_v] */
    return (size_t)n_ctx + hp->head_dim_k + 64 * (size_t)hp->head_dim_v;
}

struct attn_job {
    struct pv_context *ctx;
    const float *q;
    size_t q_stride;
    float *att;
    int n;
    uint32_t pos0;
    int il;
    bool swa;
};

static void attn_worker(void *arg, int ith, int nth)
{
    const struct attn_job *job = arg;
    struct pv_context *ctx = job->ctx;
    const struct model_hparams *hp = &ctx->model->hp;
    const int n_head = (int)hp->n_head, hd_k = (int)hp->head_dim_k, hd_v = (int)hp->head_dim_v;
    const int group = (int)(hp->n_head / hp->n_head_kv);
    const size_t k_row = (size_t)ctx->kv_dim_k * ctx->kv_elt_bytes;
    const size_t v_row = (size_t)ctx->kv_dim_v * ctx->kv_elt_bytes;
    const char *k_layer = (const char *)ctx->k_cache + (size_t)job->il * ctx->n_ctx * k_row;
    const char *v_layer = (const char *)ctx->v_cache + (size_t)job->il * ctx->n_ctx * v_row;
    float *scratch = ctx->att_scratch + (size_t)ith * engine_attn_scratch_floats(hp, ctx->n_ctx);
    struct engine_attn_item it = {
        .k_stride = k_row,
        .v_stride = v_row,
        .hd_k = hd_k,
        .hd_v = hd_v,
        .q_scale = hp->attn_scale_q ? hp->attn_scale : 1.0f,
        .scale = hp->attn_scale_q ? 1.0f : hp->attn_scale,
        .batch = job->n > 1,
        .scores = scratch,
        .qbuf = scratch + ctx->n_ctx,
        .lanes = scratch + ctx->n_ctx + hd_k,
    };
    size_t begin, end;

    pool_split((size_t)job->n * (size_t)n_head, ith, nth, &begin, &end);
    for (size_t item = begin; item < end; item++) {
        const int t = (int)(item / (size_t)n_head), h = (int)(item % (size_t)n_head);
        const int g = h / group;
        it.pos = job->pos0 + (uint32_t)t;
        it.j0 = job->swa && it.pos + 1 > hp->n_swa ? it.pos + 1 - hp->n_swa : 0;
        it.q = job->q + (size_t)t * job->q_stride + (size_t)h * hd_k;
        it.k = k_layer + (size_t)g * hd_k * ctx->kv_elt_bytes;
        it.v = v_layer + (size_t)g * hd_v * ctx->kv_elt_bytes;
        it.out = job->att + ((size_t)t * n_head + h) * hd_v;
        ctx->attend(&it);
    }
}

void engine_attention(struct pv_context *ctx, int il, const float *q, size_t q_stride,
                      float *att, int n, uint32_t pos0, bool swa)
{
    struct attn_job job = {ctx, q, q_stride, att, n, pos0, il, swa};
    pool_run(ctx->pool, attn_worker, &job);
}
