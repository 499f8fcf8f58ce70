/*
 * mlx.c - MLX model directories: config.json, safetensors shards and tokenizer files
 * translated into GGUF metadata and GGUF-named tensor views (mlx.h).
 *
 * The translation follows what convert_hf_to_gguf writes for the same checkpoint, so the
 * hyper-parameter and tokenizer code of the GGUF path runs unchanged: the metadata is
 * serialized as a GGUF v3 byte buffer with no tensors and opened with gguf_open_mem.
 * Tensor names map from Hugging Face's (model.layers.N.self_attn.q_proj) to GGUF's
 * (blk.N.attn_q); a quantized linear (weight U32 + scales + biases) becomes one tensor of
 * an MLX affine type. Gemma 3's norms store w where the model computes (1 + w): they
 * become 1 + w, as in a GGUF file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/quant.h"
#include "model/json.h"
#include "model/mlx.h"
#include "model/safetensors.h"
#include "util/util.h"

#define MLX_MAX_JSON_BYTES ((size_t)1 << 30)
#define MLX_MAX_SHARDS 4096

struct mlx_dir {
    struct st_file **shards;     /* [n_shards], owned */
    size_t n_shards;
    struct pv_tensor *tensors;   /* [n_tensors], GGUF names */
    int64_t n_tensors, cap_tensors;
    void **owned;                /* names and converted data */
    size_t n_owned, cap_owned;
};

/* Everything one open or probe reads; released at once. */
struct mlx_ctx {
    const char *dir;
    struct pv_arena arena;       /* parsed JSON documents */
    const struct json *config;   /* the text model's config (gemma3: text_config) */
    const struct json *quant;    /* "quantization" or NULL */
    const char *arch;            /* GGUF architecture name */
    bool gemma3;
    uint32_t n_vocab;
    float *rope_factors;         /* llama3 RoPE scaling: [head_dim / 2] divisors, or NULL */
    uint32_t n_rope_factors;
    struct mlx_hparams *hp;
    struct pv_err *err;
};

bool mlx_is_dir(const char *path)
{
    struct stat s;
    char p[4096];
    if (stat(path, &s) != 0 || !S_ISDIR(s.st_mode))
        return false;
    snprintf(p, sizeof p, "%s/config.json", path);
    return access(p, R_OK) == 0;
}

/* ---- half floats (here, not from compute/cpu/, which the parser-only builds leave out) */

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    float f;
    if (exp == 0) {
        f = (float)man * 5.9604644775390625e-8f; /* zero or subnormal: man * 2^-24 */
        return h & 0x8000 ? -f : f;
    }
    bits = ((uint32_t)(h & 0x8000) << 16) |
           (exp == 31 ? 0x7F800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* f32 rounded to bf16 (nearest, ties to even) and back; finite inputs only */
static float round_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    x = (x + 0x7FFF + ((x >> 16) & 1)) & 0xFFFF0000u;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* ---- files ------------------------------------------------------------------------ */

/* Read dir/name into a NUL-terminated heap buffer. Absent: PV_ERR_NOT_FOUND (err set). */
static enum pv_status read_file(struct mlx_ctx *c, const char *name, char **out, size_t *n)
{
    char path[4096];
    struct stat s;
    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(c->err, errno == ENOENT ? PV_ERR_NOT_FOUND : PV_ERR_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode) || (size_t)s.st_size > MLX_MAX_JSON_BYTES) {
        close(fd);
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: not a regular file of at most %zu bytes",
                          path, MLX_MAX_JSON_BYTES);
    }
    char *buf = try_malloc((size_t)s.st_size + 1);
    if (!buf) {
        close(fd);
        return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for %lld bytes", path,
                          (long long)s.st_size);
    }
    size_t got = 0;
    while (got < (size_t)s.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)s.st_size - got);
        if (r <= 0) {
            free(buf);
            close(fd);
            return pv_err_set(c->err, PV_ERR_IO, "%s: read failed", path);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *n = got;
    return PV_OK;
}

/* Read and parse dir/name; *out NULL and PV_OK when absent and !required. */
static enum pv_status read_json(struct mlx_ctx *c, const char *name, bool required,
                                const struct json **out)
{
    char *text, msg[160];
    size_t n;
    struct json *v;
    *out = NULL;
    enum pv_status st = read_file(c, name, &text, &n);
    if (st == PV_ERR_NOT_FOUND && !required)
        return PV_OK;
    if (st != PV_OK)
        return st;
    bool ok = json_parse(text, n, &c->arena, &v, msg, sizeof msg);
    free(text);
    if (!ok)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/%s: not valid JSON: %s", c->dir, name, msg);
    if (v->type != JSON_OBJECT)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/%s: not a JSON object", c->dir, name);
    *out = v;
    return PV_OK;
}

/* ---- GGUF metadata writer --------------------------------------------------------- */

struct gw {
    struct pv_buf b;
    uint64_t n_kv;
    bool oom;
};

static void gw_raw(struct gw *w, const void *p, size_t n)
{
    if (!buf_append(&w->b, p, n))
        w->oom = true;
}
static void gw_u32v(struct gw *w, uint32_t v) { gw_raw(w, &v, 4); }
static void gw_strv(struct gw *w, const char *s, size_t n)
{
    uint64_t len = n;
    gw_raw(w, &len, 8);
    gw_raw(w, s, n);
}
static void gw_key(struct gw *w, const char *key, uint32_t type)
{
    gw_strv(w, key, strlen(key));
    gw_u32v(w, type);
    w->n_kv++;
}
static void gw_str(struct gw *w, const char *key, const char *s)
{
    gw_key(w, key, GGUF_STRING);
    gw_strv(w, s, strlen(s));
}
static void gw_u32(struct gw *w, const char *key, uint32_t v)
{
    gw_key(w, key, GGUF_U32);
    gw_u32v(w, v);
}
static void gw_f32(struct gw *w, const char *key, float v)
{
    gw_key(w, key, GGUF_F32);
    gw_raw(w, &v, 4);
}
static void gw_bool(struct gw *w, const char *key, bool v)
{
    uint8_t b = v;
    gw_key(w, key, GGUF_BOOL);
    gw_raw(w, &b, 1);
}
static void gw_arr(struct gw *w, const char *key, uint32_t elem_type, uint64_t n)
{
    gw_key(w, key, GGUF_ARRAY);
    gw_u32v(w, elem_type);
    gw_raw(w, &n, 8);
}
/* "{arch}.{suffix}" into key */
static const char *akey(char *key, size_t cap, const char *arch, const char *suffix)
{
    snprintf(key, cap, "%s.%s", arch, suffix);
    return key;
}

