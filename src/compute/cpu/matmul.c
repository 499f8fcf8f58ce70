/*
 * matmul.c - cpu_matmul: y[t][r] = sum_k W[r][k] * x[t][k] over a quantized weight.
 *
 * The activations are quantized once per call to the weight type's dot type (into a
 * per-thread scratch buffer that grows and is reused, so the hot path never mallocs),
 * then output rows are cut into chunks that the pool's threads take in turn from a shared
 * counter (a thread that starts late, or shares its core, simply takes fewer). Each chunk
 * of weight rows is small enough to stay in cache while every token of the batch is dotted
 * with it, so a prefill batch streams the weights from memory once, not once per token;
 * a batch takes tokens four at a time (vec_dot_multi), and Q4_0 / Q5_0 chunks are unpacked
 * to bytes once per chunk rather than once per token group.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

/* Weight bytes of one chunk: a batch's chunk stays in L1/L2 while all its tokens pass;
 * a single token's chunk only needs to be large next to the cost of taking it. */
#define MM_CHUNK_BYTES_BATCH (16 * 1024)
#define MM_CHUNK_BYTES_ONE (64 * 1024)
/* At least this many chunks per thread, so that uneven progress evens out. */
#define MM_CHUNKS_PER_THREAD 4

struct scratch {
    void *data;
    size_t cap_bytes;
};
/* per calling thread: the activations of a call, then one unpacked-chunk area per worker;
 * a thread-specific key frees the buffer when its thread exits */
static _Thread_local struct scratch tl_act;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_init(void)
{
    if (pthread_key_create(&scratch_key, free) != 0)
        PV_BUG("cannot create the matmul scratch key");
}

static void *scratch_get(struct scratch *sc, size_t n_bytes)
{
    if (n_bytes > sc->cap_bytes) {
        size_t cap = PV_MAX(n_bytes, sc->cap_bytes * 2);
        pthread_once(&scratch_once, scratch_key_init);
        free(sc->data);
        sc->data = xmalloc(cap);
        sc->cap_bytes = cap;
        pthread_setspecific(scratch_key, sc->data);
    }
    return sc->data;
}

void cpu_scratch_release(void)
{
    free(tl_act.data);
    memset(&tl_act, 0, sizeof(tl_act));
    pthread_once(&scratch_once, scratch_key_init);
    pthread_setspecific(scratch_key, NULL);
}

struct mm_job {
    cpu_vec_dot_fn dot;          /* the batch order */
    cpu_vec_dot_fn dot_one;      /* the one-token order, NULL when the type has none */
    cpu_vec_dot_multi_fn dot_multi; /* NULL when the type has none */
    cpu_unpack_fn unpack;        /* non-NULL: unpack each chunk once, then dot_s8 */
    cpu_vec_dot_s8_fn dot_s8;
    uint8_t *unpacked;           /* [nth] areas of unpacked_bytes, one per thread */
    size_t unpacked_bytes;
    cpu_quantize_fn quantize;    /* NULL when the activations are used as f32 */
    const float *x;              /* [n_tokens][ne0] */
    const uint8_t *w;            /* [n_rows] rows of w_row_bytes */
    size_t w_row_bytes;
    uint8_t *a;                  /* [n_tokens] activation rows of a_row_bytes */
    bool widen;                  /* Q8_0 rows widened to cpu_block_q8_0x (widen_q8_0) */
    size_t a_row_bytes;
    float *y;                    /* [n_tokens][n_rows] */
    int64_t ne0, n_rows;
    int n_tokens;
    int n_one;                   /* tokens [0, n_one) in the one-token order */
    int64_t chunk_rows;
    size_t n_chunks;
    atomic_size_t next_chunk;    /* the next chunk not yet taken */
};

