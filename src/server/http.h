/*
 * http.h - internal interface of the server module (not for other modules).
 *
 * http.c owns libmicrohttpd: auth, limits, CORS, request ids, replies and the access
 * log. routes.c is the route table: each row names the handler of one endpoint. Endpoint
 * files (api_*.c, info.c, web.c) receive a `struct http_req` with the parsed body and
 * answer it through http_reply_*; stats.c keeps the numbers /health and /metrics show;
 * gen.c is the engine thread and the per-request token channel.
 *
 * Limits (each a `pensieve serve` flag; defaults in server_default_params):
 *   body bytes -> 413; total header bytes -> 431; idle connection seconds -> closed;
 *   seconds to receive a whole request (a deadline) -> closed; connections -> the one idle
 *   longest is closed for a newcomer (refused when every one is busy);
 *   POST without a JSON content type -> 415; Host not naming this machine (loopback
 *   bind) -> 403;
 *   waiting requests -> 529 (Anthropic) / 503 (OpenAI); max_tokens above the absurd
 *   ceiling -> 400; prompt longer than the context -> 400 "prompt is too long".
 */
#ifndef PV_SERVER_HTTP_H
#define PV_SERVER_HTTP_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/server.h"
#include "util/util.h"

struct MHD_Connection;
struct http_server;
struct http_engine;
struct registry;
struct reg_model;

/* Which API's error envelope and overload status a request uses. */
enum http_api { HTTP_API_ANTHROPIC, HTTP_API_OPENAI, HTTP_API_PLAIN };

#define HTTP_ID_LEN 72

/* One HTTP request, from its first header to the completion callback. */
struct http_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    char id[HTTP_ID_LEN];        /* "req_" + 24 base62 characters, or the X-Request-Id sent */
    char method[8];
    char path[256];              /* without the query string; truncated paths 404 */
    char endpoint[48];           /* metrics label: "/v1/messages", "other" */
    enum http_api api;
    struct pv_buf body;          /* request body, at most max_body_bytes */
    bool body_too_large;
    bool handled;                /* a response has been queued */
    bool streaming;              /* the reply is an SSE stream */
    bool probed;                 /* an interim 100 was written to test a half-closed peer */
    bool peer_fin;               /* the client shut down its sending side (or closed) */
    bool http11;                 /* not HTTP/1.0: interim 1xx answers are allowed */
    int status;                  /* HTTP status sent */
    uint64_t t_start_ns;
    /* filled by endpoints for the access log */
    char model[128];
    char reason[256];            /* an error reply's message (the 4xx line says why) */
    int n_prompt, n_output;
    double ttft_ms;              /* < 0: not applicable */
    int n_tools;                 /* tool definitions the request carried */
    long system_bytes;           /* bytes of system prompt text (system + system messages) */
    json_t *json;                /* parsed body, owned */
    struct reg_model *lm;        /* the model serving it, held by its generation (api_gen.c);
                                    NULL before and after */
    const char *path_arg;        /* the {id} part of the route's path, in `path`, or NULL */
};

/* One open connection (libmicrohttpd's socket context): while `reading`, it has not
 * delivered a complete request since `t_read_ns` (its start or its last reply's end). */
struct http_conn {
    struct http_conn *prev, *next; /* the server's list, under conns_mu */
    int fd;
    bool reading;
    bool closing;                  /* shut down by the watchdog or for a newcomer */
    uint64_t t_read_ns;
};

/* The server: parameters, its models, stats. */
struct http_server {
    struct server_params p;
    struct registry *reg;        /* the loaded models (registry.h); NULL until started */
    char model_name[128];        /* the default model's id */
    uint64_t t_start_ns;
    double created_unix;         /* when the server started, for model listings */
    atomic_bool draining;        /* SIGTERM received: new requests are refused */
    atomic_int active;           /* requests being handled */
    /* open connections, oldest first: the read deadline and eviction when all are taken */
    pthread_mutex_t conns_mu;
    pthread_cond_t conns_cv;     /* wakes the watchdog at shutdown */
    struct http_conn *conns_head, *conns_tail;
    int n_conns;
    bool conns_stop;
};

/* ---- replies (http.c) ----------------------------------------------------------------- */

