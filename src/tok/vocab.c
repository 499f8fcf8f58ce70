/*
 * vocab.c - loading a vocabulary from GGUF metadata, and its lookup tables.
 *
 * Reads tokenizer.ggml.{model,pre,tokens,scores,token_type,merges}, the special token
 * ids and add_* flags (and the tokenizer.pensieve.* flags of a tokenizer.json) with llama.cpp's defaults (reference/engine.md 1.3, 3.4, 4.4),
 * derives the end-of-generation set, and builds what tokenizing needs: a hash map text
 * -> id, the BPE merge table, byte tokens, a trie of special-token texts, and the
 * decoded piece of every token. Everything is copied: the GGUF file may close after.
 */
#include <ctype.h>
#include <stdlib.h>

#include "tok/tok_impl.h"

#define MAX_TOKENS (1u << 26)

uint64_t tok_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h ^= w; /* murmur3's finalizer: every input bit reaches every output bit */
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

int32_t tok_lookup(const struct pv_vocab *v, const char *p, size_t n)
{
    uint64_t h = tok_hash(p, n);
    uint64_t hi = h >> 32;
    for (uint64_t i = h;; i++) {
        uint64_t slot = v->map.slots[i & v->map.mask];
        if (slot == 0)
            return -1;
        if ((slot >> 32) == hi) {
            int32_t id = (int32_t)(uint32_t)slot - 1;
            const struct tok_token *t = &v->tokens[id];
            if (t->text_len == n && memcmp(v->text + t->text_off, p, n) == 0)
                return id;
        }
    }
}

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

/* Insert every token into the map; a text seen twice is an error (as llama.cpp). */
static enum pv_status build_map(struct pv_vocab *v, struct pv_err *err)
{
    uint64_t cap = pow2_at_least((uint64_t)v->n_tokens * 2);
    v->map.slots = try_calloc(cap, sizeof(uint64_t));
    if (!v->map.slots)
        return pv_err_set(err, PV_ERR_NOMEM, "vocabulary map of %u tokens", v->n_tokens);
    v->map.mask = cap - 1;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        const char *p = tok_text(v, (int32_t)id);
        size_t n = v->tokens[id].text_len;
        if (tok_lookup(v, p, n) >= 0)
            return pv_err_set(err, PV_ERR_FORMAT, "token %u '%.*s' duplicates another token",
                              id, (int)PV_MIN(n, 64), p);
        uint64_t h = tok_hash(p, n);
        uint64_t i = h;
        while (v->map.slots[i & v->map.mask])
            i++;
        v->map.slots[i & v->map.mask] = (h >> 32) << 32 | (uint64_t)(id + 1);
    }
    return PV_OK;
}

static uint32_t attr_of_type(int64_t type)
{
    switch (type) {
    case 1: return TOK_ATTR_NORMAL;
    case 2: return TOK_ATTR_UNKNOWN;
    case 3: return TOK_ATTR_CONTROL;
    case 4: return TOK_ATTR_USER_DEFINED;
    case 5: return TOK_ATTR_UNUSED;
    case 6: return TOK_ATTR_BYTE;
    default: return TOK_ATTR_UNDEFINED;
    }
}

/* Copy tokens, scores and types out of the file. */
static enum pv_status load_tokens(struct pv_vocab *v, const struct gguf_file *f,
                                  struct pv_err *err)
{
    enum gguf_vtype et;
    uint64_t n, n_scores = 0, n_types = 0;
    bool has_scores, has_types;
    size_t total = 0;

