/*
 * sched.c - the engine scheduler (public pv_sched_*): many requests on one context.
 *
 * Each request is a sequence of the context. Every step gathers the next token of every
 * decoding sequence, then prompt chunks of the prefilling ones (round robin) up to the
 * step's token budget and time (STEP_NS_*), and runs them as one batch: a long prompt is
 * fed in chunks while the other streams keep getting a token per step, and a request that
 * arrives during it gets its first token within about two short steps. The logits of
 * each sequence go to its client, which answers with the token to feed next or -1 to end.
 *
 * Sequences that ended keep their KV cache: a new request starts from the longest prefix
 * any sequence holds (running or ended), sharing its blocks by a fork, or from the
 * longest run of published blocks of the pool's prefix cache (kv.h: the hash chain;
 * those outlive the sequence that filled them until their blocks are needed), whichever
 * is longer, and only the rest of its prompt is evaluated. Ended sequences are evicted,
 * least recently used first, when the pool needs their blocks. All calls come from one
 * thread (the engine thread).
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

#define DEFAULT_STEP_TOKENS 256
/* How long a step that feeds prompts may take. A step runs to its end, so a request that
 * arrives waits for the step under way and gets its first token one step later: prompt
 * chunks are cut to what the time per token of the last steps says fits, shorter when
 * other requests decode or wait for their first token. Never fewer than MIN_CHUNK. */
#define STEP_NS_ALONE 400000000.0
#define STEP_NS_SHARED 150000000.0
#define MIN_CHUNK 16

enum seq_state { SEQ_EMPTY, SEQ_IDLE, SEQ_PREFILL, SEQ_DECODE };

struct sched_seq {
    enum seq_state state;
    int32_t *tokens;             /* [n_ctx] the tokens the KV cache holds, then the rest of
                                    the prompt while prefilling */
    uint32_t n_prompt;           /* tokens of the prompt (PREFILL: fed up to the KV length) */
    int32_t pending;             /* DECODE: the token to feed next */
    uint64_t last_used;          /* step counter of the last use (eviction order) */
    uint64_t admitted;           /* step counter at submit (preemption order) */
    struct pv_sched_client client;
};

struct pv_sched {
    struct pv_context *ctx;      /* owned */
    uint32_t n_running_max;
    uint32_t step_tokens;
    uint32_t n_seq;
    struct sched_seq *seqs;      /* [n_seq] */
    struct pv_batch batch;       /* [step_tokens] */
    uint32_t *n_add;             /* [n_seq] tokens of each sequence in the step */
    int32_t *row_seq;            /* [step_tokens] sequence of each batch token with logits */
    uint32_t *hit;               /* [n_ctx / block_size] blocks of a prefix-cache match */
    uint32_t rr;                 /* next prefilling sequence to serve first */
    uint64_t n_preempted;        /* sequences that gave their blocks back to go on later */
    uint64_t n_prompt_tokens, n_mem_hit, n_disk_hit; /* prefix cache lookups (tokens) */
    double ns_per_token;         /* of the recent steps that fed prompts; 0 before one */
    uint64_t clock;
};

struct pv_sched_params pv_sched_default_params(void)
{
    struct pv_sched_params p = {.n_running = 1, .n_ctx = 0, .kv_size = 0, .step_tokens = 0,
                                .n_threads = 0, .device = PV_DEVICE_AUTO};
    return p;
}

void pv_sched_free(struct pv_sched *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; s->seqs && i < s->n_seq; i++)
        free(s->seqs[i].tokens);
    free(s->seqs);
    free(s->n_add);
    free(s->row_seq);
    free(s->hit);
    pv_batch_release(&s->batch);
    if (s->ctx) {
        dcache_close(s->ctx->disk);
        s->ctx->disk = NULL;
    }
    pv_context_free(s->ctx);
    free(s);
}

enum pv_status pv_sched_new(struct pv_model *model, const struct pv_sched_params *params,
                            struct pv_sched **out, struct pv_err *err)
{
    struct pv_context_params cp = pv_context_default_params();
    struct pv_sched *s;
    enum pv_status st;

