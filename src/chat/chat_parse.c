/*
 * chat_parse.c - the incremental output parser: generated text -> text, thinking and
 * tool-call events (chat.h), whatever way the text is split into pieces.
 *
 * Two stages. The stop filter finds stop sequences in the raw text, holding back any tail
 * that could still grow into one. The structure parser then walks text / <think> /
 * tool-call states, holding back tails that could be the start of a marker, and buffers a
 * tool call whole until it ends so that it is either emitted as a call (start, arguments,
 * end) or, when it does not parse, given back as the text it was.
 */
#include <string.h>

#include "chat/chat.h"

enum pstate { P_TEXT, P_THINK, P_CALL };
enum callkind {
    CK_TAGGED,  /* after <tool_call>: until </tool_call> */
    CK_CODER,   /* after a bare <function=: until </function> */
    CK_JSON,    /* a JSON value (bare, after <|python_tag|>, after [TOOL_CALLS]) */
    CK_MISTRAL  /* after [TOOL_CALLS]: a JSON array or NAME[ARGS]{...} */
};

struct chat_parser {
    chat_event_fn fn;
    void *ud;
    enum chat_tool_format fmt;
    json_t *tools;
    char **stops;
    size_t n_stops;
    /* stop filter */
    struct pv_buf hold;
    bool stopped;
    const char *stop_hit;
    /* structure */
    struct pv_buf buf;   /* text not yet decided */
    struct pv_buf raw;   /* the current call as written, for giving it back as text */
    enum pstate state;
    enum callkind ck;
    bool fenced;         /* CK_JSON inside ``` */
    bool block_start;    /* drop whitespace before the first character of a block */
    bool reply_start;    /* nothing emitted yet: leading whitespace is kept, not dropped */
    struct pv_buf lead;  /* leading whitespace of the reply, held until text follows */
    bool turn_start;     /* nothing but whitespace since the start or the last call */
    bool eat_close;      /* a bare <function= call may be followed by </tool_call> */
    bool eat_fence;      /* a ```json call is followed by its closing ``` */
    int n_calls;
    bool finished;
};

static void ev(struct chat_parser *p, enum chat_ev_type t, const char *s, size_t n)
{
    struct chat_event e = {.type = t, .text = s, .len = n};
    p->fn(p->ud, &e);
}

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/* Something other than text (thinking, a tool call) is emitted first: whitespace held
 * before it was only the gap before that block. */
static void end_reply_start(struct chat_parser *p)
{
    p->reply_start = false;
    buf_reset(&p->lead);
}

/*
 * Emit text or thinking, dropping leading whitespace of a new block, except at the very
 * start of the reply: a continuation such as " to" or "\n    return" keeps its
 * whitespace (held until text follows; dropped when a thinking block or a call follows).
 */
static void out_text(struct chat_parser *p, bool thinking, const char *s, size_t n)
{
    if (p->block_start) {
        const char *s0 = s;
        while (n && is_space(*s)) {
            s++;
            n--;
        }
        if (p->reply_start && !thinking)
            buf_append(&p->lead, s0, (size_t)(s - s0));
        if (!n)
            return;
        p->block_start = false;
    }
    if (!n)
        return;
    if (thinking) {
        end_reply_start(p);
    } else {
        p->turn_start = false;
        if (p->reply_start && p->lead.len)
            ev(p, CHAT_EV_TEXT, p->lead.data, p->lead.len);
        end_reply_start(p);
    }
    ev(p, thinking ? CHAT_EV_THINKING : CHAT_EV_TEXT, s, n);
}