    if (!gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n) || et != GGUF_STRING)
        return pv_err_set(err, PV_ERR_FORMAT, "'tokenizer.ggml.tokens' is missing or not an "
                          "array of strings");
    if (n == 0 || n > MAX_TOKENS)
        return pv_err_set(err, PV_ERR_FORMAT, "'tokenizer.ggml.tokens' has %llu tokens "
                          "(1 to %u accepted)", (unsigned long long)n, MAX_TOKENS);
    v->n_tokens = (uint32_t)n;
    /* the element types llama.cpp reads them as: f32 scores, i32 types (PR #26690) */
    has_scores = gguf_get_arr_info(f, "tokenizer.ggml.scores", &et, &n_scores);
    if (has_scores && (et != GGUF_F32 || n_scores < n))
        return pv_err_set(err, PV_ERR_FORMAT, "'tokenizer.ggml.scores' must hold %llu f32 "
                          "numbers", (unsigned long long)n);
    has_types = gguf_get_arr_info(f, "tokenizer.ggml.token_type", &et, &n_types);
    if (has_types && (et != GGUF_I32 || n_types < n))
        return pv_err_set(err, PV_ERR_FORMAT,
                          "'tokenizer.ggml.token_type' must hold %llu i32 integers",
                          (unsigned long long)n);

    v->tokens = try_calloc(n, sizeof(*v->tokens));
    if (!v->tokens)
        return pv_err_set(err, PV_ERR_NOMEM, "vocabulary of %llu tokens", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s;
        if (!gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s))
            return pv_err_set(err, PV_ERR_FORMAT, "token %llu unreadable", (unsigned long long)i);
        size_t len = s.n ? (size_t)s.n : 32; /* room for "[EMPTY_i]" */
        if (s.n > UINT32_MAX / 2 || pv_add_overflow(total, len + 1, &total) ||
            total > UINT32_MAX / 2)
            return pv_err_set(err, PV_ERR_FORMAT, "token texts exceed 2 GiB");
    }
    v->text = try_malloc(total);
    v->pieces = try_malloc(total);
    if (!v->text || !v->pieces)
        return pv_err_set(err, PV_ERR_NOMEM, "token texts (%zu bytes)", total);
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct tok_token *t = &v->tokens[i];
        struct gguf_str s;
        gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s);
        t->text_off = (uint32_t)off;
        if (s.n == 0) {
            int k = snprintf(v->text + off, 32, "[EMPTY_%llu]", (unsigned long long)i);
            t->text_len = (uint32_t)k;
        } else {
            memcpy(v->text + off, s.p, s.n);
            t->text_len = (uint32_t)s.n;
        }
        v->text[off + t->text_len] = '\0';
        off += (s.n ? s.n : 32) + 1;

        double d = 0;
        if (has_scores && gguf_get_arr_num(f, "tokenizer.ggml.scores", i, &d))
            t->score = (float)d;
        d = 1;
        if (has_types && !gguf_get_arr_num(f, "tokenizer.ggml.token_type", i, &d))
            d = 0;
        t->attr = has_types ? attr_of_type((int64_t)d) : TOK_ATTR_NORMAL;
    }
    return PV_OK;
}

/* "<0xAB>" -> 0xAB; -1 when the text has another form. */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>' ||
        !isxdigit((unsigned char)s[3]) || !isxdigit((unsigned char)s[4]))
        return -1;
    char hex[3] = {s[3], s[4], 0};
    return (int)strtol(hex, NULL, 16);
}

/* Decode every token into the bytes it stands for (pv_token_to_piece). */
static enum pv_status build_pieces(struct pv_vocab *v, struct pv_err *err)
{
    size_t off = 0;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        struct tok_token *t = &v->tokens[id];
        const unsigned char *s = (const unsigned char *)tok_text(v, (int32_t)id);
        size_t n = t->text_len;
        char *o = v->pieces + off;
        size_t k = 0;

        t->piece_off = (uint32_t)off;
        if (t->attr & (TOK_ATTR_SPECIAL | TOK_ATTR_USER_DEFINED)) {
            memcpy(o, s, n);
            k = n;
        } else if ((t->attr & TOK_ATTR_NORMAL) && v->kind == TOK_KIND_SPM) {
            for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                    o[k++] = ' ';
                    i += 2;
                } else {
                    o[k++] = (char)s[i];
                }
            }
        } else if (t->attr & TOK_ATTR_NORMAL) {
            /* BPE: map each code point back to its byte; others are copied as they are */
            for (size_t i = 0; i < n;) {
                int len = tok_utf8_check(s + i, n - i);
                if (len <= 0) {
                    o[k++] = (char)s[i++];
                    continue;
                }
                /* the table's code points are all below U+0800 */
                uint32_t cp = len == 1   ? s[i]
                              : len == 2 ? ((s[i] & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu)
                                         : 0x800;
                int b = tok_cp_to_byte(cp);
                if (b >= 0) {
                    o[k++] = (char)b;
                } else {
                    memcpy(o + k, s + i, (size_t)len);
                    k += (size_t)len;
                }
                i += (size_t)len;
            }
        } else if ((t->attr & TOK_ATTR_BYTE) && v->kind == TOK_KIND_SPM) {
            int b = parse_byte_token((const char *)s, n);
            if (b < 0)
                return pv_err_set(err, PV_ERR_FORMAT, "byte token %u has text '%.*s', not <0xXX>",
                                  id, (int)PV_MIN(n, 32), (const char *)s);
            o[k++] = (char)b;
        }
        t->piece_len = (uint32_t)k;
        off += k;
    }
    return PV_OK;
}

