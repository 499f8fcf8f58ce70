/*
 * context.c - evaluation contexts (public pv_context_*, pv_batch_*): KV cache, scratch,
 * logits, batches of many sequences.
 *
 * A context owns everything its sequences need beside the model's mapped weights: the
 * block KV cache (kv.h), per-step activation buffers, the logits of the last decode and
 * the compute backend (with its worker pool; on a GPU, the weights' device copy). The
 * KV cache and the activation buffers live in the backend's memory. Its memory is computed up front and
 * checked against what the machine has available, so a context that cannot fit fails
 * with a clear error rather than dying later. A batch is checked whole, then fed to
 * engine_forward in steps of n_batch tokens, each ordered as engine_ubatch says.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

#define DEFAULT_N_CTX 4096
#define DEFAULT_N_BATCH 512
#define DEFAULT_KV_BLOCK 32
#define MAX_N_CTX (1u << 24)
#define MAX_N_SEQ 1024

struct pv_context_params pv_context_default_params(void)
{
    struct pv_context_params p = {
        .n_ctx = 0,
        .n_batch = DEFAULT_N_BATCH,
        .n_threads = 0,
        .kv_type = PV_KV_F16,
        .n_seq_max = 1,
        .kv_size = 0,
        .kv_block = 0,
        .device = PV_DEVICE_AUTO,
        .swa_full = true,
    };
    return p;
}

bool pv_device_parse(const char *s, enum pv_device *out)
{
    if (!s)
        return false;
    if (!strcmp(s, "auto"))
        *out = PV_DEVICE_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = PV_DEVICE_CPU;
    else if (!strcmp(s, "cuda"))
        *out = PV_DEVICE_CUDA;
    else
        return false;
    return true;
}

bool pv_cuda_available(void)
{
    return compute_cuda_present();
}

const char *pv_context_device(const struct pv_context *ctx)
{
    return ctx->be->name;
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
    if (p.n_seq_max == 0)
        p.n_seq_max = 1;
    if (p.kv_block == 0)
        p.kv_block = DEFAULT_KV_BLOCK;
    if (p.kv_size == 0)
        p.kv_size = p.n_ctx;
    return p;
}

/* Blocks of the pool: kv_size positions rounded up to whole blocks. */
static uint32_t pool_blocks(const struct pv_context_params *p)
{
    return (uint32_t)(((uint64_t)p->kv_size + p->kv_block - 1) / p->kv_block);
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
    if (p.kv_size > MAX_N_CTX)
        return pv_err_set(err, PV_ERR_INVALID, "kv cache size %u is above the limit of %u",
                          p.kv_size, MAX_N_CTX);
    if (p.n_seq_max > MAX_N_SEQ)
        return pv_err_set(err, PV_ERR_INVALID, "%u sequences are above the limit of %u",
                          p.n_seq_max, MAX_N_SEQ);
    if (p.kv_block > 4096 || (p.kv_block & (p.kv_block - 1)) != 0)
        return pv_err_set(err, PV_ERR_INVALID, "kv block size %u is not a power of two up to 4096",
                          p.kv_block);
    weights = model->weight_bytes;
    plan_scratch(model, &s);

    /* kv = n_layer * n_ctx * n_head_kv * (hd_k + hd_v) * element bytes */
    kv_row = (size_t)hp->n_head_kv * ((size_t)hp->head_dim_k + hp->head_dim_v) *
             (p.kv_type == PV_KV_F32 ? 4 : 2);
    /* compute = n_batch rows of scratch + one logits row + per-thread attention scratch */
    if (pv_mul_overflow((size_t)hp->n_layer * pool_blocks(&p) * p.kv_block, kv_row, &kv) ||
        pv_mul_overflow(s.per_token * sizeof(float), p.n_batch, &t1) ||
        pv_mul_overflow(compute_cpu_scratch_bytes(p.n_threads, p.n_ctx, (int)hp->head_dim_k,
                                                  (int)hp->head_dim_v), 1, &att_scratch) ||
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

/* n floats of scratch in the backend's memory */
static float *scratch_alloc(struct pv_context *ctx, size_t n)
{
    return ctx->be->ops->alloc(ctx->be, n * sizeof(float));
}

static void scratch_free(struct pv_context *ctx, float *p)
{
    if (p)
        ctx->be->ops->free(ctx->be, p);
}

/* Whether the CUDA backend can run m: a GGUF file whose every matrix type has a CUDA
 * kernel (MLX directories and their affine types run on the CPU). */
static bool cuda_runs(const struct pv_model *m, char *why, size_t cap)
{
    if (m->mlx) {
        snprintf(why, cap, "the CUDA backend runs GGUF files; MLX directories run on the CPU "
                           "(--device cpu)");
        return false;
    }
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const struct pv_tensor *t = gguf_tensor(m->gguf, i);
        switch (t->type) {
        case PV_TYPE_F32: case PV_TYPE_F16: case PV_TYPE_BF16: case PV_TYPE_Q4_0:
        case PV_TYPE_Q4_1: case PV_TYPE_Q5_0: case PV_TYPE_Q5_1: case PV_TYPE_Q8_0:
        case PV_TYPE_Q2_K: case PV_TYPE_Q3_K: case PV_TYPE_Q4_K: case PV_TYPE_Q5_K:
        case PV_TYPE_Q6_K:
            break;
        default:
            snprintf(why, cap, "tensor '%s' has type %s, which the CUDA backend has no kernel "
                               "for (--device cpu runs it)", t->name,
                     pv_type_get(t->type) ? pv_type_get(t->type)->name : "?");
            return false;
        }
        if (t->n_dims >= 2 && t->ne[0] % 32 != 0) {
            snprintf(why, cap, "tensor '%s' has rows of %lld elements; the CUDA kernels need a "
                               "multiple of 32 (--device cpu runs it)", t->name,
                     (long long)t->ne[0]);
            return false;
        }
    }
    return true;
}

/* The CUDA backend with the model's weights: the tensors' bytes are one range of the
 * mapping, uploaded whole; other_bytes (KV cache and scratch) must fit beside them. */
static struct compute_backend *new_cuda_backend(const struct pv_model *m,
                                                const struct pv_context_params *p,
                                                const struct scratch_plan *s, uint64_t other_bytes,
                                                struct pv_err *err)
{
    const uint8_t *lo = NULL, *hi = NULL;
    size_t max_k = 0;
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const struct pv_tensor *t = gguf_tensor(m->gguf, i);
        const uint8_t *d = t->data;
        if (!lo || d < lo)
            lo = d;
        if (!hi || d + t->n_bytes > hi)
            hi = d + t->n_bytes;
        max_k = PV_MAX(max_k, (size_t)t->ne[0]);
    }
    const struct compute_cuda_params cp = {
        .weights = lo, .weights_bytes = lo ? (size_t)(hi - lo) : 0,
        .other_bytes = (size_t)other_bytes, .n_ctx = p->n_ctx, .n_batch = p->n_batch,
        .max_k = PV_MAX(max_k, PV_MAX(s->ff, s->att)),
        .hd_k = (int)m->hp.head_dim_k, .hd_v = (int)m->hp.head_dim_v,
        .n_head = (int)m->hp.n_head, .n_head_kv = (int)m->hp.n_head_kv,
    };
    return compute_cuda_new(&cp, err);
}

