/*
 * prompt.c - request -> prompt tokens, output tokens -> events (see prompt.h).
 *
 * Conversations are converted and rendered by the chat layer; the rendered text comes
 * in segments, and only template text may become control tokens; BOS comes from the
 * template when it prints one, else from the vocabulary's flags. Forced output (tool
 * choice, response_format) gets a grammar matcher the engine applies to the logits.
 * /v1/completions prompts are tokenized as given (BOS as the vocabulary says). Output:
 * detokenizer -> chat parser (thinking, tool calls in the template's format, stop
 * sequences) -> emitter.
 */
#include <string.h>

#include "chat/chat.h"
#include "server/gen.h"
#include "server/prompt.h"
#include "server/registry.h"

struct prompt_out {
    struct pv_detok *detok;      /* owned */
    struct chat_parser *parser;  /* owned */
    const char *stop[API_MAX_STOP + SERVER_MAX_STOP]; /* borrowed: request body, server */
    int n_stop;
    int n_input;
    /* where parser events go during a call */
    struct emitter *em;
    struct pv_buf *out;
};

enum pv_status prompt_init(struct reg_model *lm, struct pv_err *err)
{
    lm->tok_table = chat_token_table_new(gen_engine_vocab(lm->engine));
    if (!lm->tok_table)
        return pv_err_set(err, PV_ERR_NOMEM, "cannot build the token table for grammars");
    const struct pv_model *m = gen_engine_model(lm->engine);
    const struct pv_vocab *v = gen_engine_vocab(lm->engine);
    char bos[64] = "", eos[64] = "";
    size_t len;
    const char *piece;
    if (pv_vocab_bos(v) >= 0 && (piece = pv_token_to_piece(v, pv_vocab_bos(v), true, &len)))
        snprintf(bos, sizeof(bos), "%.*s", (int)len, piece);
    if (pv_vocab_eos(v) >= 0 && (piece = pv_token_to_piece(v, pv_vocab_eos(v), true, &len)))
        snprintf(eos, sizeof(eos), "%.*s", (int)len, piece);
    return chat_template_new(pv_model_chat_template(m), pv_model_arch(m), bos, eos, &lm->tmpl,
                             err);
}

void prompt_out_free(struct prompt_out *po)
{
    if (!po)
        return;
    pv_detok_free(po->detok);
    chat_parser_free(po->parser);
    free(po);
}

void prompt_in_release(struct prompt_in *in)
{
    chat_matcher_free(in->matcher);
    in->matcher = NULL;
    free(in->tokens);
    in->tokens = NULL;
    in->n_tokens = 0;
    prompt_out_free(in->out);
    in->out = NULL;
}

static void on_event(void *ud, const struct chat_event *ev)
{
    struct prompt_out *po = ud;
    struct emitter *em = po->em;
    switch (ev->type) {
    case CHAT_EV_TEXT:
        emit_text(em, ev->text, ev->len, po->out);
        break;
    case CHAT_EV_THINKING:
        emit_thinking(em, ev->text, ev->len, po->out);
        break;
    case CHAT_EV_TOOL_START:
        emit_tool_start(em, ev->tool_name ? ev->tool_name : "", po->out);
        break;
    case CHAT_EV_TOOL_ARGS:
        emit_tool_args(em, ev->text, ev->len, po->out);
        break;
    case CHAT_EV_TOOL_END:
        emit_tool_end(em, po->out);
        break;
    case CHAT_EV_STOP:
        if (ev->stop == CHAT_STOP_MAX_TOKENS) {
            em->stop_reason = EMIT_STOP_LENGTH;
        } else if (ev->stop == CHAT_STOP_SEQUENCE) {
            em->stop_reason = EMIT_STOP_SEQUENCE;
            for (int i = 0; i < po->n_stop; i++)
                if (ev->stop_sequence && strcmp(po->stop[i], ev->stop_sequence) == 0)
                    em->stop_sequence = po->stop[i];
        } else if (ev->stop == CHAT_STOP_TOOL_USE) {
            em->stop_reason = EMIT_STOP_TOOL;
        } else {
            em->stop_reason = EMIT_STOP_END;
        }
        break;
    }
}

static struct prompt_out *out_new(const struct http_req *r, struct chat_parser_params *pp,
                                  const struct api_request *q)
{
    const struct http_server *srv = r->srv;
    const struct pv_vocab *vocab = gen_engine_vocab(r->lm->engine);
    struct prompt_out *po = xcalloc(1, sizeof(*po));
    for (int i = 0; i < q->n_stop; i++)
        po->stop[po->n_stop++] = q->stop[i];
    for (int i = 0; i < srv->p.n_stop; i++)
        po->stop[po->n_stop++] = srv->p.stop[i];
    pp->stop = po->stop;
    pp->n_stop = (size_t)po->n_stop;
    /* control tokens stay visible: the parser reads markers such as [TOOL_CALLS] */
    po->detok = pv_detok_new(vocab, 0);
    po->parser = chat_parser_new(pp, on_event, po);
    if (!po->detok || !po->parser) {
        prompt_out_free(po);
        return NULL;
    }
    return po;
}

