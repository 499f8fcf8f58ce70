/*
 * backend_cuda.cu - the CUDA backend: struct compute_ops on one NVIDIA GPU.
 *
 * Owns the device memory of a context: the weights (the mapped tensor bytes uploaded
 * once, so a weight's device address is its host address moved by one offset), the
 * buffers the engine allocates (KV cache, activations), the step's inputs and the
 * workspaces (fp16 weights and activations for the cuBLAS GEMM, attention partials,
 * logits). Inside a step the ops are recorded on a tape; step_end runs the tape on one
 * stream, or replays the CUDA graph captured from an identical tape (decode steps of up
 * to MV_MAX_TOKENS tokens), then copies the logits to host memory. cuBLAS is loaded at
 * run time (dlopen), so the binary needs only the driver; without it prompts run through
 * the mat-vec kernels.
 */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cuda/kernels.cuh"

extern "C" {
#include "compute/backend.h"
#include "pensieve.h"
}

#define MAX_ALLOCS 64
#define MAX_GRAPHS 16
#define MAX_TAPE 16384
#define WDQ_ELEMS ((size_t)64 << 20) /* fp16 weight workspace of the GEMM (128 MiB) */

/* ---- cuBLAS through dlopen: the few entry points used, with their C types ---- */
typedef int (*cublas_create_fn)(void **);
typedef int (*cublas_destroy_fn)(void *);
typedef int (*cublas_set_stream_fn)(void *, cudaStream_t);
typedef int (*cublas_gemm_ex_fn)(void *, int, int, int, int, int, const void *, const void *, int,
                                 int, const void *, int, int, const void *, void *, int, int, int,
                                 int);
enum { CUBLAS_OP_N_ = 0, CUBLAS_OP_T_ = 1, CUDA_R_32F_ = 0, CUDA_R_16F_ = 2,
       CUBLAS_COMPUTE_32F_ = 68, CUBLAS_GEMM_DEFAULT_ = -1 };

enum op_kind { OP_GET_ROWS = 1, OP_MATMUL, OP_RMSNORM, OP_ROPE, OP_GLU, OP_ADD, OP_BIAS,
               OP_KV_STORE, OP_ATTN, OP_COPY };

/* One recorded op: device pointers and scalars only (its bytes are hashed for graphs). */
struct op_rec {
    int kind;
    uint32_t type;
    const void *p0, *p1, *p2;
    void *out;
    size_t s0, s1, s2;
    int i0, i1, i2, i3, i4;
    float f0, f1, f2;
    bool b0;
    att_args att;
};

struct graph_entry {
    uint64_t hash;
    int n_recs;
    op_rec *tape;           /* [n_recs] the tape it was captured from, owned */
    cudaGraphExec_t exec;
};

struct pending_copy {
    float *host;
    size_t off, bytes; /* in d_out */
};

struct cuda_backend {
    struct compute_backend base; /* first: the public part */
    char name[160];
    cudaStream_t st;
    bool failed;
    /* weights: host [h_w, h_w + w_bytes) lives at d_w */
    const uint8_t *h_w;
    size_t w_bytes;
    uint8_t *d_w;
    /* what alloc gave out */
    struct { void *p; size_t n; } al[MAX_ALLOCS];
    int n_al;
    /* limits */
    uint32_t n_ctx, n_batch;
    size_t max_k;
    int hd_k, hd_v;
    /* the step: host arrays it was given, the packed inputs (pinned) and their device copy */
    bool in_step;
    const void *h_tok, *h_pos, *h_cell, *h_blocks;
    int step_n, n_tiles;
    int32_t *h_in, *d_in;
    size_t in_cap;            /* int32 entries */
    int32_t *d_tok, *d_pos, *d_tab_off;
    uint32_t *d_cell, *d_tab;
    att_tile *d_tiles;
    const void **seen;        /* [n_batch] distinct block tables of the step */
    uint32_t *seen_len;       /* [n_batch] entries of each that the step reads */
    /* tape */
    op_rec *tape;
    int n_tape;
    struct pending_copy pend[8];
    int n_pend;
    struct graph_entry graphs[MAX_GRAPHS];
    int n_graphs, next_graph;
    /* workspaces */
    float *d_out;
    size_t out_cap, out_used; /* floats */
    float *d_part;
    size_t part_floats;       /* attention partials: [split][token][head][2 + hd_v] */
    int n_head_max;
    int tq_max;               /* tokens per attention tile: ATT_ROWS / group */
    __half *d_wdq, *d_xh;
    /* cuBLAS */
    void *cublas_lib, *cublas;
    cublas_gemm_ex_fn gemm;
    cublas_destroy_fn cublas_destroy;
};

static void drop_graphs(cuda_backend *cb);

static cuda_backend *cb_of(struct compute_backend *be)
{
    return (cuda_backend *)be;
}

/* Record the first failure; every later op is skipped and step_end reports it. */
static bool fail(cuda_backend *cb, const char *what, cudaError_t e)
{
    if (!cb->failed) {
        cb->failed = true;
        snprintf(cb->base.error, sizeof(cb->base.error), "cuda: %s: %s", what,
                 cudaGetErrorString(e));
    }
    return false;
}

static void fail_msg(cuda_backend *cb, const char *msg)
{
    if (!cb->failed) {
        cb->failed = true;
        snprintf(cb->base.error, sizeof(cb->base.error), "cuda: %s", msg);
    }
}

