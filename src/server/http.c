/*
 * http.c - the libmicrohttpd glue: daemon, routing, auth, limits, replies, access log.
 *
 * One thread per connection, so a handler may block while its generation runs and a
 * stream's producer may wait for tokens without spinning. Every request gets a
 * `request-id`; errors carry the envelope of the API the path belongs to. Auth and the
 * header limit are checked on the first callback, before any body byte is read; the body
 * is counted as it arrives. server_run() owns the process lifecycle: signals, pid file,
 * drain on SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/gen.h"
#include "server/http.h"
#include "server/prompt.h"

/* Request state shared by the connection thread and a stream reply: freed at zero. */
struct req_box {
    struct http_req r;
    atomic_int refs;
};

/* A streamed reply: bytes produced but not yet handed to MHD. */
struct stream_ctx {
    struct http_stream *s;
    struct req_box *box;
    struct pv_buf pending;
    size_t off;
    bool finished;
};

/* ---- ids ------------------------------------------------------------------------------ */

void http_make_id(char *out, size_t cap, const char *prefix, int n_random)
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char rnd[64];
    size_t n = strlen(prefix);
    PV_ASSERT(n_random > 0 && (size_t)n_random <= sizeof(rnd) && n + (size_t)n_random < cap);
    if (getrandom(rnd, (size_t)n_random, 0) != n_random) {
        /* getrandom on Linux does not fail for <= 256 bytes once seeded; fall back anyway */
        uint64_t x = clock_now_ns() ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < n_random; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            rnd[i] = (unsigned char)(x >> 33);
        }
    }
    memcpy(out, prefix, n);
    for (int i = 0; i < n_random; i++)
        out[n + (size_t)i] = b62[rnd[i] % 62];
    out[n + (size_t)n_random] = '\0';
}

/* ---- small helpers ---------------------------------------------------------------------- */

