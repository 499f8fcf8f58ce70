/*
 * cmd_serve.c - `pensieve serve`: the Anthropic Messages and OpenAI APIs over HTTP.
 *
 * Turns options (each also read from its PENSIEVE_* environment variable) into
 * server_params and runs the server until SIGINT/SIGTERM. The pid file lets
 * `pensieve stop` find the server.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "server/server.h"

static struct cli_opt serve_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL",
     "GGUF file, or a name in the model directory (default: " PV_DEFAULT_MODEL ")", NULL},
    {"keep-alive", 0, CLI_STRING, "PENSIEVE_KEEP_ALIVE", "DURATION",
     "how long a model loaded on demand stays loaded after its last request (30s, 5m, 1h; "
     "0 = unload at once, negative = never); the default model stays", "5m"},
    {"max-loaded", 0, CLI_INT, "PENSIEVE_MAX_LOADED", "N",
     "models loaded at once; loading another unloads the least recently used idle one "
     "(0 = no limit)", "3", 0, 1000},
    {"max-memory", 0, CLI_STRING, "PENSIEVE_MAX_MEMORY", "SIZE",
     "memory the loaded models may take together (weights + KV cache + scratch), e.g. 8G; "
     "0 = what the machine has available", "0"},
    {"host", 0, CLI_STRING, "PENSIEVE_HOST", "ADDR",
     "address to listen on (an IP; non-loopback without --api-key is warned about)",
     "127.0.0.1"},
    {"port", 'p', CLI_INT, "PENSIEVE_PORT", "N", "TCP port", "8080", 1, 65535},
    {"api-key", 0, CLI_STRING, "PENSIEVE_API_KEY", "KEY",
     "require this key in x-api-key or Authorization: Bearer (/health and HEAD exempt)", NULL},
    {"ctx-size", 'c', CLI_INT, "PENSIEVE_CTX_SIZE", "N",
     "context tokens of one request; 0 = min(model's training context, 32768)", "0", 0, 1 << 24},
    {"parallel", 0, CLI_INT, "PENSIEVE_PARALLEL", "N",
     "requests generating at once, batched into one forward pass per step; the rest queue",
     "1", 1, 64},
    {"kv-size", 0, CLI_INT, "PENSIEVE_KV_SIZE", "N",
     "KV cache positions shared by all requests (blocks of 32, handed out as they grow); "
     "0 = ctx-size x parallel, at most half the available memory, at least ctx-size", "0", 0,
     1 << 24},
    {"threads", 't', CLI_INT, "PENSIEVE_THREADS", "N", "compute threads; 0 = all cores", "0",
     0, 1024},
    {"device", 0, CLI_STRING, "PENSIEVE_DEVICE", "DEV",
     "cpu, cuda or auto (the GPU when this build has CUDA and one is present)", "auto"},
    {"swa-full", 0, CLI_FLAG, "PENSIEVE_SWA_FULL", NULL,
     "sliding-window layers (Gemma 3) keep every position, so any cached prefix stays "
     "reusable; by default they give back what no window sees (same output, less memory)",
     NULL},
    {"alias", 'a', CLI_STRING, "PENSIEVE_ALIAS", "NAMES",
     "model names to answer to (repeatable, or a comma list); when given, other names get 404 "
     "(without it any model name is served by the loaded model)", NULL},
    {"log-format", 0, CLI_STRING, "PENSIEVE_LOG_FORMAT", "FMT",
     "text or json (one object per line)", "text"},
    {"log-level", 0, CLI_STRING, "PENSIEVE_LOG_LEVEL", "LEVEL",
     "debug, info, warn, error or off", "info"},
    {"log-file", 0, CLI_STRING, "PENSIEVE_LOG_FILE", "PATH",
     "append the log (and any error) to this file instead of stderr", NULL},
    {"max-body-bytes", 0, CLI_INT, "PENSIEVE_MAX_BODY_BYTES", "N",
     "largest request body; larger gets 413", "33554432", 1024, 1L << 31},
    {"max-header-bytes", 0, CLI_INT, "PENSIEVE_MAX_HEADER_BYTES", "N",
     "largest total of request headers; larger gets 431", "32768", 1024, 1 << 20},
    {"queue", 0, CLI_INT, "PENSIEVE_QUEUE", "N",
     "requests waiting for a slot; beyond it 529 overloaded_error (OpenAI: 503)", "16", 0,
     100000},
    {"timeout", 0, CLI_INT, "PENSIEVE_TIMEOUT", "SECONDS",
     "close a connection idle this long (slow or stalled clients)", "600", 1, 86400},
    {"read-timeout", 0, CLI_INT, "PENSIEVE_READ_TIMEOUT", "SECONDS",
     "a request's head and body must arrive within this (a deadline, not an idle time: "
     "clients dribbling bytes are closed)", "30", 1, 86400},
    {"grace", 0, CLI_INT, "PENSIEVE_GRACE", "SECONDS",
     "on SIGINT/SIGTERM, time running requests get to finish", "30", 0, 3600},
    {"max-tokens-limit", 0, CLI_INT, "PENSIEVE_MAX_TOKENS_LIMIT", "N",
     "max_tokens above this is rejected (400); below it, max_tokens is capped to the "
     "context left after the prompt", "1000000", 1, 1L << 30},
    {"max-connections", 0, CLI_INT, "PENSIEVE_MAX_CONNECTIONS", "N",
     "simultaneous connections (each has a thread); when all are taken, the connection "
     "idle longest (no request in progress) is closed for the new one", "256", 1, 65536},
    {"ping-interval", 0, CLI_INT, "PENSIEVE_PING_INTERVAL", "SECONDS",
     "streams get a keep-alive ping after this long without events (long prompts)", "10", 1,
     3600},
    {"stop", 0, CLI_STRING, "PENSIEVE_STOP", "TEXT",
     "a stop sequence added to every request, like a Modelfile's PARAMETER stop "
     "(repeatable, at most 4; C escapes \\n \\t \\\\ understood)", NULL},
    {"cors-origin", 0, CLI_STRING, "PENSIEVE_CORS_ORIGIN", "ORIGINS",
     "let browser pages of these origins call the API (\"*\" for any, or a comma list such "
     "as http://localhost:3000); default: no CORS headers", NULL},
    {"cache-dir", 0, CLI_STRING, "PENSIEVE_CACHE_DIR", "DIR",
     "the disk prompt cache: KV blocks of prompt prefixes kept across restarts and shared by "
     "the servers that use the same directory; default $XDG_CACHE_HOME/pensieve/kv "
     "(~/.cache/pensieve/kv)", NULL},
    {"cache-size", 0, CLI_STRING, "PENSIEVE_CACHE_SIZE", "SIZE",
     "most bytes the disk prompt cache holds (K, M, G, T suffixes); least recently used "
     "blocks are removed first", "8G"},
    {"no-disk-cache", 0, CLI_FLAG, "PENSIEVE_NO_DISK_CACHE", NULL,
     "keep the prompt cache in memory only", NULL},
    {"pid-file", 0, CLI_STRING, "PENSIEVE_PID_FILE", "PATH",
     "where to write the pid for `pensieve stop`; default "
     "$XDG_RUNTIME_DIR or /tmp: pensieve-PORT.pid (never written through a symbolic link)", NULL},
    {0},
};

static int serve_main(int argc, char **argv);

const struct cli_command cli_cmd_serve = {
    "serve",
    "serve the Anthropic Messages and OpenAI APIs over HTTP",
    "pensieve serve [-m MODEL] [options]",
    "Endpoints: POST /v1/messages, /v1/messages/count_tokens, /v1/chat/completions,\n"
    "/v1/completions; GET /v1/models, /v1/models/{id}, /health, /metrics; HEAD / and\n"
    "/api/hello; the API routes answer without /v1 too.\n"
    "Models: -m (default " PV_DEFAULT_MODEL ") is loaded at start and answers requests\n"
    "whose \"model\" names no installed model (Claude Code's names); a name of\n"
    "`pensieve models` (file stem, file name or catalogue name) loads that model on\n"
    "demand, within --max-loaded and --max-memory, until --keep-alive idle time.\n"
    "Claude Code: ANTHROPIC_BASE_URL=http://127.0.0.1:PORT claude\n"
    "(use --ctx-size 32768 or more: its first prompt is ~20K tokens).\n"
    "SIGINT/SIGTERM (or `pensieve stop`) stop accepting, let running requests finish\n"
    "within --grace seconds, and exit 0; a second signal stops at once.\n"
    "Browser guards: POST bodies must be Content-Type: application/json (else 415);\n"
    "bound to loopback, the Host header must name this machine (else 403).",
    serve_main,
};

void cli_default_pid_file(int port, char *out, size_t cap);

void cli_default_pid_file(int port, char *out, size_t cap)
{
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || !*dir)
        dir = "/tmp";
    snprintf(out, cap, "%s/pensieve-%d.pid", dir, port);
}

/* Undo the C escapes \n, \t and \\ in place (a newline is awkward on a command line). */
static void unescape(char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (*p == '\\' && (p[1] == 'n' || p[1] == 't' || p[1] == '\\')) {
            *w++ = p[1] == 'n' ? '\n' : p[1] == 't' ? '\t' : '\\';
            p++;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
}

/* Every value of a repeatable option: "--NAME v", "--NAME=v" (and "-S v" when short). */
static int collect(int argc, char **argv, const char *name, char short_name, char **out,
                   int max)
{
    int n = 0;
    size_t len = strlen(name);
    for (int a = 1; a < argc; a++) {
        const char *v = NULL;
        if (strcmp(argv[a], "--") == 0)
            break;
        if (strncmp(argv[a], "--", 2) == 0 && strncmp(argv[a] + 2, name, len) == 0) {
            if (argv[a][2 + len] == '=')
                v = argv[a] + 3 + len;
            else if (argv[a][2 + len] == '\0' && a + 1 < argc)
                v = argv[++a];
        } else if (short_name && argv[a][0] == '-' && argv[a][1] == short_name &&
                   argv[a][2] == '\0' && a + 1 < argc) {
            v = argv[++a];
        }
        if (v) {
            if (n == max)
                cli_die("serve", 2, "--%s: at most %d values", name, max);
            out[n++] = (char *)v;
        }
    }
    return n;
}

/* A duration as Ollama's keep_alive takes it: a number of seconds, or a number with the
 * unit s, m or h ("5m", "1.5h"); negative means forever. */
static bool parse_duration(const char *s, long *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v != v)
        return false;
    double mult = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mult = 60, end++;
    else if (*end == 'h')
        mult = 3600, end++;
    if (*end)
        return false;
    v *= mult;
    *out = v < 0 ? -1 : v > 1e9 ? 1000000000L : (long)(v + 0.5);
    return true;
}

