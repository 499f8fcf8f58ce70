/*
 * compute.h - the compute module: tensor element types, tensor views and backend ops.
 *
 * Type ids are ggml's (they are what GGUF files store). Block layouts of the quantized
 * types live in compute/quant.h, shared by C and CUDA. Every op has a scalar reference
 * in compute/cpu/ that is the oracle for its SIMD and CUDA versions.
 */
#ifndef PV_COMPUTE_H
#define PV_COMPUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids, as stored in GGUF tensor infos. Append only. */
enum pv_type {
    PV_TYPE_F32 = 0,
    PV_TYPE_F16 = 1,
    PV_TYPE_Q4_0 = 2,
    PV_TYPE_Q4_1 = 3,
    PV_TYPE_Q5_0 = 6,
    PV_TYPE_Q5_1 = 7,
    PV_TYPE_Q8_0 = 8,
    PV_TYPE_Q8_1 = 9,
    PV_TYPE_Q2_K = 10,
    PV_TYPE_Q3_K = 11,
    PV_TYPE_Q4_K = 12,
    PV_TYPE_Q5_K = 13,
    PV_TYPE_Q6_K = 14,
    PV_TYPE_Q8_K = 15,
    PV_TYPE_BF16 = 30,
    PV_TYPE_GGML_COUNT = 43, /* ids below this exist in ggml; not all are supported */
    /* MLX affine groups (compute/quant.h), never in a GGUF file: ids 64 + 3 * bits_index +
       group_index, bits 2, 3, 4, 5, 6, 8 and groups of 32, 64, 128 elements */
    PV_TYPE_MLX_FIRST = 64,
    PV_TYPE_MLX_Q4_G64 = 64 + 3 * 2 + 1,
    PV_TYPE_MLX_Q8_G64 = 64 + 3 * 5 + 1,
    PV_TYPE_COUNT = 64 + 3 * 6 /* one past the last id Pensieve knows */
};

struct pv_type_info {
    const char *name;    /* "q4_K" */
    uint32_t blck;       /* elements per block */
    uint32_t type_bytes; /* bytes per block */
    bool weight;         /* supported as a model weight type */
};

/* Traits of a type id, or NULL when the id is unknown or unsupported by Pensieve. */
const struct pv_type_info *pv_type_get(uint32_t type);

/* The MLX affine type of `bits` (2, 3, 4, 5, 6, 8) and group size (32, 64, 128), or
 * PV_TYPE_COUNT when there is none; and the bits and group size of an MLX type (0 for
 * other types). */
uint32_t pv_type_mlx(uint32_t bits, uint32_t group_size);
uint32_t pv_type_mlx_bits(uint32_t type);
uint32_t pv_type_mlx_group(uint32_t type);

/*
 * A view of a tensor: shape and type, data borrowed from whoever owns the bytes (the
 * model's mmap for weights). ne[0] is the contiguous row length; unused ne are 1.
 */
struct pv_tensor {
    const char *name;   /* borrowed, NUL-terminated */
    uint32_t type;      /* enum pv_type */
    int n_dims;
    int64_t ne[4];      /* elements per dimension */
    size_t row_bytes;   /* bytes of one row of ne[0] elements */
    size_t n_bytes;     /* bytes of the whole tensor */
    const void *data;
};

/* ---- CPU ops (compute/cpu/) -------------------------------------------------------
 * Implemented by compute/cpu/: a scalar reference for each op (the oracle) and AVX2
 * versions picked at run time. Shapes are in elements; all float buffers are f32 and
 * contiguous. Threaded ops take the pool and split rows across its threads. */

struct pv_pool;

/* fp16 / bf16 conversion (IEEE binary16 with subnormals, inf and nan). */
float pv_fp16_to_f32(uint16_t h);
uint16_t pv_f32_to_fp16(float f);
float pv_bf16_to_f32(uint16_t h);

/* Dequantize n elements (a multiple of the type's block size) of type `type` at src. */
void cpu_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

