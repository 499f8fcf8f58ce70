/*
 * prompt.h - from a request to prompt tokens, and from output tokens to events
 * (server-internal).
 *
 * prompt_build turns a validated request into the exact tokens the model will read: the
 * conversation of an Anthropic or OpenAI body rendered with the model's chat template
 * (chat/), or the raw prompt of /v1/completions, tokenized with tok/. It also prepares
 * the output side: a streaming detokenizer and the output parser that splits the
 * model's text into text, thinking and tool-call events for an emitter.
 */
#ifndef PV_SERVER_PROMPT_H
#define PV_SERVER_PROMPT_H

#include "server/api.h"
#include "server/emit.h"

struct prompt_out;

struct prompt_in {
    int32_t *tokens;             /* [n_tokens], owned (prompt_in_release) */
    size_t n_tokens;
    struct prompt_out *out;      /* output side for this request, owned until taken */
};

/* Build the prompt of `q` (body in r->json). Errors are request errors (400) or 500. */
enum pv_status prompt_build(struct http_req *r, const struct api_request *q,
                            struct prompt_in *in, struct pv_err *err);
void prompt_in_release(struct prompt_in *in);

/* Detokenize generated tokens, appending complete UTF-8 text to `text`. */
void prompt_out_tokens(struct prompt_out *po, const int32_t *toks, size_t n, struct pv_buf *text);
/* End of generation: the detokenizer's remaining bytes. */
void prompt_out_flush(struct prompt_out *po, struct pv_buf *text);
/* Parse released model text into events written by `em`. */
void prompt_out_text(struct prompt_out *po, const char *s, size_t n, struct emitter *em,
                     struct pv_buf *out);
/* End of text: close what the parser has open (a tool call cut short, thinking). */
void prompt_out_finish(struct prompt_out *po, struct emitter *em, struct pv_buf *out);
void prompt_out_free(struct prompt_out *po);

#endif /* PV_SERVER_PROMPT_H */
