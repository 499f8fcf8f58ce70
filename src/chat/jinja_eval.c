/*
 * jinja_eval.c - the evaluator of the Jinja interpreter: statements, expressions, and
 * the filters, tests, globals and Python methods chat templates call.
 *
 * Semantics follow jinja2 3.1 in Hugging Face's sandboxed environment: attribute lookup
 * tries the Python attribute then the item (`.`) or the other way round (`[]`), undefined
 * values print as "" but fail when dereferenced, for-loops scope their assignments, lists
 * and dicts are immutable (no append/update). The evaluator counts steps, nesting and
 * output bytes, and unwinds with longjmp on any error (see jinja_int.h).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja_int.h"

#define JX_MAX_DEPTH 600

_Noreturn void jx_fail(struct jctx *c, const struct jnode *n, enum pv_status st, const char *fmt,
                       ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
        pv_err_set(c->err, st, "chat template error at %d:%d: %s", n->line, n->col, msg);
    else
        pv_err_set(c->err, st, "chat template error: %s", msg);
    c->status = st;
    longjmp(c->jb, 1);
}

struct jargs {
    struct jval *pos;
    size_t npos;
    const char **kwn;
    struct jval *kwv;
    size_t nkw;
};

static struct jval eval(struct jctx *c, const struct jnode *n, struct jscope *sc);
static void exec_list(struct jctx *c, struct jnode *const *kids, size_t n, struct jscope *sc);
static struct jval call_value(struct jctx *c, const struct jnode *n, struct jval fn,
                              struct jargs *a, struct jscope *sc);

/* ---- helpers --------------------------------------------------------------------- */

static const struct jval *arg(const struct jargs *a, size_t idx, const char *name)
{
    if (idx < a->npos)
        return &a->pos[idx];
    for (size_t i = 0; i < a->nkw; i++)
        if (strcmp(a->kwn[i], name) == 0)
            return &a->kwv[i];
    return NULL;
}

static struct jval str_of(struct jctx *c, struct jval v) { return jv_to_str(c, v); }

static const struct jstr *need_str(struct jctx *c, const struct jnode *n, struct jval v,
                                   const char *what)
{
    if (v.t != JV_STR)
        jx_fail(c, n, PV_ERR_INVALID, "%s expects a string, got %s", what, jv_type_name(v));
    return v.u.s;
}

static int64_t need_int(struct jctx *c, const struct jnode *n, struct jval v, const char *what)
{
    if (v.t == JV_INT)
        return v.u.i;
    if (v.t == JV_BOOL)
        return v.u.b;
    jx_fail(c, n, PV_ERR_INVALID, "%s expects an integer, got %s", what, jv_type_name(v));
}

static struct jval substr(struct jctx *c, const struct jstr *s, size_t from, size_t to)
{
    return jv_str(c, s->s + from, to - from, s->taint ? s->taint + from : NULL);
}

static void fail_undef(struct jctx *c, const struct jnode *n, struct jval v)
{
    jx_fail(c, n, PV_ERR_INVALID, "'%s' is undefined", v.u.uname ? v.u.uname : "value");
}

/* decode one code point at s[i]; returns its length in bytes */
static size_t cp_at(const char *s, size_t len, size_t i, int32_t *cp)
{
    utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                          (utf8proc_ssize_t)(len - i), cp);
    if (r <= 0) {
        *cp = (unsigned char)s[i];
        return 1;
    }
    return (size_t)r;
}

static bool py_isspace(int32_t cp)
{
    return (cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

static bool in_chars(int32_t cp, const struct jstr *chars)
{
    if (!chars)
        return py_isspace(cp);
    for (size_t i = 0; i < chars->len;) {
        int32_t x;
        i += cp_at(chars->s, chars->len, i, &x);
        if (x == cp)
            return true;
    }
    return false;
}

/* Python str.strip/lstrip/rstrip */
static struct jval py_strip(struct jctx *c, const struct jstr *s, const struct jstr *chars,
                            bool left, bool right)
{
    size_t from = 0, to = s->len;
    if (left) {
        while (from < to) {
            int32_t cp;
            size_t l = cp_at(s->s, to, from, &cp);
            if (!in_chars(cp, chars))
                break;
            from += l;
        }
    }
    if (right) {
        while (to > from) {
            size_t st = to - 1;
            while (st > from && ((unsigned char)s->s[st] & 0xC0) == 0x80)
                st--;
            int32_t cp;
            cp_at(s->s, to, st, &cp);
            if (!in_chars(cp, chars))
                break;
            to = st;
        }
    }
    return substr(c, s, from, to);
}

static struct jval map_case(struct jctx *c, const struct jstr *s, int mode /* 0 lower 1 upper 2 capitalize 3 title */)
{
    struct jsink o = {0};
    bool word_start = true, first = true;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        size_t l = cp_at(s->s, s->len, i, &cp);
        int32_t m;
        if (mode == 0)
            m = utf8proc_tolower(cp);
        else if (mode == 1)
            m = utf8proc_toupper(cp);
        else if (mode == 2)
            m = first ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        else
            m = word_start ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        if (mode == 3) {
            const utf8proc_property_t *pr = utf8proc_get_property(cp);
            bool cased = pr->category == UTF8PROC_CATEGORY_LU || pr->category == UTF8PROC_CATEGORY_LL ||
                         pr->category == UTF8PROC_CATEGORY_LT;
            word_start = !cased;
        }
        first = false;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t el = utf8proc_encode_char(m, enc);
        bool t = false;
        if (s->taint)
            for (size_t k = i; k < i + l; k++)
                t |= s->taint[k] != 0;
        jsink_put(c, &o, (const char *)enc, (size_t)el, NULL, t);
        i += l;
    }
    return jsink_str(c, &o);
}

static bool str_find(const struct jstr *h, const char *needle, size_t nl, size_t from, size_t *at)
{
    if (nl == 0) {
        *at = from;
        return from <= h->len;
    }
    if (h->len < nl)
        return false;
    for (size_t i = from; i + nl <= h->len; i++) {
        if (memcmp(h->s + i, needle, nl) == 0) {
            *at = i;
            return true;
        }
    }
    return false;
}

static struct jval py_replace(struct jctx *c, const struct jnode *n, const struct jstr *s,
                              const struct jstr *old, const struct jstr *new_, int64_t count)
{
    struct jsink o = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old->len == 0) {
        /* Python inserts `new` between every character and at both ends */
        for (size_t k = 0; k <= s->len;) {
            if (count < 0 || done < count) {
                jsink_put(c, &o, new_->s, new_->len, new_->taint, false);
                done++;
            }
            if (k == s->len)
                break;
            int32_t cp;
            size_t l = cp_at(s->s, s->len, k, &cp);
            jsink_put(c, &o, s->s + k, l, s->taint ? s->taint + k : NULL, false);
            k += l;
        }
        return jsink_str(c, &o);
    }
    size_t at;
    while ((count < 0 || done < count) && str_find(s, old->s, old->len, i, &at)) {
        jsink_put(c, &o, s->s + i, at - i, s->taint ? s->taint + i : NULL, false);
        jsink_put(c, &o, new_->s, new_->len, new_->taint, false);
        i = at + old->len;
        done++;
        if (++c->steps > c->max_steps)
            jx_fail(c, n, PV_ERR_TOO_LARGE, "chat template ran too long");
    }
    jsink_put(c, &o, s->s + i, s->len - i, s->taint ? s->taint + i : NULL, false);
    return jsink_str(c, &o);
}

static struct jval py_split(struct jctx *c, const struct jnode *n, const struct jstr *s,
                            const struct jstr *sep, int64_t maxsplit, bool from_right)
{
    struct jval out = jv_list(c, 4);
    if (sep && sep->len == 0)
        jx_fail(c, n, PV_ERR_INVALID, "split: empty separator");
    if (!sep) {
        /* runs of whitespace, no empty strings */
        size_t i = 0;
        int64_t done = 0;
        if (from_right) {
            /* rsplit with whitespace: collect from the right */
            struct jval tmp = jv_list(c, 4);
            size_t end = s->len;
            for (;;) {
                while (end > 0) {
                    size_t st = end - 1;
                    while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80)
                        st--;
                    int32_t cp;
                    cp_at(s->s, end, st, &cp);
                    if (!py_isspace(cp))
                        break;
                    end = st;
                }
                if (end == 0)
                    break;
                size_t b = end;
                if (maxsplit >= 0 && done >= maxsplit) {
                    jl_push(c, tmp.u.l, substr(c, s, 0, end));
                    break;
                }
                while (b > 0) {
                    size_t st = b - 1;
                    while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80)
                        st--;
                    int32_t cp;
                    cp_at(s->s, b, st, &cp);
                    if (py_isspace(cp))
                        break;
                    b = st;
                }
                jl_push(c, tmp.u.l, substr(c, s, b, end));
                done++;
                end = b;
            }
            for (size_t k = tmp.u.l->n; k-- > 0;)
                jl_push(c, out.u.l, tmp.u.l->v[k]);
            return out;
        }
        for (;;) {
            while (i < s->len) {
                int32_t cp;
                size_t l = cp_at(s->s, s->len, i, &cp);
                if (!py_isspace(cp))
                    break;
                i += l;
            }
            if (i >= s->len)
                break;
            if (maxsplit >= 0 && done >= maxsplit) {
                /* the rest, with trailing whitespace removed */
                struct jval rest = substr(c, s, i, s->len);
                jl_push(c, out.u.l, py_strip(c, rest.u.s, NULL, false, true));
                break;
            }
            size_t b = i;
            while (i < s->len) {
                int32_t cp;
                size_t l = cp_at(s->s, s->len, i, &cp);
                if (py_isspace(cp))
                    break;
                i += l;
            }
            jl_push(c, out.u.l, substr(c, s, b, i));
            done++;
        }
        return out;
    }
    if (from_right && maxsplit >= 0) {
        struct jval tmp = jv_list(c, 4);
        size_t end = s->len;
        int64_t done = 0;
        while (done < maxsplit && end >= sep->len) {
            size_t k = end - sep->len + 1;
            bool found = false;
            while (k-- > 0) {
                if (memcmp(s->s + k, sep->s, sep->len) == 0) {
                    found = true;
                    break;
                }
            }
            if (!found)
                break;
            jl_push(c, tmp.u.l, substr(c, s, k + sep->len, end));
            end = k;
            done++;
        }
        jl_push(c, tmp.u.l, substr(c, s, 0, end));
        for (size_t k = tmp.u.l->n; k-- > 0;)
            jl_push(c, out.u.l, tmp.u.l->v[k]);
        return out;
    }
    size_t i = 0, at;
    int64_t done = 0;
    while ((maxsplit < 0 || done < maxsplit) && str_find(s, sep->s, sep->len, i, &at)) {
        jl_push(c, out.u.l, substr(c, s, i, at));
        i = at + sep->len;
        done++;
    }
    jl_push(c, out.u.l, substr(c, s, i, s->len));
    return out;
}

