/*
 * chat_conv.c - Anthropic and OpenAI request bodies into one conversation (chat.h).
 *
 * Both APIs become the Hugging Face message shape chat templates are written for: roles
 * system/user/assistant/tool, assistant tool calls as {"id","type":"function",
 * "function":{"name","arguments":{...}}} with arguments as an object, tool results as
 * role "tool" messages, thinking as "reasoning_content". Consecutive messages of the same
 * role are merged; the volatile `cch=` and version fingerprint of Claude Code's billing
 * header are normalized so the prompt prefix stays the same from one request (and
 * session) to the next.
 */
#include <ctype.h>
#include <string.h>

#include "chat/chat.h"

static enum pv_status bad(struct pv_err *err, enum pv_status st, const char *fmt, const char *x)
{
    return pv_err_set(err, st, fmt, x);
}

/* Replace with zeros the parts of Claude Code's billing header that change from one
 * request or session to the next: the hex of "cch=XXXXX;" and the fingerprint that
 * follows the version in "cc_version=2.1.328.3a8;" (derived from the session's first
 * prompt: without this, two sessions that start with different questions would share
 * no prefix at all, the header being the prompt's first line). */
static void normalize_billing(struct pv_buf *b, size_t from)
{
    static const char key[] = "x-anthropic-billing-header:";
    char *s = b->data + from;
    if (strncmp(s, key, sizeof key - 1) != 0)
        return;
    for (char *p = strstr(s, "cch="); p; p = strstr(p + 4, "cch=")) {
        for (char *q = p + 4; *q && *q != ';' && !isspace((unsigned char)*q); q++)
            *q = '0';
    }
    char *v = strstr(s, "cc_version=");
    if (!v)
        return;
    int dots = 0;
    for (char *q = v + 11; *q && *q != ';' && !isspace((unsigned char)*q); q++) {
        if (*q == '.')
            dots++;
        else if (dots == 3 && isxdigit((unsigned char)*q))
            *q = '0';
    }
}

/* Text of Anthropic content that must be only text (system, tool_result): string or
 * text blocks, joined by "\n". Images and other blocks are refused. */
static enum pv_status text_of(const json_t *content, const char *what, struct pv_buf *out,
                              bool normalize, struct pv_err *err)
{
    if (!content || json_is_null(content))
        return PV_OK;
    if (json_is_string(content)) {
        size_t at = out->len;
        if (!buf_append(out, json_string_value(content), json_string_length(content)))
            return pv_err_set(err, PV_ERR_NOMEM, "out of memory");
        if (normalize)
            normalize_billing(out, at);
        return PV_OK;
    }
    if (!json_is_array(content))
        return bad(err, PV_ERR_INVALID, "%s must be a string or an array of content blocks", what);
    size_t i;
    json_t *blk;
    bool first = true;
    json_array_foreach(content, i, blk) {
        const char *type = json_string_value(json_object_get(blk, "type"));
        if (!type)
            return bad(err, PV_ERR_INVALID, "%s: content block without a type", what);
        const char *text = NULL;
        size_t len = 0;
        if (!strcmp(type, "text")) {
            json_t *t = json_object_get(blk, "text");
            if (!json_is_string(t))
                return bad(err, PV_ERR_INVALID, "%s: text block without text", what);
            text = json_string_value(t);
            len = json_string_length(t);
        } else if (!strcmp(type, "image") || !strcmp(type, "image_url")) {
            return bad(err, PV_ERR_INVALID,
                       "%s: image input is not supported by this model (it reads text only)", what);
        } else if (!strcmp(type, "document")) {
            json_t *src = json_object_get(blk, "source");
            const char *st = json_string_value(json_object_get(src, "type"));
            json_t *data = json_object_get(src, "data");
            if (!st || strcmp(st, "text") || !json_is_string(data))
                return bad(err, PV_ERR_INVALID,
                           "%s: only plain-text documents are supported by this model", what);
            text = json_string_value(data);
            len = json_string_length(data);
        } else if (!strcmp(type, "tool_reference")) {
            continue;
        } else if (!strcmp(type, "search_result")) {
            enum pv_status st = text_of(json_object_get(blk, "content"), what, out, false, err);
            if (st)
                return st;
            continue;
        } else {
            continue; /* cache-only and unknown blocks carry no text for the model */
        }
        size_t at = out->len;
        if ((!first && !buf_putc(out, '\n')) || !buf_append(out, text, len))
            return pv_err_set(err, PV_ERR_NOMEM, "out of memory");
        if (normalize)
            normalize_billing(out, at + (first ? 0 : 1));
        first = false;
    }
    return PV_OK;
}