const char *http_header(struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static bool name_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

bool http_model_allowed(const struct http_server *srv, const char *name)
{
    if (srv->p.n_aliases == 0)
        return true;
    if (name_eq(name, srv->model_name))
        return true;
    for (int i = 0; i < srv->p.n_aliases; i++)
        if (name_eq(name, srv->p.aliases[i]))
            return true;
    return false;
}

/* Constant-time equality of a candidate with the key: the loop always runs over the
 * whole key and never exits early, so timing does not reveal the matching prefix. */
static bool key_equal(const char *key, const char *cand)
{
    size_t kn = strlen(key), cn = strlen(cand);
    volatile unsigned char acc = (unsigned char)(kn != cn);
    for (size_t i = 0; i < kn; i++) {
        unsigned char c = cn ? (unsigned char)cand[i % cn] : 0;
        acc |= (unsigned char)(c ^ (unsigned char)key[i]);
    }
    return acc == 0;
}

void http_set_idle_timeout(struct http_req *r, unsigned seconds)
{
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

/*
 * A peer's FIN alone (POLLRDHUP) does not mean it is gone: a client that half-closes
 * after sending its request (shutdown(SHUT_WR), `nc -N`, some proxies) still reads the
 * answer. Gone means reset or closed both ways (POLLHUP/POLLERR). A closed socket answers
 * data with a reset, so after a FIN on a reply that has sent nothing yet, one interim
 * "100 Continue" (which HTTP/1.1 clients must skip) is written to find out; a streamed
 * reply writes events or pings anyway.
 */
bool http_client_gone(struct http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
        return true;
    if (pfd.revents & POLLRDHUP)
        r->peer_fin = true;
    /* HTTP/1.0 clients must not get a 1xx: for them a FIN still means gone */
    if ((pfd.revents & POLLRDHUP) && !r->http11)
        return true;
    if ((pfd.revents & POLLRDHUP) && !r->streaming && !r->probed) {
        static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
        r->probed = true;
        if (send(ci->connect_fd, probe, sizeof(probe) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
            errno != EAGAIN && errno != EWOULDBLOCK)
            return true;
    }
    return false;
}

/* ---- replies ---------------------------------------------------------------------------- */

/* The request's Origin when --cors-origin allows it ("*" or one of its comma list). */
static const char *cors_allowed(struct http_req *r)
{
    const char *allow = r->srv->p.cors_origin;
    const char *origin = http_header(r, "origin");
    if (!allow || !*allow || !origin)
        return NULL;
    const size_t n = strlen(origin);
    for (const char *p = allow; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const size_t len = strcspn(p, ",");
        size_t tl = len;
        while (tl && p[tl - 1] == ' ')
            tl--;
        if ((tl == 1 && *p == '*') || (tl == n && tl && strncmp(p, origin, n) == 0))
            return origin;
        p += len;
    }
    return NULL;
}

static void add_common_headers(struct http_req *r, struct MHD_Response *resp)
{
    const char *origin = cors_allowed(r);
    if (origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "request-id, x-request-id");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
        if (strcmp(r->method, "OPTIONS") == 0) {
            /* preflight: the methods of the route and whatever headers the page asks for */
            const char *hdrs = http_header(r, "access-control-request-headers");
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, HEAD, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    hdrs ? hdrs : "content-type, authorization, x-api-key, "
                                                  "anthropic-version, anthropic-beta");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        }
    }
    MHD_add_response_header(resp, "request-id", r->id);
    if (r->api == HTTP_API_OPENAI)
        MHD_add_response_header(resp, "x-request-id", r->id);
    if (atomic_load(&r->srv->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
}

static void queue(struct http_req *r, int status, struct MHD_Response *resp)
{
    if (!resp) {
        log_error("request %s: cannot create a response", r->id);
        return;
    }
    add_common_headers(r, resp);
    if (MHD_queue_response(r->conn, (unsigned)status, resp) == MHD_YES) {
        r->handled = true;
        r->status = status;
    } else {
        log_error("request %s: cannot queue a %d response", r->id, status);
    }
    MHD_destroy_response(resp);
}

void http_reply_text(struct http_req *r, int status, const char *content_type, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (resp && content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    queue(r, status, resp);
}

void http_reply_json(struct http_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (body && !text) {
        text = NULL;
        status = 500;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        text ? strlen(text) : 0, text ? text : (void *)"", text ? MHD_RESPMEM_MUST_FREE
                                                                : MHD_RESPMEM_PERSISTENT);
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    else
        free(text);
    queue(r, status, resp);
}

static void reply_error_status(struct http_req *r, int status, enum pv_status s,
                               const char *param, const char *msg)
{
    json_t *o;
    if (r->api == HTTP_API_OPENAI) {
        const char *code = s == PV_ERR_CONTEXT ? "context_length_exceeded" : NULL;
        o = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type",
                      pv_status_openai_type(s), "param", param, "code", code);
    } else {
        o = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type",
                      pv_status_anthropic_type(s), "message", msg, "request_id", r->id);
    }
    http_reply_json(r, status, o);
}

void http_reply_error(struct http_req *r, enum pv_status s, const char *param, const char *msg)
{
    int status = pv_status_http(s);
    if (s == PV_ERR_OVERLOADED && r->api == HTTP_API_OPENAI)
        status = 503;
    reply_error_status(r, status, s, param, msg);
}

void http_reply_errorf(struct http_req *r, enum pv_status s, const char *param, const char *fmt,
                       ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_reply_error(r, s, param, msg);
}

static void box_unref(struct req_box *box)
{
    if (atomic_fetch_sub(&box->refs, 1) != 1)
        return;
    json_decref(box->r.json);
    buf_release(&box->r.body);
    free(box);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct stream_ctx *c = cls;
    PV_UNUSED(pos);
    while (c->off >= c->pending.len) {
        if (c->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        buf_reset(&c->pending);
        c->off = 0;
        if (!c->s->produce(c->s, &c->pending))
            c->finished = true;
        if (c->finished && c->pending.len == 0 && http_client_gone(&c->box->r))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = PV_MIN(max, c->pending.len - c->off);
    memcpy(out, c->pending.data + c->off, n);
    c->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream_ctx *c = cls;
    if (c->s->release)
        c->s->release(c->s);
    free(c->s);
    buf_release(&c->pending);
    box_unref(c->box);
    free(c);
}

void http_reply_stream(struct http_req *r, struct http_stream *s)
{
    struct req_box *box = (struct req_box *)r; /* r is the first member of its box */
    struct stream_ctx *c = xcalloc(1, sizeof(*c));
    r->streaming = true;
    c->s = s;
    c->box = box;
    buf_init(&c->pending);
    atomic_fetch_add(&box->refs, 1);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, c, stream_free);
    if (!resp) {
        stream_free(c);
        http_reply_error(r, PV_ERR_NOMEM, NULL, "cannot create a streaming response");
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    queue(r, 200, resp);
}

/* ---- access log --------------------------------------------------------------------------- */

/* Request-controlled text for the text log: control bytes, quotes, backslashes and
 * non-ASCII bytes as \xNN, so no value can end a line or forge a field. */
static const char *log_escape(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && w + 5 < cap; p++) {
        if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' || *p == ' ') {
            out[w++] = '\\';
            out[w++] = 'x';
            out[w++] = hex[*p >> 4];
            out[w++] = hex[*p & 15];
        } else {
            out[w++] = (char)*p;
        }
    }
    out[w] = '\0';
    return out;
}

static void access_log(struct http_req *r)
{
    const double dur_ms = (double)(clock_now_ns() - r->t_start_ns) / 1e6;
    double tps = 0;
    if (r->n_output > 0 && r->ttft_ms >= 0 && dur_ms > r->ttft_ms)
        tps = r->n_output > 1 ? (r->n_output - 1) / ((dur_ms - r->ttft_ms) / 1e3) : 0;
    http_stats_request(r->endpoint, r->status, r->n_prompt, r->n_output, r->ttft_ms, dur_ms);
    if (log_is_json()) {
        char when[40];
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
        /* JSON strings must be UTF-8: a path that is not is logged escaped */
        char path[4 * sizeof(r->path) + 1];
        json_t *valid = json_string(r->path);
        if (valid)
            snprintf(path, sizeof(path), "%s", r->path);
        else
            log_escape(r->path, path, sizeof(path));
        json_decref(valid);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:f, "
                              "s:f, s:i, s:I}",
                              "time", when, "level", "info", "event", "request", "id", r->id, "method",
                              r->method, "endpoint", path, "model", r->model, "status",
                              r->status, "prompt_tokens", r->n_prompt, "output_tokens",
                              r->n_output, "ttft_ms", r->ttft_ms < 0 ? 0.0 : r->ttft_ms,
                              "tokens_per_s", tps, "duration_ms", dur_ms, "tools", r->n_tools,
                              "system_bytes", (json_int_t)r->system_bytes);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line)
            log_raw_line(line);
        free(line);
        json_decref(o);
    } else {
        char method[4 * sizeof(r->method) + 1], path[4 * sizeof(r->path) + 1],
            model[4 * sizeof(r->model) + 1];
        log_info("request %s %s %s model=%s status=%d prompt_tokens=%d output_tokens=%d "
                 "ttft_ms=%.1f tok_s=%.1f duration_ms=%.1f tools=%d system_bytes=%ld",
                 r->id, log_escape(r->method, method, sizeof(method)),
                 log_escape(r->path, path, sizeof(path)),
                 r->model[0] ? log_escape(r->model, model, sizeof(model)) : "-", r->status,
                 r->n_prompt, r->n_output, r->ttft_ms < 0 ? 0.0 : r->ttft_ms, tps, dur_ms,
                 r->n_tools, r->system_bytes);
    }
}

