/*
 * model.c - loading a model: architecture, hyper-parameters, tensor binding (model.h).
 *
 * pv_model_load opens the GGUF file, picks the architecture from general.architecture,
 * reads its hyper-parameters with llama.cpp's defaults (reference/engine.md 1.3), then
 * binds every tensor the architecture needs by exact name and exact shape. Like
 * llama.cpp, a file with tensors the recipe would not use is refused, so no weight is
 * silently ignored. Also the public accessors of the "Models" section of pensieve.h and
 * pv_model_probe, the cheap metadata summary `pensieve models` lists.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "model/mlx.h"
#include "model/model.h"
#include "tok/tok.h"
#include "util/util.h"

#define MODEL_MAX_LAYERS 512
#define MODEL_MAX_DIM (1u << 24) /* cap on any one hyper-parameter, so products fit int64 */
#define MODEL_MAX_HEADS 4096

static const char *const arch_names[ARCH_COUNT] = {
    [ARCH_GEMMA3] = "gemma3", [ARCH_LLAMA] = "llama", [ARCH_QWEN2] = "qwen2",
    [ARCH_QWEN3] = "qwen3",   [ARCH_PHI3] = "phi3",
};

#define SUPPORTED_ARCHS "gemma3, llama, qwen2, qwen3, phi3"

const char *model_arch_name(enum model_arch arch)
{
    return (unsigned)arch < ARCH_COUNT ? arch_names[arch] : "unknown";
}

/* State of one load: the file, the model being filled and which tensors were bound. */
struct loader {
    struct pv_model *m;
    const struct gguf_file *f;
    const struct mlx_dir *mlx; /* tensors of an MLX directory, else the GGUF file's */
    const char *path;
    const char *arch;
    bool *used;       /* [n_tensors]: bound by the recipe */
    struct pv_err *err;
};

/* ---- hyper-parameters ------------------------------------------------------------- */

/*
 * Read the unsigned integer "{arch}.{suffix}" into *out. A per-layer array is accepted
 * when all its n_layer values are equal. Absent: *out = def when !required, else error.
 */
static enum pv_status hp_u32(struct loader *L, const char *suffix, bool required, uint32_t def,
                             uint32_t *out)
{
    char key[128];
    enum gguf_vtype et;
    uint64_t n;
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    int64_t ki = gguf_find_key(L->f, key);
    if (ki < 0) {
        if (required)
            return pv_err_set(L->err, PV_ERR_FORMAT, "%s: metadata key '%s' is missing", L->path,
                              key);
        *out = def;
        return PV_OK;
    }
    if (gguf_get_u32(L->f, key, out))
        return PV_OK;
    if (gguf_get_arr_info(L->f, key, &et, &n) && et != GGUF_STRING && n > 0) {
        double first = 0, v;
        for (uint64_t i = 0; i < n; i++) {
            if (!gguf_get_arr_num(L->f, key, i, &v) || v < 0 || v > UINT32_MAX || v != floor(v))
                return pv_err_set(L->err, PV_ERR_FORMAT,
                                  "%s: metadata key '%s' element %llu is not an unsigned integer",
                                  L->path, key, (unsigned long long)i);
            if (i == 0)
                first = v;
            else if (v != first)
                return pv_err_set(L->err, PV_ERR_UNSUPPORTED,
                                  "%s: metadata key '%s' differs between layers, which pensieve does not support",
                                  L->path, key);
        }
        *out = (uint32_t)first;
        return PV_OK;
    }
    return pv_err_set(L->err, PV_ERR_FORMAT,
                      "%s: metadata key '%s' has type %s, expected an unsigned 32-bit integer",
                      L->path, key, gguf_vtype_name(gguf_kv_type(L->f, ki)));
}

