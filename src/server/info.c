/*
 * info.c - the endpoints that describe the server: /health, /metrics, /v1/models.
 *
 * None of them touches the engine thread: they read counters and the model's fixed
 * facts, so they answer at once even while a long prompt is being processed. Model
 * objects carry the union of the Anthropic (type, display_name, created_at) and OpenAI
 * (object, created, owned_by) fields so that both SDKs parse the same listing; the outer
 * list has both shapes' paging fields too.
 */
#include <string.h>
#include <time.h>

#include "server/gen.h"
#include "server/http.h"

void http_handle_health(struct http_req *r)
{
    struct http_server *srv = r->srv;
    json_t *o = json_object();
    json_object_set_new(o, "status",
                        json_string(atomic_load(&srv->draining) ? "draining" : "ok"));
    json_object_set_new(o, "model", json_string(srv->model_name));
    json_object_set_new(o, "version", json_string(PV_VERSION));
    json_object_set_new(o, "n_ctx", json_integer(gen_engine_n_ctx(srv->engine)));
    json_object_set_new(o, "slots", json_integer(srv->p.n_parallel));
    struct gen_usage u = {0};
    gen_engine_usage(srv->engine, &u);
    json_object_set_new(o, "slots_busy", json_integer(u.slots_busy));
    json_object_set_new(o, "kv_cache_used_tokens", json_integer((json_int_t)u.kv_used));
    json_object_set_new(o, "kv_cache_capacity_tokens", json_integer((json_int_t)u.kv_capacity));
    json_object_set_new(o, "kv_cache_preemptions", json_integer((json_int_t)u.kv_preempted));
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

static json_t *model_object(const struct http_server *srv, const char *id)
{
    char created_at[32];
    time_t t = (time_t)srv->created_unix;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(created_at, sizeof(created_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const int n_ctx = gen_engine_n_ctx(srv->engine);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:i}", "id", id, "type", "model",
                     "object", "model", "display_name", id, "created_at", created_at,
                     "created", (json_int_t)srv->created_unix, "owned_by", "pensieve",
                     "max_input_tokens", n_ctx, "max_tokens", n_ctx);
}

void http_handle_models(struct http_req *r, const char *id)
{
    const struct http_server *srv = r->srv;
    if (id) {
        /* any name is answered by the loaded model unless aliases make the server strict */
        if (!http_model_allowed(srv, id)) {
            http_reply_errorf(r, PV_ERR_NOT_FOUND, "model", "model: %s", id);
            return;
        }
        snprintf(r->model, sizeof(r->model), "%s", id);
        http_reply_json(r, 200, model_object(srv, id));
        return;
    }
    json_t *data = json_array();
    json_array_append_new(data, model_object(srv, srv->model_name));
    for (int i = 0; i < srv->p.n_aliases; i++)
        if (strcmp(srv->p.aliases[i], srv->model_name) != 0)
            json_array_append_new(data, model_object(srv, srv->p.aliases[i]));
    const char *first = json_string_value(json_object_get(json_array_get(data, 0), "id"));
    const char *last =
        json_string_value(json_object_get(json_array_get(data, json_array_size(data) - 1), "id"));
    json_t *o = json_pack("{s:s, s:o, s:b, s:s, s:s}", "object", "list", "data", data,
                          "has_more", 0, "first_id", first, "last_id", last);
    http_reply_json(r, 200, o);
}
