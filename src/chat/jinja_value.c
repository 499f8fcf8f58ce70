/*
 * jinja_value.c - values of the Jinja interpreter and their Python semantics.
 *
 * Constructors, lists and insertion-ordered dicts, truthiness, equality and ordering as
 * Python defines them, str()/repr() of every type (including Python's float repr), and
 * json.dumps as Hugging Face's `tojson` calls it (ensure_ascii=False). Strings carry a
 * per-byte taint map that every operation here propagates. All memory is the render arena.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

void *jx_alloc(struct jctx *c, size_t n)
{
    if (c->arena.used_bytes > c->max_mem)
        jx_fail(c, NULL, PV_ERR_TOO_LARGE, "chat template used more than %zu bytes of memory",
                c->max_mem);
    void *m = arena_alloc(&c->arena, n ? n : 1);
    if (!m)
        jx_fail(c, NULL, PV_ERR_NOMEM, "out of memory rendering the chat template");
    return m;
}

struct jval jv_undef(const char *name)
{
    struct jval v = {.t = JV_UNDEF};
    v.u.uname = name;
    return v;
}
struct jval jv_none(void) { return (struct jval){.t = JV_NONE}; }
struct jval jv_bool(bool b)
{
    struct jval v = {.t = JV_BOOL};
    v.u.b = b;
    return v;
}
struct jval jv_int(int64_t i)
{
    struct jval v = {.t = JV_INT};
    v.u.i = i;
    return v;
}
struct jval jv_float(double f)
{
    struct jval v = {.t = JV_FLOAT};
    v.u.f = f;
    return v;
}

struct jval jv_str(struct jctx *c, const char *s, size_t len, const uint8_t *taint)
{
    size_t total;
    if (pv_add_overflow(sizeof(struct jstr) + 1, len, &total))
        jx_fail(c, NULL, PV_ERR_TOO_LARGE, "string too large");
    struct jstr *js = jx_alloc(c, total);
    js->len = len;
    if (len)
        memcpy(js->s, s, len);
    js->s[len] = 0;
    js->taint = NULL;
    js->markup = false;
    if (taint) {
        bool any = false;
        for (size_t i = 0; i < len && !any; i++)
            any = taint[i] != 0;
        if (any) {
            uint8_t *t = jx_alloc(c, len);
            memcpy(t, taint, len);
            js->taint = t;
        }
    }
    struct jval v = {.t = JV_STR};
    v.u.s = js;
    return v;
}

struct jval jv_str_tainted(struct jctx *c, const char *s, size_t len, bool tainted)
{
    struct jval v = jv_str(c, s, len, NULL);
    if (tainted && len) {
        uint8_t *t = jx_alloc(c, len);
        memset(t, 1, len);
        v.u.s->taint = t;
    }
    return v;
}

struct jval jv_list(struct jctx *c, size_t cap)
{
    struct jlist *l = jx_alloc(c, sizeof *l);
    memset(l, 0, sizeof *l);
    if (cap) {
        size_t b;
        if (pv_mul_overflow(cap, sizeof(struct jval), &b))
            jx_fail(c, NULL, PV_ERR_TOO_LARGE, "list too large");
        l->v = jx_alloc(c, b);
        l->cap = cap;
    }
    struct jval v = {.t = JV_LIST};
    v.u.l = l;
    return v;
}

struct jval jv_dict(struct jctx *c, size_t cap)
{
    struct jdict *d = jx_alloc(c, sizeof *d);
    memset(d, 0, sizeof *d);
    if (cap) {
        d->k = jx_alloc(c, cap * sizeof(struct jval));
        d->v = jx_alloc(c, cap * sizeof(struct jval));
        d->cap = cap;
    }
    struct jval v = {.t = JV_DICT};
    v.u.d = d;
    return v;
}

void jl_push(struct jctx *c, struct jlist *l, struct jval v)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        struct jval *nv = jx_alloc(c, nc * sizeof *nv);
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = v;
}

struct jval *jd_get(const struct jdict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct jval *k = &d->k[i];
        if (k->t == JV_STR && k->u.s->len == len && memcmp(k->u.s->s, key, len) == 0)
            return &d->v[i];
    }
    return NULL;
}

struct jval *jd_getv(const struct jdict *d, struct jval key)
{
    if (key.t == JV_STR)
        return jd_get(d, key.u.s->s, key.u.s->len);
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], key))
            return &d->v[i];
    return NULL;
}

void jd_set(struct jctx *c, struct jdict *d, struct jval k, struct jval v)
{
    struct jval *slot = jd_getv(d, k);
    if (slot) {
        *slot = v;
        return;
    }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 8;
        struct jval *nk = jx_alloc(c, nc * sizeof *nk), *nv = jx_alloc(c, nc * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
}

bool jv_truthy(struct jval v)
{
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len != 0;
    case JV_LIST: return v.u.l->is_gen || v.u.l->n != 0;
    case JV_DICT: return v.u.d->is_ns || v.u.d->is_loop || v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(struct jval v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double num_f(struct jval v)
{
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b;
}
static int64_t num_i(struct jval v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

bool jv_equal(struct jval a, struct jval b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return num_i(a) == num_i(b);
        return num_f(a) == num_f(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR:
        return a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n || a.u.l->is_tuple != b.u.l->is_tuple)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i]))
                return false;
        return true;
    case JV_DICT:
        if (a.u.d == b.u.d)
            return true;
        if (a.u.d->is_ns || b.u.d->is_ns || a.u.d->is_loop || b.u.d->is_loop)
            return false;
        if (a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            struct jval *o = jd_getv(b.u.d, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o))
                return false;
        }
        return true;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

bool jv_compare(struct jval a, struct jval b, int *out)
{
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            int64_t x = num_i(a), y = num_i(b);
            *out = x < y ? -1 : x > y;
        } else {
            double x = num_f(a), y = num_f(b);
            if (isnan(x) || isnan(y)) {
                *out = 2; /* unordered: every comparison false */
                return true;
            }
            *out = x < y ? -1 : x > y;
        }
        return true;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = PV_MIN(a.u.s->len, b.u.s->len);
        int r = memcmp(a.u.s->s, b.u.s->s, n);
        *out = r ? (r < 0 ? -1 : 1) : (a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len);
        return true;
    }
    if (a.t == JV_LIST && b.t == JV_LIST) {
        size_t n = PV_MIN(a.u.l->n, b.u.l->n);
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i]))
                continue;
            return jv_compare(a.u.l->v[i], b.u.l->v[i], out);
        }
        *out = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return true;
    }
    return false;
}

