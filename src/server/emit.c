/*
 * emit.c - Anthropic and OpenAI wire shapes of a generation (see emit.h).
 *
 * Anthropic streams follow the documented grammar: message_start first (usage with
 * input_tokens), then per block content_block_start -> deltas -> content_block_stop with
 * indexes 0,1,2..., thinking blocks closed by a signature_delta, tool_use blocks with
 * `toolu_` ids and input_json_delta fragments, then message_delta (stop_reason, usage)
 * and message_stop. OpenAI chat streams send a role chunk, content/reasoning_content/
 * tool_calls deltas, a finish_reason chunk, the usage chunk when asked, then [DONE]; with
 * n > 1 each choice (its own emitter, the same id) does so in turn up to its finish_reason,
 * and the last one adds usage and [DONE]. Requested logprobs travel with the chunk that
 * follows their tokens (chat: logprobs.content entries; completions: tokens,
 * token_logprobs, top_logprobs, text_offset), or in the choice when not streaming.
 */
#include <string.h>

#include "server/emit.h"

/* ---- framing ------------------------------------------------------------------------ */

static void sse(struct pv_buf *out, const char *event, json_t *data)
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

static json_t *jstrn(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    /* the detokenizer never splits UTF-8, so this only fails on OOM */
    return v ? v : json_string("");
}

static bool is_anthropic(const struct emitter *em)
{
    return em->kind == API_MESSAGES;
}

/* ---- logprobs (OpenAI) ---------------------------------------------------------------- */

/* An empty list of entries: chat [{token, logprob, bytes, top_logprobs}], completions
 * {tokens, token_logprobs, top_logprobs, text_offset}. */
