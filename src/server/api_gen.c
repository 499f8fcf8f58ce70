/*
 * api_gen.c - serves a validated generation request (see api.h).
 *
 * The request becomes prompt tokens (prompt.c), is checked against the context and
 * queued on the engine (gen.h). The connection thread then turns the job's tokens into
 * text (streaming detokenizer) and events (the chat layer's output parser: thinking,
 * tool calls, stop sequences) and writes each in the endpoint's shape (emit.c): Anthropic SSE or JSON, OpenAI chunks or JSON. Waiting is
 * done in slices of GEN_POLL_MS so that a client that hangs up cancels its generation
 * within one engine step, and a stream gets `ping` events while a long prompt is read.
 */
#include <string.h>

#include "chat/chat.h"
#include "server/api.h"
#include "server/emit.h"
#include "server/gen.h"
#include "server/prompt.h"

#define GEN_POLL_MS 50
#define TOKS_PER_WAKE 64

struct gen_run {
    struct http_req *r;
    struct api_request q;
    struct gen_job *job;
    struct prompt_out *po;       /* decoder + parser of the output, owned */
    struct emitter em;
    size_t n_seen;               /* tokens taken from the job */
    bool started, finished;
    bool length;                 /* ended at max_tokens */
    bool probed;                 /* a ping was sent early to test a client's FIN */
    uint64_t t_last_write_ns;
};

void api_request_init(struct api_request *q, enum api_kind kind)
{
    memset(q, 0, sizeof(*q));
    q->kind = kind;
    q->temperature = -1;
    q->top_p = -1;
    q->top_k = -1;
    q->seed = UINT64_MAX; /* random */
}

static void run_free(struct gen_run *g)
{
    if (!g)
        return;
    gen_release(g->job);
    prompt_out_free(g->po);
    emit_release(&g->em);
    free(g);
}

/* Take new tokens into events. Returns true when the run is complete. */
static bool run_pump(struct gen_run *g, struct pv_buf *out, int timeout_ms)
{
    int32_t toks[TOKS_PER_WAKE];
    size_t n = 0;
    struct gen_progress prog;
    gen_wait(g->job, g->n_seen, timeout_ms, toks, TOKS_PER_WAKE, &n, &prog);
    if (n) {
        g->n_seen += n;
        g->em.n_output = (int)g->n_seen;
        g->r->n_output = (int)g->n_seen;
        if (g->r->ttft_ms < 0)
            g->r->ttft_ms = (double)(prog.t_first_ns - g->r->t_start_ns) / 1e6;
        prompt_out_tokens(g->po, toks, n, &g->em, out);
        if (prompt_out_stopped(g->po)) {
            gen_cancel(g->job); /* a stop sequence: no more tokens needed */
            return true;
        }
    }
    if (!prog.done)
        return false;
    if (prog.status != PV_OK) {
        g->em.failed = prog.status;
        snprintf(g->em.fail_msg, sizeof(g->em.fail_msg), "%s", prog.msg);
    }
    g->length = prog.length;
    return true;
}

static void run_finish(struct gen_run *g, struct pv_buf *out)
{
    if (g->em.failed == PV_OK)
        prompt_out_finish(g->po, g->length, &g->em, out);
    g->r->n_output = (int)g->n_seen;
    emit_end(&g->em, out);
}

/* Stream producer: called by the connection thread each time the previous bytes are out. */
static bool stream_produce(struct http_stream *s, struct pv_buf *out)
{
    struct gen_run *g = s->state;
    if (g->finished)
        return false;
    if (!g->started) {
        g->started = true;
        emit_begin(&g->em, out);
        g->t_last_write_ns = clock_now_ns();
        return true;
    }
    for (;;) {
        const bool done = run_pump(g, out, GEN_POLL_MS);
        if (done) {
            run_finish(g, out);
            g->finished = true;
            return false;
        }
        if (out->len) {
            g->t_last_write_ns = clock_now_ns();
            return true;
        }
        if (http_client_gone(g->r)) {
            gen_cancel(g->job);
            g->r->n_output = (int)g->n_seen;
            g->finished = true;
            return false;
        }
        /* a FIN: closed (the ping's reset shows it at the next check) or half-closed */
        if (g->r->peer_fin && !g->probed) {
            g->probed = true;
            emit_ping(&g->em, out);
            g->t_last_write_ns = clock_now_ns();
            return true;
        }
        if (clock_now_ns() - g->t_last_write_ns >=
            (uint64_t)g->r->srv->p.ping_interval_s * 1000000000ull) {
            emit_ping(&g->em, out);
            g->t_last_write_ns = clock_now_ns();
            return true;
        }
    }
}

