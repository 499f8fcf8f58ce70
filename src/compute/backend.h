/*
 * backend.h - the table of ops the forward recipe runs on, and the CPU backend.
 *
 * engine/forward.c is one recipe for every architecture; each step of it is a call
 * through `struct compute_ops`, so that a backend decides where buffers live and how an
 * op runs. The CPU backend (compute/cpu/backend_cpu.c) implements the table with the
 * kernels of compute/cpu/, its attention over block tables and one worker pool. A
 * device backend owns its buffers (alloc / free / upload) and runs the same calls on
 * them. All float buffers are f32 rows; shapes in elements. The CUDA backend
 * (compute/cuda/) keeps the weights, the KV cache and every buffer in device memory;
 * the host arrays of a step (tokens, positions, cells, block tables) reach it once per
 * step through step_begin, and logits come back to host memory by step_end.
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

/* The host arrays of one forward step (borrowed for the step): every op of the step that
 * takes one of these pointers gets this very pointer. */
struct compute_step {
    int n;                           /* tokens */
    const int32_t *token, *pos;      /* [n] */
    const uint32_t *cell;            /* [n] */
    const uint32_t *const *blocks;   /* [n] block table of each token's sequence */
    uint32_t block_shift;
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
    /* x[t][i] += b[i] over n rows (stride apart) of width dim */
    void (*add_bias)(struct compute_backend *be, float *x, size_t stride, const float *b, int n,
                     int dim);
    /* bytes of the backend's buffer src into host memory dst (after the work before) */
    void (*download)(struct compute_backend *be, void *dst, const void *src, size_t bytes);
    /* bytes from src to dst, both the backend's buffers */
    void (*copy)(struct compute_backend *be, void *dst, const void *src, size_t bytes);
    /* optional (NULL on the CPU): a step starts; a step ends, its outputs in host memory:
       false after a device failure, with the reason in be->error */
    void (*step_begin)(struct compute_backend *be, const struct compute_step *s);
    bool (*step_end)(struct compute_backend *be);
};

struct compute_backend {
    const char *name;               /* "cpu", "cuda: <GPU name>" */
    const struct compute_ops *ops;
    int n_threads;
    char error[256];                /* why the last step failed (device backends) */
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

/*
 * The CUDA backend (compute/cuda/; compute/backend_nocuda.c in a CPU-only build, where
 * compute_cuda_present is false and compute_cuda_new fails saying so).
 */
struct compute_cuda_params {
    const void *weights;         /* host range holding every weight tensor (the mmap) */
    size_t weights_bytes;
    size_t other_bytes;          /* KV cache + scratch the caller will alloc: fit check */
    uint32_t n_ctx;              /* most positions of one sequence */
    uint32_t n_batch;            /* most tokens of one step */
    size_t max_k;                /* widest matmul input (elements) */
    int hd_k, hd_v;              /* head sizes (at most 256) */
    int n_head, n_head_kv;       /* query heads, KV heads */
};
/* A GPU with a working driver is present (and this build has the backend). */
bool compute_cuda_present(void);
/* Uploads the weights once; NULL with err set when there is no GPU or driver, or when the
 * weights and other_bytes do not fit in the GPU's free memory (both sizes said). */
struct pv_err;
struct compute_backend *compute_cuda_new(const struct compute_cuda_params *p, struct pv_err *err);
void compute_cuda_free(struct compute_backend *be);

#endif /* PV_COMPUTE_BACKEND_H */
