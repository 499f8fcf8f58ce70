/*
 * api_gen.c - serves a validated generation request (see api.h).
 *
 * The request becomes prompt tokens (prompt.c), is checked against the context and
 * queued on the engine (gen.h). The connection thread then turns the job's tokens into
 * text (streaming detokenizer) and events (the chat layer's output parser: thinking,
 * tool calls, stop sequences) and writes each in the endpoint's shape (emit.h): Anthropic
 * SSE or JSON, OpenAI chunks or JSON. OpenAI's n > 1 runs the choices one after another
 * on the same prompt (the prefix cache holds it). Waiting is done in slices of
 * GEN_POLL_MS so that a client that hangs up cancels its generation within one engine
 * step, and a stream gets `ping` events while a long prompt is read.
 */
#include <string.h>

#include "chat/chat.h"
#include "server/api.h"
#include "server/emit.h"
#include "server/gen.h"
#include "server/prompt.h"
#include "server/registry.h"

#define GEN_POLL_MS 50
#define TOKS_PER_WAKE 64

struct gen_run {
    struct http_req *r;
    struct reg_model *lm;        /* the model serving it, held until run_free */
    struct api_request q;
    struct gen_job *job;         /* of the current choice */
    struct prompt_out *po;       /* decoder + parser of the output, owned */
    struct emitter em;
    size_t n_seen;               /* tokens taken from the job */
    bool started, finished;
    bool length;                 /* ended at max_tokens */
    bool probed;                 /* a ping was sent early to test a client's FIN */
    uint64_t t_last_write_ns;
    int max_tokens;              /* after capping to the context */
    int n_output_total;          /* tokens of the finished choices */
    bool next_failed;            /* a later choice could not start (em.failed says why) */
};

void api_request_init(struct api_request *q, enum api_kind kind)
{
    memset(q, 0, sizeof(*q));
    q->kind = kind;
    q->temperature = -1;
    q->top_p = -1;
    q->top_k = -1;
    q->seed = UINT64_MAX; /* random */
    q->n_choices = 1;
    q->logprobs = -1;
}

static void run_free(struct gen_run *g)
{
    if (!g)
        return;
    gen_release(g->job);
    prompt_out_free(g->po);
    emit_release(&g->em);
    if (g->lm) {
        g->r->lm = NULL;
        registry_release(g->r->srv->reg, g->lm);
    }
    free(g);
}

/* Take the model the request names (loading it when needed) for r->lm; false after an
 * error reply. */
static bool take_model(struct http_req *r, const struct api_request *q, struct reg_model **lm)
{
    struct pv_err err = {0};
    if (registry_acquire(r->srv->reg, q->model, lm, &err) != PV_OK) {
        http_reply_error(r, err.status, "model", err.msg);
        return false;
    }
    r->lm = *lm;
    return true;
}