static void stream_release(struct http_stream *s)
{
    run_free(s->state);
}

static bool too_long(struct http_req *r, const struct api_request *q, size_t n_prompt, int n_ctx)
{
    if (n_prompt < (size_t)n_ctx)
        return false;
    if (q->kind == API_CHAT || q->kind == API_COMPLETIONS)
        http_reply_errorf(r, PV_ERR_CONTEXT, "messages",
                          "This model's maximum context length is %d tokens. However, your "
                          "messages resulted in %zu tokens. Please reduce the length of the "
                          "messages.",
                          n_ctx, n_prompt);
    else
        http_reply_errorf(r, PV_ERR_CONTEXT, NULL, "prompt is too long: %zu tokens > %d maximum",
                          n_prompt, n_ctx - 1);
    return true;
}

void api_generate(struct http_req *r, struct api_request *q)
{
    struct pv_err err = {0};
    struct prompt_in pin = {0};
    struct gen_run *g = xcalloc(1, sizeof(*g));
    g->r = r;
    g->q = *q;

    if (prompt_build(r, q, &pin, &err) != PV_OK) {
        http_reply_error(r, err.status, NULL, err.msg);
        goto out;
    }
    r->n_prompt = (int)pin.n_tokens;
    const int n_ctx = gen_engine_n_ctx(r->srv->engine);
    if (too_long(r, q, pin.n_tokens, n_ctx))
        goto out;
    /* max_tokens is capped to what the context leaves after the prompt */
    const int room = n_ctx - (int)pin.n_tokens;
    const int max_tokens = q->max_tokens > 0 ? PV_MIN(q->max_tokens, room) : room;
    struct gen_params gp = {
        .prompt = pin.tokens,
        .n_prompt = pin.n_tokens,
        .max_tokens = max_tokens,
        .temperature = (float)q->temperature,
        .top_p = (float)q->top_p,
        .top_k = q->top_k,
        .seed = q->seed,
    };
    if (pin.matcher) {
        /* the engine owns the grammar from here on (gen_submit releases it on failure) */
        gp.constraint = (struct gen_constraint){pin.matcher, chat_constraint_mask,
                                                chat_constraint_accept, chat_constraint_release};
        pin.matcher = NULL;
    }
    if (gen_submit(r->srv->engine, &gp, &g->job, &err) != PV_OK) {
        http_reply_error(r, err.status, NULL, err.msg);
        goto out;
    }
    g->po = pin.out;
    pin.out = NULL;
    emit_init(&g->em, r, q, (int)pin.n_tokens);

    /* a stream is never silent for longer than a few ping intervals; a non-streamed
     * reply is silent until it is complete (client hang-ups are still noticed) */
    const int ping_s = r->srv->p.ping_interval_s;
    http_set_idle_timeout(r, q->stream ? (unsigned)PV_MAX(r->srv->p.conn_timeout_s, 3 * ping_s)
                                       : 0u);
    if (q->stream) {
        struct http_stream *s = xcalloc(1, sizeof(*s));
        s->req = r;
        s->produce = stream_produce;
        s->release = stream_release;
        s->state = g;
        prompt_in_release(&pin);
        http_reply_stream(r, s);
        return;
    }
    /* not streamed: wait here (this is the connection's own thread) */
    struct pv_buf sink = PV_BUF_INIT;
    for (;;) {
        if (run_pump(g, &sink, GEN_POLL_MS))
            break;
        if (http_client_gone(r)) {
            gen_cancel(g->job);
            r->n_output = (int)g->n_seen;
            buf_release(&sink);
            goto out;
        }
    }
    run_finish(g, &sink);
    buf_release(&sink);
    if (g->em.failed != PV_OK)
        http_reply_error(r, g->em.failed, NULL, g->em.fail_msg);
    else
        http_reply_json(r, 200, emit_take_json(&g->em));
out:
    prompt_in_release(&pin);
    run_free(g);
}

void api_count_tokens(struct http_req *r, struct api_request *q)
{
    struct pv_err err = {0};
    struct prompt_in pin = {0};
    if (prompt_build(r, q, &pin, &err) != PV_OK) {
        http_reply_error(r, err.status, NULL, err.msg);
        return;
    }
    r->n_prompt = (int)pin.n_tokens;
    http_reply_json(r, 200, json_pack("{s:I}", "input_tokens", (json_int_t)pin.n_tokens));
    prompt_in_release(&pin);
}
