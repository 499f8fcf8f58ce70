/*
 * info.c - the endpoints that describe the server: /health, /metrics, /v1/models.
 *
 * None of them touches an engine thread: they read counters and the models' fixed
 * facts, so they answer at once even while a long prompt is being processed. /health
 * lists the loaded models; /v1/models every installed one, saying which are loaded. Model
 * objects carry the union of the Anthropic (type, display_name, created_at) and OpenAI
 * (object, created, owned_by) fields so that both SDKs parse the same listing; the outer
 * list has both shapes' paging fields too.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/gen.h"
#include "server/http.h"
#include "server/registry.h"

void http_handle_health(struct http_req *r)
{
    struct http_server *srv = r->srv;
    struct reg_info *v;
    const size_t n = registry_list(srv->reg, true, &v);
    json_t *o = json_object();
    json_object_set_new(o, "status",
                        json_string(atomic_load(&srv->draining) ? "draining" : "ok"));
    json_object_set_new(o, "model", json_string(srv->model_name));
    json_object_set_new(o, "version", json_string(PV_VERSION));
    /* the top-level figures: the default model's context, the engines' sums */
    int n_ctx = 0, busy = 0;
    uint64_t used = 0, cap = 0, preempted = 0;
    json_t *models = json_array();
    for (size_t i = 0; i < n; i++) {
        if (v[i].is_default || !n_ctx)
            n_ctx = v[i].n_ctx;
        busy += v[i].slots_busy;
        used += v[i].kv_used;
        cap += v[i].kv_capacity;
        preempted += v[i].kv_preempted;
        json_t *m = json_pack("{s:s, s:b, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:f}", "name",
                              v[i].name, "default", v[i].is_default, "requests", v[i].in_use,
                              "slots_busy", v[i].slots_busy, "queued", v[i].queued, "n_ctx",
                              v[i].n_ctx, "kv_cache_used_tokens", (json_int_t)v[i].kv_used,
                              "kv_cache_capacity_tokens", (json_int_t)v[i].kv_capacity,
                              "memory_bytes", (json_int_t)v[i].mem_bytes, "idle_s",
                              v[i].idle_s);
        json_object_set_new(m, "expires_in_s", v[i].expires_in_s < 0
                                                   ? json_null()
                                                   : json_real(v[i].expires_in_s));
        json_array_append_new(models, m);
    }
    free(v);
    json_object_set_new(o, "n_ctx", json_integer(n_ctx));
    json_object_set_new(o, "slots", json_integer(srv->p.n_parallel));
    json_object_set_new(o, "slots_busy", json_integer(busy));
    json_object_set_new(o, "kv_cache_used_tokens", json_integer((json_int_t)used));
    json_object_set_new(o, "kv_cache_capacity_tokens", json_integer((json_int_t)cap));
    json_object_set_new(o, "kv_cache_preemptions", json_integer((json_int_t)preempted));
    json_object_set_new(o, "models", models);
    struct pv_sched_usage cu;
    uint64_t mem_bytes;
    registry_cache_usage(srv->reg, &cu, &mem_bytes);
    const struct pv_sched_usage *c = &cu;
    json_t *disk = c->disk_enabled
        ? json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ready",
                    c->disk_ready, "hit_tokens", (json_int_t)c->disk_hit_tokens, "hits",
                    (json_int_t)c->disk_hits, "misses", (json_int_t)c->disk_misses, "bytes_read",
                    (json_int_t)c->disk_bytes_read, "writes", (json_int_t)c->disk_writes,
                    "bytes_written", (json_int_t)c->disk_bytes_written, "evictions",
                    (json_int_t)c->disk_evictions, "invalid", (json_int_t)c->disk_invalid,
                    "dropped", (json_int_t)c->disk_dropped, "files", (json_int_t)c->disk_files,
                    "bytes", (json_int_t)c->disk_bytes, "max_bytes", (json_int_t)c->disk_max_bytes)
        : json_null();
    json_object_set_new(o, "prompt_cache",
                        json_pack("{s:{s:I, s:I, s:I, s:I}, s:o}", "memory", "lookup_tokens",
                                  (json_int_t)c->prompt_tokens, "hit_tokens",
                                  (json_int_t)c->mem_hit_tokens, "cached_tokens",
                                  (json_int_t)c->kv_positions_cached, "bytes",
                                  (json_int_t)mem_bytes,
                                  "disk", disk));
    http_stats_health(o, srv);
    http_reply_json(r, 200, o);
}