const char *pv_cpu_kernels_fast(void)
{
    return cpu_fast_tier();
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
    enum pv_device device;
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

    device = p.device;
    if (device != PV_DEVICE_CPU && compute_cuda_present()) {
        char why[256];
        if (!cuda_runs(model, why, sizeof why)) {
            if (device == PV_DEVICE_CUDA)
                return pv_err_set(err, PV_ERR_UNSUPPORTED, "%s", why);
            device = PV_DEVICE_CPU; /* auto: the CPU runs what the GPU cannot */
        }
    }
    if (device == PV_DEVICE_AUTO)
        device = compute_cuda_present() ? PV_DEVICE_CUDA : PV_DEVICE_CPU;
    /* the mapped weights are file-backed: only KV and scratch must fit in MemAvailable
       (on the GPU, compute_cuda_new checks its own memory) */
    if (device == PV_DEVICE_CPU && mem_available_bytes(&avail) &&
        est.total_bytes > avail + est.weights_bytes) {
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
    {
        const char *dump = getenv("PENSIEVE_DUMP_DIR");
        ctx->dump_dir = dump && *dump ? xstrdup(dump) : NULL;
    }

    /* sizes below were overflow-checked by pv_context_estimate */
    plan_scratch(model, &s);
    b = p.n_batch;
    ctx->n_seq = p.n_seq_max;
    if (device == PV_DEVICE_CUDA)
        ctx->be = new_cuda_backend(model, &p, &s, est.kv_bytes + est.compute_bytes, err);
    else if (!(ctx->be = compute_cpu_new(p.n_threads, p.n_ctx, (int)model->hp.head_dim_k,
                                         (int)model->hp.head_dim_v, p.kv_type == PV_KV_F16)))
        pv_err_set(err, PV_ERR_NOMEM, "cannot allocate the compute scratch");
    if (!ctx->be) {
        pv_context_free(ctx);
        return err && err->status ? err->status : PV_ERR_NOMEM;
    }
    ctx->cuda = device == PV_DEVICE_CUDA;
    if (ctx->cuda && ctx->dump_dir) {
        log_warn("PENSIEVE_DUMP_DIR is ignored on the GPU");
        free(ctx->dump_dir);
        ctx->dump_dir = NULL;
    }
    if (kv_init_on(&ctx->kv, ctx->cuda ? ctx->be : NULL, model->hp.n_layer,
                   ctx->kv_dim_k * ctx->kv_elt_bytes, ctx->kv_dim_v * ctx->kv_elt_bytes,
                   pool_blocks(&p), p.kv_block, p.n_seq_max, p.n_ctx, err) != PV_OK) {
        pv_context_free(ctx);
        return PV_ERR_NOMEM;
    }
    if (!p.swa_full && model->hp.n_swa > 0) {
        bool *swa = xcalloc(model->hp.n_layer, sizeof(bool));
        for (uint32_t il = 0; il < model->hp.n_layer; il++)
            swa[il] = model->layers[il].is_swa;
        kv_set_window(&ctx->kv, model->hp.n_swa, swa);
        free(swa);
    }
    ctx->ub_token = try_calloc(b, sizeof(int32_t));
    ctx->ub_pos = try_calloc(b, sizeof(int32_t));
    ctx->ub_seq = try_calloc(b, sizeof(int32_t));
    ctx->ub_out = try_calloc(b, sizeof(int32_t));
    ctx->seq_n = try_calloc(p.n_seq_max, sizeof(uint32_t));
    ctx->seq_n_out = try_calloc(p.n_seq_max, sizeof(uint32_t));
    ctx->x = scratch_alloc(ctx, b * s.x);
    ctx->xb = scratch_alloc(ctx, b * s.x);
    ctx->proj = scratch_alloc(ctx, b * s.x);
    ctx->q = scratch_alloc(ctx, b * s.q);
    ctx->k = scratch_alloc(ctx, b * s.k);
    ctx->v = scratch_alloc(ctx, b * s.v);
    ctx->att = scratch_alloc(ctx, b * s.att);
    ctx->ffn_gate = scratch_alloc(ctx, b * s.ff);
    ctx->ffn_up = scratch_alloc(ctx, b * s.ff);
    ctx->fused = s.fused ? scratch_alloc(ctx, b * s.fused) : NULL;
    ctx->ub_cell = try_calloc(b, sizeof(uint32_t));
    ctx->ub_blocks = try_calloc(b, sizeof(*ctx->ub_blocks));
    ctx->logits = try_malloc((size_t)ctx->n_vocab * sizeof(float));
    ctx->logits_cap_rows = 1;
    if (!ctx->ub_token || !ctx->ub_pos || !ctx->ub_seq || !ctx->ub_out || !ctx->seq_n ||
        !ctx->seq_n_out || !ctx->x || !ctx->xb || !ctx->proj || !ctx->q ||
        !ctx->k || !ctx->v || !ctx->att || !ctx->ffn_gate || !ctx->ffn_up ||
        (s.fused && !ctx->fused) || !ctx->ub_cell || !ctx->ub_blocks || !ctx->logits) {
        char need[32];
        format_bytes(est.kv_bytes + est.compute_bytes, need, sizeof(need));
        pv_context_free(ctx);
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate %s for a %u-token context%s", need,
                          p.n_ctx, device == PV_DEVICE_CUDA ? " in GPU memory" : "");
    }
    find_eog(ctx);
    *out = ctx;
    return PV_OK;
}

