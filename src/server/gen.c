/*
 * gen.c - the engine thread and the per-request token channel (see gen.h).
 *
 * One thread owns the model's contexts, one per --parallel slot, and loops over the busy
 * slots: each round gives every slot one step - a prompt chunk of at most GEN_CHUNK
 * tokens, or one decode token - so a long prefill neither starves other slots nor delays
 * a cancel by more than one step. Slots are independent contexts evaluated in turn (not
 * one batched forward). A slot remembers which tokens its KV cache holds; a new job goes
 * to the free slot sharing the longest prefix with its prompt, and only the rest of the
 * prompt is evaluated (a Claude Code second turn reuses the first turn's ~20K tokens).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/gen.h"
#include "server/http.h"

#define GEN_CHUNK 512

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

struct slot {
    struct pv_context *ctx;
    struct pv_sampler *sampler;
    struct gen_job *job;         /* NULL when free */
    int32_t *kv;                 /* [n_ctx] tokens the KV cache holds, in order */
    size_t n_kv;
    size_t n_fed;                /* prompt tokens of the job that are in the KV cache */
    int32_t last;                /* last sampled token, not yet evaluated; -1 none */
    float *masked;               /* [n_vocab] logits copy for constrained jobs, owned */
    uint64_t t_fill_ns;          /* when the job's prefill began; progress log clock */
    uint64_t t_logged_ns;
    size_t n_fill_start;         /* prompt tokens already cached when it began */
};

