/*
 * gen.c - the engine thread and the per-request token channel (see gen.h).
 *
 * One thread drives the engine's scheduler (pv_sched_*): it admits queued jobs while
 * fewer than --parallel run and the KV pool has room, applies cancels, and runs steps.
 * The scheduler batches every running request into one forward pass per step (decode
 * tokens plus prompt chunks) and reuses the longest cached prefix of any sequence; this
 * file only samples (the scheduler's client), streams tokens to the connection threads
 * and cancels.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/gen.h"
#include "server/http.h"

struct gen_job {
    /* input, read-only after submit */
    int32_t *prompt;             /* [n_prompt], owned */
    size_t n_prompt;
    struct gen_params p;
    uint64_t t_submit_ns;
    /* channel, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t *tokens;             /* [n_tokens] generated, owned */
    struct gen_logprob *lps;     /* [n_tokens] when p.n_logprobs >= 0, else NULL; owned */
    size_t n_tokens, cap_tokens;
    struct gen_progress prog;
    int refs;                    /* engine + requester */
    atomic_bool cancel;
    /* engine-thread state */
    struct http_engine *e;       /* the engine it was submitted to */
    struct gen_job *next;        /* queue link, under e->mu */
    uint64_t t_last_ns;
};

/* A running request: the scheduler's client. */
struct gen_req {
    struct http_engine *e;
    struct gen_job *job;         /* NULL when free (set and cleared under e->mu) */
    struct pv_sampler *sampler;  /* owned */
    int32_t seq;                 /* its sequence in the scheduler */
    float *masked;               /* [n_vocab] logits copy for constrained jobs, owned */
    uint64_t t_fill_ns;          /* when the job's prefill began; progress log clock */
    uint64_t t_logged_ns;
    size_t n_fill_start;         /* prompt tokens already cached when it began */
    size_t n_fed;                /* prompt tokens in the cache at the last look */
};

struct http_engine {
    struct http_server *srv;
    struct pv_model *model;
    const struct pv_vocab *vocab; /* the model's, for the connection threads */
    int n_ctx;
    int n_slots;                 /* requests at once (--parallel) */
    struct gen_req *reqs;        /* [n_slots] */
    struct pv_sched *sched;      /* owned: the context, its KV pool and worker pool */
    uint64_t kv_capacity;        /* positions of the KV pool */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;          /* guards queue, n_queued, stopping, slot job pointers */
    pthread_cond_t cv;
    struct gen_job *queue_head, *queue_tail;
    int n_queued;
    bool stopping;
    atomic_int busy;
    atomic_ullong kv_used;
    atomic_ullong kv_preempted;
};

/* ---- job channel ------------------------------------------------------------------------ */

static void job_unref(struct gen_job *j)
{
    pthread_mutex_lock(&j->mu);
    const int refs = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (refs > 0)
        return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    if (j->p.constraint.release)
        j->p.constraint.release(j->p.constraint.state);
    free(j->prompt);
    free(j->tokens);
    free(j->lps);
    free(j);
}

