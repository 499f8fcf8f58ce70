/*
 * engine.h - the engine module's internals: the context (block KV cache of many
 * sequences, scratch, logits), the forward recipe and attention over the block tables.
 *
 * The public face is the "Contexts and sampling" section of pensieve.h. The KV cache is
 * kv.h's block pool; a row is one position of one layer, [n_head_kv*head_dim] elements
 * (F16 by default). Every layer keeps every position of a sequence, sliding-window
 * layers included (the window is applied by the mask), so a sequence can be truncated
 * to any earlier position.
 */
#ifndef PV_ENGINE_H
#define PV_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/backend.h"
#include "engine/kv.h"
#include "model/model.h"
#include "pensieve.h"
#include "util/util.h"

/*
 * One forward step: n tokens of one or more sequences (n <= n_batch). The tokens of
 * sequences that have exactly one token in the step come first (n_one of them), then the
 * others: the kernels take the first group in llama.cpp's one-token float order and the
 * second in its batch order, so every sequence gets the bits it would get alone. Logit
 * rows likewise: the n_out_one rows of sequences with one row in the step first.
 */
struct engine_ubatch {
    int n, n_one;
    const int32_t *token, *pos, *seq;  /* [n] */
    const uint32_t *cell;              /* [n] the KV cell of each token */
    const uint32_t *const *blocks;     /* [n] the block table of each token's sequence */
    int n_out, n_out_one;
    const int32_t *out_idx;            /* [n_out] the token (index < n) of each logits row */
    float *out;                        /* [n_out][n_vocab] */
};

struct pv_context {
    struct pv_model *model;      /* borrowed; outlives the context */
    struct compute_backend *be;  /* owned: the ops the recipe runs on, its worker pool */
    bool cuda;                   /* be is the CUDA backend (else the CPU's) */
    int n_threads;
    uint32_t n_ctx;              /* positions one sequence may hold */
    uint32_t n_batch;            /* most tokens per forward step */
    uint32_t n_seq;              /* sequence ids 0..n_seq-1 */
    uint32_t n_vocab;

    /* KV cache: blocks of rows [kv_dim_k] and [kv_dim_v] (kv.h), owned */
    enum pv_kv_type kv_type;
    size_t kv_elt_bytes;         /* 2 (F16) or 4 (F32) */
    uint32_t kv_dim_k, kv_dim_v; /* n_head_kv * head_dim_k, n_head_kv * head_dim_v */
    struct kv_cache kv;

    /* the step being built, owned: [n_batch] token, pos, seq, out_idx, KV cell and block
       table of each token; [n_seq] counts */
    int32_t *ub_token, *ub_pos, *ub_seq, *ub_out;
    uint32_t *ub_cell;
    const uint32_t **ub_blocks;
    uint32_t *seq_n, *seq_n_out;

    /* scratch, each [n_batch][width], owned */
    float *x;                    /* residual stream [n_embd] */
    float *xb;                   /* normed input of a block [n_embd] */
    float *q, *k, *v;            /* [n_head*hd_k], [kv_dim_k], [kv_dim_v] */
    float *att;                  /* attention output [n_head*hd_v] */
    float *proj;                 /* output of Wo / Wdown [n_embd] */
    float *ffn_gate, *ffn_up;    /* [n_ff] */
    float *fused;                /* phi3 fused qkv / gate-up output, or NULL */

    /* logits of the last decode: n_logit_rows rows of n_vocab, owned; logit_row[i] is
       the row of batch token i or -1 */
    float *logits;
    size_t logits_cap_rows;
    size_t n_logit_rows;         /* 0 after truncate */
    int32_t *logit_row;          /* [logit_row_cap] */
    size_t logit_row_cap, n_batch_tokens;
    int32_t last_row;            /* the row of the last batch token that has one */

    int32_t eog[4];              /* end-of-generation ids when the model has no vocabulary */
    size_t n_eog;

    /* PENSIEVE_DUMP_DIR at creation, owned, or NULL: every forward step appends its
       intermediate tensors there as f32 rows, <name>-<layer>.f32 (tests/tools/
       compare_tensors.py sets them beside llama.cpp's) */
    char *dump_dir;
};

/*
 * Run one step through the model: each token's K/V is written into its sequence's cell
 * for its position (the cells exist: kv_seq_append was called), and the logits rows
 * ub->out_idx name go to ub->out. false when the device failed (the reason in
 * ctx->be->error); the logits are not valid then.
 */
bool engine_forward(struct pv_context *ctx, const struct engine_ubatch *ub);

/* The seed a sampler draws with (the random one when PV_SEED_RANDOM was asked). */
uint64_t sampler_seed(const struct pv_sampler *s);

#endif /* PV_ENGINE_H */