static enum pv_status hp_f32(struct loader *L, const char *suffix, bool required, float def,
                             float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    int64_t ki = gguf_find_key(L->f, key);
    if (ki < 0) {
        if (required)
            return pv_err_set(L->err, PV_ERR_FORMAT, "%s: metadata key '%s' is missing", L->path,
                              key);
        *out = def;
        return PV_OK;
    }
    if (!gguf_get_f32(L->f, key, out))
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: metadata key '%s' has type %s, expected f32",
                          L->path, key, gguf_vtype_name(gguf_kv_type(L->f, ki)));
    if (!isfinite(*out))
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: metadata key '%s' is not finite", L->path,
                          key);
    return PV_OK;
}

static enum pv_status check_range(struct loader *L, const char *what, uint32_t v, uint32_t lo,
                                  uint32_t hi)
{
    if (v < lo || v > hi)
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: %s.%s is %u (expected %u..%u)", L->path,
                          L->arch, what, v, lo, hi);
    return PV_OK;
}

#define TRY(expr)                                                                          \
    do {                                                                                   \
        enum pv_status st_ = (expr);                                                       \
        if (st_ != PV_OK)                                                                  \
            return st_;                                                                    \
    } while (0)

static enum pv_status read_hparams(struct loader *L)
{
    struct pv_model *m = L->m;
    struct model_hparams *hp = &m->hp;
    struct gguf_str s;
    char key[128];

