/*
 * test_model.c - unit tests of model loading (model/model.c) under ASan/UBSan.
 *
 * Writes tiny zero-weight models of each architecture from a spec (metadata + tensor
 * shapes), checks the hyper-parameters and bindings the loader derives, then breaks the
 * spec one way at a time (missing or misshapen tensors, extra tensors, bad or missing
 * keys, unsupported architecture and scaling) and checks the error. Also loads the
 * default model when it is installed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "model/model.h"
#include "util/util.h"

#define E 32   /* n_embd */
#define NH 2   /* n_head */
#define NKV 1  /* n_head_kv */
#define HD 16  /* head_dim */
#define FF 64  /* n_ff */
#define NV 8   /* n_vocab */

struct kv_spec {
    char key[96];
    enum gguf_vtype type;     /* GGUF_U32, GGUF_F32, GGUF_STRING or GGUF_ARRAY (of u32) */
    uint32_t u32;
    float f32;
    char str[32];
    uint32_t arr[8];
    int arr_n;
};

struct t_spec {
    char name[64];
    int64_t ne0, ne1;         /* ne1 0: a vector */
    uint32_t type;
};

struct spec {
    char arch[32];
    struct kv_spec kv[40];
    int n_kv;
    struct t_spec t[128];
    int n_t;
    bool no_vocab;            /* leave out the tokenizer keys write_spec adds */
};