    *out = NULL;
    if (params->n_running < 1 || params->n_running > 512)
        return pv_err_set(err, PV_ERR_INVALID, "%u running sequences: 1 to 512", params->n_running);
    s = xcalloc(1, sizeof(*s));
    s->n_running_max = params->n_running;
    s->step_tokens = params->step_tokens ? params->step_tokens : DEFAULT_STEP_TOKENS;
    /* as many again for the caches of ended requests */
    s->n_seq = 2 * params->n_running;
    cp.n_ctx = params->n_ctx;
    cp.n_threads = params->n_threads;
    cp.device = params->device;
    cp.n_seq_max = s->n_seq;
    cp.kv_size = params->kv_size;
    cp.n_batch = s->step_tokens;
    cp.swa_full = params->swa_full;
    st = pv_context_new(model, &cp, &s->ctx, err);
    if (st != PV_OK)
        goto fail;
    s->step_tokens = s->ctx->n_batch; /* at most n_ctx */
    st = pv_batch_init(&s->batch, s->step_tokens, err);
    if (st != PV_OK)
        goto fail;
    s->seqs = try_calloc(s->n_seq, sizeof(*s->seqs));
    s->n_add = try_calloc(s->n_seq, sizeof(uint32_t));
    s->row_seq = try_calloc(s->step_tokens, sizeof(int32_t));
    s->hit = try_calloc(s->ctx->n_ctx / s->ctx->kv.block_size + 1, sizeof(uint32_t));
    if (!s->seqs || !s->n_add || !s->row_seq || !s->hit)
        goto nomem;
    for (uint32_t i = 0; i < s->n_seq; i++)
        if (!(s->seqs[i].tokens = try_calloc(s->ctx->n_ctx, sizeof(int32_t))))
            goto nomem;
    if (params->cache_dir) {
        struct pv_err derr;
        if (dcache_open(params->cache_dir, params->cache_bytes, s->ctx, &s->ctx->disk, &derr) != PV_OK)
            log_warn("disk cache off: %s", derr.msg);
    }
    *out = s;
    return PV_OK;

nomem:
    st = pv_err_set(err, PV_ERR_NOMEM, "cannot allocate the scheduler's token lists");
fail:
    pv_sched_free(s);
    return st;
}

struct pv_context *pv_sched_context(const struct pv_sched *s)
{
    return s->ctx;
}

static bool running(const struct sched_seq *q)
{
    return q->state == SEQ_PREFILL || q->state == SEQ_DECODE;
}

uint32_t pv_sched_n_running(const struct pv_sched *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_seq; i++)
        n += running(&s->seqs[i]);
    return n;
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t n = PV_MIN(na, nb), i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Drop the least recently used ended sequence other than keep; false when none holds
 * any block. */
static bool evict_one(struct pv_sched *s, int32_t keep)
{
    int32_t victim = -1;
    for (uint32_t i = 0; i < s->n_seq; i++) {
        const struct sched_seq *q = &s->seqs[i];
        if (q->state != SEQ_IDLE || (int32_t)i == keep || pv_context_seq_len(s->ctx, (int32_t)i) == 0)
            continue;
        if (victim < 0 || q->last_used < s->seqs[victim].last_used)
            victim = (int32_t)i;
    }
    if (victim < 0)
        return false;
    pv_context_seq_drop(s->ctx, victim);
    s->seqs[victim].state = SEQ_EMPTY;
    return true;
}

/* Positions the prompts still to be fed of running sequences will take. */
static uint64_t prefill_backlog(const struct pv_sched *s)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->n_seq; i++)
        if (s->seqs[i].state == SEQ_PREFILL)
            n += s->seqs[i].n_prompt - pv_context_seq_len(s->ctx, (int32_t)i);
    return n;
}