    TRY(hp_u32(L, "context_length", true, 0, &hp->n_ctx_train));
    TRY(hp_u32(L, "embedding_length", true, 0, &hp->n_embd));
    TRY(hp_u32(L, "block_count", true, 0, &hp->n_layer));
    TRY(hp_u32(L, "feed_forward_length", true, 0, &hp->n_ff));
    TRY(hp_u32(L, "attention.head_count", true, 0, &hp->n_head));
    TRY(check_range(L, "context_length", hp->n_ctx_train, 1, UINT32_MAX));
    TRY(check_range(L, "embedding_length", hp->n_embd, 1, MODEL_MAX_DIM));
    TRY(check_range(L, "block_count", hp->n_layer, 1, MODEL_MAX_LAYERS));
    TRY(check_range(L, "feed_forward_length", hp->n_ff, 1, MODEL_MAX_DIM));
    TRY(check_range(L, "attention.head_count", hp->n_head, 1, MODEL_MAX_HEADS));
    TRY(hp_u32(L, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv));
    TRY(check_range(L, "attention.head_count_kv", hp->n_head_kv, 1, hp->n_head));
    if (hp->n_head % hp->n_head_kv != 0)
        return pv_err_set(L->err, PV_ERR_FORMAT,
                          "%s: head_count %u is not a multiple of head_count_kv %u", L->path,
                          hp->n_head, hp->n_head_kv);
    uint32_t hd_def = hp->n_embd / hp->n_head;
    TRY(hp_u32(L, "attention.key_length", false, hd_def, &hp->head_dim_k));
    TRY(hp_u32(L, "attention.value_length", false, hd_def, &hp->head_dim_v));
    TRY(check_range(L, "attention.key_length", hp->head_dim_k, 1, MODEL_MAX_DIM));
    TRY(check_range(L, "attention.value_length", hp->head_dim_v, 1, MODEL_MAX_DIM));
    TRY(hp_u32(L, "rope.dimension_count", false, hp->head_dim_k, &hp->n_rot));
    if (hp->n_rot == 0 || hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim_k)
        return pv_err_set(L->err, PV_ERR_FORMAT,
                          "%s: rope dimension count %u must be even and in 2..%u (the key head size)",
                          L->path, hp->n_rot, hp->head_dim_k);
    TRY(hp_f32(L, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps));
    if (!(hp->rms_eps >= 0))
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: rms epsilon %g is negative", L->path,
                          (double)hp->rms_eps);
    TRY(hp_f32(L, "rope.freq_base", false, 10000.0f, &hp->rope_base));
    if (!(hp->rope_base > 0))
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: rope.freq_base %g is not positive",
                          L->path, (double)hp->rope_base);
    hp->rope_base_swa = hp->rope_base;

    /* RoPE scaling: linear (a frequency scale) only; YaRN and LongRoPE change the math. */
    snprintf(key, sizeof key, "%s.rope.scaling.type", L->arch);
    if (gguf_get_str(L->f, key, &s) && !(s.n == 4 && memcmp(s.p, "none", 4) == 0) &&
        !(s.n == 6 && memcmp(s.p, "linear", 6) == 0))
        return pv_err_set(L->err, PV_ERR_UNSUPPORTED,
                          "%s: rope scaling '%.*s' is not supported (only none and linear)",
                          L->path, (int)PV_MIN(s.n, 32), s.p);
    float factor = 0;
    TRY(hp_f32(L, "rope.scaling.factor", false, 0, &factor));
    if (factor == 0)
        TRY(hp_f32(L, "rope.scale_linear", false, 0, &factor));
    if (factor < 0)
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: rope scaling factor %g is negative",
                          L->path, (double)factor);
    hp->rope_freq_scale = factor == 0 ? 1.0f : 1.0f / factor;

    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    hp->embd_scale = 1.0f;
    hp->attn_scale_q = false;
    hp->rope_neox = true;
    hp->ffn_gelu = false;
    hp->n_swa = 0;

    switch (m->arch) {
    case ARCH_GEMMA3:
        TRY(hp_u32(L, "attention.sliding_window", true, 0, &hp->n_swa));
        TRY(check_range(L, "attention.sliding_window", hp->n_swa, 1, UINT32_MAX));
        hp->rope_base_swa = 10000.0f;
        hp->embd_scale = sqrtf((float)hp->n_embd);
        hp->ffn_gelu = true;
        hp->attn_scale_q = true;
        /* Gemma 3 27B (62 layers) scales by its query_pre_attn_scalar = n_embd / n_head. */
        if (hp->n_layer == 62)
            hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
        if (hp->n_rot != hp->head_dim_k)
            return pv_err_set(L->err, PV_ERR_FORMAT,
                              "%s: gemma3 needs rope dimension count %u = key head size %u",
                              L->path, hp->n_rot, hp->head_dim_k);
        break;
    case ARCH_LLAMA: {
        float scale = 0;
        TRY(hp_f32(L, "attention.scale", false, 0, &scale));
        if (scale != 0)
            hp->attn_scale = scale;
        hp->rope_neox = false;
        break;
    }
    case ARCH_QWEN2:
    case ARCH_QWEN3:
        if (hp->n_rot != hp->head_dim_k)
            return pv_err_set(L->err, PV_ERR_FORMAT,
                              "%s: %s needs rope dimension count %u = key head size %u", L->path,
                              L->arch, hp->n_rot, hp->head_dim_k);
        break;
    case ARCH_PHI3:
        /* llama.cpp keeps Phi-3's sliding window disabled (full attention); so do we. */
        if (hp->head_dim_k != hd_def || hp->head_dim_v != hd_def || hd_def * hp->n_head != hp->n_embd)
            return pv_err_set(L->err, PV_ERR_FORMAT,
                              "%s: phi3 needs head size n_embd / n_head (%u / %u)", L->path,
                              hp->n_embd, hp->n_head);
        hp->attn_scale_q = true; /* llama.cpp's phi3 graph scales q, not q.k */
        break;
    case ARCH_COUNT:
        PV_BUG("no architecture");
    }
    return PV_OK;
}

/* ---- tensor binding --------------------------------------------------------------- */

static int64_t src_n_tensors(const struct loader *L)
{
    return L->mlx ? mlx_n_tensors(L->mlx) : gguf_n_tensors(L->f);
}

static int64_t src_find(const struct loader *L, const char *name)
{
    return L->mlx ? mlx_find_tensor(L->mlx, name) : gguf_find_tensor(L->f, name);
}

static const struct pv_tensor *src_tensor(const struct loader *L, int64_t i)
{
    return L->mlx ? mlx_tensor(L->mlx, i) : gguf_tensor(L->f, i);
}

static void shape_str(const int64_t *ne, int n, char *out, size_t cap)
{
    size_t len = 0;
    len += (size_t)snprintf(out + len, cap - len, "[");
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (len < cap)
        snprintf(out + len, cap - len, "]");
}