static json_t *lp_container(const struct emitter *em)
{
    if (em->kind == API_CHAT)
        return json_array();
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

static bool lp_empty(const struct emitter *em, const json_t *c)
{
    return em->kind == API_CHAT ? json_array_size(c) == 0
                                : json_array_size(json_object_get(c, "tokens")) == 0;
}

/* The `logprobs` value of a choice holding entries `c` (taken). */
static json_t *lp_wrap(const struct emitter *em, json_t *c)
{
    if (em->kind == API_CHAT)
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
    json_t *v = jstrn(text, len);
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

void emit_logprob(struct emitter *em, int32_t token, const struct gen_logprob *lp)
{
    if (em->logprobs < 0)
        return;
    json_t *c = em->stream ? em->lp_pending : em->lp_all;
    json_t *tok = token_text(em, token);
    const size_t tok_len = json_string_length(tok);
    if (em->kind == API_CHAT) {
        json_t *top = json_array();
        for (int k = 0; k < lp->n_top && k < em->logprobs; k++) {
            json_t *t = token_text(em, lp->top_id[k]);
            json_array_append_new(
                top, json_pack("{s:o, s:f, s:o}", "token", t, "logprob",
                               (double)lp->top_logprob[k],
                               "bytes", utf8_bytes(json_string_value(t), json_string_length(t))));
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

void emit_init(struct emitter *em, struct http_req *r, const struct api_request *q, int n_prompt)
{
    memset(em, 0, sizeof(*em));
    em->r = r;
    em->kind = q->kind;
    em->stream = q->stream;
    em->include_usage = q->include_usage;
    em->model = q->model ? q->model : r->srv->model_name;
    em->created = (long long)clock_wall_s();
    em->n_prompt = n_prompt;
    em->failed = PV_OK;
    buf_init(&em->text);
    buf_init(&em->thinking);
    buf_init(&em->args);
    if (is_anthropic(em))
        http_make_id(em->id, sizeof(em->id), "msg_", 24);
    else if (em->kind == API_CHAT)
        http_make_id(em->id, sizeof(em->id), "chatcmpl-", 24);
    else
        http_make_id(em->id, sizeof(em->id), "cmpl-", 24);
    em->content = json_array();
    em->tool_calls = json_array();
    em->choice = 0;
    em->logprobs = q->kind == API_MESSAGES ? -1 : q->logprobs;
    em->vocab = gen_engine_vocab(r->srv->engine);
    if (em->logprobs >= 0) {
        em->lp_pending = lp_container(em);
        em->lp_all = lp_container(em);
    }
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
}

static json_t *usage_anthropic(const struct emitter *em)
{
    return json_pack("{s:i, s:i, s:i, s:i}", "input_tokens", em->n_prompt, "output_tokens",
                     em->n_output, "cache_creation_input_tokens", 0, "cache_read_input_tokens", 0);
}

static json_t *usage_openai(const struct emitter *em)
{
    const int n_out = em->n_output_before + em->n_output;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", em->n_prompt, "completion_tokens",
                     n_out, "total_tokens", em->n_prompt + n_out);
}

/* An OpenAI chunk with one choice; takes `delta` (chat) or `text` (completions). The
 * log-probabilities of the tokens since the last chunk go with it. */
static void oa_chunk(struct emitter *em, struct pv_buf *out, json_t *delta, const char *finish)
{
    json_t *choice;
    if (em->kind == API_CHAT)
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
    json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", em->id, "object",
                          em->kind == API_CHAT ? "chat.completion.chunk" : "text_completion",
                          "created", (json_int_t)em->created, "model", em->model, "choices",
                          choice);
    if (c && em->include_usage)
        json_object_set_new(c, "usage", json_null());
    sse(out, NULL, c);
}

/* ---- blocks --------------------------------------------------------------------------- */

static void close_block(struct emitter *em, struct pv_buf *out)
{
    if (em->open == EMIT_NONE)
        return;
    if (is_anthropic(em)) {
        if (em->stream) {
            if (em->open == EMIT_THINKING)
                sse(out, "content_block_delta",
                    json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_delta", "index",
                              em->index, "delta", "type", "signature_delta", "signature", ""));
            sse(out, "content_block_stop",
                json_pack("{s:s, s:i}", "type", "content_block_stop", "index", em->index));
        } else if (em->open == EMIT_TEXT) {
            json_array_append_new(em->content,
                                  json_pack("{s:s, s:o}", "type", "text", "text",
                                            jstrn(em->text.data, em->text.len)));
        } else if (em->open == EMIT_THINKING) {
            json_array_append_new(em->content,
                                  json_pack("{s:s, s:o, s:s}", "type", "thinking", "thinking",
                                            jstrn(em->thinking.data, em->thinking.len),
                                            "signature", ""));
        }
        em->index++;
    }
    if (em->open == EMIT_TOOL) {
        /* non-streamed: the collected argument text becomes the input object */
        json_t *input = NULL;
        if (!em->stream || !is_anthropic(em)) {
            json_error_t jerr;
            input = em->args.len ? json_loadb(em->args.data, em->args.len, 0, &jerr) : NULL;
            if (!json_is_object(input)) {
                json_decref(input);
                input = json_object();
            }
        }
        if (!em->stream && is_anthropic(em)) {
            json_array_append_new(em->content,
                                  json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id",
                                            em->tool_id, "name", em->tool_name, "input", input));
            input = NULL;
        } else if (!em->stream) {
            json_array_append_new(
                em->tool_calls,
                json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", em->tool_id, "type", "function",
                          "function", "name", em->tool_name, "arguments",
                          jstrn(em->args.data, em->args.len)));
        }
        json_decref(input);
        em->n_tools++;
    }
    if (em->open == EMIT_TEXT)
        buf_reset(&em->text);
    else if (em->open == EMIT_THINKING)
        buf_reset(&em->thinking);
    else
        buf_reset(&em->args);
    em->open = EMIT_NONE;
}

static void open_block(struct emitter *em, enum emit_block kind, struct pv_buf *out)
{
    if (em->open == kind)
        return;
    close_block(em, out);
    em->open = kind;
    if (!em->stream || !is_anthropic(em) || kind == EMIT_TOOL)
        return;
    json_t *block = kind == EMIT_TEXT
                        ? json_pack("{s:s, s:s}", "type", "text", "text", "")
                        : json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "",
                                    "signature", "");
    sse(out, "content_block_start",
        json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", em->index,
                  "content_block", block));
}

