/*
 * cmd_chat.c - `pensieve chat`: a terminal chat with a model.
 *
 * The chat is a client of the Anthropic Messages API, so it gets exactly what the server
 * gives: the model's chat template, streaming, thinking blocks. With --url it talks to a
 * running server; otherwise it starts a private `pensieve serve` (this binary) on a free
 * loopback port, in its own process group so that Ctrl-C reaches only the chat, and stops
 * it on exit. Ctrl-C during a reply closes that request (the server cancels it at its
 * next step) and keeps the partial reply; at the prompt it only reminds how to leave.
 * The HTTP client is the minimum it needs: HTTP/1.1, Content-Length or chunked bodies.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static struct cli_opt chat_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL",
     "model file or name in the model directory (default: the default model)", NULL},
    {"url", 0, CLI_STRING, "PENSIEVE_URL", "URL",
     "talk to a running server (http://HOST:PORT) instead of starting one", NULL},
    {"api-key", 0, CLI_STRING, "PENSIEVE_API_KEY", "KEY", "x-api-key for --url", NULL},
    {"system", 0, CLI_STRING, NULL, "TEXT", "system prompt (also: /system TEXT)", NULL},
    {"max-tokens", 'n', CLI_INT, NULL, "N", "tokens per reply at most", "4096", 1, 1 << 24},
    {"temperature", 0, CLI_FLOAT, NULL, "T", "sampling temperature (0-1; 0 is greedy); "
     "default: the server's", NULL},
    {"ctx-size", 'c', CLI_INT, NULL, "N", "context of the started server (tokens)", "8192", 0,
     1 << 24},
    {"threads", 't', CLI_INT, "PENSIEVE_THREADS", "N", "compute threads of the started "
     "server; 0 = all cores", "0", 0, 1024},
    {0},
};

static int chat_main(int argc, char **argv);

const struct cli_command cli_cmd_chat = {
    "chat",
    "chat with a model in the terminal",
    "pensieve chat [-m MODEL] [--url URL] [options]",
    "Type a message and press Enter; end a line with \\ to continue on the next one, or\n"
    "put \"\"\" on a line of its own to start and end a multi-line message. Replies stream\n"
    "as they are generated, thinking dimmed. Ctrl-C stops a reply (the chat goes on);\n"
    "Ctrl-D or /bye leaves. Commands: /clear (forget the conversation), /system [TEXT]\n"
    "(show or set the system prompt), /save FILE (the conversation as a Messages API\n"
    "request body), /help.",
    chat_main,
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- a minimal HTTP/1.1 client ---------------------------------------------------------- */

struct endpoint {
    char host[256];
    char port[16];
};

static bool parse_url(const char *url, struct endpoint *ep)
{
    if (strncmp(url, "http://", 7) != 0)
        return false;
    const char *h = url + 7;
    size_t n = strcspn(h, ":/");
    if (n == 0 || n >= sizeof(ep->host))
        return false;
    memcpy(ep->host, h, n);
    ep->host[n] = '\0';
    snprintf(ep->port, sizeof(ep->port), "80");
    if (h[n] == ':') {
        size_t m = strspn(h + n + 1, "0123456789");
        if (m == 0 || m >= sizeof(ep->port))
            return false;
        memcpy(ep->port, h + n + 1, m);
        ep->port[m] = '\0';
    }
    return true;
}

