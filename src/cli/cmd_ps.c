/*
 * cmd_ps.c - `pensieve ps`: what a running server has loaded and how busy it is.
 *
 * Reads the server's GET /health and prints it for people: each loaded model with its
 * slots in use, KV cache filled, memory and when keep-alive unloads it; the server's
 * memory, queue, uptime and request counts (`--json` prints the body).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static struct cli_opt ps_opts[] = {
    {"host", 0, CLI_STRING, "PENSIEVE_HOST", "ADDR", "address of the server", "127.0.0.1"},
    {"port", 'p', CLI_INT, "PENSIEVE_PORT", "N", "port of the server", "8080", 1, 65535},
    {"api-key", 0, CLI_STRING, "PENSIEVE_API_KEY", "KEY", "the server's --api-key", NULL},
    {"json", 0, CLI_FLAG, NULL, NULL, "print the server's /health body as it is", NULL},
    {0},
};

static int ps_main(int argc, char **argv);

const struct cli_command cli_cmd_ps = {
    "ps",
    "show what a running server has loaded",
    "pensieve ps [options]",
    "The loaded models (slots busy, KV cache use, memory, context, when keep-alive\n"
    "unloads them), memory, queue, uptime and requests of the server on --host/--port\n"
    "(from its GET /health).",
    ps_main,
};

static size_t to_buf(char *data, size_t size, size_t n, void *user)
{
    return buf_append(user, data, size * n) ? size * n : 0;
}

static double num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

static int ps_main(int argc, char **argv)
{
    char url[600], auth[600], mem[32], up[64];
    struct pv_buf body = PV_BUF_INIT;
    struct curl_slist *hdr = NULL;
    long code = 0;

    cli_parse(&cli_cmd_ps, ps_opts, argc, argv, NULL, 0, NULL);
    const char *host = cli_get(ps_opts, "host")->str;
    int port = (int)cli_get(ps_opts, "port")->i;
    const char *key = cli_get(ps_opts, "api-key")->str;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof(url), "http://%s%s%s:%d/health", v6 ? "[" : "", host, v6 ? "]" : "",
             port);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    if (!c)
        cli_die("ps", 1, "cannot start a request");
    if (key) {
        snprintf(auth, sizeof(auth), "x-api-key: %s", key);
        hdr = curl_slist_append(hdr, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_buf);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK)
        cli_die("ps", 1, "no pensieve server answers at %s (%s)", url, curl_easy_strerror(rc));
    json_t *h = json_loadb(body.data, body.len, 0, NULL);
    if (code != 200 || !json_is_object(h))
        cli_die("ps", 1, "%s answered HTTP %ld, not a pensieve health report", url, code);
    if (cli_get(ps_opts, "json")->i) {
        printf("%s\n", body.data);
        json_decref(h);
        buf_release(&body);
        return 0;
    }
    long t = (long)num(h, "uptime_s");
    if (t >= 86400)
        snprintf(up, sizeof(up), "%ldd %ldh", t / 86400, t / 3600 % 24);
    else if (t >= 3600)
        snprintf(up, sizeof(up), "%ldh %ldm", t / 3600, t / 60 % 60);
    else
        snprintf(up, sizeof(up), "%ldm %lds", t / 60, t % 60);
    format_bytes((uint64_t)num(h, "memory_rss_bytes"), mem, sizeof(mem));
    printf("server %s, up %s, %s resident, default model %s\n",
           json_string_value(json_object_get(h, "status")) ? json_string_value(json_object_get(h, "status")) : "?",
           up, mem,
           json_string_value(json_object_get(h, "model")) ? json_string_value(json_object_get(h, "model")) : "?");
    printf("%-36s %-11s %-22s %-10s %-8s %s\n", "LOADED MODEL", "SLOTS", "KV CACHE", "MEMORY",
           "CONTEXT", "UNLOADS");
    json_t *models = json_object_get(h, "models"), *m;
    size_t i;
    json_array_foreach(models, i, m) {
        char slots[32], kv[48], mb[32], until[48];
        double cap = num(m, "kv_cache_capacity_tokens"), used = num(m, "kv_cache_used_tokens");
        snprintf(slots, sizeof(slots), "%.0f/%.0f busy", num(m, "slots_busy"), num(h, "slots"));
        snprintf(kv, sizeof(kv), "%.0f/%.0f (%.0f%%)", used, cap, cap > 0 ? 100.0 * used / cap : 0.0);
        format_bytes((uint64_t)num(m, "memory_bytes"), mb, sizeof(mb));
        json_t *exp = json_object_get(m, "expires_in_s");
        if (json_is_true(json_object_get(m, "default")))
            snprintf(until, sizeof(until), "never (default)");
        else if (num(m, "requests") > 0)
            snprintf(until, sizeof(until), "in use");
        else if (!json_is_number(exp))
            snprintf(until, sizeof(until), "never");
        else
            snprintf(until, sizeof(until), "in %.0f s", json_number_value(exp));
        const char *name = json_string_value(json_object_get(m, "name"));
        printf("%-36s %-11s %-22s %-10s %-8.0f %s\n", name ? name : "?", slots, kv, mb,
               num(m, "n_ctx"), until);
    }
    printf("%.0f queued; %.0f requests (%.0f prompt, %.0f generated tokens), p95 latency "
           "%.0f ms, error rate %.1f%%\n",
           num(h, "queue_depth"), num(h, "requests_total"),
           num(h, "prompt_tokens_total"), num(h, "generated_tokens_total"),
           num(h, "latency_p95_ms"), 100.0 * num(h, "error_rate"));
    json_decref(h);
    buf_release(&body);
    return 0;
}