/*
 * Bind tensor `name` with shape [ne0] (ne1 == 0) or [ne0, ne1] into *out. A missing
 * tensor is an error when `required`, else *out = NULL. Vectors (norms, biases, rope
 * factors) must be F32; matrices may be any weight type.
 */
static enum pv_status bind(struct loader *L, const char *name, int64_t ne0, int64_t ne1,
                           bool required, const struct pv_tensor **out)
{
    int64_t i = src_find(L, name);
    *out = NULL;
    if (i < 0) {
        if (!required)
            return PV_OK;
        return pv_err_set(L->err, PV_ERR_FORMAT,
                          "%s: tensor '%s' is missing (the %s architecture needs it)", L->path,
                          name, L->arch);
    }
    const struct pv_tensor *t = src_tensor(L, i);
    int64_t want[4] = {ne0, ne1 ? ne1 : 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0) {
        char have_s[128], want_s[64];
        shape_str(t->ne, t->n_dims, have_s, sizeof have_s);
        shape_str(want, ne1 ? 2 : 1, want_s, sizeof want_s);
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s",
                          L->path, name, have_s, want_s);
    }
    if (ne1 == 0 && t->type != PV_TYPE_F32)
        return pv_err_set(L->err, PV_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %s; pensieve needs f32 for vectors (norms, biases)",
                          L->path, name, pv_type_get(t->type)->name);
    L->used[i] = true;
    *out = t;
    return PV_OK;
}

static enum pv_status bind_layer_tensor(struct loader *L, uint32_t il, const char *suffix,
                                        int64_t ne0, int64_t ne1, bool required,
                                        const struct pv_tensor **out)
{
    char name[96];
    snprintf(name, sizeof name, "blk.%u.%s", il, suffix);
    return bind(L, name, ne0, ne1, required, out);
}

static enum pv_status bind_layer(struct loader *L, uint32_t il)
{
    const struct model_hparams *hp = &L->m->hp;
    struct model_layer *ly = &L->m->layers[il];
    enum model_arch arch = L->m->arch;
    int64_t E = hp->n_embd, F = hp->n_ff;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim_k;
    int64_t k_dim = (int64_t)hp->n_head_kv * hp->head_dim_k;
    int64_t v_dim = (int64_t)hp->n_head_kv * hp->head_dim_v;
    int64_t o_dim = (int64_t)hp->n_head * hp->head_dim_v;

    /* Sliding-window layers (gemma3: il % 6 < 5) use the local RoPE base, unscaled. */
    ly->is_swa = arch == ARCH_GEMMA3 && il % 6 < 5;
    ly->rope_base = ly->is_swa ? hp->rope_base_swa : hp->rope_base;
    ly->rope_freq_scale = ly->is_swa ? 1.0f : hp->rope_freq_scale;

