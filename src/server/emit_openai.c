/*
 * emit_openai.c - the OpenAI wire formats of a generation (emit_int.h): chat completions
 * and legacy completions.
 *
 * Chat streams send a role chunk, content / reasoning_content / tool_calls deltas, a
 * finish_reason chunk, the usage chunk when asked, then [DONE]; with n > 1 each choice
 * (its own emitter, the same id) does so in turn up to its finish_reason, and the last one
 * adds usage and [DONE]. Completions stream `text` chunks the same way; their thinking is
 * text and they have no tools. Requested logprobs travel with the chunk that follows their
 * tokens (chat: logprobs.content entries; completions: tokens, token_logprobs,
 * top_logprobs, text_offset), or in the choice when not streaming.
 */
#include <string.h>

#include "server/emit_int.h"

static bool is_chat(const struct emitter *em)
{
    return em->kind == API_CHAT;
}

/* ---- logprobs ------------------------------------------------------------------------- */

/* An empty list of entries: chat [{token, logprob, bytes, top_logprobs}], completions
 * {tokens, token_logprobs, top_logprobs, text_offset}. */
static json_t *lp_container(const struct emitter *em)
{
    if (is_chat(em))
        return json_array();
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

static bool lp_empty(const struct emitter *em, const json_t *c)
{
    return is_chat(em) ? json_array_size(c) == 0
                       : json_array_size(json_object_get(c, "tokens")) == 0;
}

/* The `logprobs` value of a choice holding entries `c` (taken). */
static json_t *lp_wrap(const struct emitter *em, json_t *c)
{
    if (is_chat(em))
        return json_pack("{s:o, s:n}", "content", c, "refusal");
    return c;
}

/* Text of one token as the detokenizer gives it alone (control tokens visible). */
static json_t *token_text(const struct emitter *em, int32_t id)
{
    char *text = NULL;
    size_t len = 0;
    struct pv_err err = {0};
    if (pv_detokenize(em->vocab, &id, 1, 0, &text, &len, &err) != PV_OK)
        return json_string("");
    json_t *v = emit_jstrn(text, len);
    free(text);
    return v;
}

static json_t *utf8_bytes(const char *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

static void logprob(struct emitter *em, int32_t token, const struct gen_logprob *lp)
{
    json_t *c = em->stream ? em->lp_pending : em->lp_all;
    json_t *tok = token_text(em, token);
    const size_t tok_len = json_string_length(tok);
    if (is_chat(em)) {
        json_t *top = json_array();
        for (int k = 0; k < lp->n_top && k < em->logprobs; k++) {
            json_t *t = token_text(em, lp->top_id[k]);
            json_array_append_new(
                top, json_pack("{s:o, s:f, s:o}", "token", t, "logprob",
                               (double)lp->top_logprob[k], "bytes",
                               utf8_bytes(json_string_value(t), json_string_length(t))));
        }
        json_array_append_new(
            c, json_pack("{s:o, s:f, s:o, s:o}", "token", tok, "logprob", (double)lp->logprob,
                         "bytes", utf8_bytes(json_string_value(tok), tok_len), "top_logprobs",
                         top));
        return;
    }
    json_t *top = json_object();
    for (int k = 0; k < lp->n_top && k < em->logprobs; k++) {
        json_t *t = token_text(em, lp->top_id[k]);
        json_object_set_new(top, json_string_value(t), json_real((double)lp->top_logprob[k]));
        json_decref(t);
    }
    json_array_append_new(json_object_get(c, "token_logprobs"), json_real((double)lp->logprob));
    json_array_append_new(json_object_get(c, "top_logprobs"), top);
    json_array_append_new(json_object_get(c, "text_offset"),
                          json_integer((json_int_t)em->text_offset));
    json_array_append_new(json_object_get(c, "tokens"), tok);
    em->text_offset += tok_len;
}

/* ---- chunks --------------------------------------------------------------------------- */

static void init(struct emitter *em)
{
    if (is_chat(em))
        em->tool_calls = json_array();
    if (em->logprobs >= 0) {
        em->lp_pending = lp_container(em);
        em->lp_all = lp_container(em);
    }
}

static json_t *usage(const struct emitter *em)
{
    const int n_out = em->n_output_before + em->n_output;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", em->n_prompt, "completion_tokens",
                     n_out, "total_tokens", em->n_prompt + n_out);
}

static const char *finish_reason(const struct emitter *em)
{
    if (em->stop_reason == EMIT_STOP_LENGTH)
        return "length";
    if (em->stop_reason != EMIT_STOP_SEQUENCE &&
        (em->stop_reason == EMIT_STOP_TOOL || em->n_tools > 0))
        return "tool_calls";
    return "stop";
}

static const char *object(const struct emitter *em, bool chunk)
{
    if (!is_chat(em))
        return "text_completion";
    return chunk ? "chat.completion.chunk" : "chat.completion";
}

/* A chunk with one choice; takes `delta` (chat) or `text` (completions). The
 * log-probabilities of the tokens since the last chunk go with it. */
static void chunk(struct emitter *em, struct pv_buf *out, json_t *delta, const char *finish)
{
    json_t *choice;
    if (is_chat(em))
        choice = json_pack("{s:i, s:o, s:n, s:s?}", "index", em->choice, "delta", delta,
                           "logprobs", "finish_reason", finish);
    else
        choice = json_pack("{s:o, s:i, s:n, s:s?}", "text", delta, "index", em->choice,
                           "logprobs", "finish_reason", finish);
    if (choice && !finish)
        json_object_set_new(choice, "finish_reason", json_null());
    if (choice && em->lp_pending && !lp_empty(em, em->lp_pending)) {
        json_object_set_new(choice, "logprobs", lp_wrap(em, em->lp_pending));
        em->lp_pending = lp_container(em);
    }
    json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", em->id, "object", object(em, true),
                          "created", (json_int_t)em->created, "model", em->model, "choices",
                          choice);
    if (c && em->include_usage)
        json_object_set_new(c, "usage", json_null());
    emit_sse(out, NULL, c);
}