enum pv_status pv_sched_submit(struct pv_sched *s, const int32_t *prompt, size_t n_prompt,
                               const struct pv_sched_client *client, int32_t *seq_out,
                               uint32_t *n_cached, struct pv_err *err)
{
    struct kv_cache *kv = &s->ctx->kv;
    int32_t best = -1, slot = -1;
    size_t best_n = 0, keep;

    *seq_out = -1;
    *n_cached = 0;
    if (n_prompt == 0)
        return pv_err_set(err, PV_ERR_INVALID, "the prompt is empty");
    if (n_prompt >= s->ctx->n_ctx)
        return pv_err_set(err, PV_ERR_CONTEXT, "prompt is too long: %zu tokens > %u maximum",
                          n_prompt, s->ctx->n_ctx - 1);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= s->ctx->n_vocab)
            return pv_err_set(err, PV_ERR_INVALID, "token id %d at index %zu is outside the "
                              "vocabulary of %u", prompt[i], i, s->ctx->n_vocab);
    if ((uint64_t)n_prompt + 1 > (uint64_t)kv->n_blocks * kv->block_size)
        return pv_err_set(err, PV_ERR_CONTEXT, "prompt is too long: %zu tokens do not fit the "
                          "kv cache of %u positions (--kv-size)", n_prompt,
                          kv->n_blocks * kv->block_size);
    if (pv_sched_n_running(s) >= s->n_running_max)
        return pv_err_set(err, PV_ERR_OVERLOADED, "every sequence is busy");

    /* the longest cached prefix of any sequence */
    for (uint32_t i = 0; i < s->n_seq; i++) {
        const struct sched_seq *q = &s->seqs[i];
        uint32_t len = pv_context_seq_len(s->ctx, (int32_t)i);
        if (q->state == SEQ_EMPTY || len == 0)
            continue;
        size_t n = common_prefix(q->tokens, len, prompt, n_prompt);
        if (n > best_n) {
            best = (int32_t)i;
            best_n = n;
        }
    }
    /* the longest run of published blocks, whoever filled them (ended and evicted
       sequences included): taken when it beats the longest sequence's prefix */
    if (best >= 0)
        best_n = kv_seq_reusable(kv, (uint32_t)best, (uint32_t)PV_MIN(best_n, n_prompt - 1));
    uint32_t n_hit = kv_match_prefix(kv, prompt, n_prompt - 1, s->hit);
    n_hit = kv_blocks_reusable(kv, s->hit, n_hit);
    bool adopt = (size_t)n_hit * kv->block_size > best_n;
    if (adopt) {
        best = -1;
        best_n = (size_t)n_hit * kv->block_size;
    }
    /* a sequence to run it in: the best one if it has ended, else an empty one, else
       the least recently used ended one */
    if (best >= 0 && s->seqs[best].state == SEQ_IDLE)
        slot = best;
    for (uint32_t i = 0; i < s->n_seq && slot < 0; i++)
        if (s->seqs[i].state == SEQ_EMPTY)
            slot = (int32_t)i;
    for (uint32_t i = 0; i < s->n_seq && (slot < 0 || s->seqs[slot].state != SEQ_EMPTY); i++)
        if (s->seqs[i].state == SEQ_IDLE && (int32_t)i != best &&
            (slot < 0 || (slot != best && s->seqs[i].last_used < s->seqs[slot].last_used)))
            slot = (int32_t)i;
    if (slot < 0)
        return pv_err_set(err, PV_ERR_OVERLOADED, "every sequence is busy");

    /* the last prompt token is always evaluated, so that its logits exist */
    keep = PV_MIN(best_n, n_prompt - 1);
    if (adopt) {
        kv_seq_adopt(kv, (uint32_t)slot, s->hit, n_hit);
    } else if (slot != best) {
        if (best >= 0 && keep > 0) {
            pv_context_seq_fork(s->ctx, best, slot, NULL);
            memcpy(s->seqs[slot].tokens, s->seqs[best].tokens, keep * sizeof(int32_t));
        } else {
            pv_context_seq_drop(s->ctx, slot);
            keep = 0;
        }
    }
    pv_context_seq_truncate(s->ctx, slot, (uint32_t)keep, NULL);

    /* the rest of the prompt must fit beside what running prompts still need */
    uint64_t need = kv_seq_blocks_needed(kv, (uint32_t)slot, (uint32_t)(n_prompt - keep)) +
                    (prefill_backlog(s) + kv->block_size - 1) / kv->block_size;
    while (kv->n_free < need && evict_one(s, slot))
        ;
    if (kv->n_free < need) {
        s->seqs[slot].state = SEQ_IDLE;
        s->seqs[slot].n_prompt = (uint32_t)keep;
        memcpy(s->seqs[slot].tokens, prompt, keep * sizeof(int32_t));
        return pv_err_set(err, PV_ERR_OVERLOADED, "the kv cache is full for now");
    }

    /* then the blocks after it that the disk cache holds */
    s->n_prompt_tokens += n_prompt;
    s->n_mem_hit += keep;
    if (s->ctx->disk) {
        size_t mem = keep;
        keep = dcache_extend(s->ctx->disk, kv, (uint32_t)slot, prompt, n_prompt - 1);
        s->n_mem_hit -= mem - PV_MIN(mem, keep);
        s->n_disk_hit += keep - PV_MIN(mem, keep);
    }

    struct sched_seq *q = &s->seqs[slot];
    kv->seqs[slot].pin = (uint32_t)n_prompt; /* a next turn most likely parts here */
    memcpy(q->tokens, prompt, n_prompt * sizeof(int32_t));
    q->n_prompt = (uint32_t)n_prompt;
    q->state = SEQ_PREFILL;
    q->pending = -1;
    q->client = *client;
    q->last_used = q->admitted = ++s->clock;
    *seq_out = slot;
    *n_cached = (uint32_t)keep;
    return PV_OK;
}