static json_t *msg_new(const char *role)
{
    return json_pack("{s:s}", "role", role);
}

static void set_str(json_t *m, const char *key, const struct pv_buf *b)
{
    json_object_set_new(m, key, json_stringn(b->data, b->len));
}

/* Append `m` to `msgs`, merging it into the previous message when both have the same
 * role (user, assistant, system): contents joined by "\n\n", tool calls concatenated. */
/*
 * A system turn after the first user or assistant message. Templates take a system
 * message only first, so it speaks as the user ("System: ..."); placed before the user's
 * own words when it follows them, so that the user's request stays the last thing the
 * model reads (Claude Code sends its environment and skill list, thousands of
 * characters, as a system turn after the user's prompt).
 */
static void push_system_turn(json_t *msgs, const char *text)
{
    size_t n = json_array_size(msgs);
    json_t *prev = n ? json_array_get(msgs, n - 1) : NULL;
    const char *pc = json_string_value(json_object_get(prev, "content"));
    struct pv_buf t = PV_BUF_INIT;
    if (prev && pc && !strcmp(json_string_value(json_object_get(prev, "role")), "user")) {
        buf_printf(&t, "System: %s%s%s", text, *pc ? "\n\n" : "", pc);
        set_str(prev, "content", &t);
    } else {
        json_t *m = msg_new("user");
        buf_printf(&t, "System: %s", text);
        set_str(m, "content", &t);
        json_array_append_new(msgs, m);
    }
    buf_release(&t);
}

static void push_merged(json_t *msgs, json_t *m)
{
    size_t n = json_array_size(msgs);
    json_t *prev = n ? json_array_get(msgs, n - 1) : NULL;
    const char *role = json_string_value(json_object_get(m, "role"));
    if (prev && strcmp(role, "tool") != 0 &&
        strcmp(role, json_string_value(json_object_get(prev, "role"))) == 0) {
        const char *a = json_string_value(json_object_get(prev, "content"));
        const char *b = json_string_value(json_object_get(m, "content"));
        if (b && *b) {
            if (a && *a) {
                struct pv_buf t = PV_BUF_INIT;
                buf_printf(&t, "%s\n\n%s", a, b);
                set_str(prev, "content", &t);
                buf_release(&t);
            } else {
                json_object_set(prev, "content", json_object_get(m, "content"));
            }
        }
        const char *ra = json_string_value(json_object_get(prev, "reasoning_content"));
        const char *rb = json_string_value(json_object_get(m, "reasoning_content"));
        if (rb && *rb) {
            struct pv_buf t = PV_BUF_INIT;
            buf_printf(&t, "%s%s%s", ra ? ra : "", ra && *ra ? "\n\n" : "", rb);
            set_str(prev, "reasoning_content", &t);
            buf_release(&t);
        }
        json_t *tb = json_object_get(m, "tool_calls");
        if (json_array_size(tb)) {
            json_t *ta = json_object_get(prev, "tool_calls");
            if (!ta) {
                json_object_set(prev, "tool_calls", tb);
            } else {
                json_array_extend(ta, tb);
            }
        }
        json_decref(m);
        return;
    }
    json_array_append_new(msgs, m);
}

static json_t *tool_call(const char *id, const char *name, json_t *args /* stolen */)
{
    return json_pack("{s:s,s:s,s:{s:s,s:o}}", "id", id ? id : "", "type", "function", "function",
                     "name", name, "arguments", args);
}

