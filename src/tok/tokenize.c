/*
 * tokenize.c - text to token ids: special-token partitioning and the public entry points.
 *
 * The text is first cut at special tokens, as llama.cpp's tokenizer_st_partition does:
 * special tokens are taken longest first, each at its leftmost non-overlapping
 * occurrences in the text not yet taken; user-defined tokens always, control and unknown
 * tokens only inside segments flagged parse_special. Occurrences are found in one pass
 * with a byte trie, so a 300 KB prompt costs a few ms whatever the number of specials.
 * The raw fragments in between go to the SPM or BPE tokenizer. (llama.cpp orders specials
 * of equal length by an unstable sort; only two equal-length specials whose texts can
 * overlap could make that order show, and the supported vocabularies have none.)
 */
#include <stdlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tok/tok_impl.h"

#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* ---- growable outputs, scratch, heap ----------------------------------------------- */

bool tok_ids_grow(struct tok_ids *o, size_t extra)
{
    size_t need, cap = o->cap ? o->cap : 64;
    if (pv_add_overflow(o->n, extra, &need))
        return false;
    while (cap < need)
        if (pv_mul_overflow(cap, 2, &cap))
            return false;
    if (cap == o->cap)
        return true;
    int32_t *p = try_realloc(o->ids, cap * sizeof(int32_t));
    if (!p || cap > SIZE_MAX / sizeof(int32_t))
        return false;
    o->ids = p;
    o->cap = cap;
    return true;
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 64, bytes;
    while (c < need)
        if (pv_mul_overflow(c, 2, &c))
            return false;
    if (pv_mul_overflow(c, elem, &bytes))
        return false;
    void *q = try_realloc(*p, bytes);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

bool tok_scratch_syms(struct tok_scratch *s, size_t n)
{
    return grow((void **)&s->syms, &s->syms_cap, n, sizeof(*s->syms));
}

bool tok_scratch_buf(struct tok_scratch *s, size_t n)
{
    return grow((void **)&s->buf, &s->buf_cap, n, 1);
}

void tok_scratch_release(struct tok_scratch *s)
{
    free(s->syms);
    free(s->heap);
    free(s->buf);
    free(s->segs);
    free(s->segs2);
    pcre2_match_data_free(s->match);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit_stack);
    memset(s, 0, sizeof(*s));
}

/* a before b in the heap: higher priority, then the leftmost */
static inline bool pair_before(const struct tok_pair *a, const struct tok_pair *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

bool tok_heap_push(struct tok_scratch *s, struct tok_pair p)
{
    if (s->heap_n == s->heap_cap &&
        !grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof(*s->heap)))
        return false;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = p;
    return true;
}