/* Mark a job finished (engine side); wakes the requester. */
static void job_finish(struct gen_job *j, enum pv_status st, const char *msg, bool eog,
                       bool length)
{
    pthread_mutex_lock(&j->mu);
    if (!j->prog.done) {
        j->prog.done = true;
        j->prog.status = st;
        j->prog.eog = eog;
        j->prog.length = length;
        snprintf(j->prog.msg, sizeof(j->prog.msg), "%s", msg ? msg : "");
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* Append a generated token (and its log-probabilities when recorded); false on OOM. */
static bool job_push(struct gen_job *j, int32_t tok, const struct gen_logprob *lp)
{
    const uint64_t now = clock_now_ns();
    pthread_mutex_lock(&j->mu);
    if (j->n_tokens == j->cap_tokens) {
        size_t cap = j->cap_tokens ? j->cap_tokens * 2 : 64;
        int32_t *t = try_realloc(j->tokens, cap * sizeof(*t));
        if (t)
            j->tokens = t;
        struct gen_logprob *l = NULL;
        if (t && lp && (l = try_realloc(j->lps, cap * sizeof(*l))))
            j->lps = l;
        if (!t || (lp && !l)) {
            pthread_mutex_unlock(&j->mu);
            return false;
        }
        j->cap_tokens = cap;
    }
    if (lp)
        j->lps[j->n_tokens] = *lp;
    j->tokens[j->n_tokens++] = tok;
    j->prog.n_tokens = j->n_tokens;
    if (!j->prog.t_first_ns)
        j->prog.t_first_ns = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (j->t_last_ns)
        http_stats_itl((double)(now - j->t_last_ns) / 1e6);
    j->t_last_ns = now;
    return true;
}

static void job_set_prefilled(struct gen_job *j, size_t n)
{
    pthread_mutex_lock(&j->mu);
    j->prog.n_prefilled = n;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void gen_wait(struct gen_job *j, size_t from, int timeout_ms, int32_t *out, size_t cap,
              size_t *n_out, struct gen_progress *prog)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (j->n_tokens <= from && !j->prog.done) {
        if (pthread_cond_timedwait(&j->cv, &j->mu, &deadline) == ETIMEDOUT)
            break;
    }
    size_t n = 0;
    if (j->n_tokens > from) {
        n = PV_MIN(cap, j->n_tokens - from);
        memcpy(out, j->tokens + from, n * sizeof(*out));
    }
    *n_out = n;
    *prog = j->prog;
    /* not done from the reader's view while tokens remain to be copied */
    if (from + n < j->n_tokens)
        prog->done = false;
    pthread_mutex_unlock(&j->mu);
}

void gen_logprobs(struct gen_job *j, size_t from, size_t n, struct gen_logprob *out)
{
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < n; i++) {
        if (j->lps && from + i < j->n_tokens)
            out[i] = j->lps[from + i];
        else
            memset(&out[i], 0, sizeof(out[i]));
    }
    pthread_mutex_unlock(&j->mu);
}

/* A job still waiting in the queue leaves it at once: a client that went away must not
 * keep a queue place (and make others' requests 529) until a slot frees. */
void gen_cancel(struct gen_job *j)
{
    if (!j)
        return;
    atomic_store(&j->cancel, true);
    struct http_engine *e = j->e;
    bool unlinked = false;
    pthread_mutex_lock(&e->mu);
    for (struct gen_job **pp = &e->queue_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j)
            continue;
        *pp = j->next;
        if (e->queue_tail == j)
            e->queue_tail = prev;
        j->next = NULL;
        e->n_queued--;
        http_stats_queue(e->n_queued);
        unlinked = true;
        break;
    }
    pthread_mutex_unlock(&e->mu);
    if (unlinked) {
        job_finish(j, PV_ERR_CANCELLED, "cancelled", false, false);
        job_unref(j); /* the queue's reference */
    }
}

void gen_release(struct gen_job *j)
{
    if (!j)
        return;
    gen_cancel(j);
    job_unref(j);
}

/* ---- engine thread --------------------------------------------------------------------- */

/* log p(tok) = logit - log sum exp(logits), and the n_top most likely ids (ties: the lower id). */
static void token_logprob(const float *logits, size_t n_vocab, int32_t tok, int n_top,
                          struct gen_logprob *out)
{
    float mx = -INFINITY;
    for (size_t i = 0; i < n_vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - mx);
    const double lse = mx + log(sum);
    memset(out, 0, sizeof(*out));
    out->logprob = (float)(logits[tok] - lse);
    n_top = PV_MIN(PV_MAX(n_top, 0), GEN_MAX_TOP_LOGPROBS);
    n_top = (int)PV_MIN((size_t)n_top, n_vocab);
    int n = 0;
    for (size_t i = 0; i < n_vocab && n_top > 0; i++) {
        const float v = logits[i];
        if (n == n_top && v <= logits[out->top_id[n - 1]])
            continue;
        int k = n < n_top ? n++ : n - 1; /* insertion point, most likely first */
        while (k > 0 && logits[out->top_id[k - 1]] < v) {
            out->top_id[k] = out->top_id[k - 1];
            k--;
        }
        out->top_id[k] = (int32_t)i;
    }
    out->n_top = n;
    for (int k = 0; k < n; k++)
        out->top_logprob[k] = (float)(logits[out->top_id[k]] - lse);
}

