/*
 * registry.h - the models of one server, loaded on demand (server-internal).
 *
 * A request's `model` names a file of the model directory (catalogue name, file name or
 * file stem, as `pensieve models` lists them); a name that matches none, or no name, is
 * the server's default model (-m, loaded at start): Claude Code's "claude-sonnet-..."
 * names land there. A model is loaded when a request first needs it, within a budget
 * (--max-loaded models, --max-memory bytes of weights + KV pool + scratch, or else what
 * the machine has free): a load that does not fit unloads the least recently used idle
 * model first. Each loaded model has its own engine thread, chat template and grammar
 * token table. A request holds a reference from acquire to release, so a model with
 * requests in flight stays loaded; an idle model is unloaded --keep-alive seconds after
 * its last request (0: at once; negative: never). The default model is not unloaded for
 * idleness, only to make room for another.
 */
#ifndef PV_SERVER_REGISTRY_H
#define PV_SERVER_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "pensieve.h"

struct http_server;
struct http_engine;
struct chat_template;
struct chat_token_table;
struct registry;

/* A loaded model; read-only for its users while they hold a reference. */
struct reg_model {
    char name[128];              /* file stem: the id /v1/models and /health show */
    char path[4096];
    struct http_engine *engine;  /* its engine thread and scheduler, owned */
    struct chat_template *tmpl;  /* its chat template, parsed once, owned */
    struct chat_token_table *tok_table; /* vocabulary pieces for grammars, owned */
    uint64_t mem_bytes;          /* its charge on the budget: weights + KV pool + scratch */
    bool is_default;
};

/* What /health and /v1/models say about one model. */
struct reg_info {
    char name[128];
    bool loaded;
    bool is_default;
    int in_use;                  /* requests holding it */
    uint64_t mem_bytes;          /* 0 when not loaded */
    double idle_s;               /* since its last request ended (0 while in use) */
    double expires_in_s;         /* until keep-alive unloads it; < 0: never */
    int n_ctx;                   /* loaded: context positions of one request */
    uint64_t kv_used, kv_capacity; /* loaded: KV pool positions */
    uint64_t kv_preempted;       /* loaded: requests that gave their KV blocks back */
    int slots_busy, queued;      /* loaded: requests generating, waiting */
    struct pv_sched_usage sched; /* loaded: its scheduler, prefix caches included */
};

/* Load the default model (srv->p.model_path) and start the keep-alive thread. */
enum pv_status registry_new(struct http_server *srv, struct registry **out, struct pv_err *err);
/* End every model's jobs ("server is shutting down") and stop their engine threads. */
void registry_shutdown(struct registry *reg);
/* Unload every model and free the registry (after registry_shutdown). */
void registry_free(struct registry *reg);

/*
 * The loaded model for a request's `name` (NULL or "" for the default), loading it when
 * needed (the caller's thread waits; other requests go on). *out is held until
 * registry_release. Errors are API errors: PV_ERR_OVERLOADED when the budget is taken
 * by models with requests in flight, PV_ERR_NOMEM when the model can never fit it, the
 * load's error for a file that does not load.
 */
enum pv_status registry_acquire(struct registry *reg, const char *name, struct reg_model **out,
                                struct pv_err *err);
void registry_release(struct registry *reg, struct reg_model *m);

/* The default model, always loaded while the server runs (borrowed). */
const char *registry_default_name(const struct registry *reg);
/* True when `name` picks an installed model by itself (not by falling back to the default). */
bool registry_knows(const struct registry *reg, const char *name);

/*
 * The default model, then every other .gguf file of the model directory, sorted by name,
 * each saying whether it is loaded (loaded_only: only the loaded ones). Returns the
 * count; *out is heap-allocated, the caller frees it.
 */
size_t registry_list(struct registry *reg, bool loaded_only, struct reg_info **out);
/* The prefix caches of the loaded models together: counters summed; the disk cache
 * directory's figures (shared by every model and process) as the largest one reports;
 * *mem_bytes the KV bytes in use or holding a cached prefix, all models. */
void registry_cache_usage(struct registry *reg, struct pv_sched_usage *out, uint64_t *mem_bytes);

#endif /* PV_SERVER_REGISTRY_H */