void http_handle_metrics(struct http_req *r)
{
    struct pv_buf b = PV_BUF_INIT;
    http_stats_metrics(&b, r->srv);
    http_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data);
    buf_release(&b);
}

/* One model in both APIs' shapes; n_ctx 0 when not loaded (the limits are not known). */
static json_t *model_object(const struct http_server *srv, const char *id, bool loaded,
                            int n_ctx)
{
    char created_at[32];
    time_t t = (time_t)srv->created_unix;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(created_at, sizeof(created_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}", "id", id, "type", "model",
                          "object", "model", "display_name", id, "created_at", created_at,
                          "created", (json_int_t)srv->created_unix, "owned_by", "pensieve",
                          "loaded", loaded);
    if (n_ctx > 0) {
        json_object_set_new(o, "max_input_tokens", json_integer(n_ctx));
        json_object_set_new(o, "max_tokens", json_integer(n_ctx));
    }
    return o;
}

/* The entry of `name` in v (a model of the directory, or the default for any other). */
static const struct reg_info *find_info(const struct http_server *srv, const struct reg_info *v,
                                        size_t n, const char *name)
{
    const struct reg_info *def = NULL;
    for (size_t i = 0; i < n; i++) {
        if (name && strcmp(v[i].name, name) == 0)
            return &v[i];
        if (v[i].is_default)
            def = &v[i];
    }
    PV_UNUSED(srv);
    return def;
}

void http_handle_models(struct http_req *r, const char *id)
{
    const struct http_server *srv = r->srv;
    struct reg_info *v;
    const size_t n = registry_list(srv->reg, false, &v);
    if (id) {
        /* any name is answered (by the default model when it names no installed one)
           unless aliases make the server strict */
        if (!http_model_allowed(srv, id)) {
            free(v);
            http_reply_errorf(r, PV_ERR_NOT_FOUND, "model", "model: %s", id);
            return;
        }
        const struct reg_info *i = find_info(srv, v, n, id);
        snprintf(r->model, sizeof(r->model), "%s", id);
        http_reply_json(r, 200, model_object(srv, id, i && i->loaded, i ? i->n_ctx : 0));
        free(v);
        return;
    }
    json_t *data = json_array();
    const struct reg_info *def = find_info(srv, v, n, NULL);
    /* the default model and its aliases, then the other installed models */
    if (def)
        json_array_append_new(data, model_object(srv, def->name, def->loaded, def->n_ctx));
    for (int i = 0; i < srv->p.n_aliases; i++)
        if (strcmp(srv->p.aliases[i], srv->model_name) != 0)
            json_array_append_new(data, model_object(srv, srv->p.aliases[i],
                                                     def && def->loaded, def ? def->n_ctx : 0));
    for (size_t i = 0; i < n; i++)
        if (&v[i] != def)
            json_array_append_new(data, model_object(srv, v[i].name, v[i].loaded, v[i].n_ctx));
    free(v);
    const char *first = json_string_value(json_object_get(json_array_get(data, 0), "id"));
    const char *last =
        json_string_value(json_object_get(json_array_get(data, json_array_size(data) - 1), "id"));
    json_t *o = json_pack("{s:s, s:o, s:b, s:s?, s:s?}", "object", "list", "data", data,
                          "has_more", 0, "first_id", first, "last_id", last);
    http_reply_json(r, 200, o);
}