static int connect_to(const struct endpoint *ep)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(ep->host, ep->port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* One response being read: headers parsed, body decoded as it arrives. */
struct http_resp {
    int fd;
    int status;
    bool chunked;
    long chunk_left;             /* chunked: bytes left in the current chunk; -1: size next */
    struct pv_buf raw;           /* received, not yet decoded */
    bool eof;
};

/* Read more bytes into raw; waits in slices so that Ctrl-C is noticed. False on EOF,
 * error or interruption (interrupted set). */
static bool recv_more(struct http_resp *h)
{
    char tmp[8192];
    for (;;) {
        if (interrupted)
            return false;
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int k = poll(&p, 1, 100);
        if (k < 0 && errno != EINTR)
            return false;
        if (k <= 0)
            continue;
        ssize_t n = recv(h->fd, tmp, sizeof(tmp), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            h->eof = true;
            return false;
        }
        buf_append(&h->raw, tmp, (size_t)n);
        return true;
    }
}

static void consume(struct pv_buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* Send a request and read the status line and headers. */
static bool http_request(const struct endpoint *ep, const char *method, const char *path,
                         const char *api_key, const char *body, struct http_resp *h)
{
    memset(h, 0, sizeof(*h));
    buf_init(&h->raw);
    h->chunk_left = -1;
    h->fd = connect_to(ep);
    if (h->fd < 0)
        return false;
    struct pv_buf req = PV_BUF_INIT;
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n"
                     "anthropic-version: 2023-06-01\r\n", method, path, ep->host, ep->port);
    if (api_key && *api_key)
        buf_printf(&req, "x-api-key: %s\r\n", api_key);
    if (body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                   strlen(body));
    buf_puts(&req, "\r\n");
    if (body)
        buf_puts(&req, body);
    bool ok = write_all(h->fd, req.data, req.len);
    buf_release(&req);
    char *end = NULL;
    while (ok && !(end = h->raw.len ? memmem(h->raw.data, h->raw.len, "\r\n\r\n", 4) : NULL))
        ok = recv_more(h);
    if (!ok || !end)
        return false;
    *end = '\0';
    if (sscanf(h->raw.data, "HTTP/1.%*d %d", &h->status) != 1)
        return false;
    for (char *line = strstr(h->raw.data, "\r\n"); line; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "transfer-encoding:", 18) == 0 && strstr(line + 20, "chunked"))
            h->chunked = true;
    consume(&h->raw, (size_t)(end - h->raw.data) + 4);
    return true;
}

/* Decoded body bytes available now into out (appends); false when the body is over. */
static bool http_body(struct http_resp *h, struct pv_buf *out)
{
    for (;;) {
        if (!h->chunked) {
            if (h->raw.len) {
                buf_append(out, h->raw.data, h->raw.len);
                h->raw.len = 0;
                return true;
            }
        } else if (h->chunk_left < 0) {
            char *nl = h->raw.len ? memmem(h->raw.data, h->raw.len, "\r\n", 2) : NULL;
            if (nl) {
                h->chunk_left = strtol(h->raw.data, NULL, 16);
                consume(&h->raw, (size_t)(nl - h->raw.data) + 2);
                if (h->chunk_left == 0)
                    return false;
                continue;
            }
        } else if (h->raw.len) {
            size_t n = PV_MIN((size_t)h->chunk_left, h->raw.len);
            buf_append(out, h->raw.data, n);
            consume(&h->raw, n);
            h->chunk_left -= (long)n;
            if (h->chunk_left == 0) {
                /* the chunk's CRLF; wait for it if it has not arrived */
                while (h->raw.len < 2 && recv_more(h))
                    ;
                if (h->raw.len >= 2)
                    consume(&h->raw, 2);
                h->chunk_left = -1;
            }
            return true;
        }
        if (!recv_more(h))
            return false;
    }
}

static void http_close(struct http_resp *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    buf_release(&h->raw);
}

/* A whole JSON response (GET or POST); NULL when it cannot be read. */
static json_t *http_json(const struct endpoint *ep, const char *method, const char *path,
                         const char *api_key, const char *body, int *status)
{
    struct http_resp h;
    struct pv_buf all = PV_BUF_INIT;
    json_t *j = NULL;
    if (http_request(ep, method, path, api_key, body, &h)) {
        while (http_body(&h, &all))
            ;
        *status = h.status;
        j = json_loadb(all.data ? all.data : "", all.len, 0, NULL);
    }
    http_close(&h);
    buf_release(&all);
    return j;
}