void pv_context_free(struct pv_context *ctx)
{
    if (!ctx)
        return;
    free(ctx->ub_cell);
    free(ctx->ub_blocks);
    kv_release(&ctx->kv);
    if (ctx->be) {
        scratch_free(ctx, ctx->x);
        scratch_free(ctx, ctx->xb);
        scratch_free(ctx, ctx->proj);
        scratch_free(ctx, ctx->q);
        scratch_free(ctx, ctx->k);
        scratch_free(ctx, ctx->v);
        scratch_free(ctx, ctx->att);
        scratch_free(ctx, ctx->ffn_gate);
        scratch_free(ctx, ctx->ffn_up);
        scratch_free(ctx, ctx->fused);
        if (ctx->cuda)
            compute_cuda_free(ctx->be);
        else
            compute_cpu_free(ctx->be);
    }
    free(ctx->ub_token);
    free(ctx->ub_pos);
    free(ctx->ub_seq);
    free(ctx->ub_out);
    free(ctx->seq_n);
    free(ctx->seq_n_out);
    free(ctx->logit_row);
    free(ctx->logits);
    free(ctx->dump_dir);
    free(ctx);
}

/* Grow the logits to rows rows and the row map to n batch tokens. */
static enum pv_status logits_reserve(struct pv_context *ctx, size_t rows, size_t n,
                                     struct pv_err *err)
{
    size_t bytes;
    if (rows > ctx->logits_cap_rows) {
        float *grown;
        if (pv_mul_overflow(rows, (size_t)ctx->n_vocab * sizeof(float), &bytes) ||
            !(grown = try_realloc(ctx->logits, bytes)))
            return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate logits for %zu positions", rows);
        ctx->logits = grown;
        ctx->logits_cap_rows = rows;
    }
    if (n > ctx->logit_row_cap) {
        int32_t *grown;
        if (pv_mul_overflow(n, sizeof(int32_t), &bytes) || !(grown = try_realloc(ctx->logit_row, bytes)))
            return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate a batch of %zu tokens", n);
        ctx->logit_row = grown;
        ctx->logit_row_cap = n;
    }
    return PV_OK;
}