/* ---- routing ------------------------------------------------------------------------------ */

/* Models answer in the Anthropic shape when the client looks like an Anthropic SDK. */
static enum http_api models_api(struct http_req *r)
{
    return http_header(r, "anthropic-version") || http_header(r, "x-api-key")
               ? HTTP_API_ANTHROPIC
               : HTTP_API_OPENAI;
}

struct header_tally {
    size_t bytes;
    int n_host;
    int n_content_type;
    int n_content_length;
    bool transfer_encoding;
};

static enum MHD_Result tally_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct header_tally *t = cls;
    PV_UNUSED(kind);
    t->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (strcasecmp(key, "content-length") == 0)
        t->n_content_length++;
    if (strcasecmp(key, "host") == 0)
        t->n_host++;
    if (strcasecmp(key, "content-type") == 0)
        t->n_content_type++;
    if (strcasecmp(key, "transfer-encoding") == 0)
        t->transfer_encoding = true;
    return MHD_YES;
}

/* A port after a host name: ":" and 1 to 5 digits, or nothing. */
static bool port_ok(const char *s)
{
    if (*s == '\0')
        return true;
    if (*s++ != ':')
        return false;
    size_t n = strspn(s, "0123456789");
    return n >= 1 && n <= 5 && s[n] == '\0';
}