/* Queue a JSON reply (takes ownership of `body`, which may be NULL for an empty one). */
void http_reply_json(struct http_req *r, int status, json_t *body);
/* Queue a reply with a fixed text body and content type. */
void http_reply_text(struct http_req *r, int status, const char *content_type, const char *text);
/*
 * Queue an error in the request's API envelope: status and type from `s` (OpenAI
 * overload answers 503), message `msg`. `param` names the offending field for OpenAI.
 */
void http_reply_error(struct http_req *r, enum pv_status s, const char *param, const char *msg);
void http_reply_errorf(struct http_req *r, enum pv_status s, const char *param, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

/*
 * A streamed (SSE) reply. The connection thread calls `produce` whenever it has sent
 * everything produced so far; produce appends bytes to `out` (blocking as long as it
 * likes, e.g. waiting for tokens) and returns true while more will follow, false when
 * the stream is complete. `hangup` tells produce whether the client went away.
 */
struct http_stream {
    struct http_req *req;
    bool (*produce)(struct http_stream *s, struct pv_buf *out);
    void (*release)(struct http_stream *s); /* frees state; called once */
    void *state;
};
/* Queue a text/event-stream reply driven by `s` (heap-allocated; the reply owns it). */
void http_reply_stream(struct http_req *r, struct http_stream *s);
/* Set the idle timeout of r's connection in seconds (0: none). --timeout guards reading
 * the request; while a reply is generated, silence is the server's, not the client's. */
void http_set_idle_timeout(struct http_req *r, unsigned seconds);
/* True when the client of `r` is gone (reset, or closed both ways); a client that only
 * half-closed after its request is still there and gets its answer. Sets r->peer_fin when
 * the client's FIN was seen: a stream then writes a ping soon, whose reset tells a
 * closed client from a half-closed one. */
bool http_client_gone(struct http_req *r);

/* ---- small helpers (http.c) ------------------------------------------------------------ */

/* Random base62 id with a prefix: "msg_", "toolu_", "chatcmpl-". */
void http_make_id(char *out, size_t cap, const char *prefix, int n_random);
/* Header value of the request or NULL. */
const char *http_header(struct http_req *r, const char *name);
/* The model name a request asked for answered? Always, unless --alias makes the server
 * strict: then only the aliases and the installed models' names. */
bool http_model_allowed(const struct http_server *srv, const char *name);

/* ---- routes (routes.c) ----------------------------------------------------------------- */

#define HTTP_ROUTE_BODY 0x1u          /* the handler gets the body as a JSON object (r->json) */
#define HTTP_ROUTE_PUBLIC 0x2u        /* answered without the API key (health checks) */
#define HTTP_ROUTE_API_BY_CLIENT 0x4u /* error envelope by the client: Anthropic SDK or OpenAI */

/* One endpoint: a row of the route table. */
struct http_route {
    const char *path;            /* exact, or ending in "{id}" (the rest of the path) */
    const char *method;          /* the one allowed besides HEAD and OPTIONS */
    enum http_api api;           /* error envelope and overload status */
    unsigned flags;              /* HTTP_ROUTE_* */
    void (*handle)(struct http_req *r);
};

/* The route of a path (also an API path without its /v1 prefix); *arg gets the {id} part. */
const struct http_route *http_route_find(const char *path, const char **arg);

/* ---- endpoints ------------------------------------------------------------------------- */

/* GET /: the web chat page (web.c). */
void http_handle_web(struct http_req *r);

void http_handle_health(struct http_req *r);
void http_handle_metrics(struct http_req *r);
void http_handle_models(struct http_req *r, const char *id); /* id NULL: the list */
void http_handle_messages(struct http_req *r);
void http_handle_count_tokens(struct http_req *r);
void http_handle_chat(struct http_req *r);
void http_handle_completions(struct http_req *r);

/* ---- stats (stats.c) ------------------------------------------------------------------- */

void http_stats_init(void);
/* Record a finished request. ttft_ms < 0 when it produced no tokens. */
void http_stats_request(const char *endpoint, int status, int n_prompt, int n_output,
                        double ttft_ms, double duration_ms);
/* Record one inter-token gap of a generation. */
void http_stats_itl(double ms);
void http_stats_queue(int depth);
/* Append the Prometheus exposition to `b`. */
void http_stats_metrics(struct pv_buf *b, const struct http_server *srv);
/* Fill the statistics part of /health into `obj`. */
void http_stats_health(json_t *obj, const struct http_server *srv);
/* Resident memory of this process in bytes (0 when unknown). */
uint64_t http_rss_bytes(void);

#endif /* PV_SERVER_HTTP_H */
