/*
 * routes.c - the route table of the server: one row per endpoint, naming its handler.
 *
 * A new endpoint is one row here plus the file that implements its handler. http.c looks
 * a request's path up once (http_route_find), applies the row's method, auth and body
 * rules, and calls the handler. The API rows also answer without their /v1 prefix
 * ("/chat/completions"), as clients whose base URL lacks it send them.
 */
#include <string.h>

#include "server/http.h"

static void handle_hello(struct http_req *r)
{
    http_reply_text(r, 200, "text/plain", "pensieve is running\n");
}

static void handle_models(struct http_req *r)
{
    http_handle_models(r, NULL);
}

static void handle_model(struct http_req *r)
{
    /* the id is request text for the reply's JSON and the log: UTF-8 without newlines */
    json_t *valid = json_string(r->path_arg); /* NULL unless UTF-8 */
    json_decref(valid);
    if (!valid || strpbrk(r->path_arg, "\r\n")) {
        http_reply_error(r, PV_ERR_NOT_FOUND, "model",
                         "model: the id in the path is not valid UTF-8 text");
        return;
    }
    http_handle_models(r, r->path_arg);
}

static const struct http_route routes[] = {
    {"/", "GET", HTTP_API_PLAIN, HTTP_ROUTE_PUBLIC, http_handle_web},
    {"/api/hello", "GET", HTTP_API_PLAIN, 0, handle_hello},
    {"/health", "GET", HTTP_API_PLAIN, HTTP_ROUTE_PUBLIC, http_handle_health},
    {"/metrics", "GET", HTTP_API_PLAIN, 0, http_handle_metrics},
    {"/v1/models", "GET", HTTP_API_OPENAI, HTTP_ROUTE_API_BY_CLIENT, handle_models},
    {"/v1/models/{id}", "GET", HTTP_API_OPENAI, HTTP_ROUTE_API_BY_CLIENT, handle_model},
    {"/v1/messages", "POST", HTTP_API_ANTHROPIC, HTTP_ROUTE_BODY, http_handle_messages},
    {"/v1/messages/count_tokens", "POST", HTTP_API_ANTHROPIC, HTTP_ROUTE_BODY,
     http_handle_count_tokens},
    {"/v1/chat/completions", "POST", HTTP_API_OPENAI, HTTP_ROUTE_BODY, http_handle_chat},
    {"/v1/completions", "POST", HTTP_API_OPENAI, HTTP_ROUTE_BODY, http_handle_completions},
};

/* Does `path` match the route path `rp` ("{id}" at its end: one or more characters)? */
static bool path_matches(const char *rp, const char *path, const char **arg)
{
    const char *brace = strstr(rp, "{id}");
    if (!brace)
        return strcmp(rp, path) == 0;
    const size_t n = (size_t)(brace - rp);
    if (strncmp(rp, path, n) != 0 || path[n] == '\0')
        return false;
    *arg = path + n;
    return true;
}

const struct http_route *http_route_find(const char *path, const char **arg)
{
    *arg = NULL;
    for (size_t i = 0; i < PV_ARRAY_LEN(routes); i++) {
        const char *rp = routes[i].path;
        if (path_matches(rp, path, arg) ||
            (strncmp(rp, "/v1/", 4) == 0 && path_matches(rp + 3, path, arg)))
            return &routes[i];
    }
    return NULL;
}