static struct kv_spec *kv_slot(struct spec *s, const char *key)
{
    for (int i = 0; i < s->n_kv; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return &s->kv[i];
    PV_ASSERT(s->n_kv < (int)PV_ARRAY_LEN(s->kv));
    struct kv_spec *k = &s->kv[s->n_kv++];
    memset(k, 0, sizeof *k);
    snprintf(k->key, sizeof k->key, "%s", key);
    return k;
}

/* "{arch}.suffix" when the key starts with '.', else the key itself. */
static const char *key_of(const struct spec *s, const char *k, char *buf, size_t cap)
{
    if (k[0] != '.')
        return k;
    snprintf(buf, cap, "%s%s", s->arch, k);
    return buf;
}

static void set_u32(struct spec *s, const char *k, uint32_t v)
{
    char b[96];
    struct kv_spec *x = kv_slot(s, key_of(s, k, b, sizeof b));
    x->type = GGUF_U32;
    x->u32 = v;
}
static void set_f32(struct spec *s, const char *k, float v)
{
    char b[96];
    struct kv_spec *x = kv_slot(s, key_of(s, k, b, sizeof b));
    x->type = GGUF_F32;
    x->f32 = v;
}
static void set_str(struct spec *s, const char *k, const char *v)
{
    char b[96];
    struct kv_spec *x = kv_slot(s, key_of(s, k, b, sizeof b));
    x->type = GGUF_STRING;
    snprintf(x->str, sizeof x->str, "%s", v);
}
static void set_arr(struct spec *s, const char *k, const uint32_t *v, int n)
{
    char b[96];
    struct kv_spec *x = kv_slot(s, key_of(s, k, b, sizeof b));
    x->type = GGUF_ARRAY;
    memcpy(x->arr, v, (size_t)n * 4);
    x->arr_n = n;
}
static void drop_kv(struct spec *s, const char *k)
{
    char b[96];
    k = key_of(s, k, b, sizeof b);
    for (int i = 0; i < s->n_kv; i++)
        if (strcmp(s->kv[i].key, k) == 0)
            s->kv[i] = s->kv[--s->n_kv];
}

static struct t_spec *find_t(struct spec *s, const char *name)
{
    for (int i = 0; i < s->n_t; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return &s->t[i];
    return NULL;
}
static void add_t(struct spec *s, const char *name, int64_t ne0, int64_t ne1)
{
    PV_ASSERT(s->n_t < (int)PV_ARRAY_LEN(s->t));
    struct t_spec *t = &s->t[s->n_t++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->type = PV_TYPE_F32;
}
static void add_lt(struct spec *s, int il, const char *suffix, int64_t ne0, int64_t ne1)
{
    char n[64];
    snprintf(n, sizeof n, "blk.%d.%s", il, suffix);
    add_t(s, n, ne0, ne1);
}
static void drop_t(struct spec *s, const char *name)
{
    struct t_spec *t = find_t(s, name);
    PV_ASSERT(t);
    *t = s->t[--s->n_t];
}

/* The spec of a valid model, mirroring tests/tools/gen_model.py at a smaller size. */
static void spec_init(struct spec *s, const char *arch, int n_layer)
{
    memset(s, 0, sizeof *s);
    snprintf(s->arch, sizeof s->arch, "%s", arch);
    bool gemma = !strcmp(arch, "gemma3"), phi = !strcmp(arch, "phi3");
    bool qwen2 = !strcmp(arch, "qwen2"), qknorm = gemma || !strcmp(arch, "qwen3");
    set_str(s, "general.architecture", arch);
    set_str(s, "general.name", "tiny");
    set_u32(s, ".context_length", 128);
    set_u32(s, ".embedding_length", E);
    set_u32(s, ".block_count", (uint32_t)n_layer);
    set_u32(s, ".feed_forward_length", FF);
    set_u32(s, ".attention.head_count", NH);
    set_u32(s, ".attention.head_count_kv", NKV);
    set_f32(s, ".attention.layer_norm_rms_epsilon", 1e-6f);
    set_f32(s, ".rope.freq_base", 1e6f);
    if (gemma)
        set_u32(s, ".attention.sliding_window", 4);
    add_t(s, "token_embd.weight", E, NV);
    add_t(s, "output_norm.weight", E, 0);
    if (!gemma)
        add_t(s, "output.weight", E, NV);
    for (int il = 0; il < n_layer; il++) {
        add_lt(s, il, "attn_norm.weight", E, 0);
        if (phi) {
            add_lt(s, il, "attn_qkv.weight", E, (NH + 2 * NKV) * HD);
        } else {
            add_lt(s, il, "attn_q.weight", E, NH * HD);
            add_lt(s, il, "attn_k.weight", E, NKV * HD);
            add_lt(s, il, "attn_v.weight", E, NKV * HD);
        }
        if (qwen2) {
            add_lt(s, il, "attn_q.bias", NH * HD, 0);
            add_lt(s, il, "attn_k.bias", NKV * HD, 0);
            add_lt(s, il, "attn_v.bias", NKV * HD, 0);
        }
        add_lt(s, il, "attn_output.weight", NH * HD, E);
        if (qknorm) {
            add_lt(s, il, "attn_q_norm.weight", HD, 0);
            add_lt(s, il, "attn_k_norm.weight", HD, 0);
        }
        if (gemma)
            add_lt(s, il, "post_attention_norm.weight", E, 0);
        add_lt(s, il, "ffn_norm.weight", E, 0);
        if (phi) {
            add_lt(s, il, "ffn_up.weight", E, 2 * FF);
        } else {
            add_lt(s, il, "ffn_gate.weight", E, FF);
            add_lt(s, il, "ffn_up.weight", E, FF);
        }
        add_lt(s, il, "ffn_down.weight", FF, E);
        if (gemma)
            add_lt(s, il, "post_ffw_norm.weight", E, 0);
    }
}

/* ---- writing a spec as GGUF ------------------------------------------------------- */

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s)
{
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

static char model_path[64];

static const char *write_spec(const struct spec *s)
{
    snprintf(model_path, sizeof model_path, "%s/pv_test_model_%d.gguf",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    FILE *f = fopen(model_path, "wb");
    PV_ASSERT(f);
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, (uint64_t)s->n_t);
    w_u64(f, (uint64_t)s->n_kv + (s->no_vocab ? 0 : 4));
    if (!s->no_vocab) {
        /* an SPM vocabulary of NV tokens: <unk> <s> </s> and five letters */
        static const char *const toks[NV] = {"<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"};
        static const int32_t types[NV] = {2, 3, 3, 1, 1, 1, 1, 1};
        w_str(f, "tokenizer.ggml.model");
        w_u32(f, GGUF_STRING);
        w_str(f, "llama");
        w_str(f, "tokenizer.ggml.tokens");
        w_u32(f, GGUF_ARRAY);
        w_u32(f, GGUF_STRING);
        w_u64(f, NV);
        for (int i = 0; i < NV; i++)
            w_str(f, toks[i]);
        w_str(f, "tokenizer.ggml.scores");
        w_u32(f, GGUF_ARRAY);
        w_u32(f, GGUF_F32);
        w_u64(f, NV);
        for (int i = 0; i < NV; i++) {
            float sc = -(float)i;
            fwrite(&sc, 4, 1, f);
        }
        w_str(f, "tokenizer.ggml.token_type");
        w_u32(f, GGUF_ARRAY);
        w_u32(f, GGUF_I32);
        w_u64(f, NV);
        fwrite(types, 4, NV, f);
    }
    for (int i = 0; i < s->n_kv; i++) {
        const struct kv_spec *k = &s->kv[i];
        w_str(f, k->key);
        w_u32(f, k->type);
        if (k->type == GGUF_U32)
            w_u32(f, k->u32);
        else if (k->type == GGUF_F32)
            fwrite(&k->f32, 4, 1, f);
        else if (k->type == GGUF_STRING)
            w_str(f, k->str);
        else {
            w_u32(f, GGUF_U32);
            w_u64(f, (uint64_t)k->arr_n);
            fwrite(k->arr, 4, (size_t)k->arr_n, f);
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < s->n_t; i++) {
        const struct t_spec *t = &s->t[i];
        const struct pv_type_info *ti = pv_type_get(t->type);
        w_str(f, t->name);
        w_u32(f, t->ne1 ? 2 : 1);
        w_u64(f, (uint64_t)t->ne0);
        if (t->ne1)
            w_u64(f, (uint64_t)t->ne1);
        w_u32(f, t->type);
        w_u64(f, off);
        off += ((uint64_t)t->ne0 / ti->blck * ti->type_bytes * (uint64_t)(t->ne1 ? t->ne1 : 1) +
                31) / 32 * 32;
    }
    long pos = ftell(f);
    while (pos % 32) {
        fputc(0, f);
        pos++;
    }
    static const uint8_t zeros[4096];
    while (off > 0) {
        size_t n = off > sizeof zeros ? sizeof zeros : (size_t)off;
        fwrite(zeros, 1, n, f);
        off -= n;
    }
    fclose(f);
    return model_path;
}

static struct pv_model *load_ok(const struct spec *s)
{
    struct pv_model *m = NULL;
    struct pv_err err = {0};
    if (pv_model_load(write_spec(s), NULL, &m, &err) != PV_OK) {
        harness_failed_checks++;
        fprintf(stderr, "  load of a valid %s spec failed: %s\n", s->arch, err.msg);
    }
    return m;
}

static void expect_error(const struct spec *s, enum pv_status want, const char *needle,
                         const char *label)
{
    struct pv_model *m = (struct pv_model *)1;
    struct pv_err err = {0};
    enum pv_status st = pv_model_load(write_spec(s), NULL, &m, &err);
    if (st != want || m != NULL || !strstr(err.msg, model_path) || !strstr(err.msg, needle)) {
        harness_failed_checks++;
        fprintf(stderr, "  %s: status %s (want %s), message: %s\n", label, pv_status_name(st),
                pv_status_name(want), err.msg);
    }
    if (st == PV_OK)
        pv_model_free(m);
}

/* ---- valid models ----------------------------------------------------------------- */

static void test_each_arch_loads(void)
{
    static const char *const archs[] = {"gemma3", "llama", "qwen2", "qwen3", "phi3"};
    for (size_t a = 0; a < PV_ARRAY_LEN(archs); a++) {
        struct spec s;
        bool gemma = a == 0, llama = a == 1, qwen2 = a == 2, qwen3 = a == 3, phi = a == 4;
        spec_init(&s, archs[a], gemma ? 6 : 2);
        struct pv_model *m = load_ok(&s);
        if (!m)
            continue;
        const struct model_hparams *hp = &m->hp;
        CHECK_EQ_STR(pv_model_arch(m), archs[a]);
        CHECK_EQ_STR(model_arch_name(m->arch), archs[a]);
        CHECK_EQ_STR(pv_model_name(m), "tiny");
        CHECK_EQ_INT(pv_model_n_vocab(m), NV);
        CHECK_EQ_INT(pv_model_n_embd(m), E);
        CHECK_EQ_INT(pv_model_n_layer(m), gemma ? 6 : 2);
        CHECK_EQ_INT(pv_model_n_ctx_train(m), 128);
        CHECK(pv_model_chat_template(m) == NULL);
        CHECK_EQ_INT(hp->n_head, NH);
        CHECK_EQ_INT(hp->n_head_kv, NKV);
        CHECK_EQ_INT(hp->head_dim_k, HD);
        CHECK_EQ_INT(hp->head_dim_v, HD);
        CHECK_EQ_INT(hp->n_rot, HD);
        CHECK_EQ_INT(hp->n_ff, FF);
        CHECK_NEAR(hp->rms_eps, 1e-6, 1e-12);
        CHECK_NEAR(hp->rope_base, 1e6, 1e-3);
        CHECK_NEAR(hp->rope_freq_scale, 1.0, 0);
        CHECK(hp->rope_neox == !llama);
        CHECK(hp->ffn_gelu == gemma);
        CHECK_NEAR(hp->attn_scale, 1.0 / sqrt(HD), 1e-7);
        CHECK_NEAR(hp->embd_scale, gemma ? sqrt(E) : 1.0, 1e-6);
        CHECK_EQ_INT(hp->n_swa, gemma ? 4 : 0);
        CHECK(m->tok_embd && m->output_norm && m->output);
        CHECK((m->output == m->tok_embd) == gemma);
        CHECK(m->rope_freqs == NULL);
        CHECK(m->vocab != NULL && pv_model_vocab(m) == m->vocab);
        if (m->vocab) {
            CHECK_EQ_INT(pv_vocab_n_tokens(pv_model_vocab(m)), NV);
            CHECK_EQ_INT(pv_vocab_bos(pv_model_vocab(m)), 1);
        }
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            const struct model_layer *L = &m->layers[il];
            CHECK(L->attn_norm && L->wo && L->ffn_norm && L->ffn_down);
            CHECK((L->wqkv != NULL) == phi && (L->wq != NULL) == !phi);
            CHECK((L->wk != NULL) == !phi && (L->wv != NULL) == !phi);
            CHECK((L->bq != NULL) == qwen2 && (L->bk != NULL) == qwen2 && (L->bv != NULL) == qwen2);
            CHECK((L->q_norm != NULL) == (gemma || qwen3) && (L->k_norm != NULL) == (gemma || qwen3));
            CHECK((L->post_attn_norm != NULL) == gemma && (L->post_ffn_norm != NULL) == gemma);
            CHECK((L->ffn_gate_up != NULL) == phi);
            CHECK((L->ffn_gate != NULL) == !phi && (L->ffn_up != NULL) == !phi);
            bool swa = gemma && il % 6 < 5;
            CHECK(L->is_swa == swa);
            CHECK_NEAR(L->rope_base, swa ? 10000.0 : 1e6, 1e-3);
            CHECK_NEAR(L->rope_freq_scale, 1.0, 0);
        }
        if (phi) {
            CHECK_EQ_INT(m->layers[0].wqkv->ne[1], (NH + 2 * NKV) * HD);
            CHECK_EQ_INT(m->layers[0].ffn_gate_up->ne[1], 2 * FF);
        }
        /* weight bytes: every tensor is f32 */
        uint64_t want = 0;
        for (int i = 0; i < s.n_t; i++)
            want += (uint64_t)s.t[i].ne0 * (uint64_t)(s.t[i].ne1 ? s.t[i].ne1 : 1) * 4;
        CHECK_EQ_INT(pv_model_weight_bytes(m), want);
        pv_model_free(m);
    }
    pv_model_free(NULL);
}

static void test_hparam_keys(void)
{
    struct spec s;
    struct pv_model *m;

    /* llama: attention.scale, linear rope scaling, explicit key/value lengths */
    spec_init(&s, "llama", 2);
    set_f32(&s, ".attention.scale", 0.125f);
    set_str(&s, ".rope.scaling.type", "linear");
    set_f32(&s, ".rope.scaling.factor", 4.0f);
    set_u32(&s, ".rope.dimension_count", 8);
    if ((m = load_ok(&s))) {
        CHECK_NEAR(m->hp.attn_scale, 0.125, 0);
        CHECK_NEAR(m->hp.rope_freq_scale, 0.25, 1e-7);
        CHECK_NEAR(m->layers[1].rope_freq_scale, 0.25, 1e-7);
        CHECK_EQ_INT(m->hp.n_rot, 8);
        pv_model_free(m);
    }
    /* defaults: no head_count_kv -> n_head (then shapes must follow); no freq_base */
    spec_init(&s, "qwen3", 1);
    drop_kv(&s, ".attention.head_count_kv");
    drop_kv(&s, ".rope.freq_base");
    find_t(&s, "blk.0.attn_k.weight")->ne1 = NH * HD;
    find_t(&s, "blk.0.attn_v.weight")->ne1 = NH * HD;
    if ((m = load_ok(&s))) {
        CHECK_EQ_INT(m->hp.n_head_kv, NH);
        CHECK_NEAR(m->hp.rope_base, 10000.0, 0);
        pv_model_free(m);
    }
    /* per-layer arrays with equal values are accepted */
    spec_init(&s, "llama", 2);
    uint32_t kvs[2] = {NKV, NKV};
    set_arr(&s, ".attention.head_count_kv", kvs, 2);
    if ((m = load_ok(&s))) {
        CHECK_EQ_INT(m->hp.n_head_kv, NKV);
        pv_model_free(m);
    }
    /* gemma3 global layers use the scaled frequencies, sliding layers never */
    spec_init(&s, "gemma3", 6);
    set_str(&s, ".rope.scaling.type", "linear");
    set_f32(&s, ".rope.scaling.factor", 8.0f);
    if ((m = load_ok(&s))) {
        CHECK_NEAR(m->layers[0].rope_freq_scale, 1.0, 0);
        CHECK_NEAR(m->layers[5].rope_freq_scale, 0.125, 1e-7);
        pv_model_free(m);
    }
    /* llama with rope_freqs.weight [n_rot/2] */
    spec_init(&s, "llama", 1);
    add_t(&s, "rope_freqs.weight", HD / 2, 0);
    if ((m = load_ok(&s))) {
        CHECK(m->rope_freqs != NULL);
        pv_model_free(m);
    }
    /* phi3 with separate q/k/v instead of the fused tensor */
    spec_init(&s, "phi3", 1);
    drop_t(&s, "blk.0.attn_qkv.weight");
    add_lt(&s, 0, "attn_q.weight", E, NH * HD);
    add_lt(&s, 0, "attn_k.weight", E, NKV * HD);
    add_lt(&s, 0, "attn_v.weight", E, NKV * HD);
    if ((m = load_ok(&s))) {
        CHECK(m->layers[0].wqkv == NULL && m->layers[0].wq != NULL);
        pv_model_free(m);
    }
}

static void test_memory(void)
{
    struct spec s;
    struct pv_model *m;
    spec_init(&s, "gemma3", 6); /* 5 sliding layers (window 4) + 1 global */
    if (!(m = load_ok(&s)))
        return;
    uint64_t per_pos = NKV * (HD + HD) * 2;
    CHECK_EQ_INT(pv_model_kv_bytes(m, 100, 2.0), per_pos * (5 * 4 + 100));
    CHECK_EQ_INT(pv_model_kv_bytes(m, 3, 2.0), per_pos * 6 * 3);
    CHECK_EQ_INT(pv_model_kv_bytes(m, 100, 4.0), 2 * per_pos * (5 * 4 + 100));
    CHECK_EQ_INT(pv_model_memory_bytes(m, 100, 2.0),
                 pv_model_weight_bytes(m) + per_pos * (5 * 4 + 100));
    pv_model_free(m);
    spec_init(&s, "llama", 2);
    if (!(m = load_ok(&s)))
        return;
    CHECK_EQ_INT(pv_model_kv_bytes(m, 100, 2.0), per_pos * 2 * 100);
    pv_model_free(m);
}

/* ---- broken models ---------------------------------------------------------------- */

static void test_tensor_errors(void)
{
    struct spec s;
    spec_init(&s, "llama", 2);
    drop_t(&s, "blk.1.attn_k.weight");
    expect_error(&s, PV_ERR_FORMAT, "tensor 'blk.1.attn_k.weight' is missing", "missing tensor");

    spec_init(&s, "llama", 2);
    drop_t(&s, "token_embd.weight");
    expect_error(&s, PV_ERR_FORMAT, "'token_embd.weight' is missing", "missing embeddings");

    spec_init(&s, "qwen2", 1);
    drop_t(&s, "blk.0.attn_v.bias");
    expect_error(&s, PV_ERR_FORMAT, "'blk.0.attn_v.bias' is missing", "qwen2 bias missing");

    spec_init(&s, "gemma3", 6);
    drop_t(&s, "blk.3.post_ffw_norm.weight");
    expect_error(&s, PV_ERR_FORMAT, "'blk.3.post_ffw_norm.weight' is missing", "gemma post norm");

    spec_init(&s, "llama", 2);
    find_t(&s, "blk.0.ffn_down.weight")->ne0 = E;
    find_t(&s, "blk.0.ffn_down.weight")->ne1 = FF;
    expect_error(&s, PV_ERR_FORMAT, "'blk.0.ffn_down.weight' has shape [32, 64], expected [64, 32]",
                 "transposed tensor");

    spec_init(&s, "qwen3", 1);
    find_t(&s, "blk.0.attn_q_norm.weight")->ne0 = HD * 2;
    expect_error(&s, PV_ERR_FORMAT, "has shape [32], expected [16]", "wrong norm length");

    spec_init(&s, "llama", 1);
    find_t(&s, "output.weight")->ne1 = NV + 1;
    expect_error(&s, PV_ERR_FORMAT, "'output.weight' has shape", "output rows vs vocab");

    spec_init(&s, "phi3", 1);
    find_t(&s, "blk.0.ffn_up.weight")->ne1 = FF;
    expect_error(&s, PV_ERR_FORMAT, "'blk.0.ffn_up.weight' has shape [32, 64], expected [32, 128]",
                 "phi3 unfused up");

    spec_init(&s, "llama", 1);
    find_t(&s, "blk.0.ffn_norm.weight")->type = PV_TYPE_F16;
    expect_error(&s, PV_ERR_UNSUPPORTED, "needs f32", "f16 norm");

    spec_init(&s, "llama", 1);
    add_lt(&s, 0, "attn_output.bias", E, 0);
    expect_error(&s, PV_ERR_UNSUPPORTED, "tensor 'blk.0.attn_output.bias' is not used",
                 "extra tensor");

    spec_init(&s, "llama", 1);
    add_lt(&s, 1, "attn_norm.weight", E, 0); /* a layer beyond block_count */
    expect_error(&s, PV_ERR_UNSUPPORTED, "'blk.1.attn_norm.weight' is not used", "extra layer");

    spec_init(&s, "phi3", 1);
    add_t(&s, "rope_factors_long.weight", HD / 2, 0);
    expect_error(&s, PV_ERR_UNSUPPORTED, "LongRoPE", "phi3 longrope");
}

static void test_metadata_errors(void)
{
    struct spec s;
    spec_init(&s, "mamba", 1);
    expect_error(&s, PV_ERR_UNSUPPORTED,
                 "architecture 'mamba' is not supported (supported: gemma3, llama, qwen2, qwen3, phi3)",
                 "unsupported arch");

    spec_init(&s, "llama", 1);
    drop_kv(&s, "general.architecture");
    expect_error(&s, PV_ERR_FORMAT, "'general.architecture' is missing", "no architecture");

    spec_init(&s, "llama", 1);
    drop_kv(&s, ".embedding_length");
    expect_error(&s, PV_ERR_FORMAT, "'llama.embedding_length' is missing", "no n_embd");

    spec_init(&s, "llama", 1);
    drop_kv(&s, ".attention.layer_norm_rms_epsilon");
    expect_error(&s, PV_ERR_FORMAT, "layer_norm_rms_epsilon' is missing", "no eps");

    spec_init(&s, "llama", 1);
    set_str(&s, ".block_count", "one");
    expect_error(&s, PV_ERR_FORMAT, "'llama.block_count' has type string", "string block count");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".rope.freq_base", 10000);
    expect_error(&s, PV_ERR_FORMAT, "'llama.rope.freq_base' has type u32, expected f32",
                 "u32 freq base");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".block_count", 0);
    expect_error(&s, PV_ERR_FORMAT, "block_count is 0", "zero layers");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".block_count", 100000);
    expect_error(&s, PV_ERR_FORMAT, "block_count is 100000", "too many layers");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".attention.head_count_kv", 3);
    expect_error(&s, PV_ERR_FORMAT, "head_count_kv is 3", "more kv heads than heads");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".attention.head_count", 3);
    set_u32(&s, ".attention.head_count_kv", 2);
    expect_error(&s, PV_ERR_FORMAT, "not a multiple", "gqa ratio");

    spec_init(&s, "llama", 1);
    set_u32(&s, ".rope.dimension_count", 7);
    expect_error(&s, PV_ERR_FORMAT, "rope dimension count 7", "odd n_rot");

    spec_init(&s, "llama", 2);
    uint32_t kvs[2] = {1, 2};
    set_arr(&s, ".attention.head_count_kv", kvs, 2);
    expect_error(&s, PV_ERR_UNSUPPORTED, "differs between layers", "per-layer kv heads");

    spec_init(&s, "llama", 1);
    set_str(&s, ".rope.scaling.type", "yarn");
    expect_error(&s, PV_ERR_UNSUPPORTED, "rope scaling 'yarn' is not supported", "yarn");

    spec_init(&s, "gemma3", 6);
    drop_kv(&s, ".attention.sliding_window");
    expect_error(&s, PV_ERR_FORMAT, "'gemma3.attention.sliding_window' is missing",
                 "gemma3 without window");

    spec_init(&s, "qwen2", 1);
    set_u32(&s, ".rope.dimension_count", 8);
    expect_error(&s, PV_ERR_FORMAT, "rope dimension count 8", "qwen2 partial rope");

    spec_init(&s, "llama", 1);
    s.no_vocab = true;
    expect_error(&s, PV_ERR_FORMAT, "tokenizer: 'tokenizer.ggml.model' is missing", "no vocab");

    spec_init(&s, "llama", 1);
    set_str(&s, "tokenizer.ggml.model", "t5");
    s.no_vocab = true;
    expect_error(&s, PV_ERR_UNSUPPORTED, "tokenizer: tokenizer 't5' is not supported",
                 "t5 vocab");

    spec_init(&s, "phi3", 1);
    set_u32(&s, ".attention.key_length", 32);
    expect_error(&s, PV_ERR_FORMAT, "phi3 needs head size", "phi3 head size");
}

