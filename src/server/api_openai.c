/*
 * api_openai.c - POST /v1/chat/completions and /v1/completions (OpenAI shapes).
 *
 * Supported chat fields: model, messages (system/developer/user/assistant/tool/function
 * roles; others 400 in OpenAI's wording; assistant tool-call arguments must be JSON
 * text), max_tokens and max_completion_tokens, stream, stream_options.include_usage,
 * temperature (0-2), top_p, stop (string or list of up to 4), seed, tools, tool_choice,
 * response_format, n (1-128 choices, generated one after another on the cached prompt; a
 * seed gives choice i the seed + i), logprobs/top_logprobs (chat) and logprobs
 * (completions, 0-20): the log-softmax of the model's raw logits. Other fields (user,
 * metadata, store...) are ignored. Without max_tokens a chat generates at most
 * API_DEFAULT_MAX_TOKENS (4096, or --max-tokens-limit when lower); a legacy completion
 * defaults to 16 tokens as OpenAI's does. Both are capped to what the context leaves.
 */
#include <limits.h>
#include <string.h>

#include "server/api.h"
#include "server/gen.h"
#include "server/validate.h"

/* Chat: logprobs (bool) and top_logprobs (0-20, only with logprobs). Completions:
 * logprobs (int 0-20: alternatives per token). */
static bool check_logprobs(struct http_req *r, struct api_request *q)
{
    if (q->kind == API_COMPLETIONS) {
        long lp = -1;
        if (!v_int(r, "logprobs", false, 0, GEN_MAX_TOP_LOGPROBS, &lp, NULL))
            return false;
        q->logprobs = (int)lp;
        return true;
    }
    bool want = false, has_top = false;
    long top = 0;
    if (!v_bool(r, "logprobs", &want) ||
        !v_int(r, "top_logprobs", false, 0, GEN_MAX_TOP_LOGPROBS, &top, &has_top))
        return false;
    if (has_top && !want) {
        http_reply_error(r, PV_ERR_INVALID, "top_logprobs",
                         "Invalid value for 'top_logprobs': 'logprobs' must be set to true "
                         "when 'top_logprobs' is set.");
        return false;
    }
    q->logprobs = want ? (int)top : -1;
    return true;
}

static bool check_sampling(struct http_req *r, struct api_request *q)
{
    long n = 1, seed = -1;
    bool has_seed = false;
    if (!v_bool(r, "stream", &q->stream) ||
        !v_number(r, "temperature", 0.0, 2.0, &q->temperature) ||
        !v_number(r, "top_p", 0.0, 1.0, &q->top_p) ||
        !v_stop_list(r, "stop", true, 4, q->stop, &q->n_stop) ||
        !v_int(r, "n", false, 1, API_MAX_CHOICES, &n, NULL) ||
        !v_int(r, "seed", false, LONG_MIN, LONG_MAX, &seed, &has_seed) ||
        !check_logprobs(r, q))
        return false;
    q->n_choices = (int)n;
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
    q->max_tokens = has_mct ? (int)mct : has_mt ? (int)mt : (int)PV_MIN((long)dflt, lim);
    return true;
}

/* The tool calls of an assistant message: each a function with a name and arguments that
 * are JSON text (or an object). */
static bool check_tool_calls(struct http_req *r, json_t *tcs, size_t i)
{
    size_t k;
    json_t *tc;
    if (!tcs || json_is_null(tcs))
        return true;
    if (!json_is_array(tcs)) {
        http_reply_errorf(r, PV_ERR_INVALID, "messages",
                          "Invalid type for 'messages[%zu].tool_calls': expected an array.", i);
        return false;
    }
    json_array_foreach(tcs, k, tc) {
        json_t *fn = json_object_get(tc, "function");
        if (!json_is_string(json_object_get(fn, "name"))) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "Missing required parameter: 'messages[%zu].tool_calls[%zu].function.name'.",
                              i, k);
            return false;
        }
        json_t *args = json_object_get(fn, "arguments");
        if (!json_is_string(args) || json_string_length(args) == 0)
            continue;
        json_t *parsed = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
        json_decref(parsed);
        if (!parsed) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "Invalid 'messages[%zu].tool_calls[%zu].function.arguments': "
                              "the value is not valid JSON.", i, k);
            return false;
        }
    }
    return true;
}

/* Each message an object with one of the API's roles; assistant tool calls well formed. */
static bool check_messages(struct http_req *r, json_t *msgs)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool",
                                        "function"};
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "Invalid type for 'messages[%zu]': expected an object.", i);
            return false;
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "Missing required parameter: 'messages[%zu].role'.", i);
            return false;
        }
        bool known = false;
        for (size_t k = 0; k < PV_ARRAY_LEN(roles); k++)
            known = known || strcmp(role, roles[k]) == 0;
        if (!known) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "Invalid value: '%.64s'. Supported values are: 'system', "
                              "'assistant', 'user', 'function', 'tool', and 'developer'.",
                              role);
            return false;
        }
        if (!strcmp(role, "assistant") &&
            !check_tool_calls(r, json_object_get(m, "tool_calls"), i))
            return false;
    }
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
    if (!check_messages(r, msgs))
        return;
    if (!v_array(r, "tools", false, &tools) || !check_max_tokens(r, &q, API_DEFAULT_MAX_TOKENS) ||
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