/* ---- config.json ------------------------------------------------------------------ */

static enum pv_status cfg_u32(struct mlx_ctx *c, const char *key, bool required, uint32_t def,
                              uint32_t *out)
{
    const struct json *v = json_get(c->config, key);
    uint64_t x;
    if (!v || v->type == JSON_NULL) {
        if (required)
            return pv_err_set(c->err, PV_ERR_FORMAT, "%s/config.json: '%s' is missing", c->dir,
                              key);
        *out = def;
        return PV_OK;
    }
    if (!json_u64(v, &x) || x > UINT32_MAX)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/config.json: '%s' is not an unsigned 32-bit integer", c->dir, key);
    *out = (uint32_t)x;
    return PV_OK;
}

static enum pv_status cfg_f32(struct mlx_ctx *c, const char *key, float def, float *out)
{
    const struct json *v = json_get(c->config, key);
    if (!v || v->type == JSON_NULL) {
        *out = def;
        return PV_OK;
    }
    if (v->type != JSON_NUMBER || !isfinite(json_num(v)))
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/config.json: '%s' is not a number", c->dir,
                          key);
    *out = (float)json_num(v);
    return PV_OK;
}

/*
 * Llama 3 RoPE scaling as frequency divisors (GGUF's rope_freqs): for each pair i with
 * wavelength w = 2 pi base^(2i/d): 1 when w < L / high, factor when w > L / low, else
 * 1 / ((1 - s) / factor + s) with s = (L / w - low) / (high - low); L the original context.
 */
static enum pv_status llama3_factors(struct mlx_ctx *c, const struct json *rs, float theta,
                                     uint32_t head_dim)
{
    double factor = 0, low = 1, high = 4, old_ctx = 8192;
    if (!json_get_num(rs, "factor", &factor) || !(factor > 0))
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/config.json: rope_scaling factor is missing or not positive", c->dir);
    json_get_num(rs, "low_freq_factor", &low);
    json_get_num(rs, "high_freq_factor", &high);
    json_get_num(rs, "original_max_position_embeddings", &old_ctx);
    if (!(low > 0) || !(high > low) || !(old_ctx > 0) || head_dim < 2 || head_dim > 65536)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/config.json: llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor "
                          "and a positive original_max_position_embeddings",
                          c->dir);
    c->n_rope_factors = head_dim / 2;
    c->rope_factors = xcalloc(c->n_rope_factors, sizeof(float));
    for (uint32_t i = 0; i < c->n_rope_factors; i++) {
        double wavelen = 2 * M_PI * pow((double)theta, 2.0 * i / head_dim), f;
        if (wavelen < old_ctx / high)
            f = 1;
        else if (wavelen > old_ctx / low)
            f = factor;
        else {
            double sm = (old_ctx / wavelen - low) / (high - low);
            f = 1 / ((1 - sm) / factor + sm);
        }
        c->rope_factors[i] = (float)f;
    }
    return PV_OK;
}

#define TRY(expr)                                                                          \
    do {                                                                                   \
        enum pv_status st_ = (expr);                                                       \
        if (st_ != PV_OK)                                                                  \
            return st_;                                                                    \
    } while (0)

