/*
 * test_server.c - unit tests of the server's wire shapes (emit.c): Anthropic SSE event
 * order, indexes, tool_use and thinking blocks, non-streamed bodies, OpenAI chunks with
 * tool calls and usage, and the mid-stream error event. The end-to-end tests cover these
 * with the tiny model's plain text; tool calls and thinking are exercised here.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "server/emit.h"

struct sse_event {
    char name[32];
    json_t *data;
};

/* Split SSE text into events; checks that each data line parses. */
static int parse_sse(const char *text, struct sse_event *ev, int max)
{
    int n = 0;
    const char *p = text;
    char pending[32] = "";
    while (*p && n < max) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 7 && strncmp(p, "event: ", 7) == 0) {
            snprintf(pending, sizeof(pending), "%.*s", (int)(len - 7), p + 7);
        } else if (len > 6 && strncmp(p, "data: ", 6) == 0) {
            snprintf(ev[n].name, sizeof(ev[n].name), "%s", pending);
            if (len == 12 && strncmp(p + 6, "[DONE]", 6) == 0) {
                snprintf(ev[n].name, sizeof(ev[n].name), "[DONE]");
                ev[n].data = NULL;
            } else {
                json_error_t jerr;
                ev[n].data = json_loadb(p + 6, len - 6, 0, &jerr);
                CHECK(ev[n].data != NULL);
            }
            n++;
            pending[0] = '\0';
        }
        p += len + (nl ? 1 : 0);
    }
    return n;
}

static void free_events(struct sse_event *ev, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(ev[i].data);
}

static const char *jget_str(json_t *o, const char *path)
{
    /* dotted path of object keys */
    char key[64];
    const char *p = path;
    while (o && *p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        snprintf(key, sizeof(key), "%.*s", (int)len, p);
        o = json_object_get(o, key);
        p += len + (dot ? 1 : 0);
    }
    return json_string_value(o);
}

