/*
 * emit_int.h - the interface between the emitter (emit.c) and the wire formats
 * (emit_anthropic.c, emit_openai.c). Only those files include it.
 *
 * emit.c orders events into blocks: a block opens (block_start), receives deltas when
 * streaming, and closes (block_stop, with the block's whole content in em->text,
 * em->thinking or em->args when not streaming; the arguments always). The wire writes
 * each step in its API's shape, or collects it for emit_take_json.
 */
#ifndef PV_SERVER_EMIT_INT_H
#define PV_SERVER_EMIT_INT_H

#include "server/emit.h"

#define EMIT_CAP_THINKING 0x1u /* thinking blocks of their own (else they become text) */
#define EMIT_CAP_TOOLS 0x2u    /* tool calls (else they are dropped) */

struct emit_wire {
    unsigned caps;               /* EMIT_CAP_* */
    const char *id_prefix;       /* of the response id */
    const char *tool_id_prefix;  /* of tool call ids */
    void (*init)(struct emitter *em);
    void (*begin)(struct emitter *em, struct pv_buf *out);
    void (*block_start)(struct emitter *em, struct pv_buf *out);   /* em->open is the kind */
    void (*block_delta)(struct emitter *em, const char *s, size_t n, struct pv_buf *out);
    void (*block_stop)(struct emitter *em, struct pv_buf *out);
    void (*logprob)(struct emitter *em, int32_t token, const struct gen_logprob *lp); /* or NULL */
    void (*ping)(struct emitter *em, struct pv_buf *out);
    void (*end)(struct emitter *em, struct pv_buf *out);           /* streamed only */
    json_t *(*take_json)(struct emitter *em);
};

extern const struct emit_wire emit_wire_anthropic, emit_wire_chat, emit_wire_completions;

/* Append one SSE event (event line when `event` is not NULL); takes `data`. */
void emit_sse(struct pv_buf *out, const char *event, json_t *data);
/* A JSON string of n bytes (the detokenizer never splits UTF-8: fails only on OOM). */
json_t *emit_jstrn(const char *s, size_t n);

#endif /* PV_SERVER_EMIT_INT_H */