static void test_probe(void)
{
    struct spec s;
    struct pv_model_summary sum;
    struct pv_err err = {0};
    spec_init(&s, "mamba", 1);
    CHECK_EQ_INT(pv_model_probe(write_spec(&s), &sum, &err), PV_OK);
    CHECK_EQ_STR(sum.architecture, "mamba");
    CHECK(!sum.supported);
    CHECK_EQ_STR(sum.quant, "F32");
    CHECK_EQ_STR(sum.name, "tiny");
    CHECK_EQ_INT(sum.n_tensors, s.n_t);
    spec_init(&s, "llama", 1);
    for (int i = 0; i < s.n_t; i++)
        if (s.t[i].ne1)
            s.t[i].type = PV_TYPE_Q8_0;
    CHECK_EQ_INT(pv_model_probe(write_spec(&s), &sum, &err), PV_OK);
    CHECK(sum.supported);
    CHECK_EQ_STR(sum.quant, "Q8_0");
    set_u32(&s, "general.file_type", 15);
    CHECK_EQ_INT(pv_model_probe(write_spec(&s), &sum, &err), PV_OK);
    CHECK_EQ_STR(sum.quant, "Q4_K_M");
    CHECK(pv_model_probe("/nonexistent.gguf", &sum, &err) == PV_ERR_NOT_FOUND);
}