/* Quantize the activation rows of tokens [begin, end). */
static void mm_quantize(void *p, int ith, int nth)
{
    struct mm_job *job = p;
    size_t begin, end;
    pool_split((size_t)job->n_tokens, ith, nth, &begin, &end);
    for (size_t t = begin; t < end; t++) {
        uint8_t *row = job->a + t * job->a_row_bytes;
        if (job->widen) { /* quantize into the row's tail, then widen in place */
            size_t tail = (size_t)(job->ne0 / PV_QK8_0) *
                          (sizeof(struct cpu_block_q8_0x) - sizeof(struct pv_block_q8_0));
            job->quantize(job->x + t * (size_t)job->ne0, row + tail, job->ne0);
            cpu_q8_0_widen(row + tail, row, job->ne0);
        } else {
            job->quantize(job->x + t * (size_t)job->ne0, row, job->ne0);
        }
    }
}

/* y[t][r] for tokens [t0, t1) and weight rows [r0, r1): unpacked rows u (or NULL), groups
 * of tokens when multi, else one token at a time with dot */
static void mm_span(const struct mm_job *job, const uint8_t *u, int64_t r0, int64_t r1, int t0,
                    int t1, bool multi, cpu_vec_dot_fn dot)
{
    int t = t0;
    if (u) {
        size_t u_row = (size_t)(job->ne0 / PV_QK8_0) * sizeof(struct cpu_block_s8);
        for (; t < t1; t += CPU_MULTI_MAX) {
            int nt = PV_MIN(CPU_MULTI_MAX, t1 - t);
            const uint8_t *a = job->a + (size_t)t * job->a_row_bytes;
            float *y = job->y + (size_t)t * (size_t)job->n_rows;
            for (int64_t r = r0; r < r1; r++)
                job->dot_s8((int)job->ne0, &y[r], (size_t)job->n_rows, u + (size_t)(r - r0) * u_row, a,
                            job->a_row_bytes, nt);
        }
    }
    if (multi && job->dot_multi && t1 - t > 1) {
        for (; t < t1; t += CPU_MULTI_MAX) {
            int nt = PV_MIN(CPU_MULTI_MAX, t1 - t);
            const uint8_t *a = job->a + (size_t)t * job->a_row_bytes;
            float *y = job->y + (size_t)t * (size_t)job->n_rows;
            for (int64_t r = r0; r < r1; r++)
                job->dot_multi((int)job->ne0, &y[r], (size_t)job->n_rows,
                               job->w + (size_t)r * job->w_row_bytes, a, job->a_row_bytes, nt);
        }
    }
    for (; t < t1; t++) {
        const uint8_t *a = job->a + (size_t)t * job->a_row_bytes;
        float *y = job->y + (size_t)t * (size_t)job->n_rows;
        for (int64_t r = r0; r < r1; r++)
            dot((int)job->ne0, &y[r], job->w + (size_t)r * job->w_row_bytes, a);
    }
}

/* y[t][r] for every token and the rows of the chunks this thread takes: the first n_one
 * tokens in the one-token order, the others in the batch order */
static void mm_rows(void *p, int ith, int nth)
{
    struct mm_job *job = p;
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed);
        if (c >= job->n_chunks)
            break;
        int64_t r0 = (int64_t)c * job->chunk_rows;
        int64_t r1 = PV_MIN(r0 + job->chunk_rows, job->n_rows);
        uint8_t *u = NULL;
        if (job->unpack) {
            size_t u_row = (size_t)(job->ne0 / PV_QK8_0) * sizeof(struct cpu_block_s8);
            u = job->unpacked + (size_t)ith * job->unpacked_bytes;
            for (int64_t r = r0; r < r1; r++)
                job->unpack(job->w + (size_t)r * job->w_row_bytes, u + (size_t)(r - r0) * u_row, job->ne0);
        }
        /* types with a separate one-token dot (f32, f16) take it token by token; the
           others sum the same way in both, so their single tokens may go in groups */
        mm_span(job, u, r0, r1, 0, job->n_one, job->dot_one == NULL, job->dot_one ? job->dot_one : job->dot);
        mm_span(job, u, r0, r1, job->n_one, job->n_tokens, true, job->dot);
    }
}

void *cpu_matmul_scratch(size_t n_bytes)
{
    return scratch_get(&tl_act, n_bytes);
}

void cpu_matmul(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                int n_tokens)
{
    cpu_matmul_mixed(pool, W, x, y, n_tokens, n_tokens == 1 ? 1 : 0);
}