#define CK(cb, call) ((call) == cudaSuccess ? true : fail((cb), #call, cudaGetLastError()))
static bool launched(cuda_backend *cb, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? true : fail(cb, what, e);
}

/* The device address of a weight byte (host address in the uploaded range), else NULL. */
static const void *dev_w(cuda_backend *cb, const void *h)
{
    const uint8_t *p = (const uint8_t *)h;
    if (!p)
        return NULL;
    if (p >= cb->h_w && p < cb->h_w + cb->w_bytes)
        return cb->d_w + (p - cb->h_w);
    return NULL;
}

static bool is_dev(cuda_backend *cb, const void *p)
{
    const uint8_t *q = (const uint8_t *)p;
    for (int i = 0; i < cb->n_al; i++)
        if (q >= (const uint8_t *)cb->al[i].p && q < (const uint8_t *)cb->al[i].p + cb->al[i].n)
            return true;
    return q >= cb->d_w && q < cb->d_w + cb->w_bytes;
}

/* A weight's bytes on the device, or NULL (failure recorded) */
static const uint8_t *weight(cuda_backend *cb, const struct pv_tensor *t)
{
    const void *d = dev_w(cb, t->data);
    if (!d)
        fail_msg(cb, "a tensor is outside the uploaded weights");
    else if (t->ne[0] % 32 != 0)
        fail_msg(cb, "a tensor row length is not a multiple of 32");
    return (const uint8_t *)d;
}

static unsigned blocks_for(size_t n, unsigned per)
{
    return (unsigned)((n + per - 1) / per);
}

/* ---- kernel dispatch by weight type ---- */

#define FOR_TYPES(X)                                                                   \
    X(PV_TYPE_F32) X(PV_TYPE_F16) X(PV_TYPE_BF16) X(PV_TYPE_Q4_0) X(PV_TYPE_Q4_1)      \
    X(PV_TYPE_Q5_0) X(PV_TYPE_Q5_1) X(PV_TYPE_Q8_0) X(PV_TYPE_Q2_K) X(PV_TYPE_Q3_K)    \
    X(PV_TYPE_Q4_K) X(PV_TYPE_Q5_K) X(PV_TYPE_Q6_K)

template <int T>
static void launch_matvec_t(cudaStream_t st, int nt, const uint8_t *W, size_t rb, int K, int R,
                            const float *x, float *y, int ldy)
{
    dim3 grid(blocks_for((size_t)R, 4));
    switch (nt) {
    case 8: k_matvec<T, 8><<<grid, 128, 0, st>>>(W, rb, K, R, x, y, ldy); break;
    case 4: k_matvec<T, 4><<<grid, 128, 0, st>>>(W, rb, K, R, x, y, ldy); break;
    case 2: k_matvec<T, 2><<<grid, 128, 0, st>>>(W, rb, K, R, x, y, ldy); break;
    default: k_matvec<T, 1><<<grid, 128, 0, st>>>(W, rb, K, R, x, y, ldy); break;
    }
}

static bool launch_matvec(cudaStream_t st, uint32_t type, int nt, const uint8_t *W, size_t rb,
                          int K, int R, const float *x, float *y, int ldy)
{
    switch (type) {
#define X(T)                                                  \
    case T:                                                   \
        launch_matvec_t<T>(st, nt, W, rb, K, R, x, y, ldy);   \
        return true;
        FOR_TYPES(X)
#undef X
    }
    return false;
}

static bool launch_dequant(cudaStream_t st, uint32_t type, const uint8_t *W, size_t rb, int K, int R,
                           __half *out)
{
    unsigned grid = blocks_for((size_t)R * (K / 32), 128);
    switch (type) {
#define X(T)                                                          \
    case T:                                                           \
        k_dequant_f16<T><<<grid, 128, 0, st>>>(W, rb, K, R, out);     \
        return true;
        FOR_TYPES(X)
#undef X
    }
    return false;
}

static bool launch_get_rows(cudaStream_t st, uint32_t type, const uint8_t *W, size_t rb, int K,
                            const int32_t *ids, int n, float scale, float *y)
{
    dim3 grid(blocks_for((size_t)K / 32, 64), (unsigned)n);
    switch (type) {
#define X(T)                                                               \
    case T:                                                                \
        k_get_rows<T><<<grid, 64, 0, st>>>(W, rb, K, ids, scale, y);       \
        return true;
        FOR_TYPES(X)
#undef X
    }
    return false;
}

/* ---- execution of one recorded op ---- */

