/*
 * gen.c - the engine thread and the per-request token channel (see gen.h).
 *
 * Generation has not landed in this build: the engine checks that the model file is
 * readable and reports its context size, and gen_submit answers that generation is not
 * available. The HTTP layer (routing, auth, limits, validation, health, metrics) is
 * complete on top of this interface.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/gen.h"
#include "server/http.h"

struct http_engine {
    int n_ctx;
};

enum pv_status gen_engine_new(struct http_server *srv, struct http_engine **out,
                              struct pv_err *err)
{
    *out = NULL;
    if (access(srv->p.model_path, R_OK) != 0)
        return pv_err_set(err, PV_ERR_IO, "cannot read model '%s'", srv->p.model_path);
    struct http_engine *e = xcalloc(1, sizeof(*e));
    e->n_ctx = srv->p.n_ctx > 0 ? srv->p.n_ctx : 4096;
    *out = e;
    return PV_OK;
}

void gen_engine_shutdown(struct http_engine *e) { PV_UNUSED(e); }
void gen_engine_free(struct http_engine *e) { free(e); }
int gen_engine_n_ctx(const struct http_engine *e) { return e ? e->n_ctx : 0; }
struct pv_model *gen_engine_model(const struct http_engine *e) { PV_UNUSED(e); return NULL; }

void gen_engine_usage(const struct http_engine *e, struct gen_usage *out)
{
    memset(out, 0, sizeof(*out));
    if (e)
        out->kv_capacity = (uint64_t)e->n_ctx;
}

enum pv_status gen_submit(struct http_engine *e, const struct gen_params *gp,
                          struct gen_job **out, struct pv_err *err)
{
    PV_UNUSED(e);
    PV_UNUSED(gp);
    *out = NULL;
    return pv_err_set(err, PV_ERR_UNSUPPORTED, "generation is not available in this build yet");
}

void gen_wait(struct gen_job *j, size_t from, int timeout_ms, int32_t *out, size_t cap,
              size_t *n_out, struct gen_progress *prog)
{
    PV_UNUSED(j); PV_UNUSED(from); PV_UNUSED(timeout_ms); PV_UNUSED(out); PV_UNUSED(cap);
    *n_out = 0;
    memset(prog, 0, sizeof(*prog));
    prog->done = true;
}

void gen_cancel(struct gen_job *j) { PV_UNUSED(j); }
void gen_release(struct gen_job *j) { PV_UNUSED(j); }