static enum pv_status write_hparams(struct mlx_ctx *c, const struct json *root, struct gw *w)
{
    const char *mt;
    char key[128];
    const char *a;
    if (!json_get_str(root, "model_type", &mt))
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/config.json: 'model_type' is missing",
                          c->dir);
    c->config = root;
    if (strcmp(mt, "llama") == 0 || strcmp(mt, "mistral") == 0)
        c->arch = "llama";
    else if (strcmp(mt, "qwen2") == 0 || strcmp(mt, "qwen3") == 0 || strcmp(mt, "phi3") == 0)
        c->arch = mt;
    else if (strcmp(mt, "gemma3_text") == 0 || strcmp(mt, "gemma3") == 0) {
        c->arch = "gemma3";
        c->gemma3 = true;
        if (strcmp(mt, "gemma3") == 0) {
            c->config = json_get(root, "text_config");
            if (!c->config || c->config->type != JSON_OBJECT)
                return pv_err_set(c->err, PV_ERR_FORMAT,
                                  "%s/config.json: gemma3 without a 'text_config' object",
                                  c->dir);
        }
    } else
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s/config.json: model_type '%.64s' is not supported (supported: "
                          "llama, mistral, qwen2, qwen3, phi3, gemma3, gemma3_text)",
                          c->dir, mt);
    a = c->arch;
    const bool g3 = c->gemma3;
    uint32_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_ctx, n_vocab, swa = 0;
    float eps, theta;
    TRY(cfg_u32(c, "hidden_size", !g3, 1152, &n_embd));
    TRY(cfg_u32(c, "num_hidden_layers", !g3, 26, &n_layer));
    TRY(cfg_u32(c, "intermediate_size", !g3, 6912, &n_ff));
    TRY(cfg_u32(c, "num_attention_heads", !g3, strcmp(mt, "gemma3") == 0 ? 8 : 4, &n_head));
    TRY(cfg_u32(c, "num_key_value_heads", false, g3 ? (strcmp(mt, "gemma3") == 0 ? 4 : 1) : n_head,
                &n_head_kv));
    if (n_head == 0)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/config.json: num_attention_heads is 0",
                          c->dir);
    TRY(cfg_u32(c, "head_dim", false, g3 ? 256 : n_embd / n_head, &head_dim));
    TRY(cfg_u32(c, "max_position_embeddings", false, g3 ? 32768 : 4096, &n_ctx));
    const struct json *vroot = strcmp(mt, "gemma3") == 0 ? root : c->config;
    const struct json *vs = json_get(vroot, "vocab_size");
    uint64_t vv;
    if (vs && json_u64(vs, &vv) && vv > 0 && vv <= INT32_MAX)
        n_vocab = (uint32_t)vv;
    else if (!vs && g3)
        n_vocab = strcmp(mt, "gemma3") == 0 ? 262208 : 262144;
    else
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/config.json: 'vocab_size' is missing or not a positive integer",
                          c->dir);
    c->n_vocab = n_vocab;
    TRY(cfg_f32(c, "rms_norm_eps", g3 ? 1e-6f : 1e-5f, &eps));
    TRY(cfg_f32(c, "rope_theta", g3 ? 1e6f : 10000.0f, &theta));

    gw_str(w, "general.architecture", a);
    const char *base = strrchr(c->dir, '/');
    base = base && base[1] ? base + 1 : c->dir;
    gw_str(w, "general.name", base);
    gw_u32(w, akey(key, sizeof key, a, "context_length"), n_ctx);
    gw_u32(w, akey(key, sizeof key, a, "embedding_length"), n_embd);
    gw_u32(w, akey(key, sizeof key, a, "block_count"), n_layer);
    gw_u32(w, akey(key, sizeof key, a, "feed_forward_length"), n_ff);
    gw_u32(w, akey(key, sizeof key, a, "attention.head_count"), n_head);
    gw_u32(w, akey(key, sizeof key, a, "attention.head_count_kv"), n_head_kv);
    gw_u32(w, akey(key, sizeof key, a, "attention.key_length"), head_dim);
    gw_u32(w, akey(key, sizeof key, a, "attention.value_length"), head_dim);
    gw_f32(w, akey(key, sizeof key, a, "attention.layer_norm_rms_epsilon"), eps);
    gw_f32(w, akey(key, sizeof key, a, "rope.freq_base"), theta);

    /* RoPE scaling: none or linear (as the GGUF path), llama3 as frequency factors */
    const struct json *rs = json_get(c->config, "rope_scaling");
    const char *type = NULL;
    if (rs && rs->type == JSON_OBJECT && !json_get_str(rs, "rope_type", &type))
        json_get_str(rs, "type", &type);
    if (type && strcmp(type, "llama3") == 0 && strcmp(a, "llama") == 0) {
        TRY(llama3_factors(c, rs, theta, head_dim));
    } else if (rs && rs->type == JSON_OBJECT) {
        double factor = 0;
        if (!type || (strcmp(type, "linear") != 0 && strcmp(type, "default") != 0))
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s/config.json: rope_scaling type '%.32s' is not supported (only linear, and llama3 for llama)",
                              c->dir, type ? type : "?");
        if (strcmp(type, "linear") == 0) {
            if (!json_get_num(rs, "factor", &factor) || !(factor > 0))
                return pv_err_set(c->err, PV_ERR_FORMAT,
                                  "%s/config.json: rope_scaling factor is missing or not positive",
                                  c->dir);
            gw_str(w, akey(key, sizeof key, a, "rope.scaling.type"), "linear");
            gw_f32(w, akey(key, sizeof key, a, "rope.scaling.factor"), (float)factor);
        }
    } else if (rs && rs->type != JSON_NULL) {
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s/config.json: rope_scaling is not an object",
                          c->dir);
    }
    double prf = 1;
    if (json_get_num(c->config, "partial_rotary_factor", &prf) && prf != 1)
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s/config.json: partial_rotary_factor %g is not supported", c->dir, prf);
    bool b = false;
    if (json_get_bool(c->config, "mlp_bias", &b) && b)
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED, "%s/config.json: mlp_bias is not supported",
                          c->dir);

    c->hp->rope_neox = true; /* every MLX recipe here uses traditional=False */
    if (strcmp(a, "llama") == 0 && json_get_bool(c->config, "rope_traditional", &b) && b)
        c->hp->rope_neox = false;
    if (g3) {
        uint32_t pattern;
        float qpas, local_base;
        TRY(cfg_u32(c, "sliding_window", false, 512, &swa));
        TRY(cfg_u32(c, "sliding_window_pattern", false, 6, &pattern));
        if (pattern != 6)
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s/config.json: sliding_window_pattern %u is not supported (only 6)",
                              c->dir, pattern);
        gw_u32(w, akey(key, sizeof key, a, "attention.sliding_window"), swa);
        TRY(cfg_f32(c, "query_pre_attn_scalar", 256, &qpas));
        TRY(cfg_f32(c, "rope_local_base_freq", 10000.0f, &local_base));
        if (!(qpas > 0) || !(local_base > 0))
            return pv_err_set(c->err, PV_ERR_FORMAT,
                              "%s/config.json: query_pre_attn_scalar or rope_local_base_freq is not positive",
                              c->dir);
        c->hp->attn_scale = 1.0f / sqrtf(qpas);
        c->hp->rope_base_swa = local_base;
        /* mlx-lm multiplies the embeddings by sqrt(hidden_size) rounded to bf16 */
        c->hp->embd_scale = round_bf16(sqrtf((float)n_embd));
    }

    /* quantization: {"group_size", "bits"} (+ per-module overrides, read per tensor) */
    c->quant = json_get(root, "quantization");
    if (!c->quant)
        c->quant = json_get(root, "quantization_config");
    if (c->quant && c->quant->type == JSON_OBJECT) {
        double gs = 0, bits = 0;
        if (!json_get_num(c->quant, "group_size", &gs) || !json_get_num(c->quant, "bits", &bits) ||
            pv_type_mlx((uint32_t)bits, (uint32_t)gs) == PV_TYPE_COUNT || gs != floor(gs) ||
            bits != floor(bits))
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s/config.json: quantization needs integer bits in 2, 3, 4, 5, 6, 8 and "
                              "group_size in 32, 64, 128",
                              c->dir);
        const char *mode;
        if (json_get_str(c->quant, "mode", &mode) && strcmp(mode, "affine") != 0)
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s/config.json: quantization mode '%.32s' is not supported (only affine)",
                              c->dir, mode);
        c->hp->bits = (uint32_t)bits;
        c->hp->group_size = (uint32_t)gs;
        snprintf(c->hp->quant, sizeof c->hp->quant, "MLX_Q%u_G%u", c->hp->bits,
                 c->hp->group_size);
    } else {
        c->quant = NULL;
        const char *dt = NULL;
        if (!json_get_str(c->config, "torch_dtype", &dt) && !json_get_str(root, "torch_dtype", &dt))
            json_get_str(root, "dtype", &dt);
        snprintf(c->hp->quant, sizeof c->hp->quant, "%s",
                 !dt ? "-" : strcmp(dt, "bfloat16") == 0 ? "BF16"
                           : strcmp(dt, "float16") == 0 ? "F16" : strcmp(dt, "float32") == 0 ? "F32" : "-");
    }
    return PV_OK;
}