/* The real default model, when installed: the values engine.md lists for Gemma 3 270M. */
static void test_default_model(void)
{
    char dir[4096], path[4200];
    struct pv_model *m;
    struct pv_err err = {0};
    if (pv_models_dir(dir, sizeof dir) != PV_OK)
        return;
    snprintf(path, sizeof path, "%s/%s", dir, PV_TEST_MODEL_FILE);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  SKIP test_default_model: %s is not installed (scripts/setup)\n", path);
        return;
    }
    CHECK_EQ_INT(pv_model_load(path, NULL, &m, &err), PV_OK);
    if (!m) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    const struct model_hparams *hp = &m->hp;
    CHECK_EQ_INT(m->arch, ARCH_GEMMA3);
    CHECK_EQ_INT(hp->n_layer, 18);
    CHECK_EQ_INT(hp->n_embd, 640);
    CHECK_EQ_INT(hp->n_ff, 2048);
    CHECK_EQ_INT(hp->n_head, 4);
    CHECK_EQ_INT(hp->n_head_kv, 1);
    CHECK_EQ_INT(hp->head_dim_k, 256);
    CHECK_EQ_INT(hp->n_vocab, 262144);
    CHECK_EQ_INT(hp->n_swa, 512);
    CHECK_EQ_INT(hp->n_ctx_train, 32768);
    CHECK_NEAR(hp->attn_scale, 1.0 / 16, 1e-9);
    CHECK_NEAR(hp->embd_scale, sqrt(640.0), 1e-5);
    CHECK(m->output == m->tok_embd);
    CHECK(m->layers[5].is_swa == false && m->layers[11].is_swa == false && m->layers[4].is_swa);
    CHECK_NEAR(m->layers[5].rope_base, 1e6, 1e-3);
    CHECK_NEAR(m->layers[0].rope_base, 1e4, 1e-3);
    CHECK_EQ_INT(m->layers[0].wq->ne[1], 1024);
    CHECK_EQ_INT(m->tok_embd->type, PV_TYPE_Q8_0);
    pv_model_free(m);
}