/* Concatenate two strings keeping each byte's taint. */
static struct jval concat(struct jctx *c, const struct jstr *a, const struct jstr *b)
{
    struct jsink o = {0};
    jsink_put(c, &o, a->s, a->len, a->taint, false);
    jsink_put(c, &o, b->s, b->len, b->taint, false);
    if (!o.len)
        return jv_str(c, "", 0, NULL);
    return jsink_str(c, &o);
}

/* Items of an iterable as a list (dict: keys; string: characters). */
static struct jlist *iterate(struct jctx *c, const struct jnode *n, struct jval v)
{
    switch (v.t) {
    case JV_UNDEF: return jv_list(c, 0).u.l;
    case JV_LIST: return v.u.l;
    case JV_DICT: {
        if (v.u.d->is_ns || v.u.d->is_loop)
            break;
        struct jval l = jv_list(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            jl_push(c, l.u.l, v.u.d->k[i]);
        return l.u.l;
    }
    case JV_STR: {
        struct jval l = jv_list(c, v.u.s->len);
        for (size_t i = 0; i < v.u.s->len;) {
            int32_t cp;
            size_t k = cp_at(v.u.s->s, v.u.s->len, i, &cp);
            jl_push(c, l.u.l, substr(c, v.u.s, i, i + k));
            i += k;
        }
        return l.u.l;
    }
    default: break;
    }
    jx_fail(c, n, PV_ERR_INVALID, "'%s' object is not iterable", jv_type_name(v));
}

static int64_t py_len(struct jctx *c, const struct jnode *n, struct jval v)
{
    switch (v.t) {
    case JV_UNDEF: return 0;
    case JV_STR: return (int64_t)ju_cplen(v.u.s->s, v.u.s->len);
    case JV_LIST:
        if (v.u.l->is_gen)
            break;
        return (int64_t)v.u.l->n;
    case JV_DICT:
        if (!v.u.d->is_ns && !v.u.d->is_loop)
            return (int64_t)v.u.d->n;
        break;
    default: break;
    }
    jx_fail(c, n, PV_ERR_INVALID, "object of type '%s' has no len()", jv_type_name(v));
}

/* Python slice indices for a sequence of length len. */
static void slice_bounds(struct jctx *c, const struct jnode *n, int64_t len, const struct jval *a,
                         const struct jval *b, const struct jval *st, int64_t *start, int64_t *stop,
                         int64_t *step)
{
    *step = (st && st->t != JV_NONE) ? need_int(c, n, *st, "slice step") : 1;
    if (*step == 0)
        jx_fail(c, n, PV_ERR_INVALID, "slice step cannot be zero");
    int64_t lo = *step > 0 ? 0 : -1, hi = *step > 0 ? len : len - 1;
    if (a && a->t != JV_NONE) {
        int64_t x = need_int(c, n, *a, "slice index");
        if (x < 0)
            x += len;
        *start = x < lo ? lo : x > hi ? hi : x;
    } else {
        *start = *step > 0 ? 0 : len - 1;
    }
    if (b && b->t != JV_NONE) {
        int64_t x = need_int(c, n, *b, "slice index");
        if (x < 0)
            x += len;
        *stop = x < lo ? lo : x > hi ? hi : x;
    } else {
        *stop = *step > 0 ? len : -1;
    }
}

static struct jval do_slice(struct jctx *c, const struct jnode *n, struct jval obj,
                            const struct jval *a, const struct jval *b, const struct jval *st)
{
    int64_t start, stop, step;
    if (obj.t == JV_LIST) {
        slice_bounds(c, n, (int64_t)obj.u.l->n, a, b, st, &start, &stop, &step);
        struct jval out = jv_list(c, 0);
        out.u.l->is_tuple = obj.u.l->is_tuple;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            jl_push(c, out.u.l, obj.u.l->v[i]);
        return out;
    }
    if (obj.t == JV_STR) {
        const struct jstr *s = obj.u.s;
        int64_t len = (int64_t)ju_cplen(s->s, s->len);
        slice_bounds(c, n, len, a, b, st, &start, &stop, &step);
        if (len == (int64_t)s->len && step == 1)
            return start < stop ? substr(c, s, (size_t)start, (size_t)stop) : jv_str(c, "", 0, NULL);
        struct jsink o = {0};
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            size_t off = ju_cpoff(s->s, s->len, (size_t)i);
            int32_t cp;
            size_t l = cp_at(s->s, s->len, off, &cp);
            jsink_put(c, &o, s->s + off, l, s->taint ? s->taint + off : NULL, false);
        }
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    if (obj.t == JV_UNDEF)
        fail_undef(c, n, obj);
    jx_fail(c, n, PV_ERR_INVALID, "'%s' object is not subscriptable", jv_type_name(obj));
}

/* ---- attribute and item lookup --------------------------------------------------- */

static const char *const str_methods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "count", "format", "join", "isdigit",
    "isalpha", "isalnum", "isspace", "islower", "isupper", "splitlines", "index", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", "pop", "update",
                                           "copy", "setdefault", "clear", "popitem", NULL};
static const char *const list_methods[] = {"append", "pop", "index", "count", "extend", "insert",
                                           "remove", "reverse", "sort", "copy", "clear", NULL};

static bool in_names(const char *const *names, const char *s, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return true;
    return false;
}

static struct jval method(struct jctx *c, struct jval self, const char *name)
{
    struct jfunc *f = jx_alloc(c, sizeof *f);
    memset(f, 0, sizeof *f);
    f->kind = JF_METHOD;
    f->name = name;
    f->self = jx_alloc(c, sizeof *f->self);
    *f->self = self;
    struct jval v = {.t = JV_FUNC};
    v.u.fn = f;
    return v;
}

/* Python getattr(obj, name): a method or, for the loop/namespace objects, an attribute. */
static bool py_getattr(struct jctx *c, struct jval obj, const char *name, size_t len,
                       struct jval *out)
{
    if (obj.t == JV_DICT && (obj.u.d->is_ns || obj.u.d->is_loop)) {
        if (obj.u.d->is_loop && len == 5 && memcmp(name, "cycle", 5) == 0) {
            *out = method(c, obj, "cycle");
            return true;
        }
        struct jval *v = jd_get(obj.u.d, name, len);
        if (v) {
            *out = *v;
            return true;
        }
        return false;
    }
    char nbuf[32];
    if (len >= sizeof nbuf)
        return false;
    memcpy(nbuf, name, len);
    nbuf[len] = 0;
    const char *const *tbl = NULL;
    if (obj.t == JV_STR)
        tbl = str_methods;
    else if (obj.t == JV_DICT && !obj.u.d->is_ns && !obj.u.d->is_loop)
        tbl = dict_methods;
    else if (obj.t == JV_LIST)
        tbl = list_methods;
    if (tbl && in_names(tbl, name, len)) {
        for (int i = 0; tbl[i]; i++)
            if (strcmp(tbl[i], nbuf) == 0)
                *out = method(c, obj, tbl[i]);
        return true;
    }
    return false;
}

static struct jval get_attr(struct jctx *c, const struct jnode *n, struct jval obj, const char *name)
{
    if (obj.t == JV_UNDEF)
        jx_fail(c, n, PV_ERR_INVALID, "'%s' is undefined (reading attribute '%s')",
                obj.u.uname ? obj.u.uname : "value", name);
    struct jval out;
    size_t len = strlen(name);
    if (py_getattr(c, obj, name, len, &out))
        return out;
    if (obj.t == JV_DICT && !obj.u.d->is_ns && !obj.u.d->is_loop) {
        struct jval *v = jd_get(obj.u.d, name, len);
        if (v)
            return *v;
    }
    return jv_undef(name);
}