    TRY(bind_layer_tensor(L, il, "attn_norm.weight", E, 0, true, &ly->attn_norm));
    if (arch == ARCH_PHI3) {
        TRY(bind_layer_tensor(L, il, "attn_qkv.weight", E, q_dim + k_dim + v_dim, false,
                              &ly->wqkv));
    }
    if (!ly->wqkv) {
        TRY(bind_layer_tensor(L, il, "attn_q.weight", E, q_dim, true, &ly->wq));
        TRY(bind_layer_tensor(L, il, "attn_k.weight", E, k_dim, true, &ly->wk));
        TRY(bind_layer_tensor(L, il, "attn_v.weight", E, v_dim, true, &ly->wv));
    }
    if (arch == ARCH_QWEN2 || arch == ARCH_LLAMA) {
        bool req = arch == ARCH_QWEN2;
        TRY(bind_layer_tensor(L, il, "attn_q.bias", q_dim, 0, req, &ly->bq));
        TRY(bind_layer_tensor(L, il, "attn_k.bias", k_dim, 0, req, &ly->bk));
        TRY(bind_layer_tensor(L, il, "attn_v.bias", v_dim, 0, req, &ly->bv));
    }
    TRY(bind_layer_tensor(L, il, "attn_output.weight", o_dim, E, true, &ly->wo));
    if (arch == ARCH_GEMMA3 || arch == ARCH_QWEN3) {
        TRY(bind_layer_tensor(L, il, "attn_q_norm.weight", hp->head_dim_k, 0, true, &ly->q_norm));
        TRY(bind_layer_tensor(L, il, "attn_k_norm.weight", hp->head_dim_k, 0, true, &ly->k_norm));
    }
    if (arch == ARCH_GEMMA3)
        TRY(bind_layer_tensor(L, il, "post_attention_norm.weight", E, 0, true,
                              &ly->post_attn_norm));
    TRY(bind_layer_tensor(L, il, "ffn_norm.weight", E, 0, true, &ly->ffn_norm));
    if (arch == ARCH_PHI3) {
        TRY(bind_layer_tensor(L, il, "ffn_up.weight", E, 2 * F, true, &ly->ffn_gate_up));
    } else {
        TRY(bind_layer_tensor(L, il, "ffn_gate.weight", E, F, true, &ly->ffn_gate));
        TRY(bind_layer_tensor(L, il, "ffn_up.weight", E, F, true, &ly->ffn_up));
    }
    TRY(bind_layer_tensor(L, il, "ffn_down.weight", F, E, true, &ly->ffn_down));
    if (arch == ARCH_GEMMA3)
        TRY(bind_layer_tensor(L, il, "post_ffw_norm.weight", E, 0, true, &ly->post_ffn_norm));
    return PV_OK;
}

static enum pv_status bind_tensors(struct loader *L)
{
    struct pv_model *m = L->m;
    const struct model_hparams *hp = &m->hp;
    int64_t i = src_find(L, "token_embd.weight");
    if (i < 0)
        return pv_err_set(L->err, PV_ERR_FORMAT,
                          "%s: tensor 'token_embd.weight' is missing (the %s architecture needs it)",
                          L->path, L->arch);
    int64_t n_vocab = src_tensor(L, i)->ne[1];
    if (n_vocab < 1 || n_vocab > INT32_MAX)
        return pv_err_set(L->err, PV_ERR_FORMAT, "%s: token_embd.weight has %lld rows", L->path,
                          (long long)n_vocab);
    m->hp.n_vocab = (uint32_t)n_vocab;
    enum gguf_vtype et;
    uint64_t n_tokens;
    if (gguf_get_arr_info(L->f, "tokenizer.ggml.tokens", &et, &n_tokens) &&
        n_tokens != (uint64_t)n_vocab)
        return pv_err_set(L->err, PV_ERR_FORMAT,
                          "%s: token_embd.weight has %lld rows but the vocabulary has %llu tokens",
                          L->path, (long long)n_vocab, (unsigned long long)n_tokens);

    TRY(bind(L, "token_embd.weight", hp->n_embd, n_vocab, true, &m->tok_embd));
    TRY(bind(L, "output_norm.weight", hp->n_embd, 0, true, &m->output_norm));
    TRY(bind(L, "output.weight", hp->n_embd, n_vocab, false, &m->output));
    if (!m->output)
        m->output = m->tok_embd; /* tied embeddings */
    if (m->arch == ARCH_LLAMA)
        TRY(bind(L, "rope_freqs.weight", hp->n_rot / 2, 0, false, &m->rope_freqs));
    if (m->arch == ARCH_PHI3 && (src_find(L, "rope_factors_long.weight") >= 0 ||
                                 src_find(L, "rope_factors_short.weight") >= 0))
        return pv_err_set(L->err, PV_ERR_UNSUPPORTED,
                          "%s: phi3 LongRoPE (rope_factors_long/short) is not supported", L->path);

    for (uint32_t il = 0; il < hp->n_layer; il++)
        TRY(bind_layer(L, il));

    for (int64_t t = 0; t < src_n_tensors(L); t++)
        if (!L->used[t])
            return pv_err_set(L->err, PV_ERR_UNSUPPORTED,
                              "%s: tensor '%s' is not used by pensieve's %s recipe (an unsupported variant of the architecture)",
                              L->path, src_tensor(L, t)->name, L->arch);
    return PV_OK;
}