static enum pv_status build_merges(struct pv_vocab *v, const struct gguf_file *f,
                                   struct pv_err *err)
{
    enum gguf_vtype et;
    uint64_t n = 0;
    if (!gguf_get_arr_info(f, "tokenizer.ggml.merges", &et, &n) || et != GGUF_STRING)
        return pv_err_set(err, PV_ERR_FORMAT, "byte-level BPE vocabulary without "
                          "'tokenizer.ggml.merges'");
    if (n > UINT32_MAX / 4)
        return pv_err_set(err, PV_ERR_FORMAT, "too many merges (%llu)", (unsigned long long)n);
    uint64_t cap = pow2_at_least(n * 2 + 1);
    v->merges = try_calloc(cap, sizeof(*v->merges));
    if (!v->merges)
        return pv_err_set(err, PV_ERR_NOMEM, "merge table of %llu merges", (unsigned long long)n);
    v->merges_mask = cap - 1;

    char *tmp = NULL;
    size_t tmp_cap = 0;
    uint64_t skipped = 0;
    for (uint64_t r = 0; r < n; r++) {
        struct gguf_str s;
        if (!gguf_get_arr_str(f, "tokenizer.ggml.merges", r, &s)) {
            free(tmp);
            return pv_err_set(err, PV_ERR_FORMAT, "merge %llu unreadable", (unsigned long long)r);
        }
        /* "left right", split at the first space at index >= 1 */
        const char *sp = s.n > 1 ? memchr(s.p + 1, ' ', s.n - 1) : NULL;
        if (!sp) {
            skipped++;
            continue;
        }
        size_t ln = (size_t)(sp - s.p), rn = s.n - ln - 1;
        int32_t a = tok_lookup(v, s.p, ln), b = tok_lookup(v, sp + 1, rn);
        if (a < 0 || b < 0) {
            skipped++;
            continue;
        }
        if (ln + rn > tmp_cap) {
            tmp_cap = (ln + rn) * 2;
            char *t = try_realloc(tmp, tmp_cap);
            if (!t) {
                free(tmp);
                return pv_err_set(err, PV_ERR_NOMEM, "merge text");
            }
            tmp = t;
        }
        memcpy(tmp, s.p, ln);
        memcpy(tmp + ln, sp + 1, rn);
        uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
        uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
        while (v->merges[i & v->merges_mask].key && v->merges[i & v->merges_mask].key != key)
            i++;
        struct tok_merge *m = &v->merges[i & v->merges_mask];
        if (m->key == key)
            continue; /* a repeated merge keeps its first (lowest) rank */
        m->key = key;
        m->rank = (uint32_t)r;
        m->result = tok_lookup(v, tmp, ln + rn);
    }
    free(tmp);
    if (skipped)
        log_debug("tokenizer: %llu merges skipped (a side is not a token)",
                  (unsigned long long)skipped);
    return PV_OK;
}

static void build_byte_tokens(struct pv_vocab *v)
{
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int32_t id;
        if (v->kind == TOK_KIND_SPM) {
            snprintf(buf, sizeof(buf), "<0x%02X>", b);
            id = tok_lookup(v, buf, 6);
            if (id < 0) {
                buf[0] = (char)b;
                id = tok_lookup(v, buf, 1);
            }
        } else {
            int len = tok_utf8_encode(tok_byte_to_cp((uint8_t)b), buf);
            id = tok_lookup(v, buf, (size_t)len);
        }
        v->byte_tok[b] = id;
    }
}