void chat_conv_release(struct chat_conv *c)
{
    json_decref(c->messages);
    json_decref(c->tools);
    json_decref(c->schema);
    free(c->tool_name);
    memset(c, 0, sizeof *c);
}

static void conv_init(struct chat_conv *c)
{
    memset(c, 0, sizeof *c);
    c->messages = json_array();
    c->parallel_tool_calls = true;
    c->thinking = -1;
}

/* ---- Anthropic ------------------------------------------------------------------- */

static enum pv_status anthropic_message(struct chat_conv *c, const json_t *m, bool first_msgs,
                                        struct pv_err *err)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    enum pv_status st = PV_OK;
    struct pv_buf text = PV_BUF_INIT, think = PV_BUF_INIT;
    if (!role)
        return pv_err_set(err, PV_ERR_INVALID, "messages: each message needs a role");
    if (!strcmp(role, "system")) {
        if ((st = text_of(content, "system message", &text, true, err)))
            goto out;
        if (!first_msgs) {
            push_system_turn(c->messages, text.data);
            goto out;
        }
        json_t *sm = msg_new("system");
        set_str(sm, "content", &text);
        push_merged(c->messages, sm);
        goto out;
    }
    bool assistant = !strcmp(role, "assistant");
    /* unknown roles ("ctx", "msg", ...) speak as the user, as other servers do */
    json_t *calls = json_array();
    json_t *pending_user = NULL;
    if (json_is_string(content)) {
        buf_append(&text, json_string_value(content), json_string_length(content));
    } else if (json_is_array(content)) {
        size_t i;
        json_t *blk;
        json_array_foreach(content, i, blk) {
            const char *type = json_string_value(json_object_get(blk, "type"));
            if (!type) {
                st = pv_err_set(err, PV_ERR_INVALID, "messages: content block without a type");
                goto out_calls;
            }
            if (!strcmp(type, "text")) {
                json_t *t = json_object_get(blk, "text");
                if (!json_is_string(t)) {
                    st = pv_err_set(err, PV_ERR_INVALID, "messages: text block without text");
                    goto out_calls;
                }
                if (json_string_length(t) == 0)
                    continue;
                if (text.len)
                    buf_putc(&text, '\n');
                buf_append(&text, json_string_value(t), json_string_length(t));
            } else if (!strcmp(type, "thinking")) {
                const char *t = json_string_value(json_object_get(blk, "thinking"));
                if (t && *t)
                    buf_printf(&think, "%s%s", think.len ? "\n" : "", t);
            } else if (!strcmp(type, "redacted_thinking")) {
                continue;
            } else if (!strcmp(type, "tool_use") || !strcmp(type, "server_tool_use")) {
                const char *name = json_string_value(json_object_get(blk, "name"));
                json_t *input = json_object_get(blk, "input");
                if (!name) {
                    st = pv_err_set(err, PV_ERR_INVALID, "messages: tool_use block without a name");
                    goto out_calls;
                }
                json_array_append_new(calls, tool_call(json_string_value(json_object_get(blk, "id")),
                                                       name, json_is_object(input) ? json_deep_copy(input) : json_object()));
            } else if (!strcmp(type, "tool_result")) {
                /* a tool turn of its own, before any text of this user message */
                struct pv_buf r = PV_BUF_INIT;
                if (json_is_true(json_object_get(blk, "is_error")))
                    buf_puts(&r, "Error: ");
                st = text_of(json_object_get(blk, "content"), "tool_result", &r, false, err);
                if (st) {
                    buf_release(&r);
                    goto out_calls;
                }
                if (text.len) {
                    /* text that came before the result stays before it */
                    json_t *um = msg_new("user");
                    set_str(um, "content", &text);
                    push_merged(c->messages, um);
                    buf_reset(&text);
                }
                json_t *tm = msg_new("tool");
                set_str(tm, "content", &r);
                const char *id = json_string_value(json_object_get(blk, "tool_use_id"));
                json_object_set_new(tm, "tool_call_id", json_string(id ? id : ""));
                /* the tool's name, found among earlier assistant calls */
                for (size_t k = json_array_size(c->messages); id && k-- > 0;) {
                    json_t *tc;
                    size_t q;
                    json_array_foreach(json_object_get(json_array_get(c->messages, k), "tool_calls"), q, tc) {
                        if (!strcmp(json_string_value(json_object_get(tc, "id")), id))
                            json_object_set(tm, "name", json_object_get(json_object_get(tc, "function"), "name"));
                    }
                }
                push_merged(c->messages, tm);
                buf_release(&r);
            } else if (!strcmp(type, "mid_conv_system")) {
                struct pv_buf s = PV_BUF_INIT;
                st = text_of(json_object_get(blk, "content"), "mid_conv_system", &s, false, err);
                if (!st && s.len)
                    buf_printf(&text, "%sSystem: %s", text.len ? "\n" : "", s.data);
                buf_release(&s);
                if (st)
                    goto out_calls;
            } else if (!strcmp(type, "image")) {
                st = pv_err_set(err, PV_ERR_INVALID,
                                "image input is not supported by this model (it reads text only)");
                goto out_calls;
            } else if (!strcmp(type, "document")) {
                struct pv_buf d = PV_BUF_INIT;
                json_t *one = json_pack("[O]", blk);
                st = text_of(one, "document", &d, false, err);
                json_decref(one);
                if (!st && d.len)
                    buf_printf(&text, "%s%s", text.len ? "\n" : "", d.data);
                buf_release(&d);
                if (st)
                    goto out_calls;
            }
            /* other blocks (server tool results, search results...) carry nothing we render */
        }
    } else if (content && !json_is_null(content)) {
        st = pv_err_set(err, PV_ERR_INVALID, "messages: content must be a string or an array");
        goto out_calls;
    }
    if (assistant) {
        json_t *am = msg_new("assistant");
        set_str(am, "content", &text);
        if (think.len)
            set_str(am, "reasoning_content", &think);
        if (json_array_size(calls))
            json_object_set(am, "tool_calls", calls);
        push_merged(c->messages, am);
    } else if (text.len || !json_is_array(content)) {
        pending_user = msg_new("user");
        set_str(pending_user, "content", &text);
        push_merged(c->messages, pending_user);
    }
