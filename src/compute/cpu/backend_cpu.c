/*
 * backend_cpu.c - the CPU backend: struct compute_ops over the kernels of compute/cpu/.
 *
 * Owns one worker pool (every threaded op fans out on it), the per-thread attention
 * scratch and the attention kernel chosen for the cache type and CPU. Buffers are plain
 * host memory; upload is a copy.
 */
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

struct cpu_backend {
    struct compute_backend base;  /* first: the public part */
    struct pv_pool *pool;         /* owned */
    cpu_attend_fn attend;
    float *att_scratch;           /* [n_threads][cpu_attn_scratch_floats], owned */
    uint32_t n_ctx;
};

static struct cpu_backend *cpu_of(struct compute_backend *be)
{
    return (struct cpu_backend *)be;
}

static void get_rows(struct compute_backend *be, const struct pv_tensor *t, const int32_t *ids,
                     int n, float scale, float *y)
{
    const int64_t dim = t->ne[0];
    for (int i = 0; i < n; i++) {
        float *row = y + (size_t)i * (size_t)dim;
        cpu_dequantize_row(t->type, (const char *)t->data + (size_t)ids[i] * t->row_bytes, row, dim);
        if (scale != 1.0f)
            for (int64_t k = 0; k < dim; k++)
                row[k] *= scale;
    }
}

static void matmul(struct compute_backend *be, const struct pv_tensor *w, const float *x, float *y,
                   int n, int n_one)
{
    cpu_matmul_mixed(cpu_of(be)->pool, w, x, y, n, n_one);
}

struct norm_job {
    const float *x;
    float *y;
    const float *w;
    size_t tok_stride, sub_stride;
    int n_tok, n_sub, dim;
    float eps;
};

static void norm_rows(void *arg, int ith, int nth)
{
    const struct norm_job *job = arg;
    size_t begin, end;
    pool_split((size_t)job->n_tok * (size_t)job->n_sub, ith, nth, &begin, &end);
    for (size_t r = begin; r < end; r++) {
        size_t off = (r / (size_t)job->n_sub) * job->tok_stride + (r % (size_t)job->n_sub) * job->sub_stride;
        cpu_rmsnorm(job->x + off, job->w, job->y + off, job->dim, job->eps);
    }
}

/* rows are independent: a batch spreads them over the pool (each row computed alike) */
static void rmsnorm(struct compute_backend *be, const float *x, const float *w, float *y, int n_tok,
                    int n_sub, size_t tok_stride, size_t sub_stride, int dim, float eps)
{
    struct norm_job job = {x, y, w, tok_stride, sub_stride, n_tok, n_sub, dim, eps};
    if (n_tok * n_sub >= 16)
        pool_run(cpu_of(be)->pool, norm_rows, &job);
    else
        norm_rows(&job, 0, 1);
}

static void rope(struct compute_backend *be, float *x, size_t stride, int n, const int32_t *pos,
                 int n_heads, int head_dim, int n_rot, float base, float freq_scale, const float *ff,
                 bool neox)
{
    for (int t = 0; t < n; t++)
        cpu_rope(x + (size_t)t * stride, n_heads, head_dim, n_rot, pos[t], base, freq_scale, ff, neox);
}

static void glu(struct compute_backend *be, float *gate, const float *up, size_t n, bool gelu)
{
    if (gelu)
        cpu_gelu_mul(gate, up, (int)n);
    else
        cpu_silu_mul(gate, up, (int)n);
}

static void add(struct compute_backend *be, float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void kv_store(struct compute_backend *be, const float *src, size_t stride, int n, int dim,
                     void *base, size_t row_bytes, const uint32_t *cells, bool f16)
{
    for (int t = 0; t < n; t++) {
        const float *s = src + (size_t)t * stride;
        char *d = (char *)base + (size_t)cells[t] * row_bytes;
        if (!f16) {
            memcpy(d, s, (size_t)dim * sizeof(float));
        } else {
            uint16_t *h = (uint16_t *)d;
            for (int i = 0; i < dim; i++)
                h[i] = pv_f32_to_fp16(s[i]);
        }
    }
}

static void attention(struct compute_backend *be, const struct compute_attn *a)
{
    struct cpu_backend *c = cpu_of(be);
    cpu_attention(c->pool, c->attend, c->att_scratch, c->n_ctx, a);
}

static void *alloc(struct compute_backend *be, size_t bytes)
{
    return try_malloc(bytes ? bytes : 1);
}

static void release(struct compute_backend *be, void *p)
{
    free(p);
}

static void upload(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}

static void add_bias(struct compute_backend *be, float *x, size_t stride, const float *b, int n,
                     int dim)
{
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++)
            x[(size_t)t * stride + i] += b[i];
}

static void download(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}

static void copy(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}

static const struct compute_ops cpu_ops = {
    .get_rows = get_rows,
    .matmul = matmul,
    .rmsnorm = rmsnorm,
    .rope = rope,
    .glu = glu,
    .add = add,
    .kv_store = kv_store,
    .attention = attention,
    .alloc = alloc,
    .free = release,
    .upload = upload,
    .add_bias = add_bias,
    .download = download,
    .copy = copy,
};

size_t compute_cpu_scratch_bytes(int n_threads, uint32_t n_ctx, int hd_k, int hd_v)
{
    return cpu_attn_scratch_floats(n_ctx, hd_k, hd_v) * (size_t)n_threads * sizeof(float);
}

struct compute_backend *compute_cpu_new(int n_threads, uint32_t n_ctx, int hd_k, int hd_v, bool f16)
{
    struct cpu_backend *c = try_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base.name = "cpu";
    c->base.ops = &cpu_ops;
    c->base.n_threads = n_threads;
    c->n_ctx = n_ctx;
    c->attend = cpu_attend_for(f16, (uint32_t)hd_v);
    c->att_scratch = try_malloc(compute_cpu_scratch_bytes(n_threads, n_ctx, hd_k, hd_v));
    if (!c->att_scratch) {
        free(c);
        return NULL;
    }
    c->pool = pool_new(n_threads);
    return &c->base;
}

void compute_cpu_free(struct compute_backend *be)
{
    if (!be)
        return;
    struct cpu_backend *c = cpu_of(be);
    pool_free(c->pool);
    free(c->att_scratch);
    free(c);
}
