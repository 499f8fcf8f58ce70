/*
 * forward.c - the transformer forward pass shared by gemma3, llama, qwen2, qwen3, phi3.
 *
 * One recipe with per-architecture steps, each taken when the model has the tensor or
 * flag for it (model.c binds exactly what each architecture has): fused or separate
 * QKV, q/k/v biases (qwen2), per-head QK-norm (gemma3, qwen3), NORM or NEOX RoPE with
 * optional frequency factors (llama3), sliding-window layers and post-norms (gemma3),
 * GELU-tanh or SiLU gated FFN, fused gate-up (phi3). A step holds tokens of one or more
 * sequences, each at its own position: every matmul sees all of them at once, and
 * attention reads each token's sequence through its block table. Nothing is allocated
 * here; every buffer is the backend's (device memory on a GPU), so the recipe touches
 * data only through the ops.
 *
 * With a dump directory (PENSIEVE_DUMP_DIR) each step appends its intermediate tensors
 * under the names llama.cpp's graph gives them, for tests/tools/compare_tensors.py.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"

/* Append n rows (stride apart) of width dim to <dump_dir>/<name>-<il>.f32. */
static void dump(const struct pv_context *ctx, const char *name, int il, const float *x,
                 size_t stride, int n, int dim)
{
    if (!ctx->dump_dir)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%d.f32", ctx->dump_dir, name, il);
    FILE *f = fopen(path, "ab");
    if (!f) {
        log_warn("cannot write %s: %s", path, strerror(errno));
        return;
    }
    for (int t = 0; t < n; t++)
        fwrite(x + (size_t)t * stride, sizeof(float), (size_t)dim, f);
    fclose(f);
}

static const float *f32(const struct pv_tensor *t)
{
    return t ? (const float *)t->data : NULL;
}

/* y[t] = rmsnorm(x[t]) * w for each of n rows of width dim */
static void rmsnorm_rows(struct compute_backend *be, const float *x, const struct pv_tensor *w,
                         float *y, int n, int dim, float eps)
{
    be->ops->rmsnorm(be, x, f32(w), y, n, 1, (size_t)dim, 0, dim, eps);
}

/* rmsnorm over each head_dim slice of n rows of n_heads heads (rows stride apart) */
static void rmsnorm_heads(struct compute_backend *be, float *x, size_t stride,
                          const struct pv_tensor *w, int n, int n_heads, int head_dim, float eps)
{
    be->ops->rmsnorm(be, x, f32(w), x, n, n_heads, stride, (size_t)head_dim, head_dim, eps);
}