/* Check a batch against the cache: ids, sequences, positions that continue each
 * sequence, room in the context and in the block pool. Leaves seq_n[s] = tokens of s. */
static enum pv_status batch_check(struct pv_context *ctx, const struct pv_batch *b, size_t *n_out,
                                  struct pv_err *err)
{
    const struct kv_cache *kv = &ctx->kv;
    uint64_t need = 0;

    if (!b || b->n_tokens <= 0)
        return pv_err_set(err, PV_ERR_INVALID, "nothing to evaluate: 0 tokens");
    memset(ctx->seq_n, 0, ctx->n_seq * sizeof(uint32_t));
    *n_out = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t tok = b->token[i], seq = b->seq_id[i];
        if (tok < 0 || (uint32_t)tok >= ctx->n_vocab)
            return pv_err_set(err, PV_ERR_INVALID, "token id %d at index %d is outside the "
                              "vocabulary of %u", tok, i, ctx->n_vocab);
        if (seq < 0 || (uint32_t)seq >= ctx->n_seq)
            return pv_err_set(err, PV_ERR_INVALID, "sequence id %d at index %d is outside 0..%u",
                              seq, i, ctx->n_seq - 1);
        uint64_t want = (uint64_t)kv->seqs[seq].n_pos + ctx->seq_n[seq];
        if (b->pos[i] < 0 || (uint64_t)b->pos[i] != want)
            return pv_err_set(err, PV_ERR_INVALID, "token %d of sequence %d is at position %d; "
                              "the sequence continues at %llu", i, seq, b->pos[i],
                              (unsigned long long)want);
        if (want >= ctx->n_ctx)
            return pv_err_set(err, PV_ERR_CONTEXT, "sequence %d does not fit: position %llu is "
                              "past the context of %u", seq, (unsigned long long)want, ctx->n_ctx);
        ctx->seq_n[seq]++;
        *n_out += b->logits[i] != 0;
    }
    need = kv_batch_blocks_needed(kv, ctx->seq_n);
    if (need > kv->n_free)
        return pv_err_set(err, PV_ERR_CONTEXT, "kv cache is full: the batch needs %llu blocks of "
                          "%u positions, %u are free", (unsigned long long)need, kv->block_size,
                          kv->n_free);
    return PV_OK;
}