/* ---- tokenizer.json --------------------------------------------------------------- */

/* The pre-tokenizer regexes of Hugging Face tokenizers that tok/ implements. */
static const struct {
    const char *regex;
    const char *pre;
} known_splits[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "qwen2"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "llama-bpe"},
};

static bool is_type(const struct json *v, const char *type)
{
    const char *t;
    return v && json_get_str(v, "type", &t) && strcmp(t, type) == 0;
}

/* ByteLevel pre-tokenizer: use_regex (default true), add_prefix_space must be false. */
static bool byte_level(const struct json *v, bool *use_regex)
{
    bool aps = false;
    if (!is_type(v, "ByteLevel"))
        return false;
    *use_regex = true;
    json_get_bool(v, "use_regex", use_regex);
    json_get_bool(v, "add_prefix_space", &aps);
    return !aps;
}

/* The tokenizer.ggml.pre name of a pre_tokenizer, or NULL when tok/ has none like it. */
static const char *pre_name(const struct json *pt)
{
    bool use_regex;
    if (byte_level(pt, &use_regex))
        return use_regex ? "gpt-2" : NULL;
    if (!is_type(pt, "Sequence"))
        return NULL;
    const struct json *seq = json_get(pt, "pretokenizers");
    if (!seq || seq->type != JSON_ARRAY || seq->n != 2)
        return NULL;
    const struct json *a = &seq->items[0], *b = &seq->items[1];
    bool individual = false;
    if (is_type(a, "Digits") && json_get_bool(a, "individual_digits", &individual) && individual &&
        byte_level(b, &use_regex) && use_regex)
        return "smollm";
    const char *re, *behavior;
    bool invert = false;
    if (!is_type(a, "Split") || !byte_level(b, &use_regex) || use_regex ||
        !json_get_str(json_get(a, "pattern"), "Regex", &re) ||
        !json_get_str(a, "behavior", &behavior) || strcmp(behavior, "Isolated") != 0 ||
        (json_get_bool(a, "invert", &invert) && invert))
        return NULL;
    for (size_t i = 0; i < PV_ARRAY_LEN(known_splits); i++)
        if (strcmp(re, known_splits[i].regex) == 0)
            return known_splits[i].pre;
    return NULL;
}

/* Text of a special token entry of tokenizer_config.json: a string or {"content": ...}. */
static const char *special_text(const struct json *tc, const char *key)
{
    const struct json *v = json_get(tc, key);
    const char *s = NULL;
    if (v && v->type == JSON_STRING)
        return v->s;
    if (v && v->type == JSON_OBJECT && json_get_str(v, "content", &s))
        return s;
    return NULL;
}

static int64_t find_token(const char **texts, uint32_t n, const char *s)
{
    for (uint32_t i = 0; i < n; i++)
        if (texts[i] && strcmp(texts[i], s) == 0)
            return i;
    return -1;
}

static enum pv_status write_tokenizer(struct mlx_ctx *c, struct gw *w)
{
    const struct json *tj, *tc, *model, *vocab, *merges, *added;
    enum pv_status st = PV_OK;
    const char **texts = NULL;
    int32_t *types = NULL;