void emit_begin(struct emitter *em, struct pv_buf *out)
{
    if (!em->stream)
        return;
    if (is_anthropic(em)) {
        sse(out, "message_start",
            json_pack("{s:s, s:{s:s, s:s, s:s, s:[], s:s, s:n, s:n, s:o}}", "type",
                      "message_start", "message", "id", em->id, "type", "message", "role",
                      "assistant", "content", "model", em->model, "stop_reason",
                      "stop_sequence", "usage", usage_anthropic(em)));
    } else if (em->kind == API_CHAT) {
        oa_chunk(em, out, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL);
        em->role_sent = true;
    }
}

void emit_text(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (n == 0)
        return;
    if (em->open == EMIT_TOOL)
        close_block(em, out);
    if (!em->stream) {
        if (is_anthropic(em))
            open_block(em, EMIT_TEXT, out);
        buf_append(&em->text, s, n);
        return;
    }
    if (is_anthropic(em)) {
        open_block(em, EMIT_TEXT, out);
        sse(out, "content_block_delta",
            json_pack("{s:s, s:i, s:{s:s, s:o}}", "type", "content_block_delta", "index",
                      em->index, "delta", "type", "text_delta", "text", jstrn(s, n)));
    } else if (em->kind == API_CHAT) {
        oa_chunk(em, out, json_pack("{s:o}", "content", jstrn(s, n)), NULL);
    } else {
        oa_chunk(em, out, jstrn(s, n), NULL);
    }
}

void emit_thinking(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (n == 0)
        return;
    if (em->kind == API_COMPLETIONS) {
        emit_text(em, s, n, out);
        return;
    }
    if (is_anthropic(em))
        open_block(em, EMIT_THINKING, out);
    if (!em->stream) {
        buf_append(&em->thinking, s, n);
        return;
    }
    if (is_anthropic(em))
        sse(out, "content_block_delta",
            json_pack("{s:s, s:i, s:{s:s, s:o}}", "type", "content_block_delta", "index",
                      em->index, "delta", "type", "thinking_delta", "thinking", jstrn(s, n)));
    else
        oa_chunk(em, out, json_pack("{s:o}", "reasoning_content", jstrn(s, n)), NULL);
}

void emit_tool_start(struct emitter *em, const char *name, struct pv_buf *out)
{
    if (em->kind == API_COMPLETIONS)
        return;
    close_block(em, out);
    em->open = EMIT_TOOL;
    snprintf(em->tool_name, sizeof(em->tool_name), "%s", name);
    http_make_id(em->tool_id, sizeof(em->tool_id), is_anthropic(em) ? "toolu_" : "call_", 24);
    if (!em->stream)
        return;
    if (is_anthropic(em))
        sse(out, "content_block_start",
            json_pack("{s:s, s:i, s:{s:s, s:s, s:s, s:{}}}", "type", "content_block_start",
                      "index", em->index, "content_block", "type", "tool_use", "id", em->tool_id,
                      "name", em->tool_name, "input"));
    else
        oa_chunk(em, out,
                 json_pack("{s:[{s:i, s:s, s:s, s:{s:s, s:s}}]}", "tool_calls", "index",
                           em->n_tools, "id", em->tool_id, "type", "function", "function",
                           "name", em->tool_name, "arguments", ""),
                 NULL);
}

void emit_tool_args(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    if (em->open != EMIT_TOOL || n == 0)
        return;
    buf_append(&em->args, s, n);
    if (!em->stream)
        return;
    if (is_anthropic(em))
        sse(out, "content_block_delta",
            json_pack("{s:s, s:i, s:{s:s, s:o}}", "type", "content_block_delta", "index",
                      em->index, "delta", "type", "input_json_delta", "partial_json",
                      jstrn(s, n)));
    else
        oa_chunk(em, out,
                 json_pack("{s:[{s:i, s:{s:o}}]}", "tool_calls", "index", em->n_tools,
                           "function", "arguments", jstrn(s, n)),
                 NULL);
}

void emit_tool_end(struct emitter *em, struct pv_buf *out)
{
    if (em->open == EMIT_TOOL)
        close_block(em, out);
}

