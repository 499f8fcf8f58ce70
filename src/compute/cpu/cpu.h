/*
 * cpu.h - internals of the CPU backend shared by its files (not for other modules).
 *
 * The kernels that differ between the scalar reference (ref.c) and the SIMD versions
 * (*_avx2.c) are reached through one table of function pointers, `struct cpu_kernels`,
 * filled once at first use from the CPU's features (dispatch.c). The scalar table is
 * always built; it is the oracle the SIMD kernels are tested against.
 */
#ifndef PV_CPU_H
#define PV_CPU_H

#include "compute/backend.h"
#include "compute/compute.h"
#include "compute/quant.h"

/* *s = sum_k w[k] * a[k] over n elements: w a weight row, a the activation row already
 * quantized to the weight type's dot type (see cpu_dot_type; for Q8_0, widened to
 * cpu_block_q8_0x when the table's widen_q8_0 is set). */
typedef void (*cpu_vec_dot_fn)(int n, float *s, const void *w, const void *a);
/* s[t * s_stride] = dot(w, a + t * a_stride) for t < nt (1..CPU_MULTI_MAX): one weight
 * row against several activation rows, unpacking the weights once (prefill batches).
 * Activation rows are of the dot type (Q8_0 rows widened when widen_q8_0 says so). */
#define CPU_MULTI_MAX 4
typedef void (*cpu_vec_dot_multi_fn)(int n, float *s, size_t s_stride, const void *w,
                                     const void *a, size_t a_stride, int nt);
/*
 * A Q8_0 activation block widened for the SIMD dots: d is the block's fp16 d as f32, so
 * no fp16 conversion happens per weight row.
 */
struct cpu_block_q8_0x {
    float d;
    int8_t qs[PV_QK8_0];
};
/*
 * A Q4_0 / Q5_0 weight block unpacked once for a whole prefill batch: d as f32, the
 * quants as signed bytes in element order (q - 8 for Q4_0, q - 16 for Q5_0).
 */
struct cpu_block_s8 {
    float d;
    int8_t q[PV_QK8_0];
};
/* Unpack n elements of a weight row into cpu_block_s8 blocks. */
typedef void (*cpu_unpack_fn)(const void *w, void *out, int64_t n);
/* s[t * s_stride] = dot(unpacked row w, widened Q8_0 row t) for t < nt, in the same
 * float order as the type's vec_dot (so batch and one-token results are the same bits). */
typedef void (*cpu_vec_dot_s8_fn)(int n, float *s, size_t s_stride, const void *w,
                                  const void *a, size_t a_stride, int nt);

/* Widen n elements of Q8_0 blocks at src into dst. dst may overlap src when src starts
 * 2 bytes per block after dst (the blocks are read before their slot is written). */
void cpu_q8_0_widen(const void *src, void *dst, int64_t n);

/* Quantize n f32 values (a multiple of the block size) into blocks at y. */
typedef void (*cpu_quantize_fn)(const float *x, void *y, int64_t n);
/* Expand n elements of blocks at x into f32. */
typedef void (*cpu_dequant_fn)(const void *x, float *y, int64_t n);
/* A whole matmul y[t][r] = W[r] . x[t] by a kernel of its own (the fast mode); false when
 * it does not take this weight (type or shape), and the generic path runs instead. */
typedef bool (*cpu_matmul_fn)(struct pv_pool *pool, const struct pv_tensor *W, const float *x,
                              float *y, int n_tokens);

struct cpu_kernels {
    const char *name;                           /* "scalar", "avx2", "avx2+vnni" */
    bool widen_q8_0; /* Q4_0/Q5_0/Q8_0 dots read widened Q8_0 rows (cpu_block_q8_0x) */
    cpu_vec_dot_fn vec_dot[PV_TYPE_COUNT];      /* by weight type; NULL = unsupported */
    /* F32 / F16 / BF16 in llama.cpp's one-token order where vec_dot has its batch order (used for
     * one token, and for a batch whose row length is not a multiple of f_lanes or whose
     * row count is not a multiple of 4, where llama.cpp's tinyBLAS declines); else NULL */
    cpu_vec_dot_fn vec_dot_one[PV_TYPE_COUNT];
    int f_lanes;
    cpu_vec_dot_multi_fn vec_dot_multi[PV_TYPE_COUNT]; /* NULL: vec_dot per row instead */
    cpu_unpack_fn unpack[PV_TYPE_COUNT];       /* Q4_0/Q5_0 for batches; NULL: not used */
    cpu_vec_dot_s8_fn vec_dot_s8;               /* with unpack */
    cpu_quantize_fn quantize[PV_TYPE_COUNT];    /* by dot type: F16, BF16, Q8_0, Q8_1, Q8_K */
    float (*dot_f32_f16)(const float *x, const uint16_t *h, int n);
    void (*axpy_f16)(float *y, float a, const uint16_t *h, int n);
    void (*f16_to_f32)(const uint16_t *h, float *y, int n);
    void (*gelu_mul)(float *x, const float *g, int n);
    void (*silu_mul)(float *x, const float *g, int n);
    void (*softmax)(float *x, int n);
    void (*rope_rotate)(float *x, int n_heads, int head_dim, int half, const float *cs, bool neox);
    cpu_matmul_fn matmul; /* the fast mode's matmul, tried first; NULL in the exact modes */
    /* the fast mode's attention (attn_avx512.c), tried first; false: not taken (shape,
     * cache type, or too few items to share out), the per-head kernel runs; NULL: exact */
    bool (*attention)(struct pv_pool *pool, float *scratch, size_t scratch_floats,
                      const struct compute_attn *a);
};