/* Exactly a name of this machine: localhost, an IPv4 literal in 127/8, or [::1], each
 * with an optional port. "127.evil.example" and "[::1]junk" are not. */
static bool is_loopback_host(const char *host)
{
    char name[64];
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        size_t n = end ? (size_t)(end - host - 1) : sizeof(name);
        struct in6_addr a6;
        if (n >= sizeof(name) || !port_ok(end + 1))
            return false;
        memcpy(name, host + 1, n);
        name[n] = '\0';
        return inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
    size_t n = strcspn(host, ":");
    if (n >= sizeof(name) || !port_ok(host + n))
        return false;
    memcpy(name, host, n);
    name[n] = '\0';
    if (strcasecmp(name, "localhost") == 0)
        return true;
    struct in_addr a4;
    return inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* Host header check against DNS rebinding when bound to loopback: a browser that was
 * sent here by a rebinding name still says that name in Host. Accept only names of this
 * machine, and only one Host header. */
static bool host_header_ok(struct http_req *r, int n_host)
{
    char bound[80];
    const char *b = r->srv->p.host;
    if (n_host > 1)
        return false;
    /* the bound address as a Host value ("::1" is written "[::1]") */
    snprintf(bound, sizeof(bound), strchr(b, ':') && b[0] != '[' ? "[%s]" : "%s", b);
    if (!is_loopback_host(bound))
        return true;
    const char *h = http_header(r, "host");
    return !h || is_loopback_host(h);
}

/* POST bodies must say they are JSON: a web page can send text/plain, form and
 * multipart bodies (or none) to any address without asking (no CORS preflight), but
 * not application/json. */
static bool content_type_ok(struct http_req *r, int n_content_type)
{
    const char *ct = http_header(r, "content-type");
    if (!ct || n_content_type != 1)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    /* application/<something>+json (e.g. vnd.api+json) */
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static bool authorized(struct http_req *r)
{
    const char *key = r->srv->p.api_key;
    if (!key || !*key)
        return true;
    const char *x = http_header(r, "x-api-key");
    const char *auth = http_header(r, "authorization");
    bool ok = false;
    if (x && key_equal(key, x))
        ok = true;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *tok = auth + 7;
        while (*tok == ' ')
            tok++;
        if (key_equal(key, tok))
            ok = true;
    }
    return ok;
}

/* Checks made on the first callback, before the body: framing, size, auth, route. Queues
 * an error and returns false when the request must not go further. */
static bool precheck(struct http_req *r, const struct http_route *rt, unsigned long long clen,
                     bool has_clen)
{
    struct header_tally t = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, tally_header, &t);
    if (t.bytes > r->srv->p.max_header_bytes) {
        reply_error_status(r, 431, PV_ERR_TOO_LARGE, NULL, "request headers are too large");
        return false;
    }
    if (t.n_content_length > 1 || (t.n_content_length && t.transfer_encoding)) {
        http_reply_error(r, PV_ERR_INVALID, NULL,
                         "ambiguous request framing: conflicting content-length");
        return false;
    }
    if (!host_header_ok(r, t.n_host)) {
        http_reply_error(r, PV_ERR_PERMISSION, NULL,
                         "host header does not name this machine (server bound to loopback)");
        return false;
    }
    const bool is_head = strcmp(r->method, "HEAD") == 0;
    const bool exempt = is_head || (rt && (rt->flags & HTTP_ROUTE_PUBLIC)) ||
                        strcmp(r->method, "OPTIONS") == 0;
    if (!exempt && !authorized(r)) {
        const bool given = http_header(r, "x-api-key") || http_header(r, "authorization");
        http_reply_error(r, PV_ERR_AUTH, NULL,
                         given ? "invalid x-api-key" : "x-api-key header is required");
        return false;
    }
    if (!rt) {
        http_reply_errorf(r, PV_ERR_NOT_FOUND, NULL, "not found: %s %s", r->method, r->path);
        return false;
    }
    if (strcmp(r->method, "OPTIONS") == 0) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (resp) {
            char allow[64];
            snprintf(allow, sizeof(allow), "%s, HEAD, OPTIONS", rt->method);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        }
        queue(r, 204, resp);
        return false;
    }
    if (!is_head && strcmp(r->method, rt->method) != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "method %s is not allowed on %s (use %s)", r->method,
                 rt->path, rt->method);
        reply_error_status(r, 405, PV_ERR_INVALID, NULL, msg);
        return false;
    }
    if (strcmp(r->method, "POST") == 0 && !content_type_ok(r, t.n_content_type)) {
        const char *ct = http_header(r, "content-type");
        char cut[65], shown[4 * sizeof(cut) + 1], msg[400];
        snprintf(cut, sizeof(cut), "%s", ct ? ct : "");
        if (t.n_content_type > 1)
            snprintf(msg, sizeof(msg), "content-type must be given once, as application/json");
        else if (!ct)
            snprintf(msg, sizeof(msg), "content-type header is required: application/json");
        else
            snprintf(msg, sizeof(msg), "content-type must be application/json, not '%s'",
                     log_escape(cut, shown, sizeof(shown)));
        reply_error_status(r, 415, PV_ERR_INVALID, NULL, msg);
        return false;
    }
    if (has_clen && clen > r->srv->p.max_body_bytes) {
        http_reply_errorf(r, PV_ERR_TOO_LARGE, NULL,
                          "request body of %llu bytes exceeds the limit of %zu bytes", clen,
                          r->srv->p.max_body_bytes);
        return false;
    }
    if (atomic_load(&r->srv->draining)) {
        http_reply_error(r, PV_ERR_OVERLOADED, NULL, "server is shutting down");
        return false;
    }
    return true;
}

