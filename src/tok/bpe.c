/*
 * bpe.c - the GPT-2 byte-level BPE tokenizer (tokenizer.ggml.model "gpt2").
 *
 * A raw fragment is cut into pre-tokens by the regexes of its tokenizer.ggml.pre
 * (PCRE2, written to match llama.cpp's splitters: \s is llama.cpp's whitespace set,
 * contractions are ASCII-case-insensitive). Each pre-token's bytes start as one symbol
 * each (the token of the byte's mapped character) and adjacent symbols merge by the rank
 * of their pair in tokenizer.ggml.merges, lowest first (ties: leftmost), with a heap.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>

#include "tok/tok_impl.h"

/* llama.cpp's whitespace: U+0009-000D, 0020, 0085, 00A0, 1680, 2000-200A, 2028, 2029,
   202F, 205F, 3000 (PCRE2's \s differs). */
#define WS "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}" \
           "\\x{205F}\\x{3000}"
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define TAIL "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+"

static const char re_llama3[] = CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" TAIL;
static const char re_qwen2[] = CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" TAIL;
static const char re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                              "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])";
static const char re_punct[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char re_digits[] = "\\p{N}+";
static const char re_digit[] = "\\p{N}";
static const char re_3digits[] = "[0-9][0-9][0-9]";

enum pv_status tok_bpe_init_regex(struct pv_vocab *v, struct pv_err *err)
{
    const char *list[4];
    int n = 0;

    switch (v->pre) {
    case TOK_PRE_LLAMA3: list[n++] = re_llama3; break;
    case TOK_PRE_QWEN2: list[n++] = re_qwen2; break;
    case TOK_PRE_GPT2: list[n++] = re_gpt2; break;
    case TOK_PRE_SMOLLM:
        list[n++] = re_digit;
        list[n++] = re_gpt2;
        break;
    case TOK_PRE_DEFAULT:
        list[n++] = re_punct;
        list[n++] = re_gpt2;
        list[n++] = re_digits;
        list[n++] = re_3digits;
        break;
    case TOK_PRE_NONE: return pv_err_set(err, PV_ERR_INTERNAL, "no pre-tokenizer");
    }
    for (int i = 0; i < n; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)list[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF,
                                       &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            return pv_err_set(err, PV_ERR_INTERNAL, "pre-tokenizer regex %d at %zu: %s", i,
                              (size_t)at, (const char *)msg);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter runs when JIT is absent */
        v->re[v->n_re++] = re;
    }
    return PV_OK;
}

void tok_bpe_free_regex(struct pv_vocab *v)
{
    for (int i = 0; i < v->n_re; i++)
        pcre2_code_free(v->re[i]);
    v->n_re = 0;
}

/* Per-byte fallback of a symbol that is no token: each byte of its mapped text that is
   a one-byte token (llama.cpp does the same; other bytes are dropped). */
static bool emit_unknown(const struct pv_vocab *v, const unsigned char *w, uint32_t n,
                         struct tok_ids *out)
{
    for (uint32_t i = 0; i < n; i++) {
        char enc[4];
        int len = tok_utf8_encode(tok_byte_to_cp(w[i]), enc);
        for (int k = 0; k < len; k++) {
            int32_t id = tok_lookup(v, enc + k, 1);
            if (id >= 0 && !tok_ids_push(out, id))
                return false;
        }
    }
    return true;
}

static bool try_pair(const struct pv_vocab *v, struct tok_scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return true;
    const struct tok_sym *a = &s->syms[l], *b = &s->syms[r];
    if (a->id < 0 || b->id < 0)
        return true;
    const struct tok_merge *m = tok_merge_find(v, a->id, b->id);
    if (!m)
        return true;
    return tok_heap_push(s, (struct tok_pair){-(float)m->rank, (uint32_t)l, (uint32_t)r,
                                              a->n + b->n, m->result});
}

/* Tokenize one pre-token w[0..n) (raw bytes). */
static bool bpe_word(const struct pv_vocab *v, const unsigned char *w, uint32_t n,
                     struct tok_ids *out, struct tok_scratch *s)
{
    if (n == 1) {
        int32_t id = v->byte_tok[w[0]];
        return id >= 0 ? tok_ids_push(out, id) : emit_unknown(v, w, 1, out);
    }
    if (v->ignore_merges) {
        /* the whole pre-token, mapped, may be a token of its own */
        if (!tok_scratch_buf(s, (size_t)n * 2))
            return false;
        size_t m = 0;
        for (uint32_t i = 0; i < n; i++)
            m += (size_t)tok_utf8_encode(tok_byte_to_cp(w[i]), s->buf + m);
        int32_t id = tok_lookup(v, s->buf, m);
        if (id >= 0)
            return tok_ids_push(out, id);
    }
    if (!tok_scratch_syms(s, n))
        return false;
    for (uint32_t i = 0; i < n; i++)
        s->syms[i] = (struct tok_sym){i, 1, (int32_t)i - 1, (int32_t)i + 1, v->byte_tok[w[i]]};
    s->syms[n - 1].next = -1;

    s->heap_n = 0;
    for (uint32_t i = 1; i < n; i++)
        if (!try_pair(v, s, (int32_t)i - 1, (int32_t)i))
            return false;
    while (s->heap_n) {
        struct tok_pair p = tok_heap_pop(s);
        struct tok_sym *l = &s->syms[p.left], *r = &s->syms[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = (int32_t)p.left;
        l->id = p.id;
        if (!try_pair(v, s, l->prev, (int32_t)p.left) || !try_pair(v, s, (int32_t)p.left, l->next))
            return false;
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const struct tok_sym *sym = &s->syms[i];
        if (sym->id >= 0 ? !tok_ids_push(out, sym->id) : !emit_unknown(v, w + sym->start, sym->n, out))
            return false;
    }
    return true;
}

static bool segs_push(uint32_t **segs, size_t *n, size_t *cap, uint32_t start, uint32_t len)
{
    if (*n + 2 > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        uint32_t *p = try_realloc(*segs, c * sizeof(uint32_t));
        if (!p)
            return false;
        *segs = p;
        *cap = c;
    }
    (*segs)[(*n)++] = start;
    (*segs)[(*n)++] = len;
    return true;
}

static enum pv_status prepare_match(struct tok_scratch *s, struct pv_err *err)
{
    if (s->match)
        return PV_OK;
    s->match = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!s->match || !s->mctx || !s->jit_stack)
        return pv_err_set(err, PV_ERR_NOMEM, "regex match data");
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit_stack);
    return PV_OK;
}