/* Tokens [i0, i1) of b as one step, ordered for engine_forward; its rows of logits
 * start at row. Returns the rows it took; false in *ok when the device failed. */
static size_t run_step(struct pv_context *ctx, const struct pv_batch *b, int32_t i0, int32_t i1,
                       size_t row, bool *ok)
{
    struct engine_ubatch ub = {.token = ctx->ub_token, .pos = ctx->ub_pos, .seq = ctx->ub_seq,
                               .cell = ctx->ub_cell, .blocks = ctx->ub_blocks,
                               .out_idx = ctx->ub_out};
    int n = 0;

    memset(ctx->seq_n, 0, ctx->n_seq * sizeof(uint32_t));
    memset(ctx->seq_n_out, 0, ctx->n_seq * sizeof(uint32_t));
    for (int32_t i = i0; i < i1; i++) {
        ctx->seq_n[b->seq_id[i]]++;
        ctx->seq_n_out[b->seq_id[i]] += b->logits[i] != 0;
    }
    /* tokens of sequences with one token in the step first, then the others */
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t i = i0; i < i1; i++) {
            if ((ctx->seq_n[b->seq_id[i]] == 1) != (pass == 0))
                continue;
            ctx->ub_token[n] = b->token[i];
            ctx->ub_pos[n] = b->pos[i];
            ctx->ub_seq[n] = b->seq_id[i];
            ctx->ub_cell[n] = kv_cell(&ctx->kv, (uint32_t)b->seq_id[i], (uint32_t)b->pos[i]);
            ctx->ub_blocks[n] = ctx->kv.seqs[b->seq_id[i]].blocks;
            n++;
        }
        if (pass == 0)
            ub.n_one = n;
    }
    ub.n = n;
    /* logits rows: those of sequences with one row in the step first; a token's place
       in the step follows the order above */
    ub.n_out = 0;
    for (int pass = 0; pass < 2; pass++) {
        int one = 0, multi = ub.n_one;
        for (int32_t i = i0; i < i1; i++) {
            int32_t s = b->seq_id[i];
            int place = ctx->seq_n[s] == 1 ? one++ : multi++;
            if (!b->logits[i] || (ctx->seq_n_out[s] == 1) != (pass == 0))
                continue;
            ctx->ub_out[ub.n_out] = place;
            ctx->logit_row[i] = (int32_t)(row + (size_t)ub.n_out);
            ub.n_out++;
        }
        if (pass == 0)
            ub.n_out_one = ub.n_out;
    }
    ub.out = ctx->logits + row * ctx->n_vocab;
    *ok = engine_forward(ctx, &ub);
    return (size_t)ub.n_out;
}