static struct jval get_item(struct jctx *c, const struct jnode *n, struct jval obj, struct jval key)
{
    if (obj.t == JV_UNDEF)
        jx_fail(c, n, PV_ERR_INVALID, "'%s' is undefined (reading an item)",
                obj.u.uname ? obj.u.uname : "value");
    if (obj.t == JV_DICT && !obj.u.d->is_ns && !obj.u.d->is_loop) {
        struct jval *v = jd_getv(obj.u.d, key);
        if (v)
            return *v;
    } else if ((obj.t == JV_LIST || obj.t == JV_STR) &&
               (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        int64_t len = obj.t == JV_LIST ? (int64_t)obj.u.l->n : py_len(c, n, obj);
        if (i < 0)
            i += len;
        if (i >= 0 && i < len) {
            if (obj.t == JV_LIST)
                return obj.u.l->v[i];
            size_t off = ju_cpoff(obj.u.s->s, obj.u.s->len, (size_t)i);
            int32_t cp;
            size_t l = cp_at(obj.u.s->s, obj.u.s->len, off, &cp);
            return substr(c, obj.u.s, off, off + l);
        }
        return jv_undef("item");
    }
    if (key.t == JV_STR) {
        struct jval out;
        if (py_getattr(c, obj, key.u.s->s, key.u.s->len, &out))
            return out;
        return jv_undef(key.u.s->s);
    }
    return jv_undef("item");
}

/* ---- tests ----------------------------------------------------------------------- */

static bool run_test(struct jctx *c, const struct jnode *n, const char *name, struct jval v,
                     const struct jargs *a)
{
    const struct jval *x = arg(a, 0, "value");
    if (!strcmp(name, "defined"))
        return v.t != JV_UNDEF;
    if (!strcmp(name, "undefined"))
        return v.t == JV_UNDEF;
    if (!strcmp(name, "none"))
        return v.t == JV_NONE;
    if (!strcmp(name, "boolean"))
        return v.t == JV_BOOL;
    if (!strcmp(name, "true"))
        return v.t == JV_BOOL && v.u.b;
    if (!strcmp(name, "false"))
        return v.t == JV_BOOL && !v.u.b;
    if (!strcmp(name, "integer"))
        return v.t == JV_INT;
    if (!strcmp(name, "float"))
        return v.t == JV_FLOAT;
    if (!strcmp(name, "number"))
        return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
    if (!strcmp(name, "string"))
        return v.t == JV_STR;
    if (!strcmp(name, "mapping"))
        return v.t == JV_DICT && !v.u.d->is_ns && !v.u.d->is_loop;
    if (!strcmp(name, "iterable"))
        return v.t == JV_UNDEF || v.t == JV_STR || v.t == JV_LIST ||
               (v.t == JV_DICT && !v.u.d->is_ns && !v.u.d->is_loop);
    if (!strcmp(name, "sequence"))
        return v.t == JV_UNDEF || v.t == JV_STR || v.t == JV_LIST ||
               (v.t == JV_DICT && !v.u.d->is_ns && !v.u.d->is_loop);
    if (!strcmp(name, "callable"))
        return v.t == JV_FUNC;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (v.t != JV_STR)
            return false;
        struct jval m = map_case(c, v.u.s, name[0] == 'l' ? 0 : 1);
        return jv_equal(m, v);
    }
    if (!strcmp(name, "even") || !strcmp(name, "odd")) {
        int64_t i = need_int(c, n, v, name);
        return (((i % 2) + 2) % 2 == 0) == (name[0] == 'e');
    }
    if (!strcmp(name, "divisibleby")) {
        if (!x)
            jx_fail(c, n, PV_ERR_INVALID, "test 'divisibleby' needs an argument");
        int64_t d = need_int(c, n, *x, name);
        if (!d)
            jx_fail(c, n, PV_ERR_INVALID, "integer division by zero");
        return need_int(c, n, v, name) % d == 0;
    }
    if (!x && (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==") ||
               !strcmp(name, "ne") || !strcmp(name, "!=") || !strcmp(name, "sameas") ||
               !strcmp(name, "in") || !strcmp(name, "lt") || !strcmp(name, "le") ||
               !strcmp(name, "gt") || !strcmp(name, "ge") || !strcmp(name, "<") ||
               !strcmp(name, ">") || !strcmp(name, "<=") || !strcmp(name, ">=") ||
               !strcmp(name, "greaterthan") || !strcmp(name, "lessthan")))
        jx_fail(c, n, PV_ERR_INVALID, "test '%s' needs an argument", name);
    if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "=="))
        return jv_equal(v, *x);
    if (!strcmp(name, "ne") || !strcmp(name, "!="))
        return !jv_equal(v, *x);
    if (!strcmp(name, "sameas")) {
        if (v.t != x->t)
            return false;
        if (v.t == JV_NONE || v.t == JV_UNDEF)
            return true;
        if (v.t == JV_BOOL)
            return v.u.b == x->u.b;
        if (v.t == JV_LIST)
            return v.u.l == x->u.l;
        if (v.t == JV_DICT)
            return v.u.d == x->u.d;
        return jv_equal(v, *x) && (v.t == JV_INT ? v.u.i >= -5 && v.u.i <= 256 : false);
    }
    if (!strcmp(name, "in")) {
        if (x->t == JV_STR) {
            const struct jstr *s = need_str(c, n, v, "'in' test");
            size_t at;
            return str_find(x->u.s, s->s, s->len, 0, &at);
        }
        if (x->t == JV_DICT)
            return jd_getv(x->u.d, v) != NULL;
        struct jlist *l = iterate(c, n, *x);
        for (size_t i = 0; i < l->n; i++)
            if (jv_equal(l->v[i], v))
                return true;
        return false;
    }
    int r;
    bool lt = !strcmp(name, "lt") || !strcmp(name, "<") || !strcmp(name, "lessthan");
    bool le = !strcmp(name, "le") || !strcmp(name, "<=");
    bool gt = !strcmp(name, "gt") || !strcmp(name, ">") || !strcmp(name, "greaterthan");
    bool ge = !strcmp(name, "ge") || !strcmp(name, ">=");
    if (lt || le || gt || ge) {
        if (!jv_compare(v, *x, &r))
            jx_fail(c, n, PV_ERR_INVALID, "cannot compare %s and %s", jv_type_name(v),
                    jv_type_name(*x));
        if (r == 2)
            return false;
        return lt ? r < 0 : le ? r <= 0 : gt ? r > 0 : r >= 0;
    }
    if (!strcmp(name, "escaped"))
        return false;
    jx_fail(c, n, PV_ERR_UNSUPPORTED, "no test named '%s'", name);
}

/* ---- filters --------------------------------------------------------------------- */

static struct jval apply_filter(struct jctx *c, const struct jnode *n, const char *name,
                                struct jval v, struct jargs *a, struct jscope *sc);

static struct jval html_escape(struct jctx *c, struct jval v)
{
    if (v.t == JV_STR && v.u.s->markup)
        return v;
    struct jval s = str_of(c, v);
    struct jsink o = {0};
    for (size_t i = 0; i < s.u.s->len; i++) {
        char ch = s.u.s->s[i];
        const char *e = ch == '&' ? "&amp;" : ch == '<' ? "&lt;" : ch == '>' ? "&gt;" :
                        ch == '"' ? "&#34;" : ch == '\'' ? "&#39;" : NULL;
        bool t = s.u.s->taint && s.u.s->taint[i];
        if (e)
            jsink_put(c, &o, e, strlen(e), NULL, t);
        else
            jsink_put(c, &o, &ch, 1, NULL, t);
    }
    struct jval r = o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    r.u.s->markup = true;
    return r;
}