const char *jv_type_name(struct jval v)
{
    switch (v.t) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.u.l->is_tuple ? "tuple" : "list";
    case JV_DICT: return v.u.d->is_ns ? "Namespace" : v.u.d->is_loop ? "LoopContext" : "dict";
    default: return "function";
    }
}

/* ---- sinks ----------------------------------------------------------------------- */

void jsink_put(struct jctx *c, struct jsink *s, const char *p, size_t n, const uint8_t *taint,
               bool all_tainted)
{
    if (!n)
        return;
    size_t need;
    if (pv_add_overflow(s->len, n, &need) || need > c->max_output)
        jx_fail(c, NULL, PV_ERR_TOO_LARGE, "chat template output exceeds %zu bytes", c->max_output);
    if (need > s->cap) {
        size_t nc = s->cap ? s->cap : 256;
        while (nc < need)
            nc *= 2;
        char *nb = jx_alloc(c, nc + 1);
        uint8_t *nt = jx_alloc(c, nc);
        if (s->len) {
            memcpy(nb, s->buf, s->len);
            memcpy(nt, s->taint, s->len);
        }
        s->buf = nb;
        s->taint = nt;
        s->cap = nc;
    }
    memcpy(s->buf + s->len, p, n);
    if (taint)
        memcpy(s->taint + s->len, taint, n);
    else
        memset(s->taint + s->len, all_tainted ? 1 : 0, n);
    s->len += n;
}

static void sink_lit(struct jctx *c, struct jsink *s, const char *lit)
{
    jsink_put(c, s, lit, strlen(lit), NULL, false);
}

struct jval jsink_str(struct jctx *c, struct jsink *s)
{
    return jv_str(c, s->buf ? s->buf : "", s->len, s->taint);
}