static void begin(struct emitter *em, struct pv_buf *out)
{
    if (is_chat(em))
        chunk(em, out, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL);
}

static void block_start(struct emitter *em, struct pv_buf *out)
{
    if (!em->stream || em->open != EMIT_TOOL)
        return;
    chunk(em, out,
          json_pack("{s:[{s:i, s:s, s:s, s:{s:s, s:s}}]}", "tool_calls", "index", em->n_tools,
                    "id", em->tool_id, "type", "function", "function", "name", em->tool_name,
                    "arguments", ""),
          NULL);
}

static void block_delta(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (!is_chat(em))
        chunk(em, out, emit_jstrn(s, n), NULL);
    else if (em->open == EMIT_TEXT)
        chunk(em, out, json_pack("{s:o}", "content", emit_jstrn(s, n)), NULL);
    else if (em->open == EMIT_THINKING)
        chunk(em, out, json_pack("{s:o}", "reasoning_content", emit_jstrn(s, n)), NULL);
    else
        chunk(em, out,
              json_pack("{s:[{s:i, s:{s:o}}]}", "tool_calls", "index", em->n_tools, "function",
                        "arguments", emit_jstrn(s, n)),
              NULL);
}

/* Not streamed, blocks become the message's fields: content, reasoning, tool_calls. */
static void block_stop(struct emitter *em, struct pv_buf *out)
{
    PV_UNUSED(out);
    if (em->stream)
        return;
    if (em->open == EMIT_TEXT)
        buf_append(&em->all_text, em->text.data, em->text.len);
    else if (em->open == EMIT_THINKING)
        buf_append(&em->all_thinking, em->thinking.data, em->thinking.len);
    else
        json_array_append_new(
            em->tool_calls,
            json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", em->tool_id, "type", "function",
                      "function", "name", em->tool_name, "arguments",
                      emit_jstrn(em->args.data, em->args.len)));
}

static void ping(struct emitter *em, struct pv_buf *out)
{
    PV_UNUSED(em);
    buf_puts(out, ": ping\n\n");
}

static void end(struct emitter *em, struct pv_buf *out)
{
    if (em->failed != PV_OK) {
        emit_sse(out, NULL,
                 json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", em->fail_msg, "type",
                           pv_status_openai_type(em->failed), "param", "code"));
        return;
    }
    chunk(em, out, is_chat(em) ? json_object() : json_string(""), finish_reason(em));
    if (em->more_choices)
        return;
    if (em->include_usage)
        emit_sse(out, NULL,
                 json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", em->id, "object",
                           object(em, true), "created", (json_int_t)em->created, "model",
                           em->model, "choices", "usage", usage(em)));
    buf_puts(out, "data: [DONE]\n\n");
}

static json_t *take_json(struct emitter *em)
{
    json_t *choice;
    if (is_chat(em)) {
        const bool calls = json_array_size(em->tool_calls) > 0;
        json_t *msg = json_pack("{s:s, s:o, s:n}", "role", "assistant", "content",
                                em->all_text.len || !calls
                                    ? emit_jstrn(em->all_text.data, em->all_text.len)
                                    : json_null(),
                                "refusal");
        if (em->all_thinking.len)
            json_object_set_new(msg, "reasoning_content",
                                emit_jstrn(em->all_thinking.data, em->all_thinking.len));
        if (calls)
            json_object_set(msg, "tool_calls", em->tool_calls);
        choice = json_pack("{s:i, s:o, s:n, s:s}", "index", em->choice, "message", msg,
                           "logprobs", "finish_reason", finish_reason(em));
    } else {
        choice = json_pack("{s:o, s:i, s:n, s:s}", "text",
                           emit_jstrn(em->all_text.data, em->all_text.len), "index", em->choice,
                           "logprobs", "finish_reason", finish_reason(em));
    }
    if (choice && em->lp_all) {
        json_object_set_new(choice, "logprobs", lp_wrap(em, em->lp_all));
        em->lp_all = NULL;
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", em->id, "object",
                     object(em, false), "created", (json_int_t)em->created, "model", em->model,
                     "choices", choice, "usage", usage(em));
}

const struct emit_wire emit_wire_chat = {
    .caps = EMIT_CAP_THINKING | EMIT_CAP_TOOLS,
    .id_prefix = "chatcmpl-",
    .tool_id_prefix = "call_",
    .init = init,
    .begin = begin,
    .block_start = block_start,
    .block_delta = block_delta,
    .block_stop = block_stop,
    .logprob = logprob,
    .ping = ping,
    .end = end,
    .take_json = take_json,
};

const struct emit_wire emit_wire_completions = {
    .caps = 0,
    .id_prefix = "cmpl-",
    .tool_id_prefix = "call_",
    .init = init,
    .begin = begin,
    .block_start = block_start,
    .block_delta = block_delta,
    .block_stop = block_stop,
    .logprob = logprob,
    .ping = ping,
    .end = end,
    .take_json = take_json,
};