out_calls:
    json_decref(calls);
out:
    buf_release(&text);
    buf_release(&think);
    return st;
}

/* Counts a request controls, bounded explicitly (a 400 beyond them): each costs template
 * work and prompt tokens, and the body size alone lets them reach millions. */
#define CHAT_MAX_MESSAGES 100000
#define CHAT_MAX_TOOLS 1024
#define CHAT_MAX_BLOCKS 10000 /* content blocks of one message */

static enum pv_status check_counts(const json_t *body, struct pv_err *err)
{
    const json_t *msgs = json_object_get(body, "messages");
    if (json_array_size(msgs) > CHAT_MAX_MESSAGES)
        return pv_err_set(err, PV_ERR_INVALID, "messages: %zu messages (at most %d)",
                          json_array_size(msgs), CHAT_MAX_MESSAGES);
    if (json_array_size(json_object_get(body, "tools")) > CHAT_MAX_TOOLS)
        return pv_err_set(err, PV_ERR_INVALID, "tools: %zu tools (at most %d)",
                          json_array_size(json_object_get(body, "tools")), CHAT_MAX_TOOLS);
    if (json_array_size(json_object_get(body, "system")) > CHAT_MAX_BLOCKS)
        return pv_err_set(err, PV_ERR_INVALID, "system: more than %d blocks", CHAT_MAX_BLOCKS);
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        if (json_array_size(json_object_get(m, "content")) > CHAT_MAX_BLOCKS ||
            json_array_size(json_object_get(m, "tool_calls")) > CHAT_MAX_BLOCKS)
            return pv_err_set(err, PV_ERR_INVALID,
                              "messages.%zu: more than %d content blocks or tool calls", i,
                              CHAT_MAX_BLOCKS);
    }
    return PV_OK;
}