/* ---- UTF-8 ----------------------------------------------------------------------- */

size_t ju_cplen(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

size_t ju_cpoff(const char *s, size_t len, size_t idx)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (n == idx)
                return i;
            n++;
        }
    }
    return len;
}

/* ---- str() and repr() ------------------------------------------------------------ */

void ju_float_repr(double f, char *out, size_t cap)
{
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    bool neg = buf[0] == '-';
    const char *q = buf + neg;
    char digits[32];
    size_t nd = 0;
    while (*q && *q != 'e') {
        if (*q != '.')
            digits[nd++] = *q;
        q++;
    }
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char o[96];
    size_t w = 0;
    if (neg)
        o[w++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                o[w++] = (size_t)i < nd ? digits[i] : '0';
            o[w++] = '.';
            if ((size_t)exp + 1 < nd) {
                for (size_t i = (size_t)exp + 1; i < nd; i++)
                    o[w++] = digits[i];
            } else {
                o[w++] = '0';
            }
        } else {
            o[w++] = '0';
            o[w++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                o[w++] = '0';
            for (size_t i = 0; i < nd; i++)
                o[w++] = digits[i];
        }
        o[w] = 0;
    } else {
        o[w++] = digits[0];
        if (nd > 1) {
            o[w++] = '.';
            for (size_t i = 1; i < nd; i++)
                o[w++] = digits[i];
        }
        snprintf(o + w, sizeof o - w, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    }
    snprintf(out, cap, "%s", o);
}

static void repr_str(struct jctx *c, struct jsink *s, const struct jstr *js)
{
    bool has_sq = memchr(js->s, '\'', js->len) != NULL;
    bool has_dq = memchr(js->s, '"', js->len) != NULL;
    char quote = has_sq && !has_dq ? '"' : '\'';
    jsink_put(c, s, &quote, 1, NULL, false);
    for (size_t i = 0; i < js->len; i++) {
        unsigned char ch = (unsigned char)js->s[i];
        bool t = js->taint && js->taint[i];
        char esc[8];
        const char *o = NULL;
        size_t on = 0;
        if (ch == (unsigned char)quote || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            o = esc;
            on = 2;
        } else if (ch == '\n') {
            o = "\\n", on = 2;
        } else if (ch == '\r') {
            o = "\\r", on = 2;
        } else if (ch == '\t') {
            o = "\\t", on = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", ch);
            o = esc;
            on = 4;
        } else if (ch == 0xC2 && i + 1 < js->len && (unsigned char)js->s[i + 1] >= 0x80 &&
                   (unsigned char)js->s[i + 1] <= 0xA0 && (unsigned char)js->s[i + 1] != 0xA0) {
            /* C1 controls U+0080..U+009F are not printable */
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned char)js->s[i + 1]);
            o = esc;
            on = 4;
            i++;
        }
        if (o) {
            jsink_put(c, s, o, on, NULL, t);
        } else {
            jsink_put(c, s, js->s + i, 1, NULL, t);
        }
    }
    jsink_put(c, s, &quote, 1, NULL, false);
}

static void repr_into(struct jctx *c, struct jsink *s, struct jval v, bool top, int depth)
{
    if (depth > 100)
        jx_fail(c, NULL, PV_ERR_INVALID, "value nested too deeply to print");
    char buf[64];
    switch (v.t) {
    case JV_UNDEF:
        if (!top)
            sink_lit(c, s, "Undefined");
        return;
    case JV_NONE: sink_lit(c, s, "None"); return;
    case JV_BOOL: sink_lit(c, s, v.u.b ? "True" : "False"); return;
    case JV_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        sink_lit(c, s, buf);
        return;
    case JV_FLOAT:
        ju_float_repr(v.u.f, buf, sizeof buf);
        sink_lit(c, s, buf);
        return;
    case JV_STR:
        if (top)
            jsink_put(c, s, v.u.s->s, v.u.s->len, v.u.s->taint, false);
        else
            repr_str(c, s, v.u.s);
        return;
    case JV_LIST: {
        sink_lit(c, s, v.u.l->is_tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                sink_lit(c, s, ", ");
            repr_into(c, s, v.u.l->v[i], false, depth + 1);
        }
        if (v.u.l->is_tuple && v.u.l->n == 1)
            sink_lit(c, s, ",");
        sink_lit(c, s, v.u.l->is_tuple ? ")" : "]");
        return;
    }
    case JV_DICT: {
        if (v.u.d->is_ns)
            sink_lit(c, s, "<Namespace ");
        sink_lit(c, s, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i)
                sink_lit(c, s, ", ");
            repr_into(c, s, v.u.d->k[i], false, depth + 1);
            sink_lit(c, s, ": ");
            repr_into(c, s, v.u.d->v[i], false, depth + 1);
        }
        sink_lit(c, s, "}");
        if (v.u.d->is_ns)
            sink_lit(c, s, ">");
        return;
    }
    default:
        snprintf(buf, sizeof buf, "<function %s>", v.u.fn->name ? v.u.fn->name : "macro");
        sink_lit(c, s, buf);
        return;
    }
}

