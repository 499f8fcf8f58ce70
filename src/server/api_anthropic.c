/*
 * api_anthropic.c - POST /v1/messages and /v1/messages/count_tokens (Anthropic shapes).
 *
 * Supported request fields: model, max_tokens, messages, system, stream, temperature,
 * top_p, top_k, stop_sequences, tools, tool_choice, thinking. Everything else
 * (metadata, context_management, output_config, cache_control, service_tier, betas...)
 * is accepted and ignored. max_tokens must be in [1, --max-tokens-limit]; it is capped
 * to what the context has left after the prompt, and a prompt that does not fit is a
 * 400 "prompt is too long: N tokens > M maximum".
 */
#include <string.h>

#include "server/api.h"
#include "server/validate.h"

/* A required string field of content block j of message i; replies 400 when absent. */
static bool block_string(struct http_req *r, json_t *blk, size_t i, size_t j, const char *type,
                         const char *key)
{
    json_t *v = json_object_get(blk, key);
    if (json_is_string(v))
        return true;
    http_reply_errorf(r, PV_ERR_INVALID, "messages", "messages.%zu.content.%zu.%s.%s: %s", i, j,
                      type, key, v ? "Input should be a valid string" : "Field required");
    return false;
}

/*
 * Content blocks as the Messages API checks them: text needs text, tool_use an id, a name
 * and an input object, tool_result a tool_use_id, thinking its thinking and signature.
 * The wording is the API's ("messages.1.content.0.tool_use.id: Field required"). Other
 * block types (image, document, ...) are left to the chat layer.
 */
static bool check_blocks(struct http_req *r, json_t *content, size_t i)
{
    size_t j;
    json_t *b;
    json_array_foreach(content, j, b) {
        if (!json_is_object(b)) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu.content.%zu: Input should be a valid dictionary", i, j);
            return false;
        }
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu.content.%zu.type: Field required", i, j);
            return false;
        }
        if (!strcmp(type, "text") && !block_string(r, b, i, j, type, "text"))
            return false;
        if (!strcmp(type, "tool_use")) {
            if (!block_string(r, b, i, j, type, "id") || !block_string(r, b, i, j, type, "name"))
                return false;
            json_t *input = json_object_get(b, "input");
            if (!json_is_object(input)) {
                http_reply_errorf(r, PV_ERR_INVALID, "messages",
                                  "messages.%zu.content.%zu.tool_use.input: %s", i, j,
                                  input ? "Input should be a valid dictionary" : "Field required");
                return false;
            }
        }
        if (!strcmp(type, "tool_result") && !block_string(r, b, i, j, type, "tool_use_id"))
            return false;
        if (!strcmp(type, "thinking")) {
            if (!block_string(r, b, i, j, type, "thinking") ||
                !block_string(r, b, i, j, type, "signature"))
                return false;
            if (json_string_length(json_object_get(b, "thinking")) == 0) {
                http_reply_errorf(r, PV_ERR_INVALID, "messages",
                                  "messages.%zu.content.%zu.thinking.thinking: each thinking "
                                  "block must contain thinking", i, j);
                return false;
            }
        }
    }
    return true;
}

/* Shape checks of messages[] beyond "is a list": each entry an object with a role of
 * user, assistant or system (Claude Code sends system turns) and string-or-list content
 * of well-formed blocks. Deeper conversion belongs to the chat layer. */
static bool check_messages(struct http_req *r, json_t *msgs, bool allow_empty)
{
    size_t i;
    json_t *m;
    if (!allow_empty && json_array_size(msgs) == 0) {
        http_reply_error(r, PV_ERR_INVALID, "messages", "messages: at least one message is required");
        return false;
    }
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu: Input should be a valid dictionary", i);
            return false;
        }
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_string(role)) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages", "messages.%zu.role: %s", i,
                              role ? "Input should be a valid string" : "Field required");
            return false;
        }
        const char *rs = json_string_value(role);
        if (strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "system")) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu.role: Input should be 'user', 'assistant' or 'system'", i);
            return false;
        }
        if (content && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content)) {
            http_reply_errorf(r, PV_ERR_INVALID, "messages",
                              "messages.%zu.content: Input should be a valid string or list", i);
            return false;
        }
        if (json_is_array(content) && !check_blocks(r, content, i))
            return false;
    }
    return true;
}

/* Bytes of text in a system value (string or text blocks). */
static long text_bytes(const json_t *v)
{
    if (json_is_string(v))
        return (long)json_string_length(v);
    long n = 0;
    size_t i;
    json_t *b;
    if (json_is_array(v))
        json_array_foreach(v, i, b) n += text_bytes(json_object_get(b, "text"));
    return n;
}

/* What the access log says about a request's prompt: tools and system prompt size. */
static void note_prompt_shape(struct http_req *r)
{
    json_t *msgs = json_object_get(r->json, "messages"), *m;
    size_t i;
    r->n_tools = (int)json_array_size(json_object_get(r->json, "tools"));
    r->system_bytes = text_bytes(json_object_get(r->json, "system"));
    json_array_foreach(msgs, i, m) {
        if (json_is_string(json_object_get(m, "role")) &&
            strcmp(json_string_value(json_object_get(m, "role")), "system") == 0)
            r->system_bytes += text_bytes(json_object_get(m, "content"));
    }
}

static bool check_common(struct http_req *r, struct api_request *q, bool allow_empty)
{
    json_t *msgs, *tools;
    if (!v_model(r, true, &q->model))
        return false;
    if (!v_array(r, "messages", true, &msgs) || !check_messages(r, msgs, allow_empty))
        return false;
    json_t *system = json_object_get(r->json, "system");
    if (system && !json_is_null(system) && !json_is_string(system) && !json_is_array(system)) {
        http_reply_error(r, PV_ERR_INVALID, "system",
                         "system: Input should be a valid string or list of text blocks");
        return false;
    }
    if (!v_array(r, "tools", false, &tools))
        return false;
    note_prompt_shape(r);
    return true;
}

void http_handle_messages(struct http_req *r)
{
    struct api_request q;
    long max_tokens = 0, top_k = -1;
    api_request_init(&q, API_MESSAGES);
    if (!check_common(r, &q, false))
        return;
    if (!v_int(r, "max_tokens", true, 1, r->srv->p.max_tokens_limit, &max_tokens, NULL))
        return;
    q.max_tokens = (int)max_tokens;
    if (!v_bool(r, "stream", &q.stream) ||
        !v_number(r, "temperature", 0.0, 1.0, &q.temperature) ||
        !v_number(r, "top_p", 0.0, 1.0, &q.top_p) ||
        !v_int(r, "top_k", false, 0, 1000000, &top_k, NULL) ||
        !v_stop_list(r, "stop_sequences", false, API_MAX_STOP, q.stop, &q.n_stop))
        return;
    q.top_k = (int)top_k;
    api_generate(r, &q);
}

void http_handle_count_tokens(struct http_req *r)
{
    struct api_request q;
    api_request_init(&q, API_COUNT_TOKENS);
    if (!check_common(r, &q, true))
        return;
    api_count_tokens(r, &q);
}
