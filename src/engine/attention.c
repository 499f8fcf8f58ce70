/*
 * attention.c - scaled dot-product attention over the KV cache, threaded over heads.
 *
 * For each query token and head: scores against every visible key (causal, and inside
 * the sliding window on SWA layers), softmax in f32 with the max subtracted, then the
 * probability-weighted sum of the values. Grouped-query attention maps query head h to
 * KV head h / (n_head / n_head_kv). Row dot/axpy come from engine_kv_ops (F16 rows use
 * F16C when the CPU has it, a conversion table otherwise).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute/compute.h"
#include "engine/engine.h"

/* ---- KV row operations --------------------------------------------------------- */

static float f16_table[65536]; /* f16 bits -> f32, filled once */
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        f16_table[i] = pv_fp16_to_f32((uint16_t)i);
}

/* sum q[i] * k[i], k in f16 */
static float dot_f16(const float *q, const void *k, int n)
{
    const uint16_t *kh = k;
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += q[i] * f16_table[kh[i]];
    return s;
}

/* y[i] += a * v[i], v in f16 */
static void axpy_f16(float *y, float a, const void *v, int n)
{
    const uint16_t *vh = v;
    for (int i = 0; i < n; i++)
        y[i] += a * f16_table[vh[i]];
}

static float dot_f32(const float *q, const void *k, int n)
{
    const float *kf = k;
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += q[i] * kf[i];
    return s;
}

static void axpy_f32(float *y, float a, const void *v, int n)
{
    const float *vf = v;
    for (int i = 0; i < n; i++)
        y[i] += a * vf[i];
}

struct engine_kv_ops engine_kv_ops_for(enum pv_kv_type type)
{
    struct engine_kv_ops ops;
    if (type == PV_KV_F32) {
        ops.dot = dot_f32;
        ops.axpy = axpy_f32;
        return ops;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && !getenv("PENSIEVE_NO_SIMD")) {
        ops.dot = engine_dot_f16_avx2;
        ops.axpy = engine_axpy_f16_avx2;
        return ops;
    }
#endif
    pthread_once(&f16_table_once, f16_table_init);
    ops.dot = dot_f16;
    ops.axpy = axpy_f16;
    return ops;
}

/* ---- attention ------------------------------------------------------------------ */

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
    const float scale = hp->attn_scale;
    const size_t k_row = (size_t)ctx->kv_dim_k * ctx->kv_elt_bytes;
    const size_t v_row = (size_t)ctx->kv_dim_v * ctx->kv_elt_bytes;
    const char *k_layer = (const char *)ctx->k_cache + (size_t)job->il * ctx->n_ctx * k_row;
    const char *v_layer = (const char *)ctx->v_cache + (size_t)job->il * ctx->n_ctx * v_row;
    float *scores = ctx->att_scratch + (size_t)ith * (ctx->n_ctx + (size_t)hd_v);
    size_t begin, end;

    pool_split((size_t)job->n * (size_t)n_head, ith, nth, &begin, &end);
    for (size_t item = begin; item < end; item++) {
        const int t = (int)(item / (size_t)n_head), h = (int)(item % (size_t)n_head);
        const int g = h / group;
        const uint32_t pos = job->pos0 + (uint32_t)t;
        const uint32_t j0 = job->swa && pos + 1 > hp->n_swa ? pos + 1 - hp->n_swa : 0;
        const float *qh = job->q + (size_t)t * job->q_stride + (size_t)h * hd_k;
        float *out = job->att + ((size_t)t * n_head + h) * hd_v;
        float max = -INFINITY, sum = 0.0f;

        /* s_j = scale * q . k_j */
        for (uint32_t j = j0; j <= pos; j++) {
            float s = scale * ctx->kv_ops.dot(qh, k_layer + j * k_row + (size_t)g * hd_k *
                                                           ctx->kv_elt_bytes, hd_k);
            scores[j - j0] = s;
            max = s > max ? s : max;
        }
        /* p_j = exp(s_j - max) / sum */
        for (uint32_t j = 0; j <= pos - j0; j++) {
            scores[j] = expf(scores[j] - max);
            sum += scores[j];
        }
        /* out = sum_j p_j v_j */
        memset(out, 0, (size_t)hd_v * sizeof(float));
        for (uint32_t j = j0; j <= pos; j++)
            ctx->kv_ops.axpy(out, scores[j - j0] / sum,
                             v_layer + j * v_row + (size_t)g * hd_v * ctx->kv_elt_bytes, hd_v);
    }
}

void engine_attention(struct pv_context *ctx, int il, const float *q, size_t q_stride,
                      float *att, int n, uint32_t pos0, bool swa)
{
    struct attn_job job = {ctx, q, q_stride, att, n, pos0, il, swa};
    pool_run(ctx->pool, attn_worker, &job);
}