static enum pv_status trie_add(struct pv_vocab *v, int32_t id, struct pv_err *err)
{
    const unsigned char *s = (const unsigned char *)tok_text(v, id);
    size_t n = v->tokens[id].text_len;
    int32_t *link = &v->trie_root[s[0]];
    int32_t node = -1;

    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            link = &v->trie[node].child;
        int32_t c = *link;
        while (c >= 0 && v->trie[c].byte != s[i])
            c = v->trie[c].sibling;
        if (c < 0) {
            if (v->trie_n == v->trie_cap) {
                size_t cap = v->trie_cap ? v->trie_cap * 2 : 1024;
                struct tok_trie_node *t = try_realloc(v->trie, cap * sizeof(*t));
                if (!t)
                    return pv_err_set(err, PV_ERR_NOMEM, "special token trie");
                v->trie = t;
                v->trie_cap = cap;
                if (i > 0)
                    link = &v->trie[node].child; /* the array moved */
            }
            c = (int32_t)v->trie_n++;
            v->trie[c] = (struct tok_trie_node){.child = -1, .sibling = *link, .token = -1,
                                                .byte = s[i]};
            *link = c;
        }
        node = c;
    }
    v->trie[node].token = id;
    if (n > v->max_special_len)
        v->max_special_len = (uint32_t)n;
    return PV_OK;
}

static void set_attr(struct pv_vocab *v, const char *text, uint32_t bit, bool on)
{
    int32_t id = tok_lookup(v, text, strlen(text));
    if (id < 0)
        return;
    if (on)
        v->tokens[id].attr |= bit;
    else
        v->tokens[id].attr &= ~bit;
}

/* First token of `names` present in the vocabulary, or -1. */
static int32_t find_first(const struct pv_vocab *v, const char *const *names)
{
    for (; *names; names++) {
        int32_t id = tok_lookup(v, *names, strlen(*names));
        if (id >= 0)
            return id;
    }
    return -1;
}

/* Make id a control token (found by its text, so the file may not say so). */
static void force_control(struct pv_vocab *v, int32_t id)
{
    if (id >= 0 && !v->keep_types && !(v->tokens[id].attr & TOK_ATTR_CONTROL))
        v->tokens[id].attr = TOK_ATTR_CONTROL | (v->tokens[id].attr & TOK_ATTR_EOG);
}

static void mark_eog(struct pv_vocab *v, int32_t id, bool control)
{
    if (id < 0)
        return;
    if (control)
        force_control(v, id);
    v->tokens[id].attr |= TOK_ATTR_EOG;
}

static enum pv_status read_special_ids(struct pv_vocab *v, const struct gguf_file *f,
                                       struct pv_err *err)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(struct pv_vocab, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(struct pv_vocab, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(struct pv_vocab, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(struct pv_vocab, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(struct pv_vocab, unk)},
        {"tokenizer.ggml.padding_token_id", offsetof(struct pv_vocab, pad)},
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(keys); i++) {
        int32_t *dst = (int32_t *)((char *)v + keys[i].off);
        uint32_t id;
        /* present but negative, not an integer or past u32: an error, not "none" */
        if (gguf_find_key(f, keys[i].key) >= 0 && !gguf_get_u32(f, keys[i].key, &id))
            return pv_err_set(err, PV_ERR_FORMAT, "'%s' is not a token id (an unsigned 32-bit "
                              "integer)", keys[i].key);
        if (gguf_get_u32(f, keys[i].key, &id)) {
            if (id < v->n_tokens)
                *dst = (int32_t)id;
            else
                log_warn("tokenizer: %s = %u is not a token, ignored", keys[i].key, id);
        }
        if (*dst >= (int32_t)v->n_tokens)
            *dst = -1;
    }
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b))
        v->add_bos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b))
        v->add_eos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b))
        v->add_space_prefix = b;
    /* written by model/mlx.c for a tokenizer.json (no GGUF file carries them) */
    if (v->kind == TOK_KIND_SPM && gguf_get_bool(f, "tokenizer.pensieve.merge_by_rank", &b))
        v->spm_ranked = b;
    if (gguf_get_bool(f, "tokenizer.pensieve.space_prefix_first_only", &b))
        v->prefix_first_only = b;
    if (gguf_get_bool(f, "tokenizer.pensieve.space_prefix_unless_space", &b))
        v->prefix_unless_space = b;
    if (gguf_get_bool(f, "tokenizer.pensieve.keep_types", &b))
        v->keep_types = b;
    if (v->add_bos && v->bos < 0)
        v->add_bos = false;
    if (v->add_eos && v->eos < 0)
        v->add_eos = false;
    return PV_OK;
}