struct jval jv_to_str(struct jctx *c, struct jval v)
{
    if (v.t == JV_STR)
        return v;
    if (v.t == JV_UNDEF)
        return jv_str(c, "", 0, NULL);
    struct jsink s = {0};
    repr_into(c, &s, v, true, 0);
    return jsink_str(c, &s);
}

/* ---- JSON ------------------------------------------------------------------------ */

struct jsonopt {
    int indent;           /* <0: one line */
    bool sort, ascii;     /* sort_keys, ensure_ascii */
    const struct jstr *item_sep, *key_sep; /* NULL: Python's defaults */
};

static void json_str(struct jctx *c, struct jsink *s, const char *p, size_t n,
                     const uint8_t *taint, bool ascii)
{
    jsink_put(c, s, "\"", 1, NULL, false);
    size_t run = 0; /* start of a run of bytes copied as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        const char *esc = NULL;
        char ub[8];
        switch (ch) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (ch < 0x20) {
                snprintf(ub, sizeof ub, "\\u%04x", ch);
                esc = ub;
            }
        }
        if (!esc && ascii && ch >= 0x80) {
            /* \uXXXX, surrogate pairs above the BMP */
            uint32_t cp = 0;
            size_t l = (ch & 0xE0) == 0xC0 ? 2 : (ch & 0xF0) == 0xE0 ? 3 : (ch & 0xF8) == 0xF0 ? 4 : 1;
            if (i + l > n)
                l = 1;
            cp = l == 1 ? ch : l == 2 ? ch & 0x1F : l == 3 ? ch & 0x0F : ch & 0x07;
            for (size_t k = 1; k < l; k++)
                cp = (cp << 6) | ((unsigned char)p[i + k] & 0x3F);
            char ab[16];
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                snprintf(ab, sizeof ab, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                snprintf(ab, sizeof ab, "\\u%04x", cp);
            }
            jsink_put(c, s, p + run, i - run, taint ? taint + run : NULL, false);
            jsink_put(c, s, ab, strlen(ab), NULL, taint && taint[i]);
            i += l - 1;
            run = i + 1;
            continue;
        }
        if (!esc)
            continue;
        jsink_put(c, s, p + run, i - run, taint ? taint + run : NULL, false);
        jsink_put(c, s, esc, strlen(esc), NULL, taint && taint[i]);
        run = i + 1;
    }
    jsink_put(c, s, p + run, n - run, taint ? taint + run : NULL, false);
    jsink_put(c, s, "\"", 1, NULL, false);
}

static void json_indent(struct jctx *c, struct jsink *s, int indent, int level)
{
    sink_lit(c, s, "\n");
    for (int i = 0; i < indent * level; i++)
        sink_lit(c, s, " ");
}

static int key_cmp(const void *a, const void *b)
{
    const struct jval *x = *(const struct jval *const *)a, *y = *(const struct jval *const *)b;
    int r = 0;
    if (!jv_compare(*x, *y, &r))
        return 0;
    return r;
}

static void sep_put(struct jctx *c, struct jsink *s, const struct jstr *sep, const char *dflt)
{
    if (sep)
        jsink_put(c, s, sep->s, sep->len, sep->taint, false);
    else
        sink_lit(c, s, dflt);
}