static struct jval to_json(struct jctx *c, const struct jnode *n, struct jval v, const struct jargs *a)
{
    /* Hugging Face: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    const struct jval *asc = arg(a, 0, "ensure_ascii");
    const struct jval *ind = arg(a, 1, "indent");
    const struct jval *sep = arg(a, 2, "separators");
    const struct jval *sk = arg(a, 3, "sort_keys");
    const struct jstr *isep = NULL, *ksep = NULL;
    if (sep && sep->t != JV_NONE) {
        if (sep->t != JV_LIST || sep->u.l->n != 2)
            jx_fail(c, n, PV_ERR_INVALID, "tojson: separators must be a pair of strings");
        isep = need_str(c, n, sep->u.l->v[0], "tojson separators");
        ksep = need_str(c, n, sep->u.l->v[1], "tojson separators");
    }
    int indent = -1;
    if (ind && ind->t != JV_NONE) {
        int64_t i = need_int(c, n, *ind, "tojson indent");
        indent = (int)PV_MAX(0, PV_MIN(i, 64));
    }
    struct jsink o = {0};
    if (!jv_to_json(c, v, indent, sk && jv_truthy(*sk), asc && jv_truthy(*asc), isep, ksep, &o))
        jx_fail(c, n, PV_ERR_INVALID, "object of type %s is not JSON serializable", jv_type_name(v));
    return jsink_str(c, &o);
}

static int cmp_for_sort(struct jctx *c, const struct jnode *n, struct jval a, struct jval b,
                        bool case_sensitive)
{
    if (!case_sensitive && a.t == JV_STR && b.t == JV_STR) {
        a = map_case(c, a.u.s, 0);
        b = map_case(c, b.u.s, 0);
    }
    int r;
    if (!jv_compare(a, b, &r))
        jx_fail(c, n, PV_ERR_INVALID, "cannot compare %s and %s", jv_type_name(a), jv_type_name(b));
    return r == 2 ? 0 : r;
}

/* stable insertion sort; lists in templates are small */
static void sort_vals(struct jctx *c, const struct jnode *n, struct jval *v, size_t cnt,
                      struct jval *keys, bool cs, bool reverse)
{
    for (size_t i = 1; i < cnt; i++) {
        struct jval x = v[i], kx = keys[i];
        size_t j = i;
        while (j > 0) {
            int r = cmp_for_sort(c, n, keys[j - 1], kx, cs);
            if (reverse ? r >= 0 : r <= 0)
                break;
            v[j] = v[j - 1];
            keys[j] = keys[j - 1];
            j--;
        }
        v[j] = x;
        keys[j] = kx;
        if (++c->steps > c->max_steps)
            jx_fail(c, n, PV_ERR_TOO_LARGE, "chat template ran too long");
    }
}

static struct jval attr_path(struct jctx *c, const struct jnode *n, struct jval v, const struct jstr *path)
{
    /* "a.b" walks attributes; numeric parts index */
    size_t i = 0;
    while (i <= path->len) {
        size_t j = i;
        while (j < path->len && path->s[j] != '.')
            j++;
        char *part = jx_alloc(c, j - i + 1);
        memcpy(part, path->s + i, j - i);
        part[j - i] = 0;
        char *end;
        long idx = strtol(part, &end, 10);
        if (*part && !*end)
            v = get_item(c, n, v, jv_int(idx));
        else
            v = get_item(c, n, v, jv_str(c, part, j - i, NULL));
        if (v.t == JV_UNDEF && j < path->len)
            return v;
        i = j + 1;
    }
    return v;
}

static struct jval select_like(struct jctx *c, const struct jnode *n, struct jval v,
                               struct jargs *a, bool by_attr, bool keep, struct jscope *sc)
{
    struct jlist *l = jv_truthy(v) ? iterate(c, n, v) : jv_list(c, 0).u.l;
    struct jval out = jv_list(c, l->n);
    out.u.l->is_gen = true;
    size_t first = 0;
    const struct jstr *attr = NULL;
    if (by_attr) {
        if (a->npos < 1)
            jx_fail(c, n, PV_ERR_INVALID, "selectattr needs an attribute name");
        attr = need_str(c, n, a->pos[0], "selectattr");
        first = 1;
    }
    const char *test = NULL;
    struct jargs ta = {0};
    if (a->npos > first) {
        test = need_str(c, n, a->pos[first], "test name")->s;
        ta.pos = a->pos + first + 1;
        ta.npos = a->npos - first - 1;
    }
    for (size_t i = 0; i < l->n; i++) {
        struct jval item = l->v[i];
        struct jval x = by_attr ? attr_path(c, n, item, attr) : item;
        bool ok = test ? run_test(c, n, test, x, &ta) : jv_truthy(x);
        if (ok == keep)
            jl_push(c, out.u.l, item);
    }
    (void)sc;
    return out;
}

static struct jval apply_filter(struct jctx *c, const struct jnode *n, const char *name,
                                struct jval v, struct jargs *a, struct jscope *sc)
{
    if (!strcmp(name, "safe")) {
        if (v.t == JV_STR && v.u.s->markup)
            return v;
        struct jval s = str_of(c, v);
        s = jv_str(c, s.u.s->s, s.u.s->len, s.u.s->taint);
        s.u.s->markup = true;
        return s;
    }
    if (!strcmp(name, "tojson"))
        return to_json(c, n, v, a);
    if (!strcmp(name, "string"))
        return str_of(c, v);
    if (!strcmp(name, "length") || !strcmp(name, "count"))
        return jv_int(py_len(c, n, v));
    if (!strcmp(name, "trim")) {
        const struct jval *ch = arg(a, 0, "chars");
        struct jval s = str_of(c, v);
        return py_strip(c, s.u.s, ch && ch->t != JV_NONE ? need_str(c, n, *ch, "trim") : NULL, true, true);
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct jval *dv = arg(a, 0, "default_value");
        const struct jval *bo = arg(a, 1, "boolean");
        bool use = v.t == JV_UNDEF || (bo && jv_truthy(*bo) && !jv_truthy(v));
        if (use)
            return dv ? *dv : jv_str(c, "", 0, NULL);
        return v;
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize"))
        return map_case(c, str_of(c, v).u.s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : 2);
    if (!strcmp(name, "title")) {
        /* jinja2: words start after '-', whitespace, '(', '{', '[' or '<' */
        struct jval s = str_of(c, v);
        struct jsink o = {0};
        bool start = true;
        for (size_t i = 0; i < s.u.s->len;) {
            int32_t cp;
            size_t l = cp_at(s.u.s->s, s.u.s->len, i, &cp);
            bool sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            int32_t m = sep ? cp : start ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
            start = sep;
            utf8proc_uint8_t enc[4];
            utf8proc_ssize_t el = utf8proc_encode_char(m, enc);
            jsink_put(c, &o, (const char *)enc, (size_t)el, NULL, s.u.s->taint && s.u.s->taint[i]);
            i += l;
        }
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    if (!strcmp(name, "replace")) {
        const struct jval *o = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        if (!o || !nw)
            jx_fail(c, n, PV_ERR_INVALID, "replace needs two arguments");
        struct jval s = str_of(c, v);
        return py_replace(c, n, s.u.s, str_of(c, *o).u.s, str_of(c, *nw).u.s,
                          cnt && cnt->t != JV_NONE ? need_int(c, n, *cnt, "replace") : -1);
    }
    if (!strcmp(name, "join")) {
        const struct jval *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
        struct jlist *l = iterate(c, n, v);
        struct jsink o = {0};
        struct jval sepv = sep ? str_of(c, *sep) : jv_str(c, "", 0, NULL);
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                jsink_put(c, &o, sepv.u.s->s, sepv.u.s->len, sepv.u.s->taint, false);
            struct jval item = l->v[i];
            if (attr && attr->t != JV_NONE)
                item = attr_path(c, n, item, str_of(c, *attr).u.s);
            struct jval s = str_of(c, item);
            jsink_put(c, &o, s.u.s->s, s.u.s->len, s.u.s->taint, false);
        }
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    if (!strcmp(name, "first")) {
        struct jlist *l = iterate(c, n, v);
        return l->n ? l->v[0] : jv_undef("first");
    }
    if (!strcmp(name, "last")) {
        struct jlist *l = iterate(c, n, v);
        return l->n ? l->v[l->n - 1] : jv_undef("last");
    }
    if (!strcmp(name, "list")) {
        struct jlist *l = iterate(c, n, v);
        struct jval out = jv_list(c, l->n);
        for (size_t i = 0; i < l->n; i++)
            jl_push(c, out.u.l, l->v[i]);
        return out;
    }
    if (!strcmp(name, "reverse")) {
        if (v.t == JV_STR) {
            struct jval m1 = jv_int(-1);
            return do_slice(c, n, v, NULL, NULL, &m1);
        }
        struct jlist *l = iterate(c, n, v);
        struct jval out = jv_list(c, l->n);
        for (size_t i = l->n; i-- > 0;)
            jl_push(c, out.u.l, l->v[i]);
        return out;
    }
    if (!strcmp(name, "items")) {
        if (v.t == JV_UNDEF)
            return jv_list(c, 0);
        if (v.t != JV_DICT || v.u.d->is_ns || v.u.d->is_loop)
            jx_fail(c, n, PV_ERR_INVALID, "items: expected a mapping, got %s", jv_type_name(v));
        struct jval out = jv_list(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) {
            struct jval t = jv_list(c, 2);
            t.u.l->is_tuple = true;
            jl_push(c, t.u.l, v.u.d->k[i]);
            jl_push(c, t.u.l, v.u.d->v[i]);
            jl_push(c, out.u.l, t);
        }
        return out;
    }
    if (!strcmp(name, "dictsort")) {
        if (v.t != JV_DICT)
            jx_fail(c, n, PV_ERR_INVALID, "dictsort: expected a mapping, got %s", jv_type_name(v));
        const struct jval *cs = arg(a, 0, "case_sensitive"), *by = arg(a, 1, "by"),
                          *rev = arg(a, 2, "reverse");
        bool by_value = by && by->t == JV_STR && !strcmp(by->u.s->s, "value");
        size_t cnt = v.u.d->n;
        struct jval out = jv_list(c, cnt);
        struct jval *keys = jx_alloc(c, (cnt + 1) * sizeof *keys);
        for (size_t i = 0; i < cnt; i++) {
            struct jval t = jv_list(c, 2);
            t.u.l->is_tuple = true;
            jl_push(c, t.u.l, v.u.d->k[i]);
            jl_push(c, t.u.l, v.u.d->v[i]);
            jl_push(c, out.u.l, t);
            keys[i] = by_value ? v.u.d->v[i] : v.u.d->k[i];
        }
        sort_vals(c, n, out.u.l->v, cnt, keys, cs && jv_truthy(*cs), rev && jv_truthy(*rev));
        return out;
    }
    if (!strcmp(name, "sort")) {
        const struct jval *rev = arg(a, 0, "reverse"), *cs = arg(a, 1, "case_sensitive"),
                          *attr = arg(a, 2, "attribute");
        struct jlist *l = iterate(c, n, v);
        struct jval out = jv_list(c, l->n);
        struct jval *keys = jx_alloc(c, (l->n + 1) * sizeof *keys);
        for (size_t i = 0; i < l->n; i++) {
            jl_push(c, out.u.l, l->v[i]);
            keys[i] = attr && attr->t != JV_NONE ? attr_path(c, n, l->v[i], str_of(c, *attr).u.s) : l->v[i];
        }
        sort_vals(c, n, out.u.l->v, l->n, keys, cs && jv_truthy(*cs), rev && jv_truthy(*rev));
        return out;
    }
    if (!strcmp(name, "unique")) {
        struct jlist *l = iterate(c, n, v);
        struct jval out = jv_list(c, l->n);
        for (size_t i = 0; i < l->n; i++) {
            bool seen = false;
            for (size_t j = 0; j < out.u.l->n && !seen; j++)
                seen = jv_equal(out.u.l->v[j], l->v[i]);
            if (!seen)
                jl_push(c, out.u.l, l->v[i]);
        }
        return out;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        struct jlist *l = iterate(c, n, v);
        if (!l->n)
            return jv_undef(name);
        struct jval best = l->v[0];
        for (size_t i = 1; i < l->n; i++) {
            int r = cmp_for_sort(c, n, l->v[i], best, false);
            if (name[1] == 'i' ? r < 0 : r > 0)
                best = l->v[i];
        }
        return best;
    }
    if (!strcmp(name, "sum")) {
        struct jlist *l = iterate(c, n, v);
        struct jval acc = jv_int(0);
        for (size_t i = 0; i < l->n; i++) {
            struct jval x = l->v[i];
            if (x.t == JV_FLOAT || acc.t == JV_FLOAT)
                acc = jv_float((acc.t == JV_FLOAT ? acc.u.f : (double)acc.u.i) +
                               (x.t == JV_FLOAT ? x.u.f : (double)need_int(c, n, x, "sum")));
            else
                acc = jv_int(acc.u.i + need_int(c, n, x, "sum"));
        }
        return acc;
    }
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return select_like(c, n, v, a, true, name[0] == 's', sc);
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return select_like(c, n, v, a, false, name[0] == 's', sc);
    if (!strcmp(name, "map")) {
        struct jlist *l = jv_truthy(v) ? iterate(c, n, v) : jv_list(c, 0).u.l;
        struct jval out = jv_list(c, l->n);
        out.u.l->is_gen = true;
        const struct jval *attr = NULL, *dflt = NULL;
        for (size_t i = 0; i < a->nkw; i++) {
            if (!strcmp(a->kwn[i], "attribute"))
                attr = &a->kwv[i];
            else if (!strcmp(a->kwn[i], "default"))
                dflt = &a->kwv[i];
        }
        if (attr) {
            for (size_t i = 0; i < l->n; i++) {
                struct jval x = attr_path(c, n, l->v[i], str_of(c, *attr).u.s);
                jl_push(c, out.u.l, x.t == JV_UNDEF && dflt ? *dflt : x);
            }
            return out;
        }
        if (a->npos < 1)
            jx_fail(c, n, PV_ERR_INVALID, "map needs a filter name or attribute=");
        const char *fname = need_str(c, n, a->pos[0], "map")->s;
        struct jargs fa = {a->pos + 1, a->npos - 1, NULL, NULL, 0};
        for (size_t i = 0; i < l->n; i++)
            jl_push(c, out.u.l, apply_filter(c, n, fname, l->v[i], &fa, sc));
        return out;
    }
    if (!strcmp(name, "attr")) {
        const struct jval *an = arg(a, 0, "name");
        if (!an)
            jx_fail(c, n, PV_ERR_INVALID, "attr needs a name");
        return get_attr(c, n, v, need_str(c, n, *an, "attr")->s);
    }
    if (!strcmp(name, "int")) {
        const struct jval *dv = arg(a, 0, "default");
        struct jval d = dv ? *dv : jv_int(0);
        if (v.t == JV_INT)
            return v;
        if (v.t == JV_BOOL)
            return jv_int(v.u.b);
        if (v.t == JV_FLOAT)
            return isfinite(v.u.f) ? jv_int((int64_t)v.u.f) : d;
        if (v.t == JV_STR) {
            struct jval s = py_strip(c, v.u.s, NULL, true, true);
            char *end;
            errno = 0;
            long long x = strtoll(s.u.s->s, &end, 10);
            if (s.u.s->len && !*end && !errno)
                return jv_int(x);
            double f = strtod(s.u.s->s, &end);
            if (s.u.s->len && !*end && isfinite(f))
                return jv_int((int64_t)f);
        }
        return d;
    }
    if (!strcmp(name, "float")) {
        const struct jval *dv = arg(a, 0, "default");
        if (v.t == JV_FLOAT)
            return v;
        if (v.t == JV_INT || v.t == JV_BOOL)
            return jv_float((double)need_int(c, n, v, "float"));
        if (v.t == JV_STR) {
            struct jval s = py_strip(c, v.u.s, NULL, true, true);
            char *end;
            double f = strtod(s.u.s->s, &end);
            if (s.u.s->len && !*end)
                return jv_float(f);
        }
        return dv ? *dv : jv_float(0.0);
    }
    if (!strcmp(name, "abs")) {
        if (v.t == JV_INT)
            return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.t == JV_FLOAT)
            return jv_float(fabs(v.u.f));
        if (v.t == JV_BOOL)
            return jv_int(v.u.b);
        jx_fail(c, n, PV_ERR_INVALID, "bad operand type for abs(): '%s'", jv_type_name(v));
    }
    if (!strcmp(name, "round")) {
        const struct jval *pr = arg(a, 0, "precision"), *me = arg(a, 1, "method");
        int64_t p = pr ? need_int(c, n, *pr, "round") : 0;
        const char *m = me ? need_str(c, n, *me, "round")->s : "common";
        if ((v.t == JV_INT || v.t == JV_BOOL) && !strcmp(m, "common") && p >= 0)
            return jv_int(need_int(c, n, v, "round")); /* Python: round(int, n) is that int */
        double x = v.t == JV_FLOAT ? v.u.f : (double)need_int(c, n, v, "round");
        double k = pow(10.0, (double)p);
        double r;
        if (!strcmp(m, "floor"))
            r = floor(x * k) / k;
        else if (!strcmp(m, "ceil"))
            r = ceil(x * k) / k;
        else {
            r = nearbyint(x * k) / k; /* Python round: half to even */
        }
        return jv_float(r);
    }
    if (!strcmp(name, "escape") || !strcmp(name, "e"))
        return html_escape(c, v);
    if (!strcmp(name, "indent")) {
        const struct jval *w = arg(a, 0, "width"), *fi = arg(a, 1, "first"), *bl = arg(a, 2, "blank");
        struct jval pad;
        if (w && w->t == JV_STR) {
            pad = *w;
        } else {
            int64_t k = w ? need_int(c, n, *w, "indent") : 4;
            k = PV_MAX(0, PV_MIN(k, 256));
            char sp[257];
            memset(sp, ' ', (size_t)k);
            pad = jv_str(c, sp, (size_t)k, NULL);
        }
        struct jval s = str_of(c, v);
        struct jsink o = {0};
        bool first = fi && jv_truthy(*fi), blank = bl && jv_truthy(*bl);
        size_t i = 0;
        bool line0 = true;
        while (i <= s.u.s->len) {
            size_t j = i;
            while (j < s.u.s->len && s.u.s->s[j] != '\n')
                j++;
            bool empty = j == i;
            bool has_nl = j < s.u.s->len;
            if ((line0 ? first : true) && (blank || !empty) && !(j == s.u.s->len && empty && !line0))
                jsink_put(c, &o, pad.u.s->s, pad.u.s->len, pad.u.s->taint, false);
            jsink_put(c, &o, s.u.s->s + i, j - i + (has_nl ? 1 : 0), s.u.s->taint ? s.u.s->taint + i : NULL, false);
            line0 = false;
            if (!has_nl)
                break;
            i = j + 1;
        }
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    if (!strcmp(name, "wordcount")) {
        struct jval s = str_of(c, v);
        struct jval parts = py_split(c, n, s.u.s, NULL, -1, false);
        return jv_int((int64_t)parts.u.l->n);
    }
    if (!strcmp(name, "batch") || !strcmp(name, "slice"))
        jx_fail(c, n, PV_ERR_UNSUPPORTED, "filter '%s' is not supported", name);
    jx_fail(c, n, PV_ERR_UNSUPPORTED, "no filter named '%s'", name);
}

/* ---- calls ----------------------------------------------------------------------- */

static struct jval builtin_value(struct jctx *c, const char *name)
{
    static const char *const builtins[] = {"range", "namespace", "dict", "raise_exception",
                                           "strftime_now", "lipsum", "cycler", "joiner", NULL};
    for (int i = 0; builtins[i]; i++) {
        if (strcmp(builtins[i], name) == 0) {
            struct jfunc *f = jx_alloc(c, sizeof *f);
            memset(f, 0, sizeof *f);
            f->kind = JF_BUILTIN;
            f->name = builtins[i];
            struct jval v = {.t = JV_FUNC};
            v.u.fn = f;
            return v;
        }
    }
    return jv_undef(name);
}

static struct jval call_builtin(struct jctx *c, const struct jnode *n, const char *name,
                                struct jargs *a)
{
    if (!strcmp(name, "raise_exception")) {
        const struct jval *m = arg(a, 0, "message");
        struct jval s = m ? str_of(c, *m) : jv_str(c, "", 0, NULL);
        jx_fail(c, n, PV_ERR_INVALID, "raise_exception: %s", s.u.s->s);
    }
    if (!strcmp(name, "range")) {
        int64_t start = 0, stop, step = 1;
        if (a->npos == 1) {
            stop = need_int(c, n, a->pos[0], "range");
        } else if (a->npos >= 2) {
            start = need_int(c, n, a->pos[0], "range");
            stop = need_int(c, n, a->pos[1], "range");
            if (a->npos >= 3)
                step = need_int(c, n, a->pos[2], "range");
        } else {
            jx_fail(c, n, PV_ERR_INVALID, "range expects 1 to 3 arguments");
        }
        if (step == 0)
            jx_fail(c, n, PV_ERR_INVALID, "range() arg 3 must not be zero");
        struct jval out = jv_list(c, 0);
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            if (out.u.l->n >= 1000000)
                jx_fail(c, n, PV_ERR_TOO_LARGE, "range too large");
            jl_push(c, out.u.l, jv_int(i));
        }
        return out;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        struct jval d = jv_dict(c, a->nkw + 4);
        for (size_t i = 0; i < a->npos; i++) {
            if (a->pos[i].t != JV_DICT)
                jx_fail(c, n, PV_ERR_INVALID, "%s: positional argument must be a mapping", name);
            for (size_t k = 0; k < a->pos[i].u.d->n; k++)
                jd_set(c, d.u.d, a->pos[i].u.d->k[k], a->pos[i].u.d->v[k]);
        }
        for (size_t i = 0; i < a->nkw; i++)
            jd_set(c, d.u.d, jv_str(c, a->kwn[i], strlen(a->kwn[i]), NULL), a->kwv[i]);
        d.u.d->is_ns = name[0] == 'n';
        return d;
    }
    if (!strcmp(name, "strftime_now")) {
        const struct jval *f = arg(a, 0, "format");
        if (!f)
            jx_fail(c, n, PV_ERR_INVALID, "strftime_now needs a format");
        const struct jstr *fmt = need_str(c, n, *f, "strftime_now");
        struct tm tm;
        time_t now = c->opts->now;
        localtime_r(&now, &tm);
        char buf[512];
        size_t w = fmt->len < 200 ? strftime(buf, sizeof buf, fmt->s, &tm) : 0;
        return jv_str(c, buf, w, NULL);
    }
    jx_fail(c, n, PV_ERR_UNSUPPORTED, "function '%s' is not supported", name);
}

static struct jval str_format(struct jctx *c, const struct jnode *n, const struct jstr *fmt,
                              struct jargs *a)
{
    struct jsink o = {0};
    size_t auto_idx = 0;
    for (size_t i = 0; i < fmt->len; i++) {
        char ch = fmt->s[i];
        if ((ch == '{' || ch == '}') && i + 1 < fmt->len && fmt->s[i + 1] == ch) {
            jsink_put(c, &o, &ch, 1, NULL, fmt->taint && fmt->taint[i]);
            i++;
            continue;
        }
        if (ch != '{') {
            jsink_put(c, &o, &ch, 1, NULL, fmt->taint && fmt->taint[i]);
            continue;
        }
        size_t j = i + 1;
        while (j < fmt->len && fmt->s[j] != '}')
            j++;
        if (j >= fmt->len)
            jx_fail(c, n, PV_ERR_INVALID, "format: single '{' encountered");
        size_t fe = i + 1;
        while (fe < j && fmt->s[fe] != ':' && fmt->s[fe] != '!')
            fe++;
        if (fe != j)
            jx_fail(c, n, PV_ERR_UNSUPPORTED, "format: conversions and format specs are not supported");
        struct jval v;
        if (fe == i + 1) {
            if (auto_idx >= a->npos)
                jx_fail(c, n, PV_ERR_INVALID, "format: not enough arguments");
            v = a->pos[auto_idx++];
        } else if (fmt->s[i + 1] >= '0' && fmt->s[i + 1] <= '9') {
            size_t k = (size_t)strtoul(fmt->s + i + 1, NULL, 10);
            if (k >= a->npos)
                jx_fail(c, n, PV_ERR_INVALID, "format: index out of range");
            v = a->pos[k];
        } else {
            const struct jval *kv = NULL;
            for (size_t k = 0; k < a->nkw; k++)
                if (strlen(a->kwn[k]) == fe - i - 1 && !memcmp(a->kwn[k], fmt->s + i + 1, fe - i - 1))
                    kv = &a->kwv[k];
            if (!kv)
                jx_fail(c, n, PV_ERR_INVALID, "format: missing key");
            v = *kv;
        }
        struct jval s = str_of(c, v);
        jsink_put(c, &o, s.u.s->s, s.u.s->len, s.u.s->taint, false);
        i = j;
    }
    return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
}

static bool prefix_match(struct jctx *c, const struct jnode *n, const struct jstr *s,
                         struct jval p, bool suffix)
{
    if (p.t == JV_LIST && p.u.l->is_tuple) {
        for (size_t i = 0; i < p.u.l->n; i++)
            if (prefix_match(c, n, s, p.u.l->v[i], suffix))
                return true;
        return false;
    }
    const struct jstr *x = need_str(c, n, p, suffix ? "endswith" : "startswith");
    if (x->len > s->len)
        return false;
    return memcmp(suffix ? s->s + s->len - x->len : s->s, x->s, x->len) == 0;
}

static struct jval call_method(struct jctx *c, const struct jnode *n, struct jfunc *f,
                               struct jargs *a)
{
    struct jval self = *f->self;
    const char *m = f->name;
    const struct jval *a0 = arg(a, 0, "_0"), *a1 = arg(a, 1, "_1");
    if (self.t == JV_STR) {
        const struct jstr *s = self.u.s;
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            const struct jstr *ch = a0 && a0->t != JV_NONE ? need_str(c, n, *a0, m) : NULL;
            return py_strip(c, s, ch, m[0] != 'r', m[0] != 'l');
        }
        if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
            const struct jval *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
            return py_split(c, n, s, sep && sep->t != JV_NONE ? need_str(c, n, *sep, m) : NULL,
                            mx ? need_int(c, n, *mx, m) : -1, m[0] == 'r');
        }
        if (!strcmp(m, "splitlines")) {
            struct jval out = jv_list(c, 4);
            size_t i = 0;
            while (i < s->len) {
                size_t j = i;
                while (j < s->len && s->s[j] != '\n' && s->s[j] != '\r')
                    j++;
                jl_push(c, out.u.l, substr(c, s, i, j));
                if (j < s->len && s->s[j] == '\r' && j + 1 < s->len && s->s[j + 1] == '\n')
                    j++;
                i = j + 1;
            }
            return out;
        }
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            if (!a0)
                jx_fail(c, n, PV_ERR_INVALID, "%s needs an argument", m);
            return jv_bool(prefix_match(c, n, s, *a0, m[0] == 'e'));
        }
        if (!strcmp(m, "upper"))
            return map_case(c, s, 1);
        if (!strcmp(m, "lower"))
            return map_case(c, s, 0);
        if (!strcmp(m, "capitalize"))
            return map_case(c, s, 2);
        if (!strcmp(m, "title"))
            return map_case(c, s, 3);
        if (!strcmp(m, "replace")) {
            if (!a0 || !a1)
                jx_fail(c, n, PV_ERR_INVALID, "replace needs two arguments");
            const struct jval *cnt = arg(a, 2, "count");
            return py_replace(c, n, s, need_str(c, n, *a0, m), need_str(c, n, *a1, m),
                              cnt ? need_int(c, n, *cnt, m) : -1);
        }
        if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "count")) {
            if (!a0)
                jx_fail(c, n, PV_ERR_INVALID, "%s needs an argument", m);
            const struct jstr *x = need_str(c, n, *a0, m);
            if (!strcmp(m, "count")) {
                int64_t k = 0;
                size_t i = 0, at;
                if (!x->len)
                    return jv_int((int64_t)ju_cplen(s->s, s->len) + 1);
                while (str_find(s, x->s, x->len, i, &at)) {
                    k++;
                    i = at + x->len;
                }
                return jv_int(k);
            }
            size_t at = 0;
            bool found;
            if (m[0] == 'r') {
                found = false;
                for (size_t i = s->len + 1; i-- > 0;) {
                    if (i + x->len <= s->len && memcmp(s->s + i, x->s, x->len) == 0) {
                        at = i;
                        found = true;
                        break;
                    }
                }
            } else {
                found = str_find(s, x->s, x->len, 0, &at);
            }
            if (!found) {
                if (m[0] == 'i')
                    jx_fail(c, n, PV_ERR_INVALID, "substring not found");
                return jv_int(-1);
            }
            return jv_int((int64_t)ju_cplen(s->s, at));
        }
        if (!strcmp(m, "format"))
            return str_format(c, n, s, a);
        if (!strcmp(m, "join")) {
            if (!a0)
                jx_fail(c, n, PV_ERR_INVALID, "join needs an argument");
            struct jlist *l = iterate(c, n, *a0);
            struct jsink o = {0};
            for (size_t i = 0; i < l->n; i++) {
                if (i)
                    jsink_put(c, &o, s->s, s->len, s->taint, false);
                const struct jstr *x = need_str(c, n, l->v[i], "join");
                jsink_put(c, &o, x->s, x->len, x->taint, false);
            }
            return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
        }
        if (!strncmp(m, "is", 2)) {
            if (!s->len)
                return jv_bool(false);
            bool ok = true, any_cased = false;
            for (size_t i = 0; i < s->len;) {
                int32_t cp;
                i += cp_at(s->s, s->len, i, &cp);
                utf8proc_category_t cat = utf8proc_category(cp);
                bool alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
                bool digit = cat == UTF8PROC_CATEGORY_ND;
                if (!strcmp(m, "isdigit"))
                    ok &= digit;
                else if (!strcmp(m, "isalpha"))
                    ok &= alpha;
                else if (!strcmp(m, "isalnum"))
                    ok &= alpha || digit;
                else if (!strcmp(m, "isspace"))
                    ok &= py_isspace(cp);
                else if (!strcmp(m, "islower")) {
                    ok &= cat != UTF8PROC_CATEGORY_LU && cat != UTF8PROC_CATEGORY_LT;
                    any_cased |= cat == UTF8PROC_CATEGORY_LL;
                } else {
                    ok &= cat != UTF8PROC_CATEGORY_LL && cat != UTF8PROC_CATEGORY_LT;
                    any_cased |= cat == UTF8PROC_CATEGORY_LU;
                }
            }
            if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
                ok &= any_cased;
            return jv_bool(ok);
        }
    } else if (self.t == JV_DICT && !self.u.d->is_loop) {
        struct jdict *d = self.u.d;
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            struct jval out = jv_list(c, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (m[0] == 'k') {
                    jl_push(c, out.u.l, d->k[i]);
                } else if (m[0] == 'v') {
                    jl_push(c, out.u.l, d->v[i]);
                } else {
                    struct jval t = jv_list(c, 2);
                    t.u.l->is_tuple = true;
                    jl_push(c, t.u.l, d->k[i]);
                    jl_push(c, t.u.l, d->v[i]);
                    jl_push(c, out.u.l, t);
                }
            }
            return out;
        }
        if (!strcmp(m, "get")) {
            if (!a0)
                jx_fail(c, n, PV_ERR_INVALID, "get needs a key");
            struct jval *v = jd_getv(d, *a0);
            return v ? *v : a1 ? *a1 : jv_none();
        }
        if (!strcmp(m, "copy")) {
            struct jval out = jv_dict(c, d->n);
            for (size_t i = 0; i < d->n; i++)
                jd_set(c, out.u.d, d->k[i], d->v[i]);
            return out;
        }
    } else if (self.t == JV_DICT && self.u.d->is_loop && !strcmp(m, "cycle")) {
        if (!a->npos)
            jx_fail(c, n, PV_ERR_INVALID, "no items for cycling given");
        struct jval *i0 = jd_get(self.u.d, "index0", 6);
        return a->pos[(size_t)i0->u.i % a->npos];
    } else if (self.t == JV_LIST) {
        struct jlist *l = self.u.l;
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            if (!a0)
                jx_fail(c, n, PV_ERR_INVALID, "%s needs an argument", m);
            int64_t k = 0;
            for (size_t i = 0; i < l->n; i++) {
                if (jv_equal(l->v[i], *a0)) {
                    if (m[0] == 'i')
                        return jv_int((int64_t)i);
                    k++;
                }
            }
            if (m[0] == 'i')
                jx_fail(c, n, PV_ERR_INVALID, "value is not in list");
            return jv_int(k);
        }
        if (!strcmp(m, "copy")) {
            struct jval out = jv_list(c, l->n);
            for (size_t i = 0; i < l->n; i++)
                jl_push(c, out.u.l, l->v[i]);
            return out;
        }
    }
    jx_fail(c, n, PV_ERR_UNSUPPORTED,
            "method '%s' of %s is not allowed (the sandbox makes values immutable)", m,
            jv_type_name(self));
}