/* End-of-generation set and special-token attributes, as llama.cpp derives them. */
static void derive_specials(struct pv_vocab *v, const struct gguf_file *f)
{
    static const char *const eot_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81"
        "sentence\xef\xbd\x9c>", "<end_of_utterance>", NULL};
    static const char *const eom_names[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
                                          "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", NULL};
    static const char *const fim_suf[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
                                          "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", NULL};
    static const char *const fim_mid[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                          "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
                                          "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", NULL};
    static const char *const fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
    static const char *const fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                          "<REPO>", "<reponame>", NULL};
    static const char *const fim_sep[] = {"<|file_sep|>", NULL};
    static const char *const eog_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
        "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>",
        "<end_of_utterance>", "</s>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", NULL};

    if (v->eot < 0)
        force_control(v, v->eot = find_first(v, eot_names));
    if (v->eom < 0)
        force_control(v, v->eom = find_first(v, eom_names));
    /* fill-in-the-middle markers are control tokens; pad, repo and file separator also
       end generation */
    force_control(v, find_first(v, fim_pre));
    force_control(v, find_first(v, fim_suf));
    force_control(v, find_first(v, fim_mid));
    for (const char *const *n = eog_names; *n; n++)
        mark_eog(v, tok_lookup(v, *n, strlen(*n)), true);
    mark_eog(v, find_first(v, fim_pad), true);
    mark_eog(v, find_first(v, fim_rep), true);
    mark_eog(v, find_first(v, fim_sep), true);
    mark_eog(v, v->eos, false);
    mark_eog(v, v->eot, false);
    mark_eog(v, v->eom, false);

    /* Phi-3 files: special tokens eat the whitespace after them (llama.cpp does this
       by model name) */
    struct gguf_str name;
    char lower[128] = "";
    if (gguf_get_str(f, "general.name", &name)) {
        size_t k = PV_MIN((size_t)name.n, sizeof(lower) - 1);
        for (size_t i = 0; i < k; i++)
            lower[i] = (char)tolower((unsigned char)name.p[i]);
        lower[k] = '\0';
    }
    if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
        for (uint32_t id = 0; id < v->n_tokens; id++)
            if (v->tokens[id].attr & TOK_ATTR_MATCHED)
                v->tokens[id].attr |= TOK_ATTR_RSTRIP;
        set_attr(v, "</s>", TOK_ATTR_RSTRIP, true);
        set_attr(v, "<unk>", TOK_ATTR_RSTRIP, false);
        set_attr(v, "<s>", TOK_ATTR_RSTRIP, false);
        set_attr(v, "<|endoftext|>", TOK_ATTR_RSTRIP, false);
    }
}

static enum pv_status set_kind(struct pv_vocab *v, const struct gguf_file *f,
                               struct pv_err *err)
{
    struct gguf_str model, pre = {"", 0};
    char pre_s[64];

    if (!gguf_get_str(f, "tokenizer.ggml.model", &model))
        return pv_err_set(err, PV_ERR_FORMAT, "'tokenizer.ggml.model' is missing");
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    snprintf(pre_s, sizeof(pre_s), "%.*s", (int)PV_MIN(pre.n, 60), pre.p);
    v->bos = v->eos = v->eot = v->eom = v->unk = v->pad = -1;

