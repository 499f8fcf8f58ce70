/*
 * context.c - evaluation contexts (public pv_context_*): KV cache, scratch, logits.
 *
 * A context owns everything one sequence needs beside the model's mapped weights: the
 * KV cache (layout in engine.h), per-batch activation buffers, the logits of the last
 * eval and a worker pool. Its memory is computed up front and checked against what the
 * machine has available, so a context that cannot fit fails with a clear error rather
 * than dying later. Evaluation feeds prompts to engine_forward in steps of n_batch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

#define DEFAULT_N_CTX 4096
#define DEFAULT_N_BATCH 512
#define MAX_N_CTX (1u << 24)

struct pv_context_params pv_context_default_params(void)
{
    struct pv_context_params p = {
        .n_ctx = 0,
        .n_batch = DEFAULT_N_BATCH,
        .n_threads = 0,
        .kv_type = PV_KV_F16,
    };
    return p;
}

/* Per-token scratch widths (floats) of the activation buffers. */
struct scratch_plan {
    size_t x, q, k, v, att, ff, fused;
    size_t per_token; /* sum over all buffers */
};

static bool model_has_fused(const struct pv_model *m)
{
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        if (m->layers[il].wqkv || m->layers[il].ffn_gate_up)
            return true;
    return false;
}

static void plan_scratch(const struct pv_model *m, struct scratch_plan *s)
{
    const struct model_hparams *hp = &m->hp;
    s->x = hp->n_embd;
    s->q = (size_t)hp->n_head * hp->head_dim_k;
    s->k = (size_t)hp->n_head_kv * hp->head_dim_k;
    s->v = (size_t)hp->n_head_kv * hp->head_dim_v;
    s->att = (size_t)hp->n_head * hp->head_dim_v;
    s->ff = hp->n_ff;
    s->fused = 0;
    if (model_has_fused(m))
        s->fused = PV_MAX(s->q + s->k + s->v, 2 * s->ff);
    /* x, xb, proj + q, k, v + att + gate, up + fused */
    s->per_token = 3 * s->x + s->q + s->k + s->v + s->att + 2 * s->ff + s->fused;
}

/* Resolve the defaults of params against the model. */
static struct pv_context_params resolve_params(const struct pv_model *m,
                                               const struct pv_context_params *in)
{
    struct pv_context_params p = in ? *in : pv_context_default_params();
    if (p.n_ctx == 0)
        p.n_ctx = m->hp.n_ctx_train ? PV_MIN(DEFAULT_N_CTX, m->hp.n_ctx_train) : DEFAULT_N_CTX;
    if (p.n_batch == 0)
        p.n_batch = DEFAULT_N_BATCH;
    if (p.n_batch > p.n_ctx)
        p.n_batch = p.n_ctx;
    if (p.n_threads <= 0)
        p.n_threads = cpu_count();
    return p;
}

enum pv_status pv_context_estimate(const struct pv_model *model,
                                   const struct pv_context_params *params,
                                   struct pv_memory_estimate *out, struct pv_err *err)
{
    struct pv_context_params p = resolve_params(model, params);
    const struct model_hparams *hp = &model->hp;
    struct scratch_plan s;
    size_t kv_row, kv, compute, att_scratch, weights, t1, t2;

    memset(out, 0, sizeof(*out));
    if (p.n_ctx > MAX_N_CTX)
        return pv_err_set(err, PV_ERR_INVALID, "context size %u is above the limit of %u",
                          p.n_ctx, MAX_N_CTX);
    weights = model->weight_bytes;
    plan_scratch(model, &s);

    /* kv = n_layer * n_ctx * n_head_kv * (hd_k + hd_v) * element bytes */
    kv_row = (size_t)hp->n_head_kv * ((size_t)hp->head_dim_k + hp->head_dim_v) *
             (p.kv_type == PV_KV_F32 ? 4 : 2);
    /* compute = n_batch rows of scratch + one logits row + per-thread attention scratch */
    if (pv_mul_overflow((size_t)hp->n_layer * p.n_ctx, kv_row, &kv) ||
        pv_mul_overflow(s.per_token * sizeof(float), p.n_batch, &t1) ||
        pv_mul_overflow(engine_attn_scratch_floats(hp, p.n_ctx), (size_t)p.n_threads * sizeof(float),
                        &att_scratch) ||
        pv_add_overflow(t1, att_scratch, &t2) ||
        pv_add_overflow(t2, (size_t)hp->n_vocab * sizeof(float), &compute))
        return pv_err_set(err, PV_ERR_INVALID, "memory size of a %u-token context overflows",
                          p.n_ctx);
    out->weights_bytes = weights;
    out->kv_bytes = kv;
    out->compute_bytes = compute;
    out->total_bytes = (uint64_t)weights + kv + compute;
    out->n_ctx = p.n_ctx;
    return PV_OK;
}