/* The sampler of a running request: the scheduler's client. Engine thread. */
static int32_t req_next(void *user, const float *logits)
{
    struct gen_req *r = user;
    struct gen_job *j = r->job;
    struct pv_context *ctx = pv_sched_context(r->e->sched);
    if (atomic_load(&j->cancel)) {
        job_finish(j, PV_ERR_CANCELLED, "cancelled", false, false);
        return -1;
    }
    if (!logits) {
        job_finish(j, PV_ERR_INTERNAL, "no logits after evaluation", false, false);
        return -1;
    }
    const float *raw = logits;
    const struct gen_constraint *c = &j->p.constraint;
    if (c->mask) {
        const size_t n_vocab = pv_context_n_vocab(ctx);
        if (!r->masked && !(r->masked = try_malloc(n_vocab * sizeof(float)))) {
            job_finish(j, PV_ERR_NOMEM, "out of memory for constrained decoding", false, false);
            return -1;
        }
        memcpy(r->masked, logits, n_vocab * sizeof(float));
        c->mask(c->state, r->masked, n_vocab);
        logits = r->masked;
    }
    int32_t tok = pv_sampler_sample(r->sampler, logits);
    pv_sampler_accept(r->sampler, tok);
    if (c->accept)
        c->accept(c->state, tok);
    if (pv_context_is_eog(ctx, tok)) {
        job_finish(j, PV_OK, NULL, true, false);
        return -1;
    }
    struct gen_logprob lp;
    if (j->p.n_logprobs >= 0)
        token_logprob(raw, pv_context_n_vocab(ctx), tok, j->p.n_logprobs, &lp);
    if (!job_push(j, tok, j->p.n_logprobs >= 0 ? &lp : NULL)) {
        job_finish(j, PV_ERR_NOMEM, "out of memory for generated tokens", false, false);
        return -1;
    }
    if (j->n_tokens >= (size_t)j->p.max_tokens) {
        job_finish(j, PV_OK, NULL, false, true);
        return -1;
    }
    return tok;
}

/* The scheduler ended a request: at the end of the context it stops as a length stop. */
static void req_ended(void *user, enum pv_status st, const char *msg)
{
    struct gen_req *r = user;
    if (st == PV_ERR_CONTEXT)
        job_finish(r->job, PV_OK, NULL, false, true);
    else
        job_finish(r->job, st, msg, false, false);
}

/* A long prefill (4096 tokens or more) says how far it is at each quarter and at least
 * every 10 s: a client waiting minutes for its first token (Claude Code's first prompt on
 * a small CPU) is visibly not stuck. fed: prompt tokens in the cache now. */
static void log_prefill(struct gen_req *r, size_t fed)
{
    const struct gen_job *j = r->job;
    const uint64_t now = clock_now_ns();
    const size_t before = r->n_fed;
    r->n_fed = fed;
    if (j->n_prompt < 4096 || fed >= j->n_prompt || fed <= before)
        return;
    const size_t quarter = j->n_prompt / 4;
    const bool crossed = fed / quarter > before / quarter;
    if (!crossed && now - r->t_logged_ns < 10000000000ull)
        return;
    r->t_logged_ns = now;
    const double el = (double)(now - r->t_fill_ns) * 1e-9;
    const double rate = el > 0 ? (double)(fed - r->n_fill_start) / el : 0;
    log_info("prefill: %zu of %zu prompt tokens, %.0f tok/s, about %.0f s left", fed,
             j->n_prompt, rate, rate > 0 ? (double)(j->n_prompt - fed) / rate : 0.0);
}

static bool job_is_done(struct gen_job *j)
{
    pthread_mutex_lock(&j->mu);
    bool d = j->prog.done;
    pthread_mutex_unlock(&j->mu);
    return d;
}

/* Start the queued job j in the free request r: its sampler, then the scheduler.
 * PV_ERR_OVERLOADED: it stays queued (no room yet). Engine thread, e->mu not held. */