static enum pv_status build_chat(struct http_req *r, const struct api_request *q,
                                 struct prompt_in *in, struct pv_err *err)
{
    const struct pv_vocab *vocab = gen_engine_vocab(r->lm->engine);
    struct chat_conv conv;
    struct chat_prompt cp;
    struct chat_parser_params pp;
    enum pv_status st;
    memset(&conv, 0, sizeof(conv));
    memset(&cp, 0, sizeof(cp));
    st = q->kind == API_CHAT ? chat_conv_from_openai(r->json, &conv, err)
                             : chat_conv_from_anthropic(r->json, &conv, err);
    if (st != PV_OK)
        goto out_conv;
    st = chat_render(r->lm->tmpl, &conv, &cp, err);
    if (st != PV_OK)
        goto out_conv;
    st = pv_tokenize_segments(vocab, cp.segs, cp.n_segs,
                              cp.starts_with_bos ? 0 : PV_TOKENIZE_ADD_SPECIAL, &in->tokens,
                              &in->n_tokens, err);
    if (st != PV_OK || q->kind == API_COUNT_TOKENS)
        goto out_prompt;
    /* forced output (tool_choice any/tool/required/named, response_format): a grammar */
    struct chat_grammar *g;
    st = chat_grammar_for(&conv, &g, err);
    if (st != PV_OK)
        goto out_prompt;
    if (g) {
        in->matcher = chat_matcher_new(g, r->lm->tok_table);
        if (!in->matcher) {
            st = pv_err_set(err, PV_ERR_NOMEM, "cannot create the output grammar");
            goto out_prompt;
        }
    }
    chat_parser_params_for(r->lm->tmpl, &conv, &cp, &pp);
    in->out = out_new(r, &pp, q);
    if (!in->out)
        st = pv_err_set(err, PV_ERR_NOMEM, "cannot create the output parser");
out_prompt:
    chat_prompt_release(&cp);
out_conv:
    chat_conv_release(&conv);
    return st;
}

enum pv_status prompt_build(struct http_req *r, const struct api_request *q,
                            struct prompt_in *in, struct pv_err *err)
{
    const struct pv_vocab *vocab = gen_engine_vocab(r->lm->engine);
    enum pv_status st;
    memset(in, 0, sizeof(*in));
    if (q->kind != API_COMPLETIONS) {
        st = build_chat(r, q, in, err);
    } else {
        struct pv_text_segment seg = {q->prompt_text, strlen(q->prompt_text), false};
        st = pv_tokenize_segments(vocab, &seg, 1, PV_TOKENIZE_ADD_SPECIAL, &in->tokens,
                                  &in->n_tokens, err);
        if (st == PV_OK && in->n_tokens == 0)
            st = pv_err_set(err, PV_ERR_INVALID, "prompt: the prompt is empty");
        if (st == PV_OK) {
            struct chat_parser_params pp = {.tool_format = CHAT_TOOLFMT_NONE};
            in->out = out_new(r, &pp, q);
            if (!in->out)
                st = pv_err_set(err, PV_ERR_NOMEM, "cannot create the output parser");
        }
    }
    if (st != PV_OK)
        prompt_in_release(in);
    else if (in->out)
        in->out->n_input = (int)in->n_tokens;
    return st;
}

void prompt_out_tokens(struct prompt_out *po, const int32_t *toks, size_t n,
                       struct emitter *em, struct pv_buf *out)
{
    po->em = em;
    po->out = out;
    for (size_t i = 0; i < n && !chat_parser_stopped(po->parser); i++) {
        const char *s;
        size_t len;
        if (pv_detok_push(po->detok, toks[i], &s, &len, NULL) == PV_OK && len)
            chat_parser_feed(po->parser, s, len);
    }
}

bool prompt_out_stopped(const struct prompt_out *po)
{
    return chat_parser_stopped(po->parser);
}

void prompt_out_finish(struct prompt_out *po, bool length, struct emitter *em,
                       struct pv_buf *out)
{
    const char *s;
    size_t len;
    po->em = em;
    po->out = out;
    pv_detok_flush(po->detok, &s, &len);
    if (len && !chat_parser_stopped(po->parser))
        chat_parser_feed(po->parser, s, len);
    chat_parser_finish(po->parser, length ? CHAT_STOP_MAX_TOKENS : CHAT_STOP_END_TURN,
                       po->n_input, em->n_output);
}