/* MemAvailable of /proc/meminfo in bytes; false when it cannot be read. */
static bool mem_available(uint64_t *out)
{
    char line[256];
    bool found = false;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kib;
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            *out = (uint64_t)kib * 1024;
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

/* The engine reads norms, biases and rope factors as plain f32 arrays. */
static enum pv_status check_f32(const struct pv_tensor *t, struct pv_err *err)
{
    if (t && t->type != PV_TYPE_F32)
        return pv_err_set(err, PV_ERR_UNSUPPORTED, "tensor '%s' has type %u; the engine needs f32",
                          t->name, t->type);
    return PV_OK;
}

static enum pv_status check_model(const struct pv_model *m, struct pv_err *err)
{
    const struct model_hparams *hp = &m->hp;
    enum pv_status st = PV_OK;

    if (hp->n_head == 0 || hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0)
        return pv_err_set(err, PV_ERR_FORMAT, "head counts %u / %u are not a valid grouping",
                          hp->n_head, hp->n_head_kv);
    if (hp->n_rot > hp->head_dim_k || hp->n_rot % 2 != 0)
        return pv_err_set(err, PV_ERR_FORMAT, "rope dimension %u does not fit head size %u",
                          hp->n_rot, hp->head_dim_k);
    if (m->rope_freqs && m->rope_freqs->ne[0] < (int64_t)hp->n_rot / 2)
        return pv_err_set(err, PV_ERR_FORMAT, "rope_freqs has %" PRId64 " entries, needs %u",
                          m->rope_freqs->ne[0], hp->n_rot / 2);
    st = st ? st : check_f32(m->output_norm, err);
    st = st ? st : check_f32(m->rope_freqs, err);
    for (uint32_t il = 0; il < hp->n_layer && st == PV_OK; il++) {
        const struct model_layer *L = &m->layers[il];
        if (L->is_swa && hp->n_swa == 0)
            return pv_err_set(err, PV_ERR_FORMAT, "layer %u is sliding-window but the window is 0",
                              il);
        if ((L->bq || L->bk || L->bv) && !(L->bq && L->bk && L->bv))
            return pv_err_set(err, PV_ERR_FORMAT, "layer %u has only some of the q/k/v biases", il);
        if (!!L->q_norm != !!L->k_norm)
            return pv_err_set(err, PV_ERR_FORMAT, "layer %u has only one of q_norm/k_norm", il);
        st = check_f32(L->attn_norm, err);
        st = st ? st : check_f32(L->ffn_norm, err);
        st = st ? st : check_f32(L->post_attn_norm, err);
        st = st ? st : check_f32(L->post_ffn_norm, err);
        st = st ? st : check_f32(L->q_norm, err);
        st = st ? st : check_f32(L->k_norm, err);
        st = st ? st : check_f32(L->bq, err);
        st = st ? st : check_f32(L->bk, err);
        st = st ? st : check_f32(L->bv, err);
    }
    return st;
}

static void eog_add(struct pv_context *ctx, uint64_t id)
{
    if (id >= ctx->n_vocab || ctx->n_eog == PV_ARRAY_LEN(ctx->eog))
        return;
    ctx->eog[ctx->n_eog++] = (int32_t)id;
}

/* Without a vocabulary (tok/ could not load it), eos/eot/eom from the metadata end. */
static void find_eog(struct pv_context *ctx)
{
    static const char *const keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                        "tokenizer.ggml.eom_token_id"};
    uint64_t id;
    for (size_t k = 0; k < PV_ARRAY_LEN(keys); k++)
        if (gguf_get_u64(ctx->model->gguf, keys[k], &id))
            eog_add(ctx, id);
}

bool pv_context_is_eog(const struct pv_context *ctx, int32_t token)
{
    const struct pv_vocab *vocab = pv_model_vocab(ctx->model);
    if (vocab)
        return pv_token_is_eog(vocab, token);
    for (size_t i = 0; i < ctx->n_eog; i++)
        if (ctx->eog[i] == token)
            return true;
    return false;
}

