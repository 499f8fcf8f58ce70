/*
 * status.c - the status table of pensieve.h and the caller-owned error detail.
 *
 * One X-macro table (PV_STATUS_MAP) gives every status its name, message, HTTP status
 * and error types of both APIs; this file turns it into lookups. pv_err_set is the one
 * way a failure is recorded: `return pv_err_set(err, PV_ERR_FORMAT, "...", ...)`.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct status_row {
    enum pv_status status;
    const char *name;
    const char *message;
    int http;
    const char *anthropic_type;
    const char *openai_type;
};

static const struct status_row status_rows[] = {
#define PV_STATUS_ROW(n, v, s, m, h, a, o) {n, s, m, h, a, o},
    PV_STATUS_MAP(PV_STATUS_ROW)
#undef PV_STATUS_ROW
};

static const struct status_row *status_find(enum pv_status s)
{
    for (size_t i = 0; i < PV_ARRAY_LEN(status_rows); i++)
        if (status_rows[i].status == s)
            return &status_rows[i];
    return NULL;
}

const char *pv_status_name(enum pv_status s)
{
    const struct status_row *r = status_find(s);
    return r ? r->name : "unknown";
}

const char *pv_status_str(enum pv_status s)
{
    const struct status_row *r = status_find(s);
    return r ? r->message : "unknown status";
}

int pv_status_http(enum pv_status s)
{
    const struct status_row *r = status_find(s);
    return r ? r->http : 500;
}

const char *pv_status_anthropic_type(enum pv_status s)
{
    const struct status_row *r = status_find(s);
    return r ? r->anthropic_type : "api_error";
}

const char *pv_status_openai_type(enum pv_status s)
{
    const struct status_row *r = status_find(s);
    return r ? r->openai_type : "server_error";
}

enum pv_status pv_err_set(struct pv_err *err, enum pv_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->status = status;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return status;
}

void pv_err_clear(struct pv_err *err)
{
    if (err) {
        err->status = PV_OK;
        err->msg[0] = '\0';
    }
}

const char *pv_version(void)
{
    return PV_VERSION;
}

enum pv_status pv_models_dir(char *out, size_t cap)
{
    const char *env = getenv("PENSIEVE_MODELS");
    const char *cache = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;

    if (env && *env)
        n = snprintf(out, cap, "%s", env);
    else if (cache && *cache)
        n = snprintf(out, cap, "%s/pensieve/models", cache);
    else
        n = snprintf(out, cap, "%s/.cache/pensieve/models", home && *home ? home : ".");
    if (n < 0 || (size_t)n >= cap)
        return PV_ERR_INVALID;
    return PV_OK;
}

void pv_bug(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "pensieve: BUG at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