    TRY(read_json(c, "tokenizer.json", true, &tj));
    TRY(read_json(c, "tokenizer_config.json", false, &tc));
    model = json_get(tj, "model");
    if (!is_type(model, "BPE"))
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s/tokenizer.json: the model is not BPE (only byte-level BPE is supported)",
                          c->dir);
    const char *pre = pre_name(json_get(tj, "pre_tokenizer"));
    if (!pre)
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s/tokenizer.json: pre_tokenizer is not one pensieve implements (byte-level "
                          "with the GPT-2, Llama 3 or Qwen2 split, or SmolLM's digits)",
                          c->dir);
    /* NFC changes no text that is already composed; llama.cpp skips it as well */
    const struct json *norm = json_get(tj, "normalizer");
    if (norm && norm->type != JSON_NULL && !is_type(norm, "NFC"))
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s/tokenizer.json: normalizer is not supported (only none or NFC)",
                          c->dir);
    vocab = json_get(model, "vocab");
    merges = json_get(model, "merges");
    added = json_get(tj, "added_tokens");
    if (!vocab || vocab->type != JSON_OBJECT || !merges || merges->type != JSON_ARRAY ||
        (added && added->type != JSON_ARRAY))
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/tokenizer.json: model.vocab (object), model.merges (array) or added_tokens (array) is malformed",
                          c->dir);

    uint32_t n = c->n_vocab;
    texts = try_calloc(n, sizeof(*texts));
    types = try_calloc(n, sizeof(*types));
    if (!texts || !types) {
        st = pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for %u tokens", c->dir, n);
        goto out;
    }
    for (size_t i = 0; i < vocab->n; i++) {
        uint64_t id;
        if (!json_u64(&vocab->items[i], &id) || id >= n || texts[id]) {
            st = pv_err_set(c->err, PV_ERR_FORMAT,
                            "%s/tokenizer.json: token '%.64s' has id outside 0..%u (vocab_size) or taken twice",
                            c->dir, vocab->keys[i], n - 1);
            goto out;
        }
        texts[id] = vocab->keys[i];
        types[id] = 1; /* normal */
    }
    for (size_t i = 0; added && i < added->n; i++) {
        const struct json *t = &added->items[i];
        const char *content;
        uint64_t id;
        bool special = false;
        if (!json_u64(json_get(t, "id"), &id) || id >= n || !json_get_str(t, "content", &content)) {
            st = pv_err_set(c->err, PV_ERR_FORMAT,
                            "%s/tokenizer.json: added_tokens[%zu] has no content or an id outside 0..%u",
                            c->dir, i, n - 1);
            goto out;
        }
        json_get_bool(t, "special", &special);
        texts[id] = content;
        types[id] = special ? 3 : 4; /* control : user-defined */
    }

    gw_str(w, "tokenizer.ggml.model", "gpt2");
    gw_str(w, "tokenizer.ggml.pre", pre);
    gw_arr(w, "tokenizer.ggml.tokens", GGUF_STRING, n);
    for (uint32_t i = 0; i < n; i++) {
        char pad[32];
        if (texts[i]) {
            gw_strv(w, texts[i], strlen(texts[i]));
        } else {
            snprintf(pad, sizeof pad, "[PAD%u]", i);
            gw_strv(w, pad, strlen(pad));
            types[i] = 5; /* unused */
        }
    }
    gw_arr(w, "tokenizer.ggml.token_type", GGUF_I32, n);
    gw_raw(w, types, (size_t)n * 4);
    gw_arr(w, "tokenizer.ggml.merges", GGUF_STRING, merges->n);
    for (size_t i = 0; i < merges->n; i++) {
        const struct json *m = &merges->items[i];
        if (m->type == JSON_STRING) {
            gw_strv(w, m->s, m->n);
        } else if (m->type == JSON_ARRAY && m->n == 2 && m->items[0].type == JSON_STRING &&
                   m->items[1].type == JSON_STRING) {
            uint64_t len = m->items[0].n + 1 + m->items[1].n;
            gw_raw(w, &len, 8);
            gw_raw(w, m->items[0].s, m->items[0].n);
            gw_raw(w, " ", 1);
            gw_raw(w, m->items[1].s, m->items[1].n);
        } else {
            st = pv_err_set(c->err, PV_ERR_FORMAT,
                            "%s/tokenizer.json: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                            c->dir, i);
            goto out;
        }
    }

    /* special tokens: tokenizer_config.json, else config.json's eos/bos ids */
    static const struct {
        const char *cfg, *gguf;
    } specials[] = {
        {"bos_token", "tokenizer.ggml.bos_token_id"},
        {"eos_token", "tokenizer.ggml.eos_token_id"},
        {"unk_token", "tokenizer.ggml.unknown_token_id"},
        {"pad_token", "tokenizer.ggml.padding_token_id"},
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(specials); i++) {
        const char *s = special_text(tc, specials[i].cfg);
        int64_t id = s ? find_token(texts, n, s) : -1;
        if (id < 0 && i < 2) {
            const struct json *v = json_get(c->config, i == 0 ? "bos_token_id" : "eos_token_id");
            if (v && v->type == JSON_ARRAY && v->n > 0)
                v = &v->items[0];
            uint64_t x;
            if (v && json_u64(v, &x) && x < n)
                id = (int64_t)x;
        }
        if (id >= 0)
            gw_u32(w, specials[i].gguf, (uint32_t)id);
    }
    bool add_bos;
    if (json_get_bool(tc, "add_bos_token", &add_bos))
        gw_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    else if (strcmp(pre, "llama-bpe") != 0)
        gw_bool(w, "tokenizer.ggml.add_bos_token", false);
    bool add_eos;
    if (json_get_bool(tc, "add_eos_token", &add_eos))
        gw_bool(w, "tokenizer.ggml.add_eos_token", add_eos);

    /* chat template: chat_template.jinja, else tokenizer_config.json's */
    char *tmpl;
    size_t tn;
    st = read_file(c, "chat_template.jinja", &tmpl, &tn);
    if (st == PV_OK) {
        gw_key(w, "tokenizer.chat_template", GGUF_STRING);
        gw_strv(w, tmpl, tn);
        free(tmpl);
    } else if (st == PV_ERR_NOT_FOUND) {
        st = PV_OK;
        const struct json *ct = json_get(tc, "chat_template");
        const char *s = NULL;
        if (ct && ct->type == JSON_STRING)
            s = ct->s;
        for (size_t i = 0; ct && ct->type == JSON_ARRAY && i < ct->n; i++) {
            const char *name, *t;
            if (json_get_str(&ct->items[i], "template", &t) &&
                (!s || (json_get_str(&ct->items[i], "name", &name) && strcmp(name, "default") == 0)))
                s = t;
        }
        if (s)
            gw_str(w, "tokenizer.chat_template", s);
    }
out:
    free(texts);
    free(types);
    return st;
}

/* Build the metadata GGUF (hyper-parameters + tokenizer) and open it. */
static enum pv_status build_meta(struct mlx_ctx *c, struct gguf_file **meta)
{
    struct gw w = {PV_BUF_INIT, 0, false};
    const struct json *root;
    enum pv_status st;
    char name[4200];
    uint32_t magic_version[2] = {0x46554747u, 3}; /* "GGUF", v3 */
    uint64_t counts[2] = {0, 0};

    *meta = NULL;
    st = read_json(c, "config.json", true, &root);
    if (st != PV_OK)
        return st;
    gw_raw(&w, magic_version, sizeof magic_version);
    gw_raw(&w, counts, sizeof counts);
    st = write_hparams(c, root, &w);
    if (st == PV_OK)
        st = write_tokenizer(c, &w);
    if (st == PV_OK && w.oom)
        st = pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for the metadata", c->dir);
    if (st != PV_OK) {
        buf_release(&w.b);
        return st;
    }
    memcpy(w.b.data + 16, &w.n_kv, 8);
    size_t len;
    char *data = buf_detach(&w.b, &len);
    snprintf(name, sizeof name, "%s (metadata)", c->dir);
    return gguf_open_mem(name, data, len, meta, c->err);
}

/* ---- shards ----------------------------------------------------------------------- */

