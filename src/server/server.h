/*
 * server.h - the HTTP API server: what `pensieve serve` runs.
 *
 * libmicrohttpd (one thread per connection) receives requests; server/ checks auth and
 * limits, validates the JSON body (jansson), hands generation to one engine thread per
 * model through a bounded queue, and writes Anthropic Messages / OpenAI Chat Completions
 * responses (JSON or SSE). This header is the module's face to cli/; everything else in
 * server/ is internal (http.h).
 */
#ifndef PV_SERVER_H
#define PV_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pensieve.h"

#define SERVER_MAX_ALIASES 16
#define SERVER_MAX_STOP 4

struct server_params {
    const char *model_path;     /* the default model's GGUF file, loaded at start */
    const char *models_dir;     /* folder whose .gguf files a request's `model` may name and
                                   load; NULL: only the default model */
    int max_loaded;             /* models loaded at once; 0 = no limit */
    uint64_t max_memory_bytes;  /* weights + KV pool + scratch of the loaded models together;
                                   0 = what the machine has available */
    long keep_alive_s;          /* seconds an idle model (not the default) stays loaded;
                                   0 = unloaded at once, < 0 = never */
    const char *host;           /* address to bind, "127.0.0.1" by default */
    int port;
    const char *api_key;        /* NULL or "": no auth */
    int n_ctx;                  /* tokens of context per slot; 0 = the model's, capped */
    int n_parallel;             /* requests generating at once */
    long kv_size;               /* KV cache positions shared by all; 0 = n_ctx per request
                                   where memory allows */
    int n_threads;              /* compute threads; 0 = all cores */
    enum pv_device device;      /* cpu, cuda or auto (the default) */
    bool swa_full;              /* sliding-window layers keep every position */
    const char *aliases[SERVER_MAX_ALIASES]; /* extra model names; with any set, only these
                                                and the model's own name are answered */
    int n_aliases;
    bool log_json;              /* access log and messages as JSON lines */
    size_t max_body_bytes;      /* request body limit -> 413 */
    size_t max_header_bytes;    /* total request header bytes -> 431 */
    int queue_len;              /* requests waiting for a slot before 529/503 */
    int conn_timeout_s;         /* idle seconds before a connection is closed */
    int read_timeout_s;         /* seconds to receive a whole request (head and body), from
                                   the connection's start or the previous reply's end */
    int grace_s;                /* seconds running requests get after SIGTERM */
    int max_tokens_limit;       /* max_tokens above this is rejected as absurd (400) */
    int max_connections;        /* simultaneous connections */
    int ping_interval_s;        /* SSE keep-alive while no tokens flow (long prefill) */
    const char *stop[SERVER_MAX_STOP]; /* stop sequences added to every request */
    int n_stop;
    const char *pid_file;       /* written at start, removed at exit; NULL = none */
    const char *cors_origin;    /* NULL: no CORS headers; "*" or a comma list of origins
                                   whose browser pages may call the API */
    const char *cache_dir;      /* the persistent prefix cache; NULL = none */
    unsigned long long cache_bytes; /* its size limit */
};

/* Defaults for every field (host 127.0.0.1, port 8080, 1 slot, limits as --help shows). */
void server_default_params(struct server_params *p);

/*
 * Load the model, listen, and serve until SIGINT or SIGTERM (then stop accepting, let
 * running requests finish within grace_s, and return PV_OK). Signals are handled here:
 * call from the main thread before any other thread exists. Returns an error (bind
 * failure, model load failure) with `err` filled.
 */
enum pv_status server_run(const struct server_params *p, struct pv_err *err);

#endif /* PV_SERVER_H */