/* Every fallible allocation of the loader fails once, in turn: each run ends in a clear
 * PV_ERR_NOMEM (or loads when the failed allocation had a fallback), never a crash, and
 * ASan's leak check at exit sees nothing left behind. */
static void test_load_allocation_failures(void)
{
    static const char *const archs[] = {"gemma3", "llama", "qwen2", "phi3"};
    for (size_t a = 0; a < PV_ARRAY_LEN(archs); a++) {
        struct spec s;
        spec_init(&s, archs[a], 2);
        const char *path = write_spec(&s);
        int n_fail = 0;
        for (long n = 1; n < 100000; n++) {
            struct pv_model *m = NULL;
            struct pv_err err = {0};
            pv_alloc_fail_at(n);
            enum pv_status st = pv_model_load(path, NULL, &m, &err);
            pv_alloc_fail_at(0);
            if (st == PV_OK) {
                /* fewer than n fallible allocations: every one has been failed once */
                pv_model_free(m);
                break;
            }
            n_fail++;
            if (st != PV_ERR_NOMEM || !err.msg[0] || m != NULL)
                fprintf(stderr, "  %s, allocation %ld failing: status %d '%s'\n", archs[a], n,
                        st, err.msg);
            CHECK_EQ_INT(st, PV_ERR_NOMEM);
            CHECK(err.msg[0] != 0 && m == NULL);
        }
        CHECK(n_fail > 3);
    }
}