static json_int_t jget_int(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static struct http_server srv;
static struct http_req req;

static void setup(struct emitter *em, enum api_kind kind, bool stream, bool usage)
{
    struct api_request q;
    memset(&srv, 0, sizeof(srv));
    snprintf(srv.model_name, sizeof(srv.model_name), "test-model");
    memset(&req, 0, sizeof(req));
    req.srv = &srv;
    api_request_init(&q, kind);
    q.model = "claude-test";
    q.stream = stream;
    q.include_usage = usage;
    emit_init(em, &req, &q, 42);
}

static void test_anthropic_stream_text_and_tool(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    struct sse_event ev[32];
    setup(&em, API_MESSAGES, true, false);
    emit_begin(&em, &out);
    emit_text(&em, "Hel", 3, &out);
    emit_text(&em, "lo", 2, &out);
    emit_tool_start(&em, "get_weather", &out);
    emit_tool_args(&em, "{\"ci", 4, &out);
    emit_tool_args(&em, "ty\":\"Paris\"}", 12, &out);
    emit_tool_end(&em, &out);
    em.n_output = 9;
    emit_end(&em, &out);

    int n = parse_sse(out.data, ev, 32);
    static const char *const names[] = {
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"};
    CHECK_EQ_INT(n, 11);
    for (int i = 0; i < n && i < 11; i++) {
        CHECK_EQ_STR(ev[i].name, names[i]);
        CHECK_EQ_STR(jget_str(ev[i].data, "type"), names[i]);
    }
    if (n == 11) {
        CHECK_EQ_INT(jget_int(json_object_get(json_object_get(ev[0].data, "message"), "usage"),
                              "input_tokens"), 42);
        CHECK(strncmp(jget_str(ev[0].data, "message.id"), "msg_", 4) == 0);
        CHECK_EQ_STR(jget_str(ev[0].data, "message.model"), "claude-test");
        CHECK_EQ_INT(jget_int(ev[1].data, "index"), 0);
        CHECK_EQ_STR(jget_str(ev[1].data, "content_block.type"), "text");
        CHECK_EQ_STR(jget_str(ev[3].data, "delta.text"), "lo");
        CHECK_EQ_INT(jget_int(ev[4].data, "index"), 0);
        CHECK_EQ_INT(jget_int(ev[5].data, "index"), 1);
        CHECK_EQ_STR(jget_str(ev[5].data, "content_block.type"), "tool_use");
        CHECK_EQ_STR(jget_str(ev[5].data, "content_block.name"), "get_weather");
        CHECK(strncmp(jget_str(ev[5].data, "content_block.id"), "toolu_", 6) == 0);
        CHECK(json_object_size(json_object_get(json_object_get(ev[5].data, "content_block"),
                                               "input")) == 0);
        char args[64];
        snprintf(args, sizeof(args), "%s%s", jget_str(ev[6].data, "delta.partial_json"),
                 jget_str(ev[7].data, "delta.partial_json"));
        CHECK_EQ_STR(args, "{\"city\":\"Paris\"}");
        CHECK_EQ_STR(jget_str(ev[6].data, "delta.type"), "input_json_delta");
        CHECK_EQ_INT(jget_int(ev[8].data, "index"), 1);
        CHECK_EQ_STR(jget_str(ev[9].data, "delta.stop_reason"), "tool_use");
        CHECK_EQ_INT(jget_int(json_object_get(ev[9].data, "usage"), "output_tokens"), 9);
    }
    free_events(ev, n);
    buf_release(&out);
    emit_release(&em);
}

static void test_anthropic_stream_thinking(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    struct sse_event ev[32];
    setup(&em, API_MESSAGES, true, false);
    emit_begin(&em, &out);
    emit_thinking(&em, "hmm", 3, &out);
    emit_text(&em, "ok", 2, &out);
    emit_end(&em, &out);
    int n = parse_sse(out.data, ev, 32);
    static const char *const names[] = {
        "message_start",       "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop",  "content_block_start",
        "content_block_delta", "content_block_stop",  "message_delta",
        "message_stop"};
    CHECK_EQ_INT(n, 10);
    for (int i = 0; i < n && i < 10; i++)
        CHECK_EQ_STR(ev[i].name, names[i]);
    if (n == 10) {
        CHECK_EQ_STR(jget_str(ev[1].data, "content_block.type"), "thinking");
        CHECK_EQ_STR(jget_str(ev[1].data, "content_block.signature"), "");
        CHECK_EQ_STR(jget_str(ev[2].data, "delta.thinking"), "hmm");
        CHECK_EQ_STR(jget_str(ev[3].data, "delta.type"), "signature_delta");
        CHECK_EQ_INT(jget_int(ev[5].data, "index"), 1);
        CHECK_EQ_STR(jget_str(ev[8].data, "delta.stop_reason"), "end_turn");
    }
    free_events(ev, n);
    buf_release(&out);
    emit_release(&em);
}

static void test_anthropic_json_body(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    setup(&em, API_MESSAGES, false, false);
    emit_thinking(&em, "plan", 4, &out);
    emit_text(&em, "Let me check.", 13, &out);
    emit_tool_start(&em, "Read", &out);
    emit_tool_args(&em, "{\"file_path\": \"/a\"}", 19, &out);
    em.n_output = 7;
    emit_end(&em, &out);
    CHECK_EQ_INT(out.len, 0);
    json_t *o = emit_take_json(&em);
    CHECK_EQ_STR(jget_str(o, "type"), "message");
    CHECK_EQ_STR(jget_str(o, "stop_reason"), "tool_use");
    CHECK(json_is_null(json_object_get(o, "stop_sequence")));
    json_t *content = json_object_get(o, "content");
    CHECK_EQ_INT(json_array_size(content), 3);
    CHECK_EQ_STR(jget_str(json_array_get(content, 0), "type"), "thinking");
    CHECK_EQ_STR(jget_str(json_array_get(content, 0), "signature"), "");
    CHECK_EQ_STR(jget_str(json_array_get(content, 1), "text"), "Let me check.");
    json_t *tool = json_array_get(content, 2);
    CHECK_EQ_STR(jget_str(tool, "type"), "tool_use");
    CHECK_EQ_STR(jget_str(tool, "input.file_path"), "/a");
    CHECK(strncmp(jget_str(tool, "id"), "toolu_", 6) == 0);
    CHECK_EQ_INT(jget_int(json_object_get(o, "usage"), "input_tokens"), 42);
    CHECK_EQ_INT(jget_int(json_object_get(o, "usage"), "output_tokens"), 7);
    json_decref(o);
    buf_release(&out);
    emit_release(&em);
}

static void test_openai_stream_tool_calls_and_usage(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    struct sse_event ev[32];
    setup(&em, API_CHAT, true, true);
    emit_begin(&em, &out);
    emit_tool_start(&em, "get_weather", &out);
    emit_tool_args(&em, "{\"city\":", 8, &out);
    emit_tool_args(&em, "\"Paris\"}", 8, &out);
    emit_tool_end(&em, &out);
    em.n_output = 5;
    emit_end(&em, &out);
    int n = parse_sse(out.data, ev, 32);
    CHECK_EQ_INT(n, 7);
    if (n == 7) {
        json_t *d0 = json_object_get(json_array_get(json_object_get(ev[0].data, "choices"), 0),
                                     "delta");
        CHECK_EQ_STR(jget_str(d0, "role"), "assistant");
        json_t *c1 = json_array_get(json_object_get(ev[1].data, "choices"), 0);
        json_t *tc = json_array_get(json_object_get(json_object_get(c1, "delta"), "tool_calls"), 0);
        CHECK_EQ_INT(jget_int(tc, "index"), 0);
        CHECK(strncmp(jget_str(tc, "id"), "call_", 5) == 0);
        CHECK_EQ_STR(jget_str(tc, "function.name"), "get_weather");
        CHECK_EQ_STR(jget_str(tc, "function.arguments"), "");
        json_t *c2 = json_array_get(json_object_get(ev[2].data, "choices"), 0);
        json_t *tc2 =
            json_array_get(json_object_get(json_object_get(c2, "delta"), "tool_calls"), 0);
        CHECK_EQ_STR(jget_str(tc2, "function.arguments"), "{\"city\":");
        CHECK(json_object_get(tc2, "id") == NULL);
        json_t *c4 = json_array_get(json_object_get(ev[4].data, "choices"), 0);
        CHECK_EQ_STR(jget_str(c4, "finish_reason"), "tool_calls");
        CHECK(json_is_null(json_object_get(ev[4].data, "usage")));
        CHECK_EQ_INT(json_array_size(json_object_get(ev[5].data, "choices")), 0);
        CHECK_EQ_INT(jget_int(json_object_get(ev[5].data, "usage"), "total_tokens"), 47);
        CHECK_EQ_STR(ev[6].name, "[DONE]");
    }
    free_events(ev, n);
    buf_release(&out);
    emit_release(&em);
}

static void test_openai_json_tool_calls(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    setup(&em, API_CHAT, false, false);
    emit_tool_start(&em, "f", &out);
    emit_tool_args(&em, "{\"a\": 1}", 8, &out);
    emit_end(&em, &out);
    json_t *o = emit_take_json(&em);
    json_t *choice = json_array_get(json_object_get(o, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    CHECK(json_is_null(json_object_get(msg, "content")));
    CHECK_EQ_STR(jget_str(choice, "finish_reason"), "tool_calls");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    CHECK_EQ_STR(jget_str(tc, "type"), "function");
    CHECK_EQ_STR(jget_str(tc, "function.arguments"), "{\"a\": 1}");
    CHECK_EQ_STR(jget_str(o, "object"), "chat.completion");
    json_decref(o);
    buf_release(&out);
    emit_release(&em);
}

static void test_stream_failure_is_error_event(void)
{
    struct emitter em;
    struct pv_buf out = PV_BUF_INIT;
    struct sse_event ev[8];
    setup(&em, API_MESSAGES, true, false);
    emit_begin(&em, &out);
    emit_text(&em, "par", 3, &out);
    em.failed = PV_ERR_OVERLOADED;
    snprintf(em.fail_msg, sizeof(em.fail_msg), "server is shutting down");
    emit_end(&em, &out);
    int n = parse_sse(out.data, ev, 8);
    CHECK(n >= 2);
    if (n >= 2) {
        CHECK_EQ_STR(ev[n - 1].name, "error");
        CHECK_EQ_STR(jget_str(ev[n - 1].data, "error.type"), "overloaded_error");
        CHECK_EQ_STR(ev[n - 2].name, "content_block_stop");
    }
    CHECK(strstr(out.data, "message_stop") == NULL);
    free_events(ev, n);
    buf_release(&out);
    emit_release(&em);
}

TESTS(TEST_ENTRY(test_anthropic_stream_text_and_tool), TEST_ENTRY(test_anthropic_stream_thinking),
      TEST_ENTRY(test_anthropic_json_body), TEST_ENTRY(test_openai_stream_tool_calls_and_usage),
      TEST_ENTRY(test_openai_json_tool_calls), TEST_ENTRY(test_stream_failure_is_error_event))