struct http_engine {
    struct http_server *srv;
    struct pv_model *model;
    const struct pv_vocab *vocab; /* the model's, for the connection threads */
    int n_ctx;
    int n_slots;
    struct slot *slots;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;          /* guards queue, n_queued, stopping, slot job pointers */
    pthread_cond_t cv;
    struct gen_job *queue_head, *queue_tail;
    int n_queued;
    bool stopping;
    atomic_int busy;
    atomic_ullong kv_used;
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

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t n = PV_MIN(na, nb), i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static void update_kv_used(struct http_engine *e)
{
    unsigned long long used = 0;
    for (int i = 0; i < e->n_slots; i++)
        used += pv_context_n_past(e->slots[i].ctx);
    atomic_store(&e->kv_used, used);
}

/* Put a job into a slot: reuse the cached prefix, make its sampler. Engine thread. */
static void slot_start(struct http_engine *e, struct slot *s, struct gen_job *j)
{
    struct pv_err err;
    struct pv_sampler_params sp = pv_sampler_default_params();
    if (j->p.temperature >= 0)
        sp.temperature = j->p.temperature;
    if (j->p.top_p >= 0)
        sp.top_p = j->p.top_p;
    if (j->p.top_k >= 0)
        sp.top_k = j->p.top_k;
    sp.seed = j->p.seed;
    s->job = j;
    s->last = -1;
    pv_sampler_free(s->sampler);
    s->sampler = NULL;
    if (pv_sampler_new(&sp, pv_context_n_vocab(s->ctx), &s->sampler, &err) != PV_OK) {
        job_finish(j, err.status, err.msg, false, false);
        return;
    }
    /* keep the longest cached prefix, but re-evaluate at least the last prompt token so
     * its logits exist */
    size_t keep = common_prefix(s->kv, s->n_kv, j->prompt, j->n_prompt);
    if (keep >= j->n_prompt)
        keep = j->n_prompt - 1;
    if (pv_context_truncate(s->ctx, (uint32_t)keep, &err) != PV_OK) {
        pv_context_truncate(s->ctx, 0, NULL);
        keep = 0;
    }
    s->n_kv = keep;
    s->n_fed = keep;
    s->t_fill_ns = s->t_logged_ns = clock_now_ns();
    s->n_fill_start = keep;
    if (keep)
        log_debug("slot %d: %zu of %zu prompt tokens reused from the cache",
                  (int)(s - e->slots), keep, j->n_prompt);
    job_set_prefilled(j, keep);
}

/* Evaluate tokens and mirror them in s->kv; false (job failed) on error. */
static bool slot_eval(struct slot *s, const int32_t *toks, size_t n)
{
    struct pv_err err;
    if (pv_context_eval(s->ctx, toks, n, false, &err) != PV_OK) {
        job_finish(s->job, err.status, err.msg, false, false);
        pv_context_truncate(s->ctx, 0, NULL);
        s->n_kv = 0;
        return false;
    }
    memcpy(s->kv + s->n_kv, toks, n * sizeof(*toks));
    s->n_kv += n;
    return true;
}

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

/* Sample the next token from the context's last logits and hand it to the job. */
static void slot_sample(struct slot *s)
{
    struct gen_job *j = s->job;
    const float *logits = pv_context_logits(s->ctx, -1);
    if (!logits) {
        job_finish(j, PV_ERR_INTERNAL, "no logits after evaluation", false, false);
        return;
    }
    const float *raw = logits;
    const struct gen_constraint *c = &j->p.constraint;
    if (c->mask) {
        const size_t n_vocab = pv_context_n_vocab(s->ctx);
        if (!s->masked && !(s->masked = try_malloc(n_vocab * sizeof(float)))) {
            job_finish(j, PV_ERR_NOMEM, "out of memory for constrained decoding", false, false);
            return;
        }
        memcpy(s->masked, logits, n_vocab * sizeof(float));
        c->mask(c->state, s->masked, n_vocab);
        logits = s->masked;
    }
    int32_t tok = pv_sampler_sample(s->sampler, logits);
    pv_sampler_accept(s->sampler, tok);
    if (c->accept)
        c->accept(c->state, tok);
    if (pv_context_is_eog(s->ctx, tok)) {
        job_finish(j, PV_OK, NULL, true, false);
        return;
    }
    struct gen_logprob lp;
    if (j->p.n_logprobs >= 0)
        token_logprob(raw, pv_context_n_vocab(s->ctx), tok, j->p.n_logprobs, &lp);
    if (!job_push(j, tok, j->p.n_logprobs >= 0 ? &lp : NULL)) {
        job_finish(j, PV_ERR_NOMEM, "out of memory for generated tokens", false, false);
        return;
    }
    if (j->n_tokens >= (size_t)j->p.max_tokens) {
        job_finish(j, PV_OK, NULL, false, true);
        return;
    }
    s->last = tok;
}

/* A long prefill (4096 tokens or more) says how far it is at each quarter and at least
 * every 10 s: a client waiting minutes for its first token (Claude Code's first prompt on
 * a small CPU) is visibly not stuck. */
static void log_prefill(struct slot *s, size_t n_step)
{
    const struct gen_job *j = s->job;
    const uint64_t now = clock_now_ns();
    if (j->n_prompt < 4096 || s->n_fed >= j->n_prompt)
        return;
    const size_t quarter = j->n_prompt / 4;
    const bool crossed = s->n_fed / quarter > (s->n_fed - n_step) / quarter;
    if (!crossed && now - s->t_logged_ns < 10000000000ull)
        return;
    s->t_logged_ns = now;
    const double el = (double)(now - s->t_fill_ns) * 1e-9;
    const double rate = el > 0 ? (double)(s->n_fed - s->n_fill_start) / el : 0;
    log_info("prefill: %zu of %zu prompt tokens, %.0f tok/s, about %.0f s left", s->n_fed,
             j->n_prompt, rate,
             rate > 0 ? (double)(j->n_prompt - s->n_fed) / rate : 0.0);
}

/* One step of a busy slot: a prompt chunk or one decode token. */
static void slot_step(struct slot *s)
{
    struct gen_job *j = s->job;
    if (atomic_load(&j->cancel)) {
        job_finish(j, PV_ERR_CANCELLED, "cancelled", false, false);
        return;
    }
    if (s->n_fed < j->n_prompt) {
        size_t n = PV_MIN((size_t)GEN_CHUNK, j->n_prompt - s->n_fed);
        if (!slot_eval(s, j->prompt + s->n_fed, n))
            return;
        s->n_fed += n;
        job_set_prefilled(j, s->n_fed);
        log_prefill(s, n);
        if (s->n_fed == j->n_prompt)
            slot_sample(s);
        return;
    }
    if (s->last < 0) {
        job_finish(j, PV_ERR_INTERNAL, "slot has no token to continue from", false, false);
        return;
    }
    const int32_t t = s->last;
    s->last = -1;
    if (s->n_kv >= (size_t)pv_context_n_ctx(s->ctx)) {
        job_finish(j, PV_OK, NULL, false, true);
        return;
    }
    if (slot_eval(s, &t, 1))
        slot_sample(s);
}

static bool job_is_done(struct gen_job *j)
{
    pthread_mutex_lock(&j->mu);
    bool d = j->prog.done;
    pthread_mutex_unlock(&j->mu);
    return d;
}

/* Free slot whose cache shares the most with the prompt of j, or NULL. Under e->mu. */
static struct slot *pick_slot(struct http_engine *e, const struct gen_job *j)
{
    struct slot *best = NULL;
    size_t best_n = 0;
    for (int i = 0; i < e->n_slots; i++) {
        struct slot *s = &e->slots[i];
        if (s->job)
            continue;
        size_t n = common_prefix(s->kv, s->n_kv, j->prompt, j->n_prompt);
        if (!best || n > best_n) {
            best = s;
            best_n = n;
        }
    }
    return best;
}

static void *engine_main(void *arg)
{
    struct http_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        /* admit queued jobs to free slots */
        while (e->queue_head && !e->stopping) {
            struct slot *s = pick_slot(e, e->queue_head);
            if (!s)
                break;
            struct gen_job *j = e->queue_head;
            e->queue_head = j->next;
            if (!e->queue_head)
                e->queue_tail = NULL;
            e->n_queued--;
            s->job = j;
            pthread_mutex_unlock(&e->mu);
            slot_start(e, s, j);
            pthread_mutex_lock(&e->mu);
        }
        http_stats_queue(e->n_queued);
        int busy = 0;
        for (int i = 0; i < e->n_slots; i++)
            busy += e->slots[i].job != NULL;
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

        for (int i = 0; i < e->n_slots; i++) {
            struct slot *s = &e->slots[i];
            if (!s->job)
                continue;
            if (stopping)
                job_finish(s->job, PV_ERR_OVERLOADED, "server is shutting down", false, false);
            else if (!job_is_done(s->job))
                slot_step(s);
            if (job_is_done(s->job)) {
                struct gen_job *j = s->job;
                pthread_mutex_lock(&e->mu);
                s->job = NULL;
                pthread_mutex_unlock(&e->mu);
                job_unref(j);
            }
        }
        update_kv_used(e);
    }
    return NULL;
}