/* Parse the body as a JSON object into r->json; replies 400 and returns false if it is not. */
static bool parse_body(struct http_req *r)
{
    json_error_t jerr;
    if (r->body.len == 0) {
        http_reply_error(r, PV_ERR_INVALID, NULL, "request body is empty: expected a JSON object");
        return false;
    }
    r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!r->json && json_error_code(&jerr) == json_error_invalid_utf8) {
        http_reply_errorf(r, PV_ERR_INVALID, NULL,
                          "invalid request body: not valid UTF-8 (%s, line %d, column %d)",
                          jerr.text, jerr.line, jerr.column);
        return false;
    }
    if (!r->json) {
        http_reply_errorf(r, PV_ERR_INVALID, NULL,
                          "invalid request body: %s (line %d, column %d)", jerr.text, jerr.line,
                          jerr.column);
        return false;
    }
    if (!json_is_object(r->json)) {
        http_reply_error(r, PV_ERR_INVALID, NULL, "request body must be a JSON object");
        return false;
    }
    return true;
}

static void dispatch(struct http_req *r, const struct http_route *rt)
{
    if (strcmp(r->method, "HEAD") == 0) {
        /* connectivity probes: HEAD answers 200 with no body on every known route */
        http_reply_text(r, 200, "text/plain", "");
        return;
    }
    if (rt->flags & HTTP_ROUTE_BODY) {
        if (r->body_too_large) {
            http_reply_errorf(r, PV_ERR_TOO_LARGE, NULL,
                              "request body exceeds the limit of %zu bytes",
                              r->srv->p.max_body_bytes);
            return;
        }
        if (!parse_body(r))
            return;
    }
    rt->handle(r);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void conn_set_reading(struct http_server *srv, struct MHD_Connection *conn, bool reading);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *srv = cls;
    struct req_box *box = *con_cls;
    const struct http_route *rt;

    if (!box) {
        box = xcalloc(1, sizeof(*box));
        atomic_init(&box->refs, 1);
        struct http_req *r = &box->r;
        r->srv = srv;
        r->conn = conn;
        r->t_start_ns = clock_now_ns();
        r->ttft_ms = -1;
        buf_init(&r->body);
        http_make_id(r->id, sizeof(r->id), "req_", 24);
        snprintf(r->method, sizeof(r->method), "%s", method);
        r->http11 = version && strcmp(version, MHD_HTTP_VERSION_1_0) != 0;
        size_t plen = strcspn(url, "?");
        if (plen >= sizeof(r->path))
            plen = sizeof(r->path) - 1; /* truncated: matches no route */
        memcpy(r->path, url, plen);
        r->path[plen] = '\0';
        *con_cls = box;
        atomic_fetch_add(&srv->active, 1);

        rt = http_route_find(r->path, &r->path_arg);
        snprintf(r->endpoint, sizeof(r->endpoint), "%s", rt ? rt->path : "other");
        if (rt && !(rt->flags & HTTP_ROUTE_API_BY_CLIENT))
            r->api = rt->api;
        else if (rt)
            r->api = models_api(r);
        else
            r->api = strncmp(r->path, "/v1/chat", 8) == 0 ||
                             strncmp(r->path, "/v1/completions", 15) == 0 ||
                             strncmp(r->path, "/v1/embeddings", 14) == 0
                         ? HTTP_API_OPENAI
                         : HTTP_API_ANTHROPIC;

        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "content-length");
        long clen = 0;
        bool has_clen = cl && parse_long(cl, 0, LONG_MAX, &clen);
        if (!precheck(r, rt, (unsigned long long)clen, has_clen))
            return r->handled ? MHD_YES : MHD_NO;
        return MHD_YES;
    }

    struct http_req *r = &box->r;
    if (r->handled) {
        *upload_data_size = 0; /* an early error is queued: drop the rest of the body */
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->body_too_large) {
            size_t total;
            if (pv_add_overflow(r->body.len, *upload_data_size, &total) ||
                total > srv->p.max_body_bytes)
                r->body_too_large = true;
            else if (!buf_append(&r->body, upload_data, *upload_data_size))
                r->body_too_large = true;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    rt = http_route_find(r->path, &r->path_arg);
    PV_ASSERT(rt);
    conn_set_reading(srv, conn, false);
    dispatch(r, rt);
    return r->handled ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct req_box *box = *con_cls;
    if (!box)
        return;
    struct http_req *r = &box->r;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 200 &&
        toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
        r->status = 499; /* client went away before the reply was complete */
    if (!r->handled && r->status == 0)
        r->status = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? 408 : 499;
    access_log(r);
    conn_set_reading(srv, conn, true); /* a kept-alive connection waits for its next request */
    atomic_fetch_sub(&srv->active, 1);
    *con_cls = NULL;
    box_unref(box);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    PV_UNUSED(cls);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

/* ---- connections ------------------------------------------------------------------------- */

/* The socket context of a request's connection (NULL if libmicrohttpd has none). */
static struct http_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Mark a connection as reading a request (since now) or as busy with one. */
static void conn_set_reading(struct http_server *srv, struct MHD_Connection *conn, bool reading)
{
    struct http_conn *c = conn_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&srv->conns_mu);
    c->reading = reading;
    c->t_read_ns = clock_now_ns();
    pthread_mutex_unlock(&srv->conns_mu);
}