static enum pv_status req_start(struct http_engine *e, struct gen_req *r, struct gen_job *j)
{
    struct pv_err err;
    struct pv_sampler_params sp = pv_sampler_default_params();
    uint32_t cached = 0;
    if (j->p.temperature >= 0)
        sp.temperature = j->p.temperature;
    if (j->p.top_p >= 0)
        sp.top_p = j->p.top_p;
    if (j->p.top_k >= 0)
        sp.top_k = j->p.top_k;
    sp.seed = j->p.seed;
    pv_sampler_free(r->sampler);
    r->sampler = NULL;
    r->e = e;
    r->job = j;
    if (pv_sampler_new(&sp, pv_context_n_vocab(pv_sched_context(e->sched)), &r->sampler, &err) != PV_OK) {
        job_finish(j, err.status, err.msg, false, false);
        return err.status;
    }
    struct pv_sched_client client = {.user = r, .next = req_next, .ended = req_ended};
    enum pv_status st = pv_sched_submit(e->sched, j->prompt, j->n_prompt, &client, &r->seq,
                                        &cached, &err);
    if (st == PV_ERR_OVERLOADED)
        return st;
    if (st != PV_OK) {
        job_finish(j, st, err.msg, false, false);
        return st;
    }
    if (cached)
        log_debug("request in sequence %d: %u of %zu prompt tokens reused from the cache", r->seq,
                  cached, j->n_prompt);
    pthread_mutex_lock(&j->mu);
    j->prog.n_cached = cached;
    pthread_mutex_unlock(&j->mu);
    job_set_prefilled(j, cached);
    r->t_fill_ns = r->t_logged_ns = clock_now_ns();
    r->n_fill_start = r->n_fed = cached;
    return PV_OK;
}

static struct gen_req *free_req(struct http_engine *e)
{
    for (int i = 0; i < e->n_slots; i++)
        if (!e->reqs[i].job)
            return &e->reqs[i];
    return NULL;
}

/* Drop the job of r (done or cancelled) from the scheduler and free r. Engine thread. */
static void req_end(struct http_engine *e, struct gen_req *r)
{
    struct gen_job *j = r->job;
    pv_sched_cancel(e->sched, r->seq, r);
    pthread_mutex_lock(&e->mu);
    r->job = NULL;
    pthread_mutex_unlock(&e->mu);
    job_unref(j);
}

static void update_usage(struct http_engine *e)
{
    struct pv_sched_usage u;
    pv_sched_usage(e->sched, &u);
    atomic_store(&e->kv_used, u.kv_positions_used);
    atomic_store(&e->kv_preempted, u.n_preempted);
}

static void *engine_main(void *arg)
{
    struct http_engine *e = arg;
    struct pv_context *ctx = pv_sched_context(e->sched);
    for (;;) {
        pthread_mutex_lock(&e->mu);
        /* admit queued jobs while a request is free and the cache has room; a job is off
           the queue while it starts (gen_cancel then only flags it) */
        while (e->queue_head && !e->stopping) {
            struct gen_req *r = free_req(e);
            if (!r)
                break;
            struct gen_job *j = e->queue_head;
            e->queue_head = j->next;
            if (!e->queue_head)
                e->queue_tail = NULL;
            j->next = NULL;
            e->n_queued--;
            r->job = j;
            pthread_mutex_unlock(&e->mu);
            enum pv_status st = req_start(e, r, j);
            pthread_mutex_lock(&e->mu);
            r->job = st == PV_OK ? j : NULL;
            if (st == PV_ERR_OVERLOADED && pv_sched_n_running(e->sched) > 0 &&
                !atomic_load(&j->cancel)) {
                /* back to the head: it waits until running requests free the cache */
                j->next = e->queue_head;
                e->queue_head = j;
                if (!e->queue_tail)
                    e->queue_tail = j;
                e->n_queued++;
                break;
            }
            if (st != PV_OK) {
                if (st == PV_ERR_OVERLOADED)
                    job_finish(j, atomic_load(&j->cancel) ? PV_ERR_CANCELLED : st,
                               "the kv cache cannot hold this prompt now", false, false);
                job_unref(j);
            }
        }
        http_stats_queue(e->n_queued);
        int busy = 0;
        for (int i = 0; i < e->n_slots; i++)
            busy += e->reqs[i].job != NULL;
        atomic_store(&e->busy, busy);
        if (e->stopping && busy == 0 && !e->queue_head) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        if (busy == 0) {
            pthread_cond_wait(&e->cv, &e->mu);
            pthread_mutex_unlock(&e->mu);
            continue;
        }
        const bool stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);

        /* cancels and shutdown take effect before the step */
        for (int i = 0; i < e->n_slots; i++) {
            struct gen_req *r = &e->reqs[i];
            if (!r->job)
                continue;
            if (stopping)
                job_finish(r->job, PV_ERR_OVERLOADED, "server is shutting down", false, false);
            else if (atomic_load(&r->job->cancel))
                job_finish(r->job, PV_ERR_CANCELLED, "cancelled", false, false);
            if (job_is_done(r->job))
                req_end(e, r);
        }
        struct pv_err err;
        if (pv_sched_step(e->sched, &err) < 0)
            log_warn("engine step failed: %s", err.msg);
        for (int i = 0; i < e->n_slots; i++) {
            struct gen_req *r = &e->reqs[i];
            if (!r->job)
                continue;
            /* a request the scheduler let go of without a word cannot go on */
            if (!job_is_done(r->job) && !pv_sched_is_running(e->sched, r->seq, r))
                job_finish(r->job, PV_ERR_INTERNAL, "the engine stopped the request", false, false);
            if (job_is_done(r->job)) {
                req_end(e, r);
                continue;
            }
            if (r->job->n_tokens == 0) {
                size_t fed = PV_MIN((size_t)pv_context_seq_len(ctx, r->seq), r->job->n_prompt);
                job_set_prefilled(r->job, fed);
                log_prefill(r, fed);
            }
        }
        update_usage(e);
    }
    return NULL;
}