static bool json_into(struct jctx *c, struct jsink *s, struct jval v, const struct jsonopt *o,
                      int level)
{
    int indent = o->indent;
    char buf[64];
    if (level > 200)
        jx_fail(c, NULL, PV_ERR_INVALID, "value nested too deeply for tojson");
    switch (v.t) {
    case JV_NONE: sink_lit(c, s, "null"); return true;
    case JV_BOOL: sink_lit(c, s, v.u.b ? "true" : "false"); return true;
    case JV_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        sink_lit(c, s, buf);
        return true;
    case JV_FLOAT:
        if (isnan(v.u.f))
            sink_lit(c, s, "NaN");
        else if (isinf(v.u.f))
            sink_lit(c, s, v.u.f < 0 ? "-Infinity" : "Infinity");
        else {
            ju_float_repr(v.u.f, buf, sizeof buf);
            sink_lit(c, s, buf);
        }
        return true;
    case JV_STR: json_str(c, s, v.u.s->s, v.u.s->len, v.u.s->taint, o->ascii); return true;
    case JV_LIST: {
        if (v.u.l->is_gen)
            return false;
        if (!v.u.l->n) {
            sink_lit(c, s, "[]");
            return true;
        }
        sink_lit(c, s, "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                sep_put(c, s, o->item_sep, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                json_indent(c, s, indent, level + 1);
            if (!json_into(c, s, v.u.l->v[i], o, level + 1))
                return false;
        }
        if (indent >= 0)
            json_indent(c, s, indent, level);
        sink_lit(c, s, "]");
        return true;
    }
    case JV_DICT: {
        if (v.u.d->is_ns || v.u.d->is_loop)
            return false;
        if (!v.u.d->n) {
            sink_lit(c, s, "{}");
            return true;
        }
        size_t n = v.u.d->n;
        struct jval **order = jx_alloc(c, n * sizeof *order);
        for (size_t i = 0; i < n; i++)
            order[i] = &v.u.d->k[i];
        if (o->sort)
            qsort(order, n, sizeof *order, key_cmp);
        sink_lit(c, s, "{");
        for (size_t i = 0; i < n; i++) {
            struct jval k = *order[i];
            struct jval val = v.u.d->v[order[i] - v.u.d->k];
            if (i)
                sep_put(c, s, o->item_sep, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                json_indent(c, s, indent, level + 1);
            if (k.t == JV_STR) {
                json_str(c, s, k.u.s->s, k.u.s->len, k.u.s->taint, o->ascii);
            } else if (k.t == JV_INT || k.t == JV_FLOAT || k.t == JV_BOOL || k.t == JV_NONE) {
                sink_lit(c, s, "\"");
                json_into(c, s, k, o, level + 1);
                sink_lit(c, s, "\"");
            } else {
                return false;
            }
            sep_put(c, s, o->key_sep, ": ");
            if (!json_into(c, s, val, o, level + 1))
                return false;
        }
        if (indent >= 0)
            json_indent(c, s, indent, level);
        sink_lit(c, s, "}");
        return true;
    }
    default: return false;
    }
}

bool jv_to_json(struct jctx *c, struct jval v, int indent, bool sort_keys, bool ensure_ascii,
                const struct jstr *item_sep, const struct jstr *key_sep, struct jsink *out)
{
    struct jsonopt o = {indent, sort_keys, ensure_ascii, item_sep, key_sep};
    return json_into(c, out, v, &o, 0);
}

struct jval jv_from_json(struct jctx *c, const json_t *j, bool tainted)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct jval d = jv_dict(c, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            jd_set(c, d.u.d, jv_str_tainted(c, k, strlen(k), tainted), jv_from_json(c, v, tainted));
        }
        return d;
    }
    case JSON_ARRAY: {
        struct jval l = jv_list(c, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            jl_push(c, l.u.l, jv_from_json(c, json_array_get(j, i), tainted));
        return l;
    }
    case JSON_STRING:
        return jv_str_tainted(c, json_string_value(j), json_string_length(j), tainted);
    case JSON_INTEGER: return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(true);
    case JSON_FALSE: return jv_bool(false);
    default: return jv_none();
    }
}
