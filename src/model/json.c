/*
 * json.c - the strict JSON reader of model directories (json.h).
 *
 * Recursive descent over a bounded buffer, depth-limited; values, decoded strings and
 * member tables go into the caller's arena. Arrays and objects are first collected in a
 * growable scratch list, then copied to the arena at their closing bracket.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/json.h"

struct jp {
    const char *p, *end, *start;
    struct pv_arena *arena;
    char *msg;
    size_t msg_cap;
    bool failed;
};

static bool jp_fail(struct jp *j, const char *what)
{
    if (!j->failed)
        snprintf(j->msg, j->msg_cap, "%s at byte %zu", what, (size_t)(j->p - j->start));
    j->failed = true;
    return false;
}

static void skip_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_hex4(struct jp *j, uint32_t *out)
{
    if (j->end - j->p < 4)
        return jp_fail(j, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0)
            return jp_fail(j, "bad \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    j->p += 4;
    *out = v;
    return true;
}

static size_t put_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0..n), 0 when there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A string at j->p (on the opening quote), decoded into the arena. */
static bool parse_string(struct jp *j, const char **out, size_t *out_n)
{
    j->p++;
    /* the decoded form is never longer than the source */
    const char *q = j->p;
    while (q < j->end && *q != '"') {
        if (*q == '\\' && q + 1 < j->end)
            q++;
        q++;
    }
    if (q >= j->end)
        return jp_fail(j, "unterminated string");
    char *o = arena_alloc(j->arena, (size_t)(q - j->p) + 1);
    if (!o)
        return jp_fail(j, "out of memory");
    size_t n = 0;
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return jp_fail(j, "control character in string");
        if (c == '\\') {
            j->p++;
            char e = *j->p++;
            switch (e) {
            case '"': o[n++] = '"'; break;
            case '\\': o[n++] = '\\'; break;
            case '/': o[n++] = '/'; break;
            case 'b': o[n++] = '\b'; break;
            case 'f': o[n++] = '\f'; break;
            case 'n': o[n++] = '\n'; break;
            case 'r': o[n++] = '\r'; break;
            case 't': o[n++] = '\t'; break;
            case 'u': {
                uint32_t cp, lo;
                if (!read_hex4(j, &cp))
                    return false;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return jp_fail(j, "lone low surrogate in \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return jp_fail(j, "lone high surrogate in \\u escape");
                    j->p += 2;
                    if (!read_hex4(j, &lo))
                        return false;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return jp_fail(j, "bad surrogate pair in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                n += put_utf8(cp, o + n);
                break;
            }
            default:
                j->p--;
                return jp_fail(j, "bad escape in string");
            }
            continue;
        }
        size_t len = utf8_len((const unsigned char *)j->p, (size_t)(j->end - j->p));
        if (len == 0)
            return jp_fail(j, "invalid UTF-8 in string");
        memcpy(o + n, j->p, len);
        n += len;
        j->p += len;
    }
    j->p++;
    o[n] = '\0';
    *out = o;
    *out_n = n;
    return true;
}

static bool parse_number(struct jp *j, struct json *v)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end)
        return jp_fail(j, "truncated number");
    if (*j->p == '0')
        j->p++;
    else if (*j->p >= '1' && *j->p <= '9')
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    else
        return jp_fail(j, "bad number");
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jp_fail(j, "bad number fraction");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jp_fail(j, "bad number exponent");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    v->type = JSON_NUMBER;
    v->s = arena_strndup(j->arena, s, (size_t)(j->p - s));
    v->n = (size_t)(j->p - s);
    if (!v->s)
        return jp_fail(j, "out of memory");
    return true;
}

static bool literal(struct jp *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return jp_fail(j, "unexpected character");
    j->p += n;
    return true;
}

/* Growable scratch list of values (and keys) while an array or object is read. */
struct jlist {
    struct json *vals;
    const char **keys;
    size_t *key_lens;
    size_t n, cap;
};

static bool jlist_push(struct jp *j, struct jlist *l, bool with_keys)
{
    if (l->n < l->cap)
        return true;
    size_t cap = l->cap ? l->cap * 2 : 8;
    struct json *v = try_realloc(l->vals, cap * sizeof(*v));
    if (!v)
        return jp_fail(j, "out of memory");
    l->vals = v;
    if (with_keys) {
        const char **k = try_realloc(l->keys, cap * sizeof(*k));
        if (!k)
            return jp_fail(j, "out of memory");
        l->keys = k;
        size_t *kl = try_realloc(l->key_lens, cap * sizeof(*kl));
        if (!kl)
            return jp_fail(j, "out of memory");
        l->key_lens = kl;
    }
    l->cap = cap;
    return true;
}

static bool parse_value(struct jp *j, struct json *v, int depth);

