/*
 * engine.h - the engine module's internals: the context (KV cache, scratch, logits),
 * the forward recipe and attention over the KV cache.
 *
 * The public face is the "Contexts and sampling" section of pensieve.h. KV cache layout:
 * one K and one V array of [n_layer][n_ctx][n_head_kv*head_dim] elements (F16 by
 * default); position p of layer il starts at ((il*n_ctx)+p)*row. Every layer keeps all
 * n_ctx positions, sliding-window layers included (the window is applied by the mask),
 * so pv_context_truncate can go back to any earlier position.
 */
#ifndef PV_ENGINE_H
#define PV_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "pensieve.h"
#include "util/util.h"

/* One query head's attention over the visible cells [j0, pos] of one KV head. */
struct engine_attn_item {
    const float *q;              /* [hd_k] query of this head */
    const void *k, *v;           /* cell 0 of this KV head; cells are k/v_stride bytes apart */
    size_t k_stride, v_stride;
    uint32_t j0, pos;            /* visible cells */
    int hd_k, hd_v;
    float q_scale;               /* multiplies q before anything else (Gemma), else 1 */
    float scale;                 /* multiplies q.k */
    bool batch;                  /* part of a batch of 2 or more tokens (prefill) */
    float *scores;               /* scratch [n_ctx], indexed by cell */
    float *qbuf;                 /* scratch [hd_k] */
    float *lanes;                /* scratch [64][hd_v] */
    float *out;                  /* [hd_v] */
};
typedef void (*engine_attend_fn)(const struct engine_attn_item *it);

struct pv_context {
    struct pv_model *model;      /* borrowed; outlives the context */
    struct pv_pool *pool;        /* owned; n_threads workers */
    int n_threads;
    uint32_t n_ctx;              /* positions in the KV cache */
    uint32_t n_batch;            /* most tokens per forward step */
    uint32_t n_past;             /* positions filled */
    uint32_t n_vocab;

    /* KV cache: [n_layer][n_ctx][kv_dim_k] and [n_layer][n_ctx][kv_dim_v], owned */
    enum pv_kv_type kv_type;
    size_t kv_elt_bytes;         /* 2 (F16) or 4 (F32) */
    uint32_t kv_dim_k, kv_dim_v; /* n_head_kv * head_dim_k, n_head_kv * head_dim_v */
    void *k_cache, *v_cache;
    engine_attend_fn attend;     /* per-head kernel for the cache type and CPU */

    /* scratch, each [n_batch][width], owned */
    float *x;                    /* residual stream [n_embd] */
    float *xb;                   /* normed input of a block [n_embd] */
    float *q, *k, *v;            /* [n_head*hd_k], [kv_dim_k], [kv_dim_v] */
    float *att;                  /* attention output [n_head*hd_v] */
    float *proj;                 /* output of Wo / Wdown [n_embd] */
    float *ffn_gate, *ffn_up;    /* [n_ff] */
    float *fused;                /* phi3 fused qkv / gate-up output, or NULL */
    float *att_scratch;          /* [n_threads][engine_attn_scratch_floats] */

    /* logits of the last eval: n_logit_rows rows of n_vocab, owned */
    float *logits;
    size_t logits_cap_rows;
    size_t n_logit_rows;         /* 0 after truncate */
    bool logits_all;             /* rows are per token (else one row: the last token) */

    int32_t eog[4];              /* end-of-generation ids when the model has no vocabulary */
    size_t n_eog;

    /* PENSIEVE_DUMP_DIR at creation, owned, or NULL: every forward step appends its
       intermediate tensors there as f32 rows, <name>-<layer>.f32 (tests/tools/
       compare_tensors.py sets them beside llama.cpp's) */
    char *dump_dir;
};

/*
 * Run n tokens (n <= n_batch) at positions n_past.. through the model, writing their K/V
 * into the cache. When out is non-NULL: with all true, out gets n rows of logits (one
 * per token); else one row, the last token's. Does not advance n_past.
 */
void engine_forward(struct pv_context *ctx, const int32_t *tokens, int n, float *out, bool all);

/*
 * att[t][h*hd_v..] = softmax_j(scale * q[t][h] . K[il][j][g]) . V[il][j][g] over keys
 * j <= pos0+t (and within the window when swa), g = h / (n_head/n_head_kv).
 * q rows are q_stride floats apart. Threaded over (token, head) pairs.
 */
void engine_attention(struct pv_context *ctx, int il, const float *q, size_t q_stride,
                      float *att, int n, uint32_t pos0, bool swa);

/* The attention kernel for a cache type: AVX2/F16C for F16 when the CPU has them and
 * head_dim_v is a multiple of 8, in the lane order of llama.cpp on this CPU. */
engine_attend_fn engine_attend_for(enum pv_kv_type type, uint32_t head_dim_v);
/* The AVX2/F16C kernel (engine/attn_avx2.c); call only when the CPU has them. */
void engine_attend_f16_avx2(const struct engine_attn_item *it);
/* the same in the order of llama.cpp's AVX-512 build (16 lanes), still with AVX2 code */
void engine_attend_f16_avx512_order(const struct engine_attn_item *it);
/* Floats of attention scratch one thread needs at context size n_ctx. */
size_t engine_attn_scratch_floats(const struct model_hparams *hp, uint32_t n_ctx);

/* The seed a sampler draws with (the random one when PV_SEED_RANDOM was asked). */
uint64_t sampler_seed(const struct pv_sampler *s);

#endif /* PV_ENGINE_H */
