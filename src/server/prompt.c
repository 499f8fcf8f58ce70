/*
 * prompt.c - request -> prompt tokens, output tokens -> events (see prompt.h).
 *
 * /v1/completions prompts are tokenized as given (BOS as the vocabulary says; control
 * tokens written in the prompt stay text). Conversations (/v1/messages, count_tokens,
 * /v1/chat/completions) need the chat layer's template rendering and output parser.
 */
#include <string.h>

#include "server/gen.h"
#include "server/prompt.h"

struct prompt_out {
    struct pv_detok *detok;      /* owned */
};

static struct prompt_out *out_new(const struct pv_vocab *vocab)
{
    struct prompt_out *po = xcalloc(1, sizeof(*po));
    po->detok = pv_detok_new(vocab, PV_DETOK_SKIP_SPECIAL);
    if (!po->detok) {
        free(po);
        return NULL;
    }
    return po;
}

void prompt_out_free(struct prompt_out *po)
{
    if (!po)
        return;
    pv_detok_free(po->detok);
    free(po);
}

void prompt_in_release(struct prompt_in *in)
{
    free(in->tokens);
    in->tokens = NULL;
    in->n_tokens = 0;
    prompt_out_free(in->out);
    in->out = NULL;
}

static enum pv_status tokenize_all(const struct pv_vocab *vocab, const char *text, size_t len,
                                   unsigned flags, struct prompt_in *in, struct pv_err *err)
{
    struct pv_text_segment seg = {text, len, (flags & PV_TOKENIZE_PARSE_SPECIAL) != 0};
    return pv_tokenize_segments(vocab, &seg, 1, flags & PV_TOKENIZE_ADD_SPECIAL, &in->tokens,
                                &in->n_tokens, err);
}

enum pv_status prompt_build(struct http_req *r, const struct api_request *q,
                            struct prompt_in *in, struct pv_err *err)
{
    const struct pv_vocab *vocab = gen_engine_vocab(r->srv->engine);
    enum pv_status st;
    memset(in, 0, sizeof(*in));
    if (q->kind != API_COMPLETIONS)
        return pv_err_set(err, PV_ERR_INTERNAL,
                          "chat templates are not available in this build yet");
    st = tokenize_all(vocab, q->prompt_text, strlen(q->prompt_text), PV_TOKENIZE_ADD_SPECIAL,
                      in, err);
    if (st != PV_OK)
        return st;
    if (in->n_tokens == 0) {
        prompt_in_release(in);
        return pv_err_set(err, PV_ERR_INVALID, "prompt: the prompt is empty");
    }
    in->out = out_new(vocab);
    if (!in->out) {
        prompt_in_release(in);
        return pv_err_set(err, PV_ERR_NOMEM, "cannot create a detokenizer");
    }
    return PV_OK;
}

void prompt_out_tokens(struct prompt_out *po, const int32_t *toks, size_t n, struct pv_buf *text)
{
    for (size_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (pv_detok_push(po->detok, toks[i], &s, &len, NULL) == PV_OK && len)
            buf_append(text, s, len);
    }
}

void prompt_out_flush(struct prompt_out *po, struct pv_buf *text)
{
    const char *s;
    size_t len;
    pv_detok_flush(po->detok, &s, &len);
    if (len)
        buf_append(text, s, len);
}

void prompt_out_text(struct prompt_out *po, const char *s, size_t n, struct emitter *em,
                     struct pv_buf *out)
{
    PV_UNUSED(po);
    emit_text(em, s, n, out);
}

void prompt_out_finish(struct prompt_out *po, struct emitter *em, struct pv_buf *out)
{
    PV_UNUSED(po);
    PV_UNUSED(em);
    PV_UNUSED(out);
}