void emit_ping(struct emitter *em, struct pv_buf *out)
{
    if (is_anthropic(em))
        sse(out, "ping", json_pack("{s:s}", "type", "ping"));
    else
        buf_puts(out, ": ping\n\n");
}

static const char *stop_reason(const struct emitter *em)
{
    if (em->stop_reason == EMIT_STOP_LENGTH)
        return is_anthropic(em) ? "max_tokens" : "length";
    if (em->stop_reason == EMIT_STOP_SEQUENCE)
        return is_anthropic(em) ? "stop_sequence" : "stop";
    if (em->stop_reason == EMIT_STOP_TOOL || em->n_tools > 0)
        return is_anthropic(em) ? "tool_use" : "tool_calls";
    return is_anthropic(em) ? "end_turn" : "stop";
}

void emit_end(struct emitter *em, struct pv_buf *out)
{
    close_block(em, out);
    if (!em->stream)
        return;
    if (em->failed != PV_OK) {
        if (is_anthropic(em))
            sse(out, "error",
                json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                          pv_status_anthropic_type(em->failed), "message", em->fail_msg));
        else
            sse(out, NULL,
                json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", em->fail_msg, "type",
                          pv_status_openai_type(em->failed), "param", "code"));
        return;
    }
    if (is_anthropic(em)) {
        sse(out, "message_delta",
            json_pack("{s:s, s:{s:s, s:s?}, s:{s:i, s:i}}", "type", "message_delta", "delta",
                      "stop_reason", stop_reason(em), "stop_sequence",
                      em->stop_reason == EMIT_STOP_SEQUENCE ? em->stop_sequence : NULL,
                      "usage", "input_tokens", em->n_prompt, "output_tokens", em->n_output));
        sse(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
        return;
    }
    oa_chunk(em, out, em->kind == API_CHAT ? json_object() : json_string(""), stop_reason(em));
    if (em->more_choices)
        return;
    if (em->include_usage) {
        json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", em->id, "object",
                              em->kind == API_CHAT ? "chat.completion.chunk" : "text_completion",
                              "created", (json_int_t)em->created, "model", em->model,
                              "choices", "usage", usage_openai(em));
        sse(out, NULL, c);
    }
    buf_puts(out, "data: [DONE]\n\n");
}

json_t *emit_take_json(struct emitter *em)
{
    if (is_anthropic(em)) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s, s:O, s:s, s:s?, s:o}", "id", em->id, "type", "message", "role",
            "assistant", "model", em->model, "content", em->content, "stop_reason",
            stop_reason(em), "stop_sequence",
            em->stop_reason == EMIT_STOP_SEQUENCE ? em->stop_sequence : NULL, "usage",
            usage_anthropic(em));
        if (o && !json_object_get(o, "stop_sequence"))
            json_object_set_new(o, "stop_sequence", json_null());
        return o;
    }
    json_t *choice;
    if (em->kind == API_CHAT) {
        json_t *msg = json_pack("{s:s, s:o, s:n}", "role", "assistant", "content",
                                em->text.len || !json_array_size(em->tool_calls)
                                    ? jstrn(em->text.data, em->text.len)
                                    : json_null(),
                                "refusal");
        if (em->thinking.len)
            json_object_set_new(msg, "reasoning_content",
                                jstrn(em->thinking.data, em->thinking.len));
        if (json_array_size(em->tool_calls))
            json_object_set(msg, "tool_calls", em->tool_calls);
        choice = json_pack("{s:i, s:o, s:n, s:s}", "index", em->choice, "message", msg,
                           "logprobs", "finish_reason", stop_reason(em));
    } else {
        choice = json_pack("{s:o, s:i, s:n, s:s}", "text", jstrn(em->text.data, em->text.len),
                           "index", em->choice, "logprobs", "finish_reason", stop_reason(em));
    }
    if (choice && em->lp_all) {
        json_object_set_new(choice, "logprobs", lp_wrap(em, em->lp_all));
        em->lp_all = NULL;
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", em->id, "object",
                     em->kind == API_CHAT ? "chat.completion" : "text_completion", "created",
                     (json_int_t)em->created, "model", em->model, "choices", choice, "usage",
                     usage_openai(em));
}