static void exec_matmul(cuda_backend *cb, const op_rec *o)
{
    const uint8_t *W = (const uint8_t *)o->p0;
    const float *x = (const float *)o->p1;
    float *y = (float *)o->out;
    const int K = o->i0, R = o->i1, n = o->i2;
    const size_t rb = o->s0;
    if (n > MV_MAX_TOKENS && cb->gemm) {
        /* prompt: x and W in fp16, cuBLAS with f32 accumulation, W in row chunks */
        const float one = 1.0f, zero = 0.0f;
        const size_t nx = (size_t)n * K;
        k_f32_to_f16<<<blocks_for(nx, 256), 256, 0, cb->st>>>(x, cb->d_xh, nx);
        int rows = (int)(WDQ_ELEMS / (size_t)K);
        if (rows > R)
            rows = R;
        for (int r0 = 0; r0 < R && launched(cb, "f32 to f16"); r0 += rows) {
            int rc = R - r0 < rows ? R - r0 : rows;
            if (!launch_dequant(cb->st, o->type, W + (size_t)r0 * rb, rb, K, rc, cb->d_wdq))
                return fail_msg(cb, "weight type without a kernel");
            if (!launched(cb, "dequantize"))
                return;
            int rc_gemm = cb->gemm(cb->cublas, CUBLAS_OP_T_, CUBLAS_OP_N_, rc, n, K, &one,
                                   cb->d_wdq, CUDA_R_16F_, K, cb->d_xh, CUDA_R_16F_, K, &zero,
                                   y + r0, CUDA_R_32F_, R, CUBLAS_COMPUTE_32F_,
                                   CUBLAS_GEMM_DEFAULT_);
            if (rc_gemm != 0) {
                char m[64];
                snprintf(m, sizeof m, "cublasGemmEx failed (status %d)", rc_gemm);
                return fail_msg(cb, m);
            }
        }
        return;
    }
    for (int t = 0; t < n;) {
        int nt = n - t >= 8 ? 8 : n - t >= 4 ? 4 : n - t >= 2 ? 2 : 1;
        if (!launch_matvec(cb->st, o->type, nt, W, rb, K, R, x + (size_t)t * K, y + (size_t)t * R,
                           R))
            return fail_msg(cb, "weight type without a kernel");
        if (!launched(cb, "matvec"))
            return;
        t += nt;
    }
}

static size_t att_smem(int hd_k, int hd_v)
{
    return sizeof(float) * ((size_t)ATT_ROWS * hd_k + ATT_TILE * (hd_k + 1) +
                            ATT_TILE * (hd_v + 1) + ATT_ROWS * 33 + 3 * ATT_ROWS);
}

static void exec_attention(cuda_backend *cb, const op_rec *o)
{
    const att_args &a = o->att;
    const size_t smem = att_smem(a.hd_k, a.hd_v);
    dim3 grid((unsigned)o->i0, (unsigned)a.n_head_kv, (unsigned)a.n_split);
    const bool f16 = o->b0;
    if (a.hd_v <= ATT_THREADS) {
        if (f16)
            k_attention<true, 1><<<grid, ATT_THREADS, smem, cb->st>>>(a);
        else
            k_attention<false, 1><<<grid, ATT_THREADS, smem, cb->st>>>(a);
    } else {
        if (f16)
            k_attention<true, 2><<<grid, ATT_THREADS, smem, cb->st>>>(a);
        else
            k_attention<false, 2><<<grid, ATT_THREADS, smem, cb->st>>>(a);
    }
    if (!launched(cb, "attention"))
        return;
    k_att_combine<<<(unsigned)(a.n * a.n_head), 128, 0, cb->st>>>(a.part, a.n_split, a.n,
                                                                  a.n_head, a.hd_v,
                                                                  (float *)o->out);
    launched(cb, "attention combine");
}

static void exec(cuda_backend *cb, const op_rec *o)
{
    cudaStream_t st = cb->st;
    if (cb->failed)
        return;
    switch (o->kind) {
    case OP_GET_ROWS:
        if (!launch_get_rows(st, o->type, (const uint8_t *)o->p0, o->s0, o->i0,
                             (const int32_t *)o->p1, o->i1, o->f0, (float *)o->out))
            return fail_msg(cb, "weight type without a kernel");
        launched(cb, "get_rows");
        break;
    case OP_MATMUL:
        exec_matmul(cb, o);
        break;
    case OP_RMSNORM:
        k_rmsnorm<<<(unsigned)(o->i0 * o->i1), 256, 0, st>>>((const float *)o->p0,
                                                            (const float *)o->p1, (float *)o->out,
                                                            o->i1, o->s0, o->s1, o->i2, o->f0);
        launched(cb, "rmsnorm");
        break;
    case OP_ROPE: {
        dim3 grid(blocks_for((size_t)o->i1 * (o->i3 / 2), 128), (unsigned)o->i0);
        k_rope<<<grid, 128, 0, st>>>((float *)o->out, o->s0, (const int32_t *)o->p0, o->i1, o->i2,
                                     o->i3, o->f0, o->f1, (const float *)o->p1, o->b0);
        launched(cb, "rope");
        break;
    }
    case OP_GLU:
        k_glu<<<blocks_for(o->s0, 256), 256, 0, st>>>((float *)o->out, (const float *)o->p0, o->s0,
                                                      o->b0);
        launched(cb, "glu");
        break;
    case OP_ADD:
        k_add<<<blocks_for(o->s0, 256), 256, 0, st>>>((float *)o->out, (const float *)o->p0, o->s0);
        launched(cb, "add");
        break;
    case OP_BIAS: {
        dim3 grid(blocks_for((size_t)o->i1, 128), (unsigned)o->i0);
        k_add_bias<<<grid, 128, 0, st>>>((float *)o->out, o->s0, (const float *)o->p0, o->i1);
        launched(cb, "add_bias");
        break;
    }
    case OP_KV_STORE: {
        dim3 grid(blocks_for((size_t)o->i1, 128), (unsigned)o->i0);
        k_kv_store<<<grid, 128, 0, st>>>((const float *)o->p0, o->s0, o->i1, (char *)o->out, o->s1,
                                         (const uint32_t *)o->p1, o->b0);
        launched(cb, "kv_store");
        break;
    }
    case OP_ATTN:
        exec_attention(cb, o);
        break;
    case OP_COPY:
        CK(cb, cudaMemcpyAsync(o->out, o->p0, o->s0, cudaMemcpyDeviceToDevice, st));
        break;
    }
}