const char *pv_cpu_kernels(void)
{
    return cpu_features();
}

const char *pv_cpu_kernels_available(void)
{
    return cpu_modes_available();
}

enum pv_status pv_context_new(struct pv_model *model, const struct pv_context_params *params,
                              struct pv_context **out, struct pv_err *err)
{
    struct pv_context_params p;
    struct pv_memory_estimate est;
    struct scratch_plan s;
    struct pv_context *ctx = NULL;
    uint64_t avail;
    enum pv_status st;
    size_t b;

    *out = NULL;
    if (!model)
        return pv_err_set(err, PV_ERR_INVALID, "no model given for the context");
    if (params && params->kv_type != PV_KV_F16 && params->kv_type != PV_KV_F32)
        return pv_err_set(err, PV_ERR_INVALID, "unknown kv cache type %d", (int)params->kv_type);
    if (cpu_kernels_env_error())
        return pv_err_set(err, PV_ERR_INVALID, "%s", cpu_kernels_env_error());
    st = check_model(model, err);
    if (st != PV_OK)
        return st;
    p = resolve_params(model, params);
    st = pv_context_estimate(model, &p, &est, err);
    if (st != PV_OK)
        return st;

    /* the mapped weights are file-backed: only KV and scratch must fit in MemAvailable */
    if (mem_available(&avail) && est.total_bytes > avail + est.weights_bytes) {
        char need[32], have[32], w[32], kv[32], c[32];
        format_bytes(est.total_bytes, need, sizeof(need));
        format_bytes(avail + est.weights_bytes, have, sizeof(have));
        format_bytes(est.weights_bytes, w, sizeof(w));
        format_bytes(est.kv_bytes, kv, sizeof(kv));
        format_bytes(est.compute_bytes, c, sizeof(c));
        return pv_err_set(err, PV_ERR_NOMEM,
                          "not enough memory for a %u-token context: %s required (weights %s + "
                          "kv cache %s + compute %s), %s available",
                          p.n_ctx, need, w, kv, c, have);
    }

    ctx = try_calloc(1, sizeof(*ctx));
    if (!ctx)
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate a context");
    ctx->model = model;
    ctx->n_ctx = p.n_ctx;
    ctx->n_batch = p.n_batch;
    ctx->n_vocab = model->hp.n_vocab;
    ctx->n_threads = p.n_threads;
    ctx->kv_type = p.kv_type;
    ctx->kv_elt_bytes = p.kv_type == PV_KV_F32 ? 4 : 2;
    ctx->kv_dim_k = model->hp.n_head_kv * model->hp.head_dim_k;
    ctx->kv_dim_v = model->hp.n_head_kv * model->hp.head_dim_v;
    ctx->attend = engine_attend_for(p.kv_type, model->hp.head_dim_v);
    {
        const char *dump = getenv("PENSIEVE_DUMP_DIR");
        ctx->dump_dir = dump && *dump ? xstrdup(dump) : NULL;
    }

    /* sizes below were overflow-checked by pv_context_estimate */
    plan_scratch(model, &s);
    b = p.n_batch;
    ctx->k_cache = try_malloc((size_t)model->hp.n_layer * p.n_ctx * ctx->kv_dim_k * ctx->kv_elt_bytes);
    ctx->v_cache = try_malloc((size_t)model->hp.n_layer * p.n_ctx * ctx->kv_dim_v * ctx->kv_elt_bytes);
    ctx->x = try_malloc(b * s.x * sizeof(float));
    ctx->xb = try_malloc(b * s.x * sizeof(float));
    ctx->proj = try_malloc(b * s.x * sizeof(float));
    ctx->q = try_malloc(b * s.q * sizeof(float));
    ctx->k = try_malloc(b * s.k * sizeof(float));
    ctx->v = try_malloc(b * s.v * sizeof(float));
    ctx->att = try_malloc(b * s.att * sizeof(float));
    ctx->ffn_gate = try_malloc(b * s.ff * sizeof(float));
    ctx->ffn_up = try_malloc(b * s.ff * sizeof(float));
    ctx->fused = s.fused ? try_malloc(b * s.fused * sizeof(float)) : NULL;
    ctx->att_scratch = try_malloc(engine_attn_scratch_floats(&model->hp, p.n_ctx) *
                                  (size_t)p.n_threads * sizeof(float));
    ctx->logits = try_malloc((size_t)ctx->n_vocab * sizeof(float));
    ctx->logits_cap_rows = 1;
    if (!ctx->k_cache || !ctx->v_cache || !ctx->x || !ctx->xb || !ctx->proj || !ctx->q ||
        !ctx->k || !ctx->v || !ctx->att || !ctx->ffn_gate || !ctx->ffn_up ||
        (s.fused && !ctx->fused) || !ctx->att_scratch || !ctx->logits) {
        char need[32];
        format_bytes(est.kv_bytes + est.compute_bytes, need, sizeof(need));
        pv_context_free(ctx);
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate %s for a %u-token context", need,
                          p.n_ctx);
    }
    find_eog(ctx);
    ctx->pool = pool_new(p.n_threads);
    *out = ctx;
    return PV_OK;
}