enum pv_status pv_context_decode(struct pv_context *ctx, const struct pv_batch *batch,
                                 struct pv_err *err)
{
    size_t n_out = 0, row = 0;
    enum pv_status st = batch_check(ctx, batch, &n_out, err);
    if (st == PV_OK)
        st = logits_reserve(ctx, n_out, (size_t)batch->n_tokens, err);
    if (st != PV_OK)
        return st;
    for (uint32_t s = 0; s < ctx->n_seq; s++)
        if (ctx->seq_n[s] && !kv_seq_append(&ctx->kv, s, ctx->seq_n[s]))
            PV_BUG("kv blocks checked free are missing");
    ctx->n_batch_tokens = (size_t)batch->n_tokens;
    ctx->last_row = -1;
    for (int32_t i = 0; i < batch->n_tokens; i++)
        ctx->logit_row[i] = -1;
    for (int32_t i0 = 0; i0 < batch->n_tokens; i0 += (int32_t)ctx->n_batch) {
        int32_t i1 = (int32_t)PV_MIN((int64_t)i0 + ctx->n_batch, (int64_t)batch->n_tokens);
        bool ok;
        row += run_step(ctx, batch, i0, i1, row, &ok);
        if (!ok) {
            ctx->n_logit_rows = 0;
            return pv_err_set(err, PV_ERR_DEVICE, "%s", ctx->be->error);
        }
    }
    for (int32_t i = 0; i < batch->n_tokens; i++)
        if (ctx->logit_row[i] >= 0)
            ctx->last_row = ctx->logit_row[i];
    ctx->n_logit_rows = row;
    /* the blocks this batch filled join the prefix cache */
    for (int32_t i = 0; i < batch->n_tokens; i++)
        kv_seq_set_token(&ctx->kv, (uint32_t)batch->seq_id[i], (uint32_t)batch->pos[i],
                         batch->token[i]);
    for (int32_t i = 0; i < batch->n_tokens; i++) {
        struct kv_seq *sq = &ctx->kv.seqs[batch->seq_id[i]];
        uint32_t b = sq->n_hashed;
        kv_seq_publish(&ctx->kv, (uint32_t)batch->seq_id[i]);
        for (; ctx->disk && b < sq->n_hashed; b++)
            dcache_put(ctx->disk, &ctx->kv, sq->blocks[b]); /* copied now, whole */
        kv_seq_release_window(&ctx->kv, (uint32_t)batch->seq_id[i]);
    }
    return PV_OK;
}

enum pv_status pv_context_eval(struct pv_context *ctx, const int32_t *tokens, size_t n,
                               bool all_logits, struct pv_err *err)
{
    const uint32_t n_past = ctx->kv.seqs[0].n_pos;
    struct pv_batch b;
    enum pv_status st;

    if (n == 0)
        return pv_err_set(err, PV_ERR_INVALID, "nothing to evaluate: 0 tokens");
    if (n > ctx->n_ctx - n_past)
        return pv_err_set(err, PV_ERR_CONTEXT,
                          "%zu tokens do not fit: %u of %u context positions are in use", n,
                          n_past, ctx->n_ctx);
    st = pv_batch_init(&b, n, err);
    if (st != PV_OK)
        return st;
    for (size_t i = 0; i < n; i++)
        pv_batch_add(&b, tokens[i], (int32_t)(n_past + i), 0, all_logits || i + 1 == n);
    st = pv_context_decode(ctx, &b, err);
    pv_batch_release(&b);
    return st;
}

const float *pv_context_logits(const struct pv_context *ctx, int64_t i)
{
    int32_t row;
    if (ctx->n_logit_rows == 0)
        return NULL;
    if (i < 0)
        row = ctx->last_row;
    else if ((uint64_t)i >= ctx->n_batch_tokens)
        return NULL;
    else
        row = ctx->logit_row[i];
    return row < 0 ? NULL : ctx->logits + (size_t)row * ctx->n_vocab;
}

uint32_t pv_context_n_past(const struct pv_context *ctx)
{
    return ctx->kv.seqs[0].n_pos;
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
    return pv_context_seq_truncate(ctx, 0, n_keep, err);
}

uint32_t pv_context_n_seq(const struct pv_context *ctx)
{
    return ctx->n_seq;
}