/* A forced tool call needs tools, and a named one a tool of that name. */
static enum pv_status check_tool_choice(const struct chat_conv *c, struct pv_err *err)
{
    if (c->tool_choice == CHAT_TOOLS_REQUIRED && !json_array_size(c->tools))
        return pv_err_set(err, PV_ERR_INVALID,
                          "tool_choice: a tool call is required but no tools are given");
    if (c->tool_choice != CHAT_TOOLS_NAMED)
        return PV_OK;
    size_t i;
    json_t *t;
    json_array_foreach(c->tools, i, t) {
        const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (name && !strcmp(name, c->tool_name))
            return PV_OK;
    }
    return pv_err_set(err, PV_ERR_INVALID, "tool_choice: no tool named '%.100s' in tools",
                      c->tool_name);
}

static enum pv_status anthropic_tools(struct chat_conv *c, const json_t *tools, struct pv_err *err)
{
    if (!tools || json_is_null(tools))
        return PV_OK;
    if (!json_is_array(tools))
        return pv_err_set(err, PV_ERR_INVALID, "tools must be an array");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *type = json_string_value(json_object_get(t, "type"));
        json_t *schema = json_object_get(t, "input_schema");
        if (type && strcmp(type, "custom") != 0 && !schema)
            continue; /* server tools (web_search_..., bash_...) run on Anthropic's side */
        if (!name)
            return pv_err_set(err, PV_ERR_INVALID, "tools: each tool needs a name");
        json_t *fn = json_pack("{s:s}", "name", name);
        json_t *d = json_object_get(t, "description");
        if (json_is_string(d))
            json_object_set(fn, "description", d);
        json_object_set_new(fn, "parameters", json_is_object(schema) ? json_deep_copy(schema)
                                                                     : json_pack("{s:s}", "type", "object"));
        if (!c->tools)
            c->tools = json_array();
        json_array_append_new(c->tools, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return PV_OK;
}

enum pv_status chat_conv_from_anthropic(const json_t *body, struct chat_conv *c, struct pv_err *err)
{
    enum pv_status st;
    conv_init(c);
    struct pv_buf sys = PV_BUF_INIT;
    if ((st = check_counts(body, err)))
        goto fail;
    if ((st = text_of(json_object_get(body, "system"), "system", &sys, true, err)))
        goto fail;
    if (sys.len) {
        json_t *sm = msg_new("system");
        set_str(sm, "content", &sys);
        json_array_append_new(c->messages, sm);
    }
    json_t *msgs = json_object_get(body, "messages");
    if (msgs && !json_is_array(msgs)) {
        st = pv_err_set(err, PV_ERR_INVALID, "messages must be an array");
        goto fail;
    }
    size_t i;
    json_t *m;
    bool leading = true;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        leading = leading && role && !strcmp(role, "system");
        if ((st = anthropic_message(c, m, leading, err)))
            goto fail;
    }
    if ((st = anthropic_tools(c, json_object_get(body, "tools"), err)))
        goto fail;
    json_t *tc = json_object_get(body, "tool_choice");
    if (tc && !json_is_null(tc) && !json_is_object(tc)) {
        st = pv_err_set(err, PV_ERR_INVALID, "tool_choice: Input should be an object");
        goto fail;
    }
    const char *tct = json_string_value(json_object_get(tc, "type"));
    if (tc && !json_is_null(tc) && !tct) {
        st = pv_err_set(err, PV_ERR_INVALID, "tool_choice.type: Field required");
        goto fail;
    }
    if (tct) {
        if (!strcmp(tct, "any"))
            c->tool_choice = CHAT_TOOLS_REQUIRED;
        else if (!strcmp(tct, "none"))
            c->tool_choice = CHAT_TOOLS_NONE;
        else if (!strcmp(tct, "tool")) {
            const char *name = json_string_value(json_object_get(tc, "name"));
            if (!name) {
                st = pv_err_set(err, PV_ERR_INVALID, "tool_choice of type tool needs a name");
                goto fail;
            }
            c->tool_choice = CHAT_TOOLS_NAMED;
            c->tool_name = xstrdup(name);
        } else if (strcmp(tct, "auto") != 0) {
            st = pv_err_set(err, PV_ERR_INVALID,
                            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'");
            goto fail;
        }
        if ((st = check_tool_choice(c, err)))
            goto fail;
        if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
            c->parallel_tool_calls = false;
    }
    const char *think = json_string_value(json_object_get(json_object_get(body, "thinking"), "type"));
    if (think)
        c->thinking = strcmp(think, "disabled") != 0;
    json_t *fmt = json_object_get(json_object_get(body, "output_config"), "format");
    if (!fmt)
        fmt = json_object_get(body, "output_format");
    const char *ft = json_string_value(json_object_get(fmt, "type"));
    if (ft && !strcmp(ft, "json_schema") && json_is_object(json_object_get(fmt, "schema"))) {
        c->format = CHAT_FORMAT_JSON_SCHEMA;
        c->schema = json_deep_copy(json_object_get(fmt, "schema"));
    }
    buf_release(&sys);
    return PV_OK;
fail:
    buf_release(&sys);
    chat_conv_release(c);
    return st;
}

/* ---- OpenAI ---------------------------------------------------------------------- */

static enum pv_status openai_text(const json_t *content, const char *what, struct pv_buf *out,
                                  struct pv_err *err)
{
    if (!content || json_is_null(content) || json_is_string(content) || json_is_array(content))
        return text_of(content, what, out, false, err);
    return pv_err_set(err, PV_ERR_INVALID, "%s: content must be a string or an array of parts", what);
}

enum pv_status chat_conv_from_openai(const json_t *body, struct chat_conv *c, struct pv_err *err)
{
    enum pv_status st = PV_OK;
    conv_init(c);
    json_t *msgs = json_object_get(body, "messages");
    if ((st = check_counts(body, err)))
        goto fail;
    if (!json_is_array(msgs)) {
        st = pv_err_set(err, PV_ERR_INVALID, "messages must be an array");
        goto fail;
    }
    size_t i;
    json_t *m;
    bool leading = true;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) {
            st = pv_err_set(err, PV_ERR_INVALID, "messages: each message needs a role");
            goto fail;
        }
        struct pv_buf text = PV_BUF_INIT;
        if ((st = openai_text(json_object_get(m, "content"), role, &text, err))) {
            buf_release(&text);
            goto fail;
        }
        bool sys = !strcmp(role, "system") || !strcmp(role, "developer");
        leading = leading && sys;
        json_t *nm;
        if (sys && !leading) {
            push_system_turn(c->messages, text.data);
            buf_release(&text);
            continue;
        }
        if (sys) {
            nm = msg_new("system");
            set_str(nm, "content", &text);
        } else if (!strcmp(role, "assistant")) {
            nm = msg_new("assistant");
            set_str(nm, "content", &text);
            json_t *rc = json_object_get(m, "reasoning_content");
            if (json_is_string(rc) && json_string_length(rc))
                json_object_set(nm, "reasoning_content", rc);
            json_t *tcs = json_object_get(m, "tool_calls"), *tc;
            size_t k;
            json_t *calls = json_array();
            json_array_foreach(tcs, k, tc) {
                json_t *fn = json_object_get(tc, "function");
                const char *name = json_string_value(json_object_get(fn, "name"));
                if (!name) {
                    json_decref(calls);
                    json_decref(nm);
                    buf_release(&text);
                    st = pv_err_set(err, PV_ERR_INVALID, "messages: tool call without a function name");
                    goto fail;
                }
                json_t *args = json_object_get(fn, "arguments"), *parsed = NULL;
                if (json_is_string(args))
                    parsed = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
                else if (json_is_object(args))
                    parsed = json_deep_copy(args);
                if (!json_is_object(parsed)) {
                    /* arguments that are not a JSON object stay the string the client sent */
                    json_decref(parsed);
                    parsed = json_is_string(args) ? json_copy(args) : json_object();
                }
                json_array_append_new(calls, tool_call(json_string_value(json_object_get(tc, "id")),
                                                       name, parsed));
            }
            if (json_array_size(calls))
                json_object_set(nm, "tool_calls", calls);
            json_decref(calls);
        } else if (!strcmp(role, "tool") || !strcmp(role, "function")) {
            nm = msg_new("tool");
            set_str(nm, "content", &text);
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            json_object_set_new(nm, "tool_call_id", json_string(id ? id : ""));
            json_t *name = json_object_get(m, "name");
            if (json_is_string(name))
                json_object_set(nm, "name", name);
        } else {
            nm = msg_new("user");
            set_str(nm, "content", &text);
        }
        buf_release(&text);
        push_merged(c->messages, nm);
    }
    json_t *tools = json_object_get(body, "tools"), *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name) {
            st = pv_err_set(err, PV_ERR_INVALID, "tools: each tool needs function.name");
            goto fail;
        }
        json_t *nf = json_pack("{s:s}", "name", name);
        json_t *d = json_object_get(fn, "description");
        if (json_is_string(d))
            json_object_set(nf, "description", d);
        json_t *p = json_object_get(fn, "parameters");
        json_object_set_new(nf, "parameters", json_is_object(p) ? json_deep_copy(p) : json_pack("{s:s}", "type", "object"));
        if (!c->tools)
            c->tools = json_array();
        json_array_append_new(c->tools, json_pack("{s:s,s:o}", "type", "function", "function", nf));
    }
    json_t *tc = json_object_get(body, "tool_choice");
    if (json_is_string(tc)) {
        if (!strcmp(json_string_value(tc), "none"))
            c->tool_choice = CHAT_TOOLS_NONE;
        else if (!strcmp(json_string_value(tc), "required"))
            c->tool_choice = CHAT_TOOLS_REQUIRED;
        else if (strcmp(json_string_value(tc), "auto") != 0) {
            st = pv_err_set(err, PV_ERR_INVALID,
                            "tool_choice: expected 'none', 'auto', 'required' or a function");
            goto fail;
        }
    } else if (json_is_object(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        if (!type || strcmp(type, "function") != 0) {
            st = pv_err_set(err, PV_ERR_INVALID, "tool_choice.type: expected 'function'");
            goto fail;
        }
        const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (!name) {
            st = pv_err_set(err, PV_ERR_INVALID, "tool_choice: function.name is required");
            goto fail;
        }
        c->tool_choice = CHAT_TOOLS_NAMED;
        c->tool_name = xstrdup(name);
    } else if (tc && !json_is_null(tc)) {
        st = pv_err_set(err, PV_ERR_INVALID, "tool_choice: expected a string or an object");
        goto fail;
    }
    if ((st = check_tool_choice(c, err)))
        goto fail;
    if (json_is_false(json_object_get(body, "parallel_tool_calls")))
        c->parallel_tool_calls = false;
    json_t *rf = json_object_get(body, "response_format");
    const char *rft = json_string_value(json_object_get(rf, "type"));
    if (rft && !strcmp(rft, "json_object")) {
        c->format = CHAT_FORMAT_JSON_OBJECT;
    } else if (rft && !strcmp(rft, "json_schema")) {
        json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        if (json_is_object(schema)) {
            c->format = CHAT_FORMAT_JSON_SCHEMA;
            c->schema = json_deep_copy(schema);
        } else {
            c->format = CHAT_FORMAT_JSON_OBJECT;
        }
    }
    const char *effort = json_string_value(json_object_get(body, "reasoning_effort"));
    if (effort)
        c->thinking = strcmp(effort, "none") != 0;
    return PV_OK;
fail:
    chat_conv_release(c);
    return st;
}
