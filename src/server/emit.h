/*
 * emit.h - writes generation events in each API's wire shape (server-internal).
 *
 * The output parser reports text, thinking and tool-call events; an emitter turns them
 * into Anthropic SSE events (message_start, content_block_start/delta/stop with
 * sequential indexes, message_delta with usage, message_stop; `error` on failure), OpenAI
 * chat.completion.chunk / text_completion lines ending in `data: [DONE]`, or, when not
 * streaming, accumulates the blocks for one JSON body (emit_take_json).
 */
#ifndef PV_SERVER_EMIT_H
#define PV_SERVER_EMIT_H

#include "server/api.h"
#include "server/gen.h"

enum emit_stop { EMIT_STOP_END, EMIT_STOP_LENGTH, EMIT_STOP_SEQUENCE, EMIT_STOP_TOOL };
enum emit_block { EMIT_NONE, EMIT_TEXT, EMIT_THINKING, EMIT_TOOL };

struct emitter {
    struct http_req *r;
    enum api_kind kind;
    bool stream, include_usage;
    const char *model;           /* borrowed from the request body */
    char id[48];                 /* msg_..., chatcmpl-..., cmpl-... */
    long long created;           /* unix seconds */
    int n_prompt, n_output;
    enum emit_stop stop_reason;
    const char *stop_sequence;   /* borrowed; set with EMIT_STOP_SEQUENCE */
    enum pv_status failed;       /* PV_OK unless the generation failed */
    char fail_msg[PV_ERR_MSG_MAX];
    /* block state */
    enum emit_block open;
    int index;                   /* index of the open (or next) Anthropic block */
    int n_tools;                 /* tool calls so far */
    bool role_sent;              /* OpenAI: first chunk carried role */
    /* non-streamed accumulation */
    json_t *content;             /* Anthropic content blocks */
    json_t *tool_calls;          /* OpenAI tool_calls */
    struct pv_buf text, thinking, args;
    char tool_id[64], tool_name[128];
    /* OpenAI n > 1: choices are generated one after another, each with its emitter */
    int choice;                  /* index of this choice */
    bool more_choices;           /* a later choice follows: no usage or [DONE] yet */
    int n_output_before;         /* output tokens of the earlier choices (usage) */
    /* OpenAI logprobs */
    int logprobs;                /* < 0: none; else alternatives per token */
    const struct pv_vocab *vocab; /* token text; borrowed from the engine */
    json_t *lp_pending;          /* entries not yet sent in a chunk (streaming) */
    json_t *lp_all;              /* every entry (not streaming) */
    size_t text_offset;          /* completions: bytes of token text so far */
};

void emit_init(struct emitter *em, struct http_req *r, const struct api_request *q,
               int n_prompt);
void emit_release(struct emitter *em);
/* Stream start: Anthropic message_start (with usage.input_tokens), nothing for OpenAI. */
void emit_begin(struct emitter *em, struct pv_buf *out);
void emit_text(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
void emit_thinking(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
/* A tool call named `name` starts; its arguments follow as JSON text fragments. */
void emit_tool_start(struct emitter *em, const char *name, struct pv_buf *out);
void emit_tool_args(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
void emit_tool_end(struct emitter *em, struct pv_buf *out);
/* Keep-alive while nothing else is sent (Anthropic `event: ping`, OpenAI comment). */
/* The log-probabilities of one generated token (before its text is emitted). */
void emit_logprob(struct emitter *em, int32_t token, const struct gen_logprob *lp);
void emit_ping(struct emitter *em, struct pv_buf *out);
/* Close open blocks and write the final events (or the error event when failed). */
void emit_end(struct emitter *em, struct pv_buf *out);
/* The non-streamed response body; the caller owns it. */
json_t *emit_take_json(struct emitter *em);

#endif /* PV_SERVER_EMIT_H */