/* Take new tokens into events. Returns true when the run is complete. */
static bool run_pump(struct gen_run *g, struct pv_buf *out, int timeout_ms)
{
    int32_t toks[TOKS_PER_WAKE];
    size_t n = 0;
    struct gen_progress prog;
    gen_wait(g->job, g->n_seen, timeout_ms, toks, TOKS_PER_WAKE, &n, &prog);
    g->em.n_cached = (int)prog.n_cached;
    g->em.n_created = (int)prog.n_created;
    if (n) {
        const size_t from = g->n_seen;
        g->n_seen += n;
        g->em.n_output = (int)g->n_seen;
        g->r->n_output = g->n_output_total + (int)g->n_seen;
        if (g->r->ttft_ms < 0)
            g->r->ttft_ms = (double)(prog.t_first_ns - g->r->t_start_ns) / 1e6;
        if (g->em.logprobs >= 0) {
            /* token by token, so each chunk carries the log-probabilities of its tokens */
            struct gen_logprob lp[TOKS_PER_WAKE];
            gen_logprobs(g->job, from, n, lp);
            for (size_t i = 0; i < n && !prompt_out_stopped(g->po); i++) {
                emit_logprob(&g->em, toks[i], &lp[i]);
                prompt_out_tokens(g->po, &toks[i], 1, &g->em, out);
            }
        } else {
            prompt_out_tokens(g->po, toks, n, &g->em, out);
        }
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
    g->r->n_output = g->n_output_total + (int)g->n_seen;
    g->em.more_choices = g->em.failed == PV_OK && g->em.choice + 1 < g->q.n_choices;
    emit_end(&g->em, out);
}

/* The gen_params of choice `choice` (seeded runs get seed + choice: n different samples). */
static struct gen_params run_params(const struct gen_run *g, const struct prompt_in *pin,
                                    int choice)
{
    const struct api_request *q = &g->q;
    return (struct gen_params){
        .prompt = pin->tokens,
        .n_prompt = pin->n_tokens,
        .max_tokens = g->max_tokens,
        .temperature = (float)q->temperature,
        .top_p = (float)q->top_p,
        .top_k = q->top_k,
        .seed = q->seed == UINT64_MAX ? q->seed : q->seed + (uint64_t)choice,
        .n_logprobs = q->logprobs,
    };
}

/* Submit choice `choice` of pin's prompt (its grammar and output parser are taken over). */
static enum pv_status run_submit(struct gen_run *g, struct prompt_in *pin, int choice,
                                 struct pv_err *err)
{
    struct gen_params gp = run_params(g, pin, choice);
    if (pin->matcher) {
        /* the engine owns the grammar from here on (gen_submit releases it on failure) */
        gp.constraint = (struct gen_constraint){pin->matcher, chat_constraint_mask,
                                                chat_constraint_accept, chat_constraint_release};
        pin->matcher = NULL;
    }
    gen_release(g->job);
    g->job = NULL;
    enum pv_status st = gen_submit(g->lm->engine, &gp, &g->job, err);
    if (st != PV_OK)
        return st;
    prompt_out_free(g->po);
    g->po = pin->out;
    pin->out = NULL;
    g->n_seen = 0;
    g->length = false;
    return PV_OK;
}

/*
 * After choice em.choice finished: start the next one (OpenAI n > 1) on the same prompt,
 * with an emitter that continues the same id. False when there is none or it could not
 * start (then em.failed says why).
 */
static bool run_next_choice(struct gen_run *g)
{
    if (g->em.failed != PV_OK || g->em.choice + 1 >= g->q.n_choices)
        return false;
    struct pv_err err = {0};
    struct prompt_in pin = {0};
    const int choice = g->em.choice + 1;
    g->n_output_total += (int)g->n_seen;
    enum pv_status st = prompt_build(g->r, &g->q, &pin, &err);
    if (st == PV_OK)
        st = run_submit(g, &pin, choice, &err);
    prompt_in_release(&pin);
    struct emitter next;
    emit_init(&next, g->r, &g->q, g->em.n_prompt);
    memcpy(next.id, g->em.id, sizeof(next.id));
    next.created = g->em.created;
    next.choice = choice;
    next.n_output_before = g->n_output_total;
    emit_release(&g->em);
    g->em = next;
    if (st != PV_OK) {
        g->em.failed = st;
        snprintf(g->em.fail_msg, sizeof(g->em.fail_msg), "%s", err.msg);
        g->next_failed = true;
        return false;
    }
    return true;
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
            if (run_next_choice(g)) {
                emit_begin(&g->em, out);
                return true;
            }
            if (g->next_failed)
                emit_end(&g->em, out); /* the error event */
            g->finished = true;
            return false;
        }
        if (out->len) {
            g->t_last_write_ns = clock_now_ns();
            return true;
        }
        if (http_client_gone(g->r)) {
            gen_cancel(g->job);
            g->r->n_output = g->n_output_total + (int)g->n_seen;
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

    if (!take_model(r, q, &g->lm))
        goto out;
    if (prompt_build(r, q, &pin, &err) != PV_OK) {
        http_reply_error(r, err.status, NULL, err.msg);
        goto out;
    }
    r->n_prompt = (int)pin.n_tokens;
    const int n_ctx = gen_engine_n_ctx(g->lm->engine);
    if (too_long(r, q, pin.n_tokens, n_ctx))
        goto out;
    /* max_tokens is capped to what the context leaves after the prompt */
    const int room = n_ctx - (int)pin.n_tokens;
    g->max_tokens = q->max_tokens > 0 ? PV_MIN(q->max_tokens, room) : room;
    if (run_submit(g, &pin, 0, &err) != PV_OK) {
        http_reply_error(r, err.status, NULL, err.msg);
        goto out;
    }
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
    /* not streamed: wait here (this is the connection's own thread); n > 1 choices one
     * after another, their bodies merged into one */
    struct pv_buf sink = PV_BUF_INIT;
    json_t *body = NULL;
    for (;;) {
        if (!run_pump(g, &sink, GEN_POLL_MS)) {
            if (http_client_gone(r)) {
                gen_cancel(g->job);
                buf_release(&sink);
                json_decref(body);
                goto out;
            }
            continue;
        }
        run_finish(g, &sink);
        buf_reset(&sink);
        if (g->em.failed != PV_OK)
            break;
        json_t *one = emit_take_json(&g->em);
        if (!body)
            body = one;
        else {
            json_array_extend(json_object_get(body, "choices"), json_object_get(one, "choices"));
            json_object_set(body, "usage", json_object_get(one, "usage"));
            json_decref(one);
        }
        if (!run_next_choice(g))
            break;
    }
    buf_release(&sink);
    if (g->em.failed != PV_OK) {
        json_decref(body);
        http_reply_error(r, g->em.failed, NULL, g->em.fail_msg);
    } else {
        http_reply_json(r, 200, body);
    }
out:
    prompt_in_release(&pin);
    run_free(g);
}

void api_count_tokens(struct http_req *r, struct api_request *q)
{
    struct pv_err err = {0};
    struct prompt_in pin = {0};
    struct reg_model *lm;
    if (!take_model(r, q, &lm))
        return;
    if (prompt_build(r, q, &pin, &err) != PV_OK)
        http_reply_error(r, err.status, NULL, err.msg);
    else
        http_reply_json(r, 200, json_pack("{s:I}", "input_tokens", (json_int_t)pin.n_tokens));
    r->n_prompt = (int)pin.n_tokens;
    prompt_in_release(&pin);
    r->lm = NULL;
    registry_release(r->srv->reg, lm);
}
