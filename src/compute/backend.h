/*
 * backend.h - the table of ops the forward recipe runs on, and the CPU backend.
 *
 * engine/forward.c is one recipe for every architecture; each step of it is a call
 * through `struct compute_ops`, so that a backend decides where buffers live and how an
 * op runs. The CPU backend (compute/cpu/backend_cpu.c) implements the table with the
 * kernels of compute/cpu/, its attention over block tables and one worker pool. A
 * device backend owns its buffers (alloc / free / upload) and runs the same calls on
 * them. All float buffers are f32 rows; shapes in elements.
 */
#ifndef PV_COMPUTE_BACKEND_H
#define PV_COMPUTE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/compute.h"

/*
 * Attention of n query tokens over a block KV cache (one layer): token t attends over
 * positions [j0, pos[t]] of its sequence, j0 = pos[t] + 1 - n_swa inside a window
 * (n_swa 0: none); position j of the token's sequence is in cell
 * blocks[t][j >> block_shift] << block_shift | (j & mask). Query head h reads KV head
 * h / (n_head / n_head_kv). The first n_one tokens are summed in llama.cpp's one-token
 * order, the others in its batch order.
 */
struct compute_attn {
    const float *q;                  /* [n][q_stride], head h at h * hd_k */
    size_t q_stride;
    float *out;                      /* [n][n_head * hd_v] */
    int n, n_one;
    const int32_t *pos;              /* [n] */
    const uint32_t *const *blocks;   /* [n] the block table of each token's sequence */
    uint32_t block_shift;
    const void *k, *v;               /* cell 0 of the layer */
    size_t k_row_bytes, v_row_bytes; /* one cell */
    bool f16;                        /* cells are F16 (else F32) */
    int n_head, n_head_kv, hd_k, hd_v;
    uint32_t n_swa;
    float q_scale;                   /* multiplies q first (Gemma), else 1 */
    float scale;                     /* multiplies q.k */
};

struct compute_backend;

struct compute_ops {
    /* y[t] = row ids[t] of t (any weight type) * scale, t < n */
    void (*get_rows)(struct compute_backend *be, const struct pv_tensor *t, const int32_t *ids,
                     int n, float scale, float *y);
    /* y[t][r] = sum_k W[r][k] x[t][k]; tokens [0, n_one) in the one-token order */
    void (*matmul)(struct compute_backend *be, const struct pv_tensor *w, const float *x,
                   float *y, int n, int n_one);
    /* rmsnorm of the n_tok x n_sub rows of width dim at t * tok_stride + h * sub_stride,
       times w, into the same place of y (which may be x) */
    void (*rmsnorm)(struct compute_backend *be, const float *x, const float *w, float *y,
                    int n_tok, int n_sub, size_t tok_stride, size_t sub_stride, int dim,
                    float eps);
    /* RoPE of the n rows (stride apart) of n_heads heads, row t at position pos[t] */
    void (*rope)(struct compute_backend *be, float *x, size_t stride, int n, const int32_t *pos,
                 int n_heads, int head_dim, int n_rot, float base, float freq_scale,
                 const float *ff, bool neox);
    /* gate[i] = act(gate[i]) * up[i], act GELU-tanh or SiLU, n elements */
    void (*glu)(struct compute_backend *be, float *gate, const float *up, size_t n, bool gelu);
    /* x[i] += y[i], n elements */
    void (*add)(struct compute_backend *be, float *x, const float *y, size_t n);
    /* row t (stride apart, width dim) into cell cells[t] of the layer at base */
    void (*kv_store)(struct compute_backend *be, const float *src, size_t stride, int n, int dim,
                     void *base, size_t row_bytes, const uint32_t *cells, bool f16);
    void (*attention)(struct compute_backend *be, const struct compute_attn *a);
    /* buffers the backend owns (its memory); NULL on failure */
    void *(*alloc)(struct compute_backend *be, size_t bytes);
    void (*free)(struct compute_backend *be, void *p);
    void (*upload)(struct compute_backend *be, void *dst, const void *src, size_t bytes);
};

struct compute_backend {
    const char *name;               /* "cpu" */
    const struct compute_ops *ops;
    int n_threads;
};

/*
 * The CPU backend: n_threads workers; attention scratch for sequences of up to n_ctx
 * positions and heads of hd_k / hd_v; its attention kernel for an F16 (f16) or F32
 * cache on this CPU. NULL when out of memory. Freed with compute_cpu_free.
 */
struct compute_backend *compute_cpu_new(int n_threads, uint32_t n_ctx, int hd_k, int hd_v,
                                        bool f16);
void compute_cpu_free(struct compute_backend *be);
/* Bytes compute_cpu_new allocates for its scratch. */
size_t compute_cpu_scratch_bytes(int n_threads, uint32_t n_ctx, int hd_k, int hd_v);

#endif /* PV_COMPUTE_BACKEND_H */