static void exec_body_into(struct jctx *c, struct jnode *const *kids, size_t nk, struct jscope *sc,
                           struct jsink *into)
{
    struct jsink *saved = c->sink;
    c->sink = into;
    exec_list(c, kids, nk, sc);
    c->sink = saved;
}

static struct jscope *new_scope(struct jctx *c, struct jscope *parent)
{
    struct jscope *s = jx_alloc(c, sizeof *s);
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(struct jctx *c, struct jscope *sc, const char *name, struct jval v)
{
    jd_set(c, &sc->vars, jv_str(c, name, strlen(name), NULL), v);
}

static struct jval call_macro(struct jctx *c, const struct jnode *n, struct jfunc *f,
                              struct jargs *a)
{
    const struct jnode *m = f->macro;
    if (a->npos > m->n_names)
        jx_fail(c, n, PV_ERR_INVALID, "macro '%s' takes not more than %zu argument(s)",
                m->name ? m->name : "caller", m->n_names);
    struct jscope *sc = new_scope(c, f->closure);
    for (size_t i = 0; i < m->n_names; i++) {
        const struct jval *v = i < a->npos ? &a->pos[i] : NULL;
        for (size_t k = 0; !v && k < a->nkw; k++)
            if (!strcmp(a->kwn[k], m->names[i]))
                v = &a->kwv[k];
        struct jval val = v ? *v : m->kids2[i] ? eval(c, m->kids2[i], sc) : jv_undef(m->names[i]);
        scope_set(c, sc, m->names[i], val);
    }
    for (size_t k = 0; k < a->nkw; k++) {
        bool known = false;
        for (size_t i = 0; i < m->n_names; i++)
            known |= !strcmp(a->kwn[k], m->names[i]);
        if (!known)
            jx_fail(c, n, PV_ERR_INVALID, "macro '%s' has no argument '%s'",
                    m->name ? m->name : "caller", a->kwn[k]);
    }
    if (f->caller) {
        struct jfunc *cf = jx_alloc(c, sizeof *cf);
        memset(cf, 0, sizeof *cf);
        cf->kind = JF_MACRO;
        cf->macro = f->caller;
        cf->closure = f->closure;
        struct jval cv = {.t = JV_FUNC};
        cv.u.fn = cf;
        scope_set(c, sc, "caller", cv);
    }
    struct jsink out = {0};
    int saved_ctl = c->loop_ctl;
    exec_body_into(c, m->kids, m->n_kids, sc, &out);
    c->loop_ctl = saved_ctl;
    return out.len ? jsink_str(c, &out) : jv_str(c, "", 0, NULL);
}

static struct jval call_value(struct jctx *c, const struct jnode *n, struct jval fn,
                              struct jargs *a, struct jscope *sc)
{
    (void)sc;
    if (fn.t == JV_UNDEF)
        jx_fail(c, n, PV_ERR_INVALID, "'%s' is undefined (called as a function)",
                fn.u.uname ? fn.u.uname : "value");
    if (fn.t != JV_FUNC)
        jx_fail(c, n, PV_ERR_INVALID, "'%s' object is not callable", jv_type_name(fn));
    if (++c->steps > c->max_steps)
        jx_fail(c, n, PV_ERR_TOO_LARGE, "chat template ran too long");
    switch (fn.u.fn->kind) {
    case JF_BUILTIN: return call_builtin(c, n, fn.u.fn->name, a);
    case JF_METHOD: return call_method(c, n, fn.u.fn, a);
    default: return call_macro(c, n, fn.u.fn, a);
    }
}

static void eval_args(struct jctx *c, const struct jnode *n, struct jscope *sc, struct jargs *a)
{
    a->npos = n->n_kids;
    a->nkw = n->n_kids2;
    a->pos = jx_alloc(c, (n->n_kids + 1) * sizeof *a->pos);
    a->kwv = jx_alloc(c, (n->n_kids2 + 1) * sizeof *a->kwv);
    a->kwn = n->names;
    for (size_t i = 0; i < n->n_kids; i++)
        a->pos[i] = eval(c, n->kids[i], sc);
    for (size_t i = 0; i < n->n_kids2; i++)
        a->kwv[i] = eval(c, n->kids2[i], sc);
}

/* ---- expressions ----------------------------------------------------------------- */

static struct jval lookup(struct jctx *c, struct jscope *sc, const char *name)
{
    for (struct jscope *s = sc; s; s = s->parent) {
        struct jval *v = jd_get(&s->vars, name, strlen(name));
        if (v)
            return *v;
    }
    return builtin_value(c, name);
}

static struct jval arith(struct jctx *c, const struct jnode *n, int op, struct jval a, struct jval b)
{
    if (op == '~') {
        struct jval x = str_of(c, a), y = str_of(c, b);
        return concat(c, x.u.s, y.u.s);
    }
    if (a.t == JV_UNDEF)
        fail_undef(c, n, a);
    if (b.t == JV_UNDEF)
        fail_undef(c, n, b);
    if (op == '+' && a.t == JV_STR && b.t == JV_STR) {
        if (a.u.s->markup == b.u.s->markup) {
            struct jval r = concat(c, a.u.s, b.u.s);
            r.u.s->markup = a.u.s->markup;
            return r;
        }
        /* Markup + str escapes the plain side (markupsafe) */
        struct jval x = a.u.s->markup ? a : html_escape(c, a);
        struct jval y = b.u.s->markup ? b : html_escape(c, b);
        struct jval r = concat(c, x.u.s, y.u.s);
        r.u.s->markup = true;
        return r;
    }
    if (op == '+' && a.t == JV_LIST && b.t == JV_LIST) {
        struct jval out = jv_list(c, a.u.l->n + b.u.l->n);
        out.u.l->is_tuple = a.u.l->is_tuple;
        if (a.u.l->is_tuple != b.u.l->is_tuple)
            goto bad;
        for (size_t i = 0; i < a.u.l->n; i++)
            jl_push(c, out.u.l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++)
            jl_push(c, out.u.l, b.u.l->v[i]);
        return out;
    }
    if (op == '*' && ((a.t == JV_STR && (b.t == JV_INT || b.t == JV_BOOL)) ||
                      (b.t == JV_STR && (a.t == JV_INT || a.t == JV_BOOL)))) {
        struct jval s = a.t == JV_STR ? a : b;
        int64_t k = need_int(c, n, a.t == JV_STR ? b : a, "*");
        struct jsink o = {0};
        for (int64_t i = 0; i < k; i++)
            jsink_put(c, &o, s.u.s->s, s.u.s->len, s.u.s->taint, false);
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    if (op == '%' && a.t == JV_STR) {
        /* printf-style formatting: %s, %d/%i, %% */
        const struct jstr *f = a.u.s;
        const struct jval *args = &b;
        size_t nargs = 1, k = 0;
        if (b.t == JV_LIST && b.u.l->is_tuple) {
            args = b.u.l->v;
            nargs = b.u.l->n;
        }
        struct jsink o = {0};
        for (size_t i = 0; i < f->len; i++) {
            if (f->s[i] != '%') {
                jsink_put(c, &o, f->s + i, 1, NULL, f->taint && f->taint[i]);
                continue;
            }
            char conv = i + 1 < f->len ? f->s[++i] : 0;
            if (conv == '%') {
                jsink_put(c, &o, "%", 1, NULL, false);
                continue;
            }
            if (conv != 's' && conv != 'd' && conv != 'i')
                jx_fail(c, n, PV_ERR_UNSUPPORTED, "string formatting: '%%%c' is not supported", conv ? conv : ' ');
            if (k >= nargs)
                jx_fail(c, n, PV_ERR_INVALID, "not enough arguments for format string");
            struct jval x = args[k++];
            if (conv != 's') {
                if (x.t == JV_FLOAT)
                    x = jv_int((int64_t)x.u.f);
                else
                    x = jv_int(need_int(c, n, x, "%d format"));
            }
            struct jval sx = str_of(c, x);
            jsink_put(c, &o, sx.u.s->s, sx.u.s->len, sx.u.s->taint, false);
        }
        if (k < nargs)
            jx_fail(c, n, PV_ERR_INVALID, "not all arguments converted during string formatting");
        return o.len ? jsink_str(c, &o) : jv_str(c, "", 0, NULL);
    }
    bool an = a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL;
    bool bn = b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL;
    if (!an || !bn)
        goto bad;
    if (a.t != JV_FLOAT && b.t != JV_FLOAT && op != '/') {
        int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b, r = 0;
        bool ovf = false;
        switch (op) {
        case '+': ovf = __builtin_add_overflow(x, y, &r); break;
        case '-': ovf = __builtin_sub_overflow(x, y, &r); break;
        case '*': ovf = __builtin_mul_overflow(x, y, &r); break;
        case 'F': case '%':
            if (y == 0)
                jx_fail(c, n, PV_ERR_INVALID, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) {
                ovf = true;
                break;
            }
            r = x / y;
            if ((x % y != 0) && ((x < 0) != (y < 0)))
                r--;
            if (op == '%')
                r = x - r * y;
            break;
        case 'P':
            if (y < 0)
                return jv_float(pow((double)x, (double)y));
            r = 1;
            for (int64_t i = 0; i < y && !ovf; i++)
                ovf = __builtin_mul_overflow(r, x, &r);
            break;
        }
        if (ovf)
            jx_fail(c, n, PV_ERR_INVALID, "integer overflow");
        return jv_int(r);
    }
    double x = a.t == JV_FLOAT ? a.u.f : (double)(a.t == JV_INT ? a.u.i : a.u.b);
    double y = b.t == JV_FLOAT ? b.u.f : (double)(b.t == JV_INT ? b.u.i : b.u.b);
    switch (op) {
    case '+': return jv_float(x + y);
    case '-': return jv_float(x - y);
    case '*': return jv_float(x * y);
    case 'P': return jv_float(pow(x, y));
    case '/':
        if (y == 0)
            jx_fail(c, n, PV_ERR_INVALID, "division by zero");
        return jv_float(x / y);
    case 'F': case '%': {
        if (y == 0)
            jx_fail(c, n, PV_ERR_INVALID, "float modulo or division by zero");
        double m = fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0)))
            m += y;
        return jv_float(op == '%' ? m : floor((x - m) / y + 0.5));
    }
    }