/* ---- engine lifecycle ------------------------------------------------------------------- */

/* The KV pool: --kv-size, else a full context per slot where the memory allows that
 * (pages of the pool are touched only as blocks are used), at least one context. */
static uint32_t pool_positions(const struct http_server *srv, struct pv_model *model, uint32_t n_ctx)
{
    if (srv->p.kv_size > 0)
        return (uint32_t)srv->p.kv_size;
    uint64_t want = (uint64_t)n_ctx * (uint64_t)srv->p.n_parallel;
    uint64_t per_pos = pv_model_kv_bytes(model, 1, 2.0), avail = 0;
    if (per_pos > 0 && mem_available_bytes(&avail) && want * per_pos > avail / 2)
        want = avail / 2 / per_pos;
    want = PV_MAX(want, (uint64_t)n_ctx);
    return (uint32_t)PV_MIN(want, (uint64_t)1 << 24);
}

enum pv_status gen_engine_new(struct http_server *srv, struct http_engine **out,
                              struct pv_err *err)
{
    struct http_engine *e = xcalloc(1, sizeof(*e));
    enum pv_status st;
    *out = NULL;
    e->srv = srv;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);

    const uint64_t t0 = clock_now_ns();
    st = pv_model_load(srv->p.model_path, NULL, &e->model, err);
    if (st != PV_OK)
        goto fail;
    e->vocab = pv_model_vocab(e->model);
    uint32_t n_ctx = (uint32_t)srv->p.n_ctx;
    if (n_ctx == 0)
        n_ctx = PV_MIN(pv_model_n_ctx_train(e->model), 32768u);
    e->n_ctx = (int)n_ctx;
    e->n_slots = srv->p.n_parallel;
    e->reqs = xcalloc((size_t)e->n_slots, sizeof(*e->reqs));
    struct pv_sched_params sp = pv_sched_default_params();
    sp.n_running = (uint32_t)e->n_slots;
    sp.n_ctx = n_ctx;
    sp.kv_size = pool_positions(srv, e->model, n_ctx);
    sp.n_threads = srv->p.n_threads;
    st = pv_sched_new(e->model, &sp, &e->sched, err);
    if (st != PV_OK)
        goto fail;
    {
        struct pv_sched_usage u;
        pv_sched_usage(e->sched, &u);
        e->kv_capacity = u.kv_positions;
    }
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        st = pv_err_set(err, PV_ERR_INTERNAL, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    log_info("model %s (%s) loaded in %.0f ms: %d request(s) at once of up to %u tokens, kv "
             "cache of %llu positions, %d threads",
             pv_model_name(e->model), pv_model_arch(e->model),
             (double)(clock_now_ns() - t0) / 1e6, e->n_slots, n_ctx,
             (unsigned long long)e->kv_capacity, pv_context_n_threads(pv_sched_context(e->sched)));
    *out = e;
    return PV_OK;

fail:
    gen_engine_free(e);
    return st;
}