uint32_t pv_context_seq_len(const struct pv_context *ctx, int32_t seq)
{
    return seq >= 0 && (uint32_t)seq < ctx->n_seq ? ctx->kv.seqs[seq].n_pos : 0;
}

enum pv_status pv_context_seq_truncate(struct pv_context *ctx, int32_t seq, uint32_t n_keep,
                                       struct pv_err *err)
{
    if (seq < 0 || (uint32_t)seq >= ctx->n_seq)
        return pv_err_set(err, PV_ERR_INVALID, "sequence id %d is outside 0..%u", seq,
                          ctx->n_seq - 1);
    if (n_keep > ctx->kv.seqs[seq].n_pos)
        return pv_err_set(err, PV_ERR_INVALID, "cannot keep %u positions: only %u are filled",
                          n_keep, ctx->kv.seqs[seq].n_pos);
    if (kv_seq_reusable(&ctx->kv, (uint32_t)seq, n_keep) != n_keep)
        return pv_err_set(err, PV_ERR_INVALID, "cannot keep %u positions: the sliding-window "
                          "layers gave back the positions before them (swa_full keeps them)",
                          n_keep);
    kv_seq_truncate(&ctx->kv, (uint32_t)seq, n_keep);
    ctx->n_logit_rows = 0;
    return PV_OK;
}

enum pv_status pv_context_seq_fork(struct pv_context *ctx, int32_t src, int32_t dst,
                                   struct pv_err *err)
{
    if (src < 0 || (uint32_t)src >= ctx->n_seq || dst < 0 || (uint32_t)dst >= ctx->n_seq)
        return pv_err_set(err, PV_ERR_INVALID, "sequence ids %d, %d are not both in 0..%u", src,
                          dst, ctx->n_seq - 1);
    kv_seq_fork(&ctx->kv, (uint32_t)src, (uint32_t)dst);
    ctx->n_logit_rows = 0;
    return PV_OK;
}

void pv_context_seq_drop(struct pv_context *ctx, int32_t seq)
{
    if (seq < 0 || (uint32_t)seq >= ctx->n_seq)
        return;
    kv_seq_drop(&ctx->kv, (uint32_t)seq);
    ctx->n_logit_rows = 0;
}

void pv_context_kv_usage(const struct pv_context *ctx, struct pv_kv_usage *out)
{
    out->block_size = ctx->kv.block_size;
    out->n_blocks = ctx->kv.n_blocks;
    out->n_blocks_used = kv_blocks_used(&ctx->kv);
}

/* ---- batches ---- */

enum pv_status pv_batch_init(struct pv_batch *b, size_t cap, struct pv_err *err)
{
    memset(b, 0, sizeof(*b));
    if (cap == 0 || cap > INT32_MAX)
        return pv_err_set(err, PV_ERR_INVALID, "a batch of %zu tokens", cap);
    b->token = try_calloc(cap, sizeof(int32_t));
    b->pos = try_calloc(cap, sizeof(int32_t));
    b->seq_id = try_calloc(cap, sizeof(int32_t));
    b->logits = try_calloc(cap, sizeof(int8_t));
    if (!b->token || !b->pos || !b->seq_id || !b->logits) {
        pv_batch_release(b);
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate a batch of %zu tokens", cap);
    }
    b->cap = (int32_t)cap;
    return PV_OK;
}

void pv_batch_release(struct pv_batch *b)
{
    free(b->token);
    free(b->pos);
    free(b->seq_id);
    free(b->logits);
    memset(b, 0, sizeof(*b));
}

bool pv_batch_add(struct pv_batch *b, int32_t token, int32_t pos, int32_t seq_id, bool logits)
{
    if (b->n_tokens >= b->cap)
        return false;
    b->token[b->n_tokens] = token;
    b->pos[b->n_tokens] = pos;
    b->seq_id[b->n_tokens] = seq_id;
    b->logits[b->n_tokens] = logits;
    b->n_tokens++;
    return true;
}

void pv_batch_clear(struct pv_batch *b)
{
    b->n_tokens = 0;
}