static void consume(struct pv_buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

/* Earliest complete occurrence of any marker; *which gets its index. */
static bool find_marker(const struct pv_buf *b, const char *const *marks, size_t n_marks,
                        size_t *at, size_t *which)
{
    bool found = false;
    for (size_t m = 0; m < n_marks; m++) {
        const char *hit = memmem(b->data, b->len, marks[m], strlen(marks[m]));
        if (hit && (!found || (size_t)(hit - b->data) < *at)) {
            *at = (size_t)(hit - b->data);
            *which = m;
            found = true;
        }
    }
    return found;
}

/* Length of the longest tail of b that is a proper prefix of some marker. */
static size_t partial_tail(const char *s, size_t len, const char *const *marks, size_t n_marks)
{
    size_t best = 0;
    for (size_t m = 0; m < n_marks; m++) {
        size_t ml = strlen(marks[m]);
        for (size_t k = PV_MIN(ml - 1, len); k > best; k--) {
            if (memcmp(s + len - k, marks[m], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* ---- tool calls ------------------------------------------------------------------- */

static const json_t *find_tool(const struct chat_parser *p, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(p->tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && !strcmp(n, name))
            return t;
    }
    return NULL;
}

static bool known_tool(const struct chat_parser *p, const char *name)
{
    return name && *name && (!json_array_size(p->tools) || find_tool(p, name));
}

static void emit_call(struct chat_parser *p, const char *id, const char *name, json_t *args)
{
    end_reply_start(p);
    struct chat_event e = {.type = CHAT_EV_TOOL_START, .tool_id = id, .tool_name = name};
    p->fn(p->ud, &e);
    char *s = json_dumps(args, JSON_COMPACT);
    ev(p, CHAT_EV_TOOL_ARGS, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
    ev(p, CHAT_EV_TOOL_END, NULL, 0);
    p->n_calls++;
}

/* A JSON call: {"name", "arguments"|"parameters"|"input"|"args"} or {"function":{...}}.
 * Returns the name and a new reference to the arguments object, or NULL. */
static json_t *call_parts(const struct chat_parser *p, json_t *o, const char **name, const char **id)
{
    if (!json_is_object(o))
        return NULL;
    json_t *fn = json_object_get(o, "function");
    json_t *src = json_is_object(fn) ? fn : o;
    *name = json_string_value(json_object_get(src, "name"));
    *id = json_string_value(json_object_get(o, "id"));
    if (!known_tool(p, *name))
        return NULL;
    static const char *const keys[] = {"arguments", "parameters", "input", "args"};
    json_t *a = NULL;
    for (size_t k = 0; k < PV_ARRAY_LEN(keys) && !a; k++)
        a = json_object_get(src, keys[k]);
    if (!a)
        return json_object();
    if (json_is_string(a)) {
        json_t *parsed = json_loads(json_string_value(a), 0, NULL);
        if (json_is_object(parsed))
            return parsed;
        json_decref(parsed);
        return NULL;
    }
    return json_is_object(a) ? json_incref(a) : NULL;
}

/* Parse a JSON call or array of calls; emit them all, or nothing and return false. */
static bool json_calls(struct chat_parser *p, const char *s, size_t n)
{
    /* tolerate a ```json fence around the JSON */
    while (n && is_space(*s)) {
        s++;
        n--;
    }
    if (n >= 3 && !memcmp(s, "```", 3)) {
        const char *nl = memchr(s, '\n', n);
        if (!nl)
            return false;
        n -= (size_t)(nl + 1 - s);
        s = nl + 1;
        while (n && is_space(s[n - 1]))
            n--;
        if (n >= 3 && !memcmp(s + n - 3, "```", 3))
            n -= 3;
    }
    json_error_t je;
    json_t *v = json_loadb(s, n, JSON_DISABLE_EOF_CHECK, &je);
    if (!v)
        return false;
    /* only whitespace may follow the JSON */
    for (size_t i = (size_t)je.position; i < n; i++) {
        if (!is_space(s[i]) && s[i] != ';') {
            json_decref(v);
            return false;
        }
    }
    json_t *list = json_is_array(v) ? json_incref(v) : json_pack("[O]", v);
    size_t cnt = json_array_size(list);
    const char **names = xcalloc(cnt + 1, sizeof *names), **ids = xcalloc(cnt + 1, sizeof *ids);
    json_t **args = xcalloc(cnt + 1, sizeof *args);
    bool ok = cnt > 0;
    for (size_t i = 0; i < cnt && ok; i++) {
        args[i] = call_parts(p, json_array_get(list, i), &names[i], &ids[i]);
        ok = args[i] != NULL;
    }
    if (ok)
        for (size_t i = 0; i < cnt; i++)
            emit_call(p, ids[i], names[i], args[i]);
    for (size_t i = 0; i < cnt; i++)
        json_decref(args[i]);
    free(names);
    free(ids);
    free(args);
    json_decref(list);
    json_decref(v);
    return ok;
}

/* A value of a Qwen3-Coder parameter, typed by the tool's schema. New reference. */
static json_t *coder_value(const json_t *tool, const char *param, const char *s, size_t n)
{
    if (n && s[0] == '\n') {
        s++;
        n--;
    }
    if (n && s[n - 1] == '\n')
        n--;
    json_t *props = json_object_get(json_object_get(json_object_get(tool, "function"), "parameters"), "properties");
    const char *type = json_string_value(json_object_get(json_object_get(props, param), "type"));
    if (type && strcmp(type, "string") != 0) {
        json_t *v = json_loadb(s, n, JSON_DECODE_ANY, NULL);
        if (v)
            return v;
    }
    return json_stringn(s, n);
}

/* <function=NAME> (<parameter=P>value</parameter>)* </function>; emits the call. */
static bool coder_call(struct chat_parser *p, const char *s, size_t n)
{
    const char *end = s + n;
    while (s < end && is_space(*s))
        s++;
    if ((size_t)(end - s) < 10 || memcmp(s, "<function=", 10) != 0)
        return false;
    s += 10;
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (!gt)
        return false;
    char *name = xstrndup(s, (size_t)(gt - s));
    s = gt + 1;
    const json_t *tool = find_tool(p, name);
    bool ok = known_tool(p, name);
    json_t *args = json_object();
    while (ok) {
        while (s < end && is_space(*s))
            s++;
        if (s >= end || ((size_t)(end - s) >= 11 && !memcmp(s, "</function>", 11)))
            break;
        if ((size_t)(end - s) < 11 || memcmp(s, "<parameter=", 11) != 0) {
            ok = false;
            break;
        }
        s += 11;
        gt = memchr(s, '>', (size_t)(end - s));
        if (!gt) {
            ok = false;
            break;
        }
        char *param = xstrndup(s, (size_t)(gt - s));
        s = gt + 1;
        const char *close = memmem(s, (size_t)(end - s), "</parameter>", 12);
        const char *vend = close;
        if (!close) {
            /* tolerate a missing </parameter> before the next parameter or the end */
            vend = memmem(s, (size_t)(end - s), "<parameter=", 11);
            if (!vend)
                vend = memmem(s, (size_t)(end - s), "</function>", 11);
            if (!vend)
                vend = end;
        }
        json_object_set_new(args, param, coder_value(tool, param, s, (size_t)(vend - s)));
        free(param);
        s = close ? close + 12 : vend;
    }
    if (ok)
        emit_call(p, NULL, name, args);
    json_decref(args);
    free(name);
    return ok;
}

/* NAME[ARGS]{...} or NAME[CALL_ID]id[ARGS]{...} (Mistral v11+) */
static bool mistral_named(struct chat_parser *p, const char *s, size_t n)
{
    const char *end = s + n;
    while (s < end && is_space(*s))
        s++;
    bool any = false;
    while (s < end) {
        const char *br = memchr(s, '[', (size_t)(end - s));
        if (!br)
            return any;
        char *name = xstrndup(s, (size_t)(br - s));
        char *id = NULL;
        s = br;
        if ((size_t)(end - s) >= 9 && !memcmp(s, "[CALL_ID]", 9)) {
            s += 9;
            const char *a = memmem(s, (size_t)(end - s), "[ARGS]", 6);
            if (!a) {
                free(name);
                return false;
            }
            id = xstrndup(s, (size_t)(a - s));
            s = a;
        }
        if ((size_t)(end - s) < 6 || memcmp(s, "[ARGS]", 6) != 0 || !known_tool(p, name)) {
            free(name);
            free(id);
            return false;
        }
        s += 6;
        json_error_t je;
        json_t *args = json_loadb(s, (size_t)(end - s), JSON_DISABLE_EOF_CHECK, &je);
        if (!json_is_object(args)) {
            json_decref(args);
            free(name);
            free(id);
            return false;
        }
        emit_call(p, id, name, args);
        any = true;
        json_decref(args);
        free(name);
        free(id);
        s += je.position;
        while (s < end && is_space(*s))
            s++;
        if ((size_t)(end - s) >= 12 && !memcmp(s, "[TOOL_CALLS]", 12))
            s += 12;
    }
    return any;
}

/* End of a JSON value that starts at s (after whitespace): length through its closing
 * bracket, or 0 while incomplete. */
static size_t json_extent(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_space(s[i]))
        i++;
    if (i >= n || (s[i] != '{' && s[i] != '['))
        return 0;
    int depth = 0;
    bool str = false, esc = false;
    for (; i < n; i++) {
        char c = s[i];
        if (str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                str = false;
            continue;
        }
        if (c == '"')
            str = true;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        }
    }
    return 0;
}

/* A finished call body: emit it, or give the raw text back. */
static void finish_call(struct chat_parser *p, const char *body, size_t n)
{
    bool ok;
    const char *s = body;
    size_t k = n;
    while (k && is_space(*s)) {
        s++;
        k--;
    }
    switch (p->ck) {
    case CK_CODER: ok = coder_call(p, body, n); break;
    case CK_MISTRAL:
        ok = (k && (*s == '[' || *s == '{')) ? json_calls(p, body, n) : mistral_named(p, body, n);
        break;
    case CK_TAGGED:
        ok = (k >= 10 && !memcmp(s, "<function=", 10)) ? coder_call(p, body, n) : json_calls(p, body, n);
        break;
    default: ok = json_calls(p, body, n); break;
    }
    p->state = P_TEXT;
    if (!ok) {
        p->block_start = false;
        out_text(p, false, p->raw.data, p->raw.len);
        p->eat_close = p->eat_fence = false;
    } else {
        p->block_start = true;
        p->turn_start = true;
    }
    buf_reset(&p->raw);
}

/* ---- the structure parser --------------------------------------------------------- */

static size_t text_markers(const struct chat_parser *p, const char **m)
{
    size_t n = 0;
    m[n++] = "<think>";
    switch (p->fmt) {
    case CHAT_TOOLFMT_HERMES:
    case CHAT_TOOLFMT_GENERIC:
        m[n++] = "<tool_call>";
        break;
    case CHAT_TOOLFMT_QWEN3_CODER:
        m[n++] = "<tool_call>";
        m[n++] = "<function=";
        break;
    case CHAT_TOOLFMT_MISTRAL:
        m[n++] = "[TOOL_CALLS]";
        break;
    case CHAT_TOOLFMT_LLAMA3:
        m[n++] = "<|python_tag|>";
        break;
    default: break;
    }
    return n;
}

/* Process buf as far as it can be decided; `final` at the end of the stream. */
static void process(struct chat_parser *p, bool final)
{
    for (;;) {
        struct pv_buf *b = &p->buf;
        if (p->state == P_THINK) {
            static const char *const m[] = {"</think>"};
            size_t at, which;
            if (find_marker(b, m, 1, &at, &which)) {
                out_text(p, true, b->data, at);
                consume(b, at + 8);
                p->state = P_TEXT;
                p->block_start = true;
                continue;
            }
            size_t keep = final ? 0 : partial_tail(b->data, b->len, m, 1);
            out_text(p, true, b->data, b->len - keep);
            consume(b, b->len - keep);
            return;
        }
        if (p->state == P_CALL) {
            size_t end = 0, body_end = 0;
            bool done = false;
            if (p->ck == CK_TAGGED) {
                const char *c = memmem(b->data, b->len, "</tool_call>", 12);
                if (c) {
                    body_end = (size_t)(c - b->data);
                    end = body_end + 12;
                    done = true;
                }
            } else if (p->ck == CK_CODER) {
                const char *c = memmem(b->data, b->len, "</function>", 11);
                if (c) {
                    body_end = end = (size_t)(c - b->data) + 11;
                    done = true;
                    p->eat_close = true;
                }
            } else if (p->ck == CK_JSON) {
                size_t e = json_extent(b->data, b->len);
                if (e) {
                    body_end = end = e;
                    done = true;
                }
            } else { /* CK_MISTRAL: JSON array/object, or NAME[ARGS]{...} */
                size_t i = 0;
                while (i < b->len && is_space(b->data[i]))
                    i++;
                if (i < b->len && (b->data[i] == '[' || b->data[i] == '{')) {
                    size_t e = json_extent(b->data, b->len);
                    if (e) {
                        body_end = end = e;
                        done = true;
                    }
                } else {
                    const char *a = memmem(b->data, b->len, "[ARGS]", 6);
                    if (a) {
                        size_t off = (size_t)(a - b->data) + 6;
                        size_t e = json_extent(b->data + off, b->len - off);
                        if (e) {
                            body_end = end = off + e;
                            done = true;
                        }
                    }
                }
            }
            if (!done && !final) {
                /* keep raw in step with what is buffered; the call waits */
                return;
            }
            if (!done)
                body_end = end = b->len;
            buf_append(&p->raw, b->data, end);
            /* the call's exact bytes: model output may hold NUL (a <0x00> byte token),
             * where a string copy would stop short of body_end */
            char *body = xmalloc(body_end + 1);
            memcpy(body, b->data, body_end);
            body[body_end] = '\0';
            consume(b, end);
            p->eat_fence = p->fenced;
            p->fenced = false;
            finish_call(p, body, body_end);
            free(body);
            continue;
        }
        /* P_TEXT */
        if (p->eat_fence) {
            /* the closing fence of a ```json call */
            size_t i = 0;
            while (i < b->len && is_space(b->data[i]))
                i++;
            if (b->len - i >= 3 && !memcmp(b->data + i, "```", 3)) {
                consume(b, i + 3);
                p->eat_fence = false;
                continue;
            }
            if (!final && b->len - i < 3 && !memcmp(b->data + i, "```", b->len - i))
                return;
            p->eat_fence = false;
        }
        if (p->eat_close) {
            size_t i = 0;
            while (i < b->len && is_space(b->data[i]))
                i++;
            if (b->len - i >= 12 && !memcmp(b->data + i, "</tool_call>", 12)) {
                consume(b, i + 12);
                p->eat_close = false;
                continue;
            }
            if (!final && b->len - i < 12 && !memcmp(b->data + i, "</tool_call>", b->len - i))
                return;
            p->eat_close = false;
        }
        if (p->turn_start && p->fmt != CHAT_TOOLFMT_NONE) {
            /* a bare JSON call as the whole start of the reply (generic / Llama 3 form) */
            size_t i = 0;
            while (i < b->len && is_space(b->data[i]))
                i++;
            if (i == b->len && !final)
                return;
            bool json_start = i < b->len && b->data[i] == '{';
            if (i < b->len && b->data[i] == '[') {
                /* an array of call objects, not a marker like [TOOL_CALLS] */
                size_t j = i + 1;
                while (j < b->len && is_space(b->data[j]))
                    j++;
                if (j == b->len && !final)
                    return;
                json_start = j < b->len && b->data[j] == '{';
            }
            if (json_start) {
                buf_reset(&p->raw);
                consume(b, i);
                p->state = P_CALL;
                p->ck = CK_JSON;
                continue;
            }
            if (i < b->len && b->data[i] == '`') {
                const char *rest = b->data + i;
                size_t rl = b->len - i;
                const char *nl = memchr(rest, '\n', rl);
                if (!nl && !final && rl < 16 && !memcmp(rest, "```json", PV_MIN(rl, 7)))
                    return;
                if (nl && rl >= 3 && !memcmp(rest, "```", 3)) {
                    size_t j = (size_t)(nl - b->data) + 1;
                    while (j < b->len && is_space(b->data[j]))
                        j++;
                    if (j == b->len && !final)
                        return;
                    if (j < b->len && (b->data[j] == '{' || b->data[j] == '[') &&
                        (size_t)(nl - rest) <= 8) {
                        buf_reset(&p->raw);
                        buf_append(&p->raw, b->data + i, j - i);
                        consume(b, j);
                        p->state = P_CALL;
                        p->ck = CK_JSON;
                        p->fenced = true;
                        continue;
                    }
                }
            }
            if (i < b->len && b->data[i] != '<' && b->data[i] != '[')
                p->turn_start = false;
        }
        const char *marks[4];
        size_t nm = text_markers(p, marks);
        size_t at, which;
        if (find_marker(b, marks, nm, &at, &which)) {
            out_text(p, false, b->data, at);
            size_t ml = strlen(marks[which]);
            if (which == 0) {
                p->state = P_THINK;
                p->block_start = true;
                consume(b, at + ml);
                continue;
            }
            p->state = P_CALL;
            const char *mk = marks[which];
            if (!strcmp(mk, "<function=")) {
                p->ck = CK_CODER;
                buf_reset(&p->raw);
                consume(b, at); /* the marker is part of the body */
                continue;
            }
            p->ck = !strcmp(mk, "<tool_call>") ? CK_TAGGED : !strcmp(mk, "[TOOL_CALLS]") ? CK_MISTRAL : CK_JSON;
            buf_reset(&p->raw);
            buf_append(&p->raw, mk, ml);
            consume(b, at + ml);
            continue;
        }
        size_t keep = final ? 0 : partial_tail(b->data, b->len, marks, nm);
        out_text(p, false, b->data, b->len - keep);
        consume(b, b->len - keep);
        return;
    }
}

static void structure_feed(struct chat_parser *p, const char *s, size_t n)
{
    if (!n)
        return;
    buf_append(&p->buf, s, n);
    process(p, false);
}

/* ---- stop filter and API ---------------------------------------------------------- */

struct chat_parser *chat_parser_new(const struct chat_parser_params *pp, chat_event_fn fn, void *ud)
{
    struct chat_parser *p = xcalloc(1, sizeof *p);
    p->fn = fn;
    p->ud = ud;
    p->fmt = pp->tool_format;
    p->tools = pp->tools ? json_incref((json_t *)pp->tools) : NULL;
    p->state = pp->think_open ? P_THINK : P_TEXT;
    p->block_start = true;
    p->turn_start = true;
    p->reply_start = !pp->think_open;
    buf_init(&p->lead);
    buf_init(&p->hold);
    buf_init(&p->buf);
    buf_init(&p->raw);
    if (pp->n_stop) {
        p->stops = xcalloc(pp->n_stop, sizeof *p->stops);
        for (size_t i = 0; i < pp->n_stop; i++)
            if (pp->stop[i] && *pp->stop[i])
                p->stops[p->n_stops++] = xstrdup(pp->stop[i]);
    }
    return p;
}

void chat_parser_free(struct chat_parser *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_stops; i++)
        free(p->stops[i]);
    free(p->stops);
    json_decref(p->tools);
    buf_release(&p->hold);
    buf_release(&p->buf);
    buf_release(&p->raw);
    buf_release(&p->lead);
    free(p);
}

void chat_parser_feed(struct chat_parser *p, const char *text, size_t len)
{
    if (p->stopped || p->finished || !len)
        return;
    if (!p->n_stops) {
        structure_feed(p, text, len);
        return;
    }
    buf_append(&p->hold, text, len);
    size_t at, which;
    if (find_marker(&p->hold, (const char *const *)p->stops, p->n_stops, &at, &which)) {
        p->stopped = true;
        p->stop_hit = p->stops[which];
        structure_feed(p, p->hold.data, at);
        buf_reset(&p->hold);
        return;
    }
    size_t keep = partial_tail(p->hold.data, p->hold.len, (const char *const *)p->stops, p->n_stops);
    /* never split a UTF-8 character between what passes and what waits */
    while (keep < p->hold.len && ((unsigned char)p->hold.data[p->hold.len - keep] & 0xC0) == 0x80)
        keep++;
    structure_feed(p, p->hold.data, p->hold.len - keep);
    consume(&p->hold, p->hold.len - keep);
}

bool chat_parser_stopped(const struct chat_parser *p) { return p->stopped; }

int chat_parser_n_tool_calls(const struct chat_parser *p) { return p->n_calls; }

void chat_parser_finish(struct chat_parser *p, enum chat_stop reason, int n_input, int n_output)
{
    if (p->finished)
        return;
    if (!p->stopped && p->hold.len)
        structure_feed(p, p->hold.data, p->hold.len);
    buf_reset(&p->hold);
    p->finished = true;
    process(p, true);
    if (p->reply_start && p->lead.len) /* a reply of whitespace only */
        ev(p, CHAT_EV_TEXT, p->lead.data, p->lead.len);
    end_reply_start(p);
    struct chat_event e = {.type = CHAT_EV_STOP, .n_input = n_input, .n_output = n_output};
    if (p->stopped) {
        e.stop = CHAT_STOP_SEQUENCE;
        e.stop_sequence = p->stop_hit;
    } else if (reason == CHAT_STOP_END_TURN && p->n_calls) {
        e.stop = CHAT_STOP_TOOL_USE;
    } else {
        e.stop = reason;
    }
    p->fn(p->ud, &e);
}