void pv_sched_cancel(struct pv_sched *s, int32_t seq, const void *user)
{
    if (seq < 0 || (uint32_t)seq >= s->n_seq || !running(&s->seqs[seq]) ||
        s->seqs[seq].client.user != user)
        return;
    struct sched_seq *q = &s->seqs[seq];
    /* what the cache holds stays for reuse; a prompt fed in part keeps its fed part */
    q->state = SEQ_IDLE;
    q->last_used = ++s->clock;
}

bool pv_sched_is_running(const struct pv_sched *s, int32_t seq, const void *user)
{
    return seq >= 0 && (uint32_t)seq < s->n_seq && running(&s->seqs[seq]) &&
           s->seqs[seq].client.user == user;
}

/* End a running sequence for the scheduler's own reason. */
static void end_seq(struct pv_sched *s, uint32_t i, enum pv_status st, const char *msg)
{
    struct sched_seq *q = &s->seqs[i];
    q->state = SEQ_IDLE;
    q->last_used = ++s->clock;
    if (q->client.ended)
        q->client.ended(q->client.user, st, msg);
}

/* Take the KV cache of running sequence v back to make room: what it holds (with the
 * token it was to feed next) becomes its prompt again, fed anew once blocks free up,
 * from the prefix cache as far as its published blocks are still there. Its client
 * sees nothing but a later next(). */
static void preempt(struct pv_sched *s, uint32_t v)
{
    struct sched_seq *q = &s->seqs[v];
    uint32_t len = pv_context_seq_len(s->ctx, (int32_t)v);
    if (q->state == SEQ_DECODE && len >= s->ctx->n_ctx) {
        end_seq(s, v, PV_ERR_CONTEXT, "the context is full");
        pv_context_seq_drop(s->ctx, (int32_t)v);
        return;
    }
    if (q->state == SEQ_DECODE) {
        q->tokens[len] = q->pending;
        q->n_prompt = len + 1;
        q->pending = -1;
    }
    q->state = SEQ_PREFILL;
    pv_context_seq_drop(s->ctx, (int32_t)v);
    s->n_preempted++;
}

/* The running sequence to preempt so that i can go on: the one admitted last among i
 * and those that hold blocks and have no token in the step yet. */
static uint32_t preempt_victim(const struct pv_sched *s, uint32_t i)
{
    uint32_t v = i;
    for (uint32_t k = 0; k < s->n_seq; k++) {
        const struct sched_seq *q = &s->seqs[k];
        if (running(q) && s->n_add[k] == 0 && pv_context_seq_len(s->ctx, (int32_t)k) > 0 &&
            q->admitted > s->seqs[v].admitted)
            v = k;
    }
    return v;
}

/* Before a resumed prompt is fed: the longest run of its blocks still cached. */
static void resume_from_cache(struct pv_sched *s, uint32_t i)
{
    struct sched_seq *q = &s->seqs[i];
    struct kv_cache *kv = &s->ctx->kv;
    if (pv_context_seq_len(s->ctx, (int32_t)i) != 0 || q->n_prompt < 2)
        return;
    uint32_t n_hit = kv_match_prefix(kv, q->tokens, q->n_prompt - 1, s->hit), n_revive = 0;
    for (uint32_t b = 0; b < n_hit; b++)
        n_revive += kv->refs[s->hit[b]] == 0;
    /* cached blocks taken off the free list must leave what the step planned so far */
    uint64_t planned = kv_batch_blocks_needed(kv, s->n_add);
    while (n_hit > 0 && planned + n_revive > kv->n_free)
        n_revive -= kv->refs[s->hit[--n_hit]] == 0;
    n_hit = kv_blocks_reusable(kv, s->hit, n_hit);
    if (n_hit)
        kv_seq_adopt(kv, i, s->hit, n_hit);
}