static enum pv_status open_shards(struct mlx_ctx *c, struct mlx_dir *d)
{
    const struct json *index;
    char path[4096];
    TRY(read_json(c, "model.safetensors.index.json", false, &index));
    if (!index) {
        snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
        d->shards = xcalloc(1, sizeof(*d->shards));
        TRY(st_open(path, &d->shards[0], c->err));
        d->n_shards = 1;
        return PV_OK;
    }
    const struct json *wm = json_get(index, "weight_map");
    if (!wm || wm->type != JSON_OBJECT || wm->n == 0)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s/model.safetensors.index.json: 'weight_map' is missing or empty",
                          c->dir);
    /* the distinct shard files, in order of first mention */
    const char **files = try_calloc(wm->n, sizeof(*files));
    size_t n_files = 0;
    if (!files)
        return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for the shard list", c->dir);
    enum pv_status st = PV_OK;
    for (size_t i = 0; i < wm->n && st == PV_OK; i++) {
        const struct json *v = &wm->items[i];
        if (v->type != JSON_STRING || v->n == 0 || strchr(v->s, '/') || strcmp(v->s, "..") == 0) {
            st = pv_err_set(c->err, PV_ERR_FORMAT,
                            "%s/model.safetensors.index.json: shard of '%.64s' is not a file name in the directory",
                            c->dir, wm->keys[i]);
            break;
        }
        size_t k = 0;
        while (k < n_files && strcmp(files[k], v->s) != 0)
            k++;
        if (k == n_files)
            files[n_files++] = v->s;
    }
    if (st == PV_OK && n_files > MLX_MAX_SHARDS)
        st = pv_err_set(c->err, PV_ERR_FORMAT, "%s: more than %d shards", c->dir, MLX_MAX_SHARDS);
    if (st == PV_OK) {
        d->shards = xcalloc(n_files, sizeof(*d->shards));
        for (size_t k = 0; k < n_files && st == PV_OK; k++) {
            snprintf(path, sizeof path, "%s/%s", c->dir, files[k]);
            st = st_open(path, &d->shards[k], c->err);
            if (st == PV_OK)
                d->n_shards++;
        }
    }
    /* every tensor the index names is in the shard it names */
    for (size_t i = 0; i < wm->n && st == PV_OK; i++) {
        size_t k = 0;
        while (k < n_files && strcmp(files[k], wm->items[i].s) != 0)
            k++;
        if (!st_find(d->shards[k], wm->keys[i]))
            st = pv_err_set(c->err, PV_ERR_FORMAT,
                            "%s/model.safetensors.index.json: tensor '%.64s' is not in shard '%s'",
                            c->dir, wm->keys[i], files[k]);
    }
    free(files);
    return st;
}

/* The tensor `name` in any shard; *dup set when two shards hold it. */
static const struct st_tensor *find_any(const struct mlx_dir *d, const char *name, bool *dup)
{
    const struct st_tensor *t = NULL;
    *dup = false;
    for (size_t k = 0; k < d->n_shards; k++) {
        const struct st_tensor *u = st_find(d->shards[k], name);
        if (u && t)
            *dup = true;
        if (u && !t)
            t = u;
    }
    return t;
}

/* ---- tensors ---------------------------------------------------------------------- */

static void *own(struct mlx_dir *d, void *p)
{
    if (!p)
        return NULL;
    if (d->n_owned == d->cap_owned) {
        d->cap_owned = d->cap_owned ? d->cap_owned * 2 : 64;
        d->owned = xrealloc(d->owned, d->cap_owned * sizeof(*d->owned));
    }
    d->owned[d->n_owned++] = p;
    return p;
}

