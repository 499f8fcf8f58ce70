/*
 * chat_template.c - a model's chat template and the rendering of a conversation with it.
 *
 * chat_template_new parses the model's template (or the built-in default of its family)
 * once and reads from its source what it supports: tool definitions through `tools`, and
 * the tool-call format its model writes (Hermes/Qwen <tool_call>, Qwen3-Coder XML,
 * Mistral [TOOL_CALLS], Llama 3 JSON). chat_render fills the variables HF templates
 * expect and renders; for templates without tool support it applies the generic fallback
 * documented in chat.h. The output keeps, per byte, whether it came from the request.
 */
#include <string.h>

#include "chat/chat.h"
#include "chat/jinja.h"

struct chat_template {
    struct jinja_template *jt;
    char *bos, *eos;
    bool native_tools;
    enum chat_tool_format format;
};

static enum chat_tool_format detect_format(const char *src, bool native)
{
    if (strstr(src, "<tool_call>") && strstr(src, "<function="))
        return CHAT_TOOLFMT_QWEN3_CODER;
    if (strstr(src, "<tool_call>"))
        return CHAT_TOOLFMT_HERMES;
    if (strstr(src, "[TOOL_CALLS]"))
        return CHAT_TOOLFMT_MISTRAL;
    if (strstr(src, "<|python_tag|>") || (native && strstr(src, "<|start_header_id|>")))
        return CHAT_TOOLFMT_LLAMA3;
    /* the fallback instructs the Hermes form; templates with their own tool syntax that
     * Pensieve does not parse still get a parser for the generic JSON form */
    return native ? CHAT_TOOLFMT_GENERIC : CHAT_TOOLFMT_HERMES;
}

enum pv_status chat_template_new(const char *source, const char *arch, const char *bos,
                                 const char *eos, struct chat_template **out, struct pv_err *err)
{
    *out = NULL;
    const char *src = source && *source ? source : chat_default_template(arch);
    struct jinja_template *jt;
    enum pv_status st = jinja_parse(src, strlen(src), &jt, err);
    if (st)
        return st;
    struct chat_template *t = xcalloc(1, sizeof *t);
    t->jt = jt;
    t->bos = xstrdup(bos ? bos : "");
    t->eos = xstrdup(eos ? eos : "");
    /* a template supports tool definitions when it reads the `tools` variable */
    for (const char *p = strstr(src, "tools"); p; p = strstr(p + 5, "tools")) {
        bool left_ok = p == src || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
                                     (p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= '0' && p[-1] <= '9') ||
                                     p[-1] == '.' || p[-1] == '\'' || p[-1] == '"');
        char r = p[5];
        bool right_ok = !(r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'));
        if (left_ok && right_ok) {
            t->native_tools = true;
            break;
        }
    }
    t->format = detect_format(src, t->native_tools);
    *out = t;
    return PV_OK;
}

void chat_template_free(struct chat_template *t)
{
    if (!t)
        return;
    jinja_free(t->jt);
    free(t->bos);
    free(t->eos);
    free(t);
}

enum chat_tool_format chat_template_tool_format(const struct chat_template *t)
{
    return t->format;
}

bool chat_template_native_tools(const struct chat_template *t)
{
    return t->native_tools;
}

/* ---- generic tool fallback -------------------------------------------------------- */

static void append_text(json_t *m, const char *key, const char *sep, const char *add)
{
    const char *old = json_string_value(json_object_get(m, key));
    struct pv_buf b = PV_BUF_INIT;
    buf_printf(&b, "%s%s%s", old ? old : "", old && *old ? sep : "", add);
    json_object_set_new(m, key, json_stringn(b.data, b.len));
    buf_release(&b);
}

/* Messages for a template without tool support: tool definitions go into the system
 * prompt, calls into the assistant's text as <tool_call> JSON, results into user turns
 * wrapped in <tool_response>; same-role neighbours are then merged. New reference. */