/* ---- load / free ------------------------------------------------------------------ */

/* Copy a metadata string into a new NUL-terminated heap string; NULL when absent. */
static char *dup_meta_str(const struct gguf_file *f, const char *key)
{
    struct gguf_str s;
    if (!gguf_get_str(f, key, &s))
        return NULL;
    return xstrndup(s.p, (size_t)s.n);
}

static enum pv_status arch_lookup(const struct gguf_file *f, const char *path,
                                  enum model_arch *out, struct pv_err *err)
{
    struct gguf_str s;
    if (!gguf_get_str(f, "general.architecture", &s))
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: metadata key 'general.architecture' is missing or not a string",
                          path);
    for (int a = 0; a < ARCH_COUNT; a++)
        if (strlen(arch_names[a]) == s.n && memcmp(arch_names[a], s.p, s.n) == 0) {
            *out = (enum model_arch)a;
            return PV_OK;
        }
    return pv_err_set(err, PV_ERR_UNSUPPORTED,
                      "%s: architecture '%.*s' is not supported (supported: " SUPPORTED_ARCHS ")",
                      path, (int)PV_MIN(s.n, 64), s.p);
}

struct pv_model_params pv_model_default_params(void)
{
    struct pv_model_params p = {.prefetch = false, .mlock = false};
    return p;
}

enum pv_status pv_model_load(const char *path, const struct pv_model_params *params,
                             struct pv_model **out, struct pv_err *err)
{
    struct pv_model_params defaults = pv_model_default_params();
    struct gguf_file *f = NULL;
    struct mlx_dir *mlx = NULL;
    struct mlx_hparams mhp;
    struct pv_model *m = NULL;
    struct loader L = {0};
    enum pv_status st;

    *out = NULL;
    if (!params)
        params = &defaults;
    if (mlx_is_dir(path))
        st = mlx_open(path, &mlx, &f, &mhp, err);
    else
        st = gguf_open(path, &f, err);
    if (st != PV_OK)
        return st;
    m = xcalloc(1, sizeof(*m));
    m->gguf = f;
    m->mlx = mlx;
    m->file_bytes = mlx ? mhp.file_bytes : gguf_file_bytes(f);
    st = arch_lookup(f, path, &m->arch, err);
    if (st != PV_OK)
        goto fail;
    L.m = m;
    L.f = f;
    L.mlx = mlx;
    L.path = path;
    L.arch = arch_names[m->arch];
    L.err = err;
    st = read_hparams(&L);
    if (st != PV_OK)
        goto fail;
    if (mlx) { /* what MLX's recipes do that GGUF metadata cannot say */
        snprintf(m->mlx_quant, sizeof m->mlx_quant, "%s", mhp.quant);
        m->hp.rope_neox = mhp.rope_neox;
        if (mhp.attn_scale > 0)
            m->hp.attn_scale = mhp.attn_scale;
        if (mhp.embd_scale > 0)
            m->hp.embd_scale = mhp.embd_scale;
        if (mhp.rope_base_swa > 0)
            m->hp.rope_base_swa = mhp.rope_base_swa;
    }
    m->layers = try_calloc(m->hp.n_layer, sizeof(*m->layers));
    L.used = try_calloc((size_t)src_n_tensors(&L) + 1, sizeof(*L.used));
    if (!m->layers || !L.used) {
        st = pv_err_set(err, PV_ERR_NOMEM, "%s: no memory for the layer table", path);
        goto fail;
    }
    st = bind_tensors(&L);
    if (st != PV_OK)
        goto fail;

    m->chat_template = dup_meta_str(f, "tokenizer.chat_template");
    m->name = dup_meta_str(f, "general.name");
    if (!m->name) {
        const char *base = strrchr(path, '/');
        m->name = xstrdup(base ? base + 1 : path);
    }
    for (int64_t i = 0; i < src_n_tensors(&L); i++)
        m->weight_bytes += src_tensor(&L, i)->n_bytes;