/* An op inside a step goes on the tape; outside one it runs now. */
static void submit(cuda_backend *cb, const op_rec *o)
{
    if (cb->failed)
        return;
    if (!cb->in_step) {
        exec(cb, o);
        CK(cb, cudaStreamSynchronize(cb->st));
        return;
    }
    if (cb->n_tape == MAX_TAPE)
        return fail_msg(cb, "too many ops in one step");
    memcpy(&cb->tape[cb->n_tape++], o, sizeof *o);
}

static op_rec rec(int kind)
{
    op_rec o;
    memset(&o, 0, sizeof o); /* padding too: the bytes are hashed */
    o.kind = kind;
    return o;
}

/* The device copy of a host array of the step (NULL, failure recorded, for any other). */
static const void *step_arr(cuda_backend *cb, const void *h)
{
    if (cb->in_step) {
        if (h == cb->h_tok)
            return cb->d_tok;
        if (h == cb->h_pos)
            return cb->d_pos;
        if (h == cb->h_cell)
            return cb->d_cell;
    }
    fail_msg(cb, "a host array that is not the step's");
    return NULL;
}

/* ---- the ops ---- */

static void get_rows(struct compute_backend *be, const struct pv_tensor *t, const int32_t *ids,
                     int n, float scale, float *y)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_GET_ROWS);
    o.type = t->type;
    o.p0 = weight(cb, t);
    o.p1 = step_arr(cb, ids);
    o.s0 = t->row_bytes;
    o.i0 = (int)t->ne[0];
    o.i1 = n;
    o.f0 = scale;
    o.out = y;
    if (o.p0 && o.p1)
        submit(cb, &o);
}

static void matmul(struct compute_backend *be, const struct pv_tensor *w, const float *x, float *y,
                   int n, int n_one)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_MATMUL);
    o.type = w->type;
    o.p0 = weight(cb, w);
    o.p1 = x;
    o.s0 = w->row_bytes;
    o.i0 = (int)w->ne[0];
    o.i1 = (int)w->ne[1];
    o.i2 = n;
    if (!o.p0 || cb->failed)
        return;
    if (is_dev(cb, y)) {
        o.out = y;
    } else {
        /* host output (the logits): into d_out, copied back by step_end */
        size_t need = (size_t)n * o.i1;
        if (!cb->in_step || cb->n_pend == 8)
            return fail_msg(cb, "a host output outside a step");
        if (cb->out_used + need > cb->out_cap) {
            if (cb->d_out && !CK(cb, cudaFree(cb->d_out)))
                return;
            cb->d_out = NULL;
            cb->out_cap = cb->out_used + need;
            if (!CK(cb, cudaMalloc((void **)&cb->d_out, cb->out_cap * sizeof(float))))
                return;
            drop_graphs(cb); /* graphs that wrote the old buffer are stale */
            if (cb->out_used)
                return fail_msg(cb, "logits buffer grew inside a step");
        }
        o.out = cb->d_out + cb->out_used;
        cb->pend[cb->n_pend++] = (struct pending_copy){y, cb->out_used, need * sizeof(float)};
        cb->out_used += need;
    }
    submit(cb, &o);
}

static void rmsnorm(struct compute_backend *be, const float *x, const float *w, float *y, int n_tok,
                    int n_sub, size_t tok_stride, size_t sub_stride, int dim, float eps)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_RMSNORM);
    o.p0 = x;
    o.p1 = w ? dev_w(cb, w) : NULL;
    if (w && !o.p1)
        return fail_msg(cb, "a norm weight outside the uploaded weights");
    o.out = y;
    o.i0 = n_tok;
    o.i1 = n_sub;
    o.s0 = tok_stride;
    o.s1 = sub_stride;
    o.i2 = dim;
    o.f0 = eps;
    submit(cb, &o);
}

static void rope(struct compute_backend *be, float *x, size_t stride, int n, const int32_t *pos,
                 int n_heads, int head_dim, int n_rot, float base, float freq_scale,
                 const float *ff, bool neox)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_ROPE);
    o.out = x;
    o.s0 = stride;
    o.i0 = n;
    o.p0 = step_arr(cb, pos);
    o.i1 = n_heads;
    o.i2 = head_dim;
    o.i3 = n_rot;
    o.f0 = powf(base, -2.0f / (float)n_rot);
    o.f1 = freq_scale;
    o.p1 = ff ? dev_w(cb, ff) : NULL;
    o.b0 = neox;
    if (ff && !o.p1)
        return fail_msg(cb, "rope factors outside the uploaded weights");
    if (o.p0)
        submit(cb, &o);
}

static void glu(struct compute_backend *be, float *gate, const float *up, size_t n, bool gelu)
{
    op_rec o = rec(OP_GLU);
    o.out = gate;
    o.p0 = up;
    o.s0 = n;
    o.b0 = gelu;
    submit(cb_of(be), &o);
}

static void add(struct compute_backend *be, float *x, const float *y, size_t n)
{
    op_rec o = rec(OP_ADD);
    o.out = x;
    o.p0 = y;
    o.s0 = n;
    submit(cb_of(be), &o);
}