/* Hugging Face module name (without .weight/.bias) -> GGUF name stem; false if unknown. */
static bool map_name(const struct mlx_ctx *c, const char *hf, char *out, size_t cap)
{
    static const struct {
        const char *hf, *gguf, *gemma3;
    } layer_map[] = {
        {"input_layernorm", "attn_norm", NULL},
        {"self_attn.q_proj", "attn_q", NULL},
        {"self_attn.k_proj", "attn_k", NULL},
        {"self_attn.v_proj", "attn_v", NULL},
        {"self_attn.o_proj", "attn_output", NULL},
        {"self_attn.qkv_proj", "attn_qkv", NULL},
        {"self_attn.q_norm", "attn_q_norm", NULL},
        {"self_attn.k_norm", "attn_k_norm", NULL},
        {"post_attention_layernorm", "ffn_norm", "post_attention_norm"},
        {"pre_feedforward_layernorm", NULL, "ffn_norm"},
        {"post_feedforward_layernorm", NULL, "post_ffw_norm"},
        {"mlp.gate_proj", "ffn_gate", NULL},
        {"mlp.up_proj", "ffn_up", NULL},
        {"mlp.down_proj", "ffn_down", NULL},
        {"mlp.gate_up_proj", "ffn_up", NULL},
    };
    if (strncmp(hf, "language_model.", 15) == 0)
        hf += 15;
    if (strcmp(hf, "model.embed_tokens") == 0)
        return snprintf(out, cap, "token_embd"), true;
    if (strcmp(hf, "model.norm") == 0)
        return snprintf(out, cap, "output_norm"), true;
    if (strcmp(hf, "lm_head") == 0)
        return snprintf(out, cap, "output"), true;
    unsigned il;
    int used = 0;
    if (sscanf(hf, "model.layers.%u.%n", &il, &used) != 1 || used == 0 || il > 100000)
        return false;
    const char *rest = hf + used;
    for (size_t i = 0; i < PV_ARRAY_LEN(layer_map); i++)
        if (strcmp(rest, layer_map[i].hf) == 0) {
            const char *g = c->gemma3 && layer_map[i].gemma3 ? layer_map[i].gemma3 : layer_map[i].gguf;
            if (!g)
                return false;
            snprintf(out, cap, "blk.%u.%s", il, g);
            return true;
        }
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static float st_elem(const struct st_tensor *t, size_t i)
{
    const uint8_t *p = (const uint8_t *)t->data + i * st_dtype_bytes(t->dtype);
    uint16_t h;
    float f;
    switch (t->dtype) {
    case ST_F32: memcpy(&f, p, 4); return f;
    case ST_F16: memcpy(&h, p, 2); return f16_to_f32(h);
    case ST_BF16: memcpy(&h, p, 2); return bf16_to_f32(h);
    default: return 0;
    }
}

static bool is_float(enum st_dtype t) { return t == ST_F32 || t == ST_F16 || t == ST_BF16; }

/* The per-module quantization of `module` (config "quantization" entries): bits and
 * group size, 0 when the module is not quantized. */
static void module_quant(const struct mlx_ctx *c, const char *module, uint32_t *bits, uint32_t *gs)
{
    *bits = c->hp->bits;
    *gs = c->hp->group_size;
    const struct json *m = json_get(c->quant, module);
    double b, g;
    if (m && m->type == JSON_BOOL && !m->b)
        *bits = *gs = 0;
    else if (m && m->type == JSON_OBJECT && json_get_num(m, "bits", &b) &&
             json_get_num(m, "group_size", &g))
        *bits = (uint32_t)b, *gs = (uint32_t)g;
}

static enum pv_status add_tensor(struct mlx_dir *d, const char *gguf_name, uint32_t type,
                                 int n_dims, int64_t ne0, int64_t ne1, const void *data)
{
    if (d->n_tensors == d->cap_tensors) {
        d->cap_tensors = d->cap_tensors ? d->cap_tensors * 2 : 256;
        d->tensors = xrealloc(d->tensors, (size_t)d->cap_tensors * sizeof(*d->tensors));
    }
    struct pv_tensor *t = &d->tensors[d->n_tensors++];
    memset(t, 0, sizeof(*t));
    t->name = own(d, xstrdup(gguf_name));
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = t->ne[3] = 1;
    t->row_bytes = (size_t)(ne0 / pv_type_get(type)->blck) * pv_type_get(type)->type_bytes;
    t->n_bytes = t->row_bytes * (size_t)ne1;
    t->data = data;
    return PV_OK;
}

/* One safetensors tensor `hf` (a .weight or .bias) into the table. */
static enum pv_status convert(struct mlx_ctx *c, struct mlx_dir *d, const struct st_tensor *t,
                              const char *path)
{
    char module[512], gname[600];
    const char *hf = t->name;
    bool is_bias = ends_with(hf, ".bias");
    if (!ends_with(hf, ".weight") && !is_bias)
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s: tensor '%s' is not used by pensieve's %s recipe", path, hf, c->arch);
    size_t stem = strlen(hf) - (is_bias ? 5 : 7);
    if (stem >= sizeof module)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor name '%.64s...' is too long", path, hf);
    memcpy(module, hf, stem);
    module[stem] = '\0';
    if (!map_name(c, module, gname, sizeof gname - 8))
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s: tensor '%s' is not used by pensieve's %s recipe", path, hf, c->arch);
    strcat(gname, is_bias ? ".bias" : ".weight");

    /* vectors: f32 copies (Gemma 3 norms as 1 + w) */
    if (t->n_dims == 1) {
        if (!is_float(t->dtype))
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s: tensor '%s' has dtype %s; vectors must be F32, F16 or BF16", path,
                              hf, st_dtype_name(t->dtype));
        size_t n = (size_t)t->shape[0];
        float *v = own(d, try_calloc(n + 1, sizeof(float)));
        if (!v)
            return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for tensor '%s'", path, hf);
        bool plus1 = c->gemma3 && ends_with(gname, "norm.weight");
        for (size_t i = 0; i < n; i++)
            v[i] = st_elem(t, i) + (plus1 ? 1.0f : 0.0f);
        return add_tensor(d, gname, PV_TYPE_F32, 1, (int64_t)n, 1, v);
    }
    if (t->n_dims != 2 || t->shape[0] < 1 || t->shape[1] < 1)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' has %d dims, expected 1 or 2",
                          path, hf, t->n_dims);
    int64_t rows = t->shape[0], cols = t->shape[1];

    /* quantized: weight U32 [rows][cols * 32 / bits] + scales, biases [rows][in / gs] */
    if (t->dtype == ST_U32) {
        char sname[600], bname[600];
        bool dup1, dup2;
        uint32_t bits, gs;
        module_quant(c, module, &bits, &gs);
        snprintf(sname, sizeof sname, "%s.scales", module);
        snprintf(bname, sizeof bname, "%s.biases", module);
        const struct st_tensor *s = find_any(d, sname, &dup1), *b = find_any(d, bname, &dup2);
        uint32_t type = pv_type_mlx(bits, gs);
        if (!s || !b || type == PV_TYPE_COUNT)
            return pv_err_set(c->err, PV_ERR_FORMAT,
                              "%s: tensor '%s' is U32 but '%s'/'%s' are missing or config.json gives no supported quantization",
                              path, hf, sname, bname);
        int64_t in = s->shape[1] * (int64_t)gs;
        if (s->n_dims != 2 || b->n_dims != 2 || s->shape[0] != rows || b->shape[0] != rows ||
            b->shape[1] != s->shape[1] || s->dtype != b->dtype || !is_float(s->dtype) ||
            cols * 32 != in * (int64_t)bits)
            return pv_err_set(c->err, PV_ERR_FORMAT,
                              "%s: quantized tensor '%s' [%lld, %lld] does not match its scales/biases "
                              "[%lld, %lld] (%s) for %u bits in groups of %u",
                              path, hf, (long long)rows, (long long)cols, (long long)s->shape[0],
                              (long long)s->shape[1], st_dtype_name(s->dtype), bits, gs);
        size_t bb = PV_MLX_BLOCK_BYTES(bits, gs), qb = gs * bits / 8;
        size_t n_groups = (size_t)s->shape[1], total;
        if (pv_mul_overflow((size_t)rows * n_groups, bb, &total))
            return pv_err_set(c->err, PV_ERR_TOO_LARGE, "%s: tensor '%s' is too large", path, hf);
        uint8_t *out = own(d, try_malloc(total));
        if (!out)
            return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for tensor '%s' (%zu bytes)",
                              path, hf, total);
        const uint8_t *q = t->data;
        for (int64_t r = 0; r < rows; r++)
            for (size_t g = 0; g < n_groups; g++) {
                size_t i = (size_t)r * n_groups + g;
                struct pv_block_mlx_head h = {st_elem(s, i), st_elem(b, i)};
                uint8_t *blk = out + i * bb;
                memcpy(blk, &h, sizeof h);
                memcpy(blk + sizeof h, q + (size_t)r * (size_t)cols * 4 + g * qb, qb);
            }
        st_release(t); /* the packed copy replaces them: keep one copy in memory */
        st_release(s);
        st_release(b);
        return add_tensor(d, gname, type, 2, in, rows, out);
    }
    if (!is_float(t->dtype))
        return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has dtype %s (supported: F32, F16, BF16, U32 quantized)",
                          path, hf, st_dtype_name(t->dtype));
    /* float matrix: a view when aligned, else a copy */
    uint32_t type = t->dtype == ST_F32 ? PV_TYPE_F32 : t->dtype == ST_F16 ? PV_TYPE_F16 : PV_TYPE_BF16;
    const void *data = t->data;
    if ((uintptr_t)data % st_dtype_bytes(t->dtype) != 0) {
        void *copy = own(d, try_malloc(t->n_bytes));
        if (!copy)
            return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for tensor '%s'", path, hf);
        memcpy(copy, data, t->n_bytes);
        data = copy;
    }
    return add_tensor(d, gname, type, 2, cols, rows, data);
}