    if (!mlx && (params->prefetch || params->mlock)) {
        /* The data blob, widened to whole pages. */
        size_t off = (size_t)gguf_data_offset(f) & ~(size_t)4095;
        void *page = (void *)((const char *)gguf_map(f) + off);
        size_t len = (size_t)gguf_file_bytes(f) - off;
        if (params->prefetch)
            madvise(page, len, MADV_WILLNEED);
        if (params->mlock && mlock(page, len) != 0) {
            st = pv_err_set(err, PV_ERR_NOMEM,
                            "%s: cannot lock %zu bytes of weights in memory (RLIMIT_MEMLOCK?)",
                            path, len);
            goto fail;
        }
    }
    /* The tokenizer's own messages do not name the file: prefix it. */
    struct pv_err tok_err = {0};
    st = tok_vocab_load(f, &m->vocab, &tok_err);
    if (st != PV_OK) {
        st = pv_err_set(err, st, "%s: tokenizer: %s", path, tok_err.msg);
        goto fail;
    }
    free(L.used);
    *out = m;
    return PV_OK;
fail:
    free(L.used);
    pv_model_free(m);
    return st;
}

void pv_model_free(struct pv_model *m)
{
    if (!m)
        return;
    tok_vocab_free(m->vocab);
    gguf_close(m->gguf);
    mlx_close(m->mlx);
    free(m->layers);
    free(m->chat_template);
    free(m->name);
    free(m);
}

/* ---- accessors -------------------------------------------------------------------- */

const char *pv_model_arch(const struct pv_model *m) { return arch_names[m->arch]; }
const char *pv_model_name(const struct pv_model *m) { return m->name; }
uint32_t pv_model_n_ctx_train(const struct pv_model *m) { return m->hp.n_ctx_train; }
uint32_t pv_model_n_vocab(const struct pv_model *m) { return m->hp.n_vocab; }
uint32_t pv_model_n_embd(const struct pv_model *m) { return m->hp.n_embd; }
uint32_t pv_model_n_layer(const struct pv_model *m) { return m->hp.n_layer; }
const char *pv_model_chat_template(const struct pv_model *m) { return m->chat_template; }
const struct pv_vocab *pv_model_vocab(const struct pv_model *m) { return m->vocab; }
uint64_t pv_model_file_bytes(const struct pv_model *m) { return m->file_bytes; }
uint64_t pv_model_weight_bytes(const struct pv_model *m) { return m->weight_bytes; }

uint64_t pv_model_kv_bytes(const struct pv_model *m, uint32_t n_ctx, double kv_bytes_per_elem)
{
    const struct model_hparams *hp = &m->hp;
    double per_pos = (double)hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v) * kv_bytes_per_elem;
    double total = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        uint32_t n_pos = m->layers[il].is_swa ? PV_MIN(n_ctx, hp->n_swa) : n_ctx;
        total += per_pos * n_pos;
    }
    return (uint64_t)ceil(total);
}

uint64_t pv_model_memory_bytes(const struct pv_model *m, uint32_t n_ctx, double kv_bytes_per_elem)
{
    return m->weight_bytes + pv_model_kv_bytes(m, n_ctx, kv_bytes_per_elem);
}

/* ---- probe: metadata summary without binding -------------------------------------- */

/* llama.cpp's file-type names (general.file_type, LLAMA_FTYPE_MOSTLY_*). */
static const char *file_type_name(uint32_t ft)
{
    static const char *const names[] = {
        [0] = "F32",      [1] = "F16",      [2] = "Q4_0",     [3] = "Q4_1",
        [7] = "Q8_0",     [8] = "Q5_0",     [9] = "Q5_1",     [10] = "Q2_K",
        [11] = "Q3_K_S",  [12] = "Q3_K_M",  [13] = "Q3_K_L",  [14] = "Q4_K_S",
        [15] = "Q4_K_M",  [16] = "Q5_K_S",  [17] = "Q5_K_M",  [18] = "Q6_K",
        [19] = "IQ2_XXS", [20] = "IQ2_XS",  [21] = "Q2_K_S",  [22] = "IQ3_XS",
        [23] = "IQ3_XXS", [24] = "IQ1_S",   [25] = "IQ4_NL",  [26] = "IQ3_S",
        [27] = "IQ3_M",   [28] = "IQ2_S",   [29] = "IQ2_M",   [30] = "IQ4_XS",
        [31] = "IQ1_M",   [32] = "BF16",    [36] = "TQ1_0",   [37] = "TQ2_0",
        [38] = "MXFP4_MOE",
    };
    return ft < PV_ARRAY_LEN(names) ? names[ft] : NULL;
}