bool engine_forward(struct pv_context *ctx, const struct engine_ubatch *ub)
{
    const int n = ub->n, n_one = ub->n_one;
    const int32_t *tokens = ub->token;
    const struct pv_model *m = ctx->model;
    const struct model_hparams *hp = &m->hp;
    const int n_embd = (int)hp->n_embd, n_ff = (int)hp->n_ff;
    const int n_head = (int)hp->n_head, n_head_kv = (int)hp->n_head_kv;
    const int hd_k = (int)hp->head_dim_k;
    const int q_dim = n_head * hd_k;
    const float eps = hp->rms_eps;
    const float *rope_ff = f32(m->rope_freqs);
    struct compute_backend *be = ctx->be;
    const struct compute_ops *op = be->ops;
    const struct kv_cache *kv = &ctx->kv;
    const bool f16 = ctx->kv_type == PV_KV_F16;

    if (op->step_begin) {
        const struct compute_step st = {.n = n, .token = tokens, .pos = ub->pos,
                                        .cell = ub->cell, .blocks = ub->blocks,
                                        .block_shift = kv->block_shift};
        op->step_begin(be, &st);
    }

    /* 1. token embeddings: x[t] = token_embd[tok] * embd_scale */
    op->get_rows(be, m->tok_embd, tokens, n, hp->embd_scale, ctx->x);

    dump(ctx, "inp_scaled", -1, ctx->x, n_embd, n, n_embd);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct model_layer *L = &m->layers[il];
        float *q, *k, *v;
        size_t q_stride, k_stride, v_stride;

        /* 2. attention input norm */
        rmsnorm_rows(be, ctx->x, L->attn_norm, ctx->xb, n, n_embd, eps);
        dump(ctx, "attn_norm", (int)il, ctx->xb, n_embd, n, n_embd);

        /* 3. q, k, v projections (fused for phi3: one matmul, rows [q | k | v]) */
        if (L->wqkv) {
            op->matmul(be, L->wqkv, ctx->xb, ctx->fused, n, n_one);
            q = ctx->fused;
            k = q + q_dim;
            v = k + ctx->kv_dim_k;
            q_stride = k_stride = v_stride = (size_t)q_dim + ctx->kv_dim_k + ctx->kv_dim_v;
        } else {
            op->matmul(be, L->wq, ctx->xb, ctx->q, n, n_one);
            op->matmul(be, L->wk, ctx->xb, ctx->k, n, n_one);
            op->matmul(be, L->wv, ctx->xb, ctx->v, n, n_one);
            q = ctx->q, k = ctx->k, v = ctx->v;
            q_stride = (size_t)q_dim, k_stride = ctx->kv_dim_k, v_stride = ctx->kv_dim_v;
        }
        dump(ctx, "Qcur", (int)il, q, q_stride, n, q_dim);
        dump(ctx, "Kcur", (int)il, k, k_stride, n, (int)ctx->kv_dim_k);
        dump(ctx, "Vcur", (int)il, v, v_stride, n, (int)ctx->kv_dim_v);
        if (L->bq) {
            op->add_bias(be, q, q_stride, f32(L->bq), n, q_dim);
            op->add_bias(be, k, k_stride, f32(L->bk), n, (int)ctx->kv_dim_k);
            op->add_bias(be, v, v_stride, f32(L->bv), n, (int)ctx->kv_dim_v);
        }

        /* 4. per-head QK-norm, then RoPE at each token's position */
        if (L->q_norm) {
            rmsnorm_heads(be, q, q_stride, L->q_norm, n, n_head, hd_k, eps);
            rmsnorm_heads(be, k, k_stride, L->k_norm, n, n_head_kv, hd_k, eps);
        }
        dump(ctx, "Qcur_normed", (int)il, q, q_stride, n, q_dim);
        dump(ctx, "Kcur_normed", (int)il, k, k_stride, n, (int)ctx->kv_dim_k);
        op->rope(be, q, q_stride, n, ub->pos, n_head, hd_k, (int)hp->n_rot, L->rope_base,
                 L->rope_freq_scale, rope_ff, hp->rope_neox);
        op->rope(be, k, k_stride, n, ub->pos, n_head_kv, hd_k, (int)hp->n_rot, L->rope_base,
                 L->rope_freq_scale, rope_ff, hp->rope_neox);

        dump(ctx, "Qcur_rope", (int)il, q, q_stride, n, q_dim);
        dump(ctx, "Kcur_rope", (int)il, k, k_stride, n, (int)ctx->kv_dim_k);

        /* 5. store k, v in the cache; each token attends over its sequence up to itself */
        op->kv_store(be, k, k_stride, n, (int)ctx->kv_dim_k, kv_k_row(kv, il, 0), kv->row_k_bytes,
                     ub->cell, f16);
        op->kv_store(be, v, v_stride, n, (int)ctx->kv_dim_v, kv_v_row(kv, il, 0), kv->row_v_bytes,
                     ub->cell, f16);
        {
            const struct compute_attn at = {
                .q = q, .q_stride = q_stride, .out = ctx->att, .n = n, .n_one = n_one,
                .pos = ub->pos, .blocks = ub->blocks, .block_shift = kv->block_shift,
                .k = kv_k_row(kv, il, 0), .v = kv_v_row(kv, il, 0),
                .k_row_bytes = kv->row_k_bytes, .v_row_bytes = kv->row_v_bytes, .f16 = f16,
                .n_head = n_head, .n_head_kv = n_head_kv, .hd_k = hd_k, .hd_v = (int)hp->head_dim_v,
                .n_swa = L->is_swa ? hp->n_swa : 0,
                .q_scale = hp->attn_scale_q ? hp->attn_scale : 1.0f,
                .scale = hp->attn_scale_q ? 1.0f : hp->attn_scale,
            };
            op->attention(be, &at);
        }

        /* 6. output projection, optional post-norm (gemma3), residual */
        dump(ctx, "kqv_out", (int)il, ctx->att, q_dim, n, q_dim);
        op->matmul(be, L->wo, ctx->att, ctx->proj, n, n_one);
        dump(ctx, "attn_out", (int)il, ctx->proj, n_embd, n, n_embd);
        if (L->post_attn_norm)
            rmsnorm_rows(be, ctx->proj, L->post_attn_norm, ctx->proj, n, n_embd, eps);
        op->add(be, ctx->x, ctx->proj, (size_t)n * n_embd);
        dump(ctx, "sa_out", (int)il, ctx->x, n_embd, n, n_embd);

        /* 7. gated FFN: down(act(gate . h) * (up . h)) */
        rmsnorm_rows(be, ctx->x, L->ffn_norm, ctx->xb, n, n_embd, eps);
        dump(ctx, "ffn_norm", (int)il, ctx->xb, n_embd, n, n_embd);
        if (L->ffn_gate_up) {
            /* fused rows [gate | up]; activate in place, then pack rows to [n][n_ff] */
            op->matmul(be, L->ffn_gate_up, ctx->xb, ctx->fused, n, n_one);
            for (int t = 0; t < n; t++) {
                float *gate = ctx->fused + (size_t)t * 2 * n_ff;
                op->glu(be, gate, gate + n_ff, (size_t)n_ff, hp->ffn_gelu);
                op->copy(be, ctx->ffn_gate + (size_t)t * n_ff, gate, (size_t)n_ff * sizeof(float));
            }
        } else {
            op->matmul(be, L->ffn_gate, ctx->xb, ctx->ffn_gate, n, n_one);
            op->matmul(be, L->ffn_up, ctx->xb, ctx->ffn_up, n, n_one);
            dump(ctx, "ffn_gate", (int)il, ctx->ffn_gate, n_ff, n, n_ff);
            dump(ctx, "ffn_up", (int)il, ctx->ffn_up, n_ff, n, n_ff);
            op->glu(be, ctx->ffn_gate, ctx->ffn_up, (size_t)n * n_ff, hp->ffn_gelu);
        }
        dump(ctx, "ffn_act", (int)il, ctx->ffn_gate, n_ff, n, n_ff);
        op->matmul(be, L->ffn_down, ctx->ffn_gate, ctx->proj, n, n_one);
        dump(ctx, "ffn_out", (int)il, ctx->proj, n_embd, n, n_embd);
        if (L->post_ffn_norm)
            rmsnorm_rows(be, ctx->proj, L->post_ffn_norm, ctx->proj, n, n_embd, eps);
        op->add(be, ctx->x, ctx->proj, (size_t)n * n_embd);
        dump(ctx, "l_out", (int)il, ctx->x, n_embd, n, n_embd);
    }

    /* 8. final norm and LM head for the rows whose logits are wanted */
    if (ub->n_out > 0) {
        for (int r = 0; r < ub->n_out; r++)
            rmsnorm_rows(be, ctx->x + (size_t)ub->out_idx[r] * n_embd, m->output_norm,
                         ctx->xb + (size_t)r * n_embd, 1, n_embd, eps);
        op->matmul(be, m->output, ctx->xb, ub->out, ub->n_out, ub->n_out_one);
    }
    return op->step_end ? op->step_end(be) : true;
}
