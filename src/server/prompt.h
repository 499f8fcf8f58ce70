/*
 * prompt.h - from a request to prompt tokens, and from output tokens to events
 * (server-internal).
 *
 * prompt_build turns a validated request into the exact tokens the model will read: the
 * conversation of an Anthropic or OpenAI body (chat_conv_from_*) rendered with the
 * model's chat template, or the raw prompt of /v1/completions, tokenized with tok/
 * (control tokens only from template text). It also prepares the output side: a
 * streaming detokenizer feeding the chat layer's output parser, whose events (text,
 * thinking, tool calls, stop) go to an emitter. The parser also applies stop sequences.
 */
#ifndef PV_SERVER_PROMPT_H
#define PV_SERVER_PROMPT_H

#include "server/api.h"
#include "server/emit.h"

struct prompt_out;
struct chat_matcher;

struct prompt_in {
    int32_t *tokens;             /* [n_tokens], owned (prompt_in_release) */
    size_t n_tokens;
    struct prompt_out *out;      /* output side for this request, owned until taken */
    struct chat_matcher *matcher; /* grammar of forced output or NULL; owned until taken */
};

struct reg_model;

/* Parse a loaded model's chat template and build its grammar token table, once (m->tmpl,
 * m->tok_table; the registry frees them). */
enum pv_status prompt_init(struct reg_model *m, struct pv_err *err);

/* Build the prompt of `q` (body in r->json) for the model r->lm. Errors are request errors
 * (400) or 500. */
enum pv_status prompt_build(struct http_req *r, const struct api_request *q,
                            struct prompt_in *in, struct pv_err *err);
void prompt_in_release(struct prompt_in *in);

/* Detokenize generated tokens and parse the text into events written by `em` to `out`. */
void prompt_out_tokens(struct prompt_out *po, const int32_t *toks, size_t n,
                       struct emitter *em, struct pv_buf *out);
/* True once a stop sequence was met: generation should stop. */
bool prompt_out_stopped(const struct prompt_out *po);
/* End of generation (`length`: max_tokens reached, else an end-of-generation token or a
 * stop sequence): flush, close what is open, and set em's stop reason. */
void prompt_out_finish(struct prompt_out *po, bool length, struct emitter *em,
                       struct pv_buf *out);
void prompt_out_free(struct prompt_out *po);

#endif /* PV_SERVER_PROMPT_H */