/* ---- engine lifecycle ------------------------------------------------------------------- */

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
    e->slots = xcalloc((size_t)e->n_slots, sizeof(*e->slots));
    for (int i = 0; i < e->n_slots; i++) {
        struct pv_context_params cp = pv_context_default_params();
        cp.n_ctx = n_ctx;
        cp.n_threads = srv->p.n_threads;
        st = pv_context_new(e->model, &cp, &e->slots[i].ctx, err);
        if (st != PV_OK)
            goto fail;
        e->slots[i].kv = try_calloc(n_ctx, sizeof(int32_t));
        if (!e->slots[i].kv) {
            st = pv_err_set(err, PV_ERR_NOMEM, "cannot allocate the token list of a slot");
            goto fail;
        }
        e->slots[i].last = -1;
    }
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        st = pv_err_set(err, PV_ERR_INTERNAL, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    log_info("model %s (%s) loaded in %.0f ms: %d slot(s) of %u tokens, %d threads",
             pv_model_name(e->model), pv_model_arch(e->model),
             (double)(clock_now_ns() - t0) / 1e6, e->n_slots, n_ctx,
             pv_context_n_threads(e->slots[0].ctx));
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
    for (int i = 0; e->slots && i < e->n_slots; i++) {
        pv_context_free(e->slots[i].ctx);
        pv_sampler_free(e->slots[i].sampler);
        free(e->slots[i].kv);
        free(e->slots[i].masked);
    }
    free(e->slots);
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
    out->kv_capacity = (uint64_t)e->n_ctx * (uint64_t)e->n_slots;
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
        free_slots += e->slots[i].job == NULL;
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
