/*
 * emit_anthropic.c - the Anthropic Messages wire format of a generation (emit_int.h).
 *
 * Streams follow the documented grammar: message_start first (usage with input_tokens),
 * then per block content_block_start -> deltas -> content_block_stop with indexes
 * 0,1,2..., thinking blocks closed by a signature_delta (empty: there is no signature),
 * tool_use blocks with `toolu_` ids and input_json_delta fragments, then message_delta
 * (stop_reason, usage) and message_stop; a failure ends the stream with an `error` event.
 * Not streamed, the same blocks become the message's content array.
 */
#include <string.h>

#include "server/emit_int.h"

static void init(struct emitter *em)
{
    em->content = json_array();
}

/* Anthropic's input_tokens are the prompt tokens neither read from nor written to the
 * cache: input + cache creation + cache read is the whole prompt (what count_tokens
 * says), the sum clients such as Claude Code take as the context's size. */
static int uncached_input(const struct emitter *em)
{
    return PV_MAX(0, em->n_prompt - em->n_cached - em->n_created);
}

static json_t *usage(const struct emitter *em)
{
    return json_pack("{s:i, s:i, s:i, s:i}", "input_tokens", uncached_input(em),
                     "output_tokens", em->n_output, "cache_creation_input_tokens", em->n_created,
                     "cache_read_input_tokens", em->n_cached);
}

static const char *stop_reason(const struct emitter *em)
{
    if (em->stop_reason == EMIT_STOP_LENGTH)
        return "max_tokens";
    if (em->stop_reason == EMIT_STOP_SEQUENCE)
        return "stop_sequence";
    if (em->stop_reason == EMIT_STOP_TOOL || em->n_tools > 0)
        return "tool_use";
    return "end_turn";
}

static void begin(struct emitter *em, struct pv_buf *out)
{
    emit_sse(out, "message_start",
             json_pack("{s:s, s:{s:s, s:s, s:s, s:[], s:s, s:n, s:n, s:o}}", "type",
                       "message_start", "message", "id", em->id, "type", "message", "role",
                       "assistant", "content", "model", em->model, "stop_reason",
                       "stop_sequence", "usage", usage(em)));
}

static void block_start(struct emitter *em, struct pv_buf *out)
{
    if (!em->stream)
        return;
    json_t *block;
    if (em->open == EMIT_TEXT)
        block = json_pack("{s:s, s:s}", "type", "text", "text", "");
    else if (em->open == EMIT_THINKING)
        block = json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", "");
    else
        block = json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", em->tool_id, "name",
                          em->tool_name, "input");
    emit_sse(out, "content_block_start",
             json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", em->index,
                       "content_block", block));
}

static void block_delta(struct emitter *em, const char *s, size_t n, struct pv_buf *out)
{
    json_t *delta;
    if (em->open == EMIT_TEXT)
        delta = json_pack("{s:s, s:o}", "type", "text_delta", "text", emit_jstrn(s, n));
    else if (em->open == EMIT_THINKING)
        delta = json_pack("{s:s, s:o}", "type", "thinking_delta", "thinking", emit_jstrn(s, n));
    else
        delta = json_pack("{s:s, s:o}", "type", "input_json_delta", "partial_json",
                          emit_jstrn(s, n));
    emit_sse(out, "content_block_delta",
             json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index", em->index,
                       "delta", delta));
}

/* The collected arguments as the tool_use input: an object ({} when they are not one). */
static json_t *tool_input(const struct emitter *em)
{
    json_error_t jerr;
    json_t *input = em->args.len ? json_loadb(em->args.data, em->args.len, 0, &jerr) : NULL;
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    return input;
}

static void block_stop(struct emitter *em, struct pv_buf *out)
{
    if (em->stream) {
        if (em->open == EMIT_THINKING)
            emit_sse(out, "content_block_delta",
                     json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_delta",
                               "index", em->index, "delta", "type", "signature_delta",
                               "signature", ""));
        emit_sse(out, "content_block_stop",
                 json_pack("{s:s, s:i}", "type", "content_block_stop", "index", em->index));
    } else if (em->open == EMIT_TEXT) {
        json_array_append_new(em->content,
                              json_pack("{s:s, s:o}", "type", "text", "text",
                                        emit_jstrn(em->text.data, em->text.len)));
    } else if (em->open == EMIT_THINKING) {
        json_array_append_new(em->content,
                              json_pack("{s:s, s:o, s:s}", "type", "thinking", "thinking",
                                        emit_jstrn(em->thinking.data, em->thinking.len),
                                        "signature", ""));
    } else {
        json_array_append_new(em->content,
                              json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id",
                                        em->tool_id, "name", em->tool_name, "input",
                                        tool_input(em)));
    }
    em->index++;
}

static void ping(struct emitter *em, struct pv_buf *out)
{
    PV_UNUSED(em);
    emit_sse(out, "ping", json_pack("{s:s}", "type", "ping"));
}

static void end(struct emitter *em, struct pv_buf *out)
{
    if (em->failed != PV_OK) {
        emit_sse(out, "error",
                 json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                           pv_status_anthropic_type(em->failed), "message", em->fail_msg));
        return;
    }
    emit_sse(out, "message_delta",
             json_pack("{s:s, s:{s:s, s:s?}, s:{s:i, s:i, s:i, s:i}}", "type", "message_delta",
                       "delta", "stop_reason", stop_reason(em), "stop_sequence",
                       em->stop_reason == EMIT_STOP_SEQUENCE ? em->stop_sequence : NULL,
                       "usage", "input_tokens", uncached_input(em), "output_tokens", em->n_output,
                       "cache_creation_input_tokens", em->n_created,
                       "cache_read_input_tokens", em->n_cached));
    emit_sse(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
}

static json_t *take_json(struct emitter *em)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:s?, s:o}", "id", em->id, "type",
                          "message", "role", "assistant", "model", em->model, "content",
                          em->content, "stop_reason", stop_reason(em), "stop_sequence",
                          em->stop_reason == EMIT_STOP_SEQUENCE ? em->stop_sequence : NULL,
                          "usage", usage(em));
    if (o && !json_object_get(o, "stop_sequence"))
        json_object_set_new(o, "stop_sequence", json_null());
    return o;
}

const struct emit_wire emit_wire_anthropic = {
    .caps = EMIT_CAP_THINKING | EMIT_CAP_TOOLS,
    .id_prefix = "msg_",
    .tool_id_prefix = "toolu_",
    .init = init,
    .begin = begin,
    .block_start = block_start,
    .block_delta = block_delta,
    .block_stop = block_stop,
    .logprob = NULL,
    .ping = ping,
    .end = end,
    .take_json = take_json,
};