static enum pv_status convert_all(struct mlx_ctx *c, struct mlx_dir *d)
{
    for (size_t k = 0; k < d->n_shards; k++) {
        const struct st_file *f = d->shards[k];
        for (size_t i = 0; i < st_n_tensors(f); i++) {
            const struct st_tensor *t = st_tensor(f, i);
            bool dup;
            if (ends_with(t->name, ".scales") || ends_with(t->name, ".biases"))
                continue; /* read with their weight */
            find_any(d, t->name, &dup);
            if (dup)
                return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' is in two shards",
                                  c->dir, t->name);
            TRY(convert(c, d, t, st_path(f)));
        }
    }
    /* every .scales / .biases belongs to a quantized weight */
    for (size_t k = 0; k < d->n_shards; k++) {
        const struct st_file *f = d->shards[k];
        for (size_t i = 0; i < st_n_tensors(f); i++) {
            const char *name = st_tensor(f, i)->name;
            char w[600];
            bool dup;
            if (!ends_with(name, ".scales") && !ends_with(name, ".biases"))
                continue;
            snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(name) - 7), name);
            const struct st_tensor *wt = find_any(d, w, &dup);
            if (!wt || wt->dtype != ST_U32)
                return pv_err_set(c->err, PV_ERR_FORMAT,
                                  "%s: tensor '%s' has no quantized (U32) weight '%s'", st_path(f),
                                  name, w);
        }
    }
    return PV_OK;
}

/* ---- open / close ----------------------------------------------------------------- */

static void ctx_init(struct mlx_ctx *c, const char *dir, struct mlx_hparams *hp, struct pv_err *err)
{
    memset(c, 0, sizeof(*c));
    c->dir = dir;
    c->hp = hp;
    c->err = err;
    memset(hp, 0, sizeof(*hp));
    arena_init(&c->arena, 1 << 20);
}

enum pv_status mlx_open(const char *dir, struct mlx_dir **out, struct gguf_file **meta,
                        struct mlx_hparams *hp, struct pv_err *err)
{
    struct mlx_ctx c;
    struct mlx_dir *d = xcalloc(1, sizeof(*d));
    enum pv_status st;
    *out = NULL;
    *meta = NULL;
    ctx_init(&c, dir, hp, err);
    st = build_meta(&c, meta);
    if (st == PV_OK)
        st = open_shards(&c, d);
    if (st == PV_OK)
        st = convert_all(&c, d);
    if (st == PV_OK && c.rope_factors) {
        st = add_tensor(d, "rope_freqs.weight", PV_TYPE_F32, 1, c.n_rope_factors, 1,
                        own(d, c.rope_factors));
        c.rope_factors = NULL;
    }
    free(c.rope_factors);
    arena_release(&c.arena);
    if (st != PV_OK) {
        gguf_close(*meta);
        *meta = NULL;
        mlx_close(d);
        return st;
    }
    for (size_t k = 0; k < d->n_shards; k++)
        hp->file_bytes += st_file_bytes(d->shards[k]);
    *out = d;
    return PV_OK;
}

enum pv_status mlx_probe(const char *dir, struct gguf_file **meta, struct mlx_hparams *hp,
                         uint64_t *n_params, uint64_t *n_tensors, struct pv_err *err)
{
    struct mlx_ctx c;
    struct mlx_dir *d = xcalloc(1, sizeof(*d));
    enum pv_status st;
    *meta = NULL;
    ctx_init(&c, dir, hp, err);
    st = build_meta(&c, meta);
    if (st == PV_OK && n_params) {
        *n_params = *n_tensors = 0;
        st = open_shards(&c, d);
    }
    for (size_t k = 0; st == PV_OK && k < d->n_shards; k++) {
        hp->file_bytes += st_file_bytes(d->shards[k]);
        for (size_t i = 0; i < st_n_tensors(d->shards[k]); i++) {
            const struct st_tensor *t = st_tensor(d->shards[k], i);
            if (ends_with(t->name, ".scales") || ends_with(t->name, ".biases"))
                continue;
            uint64_t n = 1;
            for (int j = 0; j < t->n_dims; j++)
                n *= (uint64_t)t->shape[j];
            if (t->dtype == ST_U32 && hp->bits)
                n = n * 32 / hp->bits;
            *n_params += n;
            (*n_tensors)++;
        }
    }
    free(c.rope_factors);
    arena_release(&c.arena);
    mlx_close(d);
    if (st != PV_OK) {
        gguf_close(*meta);
        *meta = NULL;
    }
    return st;
}

void mlx_close(struct mlx_dir *d)
{
    if (!d)
        return;
    for (size_t k = 0; k < d->n_shards; k++)
        st_close(d->shards[k]);
    free(d->shards);
    for (size_t i = 0; i < d->n_owned; i++)
        free(d->owned[i]);
    free(d->owned);
    free(d->tensors);
    free(d);
}

int64_t mlx_n_tensors(const struct mlx_dir *d) { return d->n_tensors; }

const struct pv_tensor *mlx_tensor(const struct mlx_dir *d, int64_t i)
{
    return i >= 0 && i < d->n_tensors ? &d->tensors[i] : NULL;
}

int64_t mlx_find_tensor(const struct mlx_dir *d, const char *name)
{
    for (int64_t i = 0; i < d->n_tensors; i++)
        if (strcmp(d->tensors[i].name, name) == 0)
            return i;
    return -1;
}