static void add_bias(struct compute_backend *be, float *x, size_t stride, const float *b, int n,
                     int dim)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_BIAS);
    o.out = x;
    o.s0 = stride;
    o.p0 = dev_w(cb, b);
    o.i0 = n;
    o.i1 = dim;
    if (!o.p0)
        return fail_msg(cb, "a bias outside the uploaded weights");
    submit(cb, &o);
}

static void kv_store(struct compute_backend *be, const float *src, size_t stride, int n, int dim,
                     void *base, size_t row_bytes, const uint32_t *cells, bool f16)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_KV_STORE);
    o.p0 = src;
    o.s0 = stride;
    o.i0 = n;
    o.i1 = dim;
    o.out = base;
    o.s1 = row_bytes;
    o.p1 = step_arr(cb, cells);
    o.b0 = f16;
    if (o.p1)
        submit(cb, &o);
}

static void attention(struct compute_backend *be, const struct compute_attn *a)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_ATTN);
    if (!cb->in_step || a->pos != cb->h_pos || (const void *)a->blocks != cb->h_blocks)
        return fail_msg(cb, "attention outside a step");
    if (a->hd_k > 256 || a->hd_v > 256 || a->n_head % a->n_head_kv != 0)
        return fail_msg(cb, "attention shape not supported");
    const int G = a->n_head / a->n_head_kv;
    if (G > ATT_ROWS)
        return fail_msg(cb, "more than 64 query heads per kv head");
    att_args &g = o.att;
    g.q = a->q;
    g.q_stride = a->q_stride;
    g.pos = cb->d_pos;
    g.tab = cb->d_tab;
    g.tab_off = cb->d_tab_off;
    g.tiles = cb->d_tiles;
    g.block_shift = a->block_shift;
    g.k = (const char *)a->k;
    g.v = (const char *)a->v;
    g.k_row_bytes = a->k_row_bytes;
    g.v_row_bytes = a->v_row_bytes;
    g.n = a->n;
    g.n_head = a->n_head;
    g.n_head_kv = a->n_head_kv;
    g.hd_k = a->hd_k;
    g.hd_v = a->hd_v;
    g.group = G;
    g.n_swa = a->n_swa;
    g.q_scale = a->q_scale;
    g.scale = a->scale;
    /* splits: decode steps a fixed count from n_ctx (graph-stable), prompts enough blocks */
    int n_split;
    if (a->n <= MV_MAX_TOKENS)
        n_split = (int)((cb->n_ctx + 255) / 256);
    else
        n_split = (264 + cb->n_tiles * a->n_head_kv - 1) / (cb->n_tiles * a->n_head_kv);
    if (n_split > 64)
        n_split = 64;
    const size_t per_split = (size_t)a->n * a->n_head * (2 + (size_t)a->hd_v);
    if ((size_t)n_split * per_split > cb->part_floats)
        n_split = (int)(cb->part_floats / per_split);
    if (n_split < 1)
        return fail_msg(cb, "attention partials do not fit their buffer");
    g.n_split = n_split;
    g.part = cb->d_part;
    o.i0 = cb->n_tiles;
    o.out = a->out;
    o.b0 = a->f16;
    /* tiles hold up to ATT_ROWS / G tokens: built by step_begin for this group */
    submit(cb, &o);
}

static void *alloc(struct compute_backend *be, size_t bytes)
{
    cuda_backend *cb = cb_of(be);
    void *p = NULL;
    if (cb->n_al == MAX_ALLOCS || cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    cb->al[cb->n_al].p = p;
    cb->al[cb->n_al].n = bytes;
    cb->n_al++;
    return p;
}

static void release(struct compute_backend *be, void *p)
{
    cuda_backend *cb = cb_of(be);
    for (int i = 0; i < cb->n_al; i++)
        if (cb->al[i].p == p) {
            cudaFree(p);
            cb->al[i] = cb->al[--cb->n_al];
            return;
        }
}

/* on the backend's stream, finished before it returns (the stream does not wait for the
   legacy stream's copies) */
static void upload(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = cb_of(be);
    if (cb->failed)
        return;
    CK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->st));
    CK(cb, cudaStreamSynchronize(cb->st));
}

static void download(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = cb_of(be);
    if (cb->failed)
        return;
    CK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->st));
    CK(cb, cudaStreamSynchronize(cb->st));
}

static void copy(struct compute_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = cb_of(be);
    op_rec o = rec(OP_COPY);
    o.out = dst;
    o.p0 = src;
    o.s0 = bytes;
    submit(cb, &o);
}

/* ---- steps ---- */

