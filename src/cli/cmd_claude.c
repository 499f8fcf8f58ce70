/*
 * cmd_claude.c - `pensieve claude`: start the Claude Code CLI against a running server,
 * on a machine without internet.
 *
 * Checks that the server answers, records in Claude Code's config (~/.claude.json, or
 * $CLAUDE_CONFIG_DIR/.claude.json) that onboarding is done and that the local API key is
 * approved - the two questions that otherwise stop it offline - then replaces itself with
 * `claude`, pointed at the server by ANTHROPIC_BASE_URL and with its network extras off.
 * --lean gives Claude Code only its file and shell tools, for small local models.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

#define LEAN_TOOLS "Read,Edit,Write,Bash,Glob,Grep"

static struct cli_opt claude_opts[] = {
    {"host", 0, CLI_STRING, "PENSIEVE_HOST", "ADDR", "address of the server", "127.0.0.1"},
    {"port", 'p', CLI_INT, "PENSIEVE_PORT", "N", "port of the server", "8080", 1, 65535},
    {"api-key", 0, CLI_STRING, "PENSIEVE_API_KEY", "KEY",
     "the server's --api-key (any text when it has none)", "local"},
    {"claude", 0, CLI_STRING, "PENSIEVE_CLAUDE", "PATH",
     "the Claude Code CLI (default: `claude` on PATH, else .tools/claude-code of this "
     "checkout)", NULL},
    {"no-config", 0, CLI_FLAG, NULL, NULL, "leave Claude Code's config file alone", NULL},
    {"lean", 0, CLI_FLAG, "PENSIEVE_CLAUDE_LEAN", NULL,
     "only Claude Code's file and shell tools (--tools " LEAN_TOOLS "): its first prompt "
     "drops from about 11,700 to 5,100 tokens (read in half the time; a small model calls "
     "its tools only then)", NULL},
    {"print-env", 0, CLI_FLAG, NULL, NULL,
     "print the environment `claude` would get (for a shell) and exit", NULL},
    {0},
};

static int claude_main(int argc, char **argv);

const struct cli_command cli_cmd_claude = {
    "claude",
    "start Claude Code against a running server (offline-ready)",
    "pensieve claude [options] [-- CLAUDE-ARGS...]",
    "Needs a running `pensieve serve` (or `make run`) with a chat model. Sets\n"
    "hasCompletedOnboarding and approves the API key in Claude Code's config (otherwise\n"
    "an offline Claude Code stops at \"Unable to connect to Anthropic services\" and then\n"
    "asks whether to use the key), then runs `claude CLAUDE-ARGS` with\n"
    "ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY and its telemetry, updater and error\n"
    "reporting off. Example: pensieve claude -- -p \"say hi\"\n"
    "With a small model (the default 0.5B) use --lean: Claude Code's full tool set and\n"
    "skill list are more than it can follow, and it answers without using a tool.",
    claude_main,
};

static size_t discard(char *data, size_t size, size_t n, void *user)
{
    return size * n;
}

static bool server_up(const char *url)
{
    CURL *c = curl_easy_init();
    long code = 0;
    if (!c)
        return false;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    bool ok = curl_easy_perform(c) == CURLE_OK &&
              curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
    curl_easy_cleanup(c);
    return ok;
}

/* Set onboarding done and approve the key (Claude Code keeps its last 20 characters). */
static void update_config(const char *key)
{
    char path[4096], tmp[4200];
    const char *dir = getenv("CLAUDE_CONFIG_DIR");
    const char *home = getenv("HOME");
    json_error_t jerr;
    json_t *root;

    if (dir && *dir)
        snprintf(path, sizeof(path), "%s/.claude.json", dir);
    else
        snprintf(path, sizeof(path), "%s/.claude.json", home && *home ? home : ".");
    if (access(path, F_OK) == 0) {
        root = json_load_file(path, 0, &jerr);
        if (!json_is_object(root))
            cli_die("claude", 1, "%s is not a JSON object (line %d: %s); fix or move it, or "
                                 "use --no-config", path, jerr.line, jerr.text);
    } else {
        root = json_object();
    }
    json_object_set_new(root, "hasCompletedOnboarding", json_true());
    json_t *resp = json_object_get(root, "customApiKeyResponses");
    if (!json_is_object(resp)) {
        resp = json_object();
        json_object_set_new(root, "customApiKeyResponses", resp);
    }
    json_t *approved = json_object_get(resp, "approved");
    if (!json_is_array(approved)) {
        approved = json_array();
        json_object_set_new(resp, "approved", approved);
    }
    if (!json_is_array(json_object_get(resp, "rejected")))
        json_object_set_new(resp, "rejected", json_array());
    size_t len = strlen(key);
    const char *tail = key + (len > 20 ? len - 20 : 0);
    bool have = false;
    size_t i;
    json_t *v;
    json_array_foreach(approved, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), tail) == 0)
            have = true;
    }
    if (!have)
        json_array_append_new(approved, json_string(tail));
    snprintf(tmp, sizeof(tmp), "%s.pensieve-tmp", path);
    if (json_dump_file(root, tmp, JSON_INDENT(2)) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        cli_die("claude", 1, "cannot write %s: %s", path, strerror(errno));
    }
    json_decref(root);
}

