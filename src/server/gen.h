/*
 * gen.h - the engine thread of the server and the per-request token channel.
 *
 * One engine thread per model drives the engine's scheduler, which runs the queued jobs
 * together (one batched forward pass per step: decode tokens and prompt chunks). Each job is a
 * channel: the engine appends sampled tokens under the job's mutex and signals; the
 * connection thread waits on it, turns tokens into API events, and may cancel (client
 * gone, stop sequence seen). A cancelled job is dropped at the next step and its slot is
 * free again. The queue of waiting jobs is bounded: gen_submit answers PV_ERR_OVERLOADED.
 */
#ifndef PV_SERVER_GEN_H
#define PV_SERVER_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pensieve.h"

struct http_server;
struct http_engine;
struct gen_job;
struct pv_model;

/*
 * Constrained decoding (a grammar from the chat layer): before each sample the engine
 * thread calls mask() on a copy of the logits (set disallowed ids to -INFINITY), and
 * accept() with the chosen token. Owned by the job once submitted (release() frees).
 */
struct gen_constraint {
    void *state;
    void (*mask)(void *state, float *logits, size_t n_vocab);
    void (*accept)(void *state, int32_t token);
    void (*release)(void *state);
};

#define GEN_MAX_TOP_LOGPROBS 20

/* Log-probability of a generated token under the model (log-softmax of its raw logits,
 * before sampling settings or a grammar) and its most likely alternatives. */
struct gen_logprob {
    float logprob;
    int n_top;                           /* entries of top_* in use */
    int32_t top_id[GEN_MAX_TOP_LOGPROBS]; /* most likely first */
    float top_logprob[GEN_MAX_TOP_LOGPROBS];
};

struct gen_params {
    const int32_t *prompt;       /* copied by gen_submit */
    size_t n_prompt;
    int max_tokens;              /* >= 1 and n_prompt + max_tokens <= n_ctx */
    float temperature;           /* < 0: the sampler's default */
    float top_p;                 /* < 0: default */
    int top_k;                   /* < 0: default */
    uint64_t seed;               /* PV_SEED_RANDOM for random */
    struct gen_constraint constraint; /* mask NULL: none */
    int n_logprobs;              /* < 0: none; else record gen_logprob for each token with
                                    this many alternatives (<= GEN_MAX_TOP_LOGPROBS) */
};

/* What the engine tells a waiting request. */
struct gen_progress {
    size_t n_tokens;             /* tokens generated so far */
    size_t n_prefilled;          /* prompt tokens in the cache so far */
    size_t n_cached;             /* of those, found in the cache (not evaluated) */
    bool done;                   /* no more tokens will come */
    bool eog;                    /* ended on an end-of-generation token (not counted) */
    bool length;                 /* ended because max_tokens was reached */
    enum pv_status status;       /* PV_OK, or why it failed */
    char msg[PV_ERR_MSG_MAX];
    uint64_t t_first_ns;         /* monotonic time of the first token, 0 before */
};

struct gen_usage {
    uint64_t kv_used, kv_capacity;
    uint64_t kv_preempted;       /* requests that gave their KV blocks back to go on later */
    int slots_busy, queued;
};

/* Load the model of srv->p and start the engine thread. *out owned by the caller. */
enum pv_status gen_engine_new(struct http_server *srv, struct http_engine **out,
                              struct pv_err *err);
/* End every job with an error ("server is shutting down") and stop the thread. */
void gen_engine_shutdown(struct http_engine *e);
void gen_engine_free(struct http_engine *e);
/* Context positions of one slot (what a prompt plus its output must fit in). */
int gen_engine_n_ctx(const struct http_engine *e);
/* The loaded model (valid for the engine's lifetime; read-only use by any thread). */
struct pv_model *gen_engine_model(const struct http_engine *e);
/* The model's vocabulary (immutable; any thread). */
const struct pv_vocab *gen_engine_vocab(const struct http_engine *e);
void gen_engine_usage(const struct http_engine *e, struct gen_usage *out);

/*
 * Queue a job. *out is shared by the engine and the caller, who must gen_release it.
 * The constraint of gp is taken over in every case (released on failure too).
 * PV_ERR_OVERLOADED when the queue is full, PV_ERR_CONTEXT when prompt + max_tokens
 * does not fit a slot, PV_ERR_INVALID when the engine is stopping.
 */
enum pv_status gen_submit(struct http_engine *e, const struct gen_params *gp,
                          struct gen_job **out, struct pv_err *err);
/*
 * Wait up to timeout_ms until there are tokens beyond `from` or the job is done; copy at
 * most `cap` of the new tokens into `out` (*n_out of them) and the progress into *prog.
 */
void gen_wait(struct gen_job *j, size_t from, int timeout_ms, int32_t *out, size_t cap,
              size_t *n_out, struct gen_progress *prog);
/* Copy the log-probabilities of tokens [from, from + n) (already returned by gen_wait) into
 * out[n]; zeroed when the job was submitted without n_logprobs >= 0. */
void gen_logprobs(struct gen_job *j, size_t from, size_t n, struct gen_logprob *out);
/* Ask the engine to stop the job at its next step (idempotent, any thread). */
void gen_cancel(struct gen_job *j);
/* Drop the caller's reference (cancels the job if it is still running). */
void gen_release(struct gen_job *j);

#endif /* PV_SERVER_GEN_H */