enum pv_status tok_bpe_encode(const struct pv_vocab *v, const char *text, size_t n,
                              struct tok_ids *out, struct tok_scratch *s, struct pv_err *err)
{
    enum pv_status st;
    if (n == 0)
        return PV_OK;
    if ((st = prepare_match(s, err)) != PV_OK)
        return st;

    /* pre-tokenize: each regex cuts every current piece into matches and the gaps */
    s->segs_n = 0;
    if (!segs_push(&s->segs, &s->segs_n, &s->segs_cap, 0, (uint32_t)n))
        goto nomem;
    for (int r = 0; r < v->n_re; r++) {
        size_t n2 = 0;
        for (size_t k = 0; k < s->segs_n; k += 2) {
            uint32_t start = s->segs[k], len = s->segs[k + 1], pos = 0;
            PCRE2_SPTR subj = (PCRE2_SPTR)text + start;
            while (pos < len) {
                int rc = pcre2_match(v->re[r], subj, len, pos, PCRE2_NO_UTF_CHECK, s->match,
                                     s->mctx);
                if (rc == PCRE2_ERROR_NOMATCH)
                    break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[160];
                    pcre2_get_error_message(rc, msg, sizeof(msg));
                    return pv_err_set(err, PV_ERR_INTERNAL, "pre-tokenizer regex failed: %s",
                                      (const char *)msg);
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->match);
                uint32_t m0 = (uint32_t)ov[0], m1 = (uint32_t)ov[1];
                if (m1 == m0) { /* no pattern matches empty; guard anyway */
                    m1 = m0 + 1;
                    while (m1 < len && (subj[m1] & 0xC0) == 0x80)
                        m1++;
                }
                if (m0 > pos && !segs_push(&s->segs2, &n2, &s->segs2_cap, start + pos, m0 - pos))
                    goto nomem;
                if (!segs_push(&s->segs2, &n2, &s->segs2_cap, start + m0, m1 - m0))
                    goto nomem;
                pos = m1;
            }
            if (pos < len && !segs_push(&s->segs2, &n2, &s->segs2_cap, start + pos, len - pos))
                goto nomem;
        }
        uint32_t *t = s->segs;
        size_t tc = s->segs_cap;
        s->segs = s->segs2;
        s->segs_cap = s->segs2_cap;
        s->segs_n = n2;
        s->segs2 = t;
        s->segs2_cap = tc;
    }

    for (size_t k = 0; k < s->segs_n; k += 2)
        if (!bpe_word(v, (const unsigned char *)text + s->segs[k], s->segs[k + 1], out, s))
            goto nomem;
    return PV_OK;

nomem:
    return pv_err_set(err, PV_ERR_NOMEM, "tokenizing %zu bytes", n);
}