/* Close a connection from outside its thread: its poll wakes to end-of-file and
 * libmicrohttpd closes it. Under conns_mu (the fd stays open until on_conn CLOSED). */
static void conn_shut(struct http_conn *c)
{
    c->closing = true;
    shutdown(c->fd, SHUT_RDWR);
}

static void on_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode code)
{
    struct http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http_conn *c = xcalloc(1, sizeof(*c));
        c->fd = ci ? ci->connect_fd : -1;
        c->reading = true;
        c->t_read_ns = clock_now_ns();
        pthread_mutex_lock(&srv->conns_mu);
        c->prev = srv->conns_tail;
        if (srv->conns_tail)
            srv->conns_tail->next = c;
        else
            srv->conns_head = c;
        srv->conns_tail = c;
        int live = 0;
        for (struct http_conn *x = srv->conns_head; x; x = x->next)
            live += !x->closing;
        if (live > srv->p.max_connections) {
            /* all taken: the connection waiting longest for a request makes room; when
             * every one is busy with a request, the newcomer is refused */
            struct http_conn *victim = c;
            for (struct http_conn *x = srv->conns_head; x; x = x->next)
                if (x != c && x->reading && !x->closing && x->fd >= 0 &&
                    (victim == c || x->t_read_ns < victim->t_read_ns))
                    victim = x;
            if (victim != c)
                log_debug("connection limit: closing one idle for %.1f s",
                          (double)(clock_now_ns() - victim->t_read_ns) / 1e9);
            if (victim->fd >= 0)
                conn_shut(victim);
        }
        pthread_mutex_unlock(&srv->conns_mu);
        *socket_context = c;
        return;
    }
    struct http_conn *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&srv->conns_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    pthread_mutex_unlock(&srv->conns_mu);
    *socket_context = NULL;
    free(c);
}