bad:
    jx_fail(c, n, PV_ERR_INVALID, "unsupported operand type(s) for %s: '%s' and '%s'",
            op == 'F' ? "//" : op == 'P' ? "**" : (char[]){(char)op, 0}, jv_type_name(a),
            jv_type_name(b));
}

static bool contains(struct jctx *c, const struct jnode *n, struct jval needle, struct jval hay)
{
    if (hay.t == JV_STR) {
        if (needle.t != JV_STR)
            jx_fail(c, n, PV_ERR_INVALID, "'in <string>' requires string as left operand, not %s",
                    jv_type_name(needle));
        size_t at;
        return str_find(hay.u.s, needle.u.s->s, needle.u.s->len, 0, &at);
    }
    if (hay.t == JV_DICT && !hay.u.d->is_ns && !hay.u.d->is_loop)
        return jd_getv(hay.u.d, needle) != NULL;
    if (hay.t == JV_UNDEF)
        return false;
    if (hay.t != JV_LIST)
        jx_fail(c, n, PV_ERR_INVALID, "argument of type '%s' is not iterable", jv_type_name(hay));
    for (size_t i = 0; i < hay.u.l->n; i++)
        if (jv_equal(hay.u.l->v[i], needle))
            return true;
    return false;
}

static struct jval eval(struct jctx *c, const struct jnode *n, struct jscope *sc)
{
    if (++c->depth > JX_MAX_DEPTH)
        jx_fail(c, n, PV_ERR_INVALID, "chat template recursion too deep");
    struct jval r;
    switch (n->kind) {
    case E_CONST: r = n->val; break;
    case E_NAME: {
        r = lookup(c, sc, n->name);
        break;
    }
    case E_ATTR: r = get_attr(c, n, eval(c, n->a, sc), n->name); break;
    case E_ITEM: {
        struct jval o = eval(c, n->a, sc);
        r = get_item(c, n, o, eval(c, n->b, sc));
        break;
    }
    case E_SLICE: {
        struct jval o = eval(c, n->a, sc);
        struct jval a, b, d;
        if (n->b)
            a = eval(c, n->b, sc);
        if (n->c)
            b = eval(c, n->c, sc);
        if (n->d)
            d = eval(c, n->d, sc);
        r = do_slice(c, n, o, n->b ? &a : NULL, n->c ? &b : NULL, n->d ? &d : NULL);
        break;
    }
    case E_CALL: {
        struct jval fn = eval(c, n->a, sc);
        struct jargs a;
        eval_args(c, n, sc, &a);
        r = call_value(c, n, fn, &a, sc);
        break;
    }
    case E_FILTER: {
        struct jval v;
        if (n->a) {
            v = eval(c, n->a, sc);
        } else {
            v = *c->filter_input;
        }
        struct jargs a;
        eval_args(c, n, sc, &a);
        r = apply_filter(c, n, n->name, v, &a, sc);
        break;
    }
    case E_TEST: {
        struct jval v = eval(c, n->a, sc);
        struct jargs a;
        eval_args(c, n, sc, &a);
        bool ok = run_test(c, n, n->name, v, &a);
        r = jv_bool(n->op ? !ok : ok);
        break;
    }
    case E_BIN: r = arith(c, n, n->op, eval(c, n->a, sc), eval(c, n->b, sc)); break;
    case E_NEG: case E_POS: {
        struct jval v = eval(c, n->a, sc);
        if (v.t == JV_INT)
            r = jv_int(n->kind == E_NEG ? -v.u.i : v.u.i);
        else if (v.t == JV_BOOL)
            r = jv_int(n->kind == E_NEG ? -(int64_t)v.u.b : v.u.b);
        else if (v.t == JV_FLOAT)
            r = jv_float(n->kind == E_NEG ? -v.u.f : v.u.f);
        else
            jx_fail(c, n, PV_ERR_INVALID, "bad operand type for unary %c: '%s'",
                    n->kind == E_NEG ? '-' : '+', jv_type_name(v));
        break;
    }
    case E_NOT: r = jv_bool(!jv_truthy(eval(c, n->a, sc))); break;
    case E_AND: {
        struct jval a = eval(c, n->a, sc);
        r = jv_truthy(a) ? eval(c, n->b, sc) : a;
        break;
    }
    case E_OR: {
        struct jval a = eval(c, n->a, sc);
        r = jv_truthy(a) ? a : eval(c, n->b, sc);
        break;
    }
    case E_CMP: {
        struct jval left = eval(c, n->a, sc);
        r = jv_bool(true);
        for (size_t i = 0; i < n->n_kids; i++) {
            struct jval right = eval(c, n->kids[i], sc);
            bool ok;
            int cr;
            switch (n->ops[i]) {
            case JC_EQ: ok = jv_equal(left, right); break;
            case JC_NE: ok = !jv_equal(left, right); break;
            case JC_IN: ok = contains(c, n, left, right); break;
            case JC_NOTIN: ok = !contains(c, n, left, right); break;
            default:
                if (!jv_compare(left, right, &cr))
                    jx_fail(c, n, PV_ERR_INVALID, "'%s' not supported between instances of '%s' and '%s'",
                            n->ops[i] == JC_LT ? "<" : n->ops[i] == JC_LE ? "<=" : n->ops[i] == JC_GT ? ">" : ">=",
                            jv_type_name(left), jv_type_name(right));
                ok = cr != 2 && (n->ops[i] == JC_LT ? cr < 0 : n->ops[i] == JC_LE ? cr <= 0 :
                                 n->ops[i] == JC_GT ? cr > 0 : cr >= 0);
            }
            if (!ok) {
                r = jv_bool(false);
                break;
            }
            left = right;
        }
        break;
    }
    case E_COND:
        if (jv_truthy(eval(c, n->b, sc)))
            r = eval(c, n->a, sc);
        else
            r = n->c ? eval(c, n->c, sc) : jv_undef("conditional");
        break;
    case E_LIST: case E_TUPLE: {
        r = jv_list(c, n->n_kids);
        r.u.l->is_tuple = n->kind == E_TUPLE;
        for (size_t i = 0; i < n->n_kids; i++)
            jl_push(c, r.u.l, eval(c, n->kids[i], sc));
        break;
    }
    case E_DICT: {
        r = jv_dict(c, n->n_kids);
        for (size_t i = 0; i < n->n_kids; i++) {
            struct jval k = eval(c, n->kids[i], sc);
            jd_set(c, r.u.d, k, eval(c, n->kids2[i], sc));
        }
        break;
    }
    default:
        jx_fail(c, n, PV_ERR_INTERNAL, "bad expression node %d", n->kind);
    }
    c->depth--;
    return r;
}