static const char *find_claude(const char *given)
{
    static char path[4096];
    if (given)
        return given;
    const char *p = getenv("PATH");
    while (p && *p) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(path, sizeof(path), "%.*s/claude", (int)n, p);
        if (n && access(path, X_OK) == 0)
            return path;
        p = end ? end + 1 : NULL;
    }
    snprintf(path, sizeof(path), ".tools/claude-code/node_modules/.bin/claude");
    if (access(path, X_OK) == 0)
        return path;
    cli_die("claude", 1, "the Claude Code CLI was not found on PATH nor in "
                         ".tools/claude-code (npm install -g @anthropic-ai/claude-code, or give "
                         "--claude PATH)");
}

static int claude_main(int argc, char **argv)
{
    char *pos[256];
    int n_pos = 0;
    char base[512], health[600];

    cli_parse(&cli_cmd_claude, claude_opts, argc, argv, pos, 250, &n_pos);
    const char *host = cli_get(claude_opts, "host")->str;
    int port = (int)cli_get(claude_opts, "port")->i;
    const char *key = cli_get(claude_opts, "api-key")->str;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(base, sizeof(base), "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    if (cli_get(claude_opts, "print-env")->i) {
        printf("export ANTHROPIC_BASE_URL=%s\nexport ANTHROPIC_API_KEY=%s\n"
               "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 "
               "DISABLE_AUTOUPDATER=1 DISABLE_ERROR_REPORTING=1\n"
               "export API_TIMEOUT_MS=1800000 CLAUDE_STREAM_FIRST_BYTE_TIMEOUT_MS=1800000 "
               "CLAUDE_STREAM_IDLE_TIMEOUT_MS=1800000 CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS=1800000\n",
               base, key);
        return 0;
    }
    snprintf(health, sizeof(health), "%s/health", base);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!server_up(health))
        cli_die("claude", 1, "no pensieve server answers at %s: start one first (`pensieve "
                             "serve`, or `make run`), or give its --host/--port", base);
    const char *claude = find_claude(cli_get(claude_opts, "claude")->str);
    if (!cli_get(claude_opts, "no-config")->i)
        update_config(key);
    setenv("ANTHROPIC_BASE_URL", base, 1);
    setenv("ANTHROPIC_API_KEY", key, 1);
    unsetenv("ANTHROPIC_AUTH_TOKEN");
    setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1", 1);
    setenv("DISABLE_TELEMETRY", "1", 1);
    setenv("DISABLE_AUTOUPDATER", "1", 1);
    setenv("DISABLE_ERROR_REPORTING", "1", 1);
    /* the first prompt of a session takes minutes to read on a small CPU: Claude Code's
     * request, first-byte and stream-idle watchdogs at their largest (30 min) */
    setenv("API_TIMEOUT_MS", "1800000", 0);
    setenv("CLAUDE_STREAM_FIRST_BYTE_TIMEOUT_MS", "1800000", 0);
    setenv("CLAUDE_STREAM_IDLE_TIMEOUT_MS", "1800000", 0);
    setenv("CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS", "1800000", 0);
    char **args = xcalloc((size_t)n_pos + 4, sizeof(*args));
    int n_args = 0;
    args[n_args++] = (char *)claude;
    for (int i = 0; i < n_pos; i++)
        args[n_args++] = pos[i];
    bool tools_given = false;
    for (int i = 0; i < n_pos; i++)
        tools_given = tools_given || strcmp(pos[i], "--tools") == 0 ||
                      strncmp(pos[i], "--tools=", 8) == 0;
    if (cli_get(claude_opts, "lean")->i && !tools_given) {
        /* after the prompt: Claude Code reads the words after --tools as tool names */
        args[n_args++] = "--tools";
        args[n_args++] = LEAN_TOOLS;
    }
    execv(claude, args);
    cli_die("claude", 1, "cannot run %s: %s", claude, strerror(errno));
}