static json_t *fallback_messages(const struct chat_conv *c)
{
    json_t *out = json_array();
    if (json_array_size(c->tools) && c->tool_choice != CHAT_TOOLS_NONE) {
        struct pv_buf b = PV_BUF_INIT;
        buf_puts(&b, "# Tools\n\nYou may call one or more functions to assist with the user query. "
                     "The functions, one JSON signature per line:\n<tools>\n");
        size_t i;
        json_t *t;
        json_array_foreach(c->tools, i, t) {
            char *s = json_dumps(t, JSON_COMPACT);
            buf_printf(&b, "%s\n", s ? s : "{}");
            free(s);
        }
        buf_puts(&b, "</tools>\n\nTo call a function, answer with a JSON object of its name and "
                     "arguments inside <tool_call></tool_call> tags:\n<tool_call>\n"
                     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        json_t *first = json_array_get(c->messages, 0);
        const char *r0 = json_string_value(json_object_get(first, "role"));
        json_t *sys = json_pack("{s:s,s:s}", "role", "system", "content", "");
        if (r0 && !strcmp(r0, "system"))
            json_object_set(sys, "content", json_object_get(first, "content"));
        append_text(sys, "content", "\n\n", b.data);
        json_array_append_new(out, sys);
        buf_release(&b);
    }
    size_t i;
    json_t *m;
    json_array_foreach(c->messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (i == 0 && json_array_size(out) && !strcmp(role, "system"))
            continue; /* folded into the tools system message above */
        json_t *nm;
        if (!strcmp(role, "tool")) {
            nm = json_pack("{s:s,s:s}", "role", "user", "content", "");
            struct pv_buf b = PV_BUF_INIT;
            buf_printf(&b, "<tool_response>\n%s\n</tool_response>",
                       json_string_value(json_object_get(m, "content")));
            json_object_set_new(nm, "content", json_stringn(b.data, b.len));
            buf_release(&b);
        } else {
            nm = json_pack("{s:s,s:O}", "role", role, "content", json_object_get(m, "content"));
            json_t *rc = json_object_get(m, "reasoning_content");
            if (rc)
                json_object_set(nm, "reasoning_content", rc);
            json_t *tc;
            size_t k;
            json_array_foreach(json_object_get(m, "tool_calls"), k, tc) {
                json_t *fn = json_object_get(tc, "function");
                json_t *call = json_pack("{s:O,s:O}", "name", json_object_get(fn, "name"),
                                         "arguments", json_object_get(fn, "arguments"));
                char *s = json_dumps(call, JSON_COMPACT);
                struct pv_buf b = PV_BUF_INIT;
                buf_printf(&b, "<tool_call>\n%s\n</tool_call>", s ? s : "{}");
                append_text(nm, "content", "\n", b.data);
                buf_release(&b);
                free(s);
                json_decref(call);
            }
        }
        /* merge same-role neighbours: strict templates (Gemma) need alternation */
        size_t n = json_array_size(out);
        json_t *prev = n ? json_array_get(out, n - 1) : NULL;
        if (prev && !strcmp(json_string_value(json_object_get(prev, "role")), role[0] == 't' ? "user" : role)) {
            const char *add = json_string_value(json_object_get(nm, "content"));
            if (add && *add)
                append_text(prev, "content", "\n\n", add);
            json_decref(nm);
        } else {
            json_array_append_new(out, nm);
        }
    }
    return out;
}

/* ---- Mistral tool-call ids ---------------------------------------------------------- */

/* Mistral templates refuse tool-call ids that are not 9 alphanumerics; clients send
 * toolu_.../call_... ids. Each id maps to a stable 9-character hash of itself. */
static void mistral_id(const char *id, char out[10])
{
    static const char b62[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint64_t h = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    for (int i = 0; i < 9; i++) {
        out[i] = b62[h % 62];
        h /= 62;
        if (!h)
            h = 0x9e3779b97f4a7c15ull;
    }
    out[9] = 0;
}

/* A copy of msgs with every tool-call id mapped (new reference). */
static json_t *mistral_ids(json_t *msgs)
{
    json_t *out = json_deep_copy(msgs), *m;
    size_t i;
    char id[10];
    json_array_foreach(out, i, m) {
        const char *tid = json_string_value(json_object_get(m, "tool_call_id"));
        if (tid) {
            mistral_id(tid, id);
            json_object_set_new(m, "tool_call_id", json_string(id));
        }
        json_t *tc;
        size_t k;
        json_array_foreach(json_object_get(m, "tool_calls"), k, tc) {
            const char *cid = json_string_value(json_object_get(tc, "id"));
            if (cid) {
                mistral_id(cid, id);
                json_object_set_new(tc, "id", json_string(id));
            }
        }
    }
    return out;
}

/* ---- render ----------------------------------------------------------------------- */

void chat_prompt_release(struct chat_prompt *p)
{
    buf_release(&p->text);
    buf_release(&p->taint);
    free(p->segs);
    memset(p, 0, sizeof *p);
}

/* Split text into segments at every change of taint. */
static enum pv_status make_segments(struct chat_prompt *p, struct pv_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < p->text.len; i++)
        if (i == 0 || p->taint.data[i] != p->taint.data[i - 1])
            n++;
    p->segs = try_calloc(n ? n : 1, sizeof *p->segs);
    if (!p->segs)
        return pv_err_set(err, PV_ERR_NOMEM, "out of memory splitting the prompt");
    p->n_segs = 0;
    for (size_t i = 0; i < p->text.len;) {
        size_t j = i;
        while (j < p->text.len && p->taint.data[j] == p->taint.data[i])
            j++;
        struct pv_text_segment *s = &p->segs[p->n_segs++];
        s->text = p->text.data + i;
        s->len = j - i;
        s->parse_special = p->taint.data[i] == 0;
        i = j;
    }
    return PV_OK;
}

static bool ends_with_think(const struct pv_buf *b)
{
    size_t n = b->len;
    while (n && (b->data[n - 1] == '\n' || b->data[n - 1] == ' '))
        n--;
    return n >= 7 && memcmp(b->data + n - 7, "<think>", 7) == 0;
}

enum pv_status chat_render(const struct chat_template *t, const struct chat_conv *c,
                           struct chat_prompt *out, struct pv_err *err)
{
    memset(out, 0, sizeof *out);
    enum pv_status st = PV_OK;
    bool use_tools = json_array_size(c->tools) && c->tool_choice != CHAT_TOOLS_NONE;
    json_t *msgs = !t->native_tools ? fallback_messages(c)
                   : t->format == CHAT_TOOLFMT_MISTRAL ? mistral_ids(c->messages)
                   : json_incref(c->messages);
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    const char *last_role = json_string_value(json_object_get(last, "role"));
    bool prefill = last_role && !strcmp(last_role, "assistant") &&
                   !json_array_size(json_object_get(last, "tool_calls")) &&
                   json_string_length(json_object_get(last, "content")) > 0;
    json_t *vars = json_object();
    json_object_set(vars, "messages", msgs);
    json_object_set_new(vars, "tools", t->native_tools && use_tools ? json_incref(c->tools) : json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(!prefill));
    json_object_set_new(vars, "bos_token", json_string(t->bos));
    json_object_set_new(vars, "eos_token", json_string(t->eos));
    if (c->thinking >= 0)
        json_object_set_new(vars, "enable_thinking", json_boolean(c->thinking));
    static const char *const trusted[] = {"bos_token", "eos_token", "add_generation_prompt",
                                          "enable_thinking", NULL};
    struct jinja_render_opts opts = {.now = time(NULL), .trusted_vars = trusted};
    st = jinja_render(t->jt, vars, &opts, &out->text, &out->taint, err);
    if (st)
        goto out;
    if (prefill) {
        /* continue the last assistant message: cut what the template wrote after it */
        const char *pc = json_string_value(json_object_get(last, "content"));
        size_t pl = strlen(pc);
        while (pl && (pc[pl - 1] == ' ' || pc[pl - 1] == '\n' || pc[pl - 1] == '\t'))
            pl--;
        size_t cut = 0;
        bool found = false;
        for (size_t i = out->text.len; pl && i-- > 0;) {
            if (i + pl <= out->text.len && memcmp(out->text.data + i, pc, pl) == 0) {
                cut = i + pl;
                found = true;
                break;
            }
        }
        if (found) {
            out->text.len = cut;
            out->text.data[cut] = 0;
            out->taint.len = cut;
        }
        out->prefill = found;
    }
    out->think_open = ends_with_think(&out->text);
    size_t bl = strlen(t->bos);
    out->starts_with_bos = bl && out->text.len >= bl && !memcmp(out->text.data, t->bos, bl) &&
                           !memchr(out->taint.data, 1, bl);
    st = make_segments(out, err);
out:
    json_decref(vars);
    json_decref(msgs);
    if (st)
        chat_prompt_release(out);
    return st;
}

void chat_parser_params_for(const struct chat_template *t, const struct chat_conv *c,
                            const struct chat_prompt *p, struct chat_parser_params *pp)
{
    memset(pp, 0, sizeof *pp);
    pp->tool_format = json_array_size(c->tools) && c->tool_choice != CHAT_TOOLS_NONE
                          ? t->format : CHAT_TOOLFMT_NONE;
    pp->tools = c->tools;
    /* a grammar-forced reply (tool_choice any/tool, response_format) is JSON from the
     * first token, even when the template opened <think> */
    bool forced = (json_array_size(c->tools) &&
                   (c->tool_choice == CHAT_TOOLS_REQUIRED || c->tool_choice == CHAT_TOOLS_NAMED)) ||
                  c->format != CHAT_FORMAT_TEXT;
    pp->think_open = p->think_open && !forced;
    if (forced && pp->tool_format == CHAT_TOOLFMT_NONE && json_array_size(c->tools) &&
        c->tool_choice != CHAT_TOOLS_NONE)
        pp->tool_format = CHAT_TOOLFMT_GENERIC;
}