    if (model.n == 5 && memcmp(model.p, "llama", 5) == 0) {
        v->kind = TOK_KIND_SPM;
        v->pre = TOK_PRE_NONE;
        v->bos = 1;
        v->eos = 2;
        v->unk = 0;
        v->add_bos = true;
        v->add_space_prefix = true;
        return PV_OK;
    }
    if (!(model.n == 4 && memcmp(model.p, "gpt2", 4) == 0))
        return pv_err_set(err, PV_ERR_UNSUPPORTED, "tokenizer '%.*s' is not supported (only "
                          "'llama' and 'gpt2')", (int)PV_MIN(model.n, 60), model.p);
    v->kind = TOK_KIND_BPE;
    v->bos = v->eos = 11;
    static const struct {
        const char *name;
        enum tok_pre pre;
    } pres[] = {
        {"default", TOK_PRE_DEFAULT},     {"llama3", TOK_PRE_LLAMA3},
        {"llama-v3", TOK_PRE_LLAMA3},     {"llama-bpe", TOK_PRE_LLAMA3},
        {"falcon3", TOK_PRE_LLAMA3},      {"qwen2", TOK_PRE_QWEN2},
        {"deepseek-r1-qwen", TOK_PRE_QWEN2}, {"gpt-2", TOK_PRE_GPT2},
        {"phi-2", TOK_PRE_GPT2},          {"smollm", TOK_PRE_SMOLLM},
        {"starcoder", TOK_PRE_SMOLLM},    {"refact", TOK_PRE_SMOLLM},
    };
    if (pre.n == 0) {
        log_warn("tokenizer: no 'tokenizer.ggml.pre' in a byte-level BPE vocabulary; using "
                 "the default pre-tokenizer, tokens may differ from the model's training");
        v->pre = TOK_PRE_DEFAULT;
    } else {
        v->pre = TOK_PRE_NONE;
        for (size_t i = 0; i < PV_ARRAY_LEN(pres); i++)
            if (strcmp(pre_s, pres[i].name) == 0 && pre.n == strlen(pres[i].name))
                v->pre = pres[i].pre;
        if (v->pre == TOK_PRE_NONE)
            return pv_err_set(err, PV_ERR_UNSUPPORTED, "pre-tokenizer '%s' is not supported "
                              "(supported: llama-bpe, llama3, qwen2, deepseek-r1-qwen, gpt-2, "
                              "smollm, starcoder, refact, default)", pre_s);
    }
    if (v->pre == TOK_PRE_LLAMA3) {
        v->ignore_merges = true;
        v->add_bos = true;
    }
    return PV_OK;
}

enum pv_status tok_vocab_load(const struct gguf_file *f, struct pv_vocab **out,
                              struct pv_err *err)
{
    enum pv_status st;
    struct pv_vocab *v;

    *out = NULL;
    v = try_calloc(1, sizeof(*v));
    if (!v)
        return pv_err_set(err, PV_ERR_NOMEM, "vocabulary");
    memset(v->trie_root, 0xFF, sizeof(v->trie_root));
    if ((st = set_kind(v, f, err)) != PV_OK || (st = load_tokens(v, f, err)) != PV_OK ||
        (st = build_map(v, err)) != PV_OK || (st = read_special_ids(v, f, err)) != PV_OK)
        goto fail_vocab;
    derive_specials(v, f);
    if ((st = build_pieces(v, err)) != PV_OK)
        goto fail_vocab;
    build_byte_tokens(v);
    if (v->spm_ranked && (st = build_merges(v, f, err)) != PV_OK)
        goto fail_vocab;
    if (v->kind == TOK_KIND_BPE) {
        if ((st = build_merges(v, f, err)) != PV_OK ||
            (st = tok_bpe_init_regex(v, err)) != PV_OK)
            goto fail_vocab;
    }
    for (uint32_t id = 0; id < v->n_tokens; id++)
        if ((v->tokens[id].attr & TOK_ATTR_MATCHED) &&
            (st = trie_add(v, (int32_t)id, err)) != PV_OK)
            goto fail_vocab;
    *out = v;
    return PV_OK;

fail_vocab:
    tok_vocab_free(v);
    return st;
}

void tok_vocab_free(struct pv_vocab *v)
{
    if (!v)
        return;
    tok_bpe_free_regex(v);
    free(v->tokens);
    free(v->text);
    free(v->pieces);
    free(v->map.slots);
    free(v->merges);
    free(v->trie);
    free(v);
}