/* Largest n_rot / 2 cpu_rope handles (head sizes of 1024). */
#define CPU_ROPE_MAX_HALF 512

/* The kernel modes: which table, and llama.cpp's lane width its F32/F16 dots, SiLU and
 * attention sum in. Append-only. CPU_MODE_FAST is not an exact mode: the default exact
 * table with fast_avx512.c's matmul over it where the CPU has AVX-512 VNNI (any float
 * order; tested against the exact modes by error bounds, not bits). */
enum cpu_mode {
    CPU_MODE_SCALAR,
    CPU_MODE_AVX2_8,
    CPU_MODE_AVX2_16,
    CPU_MODE_VNNI_8,
    CPU_MODE_VNNI_16,
    CPU_MODE_FAST,
    CPU_MODE_COUNT
};

/* The table in use (see dispatch.c for how it is picked). */
const struct cpu_kernels *cpu_kernels_get(void);
/* The scalar reference table. */
const struct cpu_kernels *cpu_kernels_ref(void);
/* The best table the CPU supports, ignoring PENSIEVE_NO_SIMD (for tests and benches). */
const struct cpu_kernels *cpu_kernels_best(void);
/* The table of mode m, or NULL when this CPU cannot run it. */
const struct cpu_kernels *cpu_kernels_mode(enum cpu_mode m);
/* "scalar", "avx2/8", "avx2/16", "avx2+vnni/8", "avx2+vnni/16" */
const char *cpu_mode_name(enum cpu_mode m);

/* Switch the table in use to the scalar one (true) or the process's mode (false); for
 * benches and tests, never while a matmul runs. */
void cpu_kernels_select(bool scalar);

/* Use mode m from now on (false, and no change, when this CPU cannot run it); for tests,
 * never while a matmul runs. */
bool cpu_kernels_use(enum cpu_mode m);

/* Fill the scalar table (ref.c) and overlay the AVX2 kernels on one (quants_avx2.c), the
 * F32/F16 dots and SiLU summing in `lanes` (8 or 16) as llama.cpp does at that width. */
void cpu_ref_fill(struct cpu_kernels *k);
void cpu_avx2_fill(struct cpu_kernels *k, int lanes);
void cpu_vnni_fill(struct cpu_kernels *k, int lanes); /* cpu_avx2_fill's kernels with AVX-VNNI */
void cpu_avx2_ops_fill(struct cpu_kernels *k, int lanes);
/* The fast matmul (fast_avx512.c, a cpu_matmul_fn); call only on a CPU with AVX-512 F, BW,
 * VL, DQ and VNNI (dispatch.c installs it; the fill code stays out of the AVX-512 files). It
 * takes batches of CPU_FAST_MIN_TOKENS tokens or more (fewer: the exact kernels, faster
 * there as interleaving 16 weight rows costs about what a few tokens' dots with them do). */
#define CPU_FAST_MIN_TOKENS 4
bool cpu_fast_matmul_avx512(struct pv_pool *pool, const struct pv_tensor *W, const float *x,
                            float *y, int n_tokens);
/* The calling thread's matmul scratch, at least n_bytes (matmul.c; reused across calls). */
void *cpu_matmul_scratch(size_t n_bytes);

/* The MLX affine types (mlxq.c, mlxq_avx2.c): their scalar dots entered into a table,
 * the AVX2 ones overlaid on one, and the scalar row dequantizer of one type. */
void cpu_mlxq_ref_fill(struct cpu_kernels *k);
void cpu_mlxq_avx2_fill(struct cpu_kernels *k);
cpu_dequant_fn cpu_mlxq_dequant_fn(uint32_t type);