/*
 * y[t][r] = sum_k W[r][k] * x[t][k] for t < n_tokens, r < W->ne[1], k < W->ne[0].
 * W is a weight of any supported type; x is [n_tokens][ne0], y is [n_tokens][ne1].
 * Activations are quantized once to the weight type's dot type, then rows are split
 * across the pool's threads.
 */
void cpu_matmul(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                int n_tokens);
/*
 * cpu_matmul with the float order chosen per token, as llama.cpp chooses it per call:
 * tokens [0, n_one) in its one-token order, the rest in its batch order (so a token of
 * a mixed batch gets the bits it gets in a step of its own). n_tokens - n_one is 0 or
 * at least 2. cpu_matmul is this with n_one = 1 for one token, else 0.
 */
void cpu_matmul_mixed(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                      int n_tokens, int n_one);

/* y = x / sqrt(mean(x^2) + eps) * w (w may be NULL); n elements; y may alias x. */
void cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps);

/*
 * Rotate the first n_rot dimensions of each of n_heads heads (head_dim apart) at
 * position pos: theta_i = freq_scale * pos * base^(-2i/n_rot) / (ff ? ff[i] : 1).
 * neox pairs (x[i], x[i+n_rot/2]); otherwise (x[2i], x[2i+1]).
 */
void cpu_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float base,
              float freq_scale, const float *ff, bool neox);

/* x[i] = gelu_tanh(x[i]) * g[i] and x[i] = silu(x[i]) * g[i] (gated FFN activations). */
void cpu_gelu_mul(float *x, const float *g, int n);
void cpu_silu_mul(float *x, const float *g, int n);

/* In-place softmax over n values (max-subtracted, f32). */
void cpu_softmax(float *x, int n);
/* The vector width, in floats, whose llama.cpp float order the kernels in use keep: 16
 * or 8, as the kernel mode says (by default 16 on CPUs with AVX-512 F and DQ, as a native
 * llama.cpp build there sums). SiLU, the F32/F16 dots and attention sum in this many lanes. */
int cpu_llama_lanes(void);
/* Whether the SIMD kernels are in use (not the scalar reference). */
bool cpu_simd_active(void);
/* The kernel modes this CPU can run, by name, space-separated ("scalar avx2/8 avx2/16"). */
const char *cpu_modes_available(void);
/* What PENSIEVE_KERNELS=fast runs on this CPU: "fast/avx512-vnni", "fast/avx2", "fast/scalar". */
const char *cpu_fast_tier(void);
/* Why PENSIEVE_KERNELS could not be honoured (not a mode, or one this CPU cannot run),
 * or NULL when it was (or is unset). */
const char *cpu_kernels_env_error(void);

/* bf16 from f32: round to nearest even, nan kept a nan. */
uint16_t cpu_f32_to_bf16(float f);

/* Name of the kernel mode in use: "scalar", "avx2/8", "avx2/16", "avx2+vnni/8" or
 * "avx2+vnni/16". */
const char *cpu_features(void);

/* cpu_rmsnorm over n_rows consecutive rows of n elements; y may alias x. */
void cpu_rmsnorm_rows(const float *x, const float *w, float *y, int n_rows, int n, float eps);

/* Attention over an f16 KV cache: sum_i x[i] * h[i], and y[i] += a * h[i]; n elements. */
float cpu_dot_f32_f16(const float *x, const uint16_t *h, int n);
void cpu_axpy_f16(float *y, float a, const uint16_t *h, int n);
/* Row conversions between f32 and fp16 (round to nearest even). */
void cpu_f32_to_f16_row(const float *x, uint16_t *h, int n);
void cpu_f16_to_f32_row(const uint16_t *h, float *x, int n);

/* Free the calling thread's matmul scratch (cpu_matmul regrows it on next use). */
void cpu_scratch_release(void);

#endif /* PV_COMPUTE_H */