/* A byte size: a number with an optional K, M, G or T (powers of 1024; "GiB", "GB" too). */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || v > 1e18)
        return false;
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end)
        return false;
    *out = (uint64_t)(v * mult);
    return true;
}

static int serve_main(int argc, char **argv)
{
    static char models_dir[4096];
    struct server_params p;
    struct pv_err err;
    char model[4096], pid_file[4096];
    static char alias_buf[4096];

    cli_parse(&cli_cmd_serve, serve_opts, argc, argv, NULL, 0, NULL);
    server_default_params(&p);
    struct cli_opt *m = cli_get(serve_opts, "model");
    if (!m->str) {
        if (!cli_resolve_model(PV_DEFAULT_MODEL_FILE, model, sizeof(model)))
            cli_die("serve", 1, "the default model %s is not installed: `pensieve pull` "
                                "downloads it (or give -m MODEL; `pensieve models` lists them)",
                    PV_DEFAULT_MODEL);
    } else if (!cli_resolve_model(m->str, model, sizeof(model)))
        cli_die_model_not_found("serve", m->str);
    p.model_path = model;
    if (pv_models_dir(models_dir, sizeof(models_dir)) == PV_OK)
        p.models_dir = models_dir;
    p.max_loaded = (int)cli_get(serve_opts, "max-loaded")->i;
    const char *ka = cli_get(serve_opts, "keep-alive")->str;
    if (!parse_duration(ka, &p.keep_alive_s))
        cli_die("serve", 2, "--keep-alive: expected a duration such as 30s, 5m, 1h, 0 or -1, "
                            "got '%s'", ka);
    const char *mm = cli_get(serve_opts, "max-memory")->str;
    if (!parse_size(mm, &p.max_memory_bytes))
        cli_die("serve", 2, "--max-memory: expected a size such as 8G or 512M (0: no limit), "
                            "got '%s'", mm);
    p.host = cli_get(serve_opts, "host")->str;
    p.port = (int)cli_get(serve_opts, "port")->i;
    p.api_key = cli_get(serve_opts, "api-key")->str;
    p.n_ctx = (int)cli_get(serve_opts, "ctx-size")->i;
    p.n_parallel = (int)cli_get(serve_opts, "parallel")->i;
    p.kv_size = (long)cli_get(serve_opts, "kv-size")->i;
    p.n_threads = (int)cli_get(serve_opts, "threads")->i;
    if (!pv_device_parse(cli_get(serve_opts, "device")->str, &p.device))
        cli_die("serve", 2, "--device: expected cpu, cuda or auto, got '%s'",
                cli_get(serve_opts, "device")->str);
    p.swa_full = cli_get(serve_opts, "swa-full")->i != 0;
    p.max_body_bytes = (size_t)cli_get(serve_opts, "max-body-bytes")->i;
    p.max_header_bytes = (size_t)cli_get(serve_opts, "max-header-bytes")->i;
    p.queue_len = (int)cli_get(serve_opts, "queue")->i;
    p.conn_timeout_s = (int)cli_get(serve_opts, "timeout")->i;
    p.read_timeout_s = (int)cli_get(serve_opts, "read-timeout")->i;
    p.grace_s = (int)cli_get(serve_opts, "grace")->i;
    p.max_tokens_limit = (int)cli_get(serve_opts, "max-tokens-limit")->i;
    p.max_connections = (int)cli_get(serve_opts, "max-connections")->i;
    p.ping_interval_s = (int)cli_get(serve_opts, "ping-interval")->i;
    p.cors_origin = cli_get(serve_opts, "cors-origin")->str;
    static char cache_dir[4096];
    if (!cli_get(serve_opts, "no-disk-cache")->i) {
        const char *cd = cli_get(serve_opts, "cache-dir")->str;
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (cd && *cd)
            snprintf(cache_dir, sizeof(cache_dir), "%s", cd);
        else if (xdg && *xdg)
            snprintf(cache_dir, sizeof(cache_dir), "%s/pensieve/kv", xdg);
        else
            snprintf(cache_dir, sizeof(cache_dir), "%s/.cache/pensieve/kv",
                     home && *home ? home : ".");
        p.cache_dir = cache_dir;
        uint64_t cache_bytes;
        if (!parse_size(cli_get(serve_opts, "cache-size")->str, &cache_bytes) ||
            cache_bytes < ((uint64_t)1 << 20))
            cli_die("serve", 2,
                    "--cache-size: expected a size of at least 1M such as 8G or 500M, got '%s'",
                    cli_get(serve_opts, "cache-size")->str);
        p.cache_bytes = cache_bytes;
    }

    enum pv_log_level level;
    if (!log_parse_level(cli_get(serve_opts, "log-level")->str, &level))
        cli_die("serve", 2, "--log-level: expected debug, info, warn, error or off, got '%s'",
                cli_get(serve_opts, "log-level")->str);
    log_set_level(level);
    const char *log_file = cli_get(serve_opts, "log-file")->str;
    if (log_file) {
        int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            cli_die("serve", 1, "--log-file: cannot open '%s': %s", log_file, strerror(errno));
        fflush(stderr);
        dup2(fd, 2);
        close(fd);
    }
    const char *fmt = cli_get(serve_opts, "log-format")->str;
    if (strcmp(fmt, "json") == 0)
        p.log_json = true;
    else if (strcmp(fmt, "text") != 0)
        cli_die("serve", 2, "--log-format: expected text or json, got '%s'", fmt);

    /* aliases: every --alias/-a given (repeatable), each a comma list; else the env */
    size_t used = 0;
    alias_buf[0] = '\0';
    for (int a = 1; a < argc; a++) {
        const char *v = NULL;
        if ((strcmp(argv[a], "--alias") == 0 || strcmp(argv[a], "-a") == 0) && a + 1 < argc)
            v = argv[++a];
        else if (strncmp(argv[a], "--alias=", 8) == 0)
            v = argv[a] + 8;
        else if (strcmp(argv[a], "--") == 0)
            break;
        if (v) {
            int n = snprintf(alias_buf + used, sizeof(alias_buf) - used, "%s%s",
                             used ? "," : "", v);
            if (n < 0 || (size_t)n >= sizeof(alias_buf) - used)
                cli_die("serve", 2, "--alias: names too long");
            used += (size_t)n;
        }
    }
    const char *aliases = used ? alias_buf : cli_get(serve_opts, "alias")->str;
    if (aliases) {
        if (aliases != alias_buf)
            snprintf(alias_buf, sizeof(alias_buf), "%s", aliases);
        for (char *save = NULL, *tok = strtok_r(alias_buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            if (!*tok)
                continue;
            if (p.n_aliases == SERVER_MAX_ALIASES)
                cli_die("serve", 2, "--alias: at most %d names", SERVER_MAX_ALIASES);
            p.aliases[p.n_aliases++] = tok;
        }
    }
    static char *stops[SERVER_MAX_STOP];
    int n_stop = collect(argc, argv, "stop", 0, stops, SERVER_MAX_STOP);
    if (n_stop == 0 && cli_get(serve_opts, "stop")->str)
        stops[n_stop++] = (char *)cli_get(serve_opts, "stop")->str;
    for (int i = 0; i < n_stop; i++) {
        stops[i] = xstrdup(stops[i]);
        unescape(stops[i]);
        if (*stops[i])
            p.stop[p.n_stop++] = stops[i];
    }
    const char *pf = cli_get(serve_opts, "pid-file")->str;
    if (pf)
        snprintf(pid_file, sizeof(pid_file), "%s", pf);
    else
        cli_default_pid_file(p.port, pid_file, sizeof(pid_file));
    p.pid_file = pid_file;

    /* SIGINT/SIGTERM during the checks wait for the server, which then stops cleanly */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    cli_check_port(p.host, p.port);
    cli_check_model(p.model_path, p.n_ctx, p.n_parallel);
    if (server_run(&p, &err) != PV_OK)
        cli_die("serve", 1, "%s", err.msg);
    return 0;
}