/* The read deadline: a connection that has not delivered a whole request within
 * read_timeout_s of its start (or of its last reply) is closed, however slowly it
 * keeps sending. The idle timeout alone would let a dribbling client stay forever. */
static void *conn_watchdog(void *arg)
{
    struct http_server *srv = arg;
    const uint64_t limit_ns = (uint64_t)srv->p.read_timeout_s * 1000000000ull;
    pthread_mutex_lock(&srv->conns_mu);
    while (!srv->conns_stop) {
        const uint64_t now = clock_now_ns();
        for (struct http_conn *c = srv->conns_head; c; c = c->next)
            if (c->reading && !c->closing && c->fd >= 0 && now - c->t_read_ns > limit_ns) {
                log_debug("connection closed: no complete request within %d s",
                          srv->p.read_timeout_s);
                conn_shut(c);
            }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&srv->conns_cv, &srv->conns_mu, &ts);
    }
    pthread_mutex_unlock(&srv->conns_mu);
    return NULL;
}

/* Percent-decoding of the URL, except that %00 stays as it is: a NUL would cut the path
 * short ("/health%00x" must not route to /health). */
static size_t unescape_url(void *cls, struct MHD_Connection *conn, char *s)
{
    PV_UNUSED(cls);
    PV_UNUSED(conn);
    char *w = s;
    for (const char *p = s; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hex_digit(p[1])) >= 0 && (lo = hex_digit(p[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void server_default_params(struct server_params *p)
{
    memset(p, 0, sizeof(*p));
    p->host = "127.0.0.1";
    p->port = 8080;
    p->n_ctx = 0;
    p->n_parallel = 1;
    p->kv_size = 0;
    p->n_threads = 0;
    p->device = PV_DEVICE_AUTO;
    p->max_body_bytes = 32u << 20;
    p->max_header_bytes = 32u << 10;
    p->queue_len = 16;
    p->conn_timeout_s = 600;
    p->read_timeout_s = 30;
    p->grace_s = 30;
    p->max_tokens_limit = 1000000;
    p->max_connections = 256;
    p->ping_interval_s = 10;
}

static bool resolve_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    const char *h = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return true;
    }
    char tmp[64];
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']' && n - 2 < sizeof(tmp)) {
        memcpy(tmp, h + 1, n - 2);
        tmp[n - 2] = '\0';
        h = tmp;
    }
    if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return true;
    }
    return false;
}

static void model_name_from_path(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

/* The pid file is created without following a symlink and only written when it is a
 * regular file of ours: its default place is /tmp, where anyone can plant a link. */
static void write_pid_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
        log_warn("cannot write pid file '%s': %s", path,
                 errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        log_warn("cannot write pid file '%s': not a regular file owned by this user", path);
        close(fd);
        return;
    }
    char line[32];
    int n = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, line, (size_t)n) != n)
        log_warn("cannot write pid file '%s': %s", path, strerror(errno));
    close(fd);
}