/* Blocks the step planned so far needs, after evicting ended sequences if it must. */
static bool step_fits(struct pv_sched *s)
{
    for (;;) {
        if (kv_batch_blocks_needed(&s->ctx->kv, s->n_add) <= s->ctx->kv.n_free)
            return true;
        if (!evict_one(s, -1))
            return false;
    }
}

static void add_token(struct pv_sched *s, uint32_t i, int32_t tok, bool logits)
{
    int32_t pos = (int32_t)(pv_context_seq_len(s->ctx, (int32_t)i) + s->n_add[i]);
    pv_batch_add(&s->batch, tok, pos, (int32_t)i, logits);
    s->n_add[i]++;
}

int pv_sched_step(struct pv_sched *s, struct pv_err *err)
{
    struct pv_context *ctx = s->ctx;
    uint32_t budget = s->step_tokens;

    pv_batch_clear(&s->batch);
    memset(s->n_add, 0, s->n_seq * sizeof(uint32_t));

    /* 1. the next token of every decoding sequence */
    for (uint32_t i = 0; i < s->n_seq && budget > 0; i++) {
        struct sched_seq *q = &s->seqs[i];
        if (q->state != SEQ_DECODE)
            continue;
        uint32_t len = pv_context_seq_len(ctx, (int32_t)i);
        if (len >= ctx->n_ctx) {
            end_seq(s, i, PV_ERR_CONTEXT, "the context is full");
            continue;
        }
        /* no room for its next position: the sequence admitted last gives its blocks
           back (this one, when it is the last) and waits to be fed again */
        s->n_add[i] = 1;
        bool fits;
        while (!(fits = step_fits(s))) {
            s->n_add[i] = 0;
            uint32_t v = preempt_victim(s, i);
            preempt(s, v);
            if (v == i)
                break;
            s->n_add[i] = 1;
        }
        s->n_add[i] = 0;
        if (!fits)
            continue;
        add_token(s, i, q->pending, true);
        q->tokens[len] = q->pending;
        budget--;
    }

    /* 2. prompt chunks, round robin from rr, while the budget, the step's time and the
       pool last */
    uint32_t n_prefill = 0, n_decode = (uint32_t)s->batch.n_tokens;
    for (uint32_t i = 0; i < s->n_seq; i++)
        n_prefill += s->seqs[i].state == SEQ_PREFILL;
    if (s->ns_per_token > 0 && n_prefill > 0) {
        double ns = n_decode > 0 || n_prefill > 1 ? STEP_NS_SHARED : STEP_NS_ALONE;
        double fit = ns / s->ns_per_token - n_decode;
        budget = PV_MIN(budget, fit > MIN_CHUNK ? (uint32_t)fit : MIN_CHUNK);
    }
    /* first the prompts that the budget finishes (a short request is not kept behind a
       long one), then chunks of the others */
    const uint32_t first = s->rr;
    for (uint32_t k = 0; k < 2 * s->n_seq && budget > 0; k++) {
        uint32_t i = (first + k) % s->n_seq;
        struct sched_seq *q = &s->seqs[i];
        if (q->state != SEQ_PREFILL || s->n_add[i] > 0)
            continue;
        resume_from_cache(s, i);
        uint32_t len = pv_context_seq_len(ctx, (int32_t)i);
        if (k < s->n_seq && q->n_prompt - len > budget)
            continue;
        uint32_t n = PV_MIN(budget, q->n_prompt - len);
        for (uint32_t want = n; n > 0;) {
            s->n_add[i] = n;
            if (step_fits(s))
                break;
            n = n > ctx->kv.block_size ? n - ctx->kv.block_size : n - 1;
            if (n == 0 && preempt_victim(s, i) != i) {
                /* not a single position: a prompt admitted later gives its blocks back */
                s->n_add[i] = 0;
                preempt(s, preempt_victim(s, i));
                n = want;
            }
        }
        s->n_add[i] = 0;
        for (uint32_t t = 0; t < n; t++)
            add_token(s, i, q->tokens[len + t], len + t + 1 == q->n_prompt);
        budget -= n;
        if (n > 0)
            s->rr = (i + 1) % s->n_seq;
    }
    if (s->batch.n_tokens == 0) {
        /* nothing could go on: the prompt admitted first does not fit the pool even with
           every later one's blocks given back, so it ends (the others try again) */
        int32_t oldest = -1;
        for (uint32_t i = 0; i < s->n_seq; i++)
            if (s->seqs[i].state == SEQ_PREFILL &&
                (oldest < 0 || s->seqs[i].admitted < s->seqs[oldest].admitted))
                oldest = (int32_t)i;
        if (oldest >= 0)
            end_seq(s, (uint32_t)oldest, PV_ERR_OVERLOADED,
                    "the kv cache is full (raise --kv-size)");
        return 0;
    }

    /* 3. one forward pass, then each sequence's logits to its client */
    uint64_t t0 = clock_now_ns();
    enum pv_status st = pv_context_decode(ctx, &s->batch, err);
    /* steps with fewer prompt tokens say little about the cost of a prompt chunk */
    if (st == PV_OK && (uint32_t)s->batch.n_tokens >= n_decode + MIN_CHUNK) {
        double per = (double)(clock_now_ns() - t0) / s->batch.n_tokens;
        s->ns_per_token = s->ns_per_token > 0 ? 0.6 * s->ns_per_token + 0.4 * per : per;
    }
    if (st != PV_OK) {
        /* a failed step is an error for its sequences, never "the context is full" (which
           clients see as a normal end at the length limit) */
        const enum pv_status fail = st == PV_ERR_CONTEXT ? PV_ERR_INTERNAL : st;
        for (uint32_t i = 0; i < s->n_seq; i++)
            if (s->n_add[i] && running(&s->seqs[i]))
                end_seq(s, i, fail, err ? err->msg : "evaluation failed");
        return -1;
    }
    for (int32_t t = 0; t < s->batch.n_tokens; t++) {
        if (!s->batch.logits[t])
            continue;
        uint32_t i = (uint32_t)s->batch.seq_id[t];
        struct sched_seq *q = &s->seqs[i];
        if (!running(q))
            continue;
        q->last_used = ++s->clock;
        int32_t next = q->client.next(q->client.user, pv_context_logits(ctx, t));
        if (next < 0 || (uint32_t)next >= ctx->n_vocab) {
            q->state = SEQ_IDLE;
            continue;
        }
        q->state = SEQ_DECODE;
        q->pending = next;
    }
    return s->batch.n_tokens;
}