static void test_cleanup(void)
{
    if (model_path[0])
        unlink(model_path);
}

/* The catalogue: well-formed entries, found by every spelling a user types. */
static void test_catalog(void)
{
    size_t n;
    const struct pv_catalog_entry *c = pv_catalog(&n);
    CHECK(n >= 4);
    for (size_t i = 0; i < n; i++) {
        CHECK(strlen(c[i].sha256) == 64 && strspn(c[i].sha256, "0123456789abcdef") == 64);
        CHECK(c[i].n_parts >= 1 && c[i].file_bytes > 0 && *c[i].license);
        CHECK(strstr(c[i].file, ".gguf") != NULL);
        CHECK(pv_catalog_find(c[i].name) == &c[i]);
        CHECK(pv_catalog_find(c[i].file) == &c[i]);
    }
    const struct pv_catalog_entry *d = pv_catalog_find(PV_DEFAULT_MODEL);
    CHECK(d && strcmp(d->file, PV_DEFAULT_MODEL_FILE) == 0 && d->chat);
    CHECK(pv_catalog_find("qwen2.5-coder:0.5b") == d);
    CHECK(pv_catalog_find("Qwen2.5-Coder-0.5B-Instruct-Q4_K_M") == d);
    CHECK(pv_catalog_find("qwen2.5-coder") == NULL);
    CHECK(pv_catalog_find(NULL) == NULL);
    const struct pv_catalog_entry *g = pv_catalog_find(PV_TEST_MODEL_FILE);
    CHECK(g && !g->chat);
}

TESTS(TEST_ENTRY(test_each_arch_loads), TEST_ENTRY(test_hparam_keys), TEST_ENTRY(test_memory),
      TEST_ENTRY(test_tensor_errors), TEST_ENTRY(test_metadata_errors), TEST_ENTRY(test_probe),
      TEST_ENTRY(test_default_model), TEST_ENTRY(test_load_allocation_failures),
      TEST_ENTRY(test_cleanup), TEST_ENTRY(test_catalog))