void model_quant_name(const struct gguf_file *f, char *out, size_t cap)
{
    uint32_t ft;
    const char *n;
    if (gguf_get_u32(f, "general.file_type", &ft) && (n = file_type_name(ft))) {
        snprintf(out, cap, "%s", n);
        return;
    }
    /* No (known) file type: the type holding most bytes among the matrices. */
    uint64_t bytes[PV_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct pv_tensor *t = gguf_tensor(f, i);
        if (t->n_dims >= 2)
            bytes[t->type] += t->n_bytes;
    }
    int best = -1;
    for (int t = 0; t < PV_TYPE_COUNT; t++)
        if (bytes[t] > 0 && (best < 0 || bytes[t] > bytes[best]))
            best = t;
    if (best < 0) {
        snprintf(out, cap, "-");
        return;
    }
    size_t i = 0;
    for (const char *p = pv_type_get((uint32_t)best)->name; *p && i + 1 < cap; p++)
        out[i++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    out[i] = '\0';
}

bool pv_model_is_dir(const char *path) { return mlx_is_dir(path); }

/* The common part of a probe: architecture, name, template, context of metadata f. */
static void probe_meta(const struct gguf_file *f, const char *path, struct pv_model_summary *out)
{
    struct gguf_str s;
    if (gguf_get_str(f, "general.architecture", &s))
        snprintf(out->architecture, sizeof out->architecture, "%.*s", (int)PV_MIN(s.n, 63), s.p);
    else
        snprintf(out->architecture, sizeof out->architecture, "?");
    if (gguf_get_str(f, "general.name", &s))
        snprintf(out->name, sizeof out->name, "%.*s", (int)PV_MIN(s.n, 255), s.p);
    out->has_chat_template = gguf_get_str(f, "tokenizer.chat_template", &s) && s.n > 0;
    char key[96];
    uint32_t v;
    snprintf(key, sizeof key, "%s.context_length", out->architecture);
    if (gguf_get_u32(f, key, &v))
        out->n_ctx_train = v;
    enum model_arch a;
    out->supported = arch_lookup(f, path, &a, NULL) == PV_OK;
}

static enum pv_status probe_mlx(const char *path, struct pv_model_summary *out,
                                struct pv_err *err)
{
    struct gguf_file *f;
    struct mlx_hparams hp;
    enum pv_status st = mlx_probe(path, &f, &hp, &out->n_params, &out->n_tensors, err);
    if (st != PV_OK)
        return st;
    probe_meta(f, path, out);
    snprintf(out->quant, sizeof out->quant, "%s", hp.quant);
    out->file_bytes = hp.file_bytes;
    gguf_close(f);
    return PV_OK;
}

enum pv_status pv_model_probe(const char *path, struct pv_model_summary *out,
                              struct pv_err *err)
{
    struct gguf_file *f;
    enum pv_status st;

    memset(out, 0, sizeof(*out));
    if (mlx_is_dir(path))
        return probe_mlx(path, out, err);
    st = gguf_open(path, &f, err);
    if (st != PV_OK)
        return st;
    probe_meta(f, path, out);
    model_quant_name(f, out->quant, sizeof out->quant);
    out->file_bytes = gguf_file_bytes(f);
    out->n_tensors = (uint64_t)gguf_n_tensors(f);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct pv_tensor *t = gguf_tensor(f, i);
        out->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    gguf_close(f);
    return PV_OK;
}