/* Scalar activations and softmax (ops.c), the references of the SIMD ones. */
void cpu_gelu_mul_ref(float *x, const float *g, int n);
/* gelu_tanh(fp16 h) rounded to fp16, as f32, for every fp16 bit pattern h (ops.c). */
extern float cpu_gelu_table[1 << 16];
void cpu_gelu_table_fill(void);
void cpu_silu_mul_ref(float *x, const float *g, int n);
void cpu_softmax_ref(float *x, int n);
void cpu_rope_rotate_ref(float *x, int n_heads, int head_dim, int half, const float *cs, bool neox);

/* Dot type of a weight type: the type its activations are quantized to (F32 for F32). */
uint32_t cpu_dot_type(uint32_t type);
/* Elements per block and bytes per block of the types the CPU handles; 0 if unknown. */
uint32_t cpu_type_blck(uint32_t type);
uint32_t cpu_type_bytes(uint32_t type);
/* Bytes of a row of n elements of `type` (n a multiple of the block size). */
size_t cpu_row_bytes(uint32_t type, int64_t n);

/* Scalar quantizers, also used directly by tests and the SIMD files for tails. */
void cpu_quantize_q8_0_ref(const float *x, void *y, int64_t n);
void cpu_quantize_q8_1_ref(const float *x, void *y, int64_t n);
void cpu_quantize_q8_K_ref(const float *x, void *y, int64_t n);


/* 6-bit scale and min j of a Q4_K / Q5_K super-block. */
static inline void cpu_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* f16 bits -> f32 for every f16 value, filled with the kernel tables (cpu_kernels_get) */
extern float cpu_fp16_table[1 << 16];

/* ---- attention (attention.c, attn_avx2.c) ---- */

/* One query head's attention over the visible positions [j0, pos] of one KV head. */
struct cpu_attn_item {
    const float *q;              /* [hd_k] query of this head */
    const void *k, *v;           /* cell 0 of this KV head; cells are k/v_stride bytes apart */
    size_t k_stride, v_stride;
    const uint32_t *blocks;      /* the sequence's block table: position j is in cell */
    uint32_t block_shift;        /*   blocks[j >> block_shift] << block_shift | low bits */
    uint32_t j0, pos;            /* visible positions */
    int hd_k, hd_v;
    float q_scale;               /* multiplies q before anything else (Gemma), else 1 */
    float scale;                 /* multiplies q.k */
    bool batch;                  /* summed in the batch order (else the one-token order) */
    float *scores;               /* scratch [n_ctx], indexed by position */
    float *qbuf;                 /* scratch [hd_k] */
    float *lanes;                /* scratch [64][hd_v] */
    float *out;                  /* [hd_v] */
};
typedef void (*cpu_attend_fn)(const struct cpu_attn_item *it);

/* The cache cell of position j of an item's sequence. */
static inline size_t cpu_attn_cell(const struct cpu_attn_item *it, uint32_t j)
{
    const uint32_t mask = (1u << it->block_shift) - 1;
    return ((size_t)it->blocks[j >> it->block_shift] << it->block_shift) | (j & mask);
}

/* The attention kernel for an F16 (f16) or F32 cache: AVX2/F16C for F16 when the CPU
 * has them and head_dim_v is a multiple of 8, in the lane order of llama.cpp on this
 * CPU; else the portable one. */
cpu_attend_fn cpu_attend_for(bool f16, uint32_t head_dim_v);
/* The AVX2/F16C kernel (attn_avx2.c); call only when the CPU has them. */
void cpu_attend_f16_avx2(const struct cpu_attn_item *it);
/* the same in the order of llama.cpp's AVX-512 build (16 lanes), still with AVX2 code */
void cpu_attend_f16_avx512_order(const struct cpu_attn_item *it);
/* Scratch floats of the fast attention per thread (attn_avx512.c's layout: tiles of 64
 * K and V rows, scores and 16 heads' q, output, maximum and sum, 16 for alignment). */
static inline size_t cpu_attn_fast_scratch_floats(int hd_k, int hd_v)
{
    return 64 * (size_t)(hd_k + hd_v) + 16 * 64 + 16 * (size_t)(hd_k + hd_v) + 2 * 16 + 16;
}
/* The fast attention (attn_avx512.c, the table's attention); same CPU condition. */
bool cpu_fast_attention_avx512(struct pv_pool *pool, float *scratch, size_t scratch_floats,
                               const struct compute_attn *a);
/* Floats of attention scratch one thread needs for sequences of n_ctx positions. */
size_t cpu_attn_scratch_floats(uint32_t n_ctx, int hd_k, int hd_v);
/* a->n tokens x n_head heads spread over the pool, each through attend; scratch holds
 * cpu_attn_scratch_floats(n_ctx, ...) floats per thread */
void cpu_attention(struct pv_pool *pool, cpu_attend_fn attend, float *scratch, uint32_t n_ctx,
                   const struct compute_attn *a);

#endif /* PV_CPU_H */