/* ---- the private server --------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Start `pensieve serve` on a free loopback port; returns its pid, fills ep. */
static pid_t start_server(const char *model, long n_ctx, long n_threads, struct endpoint *ep)
{
    const int port = free_port();
    if (port < 0)
        cli_die("chat", 1, "no free local port for the model server");
    snprintf(ep->host, sizeof(ep->host), "127.0.0.1");
    snprintf(ep->port, sizeof(ep->port), "%d", port);
    char ctx[32], threads[32], pidfile[64];
    snprintf(ctx, sizeof(ctx), "%ld", n_ctx);
    snprintf(threads, sizeof(threads), "%ld", n_threads);
    snprintf(pidfile, sizeof(pidfile), "/tmp/pensieve-chat-%d.pid", port);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0)
        cli_die("chat", 1, "cannot start the model server: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);                    /* Ctrl-C in the terminal is the chat's alone */
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* and the server ends with the chat */
        if (getppid() != parent)
            _exit(1);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        setenv("PENSIEVE_LOG_LEVEL", "error", 1);
        char *args[] = {"pensieve", "serve", "-m", (char *)model, "--host", "127.0.0.1",
                        "--port", ep->port, "--ctx-size", ctx, "--threads", threads,
                        "--pid-file", pidfile, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    /* wait until it answers /health */
    for (int i = 0; i < 1200; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            cli_die("chat", 1, "the model server exited while loading '%s'", model);
        int status = 0;
        json_t *j = http_json(ep, "GET", "/health", NULL, NULL, &status);
        json_decref(j);
        if (j && status == 200)
            return pid;
        if (interrupted)
            break;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cli_die("chat", 1, "the model server did not start");
}

static void stop_server(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- the conversation ------------------------------------------------------------------ */

struct chat {
    struct endpoint ep;
    const char *api_key;
    char model[256];
    json_t *messages;            /* [{role, content}] */
    char *system;                /* owned, or NULL */
    long max_tokens;
    double temperature;          /* < 0: the server's */
    bool tty_out;                /* colours for thinking and notes */
};

static void dim(const struct chat *c, bool on)
{
    if (c->tty_out)
        fputs(on ? "\033[2m" : "\033[0m", stdout);
}

/* One SSE event of the reply: print text and thinking, collect the reply text. */
static void on_event(struct chat *c, const char *data, struct pv_buf *reply, bool *thinking,
                     int *n_out, char *err, size_t err_cap)
{
    json_t *ev = json_loads(data, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!type) {
        json_decref(ev);
        return;
    }
    if (!strcmp(type, "content_block_delta")) {
        json_t *d = json_object_get(ev, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));
        const char *text = json_string_value(json_object_get(d, "text"));
        const char *think = json_string_value(json_object_get(d, "thinking"));
        if (dt && !strcmp(dt, "text_delta") && text) {
            if (*thinking) {
                dim(c, false);
                fputs("\n\n", stdout);
                *thinking = false;
            }
            fputs(text, stdout);
            buf_puts(reply, text);
        } else if (dt && !strcmp(dt, "thinking_delta") && think) {
            if (!*thinking) {
                dim(c, true);
                *thinking = true;
            }
            fputs(think, stdout);
        }
        fflush(stdout);
    } else if (!strcmp(type, "message_delta")) {
        *n_out = (int)json_integer_value(json_object_get(json_object_get(ev, "usage"),
                                                         "output_tokens"));
    } else if (!strcmp(type, "error")) {
        const char *m =
            json_string_value(json_object_get(json_object_get(ev, "error"), "message"));
        snprintf(err, err_cap, "%s", m ? m : "error");
    }
    json_decref(ev);
}

static json_t *request_body(const struct chat *c)
{
    json_t *b = json_pack("{s:s, s:I, s:b, s:O}", "model", c->model, "max_tokens",
                          (json_int_t)c->max_tokens, "stream", 1, "messages", c->messages);
    if (c->system)
        json_object_set_new(b, "system", json_string(c->system));
    if (c->temperature >= 0)
        json_object_set_new(b, "temperature", json_real(c->temperature));
    return b;
}

/* Send the conversation, stream the reply; the reply (even a stopped one) joins it. */
static void reply(struct chat *c)
{
    json_t *b = request_body(c);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    struct http_resp h;
    struct pv_buf in = PV_BUF_INIT, text = PV_BUF_INIT;
    char err[512] = "";
    bool thinking = false;
    int n_out = 0;
    const double t0 = (double)clock_now_ns() / 1e9;
    interrupted = 0;
    if (!http_request(&c->ep, "POST", "/v1/messages", c->api_key, body, &h)) {
        if (!interrupted)
            snprintf(err, sizeof(err), "cannot reach the server at %s:%s", c->ep.host,
                     c->ep.port);
    } else if (h.status != 200) {
        while (http_body(&h, &in))
            ;
        json_t *j = json_loadb(in.data ? in.data : "", in.len, 0, NULL);
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        snprintf(err, sizeof(err), "%d: %s", h.status, m ? m : "request failed");
        json_decref(j);
    } else {
        /* SSE: events end with a blank line; only their data lines matter here */
        while (http_body(&h, &in)) {
            char *end;
            while (in.len && (end = memmem(in.data, in.len, "\n\n", 2))) {
                *end = '\0';
                for (char *line = in.data; line && *line;) {
                    char *nl = strchr(line, '\n');
                    if (nl)
                        *nl = '\0';
                    if (!strncmp(line, "data: ", 6))
                        on_event(c, line + 6, &text, &thinking, &n_out, err, sizeof(err));
                    line = nl ? nl + 1 : NULL;
                }
                consume(&in, (size_t)(end - in.data) + 2);
            }
        }
    }
    http_close(&h); /* a stopped reply: the server cancels it when the connection closes */
    free(body);
    buf_release(&in);
    if (thinking)
        dim(c, false);
    const double secs = (double)clock_now_ns() / 1e9 - t0;
    fputs("\n", stdout);
    dim(c, true);
    if (interrupted)
        fputs("[stopped]\n", stdout);
    else if (err[0])
        printf("[error %s]\n", err);
    else if (c->tty_out && n_out > 0)
        printf("[%d tokens, %.1f tokens/s]\n", n_out, secs > 0 ? n_out / secs : 0.0);
    dim(c, false);
    fflush(stdout);
    if (text.len) /* a stopped reply keeps what it said */
        json_array_append_new(c->messages,
                              json_pack("{s:s, s:s%}", "role", "assistant", "content",
                                        text.data, text.len));
    else /* nothing came back: the message is not part of the conversation */
        json_array_remove(c->messages, json_array_size(c->messages) - 1);
    buf_release(&text);
    interrupted = 0;
}

static void save(const struct chat *c, const char *path)
{
    json_t *b = request_body(c);
    json_object_del(b, "stream");
    if (json_dump_file(b, path, JSON_INDENT(2)) == 0)
        printf("saved %zu messages to %s\n", json_array_size(c->messages), path);
    else
        printf("cannot write %s: %s\n", path, strerror(errno));
    json_decref(b);
}

/* A slash command; false when the line is not one. *quit is set by /bye. */
static bool command(struct chat *c, char *line, bool *quit)
{
    if (line[0] != '/')
        return false;
    char *arg = line + strcspn(line, " \t");
    if (*arg) {
        *arg++ = '\0';
        arg += strspn(arg, " \t");
    }
    if (!strcmp(line, "/bye") || !strcmp(line, "/exit") || !strcmp(line, "/quit")) {
        *quit = true;
    } else if (!strcmp(line, "/clear")) {
        json_array_clear(c->messages);
        puts("conversation cleared");
    } else if (!strcmp(line, "/system")) {
        if (*arg) {
            free(c->system);
            c->system = xstrdup(arg);
            puts("system prompt set");
        } else {
            printf("system prompt: %s\n", c->system ? c->system : "(none)");
        }
    } else if (!strcmp(line, "/save")) {
        if (*arg)
            save(c, arg);
        else
            puts("usage: /save FILE");
    } else if (!strcmp(line, "/help") || !strcmp(line, "/?")) {
        puts("/clear  forget the conversation\n/system [TEXT]  show or set the system prompt\n"
             "/save FILE  write the conversation as a Messages API request\n/bye  leave\n"
             "end a line with \\ to go on, or wrap lines in \"\"\"; Ctrl-C stops a reply");
    } else {
        printf("unknown command %s (/help lists them)\n", line);
    }
    fflush(stdout);
    return true;
}

/* Read one message (several lines with \ or """). NULL at end of input. */
static char *read_message(bool tty_in)
{
    struct pv_buf msg = PV_BUF_INIT;
    bool block = false, more = false;
    char line[65536];
    for (;;) {
        /* cleared before the prompt shows, so a Ctrl-C typed as soon as it does is seen
         * even when it lands before the read starts (the read would not return EINTR) */
        interrupted = 0;
        if (tty_in) {
            fputs(block || more ? "... " : ">>> ", stdout);
            fflush(stdout);
        }
        if (interrupted || !fgets(line, sizeof(line), stdin)) {
            if (interrupted || (ferror(stdin) && errno == EINTR)) {
                clearerr(stdin);
                fputs("\n(Ctrl-D or /bye leaves)\n", stdout);
                buf_reset(&msg);
                block = more = false;
                continue;
            }
            if (msg.len)
                break;
            buf_release(&msg);
            return NULL;
        }
        size_t n = strcspn(line, "\r\n");
        line[n] = '\0';
        if (!strcmp(line, "\"\"\"")) {
            if (block)
                break;
            block = true;
            continue;
        }
        more = !block && n > 0 && line[n - 1] == '\\';
        if (more)
            line[--n] = '\0';
        if (msg.len)
            buf_putc(&msg, '\n');
        buf_append(&msg, line, n);
        if (!block && !more)
            break;
    }
    char *s = buf_detach(&msg, NULL);
    return s ? s : xstrdup("");
}

static int chat_main(int argc, char **argv)
{
    struct chat c = {0};
    pid_t server = 0;
    cli_parse(&cli_cmd_chat, chat_opts, argc, argv, NULL, 0, NULL);
    const char *url = cli_get(chat_opts, "url")->str;
    const char *model_arg = cli_get(chat_opts, "model")->str;
    c.api_key = cli_get(chat_opts, "api-key")->str;
    c.max_tokens = cli_get(chat_opts, "max-tokens")->i;
    c.temperature = cli_get(chat_opts, "temperature")->set ? cli_get(chat_opts, "temperature")->f
                                                            : -1;
    if (cli_get(chat_opts, "temperature")->set && (c.temperature < 0 || c.temperature > 1))
        cli_die("chat", 2, "--temperature: expected 0 to 1");
    if (cli_get(chat_opts, "system")->str)
        c.system = xstrdup(cli_get(chat_opts, "system")->str);
    c.tty_out = isatty(1);
    const bool tty_in = isatty(0);

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint; /* no SA_RESTART: a read at the prompt returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (url) {
        if (!parse_url(url, &c.ep))
            cli_die("chat", 2, "--url: expected http://HOST[:PORT], got '%s'", url);
    } else {
        char path[4096];
        const char *m = model_arg ? model_arg : PV_DEFAULT_MODEL_FILE;
        if (!cli_resolve_model(m, path, sizeof(path)))
            cli_die("chat", 1, "model '%s' not found (`pensieve models` lists them)", m);
        if (tty_in)
            fprintf(stderr, "loading %s...\n", m);
        server = start_server(path, cli_get(chat_opts, "ctx-size")->i,
                              cli_get(chat_opts, "threads")->i, &c.ep);
    }
    /* the model's name, as the server reports it */
    int status = 0;
    json_t *models = http_json(&c.ep, "GET", "/v1/models", c.api_key, NULL, &status);
    const char *id = json_string_value(
        json_object_get(json_array_get(json_object_get(models, "data"), 0), "id"));
    if (!models || status != 200 || !id) {
        json_decref(models);
        stop_server(server);
        cli_die("chat", 1, "no usable server at %s:%s (status %d)", c.ep.host, c.ep.port, status);
    }
    snprintf(c.model, sizeof(c.model), "%s", model_arg && url ? model_arg : id);
    json_decref(models);
    c.messages = json_array();
    if (tty_in)
        printf("pensieve chat with %s - /help for commands, Ctrl-D or /bye to leave\n", id);

    bool quit = false;
    while (!quit) {
        char *msg = read_message(tty_in);
        if (!msg)
            break;
        if (!command(&c, msg, &quit) && msg[strspn(msg, " \t\n")]) {
            json_array_append_new(c.messages,
                                  json_pack("{s:s, s:s}", "role", "user", "content", msg));
            reply(&c);
        }
        free(msg);
    }
    if (tty_in)
        fputs("\n", stdout);
    json_decref(c.messages);
    free(c.system);
    stop_server(server);
    return 0;
}