void gen_engine_shutdown(struct http_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    /* queued jobs end now; running ones end at their next step */
    while (e->queue_head) {
        struct gen_job *j = e->queue_head;
        e->queue_head = j->next;
        e->n_queued--;
        job_finish(j, PV_ERR_OVERLOADED, "server is shutting down", false, false);
        job_unref(j);
    }
    e->queue_tail = NULL;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}

void gen_engine_free(struct http_engine *e)
{
    if (!e)
        return;
    gen_engine_shutdown(e);
    for (int i = 0; e->reqs && i < e->n_slots; i++) {
        pv_sampler_free(e->reqs[i].sampler);
        free(e->reqs[i].masked);
    }
    free(e->reqs);
    pv_sched_free(e->sched);
    pv_model_free(e->model);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int gen_engine_n_ctx(const struct http_engine *e)
{
    return e ? e->n_ctx : 0;
}

struct pv_model *gen_engine_model(const struct http_engine *e)
{
    return e ? e->model : NULL;
}

const struct pv_vocab *gen_engine_vocab(const struct http_engine *e)
{
    return e ? e->vocab : NULL;
}

void gen_engine_usage(const struct http_engine *e, struct gen_usage *out)
{
    memset(out, 0, sizeof(*out));
    if (!e)
        return;
    out->kv_used = atomic_load(&((struct http_engine *)e)->kv_used);
    out->kv_preempted = atomic_load(&((struct http_engine *)e)->kv_preempted);
    out->kv_capacity = e->kv_capacity;
    out->slots_busy = atomic_load(&((struct http_engine *)e)->busy);
    pthread_mutex_lock(&((struct http_engine *)e)->mu);
    out->queued = e->n_queued;
    pthread_mutex_unlock(&((struct http_engine *)e)->mu);
}

enum pv_status gen_submit(struct http_engine *e, const struct gen_params *gp,
                          struct gen_job **out, struct pv_err *err)
{
    enum pv_status st = PV_OK;
    struct gen_job *j = NULL;
    int32_t *prompt = NULL;
    *out = NULL;
    if (gp->n_prompt == 0)
        st = pv_err_set(err, PV_ERR_INVALID, "the prompt is empty");
    else if (gp->max_tokens < 1 || gp->n_prompt + (size_t)gp->max_tokens > (size_t)e->n_ctx)
        st = pv_err_set(err, PV_ERR_CONTEXT, "prompt is too long: %zu tokens > %d maximum",
                        gp->n_prompt, e->n_ctx - 1);
    else if (!(j = try_calloc(1, sizeof(*j))) ||
             !(prompt = try_malloc(gp->n_prompt * sizeof(int32_t))))
        st = pv_err_set(err, PV_ERR_NOMEM, "out of memory for a prompt of %zu tokens",
                        gp->n_prompt);
    if (st != PV_OK) {
        free(j);
        free(prompt);
        if (gp->constraint.release)
            gp->constraint.release(gp->constraint.state);
        return st;
    }
    memcpy(prompt, gp->prompt, gp->n_prompt * sizeof(int32_t));
    j->prompt = prompt;
    j->n_prompt = gp->n_prompt;
    j->p = *gp;
    j->p.prompt = prompt;
    j->t_submit_ns = clock_now_ns();
    j->e = e;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    j->refs = 2;

    pthread_mutex_lock(&e->mu);
    int free_slots = 0;
    for (int i = 0; i < e->n_slots; i++)
        free_slots += e->reqs[i].job == NULL;
    if (e->stopping)
        st = pv_err_set(err, PV_ERR_OVERLOADED, "server is shutting down");
    else if (e->n_queued - free_slots >= e->srv->p.queue_len)
        st = pv_err_set(err, PV_ERR_OVERLOADED, "Overloaded: %d requests are waiting",
                        e->n_queued);
    if (st == PV_OK) {
        if (e->queue_tail)
            e->queue_tail->next = j;
        else
            e->queue_head = j;
        e->queue_tail = j;
        e->n_queued++;
        http_stats_queue(e->n_queued);
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (st != PV_OK) {
        j->refs = 1;
        job_unref(j);
        return st;
    }
    *out = j;
    return PV_OK;
}