void cpu_matmul_mixed(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                      int n_tokens, int n_one)
{
    const struct cpu_kernels *k = cpu_kernels_get();
    if (k->matmul && k->matmul(pool, W, x, y, n_tokens)) /* the fast mode: any order */
        return;
    uint32_t dot_type = cpu_dot_type(W->type);
    PV_ASSERT(dot_type != PV_TYPE_COUNT && k->vec_dot[W->type] != NULL);
    PV_ASSERT(W->ne[0] % cpu_type_blck(W->type) == 0 && W->ne[0] <= INT32_MAX);
    PV_ASSERT(n_one >= 0 && n_one <= n_tokens && n_tokens - n_one != 1);
    if (n_tokens <= 0 || W->ne[1] <= 0)
        return;

    /* llama.cpp's batch matmul (tinyBLAS) declines rows it cannot tile */
    cpu_vec_dot_fn dot = k->vec_dot[W->type];
    if (k->vec_dot_one[W->type] && (W->ne[0] % k->f_lanes != 0 || W->ne[1] % 4 != 0))
        dot = k->vec_dot_one[W->type];
    struct mm_job job = {
        .dot = dot,
        .dot_one = k->vec_dot_one[W->type],
        .dot_multi = k->vec_dot_multi[W->type],
        .x = x,
        .w = W->data,
        .w_row_bytes = cpu_row_bytes(W->type, W->ne[0]),
        .y = y,
        .ne0 = W->ne[0],
        .n_rows = W->ne[1],
        .n_tokens = n_tokens,
        .n_one = n_one,
    };
    int nth = pool ? pool_size(pool) : 1;

    /* activations -> dot type (quantized below, once for all rows) */
    if (dot_type == PV_TYPE_F32) {
        job.a = (uint8_t *)(uintptr_t)x;
        job.a_row_bytes = (size_t)W->ne[0] * sizeof(float);
    } else {
        job.quantize = k->quantize[dot_type];
        job.a_row_bytes = cpu_row_bytes(dot_type, W->ne[0]);
        if (k->widen_q8_0 && dot_type == PV_TYPE_Q8_0) {
            job.widen = true;
            job.a_row_bytes = (size_t)(W->ne[0] / PV_QK8_0) * sizeof(struct cpu_block_q8_0x);
            /* a batch of several token groups: unpack each weight chunk once */
            if (k->unpack[W->type] && k->vec_dot_s8 && n_tokens > CPU_MULTI_MAX) {
                job.unpack = k->unpack[W->type];
                job.dot_s8 = k->vec_dot_s8;
            }
        }
        job.a = NULL; /* placed with the unpacked areas below */
    }

    /* chunks of rows, taken in turn by the threads */
    size_t chunk_bytes = n_tokens > 1 ? MM_CHUNK_BYTES_BATCH : MM_CHUNK_BYTES_ONE;
    int64_t chunk = (int64_t)(chunk_bytes / job.w_row_bytes);
    int64_t balanced = job.n_rows / ((int64_t)nth * MM_CHUNKS_PER_THREAD);
    job.chunk_rows = PV_MAX(1, PV_MIN(chunk, balanced));
    job.n_chunks = (size_t)((job.n_rows + job.chunk_rows - 1) / job.chunk_rows);
    atomic_init(&job.next_chunk, 0);

    if (job.quantize) {
        /* one scratch: the activation rows, then an unpacked-chunk area per thread */
        size_t act_bytes = job.a_row_bytes * (size_t)n_tokens;
        size_t act_aligned = (act_bytes + 63) & ~(size_t)63;
        if (job.unpack)
            job.unpacked_bytes = (size_t)job.chunk_rows * (size_t)(W->ne[0] / PV_QK8_0) *
                                 sizeof(struct cpu_block_s8);
        uint8_t *base = scratch_get(&tl_act, act_aligned + job.unpacked_bytes * (size_t)nth);
        job.a = base;
        job.unpacked = base + act_aligned;
        if (pool && n_tokens >= nth && n_tokens > 1)
            pool_run(pool, mm_quantize, &job);
        else
            mm_quantize(&job, 0, 1);
    }
    if (pool && nth > 1)
        pool_run(pool, mm_rows, &job);
    else
        mm_rows(&job, 0, 1);
}
