/*
 * emit.c - the emitter: generation events -> ordered blocks -> the API's wire format.
 *
 * Text, thinking and tool calls arrive as the output parser finds them; a change of kind
 * closes the open block and opens the next, so every wire sees start, deltas, stop in
 * order. Which wire an emitter uses follows from the request's API (emit_int.h); APIs
 * without thinking blocks (completions) get thinking as text, APIs without tools drop
 * tool calls.
 */
#include <string.h>

#include "server/emit_int.h"
#include "server/registry.h"

void emit_sse(struct pv_buf *out, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text)
        return;
    if (event)
        buf_printf(out, "event: %s\n", event);
    buf_printf(out, "data: %s\n\n", text);
    free(text);
}

json_t *emit_jstrn(const char *s, size_t n)
{
    json_t *v = json_stringn(s ? s : "", s ? n : 0);
    return v ? v : json_string("");
}

void emit_init(struct emitter *em, struct http_req *r, const struct api_request *q, int n_prompt)
{
    memset(em, 0, sizeof(*em));
    em->wire = q->kind == API_CHAT          ? &emit_wire_chat
               : q->kind == API_COMPLETIONS ? &emit_wire_completions
                                            : &emit_wire_anthropic;
    em->r = r;
    em->kind = q->kind;
    em->stream = q->stream;
    em->include_usage = q->include_usage;
    em->model = q->model ? q->model : r->srv->model_name;
    em->created = (long long)clock_wall_s();
    em->n_prompt = n_prompt;
    em->failed = PV_OK;
    em->logprobs = q->logprobs;
    /* the vocabulary spells logprobs' tokens; an emitter without a model never has any */
    em->vocab = r->lm ? gen_engine_vocab(r->lm->engine) : NULL;
    buf_init(&em->text);
    buf_init(&em->thinking);
    buf_init(&em->args);
    buf_init(&em->all_text);
    buf_init(&em->all_thinking);
    http_make_id(em->id, sizeof(em->id), em->wire->id_prefix, 24);
    em->wire->init(em);
}

void emit_release(struct emitter *em)
{
    json_decref(em->content);
    json_decref(em->tool_calls);
    json_decref(em->lp_pending);
    json_decref(em->lp_all);
    em->content = em->tool_calls = em->lp_pending = em->lp_all = NULL;
    buf_release(&em->text);
    buf_release(&em->thinking);
    buf_release(&em->args);
    buf_release(&em->all_text);
    buf_release(&em->all_thinking);
}

static void close_block(struct emitter *em, struct pv_buf *out)
{
    if (em->open == EMIT_NONE)
        return;
    em->wire->block_stop(em, out);
    if (em->open == EMIT_TOOL)
        em->n_tools++;
    buf_reset(em->open == EMIT_TEXT ? &em->text : em->open == EMIT_THINKING ? &em->thinking
                                                                            : &em->args);
    em->open = EMIT_NONE;
}

static void open_block(struct emitter *em, enum emit_block kind, struct pv_buf *out)
{
    if (em->open == kind && kind != EMIT_TOOL)
        return;
    close_block(em, out);
    em->open = kind;
    em->wire->block_start(em, out);
}

void emit_begin(struct emitter *em, struct pv_buf *out)
{
    if (em->stream)
        em->wire->begin(em, out);
}

void emit_text(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (n == 0)
        return;
    open_block(em, EMIT_TEXT, out);
    if (em->stream)
        em->wire->block_delta(em, s, n, out);
    else
        buf_append(&em->text, s, n);
}

void emit_thinking(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (n == 0)
        return;
    if (!(em->wire->caps & EMIT_CAP_THINKING)) {
        emit_text(em, s, n, out);
        return;
    }
    open_block(em, EMIT_THINKING, out);
    if (em->stream)
        em->wire->block_delta(em, s, n, out);
    else
        buf_append(&em->thinking, s, n);
}

void emit_tool_start(struct emitter *em, const char *name, struct pv_buf *out)
{
    if (!(em->wire->caps & EMIT_CAP_TOOLS))
        return;
    close_block(em, out);
    snprintf(em->tool_name, sizeof(em->tool_name), "%s", name);
    http_make_id(em->tool_id, sizeof(em->tool_id), em->wire->tool_id_prefix, 24);
    open_block(em, EMIT_TOOL, out);
}

void emit_tool_args(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (em->open != EMIT_TOOL || n == 0)
        return;
    buf_append(&em->args, s, n);
    if (em->stream)
        em->wire->block_delta(em, s, n, out);
}

void emit_tool_end(struct emitter *em, struct pv_buf *out)
{
    if (em->open == EMIT_TOOL)
        close_block(em, out);
}

void emit_logprob(struct emitter *em, int32_t token, const struct gen_logprob *lp)
{
    if (em->logprobs >= 0 && em->wire->logprob)
        em->wire->logprob(em, token, lp);
}

void emit_ping(struct emitter *em, struct pv_buf *out)
{
    em->wire->ping(em, out);
}

void emit_end(struct emitter *em, struct pv_buf *out)
{
    close_block(em, out);
    if (em->stream)
        em->wire->end(em, out);
}

json_t *emit_take_json(struct emitter *em)
{
    return em->wire->take_json(em);
}
