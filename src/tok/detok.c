/*
 * detok.c - token ids to text: pieces, the streaming detokenizer, and the vocabulary's
 * public accessors.
 *
 * The streaming detokenizer keeps at most 3 bytes of an unfinished UTF-8 character
 * between pushes, so a character split over byte tokens comes out whole, and writes
 * U+FFFD for each byte that cannot start a well-formed sequence: what it hands out is
 * always valid UTF-8, ready for JSON and SSE.
 */
#include <stdlib.h>

#include "model/mlx.h"
#include "tok/tok_impl.h"

struct pv_detok {
    const struct pv_vocab *vocab;
    unsigned flags;
    bool started;            /* a piece has come out (PV_DETOK_STRIP_SPACE) */
    unsigned char pend[4];   /* unfinished character */
    size_t n_pend;
    struct pv_buf in, out;
};

enum pv_status pv_vocab_load_file(const char *path, struct pv_vocab **out, struct pv_err *err)
{
    struct gguf_file *f;
    struct mlx_hparams hp;
    enum pv_status st;

    *out = NULL;
    if (mlx_is_dir(path))
        st = mlx_probe(path, &f, &hp, NULL, NULL, err);
    else
        st = gguf_open(path, &f, err);
    if (st != PV_OK)
        return st;
    st = tok_vocab_load(f, out, err);
    gguf_close(f);
    return st;
}

void pv_vocab_free(struct pv_vocab *v)
{
    tok_vocab_free(v);
}

size_t pv_vocab_n_tokens(const struct pv_vocab *v)
{
    return v->n_tokens;
}

int32_t pv_vocab_bos(const struct pv_vocab *v)
{
    return v->bos;
}

int32_t pv_vocab_eos(const struct pv_vocab *v)
{
    return v->eos;
}

int32_t pv_vocab_eot(const struct pv_vocab *v)
{
    return v->eot;
}

bool pv_vocab_adds_bos(const struct pv_vocab *v)
{
    return v->add_bos;
}

bool pv_vocab_adds_eos(const struct pv_vocab *v)
{
    return v->add_eos;
}

bool pv_token_is_eog(const struct pv_vocab *v, int32_t id)
{
    return id >= 0 && (uint32_t)id < v->n_tokens && (v->tokens[id].attr & TOK_ATTR_EOG);
}

bool pv_token_is_control(const struct pv_vocab *v, int32_t id)
{
    return id >= 0 && (uint32_t)id < v->n_tokens && (v->tokens[id].attr & TOK_ATTR_SPECIAL);
}

const char *pv_token_to_piece(const struct pv_vocab *v, int32_t id, bool render_special,
                              size_t *len)
{
    *len = 0;
    if (id < 0 || (uint32_t)id >= v->n_tokens)
        return NULL;
    const struct tok_token *t = &v->tokens[id];
    if (!render_special && (t->attr & TOK_ATTR_SPECIAL))
        return "";
    *len = t->piece_len;
    return v->pieces + t->piece_off;
}

struct pv_detok *pv_detok_new(const struct pv_vocab *v, unsigned flags)
{
    struct pv_detok *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->vocab = v;
    d->flags = flags;
    buf_init(&d->in);
    buf_init(&d->out);
    return d;
}

void pv_detok_free(struct pv_detok *d)
{
    if (!d)
        return;
    buf_release(&d->in);
    buf_release(&d->out);
    free(d);
}

/* Append U+FFFD; false on OOM. */
static bool put_replacement(struct pv_buf *b)
{
    return buf_append(b, "\xEF\xBF\xBD", 3);
}

enum pv_status pv_detok_push(struct pv_detok *d, int32_t id, const char **text, size_t *len,
                             struct pv_err *err)
{
    const struct pv_vocab *v = d->vocab;
    size_t n;
    const char *piece;

    *text = "";
    *len = 0;
    piece = pv_token_to_piece(v, id, !(d->flags & PV_DETOK_SKIP_SPECIAL), &n);
    if (!piece)
        return pv_err_set(err, PV_ERR_INVALID, "token id %lld is not in the vocabulary of %u",
                          (long long)id, v->n_tokens);
    if (n && !d->started && id != v->bos) {
        d->started = true;
        if ((d->flags & PV_DETOK_STRIP_SPACE) && v->add_space_prefix && piece[0] == ' ') {
            piece++;
            n--;
        }
    }
    buf_reset(&d->out);
    if (n == 0)
        return PV_OK;

    /* the unfinished character, then the piece */
    buf_reset(&d->in);
    if (!buf_append(&d->in, d->pend, d->n_pend) || !buf_append(&d->in, piece, n) ||
        !buf_reserve(&d->out, d->in.len * 3))
        return pv_err_set(err, PV_ERR_NOMEM, "detokenizer buffer");
    const unsigned char *s = (const unsigned char *)d->in.data;
    size_t m = d->in.len, i = 0;
    d->n_pend = 0;
    while (i < m) {
        int k = tok_utf8_check(s + i, m - i);
        if (k > 0) {
            buf_append(&d->out, s + i, (size_t)k);
            i += (size_t)k;
        } else if (k == 0) {
            memcpy(d->pend, s + i, m - i); /* fewer than 4 bytes: a proper prefix */
            d->n_pend = m - i;
            break;
        } else {
            put_replacement(&d->out);
            i++;
        }
    }
    *text = d->out.data;
    *len = d->out.len;
    return PV_OK;
}

void pv_detok_flush(struct pv_detok *d, const char **text, size_t *len)
{
    buf_reset(&d->out);
    for (size_t i = 0; i < d->n_pend; i++)
        put_replacement(&d->out); /* reserved by the push that left them */
    d->n_pend = 0;
    d->started = false;
    *text = d->out.data;
    *len = d->out.len;
}

enum pv_status pv_detokenize(const struct pv_vocab *v, const int32_t *ids, size_t n_ids,
                             unsigned flags, char **text, size_t *len, struct pv_err *err)
{
    struct pv_buf all = PV_BUF_INIT;
    struct pv_detok *d;
    enum pv_status st = PV_OK;
    const char *p;
    size_t n;

    *text = NULL;
    *len = 0;
    d = pv_detok_new(v, flags);
    if (!d)
        return pv_err_set(err, PV_ERR_NOMEM, "detokenizer");
    for (size_t i = 0; i < n_ids && st == PV_OK; i++) {
        st = pv_detok_push(d, ids[i], &p, &n, err);
        if (st == PV_OK && !buf_append(&all, p, n))
            st = pv_err_set(err, PV_ERR_NOMEM, "detokenized text");
    }
    if (st == PV_OK) {
        pv_detok_flush(d, &p, &n);
        if (!buf_append(&all, p, n))
            st = pv_err_set(err, PV_ERR_NOMEM, "detokenized text");
    }
    pv_detok_free(d);
    if (st != PV_OK) {
        buf_release(&all);
        return st;
    }
    if (all.cap == 0 && !buf_reserve(&all, 1)) /* hand out a malloc'd string */
        return pv_err_set(err, PV_ERR_NOMEM, "detokenized text");
    *text = buf_detach(&all, len);
    return PV_OK;
}