static void step_begin(struct compute_backend *be, const struct compute_step *s)
{
    cuda_backend *cb = cb_of(be);
    const int n = s->n;
    cb->in_step = true;
    cb->n_tape = 0;
    cb->n_pend = 0;
    cb->out_used = 0;
    cb->h_tok = s->token;
    cb->h_pos = s->pos;
    cb->h_cell = s->cell;
    cb->h_blocks = s->blocks;
    cb->step_n = n;
    if (cb->failed)
        return;
    if (n <= 0 || (uint32_t)n > cb->n_batch)
        return fail_msg(cb, "a step larger than the batch");
    /* each distinct block table once, long enough for its furthest token */
    int n_seen = 0;
    size_t total = 6 * (size_t)n;
    for (int t = 0; t < n; t++) {
        int k = 0;
        while (k < n_seen && cb->seen[k] != s->blocks[t])
            k++;
        if (k == n_seen)
            cb->seen[n_seen++] = s->blocks[t];
    }
    for (int k = 0; k < n_seen; k++) {
        uint32_t len = 0;
        for (int t = 0; t < n; t++)
            if (s->blocks[t] == cb->seen[k]) {
                uint32_t nb = ((uint32_t)s->pos[t] >> s->block_shift) + 1;
                len = nb > len ? nb : len;
            }
        cb->seen_len[k] = len;
        total += len;
    }
    if (total > cb->in_cap) {
        /* grow the step buffers; graphs captured on the old ones are stale */
        drop_graphs(cb);
        cudaFree(cb->d_in);
        cudaFreeHost(cb->h_in);
        cb->d_in = NULL;
        cb->h_in = NULL;
        cb->in_cap = total * 2;
        if (!CK(cb, cudaMalloc((void **)&cb->d_in, cb->in_cap * 4)) ||
            !CK(cb, cudaMallocHost((void **)&cb->h_in, cb->in_cap * 4)))
            return;
    }
    /* packed: tok[n] pos[n] cell[n] tab_off[n] tiles[2n] tables... */
    int32_t *h = cb->h_in;
    memcpy(h, s->token, n * sizeof(int32_t));
    memcpy(h + n, s->pos, n * sizeof(int32_t));
    memcpy(h + 2 * n, s->cell, n * sizeof(int32_t));
    int32_t *tab_off = h + 3 * n;
    att_tile *tiles = (att_tile *)(h + 4 * n);
    size_t used = 6 * (size_t)n;
    for (int k = 0; k < n_seen; k++) {
        memcpy(h + used, cb->seen[k], cb->seen_len[k] * sizeof(uint32_t));
        for (int t = 0; t < n; t++)
            if (s->blocks[t] == cb->seen[k])
                tab_off[t] = (int32_t)(used - 6 * (size_t)n);
        used += cb->seen_len[k];
    }
    /* query tiles: consecutive positions of one table, up to ATT_ROWS / group tokens */
    const int tq_max = cb->tq_max;
    int nt = 0;
    for (int t = 0; t < n; t++) {
        if (nt > 0) {
            att_tile *p = &tiles[nt - 1];
            int last = p->t0 + p->n - 1;
            if (p->n < tq_max && s->blocks[t] == s->blocks[last] && s->pos[t] == s->pos[last] + 1) {
                p->n++;
                continue;
            }
        }
        tiles[nt].t0 = t;
        tiles[nt].n = 1;
        nt++;
    }
    cb->n_tiles = nt;
    /* device addresses of this layout (fixed for a given n: graph-stable) */
    cb->d_tok = cb->d_in;
    cb->d_pos = cb->d_in + n;
    cb->d_cell = (uint32_t *)(cb->d_in + 2 * n);
    cb->d_tab_off = cb->d_in + 3 * n;
    cb->d_tiles = (att_tile *)(cb->d_in + 4 * n);
    cb->d_tab = (uint32_t *)(cb->d_in + 6 * n);
    CK(cb, cudaMemcpyAsync(cb->d_in, h, used * sizeof(int32_t), cudaMemcpyHostToDevice, cb->st));
}

static void drop_graphs(cuda_backend *cb)
{
    for (int i = 0; i < cb->n_graphs; i++) {
        cudaGraphExecDestroy(cb->graphs[i].exec);
        free(cb->graphs[i].tape);
    }
    cb->n_graphs = 0;
    cb->next_graph = 0;
}