struct tok_pair tok_heap_pop(struct tok_scratch *s)
{
    struct tok_pair top = s->heap[0], last = s->heap[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

/* ---- special-token partition ------------------------------------------------------- */

/* A fragment: raw text [start, start+len) when token < 0, else the special token. */
struct frag {
    uint32_t start, len;
    int32_t token;
};

struct seg_range {
    uint32_t end;       /* exclusive end of the segment in the joined text */
    bool parse_special;
};

struct partition {
    struct frag *frags;
    size_t n, cap;
};

static bool frag_push(struct partition *pt, uint32_t start, uint32_t len, int32_t token)
{
    if (!grow((void **)&pt->frags, &pt->cap, pt->n + 1, sizeof(*pt->frags)))
        return false;
    pt->frags[pt->n++] = (struct frag){start, len, token};
    return true;
}

/* A position where allowed special tokens start: bit d-1 of mask for length d <= 64. */
struct cand {
    uint32_t pos;
    uint64_t mask;
};

struct scan {
    struct cand *cands;   /* in text order */
    size_t n_cands, cap_cands;
    uint64_t *longs;      /* occurrences longer than 64 bytes: pos << 32 | token */
    size_t n_longs, cap_longs;
    uint64_t any;         /* OR of every mask */
};

/* Whether token tok may be matched at [p, p+d): user-defined tokens anywhere, control
   and unknown tokens inside one parse_special segment. */
static inline bool allowed(const struct pv_vocab *v, int32_t tok, const struct seg_range *seg,
                           size_t p, size_t d)
{
    return (v->tokens[tok].attr & TOK_ATTR_USER_DEFINED) ||
           (seg->parse_special && p + d <= seg->end);
}

/* Walk the trie at every position and record where allowed special tokens start. */
static bool scan_specials(const struct pv_vocab *v, const unsigned char *t, size_t n,
                          const struct seg_range *segs, size_t n_segs, struct scan *sc)
{
    size_t si = 0;
    for (size_t p = 0; p < n; p++) {
        int32_t c = v->trie_root[t[p]];
        if (c < 0)
            continue;
        while (si + 1 < n_segs && p >= segs[si].end)
            si++;
        uint64_t mask = 0;
        for (size_t d = 1;; d++) {
            int32_t tok = v->trie[c].token;
            if (tok >= 0 && allowed(v, tok, &segs[si], p, d)) {
                if (d <= 64) {
                    mask |= 1ull << (d - 1);
                } else {
                    if (!grow((void **)&sc->longs, &sc->cap_longs, sc->n_longs + 1,
                              sizeof(uint64_t)))
                        return false;
                    sc->longs[sc->n_longs++] = (uint64_t)p << 32 | (uint32_t)tok;
                }
            }
            if (p + d >= n)
                break;
            unsigned char b = t[p + d];
            c = v->trie[c].child;
            while (c >= 0 && v->trie[c].byte != b)
                c = v->trie[c].sibling;
            if (c < 0)
                break;
        }
        if (mask) {
            if (!grow((void **)&sc->cands, &sc->cap_cands, sc->n_cands + 1, sizeof(struct cand)))
                return false;
            sc->cands[sc->n_cands++] = (struct cand){(uint32_t)p, mask};
            sc->any |= mask;
        }
    }
    return true;
}

/* The special token whose text is t[p..p+d) (the scan found one). */
static int32_t token_at(const struct pv_vocab *v, const unsigned char *t, size_t p, size_t d)
{
    int32_t c = v->trie_root[t[p]];
    for (size_t i = 1; i < d && c >= 0; i++) {
        c = v->trie[c].child;
        while (c >= 0 && v->trie[c].byte != t[p + i])
            c = v->trie[c].sibling;
    }
    return c >= 0 ? v->trie[c].token : -1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

struct take {
    const struct pv_vocab *v;
    const unsigned char *t;
    size_t n;
    unsigned char *covered; /* 1 taken by a token, 2 whitespace a token stripped */
    uint64_t *taken;        /* pos << 32 | token */
    size_t n_taken, cap_taken;
};

/* Take the occurrence [p, p+d) unless it overlaps one taken before. Every earlier one
   is at least as long, so an overlap always covers one of its ends. tok < 0: look it up. */
static bool take(struct take *tk, size_t p, size_t d, int32_t tok)
{
    if (tk->covered[p] || tk->covered[p + d - 1])
        return true;
    if (tok < 0)
        tok = token_at(tk->v, tk->t, p, d);
    if (!grow((void **)&tk->taken, &tk->cap_taken, tk->n_taken + 1, sizeof(uint64_t)))
        return false;
    tk->taken[tk->n_taken++] = (uint64_t)p << 32 | (uint32_t)tok;
    memset(tk->covered + p, 1, d);
    uint32_t attr = tk->v->tokens[tok].attr;
    if (attr & TOK_ATTR_LSTRIP)
        for (size_t q = p; q > 0 && !tk->covered[q - 1] && is_space(tk->t[q - 1]); q--)
            tk->covered[q - 1] = 2;
    if (attr & TOK_ATTR_RSTRIP)
        for (size_t q = p + d; q < tk->n && !tk->covered[q] && is_space(tk->t[q]); q++)
            tk->covered[q] = 2;
    return true;
}

static enum pv_status partition(const struct pv_vocab *v, const char *text, size_t n,
                                const struct seg_range *segs, size_t n_segs,
                                struct partition *pt, struct pv_err *err)
{
    const unsigned char *t = (const unsigned char *)text;
    struct scan sc = {0};
    struct take tk = {v, t, n, NULL, NULL, 0, 0};
    enum pv_status st = PV_ERR_NOMEM;

    pt->n = 0;
    if (v->trie_n && !scan_specials(v, t, n, segs, n_segs, &sc))
        goto nomem;
    if (sc.n_cands == 0 && sc.n_longs == 0) {
        if (n && !frag_push(pt, 0, (uint32_t)n, -1))
            goto nomem;
        st = PV_OK;
        goto done;
    }
    tk.covered = try_calloc(n, 1);
    if (!tk.covered)
        goto nomem;

    /* longest first, each length in text order (both lists are in text order) */
    for (uint32_t d = v->max_special_len; d >= 1; d--) {
        if (d > 64) {
            for (size_t i = 0; i < sc.n_longs; i++) {
                int32_t tok = (int32_t)(uint32_t)sc.longs[i];
                if (v->tokens[tok].text_len == d && !take(&tk, (size_t)(sc.longs[i] >> 32), d, tok))
                    goto nomem;
            }
            continue;
        }
        uint64_t bit = 1ull << (d - 1);
        if (!(sc.any & bit))
            continue;
        for (size_t i = 0; i < sc.n_cands; i++)
            if ((sc.cands[i].mask & bit) && !take(&tk, sc.cands[i].pos, d, -1))
                goto nomem;
    }

    /* fragments in text order; stripped whitespace belongs to no fragment */
    qsort(tk.taken, tk.n_taken, sizeof(uint64_t), cmp_u64);
    size_t q = 0;
    for (size_t k = 0; k <= tk.n_taken; k++) {
        size_t end = k < tk.n_taken ? (size_t)(tk.taken[k] >> 32) : n;
        size_t a = q, b = end;
        while (a < b && tk.covered[a] == 2)
            a++;
        while (b > a && tk.covered[b - 1] == 2)
            b--;
        if (a < b && !frag_push(pt, (uint32_t)a, (uint32_t)(b - a), -1))
            goto nomem;
        if (k == tk.n_taken)
            break;
        int32_t tok = (int32_t)(uint32_t)tk.taken[k];
        if (!frag_push(pt, (uint32_t)end, v->tokens[tok].text_len, tok))
            goto nomem;
        q = end + v->tokens[tok].text_len;
    }
    st = PV_OK;
    goto done;

nomem:
    st = pv_err_set(err, PV_ERR_NOMEM, "special-token partition of %zu bytes", n);
done:
    free(sc.cands);
    free(sc.longs);
    free(tk.covered);
    free(tk.taken);
    return st;
}

/* ---- invalid UTF-8 (BPE) ----------------------------------------------------------- */

/* Copy t[0..n) into s->buf with U+FFFD for each byte that starts no well-formed
   sequence; returns false on OOM. *out points at the text to use. */
static bool sanitize(const char *t, size_t n, struct tok_scratch *s, const char **out,
                     size_t *out_n)
{
    const unsigned char *u = (const unsigned char *)t;
    size_t i = 0;
    while (i < n) {
        int len = u[i] < 0x80 ? 1 : tok_utf8_check(u + i, n - i);
        if (len <= 0)
            break;
        i += (size_t)len;
    }
    if (i == n) {
        *out = t;
        *out_n = n;
        return true;
    }
    size_t need;
    if (pv_mul_overflow(n, 3, &need) || !tok_scratch_buf(s, need))
        return false;
    memcpy(s->buf, t, i);
    size_t m = i;
    while (i < n) {
        int len = tok_utf8_check(u + i, n - i);
        if (len > 0) {
            memcpy(s->buf + m, u + i, (size_t)len);
            m += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(s->buf + m, "\xEF\xBF\xBD", 3);
            m += 3;
            i++;
        }
    }
    *out = s->buf;
    *out_n = m;
    return true;
}

/* ---- entry points ------------------------------------------------------------------ */

static enum pv_status tokenize_joined(const struct pv_vocab *v, const char *text, size_t n,
                                      const struct seg_range *segs, size_t n_segs,
                                      bool add_special, struct tok_ids *out, struct pv_err *err)
{
    struct partition pt = {0};
    struct tok_scratch s = {0};
    char *clean = NULL;
    enum pv_status st;

    if (n > MAX_TEXT_BYTES)
        return pv_err_set(err, PV_ERR_TOO_LARGE, "text of %zu bytes is over the tokenizer's "
                          "limit of %zu", n, MAX_TEXT_BYTES);
    if (add_special && v->add_bos && !tok_ids_push(out, v->bos))
        return pv_err_set(err, PV_ERR_NOMEM, "token ids");
    if ((st = partition(v, text, n, segs, n_segs, &pt, err)) != PV_OK)
        goto done;

    bool prev_special = true; /* SPM: a space goes in front of the first fragment */
    for (size_t i = 0; i < pt.n; i++) {
        const struct frag *f = &pt.frags[i];
        if (f->token >= 0) {
            if (!tok_ids_push(out, f->token)) {
                st = pv_err_set(err, PV_ERR_NOMEM, "token ids");
                goto done;
            }
            prev_special = true;
            continue;
        }
        if (v->kind == TOK_KIND_SPM) {
            const char *t0 = text + f->start;
            bool starts_space = (f->len >= 1 && t0[0] == ' ') ||
                                (f->len >= 3 && memcmp(t0, "\xE2\x96\x81", 3) == 0);
            bool prefix = v->add_space_prefix && prev_special &&
                          !(v->prefix_first_only && f->start != 0) &&
                          !(v->prefix_unless_space && starts_space);
            st = tok_spm_encode(v, text + f->start, f->len, prefix, out, &s, err);
        } else {
            const char *t;
            size_t tn;
            if (!sanitize(text + f->start, f->len, &s, &t, &tn)) {
                st = pv_err_set(err, PV_ERR_NOMEM, "tokenizing %zu bytes", n);
                goto done;
            }
            if (t == s.buf) { /* the BPE pass reuses s.buf: keep the clean text apart */
                free(clean);
                clean = try_malloc(tn ? tn : 1);
                if (!clean) {
                    st = pv_err_set(err, PV_ERR_NOMEM, "tokenizing %zu bytes", n);
                    goto done;
                }
                memcpy(clean, t, tn);
                t = clean;
            }
            st = tok_bpe_encode(v, t, tn, out, &s, err);
        }
        if (st != PV_OK)
            goto done;
        prev_special = false;
    }
    if (add_special && v->add_eos && !tok_ids_push(out, v->eos))
        st = pv_err_set(err, PV_ERR_NOMEM, "token ids");
done:
    free(clean);
    free(pt.frags);
    tok_scratch_release(&s);
    return st;
}

enum pv_status pv_tokenize(const struct pv_vocab *v, const char *text, size_t len,
                           unsigned flags, int32_t *ids, size_t cap, size_t *n_ids,
                           struct pv_err *err)
{
    struct tok_ids out = {0};
    struct seg_range seg = {(uint32_t)PV_MIN(len, (size_t)UINT32_MAX),
                            (flags & PV_TOKENIZE_PARSE_SPECIAL) != 0};
    enum pv_status st;

    *n_ids = 0;
    if (!text && len)
        return pv_err_set(err, PV_ERR_INVALID, "tokenize: NULL text");
    st = tokenize_joined(v, text ? text : "", len, &seg, 1,
                         (flags & PV_TOKENIZE_ADD_SPECIAL) != 0, &out, err);
    if (st == PV_OK) {
        *n_ids = out.n;
        if (out.n > cap)
            st = pv_err_set(err, PV_ERR_TOO_LARGE, "%zu tokens do not fit in a buffer of %zu",
                            out.n, cap);
        else if (out.n)
            memcpy(ids, out.ids, out.n * sizeof(int32_t));
    }
    free(out.ids);
    return st;
}

enum pv_status pv_tokenize_segments(const struct pv_vocab *v, const struct pv_text_segment *segs,
                                    size_t n_segs, unsigned flags, int32_t **ids,
                                    size_t *n_ids, struct pv_err *err)
{
    struct tok_ids out = {0};
    struct seg_range *ranges = NULL;
    char *joined = NULL;
    size_t total = 0;
    enum pv_status st;

    *ids = NULL;
    *n_ids = 0;
    for (size_t i = 0; i < n_segs; i++) {
        if (!segs[i].text && segs[i].len)
            return pv_err_set(err, PV_ERR_INVALID, "tokenize: segment %zu has NULL text", i);
        if (pv_add_overflow(total, segs[i].len, &total) || total > MAX_TEXT_BYTES)
            return pv_err_set(err, PV_ERR_TOO_LARGE, "prompt is over the tokenizer's limit "
                              "of %zu bytes", MAX_TEXT_BYTES);
    }
    ranges = try_calloc(n_segs ? n_segs : 1, sizeof(*ranges));
    joined = try_malloc(total ? total : 1);
    if (!ranges || !joined) {
        st = pv_err_set(err, PV_ERR_NOMEM, "prompt of %zu bytes", total);
        goto done;
    }
    size_t off = 0;
    for (size_t i = 0; i < n_segs; i++) {
        if (segs[i].len)
            memcpy(joined + off, segs[i].text, segs[i].len);
        off += segs[i].len;
        ranges[i] = (struct seg_range){(uint32_t)off, segs[i].parse_special};
    }
    if (n_segs == 0)
        ranges[0] = (struct seg_range){0, false};
    st = tokenize_joined(v, joined, total, ranges, n_segs ? n_segs : 1,
                         (flags & PV_TOKENIZE_ADD_SPECIAL) != 0, &out, err);
    if (st == PV_OK) {
        if (out.n == 0 && !tok_ids_grow(&out, 1)) {
            st = pv_err_set(err, PV_ERR_NOMEM, "token ids");
            goto done;
        }
        *ids = out.ids;
        *n_ids = out.n;
        out.ids = NULL;
    }
done:
    free(out.ids);
    free(ranges);
    free(joined);
    return st;
}