/* ---- statements ------------------------------------------------------------------ */

static void output(struct jctx *c, struct jval v)
{
    struct jval s = str_of(c, v);
    jsink_put(c, c->sink, s.u.s->s, s.u.s->len, s.u.s->taint, false);
}

static void assign_targets(struct jctx *c, const struct jnode *n, struct jscope *sc,
                           const char *const *names, size_t nn, struct jval v)
{
    if (nn == 1) {
        scope_set(c, sc, names[0], v);
        return;
    }
    struct jlist *l = iterate(c, n, v);
    if (l->n != nn)
        jx_fail(c, n, PV_ERR_INVALID, "cannot unpack %zu values into %zu names", l->n, nn);
    for (size_t i = 0; i < nn; i++)
        scope_set(c, sc, names[i], l->v[i]);
}

static void exec_for(struct jctx *c, const struct jnode *n, struct jscope *sc)
{
    struct jval it = eval(c, n->a, sc);
    struct jlist *src = iterate(c, n, it);
    struct jscope *ls = new_scope(c, sc);
    /* apply the inline filter first: loop.length counts the kept items */
    struct jlist *items = src;
    if (n->b) {
        struct jval kept = jv_list(c, src->n);
        for (size_t i = 0; i < src->n; i++) {
            assign_targets(c, n, ls, n->names, n->n_names, src->v[i]);
            if (jv_truthy(eval(c, n->b, ls)))
                jl_push(c, kept.u.l, src->v[i]);
        }
        items = kept.u.l;
    }
    if (!items->n) {
        exec_list(c, n->kids2, n->n_kids2, sc);
        return;
    }
    struct jval loop = jv_dict(c, 12);
    loop.u.d->is_loop = true;
    size_t len = items->n;
    for (size_t i = 0; i < len; i++) {
        if (++c->steps > c->max_steps)
            jx_fail(c, n, PV_ERR_TOO_LARGE, "chat template ran too long");
        /* each iteration starts from the enclosing scope: what the body set last time is
         * gone (jinja2 semantics) */
        ls = new_scope(c, sc);
        struct jdict *d = loop.u.d;
        d->n = 0;
        jd_set(c, d, jv_str(c, "index", 5, NULL), jv_int((int64_t)i + 1));
        jd_set(c, d, jv_str(c, "index0", 6, NULL), jv_int((int64_t)i));
        jd_set(c, d, jv_str(c, "revindex", 8, NULL), jv_int((int64_t)(len - i)));
        jd_set(c, d, jv_str(c, "revindex0", 9, NULL), jv_int((int64_t)(len - i - 1)));
        jd_set(c, d, jv_str(c, "first", 5, NULL), jv_bool(i == 0));
        jd_set(c, d, jv_str(c, "last", 4, NULL), jv_bool(i + 1 == len));
        jd_set(c, d, jv_str(c, "length", 6, NULL), jv_int((int64_t)len));
        jd_set(c, d, jv_str(c, "depth", 5, NULL), jv_int(1));
        jd_set(c, d, jv_str(c, "depth0", 6, NULL), jv_int(0));
        jd_set(c, d, jv_str(c, "previtem", 8, NULL), i ? items->v[i - 1] : jv_undef("previtem"));
        jd_set(c, d, jv_str(c, "nextitem", 8, NULL), i + 1 < len ? items->v[i + 1] : jv_undef("nextitem"));
        /* a fresh loop object per iteration so a stored `loop` keeps its values */
        struct jval lv = jv_dict(c, d->n);
        for (size_t k = 0; k < d->n; k++)
            jd_set(c, lv.u.d, d->k[k], d->v[k]);
        lv.u.d->is_loop = true;
        scope_set(c, ls, "loop", lv);
        assign_targets(c, n, ls, n->names, n->n_names, items->v[i]);
        exec_list(c, n->kids, n->n_kids, ls);
        if (c->loop_ctl == 1) {
            c->loop_ctl = 0;
            break;
        }
        c->loop_ctl = 0;
    }
}