void pv_sched_usage(const struct pv_sched *s, struct pv_sched_usage *out)
{
    struct pv_kv_usage u;
    pv_context_kv_usage(s->ctx, &u);
    out->kv_positions = (uint64_t)u.n_blocks * u.block_size;
    out->kv_positions_used = (uint64_t)u.n_blocks_used * u.block_size;
    out->n_running = pv_sched_n_running(s);
    out->n_preempted = s->n_preempted;
    out->kv_block = u.block_size;
    out->kv_positions_cached = (uint64_t)kv_blocks_cached(&s->ctx->kv) * u.block_size;
    out->kv_position_bytes = (uint64_t)s->ctx->kv.n_layer *
                             (s->ctx->kv.row_k_bytes + s->ctx->kv.row_v_bytes);
    out->prompt_tokens = s->n_prompt_tokens;
    out->mem_hit_tokens = s->n_mem_hit;
    out->disk_hit_tokens = s->n_disk_hit;
    struct dcache_stats d;
    dcache_stats(s->ctx->disk, &d);
    out->disk_enabled = s->ctx->disk != NULL;
    out->disk_ready = d.ready;
    out->disk_hits = d.hits;
    out->disk_misses = d.misses;
    out->disk_bytes_read = d.bytes_read;
    out->disk_bytes_written = d.bytes_written;
    out->disk_writes = d.writes;
    out->disk_evictions = d.evictions;
    out->disk_invalid = d.invalid;
    out->disk_dropped = d.dropped;
    out->disk_files = d.files;
    out->disk_bytes = d.bytes;
    out->disk_max_bytes = d.max_bytes;
}
