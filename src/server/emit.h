/*
 * emit.h - writes generation events in each API's wire shape (server-internal).
 *
 * The output parser reports text, thinking and tool-call events; an emitter orders them
 * into blocks (emit.c) and hands each block's start, deltas and end to its API's wire
 * format, sibling files behind one interface (emit_int.h): emit_anthropic.c writes
 * Anthropic SSE events (message_start, content_block_start/delta/stop with sequential
 * indexes, message_delta with usage, message_stop; `error` on failure), emit_openai.c
 * chat.completion.chunk / text_completion lines ending in `data: [DONE]`. When not
 * streaming, the wire accumulates the blocks for one JSON body (emit_take_json).
 */
#ifndef PV_SERVER_EMIT_H
#define PV_SERVER_EMIT_H

#include "server/api.h"
#include "server/gen.h"

enum emit_stop { EMIT_STOP_END, EMIT_STOP_LENGTH, EMIT_STOP_SEQUENCE, EMIT_STOP_TOOL };
enum emit_block { EMIT_NONE, EMIT_TEXT, EMIT_THINKING, EMIT_TOOL };

struct emit_wire;

struct emitter {
    const struct emit_wire *wire; /* the API's wire format */
    struct http_req *r;
    enum api_kind kind;
    bool stream, include_usage;
    const char *model;           /* borrowed from the request body */
    char id[48];                 /* msg_..., chatcmpl-..., cmpl-... */
    long long created;           /* unix seconds */
    int n_prompt, n_output;
    int n_cached;                /* of the prompt, tokens read from the KV cache */
    int n_created;               /* of the prompt, tokens written to the prefix cache */
    enum emit_stop stop_reason;
    const char *stop_sequence;   /* borrowed; set with EMIT_STOP_SEQUENCE */
    enum pv_status failed;       /* PV_OK unless the generation failed */
    char fail_msg[PV_ERR_MSG_MAX];
    /* the open block and its content so far (text and thinking only when not streamed) */
    enum emit_block open;
    struct pv_buf text, thinking, args;
    char tool_id[64], tool_name[128];
    int n_tools;                 /* tool calls closed so far */
    /* Anthropic */
    int index;                   /* index of the open (or next) content block */
    json_t *content;             /* content blocks (not streamed) */
    /* OpenAI */
    struct pv_buf all_text, all_thinking; /* message content and reasoning (not streamed) */
    json_t *tool_calls;          /* message tool_calls (not streamed) */
    int choice;                  /* index of this choice (n > 1: one emitter per choice) */
    bool more_choices;           /* a later choice follows: no usage or [DONE] yet */
    int n_output_before;         /* output tokens of the earlier choices (usage) */
    int logprobs;                /* < 0: none; else alternatives per token */
    const struct pv_vocab *vocab; /* token text; borrowed from the engine */
    json_t *lp_pending;          /* entries not yet sent in a chunk (streaming) */
    json_t *lp_all;              /* every entry (not streaming) */
    size_t text_offset;          /* completions: bytes of token text so far */
};

void emit_init(struct emitter *em, struct http_req *r, const struct api_request *q,
               int n_prompt);
void emit_release(struct emitter *em);
/* Stream start: Anthropic message_start (with usage.input_tokens), the OpenAI role chunk. */
void emit_begin(struct emitter *em, struct pv_buf *out);
void emit_text(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
void emit_thinking(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
/* A tool call named `name` starts; its arguments follow as JSON text fragments. */
void emit_tool_start(struct emitter *em, const char *name, struct pv_buf *out);
void emit_tool_args(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
void emit_tool_end(struct emitter *em, struct pv_buf *out);
/* The log-probabilities of one generated token (before its text is emitted; OpenAI). */
void emit_logprob(struct emitter *em, int32_t token, const struct gen_logprob *lp);
/* Keep-alive while nothing else is sent (Anthropic `event: ping`, OpenAI comment). */
void emit_ping(struct emitter *em, struct pv_buf *out);
/* Close open blocks and write the final events (or the error event when failed). */
void emit_end(struct emitter *em, struct pv_buf *out);
/* The non-streamed response body; the caller owns it. */
json_t *emit_take_json(struct emitter *em);

#endif /* PV_SERVER_EMIT_H */