static void exec_node(struct jctx *c, const struct jnode *n, struct jscope *sc)
{
    if (++c->steps > c->max_steps)
        jx_fail(c, n, PV_ERR_TOO_LARGE, "chat template ran too long");
    if (++c->depth > JX_MAX_DEPTH)
        jx_fail(c, n, PV_ERR_INVALID, "chat template recursion too deep");
    switch (n->kind) {
    case N_TEXT: jsink_put(c, c->sink, n->val.u.s->s, n->val.u.s->len, NULL, false); break;
    case N_OUT: output(c, eval(c, n->a, sc)); break;
    case N_BLOCK: exec_list(c, n->kids, n->n_kids, sc); break;
    case N_IF:
        if (jv_truthy(eval(c, n->a, sc)))
            exec_list(c, n->kids, n->n_kids, sc);
        else
            exec_list(c, n->kids2, n->n_kids2, sc);
        break;
    case N_FOR: exec_for(c, n, sc); break;
    case N_SET: {
        struct jval v = eval(c, n->b, sc);
        if (n->op) {
            struct jval ns = lookup(c, sc, n->name);
            if (ns.t != JV_DICT || !ns.u.d->is_ns)
                jx_fail(c, n, PV_ERR_INVALID, "cannot assign attribute on non-namespace object '%s'", n->name);
            jd_set(c, ns.u.d, jv_str(c, n->names[0], strlen(n->names[0]), NULL), v);
        } else {
            assign_targets(c, n, sc, n->names, n->n_names, v);
        }
        break;
    }
    case N_SETBLOCK: {
        struct jsink out = {0};
        exec_body_into(c, n->kids, n->n_kids, sc, &out);
        struct jval v = out.len ? jsink_str(c, &out) : jv_str(c, "", 0, NULL);
        if (n->a) {
            struct jval *saved = c->filter_input;
            c->filter_input = &v;
            v = eval(c, n->a, sc);
            c->filter_input = saved;
        }
        scope_set(c, sc, n->name, v);
        break;
    }
    case N_FILTERBLOCK: {
        struct jsink out = {0};
        exec_body_into(c, n->kids, n->n_kids, sc, &out);
        struct jval v = out.len ? jsink_str(c, &out) : jv_str(c, "", 0, NULL);
        struct jval *saved = c->filter_input;
        c->filter_input = &v;
        output(c, eval(c, n->a, sc));
        c->filter_input = saved;
        break;
    }
    case N_MACRO: {
        struct jfunc *f = jx_alloc(c, sizeof *f);
        memset(f, 0, sizeof *f);
        f->kind = JF_MACRO;
        f->name = n->name;
        f->macro = n;
        f->closure = sc;
        struct jval v = {.t = JV_FUNC};
        v.u.fn = f;
        scope_set(c, sc, n->name, v);
        break;
    }
    case N_CALLBLOCK: {
        const struct jnode *call = n->a;
        struct jval fn = eval(c, call->a, sc);
        if (fn.t != JV_FUNC || fn.u.fn->kind != JF_MACRO)
            jx_fail(c, n, PV_ERR_INVALID, "call block needs a macro");
        struct jfunc f = *fn.u.fn;
        f.caller = n;
        struct jargs a;
        eval_args(c, call, sc, &a);
        struct jfunc *fp = jx_alloc(c, sizeof *fp);
        *fp = f;
        /* the caller body sees the scope of the call site */
        struct jfunc *cm = fp;
        cm->closure = fn.u.fn->closure;
        struct jval v = {.t = JV_FUNC};
        v.u.fn = cm;
        output(c, call_value(c, n, v, &a, sc));
        break;
    }
    case N_BREAK: c->loop_ctl = 1; break;
    case N_CONTINUE: c->loop_ctl = 2; break;
    default: jx_fail(c, n, PV_ERR_INTERNAL, "bad statement node %d", n->kind);
    }
    c->depth--;
}

static void exec_list(struct jctx *c, struct jnode *const *kids, size_t n, struct jscope *sc)
{
    for (size_t i = 0; i < n && !c->loop_ctl; i++)
        exec_node(c, kids[i], sc);
}

void jeval_block(struct jctx *c, const struct jnode *n, struct jscope *sc)
{
    exec_node(c, n, sc);
}

enum pv_status jinja_render(const struct jinja_template *t, const json_t *vars,
                            const struct jinja_render_opts *opts, struct pv_buf *out,
                            struct pv_buf *taint, struct pv_err *err)
{
    static const struct jinja_render_opts defaults = {0};
    struct jctx *c = xcalloc(1, sizeof *c);
    enum pv_status st = PV_OK;
    c->opts = opts ? opts : &defaults;
    c->err = err;
    c->max_output = c->opts->max_output_bytes ? c->opts->max_output_bytes : ((size_t)64 << 20);
    c->max_mem = c->opts->max_memory_bytes ? c->opts->max_memory_bytes : ((size_t)512 << 20);
    c->max_steps = c->opts->max_steps ? c->opts->max_steps : 50000000L;
    arena_init(&c->arena, 256 * 1024);
    if (setjmp(c->jb)) {
        st = c->status ? c->status : PV_ERR_INTERNAL;
        goto out_release;
    }
    struct jscope *top = new_scope(c, NULL);
    c->globals = top;
    if (vars && json_is_object(vars)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vars, k, v) {
            bool trusted = false;
            for (const char *const *tv = c->opts->trusted_vars; tv && *tv; tv++)
                trusted |= strcmp(*tv, k) == 0;
            scope_set(c, top, k, jv_from_json(c, v, !trusted));
        }
    }
    struct jsink sink = {0};
    c->sink = &sink;
    exec_node(c, t->root, top);
    if (!buf_append(out, sink.buf ? sink.buf : "", sink.len) ||
        (taint && !buf_append(taint, sink.taint ? (const char *)sink.taint : "", sink.len))) {
        st = pv_err_set(err, PV_ERR_NOMEM, "out of memory copying the rendered prompt");
    }
out_release:
    arena_release(&c->arena);
    free(c);
    return st;
}
