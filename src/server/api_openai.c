/*
 * api_openai.c - POST /v1/chat/completions and /v1/completions (OpenAI shapes).
 *
 * Supported chat fields: model, messages (system/developer/user/assistant/tool roles),
 * max_tokens and max_completion_tokens, stream, stream_options.include_usage,
 * temperature (0-2), top_p, stop (string or list of up to 4), seed, tools, tool_choice,
 * response_format. n must be 1. Other fields (logprobs, user, metadata, store...) are
 * ignored. Without max_tokens a chat may use all the context the prompt leaves; a legacy
 * completion defaults to 16 tokens as OpenAI's does.
 */
#include <limits.h>
#include <string.h>

#include "server/api.h"
#include "server/validate.h"

static bool check_sampling(struct http_req *r, struct api_request *q)
{
    long n = 1, seed = -1;
    bool has_seed = false;
    if (!v_bool(r, "stream", &q->stream) ||
        !v_number(r, "temperature", 0.0, 2.0, &q->temperature) ||
        !v_number(r, "top_p", 0.0, 1.0, &q->top_p) ||
        !v_stop_list(r, "stop", true, 4, q->stop, &q->n_stop) ||
        !v_int(r, "n", false, 1, 1, &n, NULL) ||
        !v_int(r, "seed", false, LONG_MIN, LONG_MAX, &seed, &has_seed))
        return false;
    if (has_seed)
        q->seed = (uint64_t)seed;
    json_t *so = json_object_get(r->json, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            http_reply_error(r, PV_ERR_INVALID, "stream_options",
                             "stream_options: Input should be a valid dictionary");
            return false;
        }
        q->include_usage = json_is_true(json_object_get(so, "include_usage"));
    }
    return true;
}

static bool check_max_tokens(struct http_req *r, struct api_request *q, int dflt)
{
    long mt = 0, mct = 0;
    bool has_mt = false, has_mct = false;
    const long lim = r->srv->p.max_tokens_limit;
    if (!v_int(r, "max_tokens", false, 1, lim, &mt, &has_mt) ||
        !v_int(r, "max_completion_tokens", false, 1, lim, &mct, &has_mct))
        return false;
    q->max_tokens = has_mct ? (int)mct : has_mt ? (int)mt : dflt;
    return true;
}

void http_handle_chat(struct http_req *r)
{
    struct api_request q;
    json_t *msgs, *tools;
    api_request_init(&q, API_CHAT);
    if (!v_model(r, true, &q.model) || !v_array(r, "messages", true, &msgs))
        return;
    if (json_array_size(msgs) == 0) {
        http_reply_error(r, PV_ERR_INVALID, "messages", "messages: at least one message is required");
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu: expected an object with a string role", i);
            return;
        }
    }
    if (!v_array(r, "tools", false, &tools) || !check_max_tokens(r, &q, 0) ||
        !check_sampling(r, &q))
        return;
    json_t *rf = json_object_get(r->json, "response_format");
    if (rf && !json_is_null(rf) && !json_is_object(rf)) {
        http_reply_error(r, PV_ERR_INVALID, "response_format",
                         "response_format: Input should be a valid dictionary");
        return;
    }
    api_generate(r, &q);
}

void http_handle_completions(struct http_req *r)
{
    struct api_request q;
    api_request_init(&q, API_COMPLETIONS);
    if (!v_model(r, true, &q.model))
        return;
    json_t *p = json_object_get(r->json, "prompt");
    if (!p || json_is_null(p)) {
        http_reply_error(r, PV_ERR_INVALID, "prompt", "prompt: Field required");
        return;
    }
    if (!json_is_string(p)) {
        if (!json_is_array(p) || json_array_size(p) != 1 ||
            !json_is_string(json_array_get(p, 0))) {
            http_reply_error(r, PV_ERR_INVALID, "prompt",
                             "prompt: expected a string (or a list of exactly one string)");
            return;
        }
        p = json_array_get(p, 0);
    }
    q.prompt_text = json_string_value(p);
    if (!check_max_tokens(r, &q, 16) || !check_sampling(r, &q))
        return;
    api_generate(r, &q);
}