void pv_context_free(struct pv_context *ctx)
{
    if (!ctx)
        return;
    pool_free(ctx->pool);
    free(ctx->k_cache);
    free(ctx->v_cache);
    free(ctx->x);
    free(ctx->xb);
    free(ctx->proj);
    free(ctx->q);
    free(ctx->k);
    free(ctx->v);
    free(ctx->att);
    free(ctx->ffn_gate);
    free(ctx->ffn_up);
    free(ctx->fused);
    free(ctx->att_scratch);
    free(ctx->logits);
    free(ctx->dump_dir);
    free(ctx);
}

enum pv_status pv_context_eval(struct pv_context *ctx, const int32_t *tokens, size_t n,
                               bool all_logits, struct pv_err *err)
{
    size_t rows = all_logits ? n : 1, bytes;

    if (n == 0)
        return pv_err_set(err, PV_ERR_INVALID, "nothing to evaluate: 0 tokens");
    if (n > ctx->n_ctx - ctx->n_past)
        return pv_err_set(err, PV_ERR_CONTEXT,
                          "%zu tokens do not fit: %u of %u context positions are in use", n,
                          ctx->n_past, ctx->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= ctx->n_vocab)
            return pv_err_set(err, PV_ERR_INVALID, "token id %d at index %zu is outside the "
                              "vocabulary of %u", tokens[i], i, ctx->n_vocab);
    if (rows > ctx->logits_cap_rows) {
        float *grown;
        if (pv_mul_overflow(rows, (size_t)ctx->n_vocab * sizeof(float), &bytes) ||
            !(grown = try_realloc(ctx->logits, bytes)))
            return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate logits for %zu positions", rows);
        ctx->logits = grown;
        ctx->logits_cap_rows = rows;
    }

    for (size_t done = 0; done < n;) {
        size_t step = PV_MIN((size_t)ctx->n_batch, n - done);
        bool last = done + step == n;
        float *out = NULL;
        if (all_logits)
            out = ctx->logits + done * ctx->n_vocab;
        else if (last)
            out = ctx->logits;
        engine_forward(ctx, tokens + done, (int)step, out, all_logits);
        ctx->n_past += (uint32_t)step;
        done += step;
    }
    ctx->n_logit_rows = rows;
    ctx->logits_all = all_logits;
    return PV_OK;
}

const float *pv_context_logits(const struct pv_context *ctx, int64_t i)
{
    if (ctx->n_logit_rows == 0)
        return NULL;
    if (i < 0)
        return ctx->logits + (ctx->n_logit_rows - 1) * (size_t)ctx->n_vocab;
    if (!ctx->logits_all || (uint64_t)i >= ctx->n_logit_rows)
        return NULL;
    return ctx->logits + (size_t)i * ctx->n_vocab;
}

uint32_t pv_context_n_past(const struct pv_context *ctx)
{
    return ctx->n_past;
}

uint32_t pv_context_n_ctx(const struct pv_context *ctx)
{
    return ctx->n_ctx;
}

uint32_t pv_context_n_vocab(const struct pv_context *ctx)
{
    return ctx->n_vocab;
}

int pv_context_n_threads(const struct pv_context *ctx)
{
    return ctx->n_threads;
}

enum pv_status pv_context_truncate(struct pv_context *ctx, uint32_t n_keep, struct pv_err *err)
{
    if (n_keep > ctx->n_past)
        return pv_err_set(err, PV_ERR_INVALID, "cannot keep %u positions: only %u are filled",
                          n_keep, ctx->n_past);
    ctx->n_past = n_keep;
    ctx->n_logit_rows = 0;
    return PV_OK;
}