/* a hash of the tape's bytes, 8 at a time (op_rec holds pointers: a multiple of 8) */
static uint64_t tape_hash(const cuda_backend *cb)
{
    static_assert(sizeof(op_rec) % 8 == 0, "op_rec is hashed in 8-byte words");
    const uint64_t *p = (const uint64_t *)cb->tape;
    size_t n = (size_t)cb->n_tape * sizeof(op_rec) / 8;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

/* Run the tape: replay its graph, capture one for a decode step, or run it op by op. */
static void run_tape(cuda_backend *cb)
{
    const bool graphable = cb->step_n <= MV_MAX_TOKENS && !getenv("PENSIEVE_CUDA_NO_GRAPH");
    if (!graphable) {
        for (int i = 0; i < cb->n_tape && !cb->failed; i++)
            exec(cb, &cb->tape[i]);
        return;
    }
    const uint64_t hash = tape_hash(cb);
    for (int i = 0; i < cb->n_graphs; i++)
        if (cb->graphs[i].hash == hash && cb->graphs[i].n_recs == cb->n_tape &&
            !memcmp(cb->graphs[i].tape, cb->tape, (size_t)cb->n_tape * sizeof(op_rec))) {
            CK(cb, cudaGraphLaunch(cb->graphs[i].exec, cb->st));
            return;
        }
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    if (!CK(cb, cudaStreamBeginCapture(cb->st, cudaStreamCaptureModeThreadLocal)))
        return;
    for (int i = 0; i < cb->n_tape && !cb->failed; i++)
        exec(cb, &cb->tape[i]);
    cudaError_t e = cudaStreamEndCapture(cb->st, &g);
    if (cb->failed) {
        if (g)
            cudaGraphDestroy(g);
        return;
    }
    if (e != cudaSuccess)
        return (void)fail(cb, "cudaStreamEndCapture", e);
    e = cudaGraphInstantiate(&ge, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess)
        return (void)fail(cb, "cudaGraphInstantiate", e);
    op_rec *copy = (op_rec *)malloc((size_t)cb->n_tape * sizeof(op_rec));
    if (!copy) {
        /* no room to remember it: run it this once */
        cudaError_t le = cudaGraphLaunch(ge, cb->st);
        cudaGraphExecDestroy(ge);
        if (le != cudaSuccess)
            fail(cb, "cudaGraphLaunch", le);
        return;
    }
    memcpy(copy, cb->tape, (size_t)cb->n_tape * sizeof(op_rec));
    struct graph_entry *slot;
    if (cb->n_graphs < MAX_GRAPHS) {
        slot = &cb->graphs[cb->n_graphs++];
    } else {
        slot = &cb->graphs[cb->next_graph];
        cb->next_graph = (cb->next_graph + 1) % MAX_GRAPHS;
        cudaGraphExecDestroy(slot->exec);
        free(slot->tape);
    }
    slot->hash = hash;
    slot->n_recs = cb->n_tape;
    slot->tape = copy;
    slot->exec = ge;
    CK(cb, cudaGraphLaunch(ge, cb->st));
}

static bool step_end(struct compute_backend *be)
{
    cuda_backend *cb = cb_of(be);
    cb->in_step = false;
    if (!cb->failed)
        run_tape(cb);
    for (int i = 0; i < cb->n_pend && !cb->failed; i++)
        CK(cb, cudaMemcpyAsync(cb->pend[i].host, cb->d_out + cb->pend[i].off, cb->pend[i].bytes,
                               cudaMemcpyDeviceToHost, cb->st));
    if (!cb->failed) {
        cudaError_t e = cudaStreamSynchronize(cb->st);
        if (e != cudaSuccess)
            fail(cb, "running the step", e);
    }
    cb->n_tape = 0;
    return !cb->failed;
}

static const struct compute_ops cuda_ops = {
    get_rows, matmul, rmsnorm, rope, glu, add, kv_store, attention, alloc, release, upload,
    add_bias, download, copy, step_begin, step_end,
};

/* ---- lifecycle ---- */

extern "C" bool compute_cuda_present(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return n > 0;
}

static void load_cublas(cuda_backend *cb)
{
    static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names && !cb->cublas_lib; i++)
        cb->cublas_lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!cb->cublas_lib || getenv("PENSIEVE_CUDA_NO_CUBLAS"))
        return;
    cublas_create_fn create = (cublas_create_fn)dlsym(cb->cublas_lib, "cublasCreate_v2");
    cublas_set_stream_fn set_stream =
        (cublas_set_stream_fn)dlsym(cb->cublas_lib, "cublasSetStream_v2");
    cb->cublas_destroy = (cublas_destroy_fn)dlsym(cb->cublas_lib, "cublasDestroy_v2");
    cb->gemm = (cublas_gemm_ex_fn)dlsym(cb->cublas_lib, "cublasGemmEx");
    if (!create || !set_stream || !cb->cublas_destroy || !cb->gemm ||
        create(&cb->cublas) != 0 || set_stream(cb->cublas, cb->st) != 0) {
        cb->gemm = NULL;
        cb->cublas = NULL;
    }
}

static void fmt_gib(char *buf, size_t cap, size_t bytes)
{
    snprintf(buf, cap, "%.2f GiB", (double)bytes / (1024.0 * 1024.0 * 1024.0));
}

extern "C" void compute_cuda_free(struct compute_backend *be)
{
    cuda_backend *cb = cb_of(be);
    if (!cb)
        return;
    drop_graphs(cb);
    if (cb->cublas && cb->cublas_destroy)
        cb->cublas_destroy(cb->cublas);
    while (cb->n_al > 0)
        release(be, cb->al[cb->n_al - 1].p);
    cudaFree(cb->d_w);
    cudaFree(cb->d_in);
    cudaFree(cb->d_out);
    cudaFree(cb->d_part);
    cudaFree(cb->d_wdq);
    cudaFree(cb->d_xh);
    cudaFreeHost(cb->h_in);
    if (cb->st)
        cudaStreamDestroy(cb->st);
    free(cb->tape);
    free(cb->seen);
    free(cb->seen_len);
    free(cb);
}

