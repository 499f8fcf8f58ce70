/*
 * spm.c - the SentencePiece-style BPE tokenizer (tokenizer.ggml.model "llama").
 *
 * One raw fragment at a time: optional space prefix, every ' ' becomes U+2581 "▁",
 * the text is split into UTF-8 characters, and adjacent symbols are merged while their
 * concatenation is a token, highest score first (ties: leftmost); vocabularies from a
 * Hugging Face tokenizer.json (spm_ranked) merge only the pairs its merges list, lowest
 * rank first, as its BPE model does. A final symbol that is not a token falls back to
 * byte tokens <0xXX>. A heap keeps it O(n log n).
 */
#include "tok/tok_impl.h"

/* Bytes of the character that starts with lead byte c, as llama.cpp counts them. */
static uint32_t lead_len(unsigned char c)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

static bool try_pair(const struct pv_vocab *v, const char *e, struct tok_scratch *s, int32_t l,
                     int32_t r)
{
    if (l < 0 || r < 0)
        return true;
    const struct tok_sym *a = &s->syms[l], *b = &s->syms[r];
    if (v->spm_ranked) { /* only listed merges, lowest rank first */
        const struct tok_merge *mg = a->id >= 0 && b->id >= 0 ? tok_merge_find(v, a->id, b->id)
                                                              : NULL;
        return !mg || tok_heap_push(s, (struct tok_pair){-(float)mg->rank, (uint32_t)l,
                                                         (uint32_t)r, a->n + b->n, mg->result});
    }
    uint32_t size = a->n + b->n;
    int32_t id = tok_lookup(v, e + a->start, size);
    if (id < 0)
        return true;
    return tok_heap_push(s, (struct tok_pair){v->tokens[id].score, (uint32_t)l, (uint32_t)r,
                                              size, id});
}

enum pv_status tok_spm_encode(const struct pv_vocab *v, const char *text, size_t n,
                              bool add_prefix, struct tok_ids *out, struct tok_scratch *s,
                              struct pv_err *err)
{
    size_t need, m = 0, count = 0;

    if (pv_mul_overflow(n, 3, &need) || pv_add_overflow(need, 3, &need) || need > UINT32_MAX)
        return pv_err_set(err, PV_ERR_TOO_LARGE, "text of %zu bytes is too long", n);
    if (!tok_scratch_buf(s, need))
        return pv_err_set(err, PV_ERR_NOMEM, "tokenizer buffer of %zu bytes", need);

    /* escape whitespace */
    char *e = s->buf;
    if (add_prefix) {
        memcpy(e, "\xE2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(e + m, "\xE2\x96\x81", 3);
            m += 3;
        } else {
            e[m++] = text[i];
        }
    }
    if (m == 0)
        return PV_OK;

    /* one symbol per character */
    if (!tok_scratch_syms(s, m))
        return pv_err_set(err, PV_ERR_NOMEM, "tokenizer symbols for %zu bytes", m);
    for (size_t off = 0; off < m; count++) {
        uint32_t len = PV_MIN(lead_len((unsigned char)e[off]), (uint32_t)(m - off));
        s->syms[count] = (struct tok_sym){(uint32_t)off, len, (int32_t)count - 1,
                                          (int32_t)count + 1,
                                          v->spm_ranked ? tok_lookup(v, e + off, len) : -1};
        off += len;
    }
    s->syms[count - 1].next = -1;

    /* merge, best pair first */
    s->heap_n = 0;
    for (size_t i = 1; i < count; i++)
        if (!try_pair(v, e, s, (int32_t)i - 1, (int32_t)i))
            goto nomem;
    while (s->heap_n) {
        struct tok_pair p = tok_heap_pop(s);
        struct tok_sym *l = &s->syms[p.left], *r = &s->syms[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue; /* stale: a side was merged since */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = (int32_t)p.left;
        l->id = p.id;
        if (!try_pair(v, e, s, l->prev, (int32_t)p.left) ||
            !try_pair(v, e, s, (int32_t)p.left, l->next))
            goto nomem;
    }

    /* emit tokens; characters that are no token become byte tokens */
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const struct tok_sym *sym = &s->syms[i];
        int32_t id = sym->id >= 0 ? sym->id : tok_lookup(v, e + sym->start, sym->n);
        if (id >= 0) {
            if (!tok_ids_push(out, id))
                goto nomem;
            continue;
        }
        for (uint32_t k = 0; k < sym->n; k++) {
            int32_t b = v->byte_tok[(unsigned char)e[sym->start + k]];
            if (b < 0)
                b = v->unk;
            if (b >= 0 && !tok_ids_push(out, b))
                goto nomem;
        }
    }
    return PV_OK;

nomem:
    return pv_err_set(err, PV_ERR_NOMEM, "tokenizing %zu bytes", n);
}