/* Copy the list into the arena as v's items (and keys). */
static bool jlist_finish(struct jp *j, struct jlist *l, struct json *v, bool with_keys)
{
    v->n = l->n;
    if (l->n == 0)
        return true;
    v->items = arena_calloc(j->arena, l->n, sizeof(*v->items));
    if (!v->items)
        return jp_fail(j, "out of memory");
    memcpy(v->items, l->vals, l->n * sizeof(*v->items));
    if (with_keys) {
        v->keys = arena_calloc(j->arena, l->n, sizeof(*v->keys));
        v->key_lens = arena_calloc(j->arena, l->n, sizeof(*v->key_lens));
        if (!v->keys || !v->key_lens)
            return jp_fail(j, "out of memory");
        memcpy(v->keys, l->keys, l->n * sizeof(*v->keys));
        memcpy(v->key_lens, l->key_lens, l->n * sizeof(*v->key_lens));
    }
    return true;
}

static bool parse_container(struct jp *j, struct json *v, int depth, bool object)
{
    struct jlist l = {0};
    bool ok = false;
    char close = object ? '}' : ']';
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    j->p++;
    skip_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return true;
    }
    for (;;) {
        if (!jlist_push(j, &l, object))
            goto out;
        if (object) {
            skip_ws(j);
            if (j->p >= j->end || *j->p != '"') {
                jp_fail(j, "expected a member name");
                goto out;
            }
            if (!parse_string(j, &l.keys[l.n], &l.key_lens[l.n]))
                goto out;
            skip_ws(j);
            if (j->p >= j->end || *j->p != ':') {
                jp_fail(j, "expected ':'");
                goto out;
            }
            j->p++;
        }
        memset(&l.vals[l.n], 0, sizeof(l.vals[l.n]));
        if (!parse_value(j, &l.vals[l.n], depth + 1))
            goto out;
        l.n++;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            break;
        }
        jp_fail(j, object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto out;
    }
    ok = jlist_finish(j, &l, v, object);
out:
    free(l.vals);
    free(l.keys);
    free(l.key_lens);
    return ok;
}

static bool parse_value(struct jp *j, struct json *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return jp_fail(j, "nesting too deep");
    skip_ws(j);
    if (j->p >= j->end)
        return jp_fail(j, "unexpected end of text");
    switch (*j->p) {
    case '{': return parse_container(j, v, depth, true);
    case '[': return parse_container(j, v, depth, false);
    case '"': v->type = JSON_STRING; return parse_string(j, &v->s, &v->n);
    case 't': v->type = JSON_BOOL; v->b = true; return literal(j, "true");
    case 'f': v->type = JSON_BOOL; v->b = false; return literal(j, "false");
    case 'n': v->type = JSON_NULL; return literal(j, "null");
    default: return parse_number(j, v);
    }
}

bool json_parse(const char *text, size_t n, struct pv_arena *arena, struct json **out,
                char *msg, size_t msg_cap)
{
    struct jp j = {.p = text, .end = text + n, .start = text, .arena = arena, .msg = msg,
                   .msg_cap = msg_cap};
    struct json *v = arena_calloc(arena, 1, sizeof(*v));
    *out = NULL;
    if (!v) {
        snprintf(msg, msg_cap, "out of memory");
        return false;
    }
    if (!parse_value(&j, v, 0))
        return false;
    skip_ws(&j);
    if (j.p != j.end)
        return jp_fail(&j, "trailing characters after the value");
    *out = v;
    return true;
}

const struct json *json_get(const struct json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    size_t kn = strlen(key);
    for (size_t i = 0; i < obj->n; i++)
        if (obj->key_lens[i] == kn && memcmp(obj->keys[i], key, kn) == 0)
            return &obj->items[i];
    return NULL;
}

bool json_get_str(const struct json *obj, const char *key, const char **out)
{
    const struct json *v = json_get(obj, key);
    if (!v || v->type != JSON_STRING)
        return false;
    *out = v->s;
    return true;
}

bool json_get_bool(const struct json *obj, const char *key, bool *out)
{
    const struct json *v = json_get(obj, key);
    if (!v || v->type != JSON_BOOL)
        return false;
    *out = v->b;
    return true;
}

double json_num(const struct json *v)
{
    return strtod(v->s, NULL);
}

bool json_get_num(const struct json *obj, const char *key, double *out)
{
    const struct json *v = json_get(obj, key);
    if (!v || v->type != JSON_NUMBER)
        return false;
    *out = json_num(v);
    return true;
}

bool json_u64(const struct json *v, uint64_t *out)
{
    if (!v || v->type != JSON_NUMBER || v->n == 0 || v->n > 20)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v->n; i++) {
        char c = v->s[i];
        if (c < '0' || c > '9')
            return false;
        if (x > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
            return false;
        x = x * 10 + (uint64_t)(c - '0');
    }
    *out = x;
    return true;
}

const char *json_type_name(enum json_type t)
{
    static const char *const names[] = {"null", "bool", "number", "string", "array", "object"};
    return (unsigned)t < PV_ARRAY_LEN(names) ? names[t] : "invalid";
}