enum pv_status server_run(const struct server_params *p, struct pv_err *err)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    struct MHD_Daemon *d = NULL;
    struct sockaddr_storage addr;
    enum pv_status st = PV_OK;
    sigset_t sigs;

    srv->p = *p;
    srv->t_start_ns = clock_now_ns();
    srv->created_unix = clock_wall_s();
    atomic_init(&srv->draining, false);
    atomic_init(&srv->active, 0);
    pthread_mutex_init(&srv->conns_mu, NULL);
    pthread_cond_init(&srv->conns_cv, NULL);
    pthread_t watchdog;
    bool watchdog_started = false;
    log_set_json(p->log_json);
    http_stats_init();
    model_name_from_path(p->model_path, srv->model_name, sizeof(srv->model_name));

    if (!resolve_addr(p->host, p->port, &addr)) {
        st = pv_err_set(err, PV_ERR_INVALID, "cannot parse host '%s' (give an IP address)",
                        p->host);
        goto out_free;
    }
    const bool loopback =
        addr.ss_family == AF_INET
            ? (ntohl(((struct sockaddr_in *)&addr)->sin_addr.s_addr) >> 24) == 127
            : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&addr)->sin6_addr);
    if (!loopback && (!p->api_key || !*p->api_key))
        log_warn("!!! listening on %s WITHOUT an API key: anyone who can reach this address "
                 "can use the model. Set --api-key or PENSIEVE_API_KEY. !!!",
                 p->host);

    /* Signals are taken synchronously by this thread; every thread started from here on
     * inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    st = gen_engine_new(srv, &srv->engine, err);
    if (st != PV_OK)
        goto out_free;
    st = prompt_init(srv, err);
    if (st != PV_OK)
        goto out_engine;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_POLL;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    d = MHD_start_daemon(
        flags, (uint16_t)p->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)p->conn_timeout_s,
        /* a few over the limit, so that on_conn can close an idle one for a newcomer */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections + 16u,
        MHD_OPTION_NOTIFY_CONNECTION, on_conn, srv, MHD_OPTION_UNESCAPE_CALLBACK, unescape_url,
        NULL,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(p->max_header_bytes + 64 * 1024),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_END);
    if (!d) {
        st = pv_err_set(err, PV_ERR_IO, "cannot listen on %s:%d (address in use?)", p->host,
                        p->port);
        goto out_engine;
    }
    if (pthread_create(&watchdog, NULL, conn_watchdog, srv) == 0)
        watchdog_started = true;
    else
        log_warn("cannot start the connection watchdog: no read deadline");
    if (p->pid_file && *p->pid_file)
        write_pid_file(p->pid_file);
    log_info("listening on http://%s%s%s:%d model=%s slots=%d ctx=%d auth=%s", 
             addr.ss_family == AF_INET6 ? "[" : "", p->host,
             addr.ss_family == AF_INET6 ? "]" : "", p->port, srv->model_name,
             p->n_parallel, gen_engine_n_ctx(srv->engine), p->api_key && *p->api_key ? "on" : "off");

    /* wait for SIGINT/SIGTERM */
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    log_info("received %s: no new requests; %d running get up to %d s", strsignal(sig),
             atomic_load(&srv->active), p->grace_s);
    atomic_store(&srv->draining, true);
    MHD_socket lfd = MHD_quiesce_daemon(d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);

    /* drain: wait for running requests, a second signal cuts the wait short */
    const uint64_t deadline = clock_now_ns() + (uint64_t)p->grace_s * 1000000000ull;
    while (atomic_load(&srv->active) > 0 && clock_now_ns() < deadline) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        siginfo_t si;
        if (sigtimedwait(&sigs, &si, &ts) > 0) {
            log_warn("second signal: stopping now");
            break;
        }
    }
    if (atomic_load(&srv->active) > 0)
        log_warn("grace period over: cancelling %d running requests", atomic_load(&srv->active));
    gen_engine_shutdown(srv->engine); /* running generations end with an error event */
    /* give the streams a moment to write that event before the sockets close */
    for (int i = 0; i < 40 && atomic_load(&srv->active) > 0; i++) {
        struct timespec ts = {0, 25 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(d);
    log_info("stopped");
    pthread_mutex_lock(&srv->conns_mu);
    srv->conns_stop = true;
    pthread_cond_broadcast(&srv->conns_cv);
    pthread_mutex_unlock(&srv->conns_mu);
    if (watchdog_started)
        pthread_join(watchdog, NULL);

out_engine:
    prompt_free(srv);
    gen_engine_free(srv->engine);
    if (p->pid_file && *p->pid_file && d)
        unlink(p->pid_file);
out_free:
    pthread_mutex_destroy(&srv->conns_mu);
    pthread_cond_destroy(&srv->conns_cv);
    free(srv);
    return st;
}