extern "C" struct compute_backend *compute_cuda_new(const struct compute_cuda_params *p,
                                                    struct pv_err *err)
{
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        pv_err_set(err, PV_ERR_DEVICE, "no CUDA GPU is usable: %s",
                   e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
        cudaGetLastError();
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        pv_err_set(err, PV_ERR_DEVICE, "cuda: cannot read the GPU's properties: %s",
                   cudaGetErrorString(e));
        return NULL;
    }
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof(*cb));
    if (!cb) {
        pv_err_set(err, PV_ERR_NOMEM, "cannot allocate the CUDA backend");
        return NULL;
    }
    snprintf(cb->name, sizeof cb->name, "cuda: %s", prop.name);
    cb->base.name = cb->name;
    cb->base.ops = &cuda_ops;
    cb->n_ctx = p->n_ctx;
    cb->n_batch = p->n_batch;
    cb->max_k = p->max_k;
    cb->hd_k = p->hd_k;
    cb->hd_v = p->hd_v;
    cb->n_head_max = p->n_head;
    {
        int G = p->n_head_kv > 0 ? p->n_head / p->n_head_kv : 1;
        int tq = G > 0 ? ATT_ROWS / G : 1;
        cb->tq_max = tq < 1 ? 1 : tq > 16 ? 16 : tq;
    }

    /* the fit check: weights + the caller's KV and scratch + our workspaces */
    cb->in_cap = 6 * (size_t)p->n_batch + (p->n_ctx >> 5) + 64; /* grows in step_begin */
    {
        size_t toks = p->n_batch > MV_MAX_TOKENS * 64 ? p->n_batch : MV_MAX_TOKENS * 64;
        cb->part_floats = toks * p->n_head * (2 + (size_t)p->hd_v);
        if (cb->part_floats < ((size_t)4 << 20))
            cb->part_floats = (size_t)4 << 20;
    }
    const size_t part_bytes = cb->part_floats * sizeof(float);
    const size_t wdq_bytes = WDQ_ELEMS * sizeof(__half);
    const size_t xh_bytes = (size_t)p->n_batch * p->max_k * sizeof(__half);
    const size_t work = part_bytes + wdq_bytes + xh_bytes + cb->in_cap * 4 + ((size_t)64 << 20);
    size_t free_b = 0, total_b = 0;
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
        pv_err_set(err, PV_ERR_DEVICE, "cuda: cannot read the GPU's memory: %s",
                   cudaGetErrorString(e));
        free(cb);
        return NULL;
    }
    const size_t need = p->weights_bytes + p->other_bytes + work;
    if (need > free_b) {
        char n_s[32], w_s[32], o_s[32], k_s[32], f_s[32], t_s[32];
        fmt_gib(n_s, sizeof n_s, need);
        fmt_gib(w_s, sizeof w_s, p->weights_bytes);
        fmt_gib(o_s, sizeof o_s, p->other_bytes);
        fmt_gib(k_s, sizeof k_s, work);
        fmt_gib(f_s, sizeof f_s, free_b);
        fmt_gib(t_s, sizeof t_s, total_b);
        pv_err_set(err, PV_ERR_NOMEM,
                   "the model does not fit on the GPU (%s): %s needed (weights %s + kv cache and "
                   "activations %s + workspace %s), %s free of %s; try a smaller --ctx-size or "
                   "--device cpu",
                   prop.name, n_s, w_s, o_s, k_s, f_s, t_s);
        free(cb);
        return NULL;
    }
    bool ok = cudaStreamCreateWithFlags(&cb->st, cudaStreamNonBlocking) == cudaSuccess &&
              cudaMalloc((void **)&cb->d_w, p->weights_bytes ? p->weights_bytes : 1) == cudaSuccess &&
              cudaMalloc((void **)&cb->d_in, cb->in_cap * 4) == cudaSuccess &&
              cudaMallocHost((void **)&cb->h_in, cb->in_cap * 4) == cudaSuccess &&
              cudaMalloc((void **)&cb->d_part, part_bytes) == cudaSuccess &&
              cudaMalloc((void **)&cb->d_wdq, wdq_bytes) == cudaSuccess &&
              cudaMalloc((void **)&cb->d_xh, xh_bytes ? xh_bytes : 2) == cudaSuccess;
    cb->tape = (op_rec *)calloc(MAX_TAPE, sizeof(op_rec));
    cb->seen = (const void **)calloc(p->n_batch ? p->n_batch : 1, sizeof(void *));
    cb->seen_len = (uint32_t *)calloc(p->n_batch ? p->n_batch : 1, sizeof(uint32_t));
    if (!ok || !cb->tape || !cb->seen || !cb->seen_len) {
        e = cudaGetLastError();
        pv_err_set(err, PV_ERR_NOMEM, "cuda: cannot allocate the GPU's buffers: %s",
                   cudaGetErrorString(e));
        compute_cuda_free(&cb->base);
        return NULL;
    }
    /* the weights, once, straight from the mapping in pieces of 256 MiB */
    cb->h_w = (const uint8_t *)p->weights;
    cb->w_bytes = p->weights_bytes;
    for (size_t off = 0; off < p->weights_bytes; off += (size_t)256 << 20) {
        size_t nb = p->weights_bytes - off < ((size_t)256 << 20) ? p->weights_bytes - off
                                                                  : (size_t)256 << 20;
        if ((e = cudaMemcpyAsync(cb->d_w + off, cb->h_w + off, nb, cudaMemcpyHostToDevice,
                                 cb->st)) != cudaSuccess ||
            (e = cudaStreamSynchronize(cb->st)) != cudaSuccess) {
            pv_err_set(err, PV_ERR_DEVICE, "cuda: uploading the weights failed: %s",
                       cudaGetErrorString(e));
            compute_cuda_free(&cb->base);
            return NULL;
        }
    }
    size_t smem = att_smem(256, 256); /* the largest heads: any layer shape launches */
    cudaFuncSetAttribute(k_attention<true, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    cudaFuncSetAttribute(k_attention<false, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    cudaFuncSetAttribute(k_attention<true, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    cudaFuncSetAttribute(k_attention<false, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if ((e = cudaGetLastError()) != cudaSuccess) {
        pv_err_set(err, PV_ERR_DEVICE, "cuda: attention kernel setup failed: %s",
                   cudaGetErrorString(e));
        compute_cuda_free(&cb->base);
        return NULL;
    }
    load_cublas(cb);
    return &cb->base;
}
