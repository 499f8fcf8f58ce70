/*
 * jinja_parse.c - lexer and parser of the Jinja2 subset chat templates use.
 *
 * The lexer applies whitespace control exactly as jinja2 does when configured like
 * Hugging Face (trim_blocks and lstrip_blocks on, keep_trailing_newline off, "\r\n"
 * folded to "\n"); the parser is recursive descent with jinja2's operator precedence and
 * builds the AST of jinja_int.h in the template's arena. Errors name the construct and
 * its line:column; nesting depth is bounded so a hostile template cannot overflow the stack.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

#define JP_MAX_DEPTH 200

enum tk {
    TK_EOF, TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END, TK_NAME,
    TK_STRING, TK_INT, TK_FLOAT, TK_OP
};

struct tok {
    enum tk type;
    int line, col;
    const char *s; /* TEXT/NAME/STRING: bytes (STRING decoded); OP: the operator */
    size_t len;
    int64_t i;
    double f;
};

struct jp {
    struct jinja_template *t;
    struct pv_err *err;
    jmp_buf jb;
    struct tok *toks;
    size_t n, cap, pos;
    int depth;
    /* lexer */
    const char *src;
    size_t len;
    size_t pos_off;     /* line/column of src[pos_off], advanced as tokens are pushed */
    int pos_line, pos_col;
};

static _Noreturn __attribute__((format(printf, 4, 5))) void jp_fail(struct jp *p, int line, int col,
                                                                    const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pv_err_set(p->err, PV_ERR_FORMAT, "chat template syntax error at %d:%d: %s", line, col, msg);
    longjmp(p->jb, 1);
}

static void *jp_alloc(struct jp *p, size_t n)
{
    void *m = arena_calloc(&p->t->arena, 1, n);
    if (!m) {
        pv_err_set(p->err, PV_ERR_NOMEM, "out of memory parsing a chat template");
        longjmp(p->jb, 1);
    }
    return m;
}

/* ---- lexer ----------------------------------------------------------------------- */

/* Line and column of src[off]. Tokens come in source order, so the scan resumes where
 * the previous one stopped: linear in the template, not quadratic. */
static void pos_of(struct jp *p, size_t off, int *line, int *col)
{
    if (off < p->pos_off || p->pos_line == 0) {
        p->pos_off = 0;
        p->pos_line = 1;
        p->pos_col = 1;
    }
    for (size_t i = p->pos_off; i < off && i < p->len; i++) {
        if (p->src[i] == '\n') {
            p->pos_line++;
            p->pos_col = 1;
        } else {
            p->pos_col++;
        }
    }
    p->pos_off = PV_MAX(p->pos_off, PV_MIN(off, p->len));
    *line = p->pos_line;
    *col = p->pos_col;
}

static struct tok *push_tok(struct jp *p, enum tk type, size_t off)
{
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 256;
        struct tok *nt = jp_alloc(p, ncap * sizeof *nt);
        if (p->n)
            memcpy(nt, p->toks, p->n * sizeof *nt);
        p->toks = nt;
        p->cap = ncap;
    }
    struct tok *t = &p->toks[p->n++];
    memset(t, 0, sizeof *t);
    t->type = type;
    pos_of(p, off, &t->line, &t->col);
    return t;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Append UTF-8 of code point cp. */
static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
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

/* Decode a string literal body with Python's escapes; returns bytes written. */
static size_t decode_string(const char *s, size_t n, char *o)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[w++] = s[i];
            continue;
        }
        char e = s[++i];
        switch (e) {
        case 'n': o[w++] = '\n'; break;
        case 't': o[w++] = '\t'; break;
        case 'r': o[w++] = '\r'; break;
        case '\\': o[w++] = '\\'; break;
        case '\'': o[w++] = '\''; break;
        case '"': o[w++] = '"'; break;
        case 'a': o[w++] = '\a'; break;
        case 'b': o[w++] = '\b'; break;
        case 'f': o[w++] = '\f'; break;
        case 'v': o[w++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            int k;
            for (k = 0; k < nd && i + 1 + k < n && hexval(s[i + 1 + k]) >= 0; k++)
                cp = cp * 16 + (uint32_t)hexval(s[i + 1 + k]);
            if (k == nd && cp <= 0x10FFFF) {
                w += put_utf8(o + w, cp);
                i += (size_t)nd;
            } else {
                o[w++] = '\\';
                o[w++] = e;
            }
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = 0;
                int k = 0;
                while (k < 3 && i + k < n && s[i + k] >= '0' && s[i + k] <= '7')
                    cp = cp * 8 + (uint32_t)(s[i + k++] - '0');
                i += (size_t)k - 1;
                w += put_utf8(o + w, cp);
            } else {
                o[w++] = '\\';
                o[w++] = e;
            }
        }
    }
    return w;
}

static const char *const ops2[] = {"==", "!=", "<=", ">=", "//", "**", NULL};
static const char ops1[] = "+-*/%~()[]{},.:|=<>;!";

/* Lex the inside of a {{ }} or {% %} tag starting at *pi; stops after the end delimiter. */
static void lex_tag(struct jp *p, size_t *pi, bool block, bool *strip_after, bool *trim_nl)
{
    size_t i = *pi;
    int balance = 0;
    for (;;) {
        while (i < p->len && is_ws(p->src[i]))
            i++;
        if (i >= p->len) {
            int l, c;
            pos_of(p, *pi, &l, &c);
            jp_fail(p, l, c, "unterminated %s tag", block ? "{% %}" : "{{ }}");
        }
        const char *s = p->src + i;
        size_t rest = p->len - i;
        char ec = block ? '%' : '}';
        if (balance == 0) {
            if (rest >= 3 && (s[0] == '-' || s[0] == '+') && s[1] == ec && s[2] == '}') {
                *strip_after = s[0] == '-';
                *trim_nl = block && s[0] != '+';
                push_tok(p, block ? TK_BLOCK_END : TK_VAR_END, i);
                *pi = i + 3;
                return;
            }
            if (rest >= 2 && s[0] == ec && s[1] == '}') {
                *strip_after = false;
                *trim_nl = block;
                push_tok(p, block ? TK_BLOCK_END : TK_VAR_END, i);
                *pi = i + 2;
                return;
            }
        }
        char ch = s[0];
        if (isalpha((unsigned char)ch) || ch == '_') {
            size_t j = i;
            while (j < p->len && (isalnum((unsigned char)p->src[j]) || p->src[j] == '_'))
                j++;
            struct tok *t = push_tok(p, TK_NAME, i);
            t->s = s;
            t->len = j - i;
            i = j;
        } else if (isdigit((unsigned char)ch)) {
            size_t j = i;
            while (j < p->len && (isdigit((unsigned char)p->src[j]) || p->src[j] == '_'))
                j++;
            bool is_float = false;
            if (j + 1 < p->len && p->src[j] == '.' && isdigit((unsigned char)p->src[j + 1])) {
                is_float = true;
                j++;
                while (j < p->len && (isdigit((unsigned char)p->src[j]) || p->src[j] == '_'))
                    j++;
            }
            if (j < p->len && (p->src[j] == 'e' || p->src[j] == 'E')) {
                size_t k = j + 1;
                if (k < p->len && (p->src[k] == '+' || p->src[k] == '-'))
                    k++;
                if (k < p->len && isdigit((unsigned char)p->src[k])) {
                    is_float = true;
                    j = k;
                    while (j < p->len && isdigit((unsigned char)p->src[j]))
                        j++;
                }
            }
            char num[64];
            size_t w = 0;
            for (size_t k = i; k < j && w < sizeof num - 1; k++)
                if (p->src[k] != '_')
                    num[w++] = p->src[k];
            num[w] = 0;
            struct tok *t = push_tok(p, is_float ? TK_FLOAT : TK_INT, i);
            if (is_float) {
                t->f = strtod(num, NULL);
            } else {
                char *end;
                errno = 0;
                long long v = strtoll(num, &end, 10);
                if (errno)
                    jp_fail(p, t->line, t->col, "integer literal too large");
                t->i = v;
            }
            i = j;
        } else if (ch == '\'' || ch == '"') {
            size_t j = i + 1;
            while (j < p->len && p->src[j] != ch) {
                if (p->src[j] == '\\')
                    j++;
                j++;
            }
            if (j >= p->len) {
                int l, c;
                pos_of(p, i, &l, &c);
                jp_fail(p, l, c, "unterminated string literal");
            }
            struct tok *t = push_tok(p, TK_STRING, i);
            char *o = jp_alloc(p, j - i + 1);
            t->len = decode_string(s + 1, j - i - 1, o);
            o[t->len] = 0;
            t->s = o;
            i = j + 1;
        } else {
            size_t oplen = 0;
            for (int k = 0; ops2[k]; k++)
                if (rest >= 2 && memcmp(s, ops2[k], 2) == 0)
                    oplen = 2;
            if (!oplen && strchr(ops1, ch) && ch)
                oplen = 1;
            if (!oplen) {
                int l, c;
                pos_of(p, i, &l, &c);
                jp_fail(p, l, c, "unexpected character '%c'", ch);
            }
            if (oplen == 1 && (ch == '(' || ch == '[' || ch == '{'))
                balance++;
            if (oplen == 1 && (ch == ')' || ch == ']' || ch == '}') && balance > 0)
                balance--;
            struct tok *t = push_tok(p, TK_OP, i);
            t->s = s;
            t->len = oplen;
            i += oplen;
        }
    }
}

/* Text between tags, with whitespace control applied, as one TEXT token. */
static void emit_text(struct jp *p, size_t from, size_t to)
{
    if (to <= from)
        return;
    struct tok *t = push_tok(p, TK_TEXT, from);
    t->s = p->src + from;
    t->len = to - from;
}

/* Find `{% endraw %}` (any whitespace control) from i; sets *tag_start and *tag_end. */
static bool find_endraw(const struct jp *p, size_t i, size_t *tag_start, size_t *tag_end,
                        bool *minus_before, bool *minus_after)
{
    for (; i + 1 < p->len; i++) {
        if (p->src[i] != '{' || p->src[i + 1] != '%')
            continue;
        size_t j = i + 2;
        *minus_before = j < p->len && p->src[j] == '-';
        if (j < p->len && (p->src[j] == '-' || p->src[j] == '+'))
            j++;
        while (j < p->len && is_ws(p->src[j]))
            j++;
        if (p->len - j < 6 || memcmp(p->src + j, "endraw", 6) != 0)
            continue;
        j += 6;
        while (j < p->len && is_ws(p->src[j]))
            j++;
        *minus_after = j < p->len && p->src[j] == '-';
        if (j < p->len && (p->src[j] == '-' || p->src[j] == '+'))
            j++;
        if (j + 1 < p->len && p->src[j] == '%' && p->src[j + 1] == '}') {
            *tag_start = i;
            *tag_end = j + 2;
            return true;
        }
    }
    return false;
}

static void lex(struct jp *p)
{
    size_t i = 0;
    bool line_starting = true; /* the previous match ended with a newline */
    while (i <= p->len) {
        /* next tag start */
        size_t k = i;
        int kind = 0; /* '{', '%', '#' */
        while (k + 1 < p->len) {
            if (p->src[k] == '{' && (p->src[k + 1] == '{' || p->src[k + 1] == '%' || p->src[k + 1] == '#')) {
                kind = p->src[k + 1];
                break;
            }
            k++;
        }
        size_t text_from = i, text_to = kind ? k : p->len;
        if (!kind) {
            emit_text(p, text_from, text_to);
            break;
        }
        char sign = k + 2 < p->len ? p->src[k + 2] : 0;
        if (sign == '-') {
            while (text_to > text_from && is_ws(p->src[text_to - 1]))
                text_to--;
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: drop blanks between the line start and a block/comment tag */
            size_t l = text_to;
            while (l > text_from && p->src[l - 1] != '\n')
                l--;
            bool at_line_start = l > text_from || line_starting;
            bool all_ws = text_to > l;
            for (size_t q = l; q < text_to; q++)
                if (!is_ws(p->src[q]))
                    all_ws = false;
            if (at_line_start && all_ws)
                text_to = l;
        }
        emit_text(p, text_from, text_to);
        size_t after = k + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
        bool strip_after = false, trim_nl = false;
        if (kind == '#') {
            size_t e = after;
            while (e + 1 < p->len && !(p->src[e] == '#' && p->src[e + 1] == '}'))
                e++;
            if (e + 1 >= p->len) {
                int l, c;
                pos_of(p, k, &l, &c);
                jp_fail(p, l, c, "unterminated comment");
            }
            strip_after = e > after && p->src[e - 1] == '-';
            trim_nl = true;
            i = e + 2;
        } else if (kind == '%') {
            /* {% raw %} ... {% endraw %} */
            size_t j = after;
            while (j < p->len && is_ws(p->src[j]))
                j++;
            if (p->len - j >= 3 && memcmp(p->src + j, "raw", 3) == 0 &&
                (j + 3 >= p->len || !(isalnum((unsigned char)p->src[j + 3]) || p->src[j + 3] == '_'))) {
                size_t q = j + 3;
                while (q < p->len && is_ws(p->src[q]))
                    q++;
                bool m_after = q < p->len && p->src[q] == '-';
                if (q < p->len && (p->src[q] == '-' || p->src[q] == '+'))
                    q++;
                if (q + 1 >= p->len || p->src[q] != '%' || p->src[q + 1] != '}') {
                    int l, c;
                    pos_of(p, k, &l, &c);
                    jp_fail(p, l, c, "malformed raw tag");
                }
                q += 2;
                size_t ts, te;
                bool mb, ma;
                if (!find_endraw(p, q, &ts, &te, &mb, &ma)) {
                    int l, c;
                    pos_of(p, k, &l, &c);
                    jp_fail(p, l, c, "raw block without endraw");
                }
                size_t rf = q, rt = ts;
                if (m_after)
                    while (rf < rt && is_ws(p->src[rf]))
                        rf++;
                else if (rf < rt && p->src[rf] == '\n')
                    rf++;
                if (mb)
                    while (rt > rf && is_ws(p->src[rt - 1]))
                        rt--;
                emit_text(p, rf, rt);
                i = te;
                strip_after = ma;
                trim_nl = !ma;
                goto tag_done;
            }
            push_tok(p, TK_BLOCK_BEGIN, k);
            i = after;
            lex_tag(p, &i, true, &strip_after, &trim_nl);
        } else {
            push_tok(p, TK_VAR_BEGIN, k);
            i = after;
            lex_tag(p, &i, false, &strip_after, &trim_nl);
        }
    tag_done:
        line_starting = false;
        if (strip_after) {
            size_t s0 = i;
            while (i < p->len && is_ws(p->src[i]))
                i++;
            line_starting = i > s0 && p->src[i - 1] == '\n';
        } else if (trim_nl && i < p->len && p->src[i] == '\n') {
            i++;
            line_starting = true;
        }
        if (i >= p->len)
            break;
    }
    push_tok(p, TK_EOF, p->len);
}

/* ---- parser ---------------------------------------------------------------------- */

static struct tok *cur(struct jp *p) { return &p->toks[p->pos]; }
static struct tok *peek(struct jp *p, size_t k)
{
    size_t i = p->pos + k < p->n ? p->pos + k : p->n - 1;
    return &p->toks[i];
}

static bool is_op(const struct tok *t, const char *op)
{
    return t->type == TK_OP && t->len == strlen(op) && memcmp(t->s, op, t->len) == 0;
}
static bool is_name(const struct tok *t, const char *name)
{
    return t->type == TK_NAME && t->len == strlen(name) && memcmp(t->s, name, t->len) == 0;
}

static const char *tok_desc(const struct tok *t, char *buf, size_t cap)
{
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "template text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_STRING: return "string";
    case TK_INT: case TK_FLOAT: return "number";
    default:
        snprintf(buf, cap, "'%.*s'", (int)PV_MIN(t->len, 40), t->s);
        return buf;
    }
}

static _Noreturn void unexpected(struct jp *p, const char *want)
{
    char b[64];
    struct tok *t = cur(p);
    jp_fail(p, t->line, t->col, "expected %s, got %s", want, tok_desc(t, b, sizeof b));
}

static void expect_op(struct jp *p, const char *op)
{
    if (!is_op(cur(p), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        unexpected(p, w);
    }
    p->pos++;
}

static const char *take_name(struct jp *p)
{
    struct tok *t = cur(p);
    if (t->type != TK_NAME)
        unexpected(p, "a name");
    char *s = jp_alloc(p, t->len + 1);
    memcpy(s, t->s, t->len);
    p->pos++;
    return s;
}

static struct jnode *mk(struct jp *p, enum jn_kind k, const struct tok *at)
{
    struct jnode *n = jp_alloc(p, sizeof *n);
    n->kind = (uint8_t)k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

/* growable node arrays during parsing */
struct nvec {
    struct jnode **v;
    size_t n, cap;
};
static void nv_push(struct jp *p, struct nvec *v, struct jnode *x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 8;
        struct jnode **nn = jp_alloc(p, nc * sizeof *nn);
        if (v->n)
            memcpy(nn, v->v, v->n * sizeof *nn);
        v->v = nn;
        v->cap = nc;
    }
    v->v[v->n++] = x;
}
struct svec {
    const char **v;
    size_t n, cap;
};
static void sv_push(struct jp *p, struct svec *v, const char *x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 8;
        const char **nn = jp_alloc(p, nc * sizeof *nn);
        if (v->n)
            memcpy(nn, v->v, v->n * sizeof *nn);
        v->v = nn;
        v->cap = nc;
    }
    v->v[v->n++] = x;
}

static void enter(struct jp *p)
{
    if (++p->depth > JP_MAX_DEPTH)
        jp_fail(p, cur(p)->line, cur(p)->col, "template nested too deeply");
}

static struct jnode *parse_expr(struct jp *p);
static struct jnode *parse_expr_nocond(struct jp *p);
static struct jnode *parse_or(struct jp *p);
static struct jnode *parse_unary(struct jp *p, bool with_filter);
static struct jnode *parse_primary(struct jp *p);
static struct jnode *parse_postfix(struct jp *p, struct jnode *n);

/* Arguments of a call or filter after '(' was seen; fills kids/kids2/names. */
static void parse_args(struct jp *p, struct jnode *n)
{
    struct nvec pos = {0}, kwv = {0};
    struct svec kwn = {0};
    expect_op(p, "(");
    while (!is_op(cur(p), ")")) {
        if (pos.n + kwv.n)
            expect_op(p, ",");
        if (is_op(cur(p), ")"))
            break;
        if (cur(p)->type == TK_NAME && is_op(peek(p, 1), "=")) {
            sv_push(p, &kwn, take_name(p));
            p->pos++;
            nv_push(p, &kwv, parse_expr(p));
        } else {
            if (kwv.n)
                jp_fail(p, cur(p)->line, cur(p)->col, "positional argument after keyword argument");
            nv_push(p, &pos, parse_expr(p));
        }
    }
    p->pos++;
    n->kids = pos.v;
    n->n_kids = pos.n;
    n->kids2 = kwv.v;
    n->n_kids2 = kwv.n;
    n->names = kwn.v;
    n->n_names = kwn.n;
}

static struct jnode *parse_filter(struct jp *p, struct jnode *operand)
{
    struct tok *at = cur(p);
    struct jnode *n = mk(p, E_FILTER, at);
    n->a = operand;
    n->name = take_name(p);
    while (is_op(cur(p), ".")) { /* dotted filter names: keep the last part */
        p->pos++;
        n->name = take_name(p);
    }
    if (is_op(cur(p), "("))
        parse_args(p, n);
    return n;
}

static struct jnode *parse_test(struct jp *p, struct jnode *operand)
{
    struct tok *at = cur(p);
    p->pos++; /* 'is' */
    bool neg = false;
    if (is_name(cur(p), "not")) {
        neg = true;
        p->pos++;
    }
    struct jnode *n = mk(p, E_TEST, at);
    n->a = operand;
    n->op = neg;
    n->name = take_name(p);
    while (is_op(cur(p), ".")) {
        p->pos++;
        n->name = take_name(p);
    }
    struct tok *t = cur(p);
    if (is_op(t, "(")) {
        parse_args(p, n);
    } else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
                t->type == TK_FLOAT || is_op(t, "[") || is_op(t, "{")) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
        if (is_name(t, "is"))
            jp_fail(p, t->line, t->col, "you cannot chain multiple tests with 'is'");
        struct jnode *arg = parse_postfix(p, parse_primary(p));
        n->kids = jp_alloc(p, sizeof *n->kids);
        n->kids[0] = arg;
        n->n_kids = 1;
    }
    return n;
}

static struct jnode *parse_filter_expr(struct jp *p, struct jnode *n)
{
    for (;;) {
        if (is_op(cur(p), "|")) {
            p->pos++;
            n = parse_filter(p, n);
        } else if (is_name(cur(p), "is")) {
            n = parse_test(p, n);
        } else if (is_op(cur(p), "(")) {
            struct jnode *c = mk(p, E_CALL, cur(p));
            c->a = n;
            parse_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static struct jnode *parse_subscript(struct jp *p, struct jnode *obj)
{
    struct tok *at = cur(p);
    if (is_op(at, ".")) {
        p->pos++;
        struct tok *t = cur(p);
        if (t->type == TK_INT) {
            struct jnode *n = mk(p, E_ITEM, at);
            n->a = obj;
            n->b = mk(p, E_CONST, t);
            n->b->val = jv_int(t->i);
            p->pos++;
            return n;
        }
        struct jnode *n = mk(p, E_ATTR, at);
        n->a = obj;
        n->name = take_name(p);
        return n;
    }
    p->pos++; /* '[' */
    struct jnode *parts[3] = {NULL, NULL, NULL};
    bool slice = false;
    int part = 0;
    struct nvec tuple = {0};
    for (;;) {
        if (is_op(cur(p), ":")) {
            slice = true;
            if (++part > 2)
                jp_fail(p, cur(p)->line, cur(p)->col, "too many ':' in slice");
            p->pos++;
            continue;
        }
        if (is_op(cur(p), "]"))
            break;
        if (is_op(cur(p), ",") && !slice) {
            p->pos++;
            nv_push(p, &tuple, parts[0]);
            parts[0] = NULL;
            continue;
        }
        if (parts[part])
            unexpected(p, "']'");
        parts[part] = parse_expr(p);
    }
    p->pos++;
    if (slice) {
        struct jnode *n = mk(p, E_SLICE, at);
        n->a = obj;
        n->b = parts[0];
        n->c = parts[1];
        n->d = parts[2];
        return n;
    }
    struct jnode *n = mk(p, E_ITEM, at);
    n->a = obj;
    if (tuple.n) {
        if (parts[0])
            nv_push(p, &tuple, parts[0]);
        struct jnode *t = mk(p, E_TUPLE, at);
        t->kids = tuple.v;
        t->n_kids = tuple.n;
        n->b = t;
    } else {
        if (!parts[0])
            jp_fail(p, at->line, at->col, "empty subscript");
        n->b = parts[0];
    }
    return n;
}

static struct jnode *parse_postfix(struct jp *p, struct jnode *n)
{
    for (;;) {
        if (is_op(cur(p), ".") || is_op(cur(p), "[")) {
            n = parse_subscript(p, n);
        } else if (is_op(cur(p), "(")) {
            struct jnode *c = mk(p, E_CALL, cur(p));
            c->a = n;
            parse_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static struct jnode *parse_primary(struct jp *p)
{
    struct tok *t = cur(p);
    enter(p);
    struct jnode *n;
    if (t->type == TK_NAME) {
        n = mk(p, E_CONST, t);
        if (is_name(t, "true") || is_name(t, "True")) {
            n->val = jv_bool(true);
        } else if (is_name(t, "false") || is_name(t, "False")) {
            n->val = jv_bool(false);
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n->val = jv_none();
        } else {
            n->kind = E_NAME;
            n->name = take_name(p);
            p->depth--;
            return n;
        }
        p->pos++;
    } else if (t->type == TK_STRING) {
        /* adjacent literals concatenate */
        size_t total = 0, k = 0;
        while (peek(p, k)->type == TK_STRING)
            total += peek(p, k++)->len;
        char *s = jp_alloc(p, sizeof(struct jstr) + total + 1);
        struct jstr *js = (struct jstr *)s;
        js->len = total;
        js->taint = NULL;
        size_t w = 0;
        for (size_t q = 0; q < k; q++) {
            memcpy(js->s + w, cur(p)->s, cur(p)->len);
            w += cur(p)->len;
            p->pos++;
        }
        js->s[total] = 0;
        n = mk(p, E_CONST, t);
        n->val.t = JV_STR;
        n->val.u.s = js;
    } else if (t->type == TK_INT || t->type == TK_FLOAT) {
        n = mk(p, E_CONST, t);
        n->val = t->type == TK_INT ? jv_int(t->i) : jv_float(t->f);
        p->pos++;
    } else if (is_op(t, "(")) {
        p->pos++;
        if (is_op(cur(p), ")")) {
            p->pos++;
            n = mk(p, E_TUPLE, t);
        } else {
            struct jnode *first = parse_expr(p);
            if (is_op(cur(p), ",")) {
                struct nvec v = {0};
                nv_push(p, &v, first);
                while (is_op(cur(p), ",")) {
                    p->pos++;
                    if (is_op(cur(p), ")"))
                        break;
                    nv_push(p, &v, parse_expr(p));
                }
                n = mk(p, E_TUPLE, t);
                n->kids = v.v;
                n->n_kids = v.n;
            } else {
                n = first;
            }
            expect_op(p, ")");
        }
    } else if (is_op(t, "[")) {
        p->pos++;
        struct nvec v = {0};
        while (!is_op(cur(p), "]")) {
            if (v.n)
                expect_op(p, ",");
            if (is_op(cur(p), "]"))
                break;
            nv_push(p, &v, parse_expr(p));
        }
        p->pos++;
        n = mk(p, E_LIST, t);
        n->kids = v.v;
        n->n_kids = v.n;
    } else if (is_op(t, "{")) {
        p->pos++;
        struct nvec ks = {0}, vs = {0};
        while (!is_op(cur(p), "}")) {
            if (ks.n)
                expect_op(p, ",");
            if (is_op(cur(p), "}"))
                break;
            nv_push(p, &ks, parse_expr(p));
            expect_op(p, ":");
            nv_push(p, &vs, parse_expr(p));
        }
        p->pos++;
        n = mk(p, E_DICT, t);
        n->kids = ks.v;
        n->n_kids = ks.n;
        n->kids2 = vs.v;
        n->n_kids2 = vs.n;
    } else {
        unexpected(p, "an expression");
    }
    p->depth--;
    return n;
}

static struct jnode *parse_unary(struct jp *p, bool with_filter)
{
    struct tok *t = cur(p);
    struct jnode *n;
    enter(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        p->pos++;
        n = mk(p, is_op(t, "-") ? E_NEG : E_POS, t);
        n->a = parse_unary(p, false);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter)
        n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static struct jnode *binop(struct jp *p, const struct tok *at, int op, struct jnode *a,
                           struct jnode *b)
{
    struct jnode *n = mk(p, E_BIN, at);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jnode *parse_pow(struct jp *p)
{
    struct jnode *n = parse_unary(p, true);
    while (is_op(cur(p), "**")) {
        struct tok *t = cur(p);
        p->pos++;
        n = binop(p, t, 'P', n, parse_unary(p, true));
    }
    return n;
}

static struct jnode *parse_math2(struct jp *p)
{
    struct jnode *n = parse_pow(p);
    for (;;) {
        struct tok *t = cur(p);
        int op = is_op(t, "*") ? '*' : is_op(t, "/") ? '/' : is_op(t, "//") ? 'F' : is_op(t, "%") ? '%' : 0;
        if (!op)
            return n;
        p->pos++;
        n = binop(p, t, op, n, parse_pow(p));
    }
}

static struct jnode *parse_concat(struct jp *p)
{
    struct jnode *n = parse_math2(p);
    while (is_op(cur(p), "~")) {
        struct tok *t = cur(p);
        p->pos++;
        n = binop(p, t, '~', n, parse_math2(p));
    }
    return n;
}

static struct jnode *parse_math1(struct jp *p)
{
    struct jnode *n = parse_concat(p);
    for (;;) {
        struct tok *t = cur(p);
        int op = is_op(t, "+") ? '+' : is_op(t, "-") ? '-' : 0;
        if (!op)
            return n;
        p->pos++;
        n = binop(p, t, op, n, parse_concat(p));
    }
}

static struct jnode *parse_compare(struct jp *p)
{
    struct tok *at = cur(p);
    struct jnode *first = parse_math1(p);
    struct nvec v = {0};
    int ops[64];
    size_t nops = 0;
    for (;;) {
        struct tok *t = cur(p);
        int op = -1;
        if (is_op(t, "=="))
            op = JC_EQ;
        else if (is_op(t, "!="))
            op = JC_NE;
        else if (is_op(t, "<"))
            op = JC_LT;
        else if (is_op(t, "<="))
            op = JC_LE;
        else if (is_op(t, ">"))
            op = JC_GT;
        else if (is_op(t, ">="))
            op = JC_GE;
        else if (is_name(t, "in"))
            op = JC_IN;
        else if (is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = JC_NOTIN;
            p->pos++;
        }
        if (op < 0)
            break;
        if (nops == PV_ARRAY_LEN(ops))
            jp_fail(p, t->line, t->col, "comparison chain too long");
        p->pos++;
        ops[nops++] = op;
        nv_push(p, &v, parse_math1(p));
    }
    if (!nops)
        return first;
    struct jnode *n = mk(p, E_CMP, at);
    n->a = first;
    n->kids = v.v;
    n->n_kids = v.n;
    n->ops = jp_alloc(p, nops * sizeof(int));
    memcpy(n->ops, ops, nops * sizeof(int));
    return n;
}

static struct jnode *parse_not(struct jp *p)
{
    if (is_name(cur(p), "not")) {
        struct tok *t = cur(p);
        p->pos++;
        enter(p);
        struct jnode *n = mk(p, E_NOT, t);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static struct jnode *parse_and(struct jp *p)
{
    struct jnode *n = parse_not(p);
    while (is_name(cur(p), "and")) {
        struct tok *t = cur(p);
        p->pos++;
        struct jnode *x = mk(p, E_AND, t);
        x->a = n;
        x->b = parse_not(p);
        n = x;
    }
    return n;
}

static struct jnode *parse_or(struct jp *p)
{
    struct jnode *n = parse_and(p);
    while (is_name(cur(p), "or")) {
        struct tok *t = cur(p);
        p->pos++;
        struct jnode *x = mk(p, E_OR, t);
        x->a = n;
        x->b = parse_and(p);
        n = x;
    }
    return n;
}

static struct jnode *parse_expr(struct jp *p)
{
    enter(p);
    struct jnode *n = parse_or(p);
    while (is_name(cur(p), "if")) {
        struct tok *t = cur(p);
        p->pos++;
        struct jnode *x = mk(p, E_COND, t);
        x->a = n;
        x->b = parse_or(p);
        if (is_name(cur(p), "else")) {
            p->pos++;
            x->c = parse_expr(p);
        }
        n = x;
    }
    p->depth--;
    return n;
}

static struct jnode *parse_expr_nocond(struct jp *p)
{
    return parse_or(p);
}

/* ---- statements ------------------------------------------------------------------ */

static struct jnode *parse_body(struct jp *p, const char *const *ends, const char **ended);

static void expect_block_end(struct jp *p)
{
    if (cur(p)->type != TK_BLOCK_END)
        unexpected(p, "'%}'");
    p->pos++;
}

/* names of a for/set target: a, b or (a, b) */
static void parse_targets(struct jp *p, struct svec *out)
{
    bool paren = is_op(cur(p), "(");
    if (paren)
        p->pos++;
    sv_push(p, out, take_name(p));
    while (is_op(cur(p), ",")) {
        p->pos++;
        if (cur(p)->type != TK_NAME)
            break;
        sv_push(p, out, take_name(p));
    }
    if (paren)
        expect_op(p, ")");
}

static struct jnode *parse_tag(struct jp *p, struct tok *begin)
{
    struct tok *t = cur(p);
    if (t->type != TK_NAME)
        unexpected(p, "a tag name");
    if (is_name(t, "if")) {
        p->pos++;
        struct jnode *n = mk(p, N_IF, begin);
        n->a = parse_expr(p);
        expect_block_end(p);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        const char *ended;
        struct jnode *body = parse_body(p, ends, &ended);
        n->kids = body->kids;
        n->n_kids = body->n_kids;
        struct jnode *tail = n;
        while (strcmp(ended, "elif") == 0) {
            struct jnode *e = mk(p, N_IF, cur(p));
            e->a = parse_expr(p);
            expect_block_end(p);
            body = parse_body(p, ends, &ended);
            e->kids = body->kids;
            e->n_kids = body->n_kids;
            tail->kids2 = jp_alloc(p, sizeof(struct jnode *));
            tail->kids2[0] = e;
            tail->n_kids2 = 1;
            tail = e;
        }
        if (strcmp(ended, "else") == 0) {
            expect_block_end(p);
            static const char *const ends2[] = {"endif", NULL};
            body = parse_body(p, ends2, &ended);
            tail->kids2 = body->kids;
            tail->n_kids2 = body->n_kids;
        }
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "for")) {
        p->pos++;
        struct jnode *n = mk(p, N_FOR, begin);
        struct svec names = {0};
        parse_targets(p, &names);
        n->names = names.v;
        n->n_names = names.n;
        if (!is_name(cur(p), "in"))
            unexpected(p, "'in'");
        p->pos++;
        n->a = parse_expr_nocond(p);
        if (is_op(cur(p), ",")) {
            /* for x in a, b: a tuple */
            struct nvec v = {0};
            nv_push(p, &v, n->a);
            while (is_op(cur(p), ",")) {
                p->pos++;
                nv_push(p, &v, parse_expr_nocond(p));
            }
            struct jnode *tu = mk(p, E_TUPLE, begin);
            tu->kids = v.v;
            tu->n_kids = v.n;
            n->a = tu;
        }
        if (is_name(cur(p), "if")) {
            p->pos++;
            n->b = parse_expr(p);
        }
        if (is_name(cur(p), "recursive"))
            jp_fail(p, cur(p)->line, cur(p)->col, "recursive for loops are not supported");
        expect_block_end(p);
        static const char *const ends[] = {"else", "endfor", NULL};
        const char *ended;
        struct jnode *body = parse_body(p, ends, &ended);
        n->kids = body->kids;
        n->n_kids = body->n_kids;
        if (strcmp(ended, "else") == 0) {
            expect_block_end(p);
            static const char *const ends2[] = {"endfor", NULL};
            body = parse_body(p, ends2, &ended);
            n->kids2 = body->kids;
            n->n_kids2 = body->n_kids;
        }
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "set")) {
        p->pos++;
        struct tok *nt = cur(p);
        if (nt->type != TK_NAME)
            unexpected(p, "a name");
        if (is_op(peek(p, 1), ".")) {
            struct jnode *n = mk(p, N_SET, begin);
            n->name = take_name(p);
            p->pos++;
            struct svec names = {0};
            sv_push(p, &names, take_name(p));
            n->names = names.v;
            n->n_names = 1;
            n->op = 1;
            expect_op(p, "=");
            n->b = parse_expr(p);
            expect_block_end(p);
            return n;
        }
        struct svec names = {0};
        parse_targets(p, &names);
        if (cur(p)->type == TK_BLOCK_END || is_op(cur(p), "|")) {
            struct jnode *n = mk(p, N_SETBLOCK, begin);
            n->name = names.v[0];
            if (is_op(cur(p), "|")) {
                p->pos++;
                n->a = parse_filter(p, NULL);
            }
            expect_block_end(p);
            static const char *const ends[] = {"endset", NULL};
            const char *ended;
            struct jnode *body = parse_body(p, ends, &ended);
            n->kids = body->kids;
            n->n_kids = body->n_kids;
            expect_block_end(p);
            return n;
        }
        struct jnode *n = mk(p, N_SET, begin);
        n->names = names.v;
        n->n_names = names.n;
        expect_op(p, "=");
        n->b = parse_expr(p);
        if (is_op(cur(p), ",")) {
            struct nvec v = {0};
            nv_push(p, &v, n->b);
            while (is_op(cur(p), ",")) {
                p->pos++;
                nv_push(p, &v, parse_expr(p));
            }
            struct jnode *tu = mk(p, E_TUPLE, begin);
            tu->kids = v.v;
            tu->n_kids = v.n;
            n->b = tu;
        }
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "macro") || is_name(t, "call")) {
        bool is_call = is_name(t, "call");
        p->pos++;
        struct jnode *n = mk(p, is_call ? N_CALLBLOCK : N_MACRO, begin);
        struct svec params = {0};
        struct nvec defs = {0};
        if (is_call && is_op(cur(p), "(")) {
            p->pos++;
            while (!is_op(cur(p), ")")) {
                if (params.n)
                    expect_op(p, ",");
                sv_push(p, &params, take_name(p));
                struct jnode *d = NULL;
                if (is_op(cur(p), "=")) {
                    p->pos++;
                    d = parse_expr(p);
                }
                nv_push(p, &defs, d);
            }
            p->pos++;
        }
        if (is_call) {
            n->a = parse_postfix(p, parse_primary(p));
            if (n->a->kind != E_CALL)
                jp_fail(p, begin->line, begin->col, "call block needs a macro call");
        } else {
            n->name = take_name(p);
            expect_op(p, "(");
            while (!is_op(cur(p), ")")) {
                if (params.n)
                    expect_op(p, ",");
                sv_push(p, &params, take_name(p));
                struct jnode *d = NULL;
                if (is_op(cur(p), "=")) {
                    p->pos++;
                    d = parse_expr(p);
                }
                nv_push(p, &defs, d);
            }
            p->pos++;
        }
        n->names = params.v;
        n->n_names = params.n;
        n->kids2 = defs.v;
        n->n_kids2 = defs.n;
        expect_block_end(p);
        static const char *const mends[] = {"endmacro", NULL};
        static const char *const cends[] = {"endcall", NULL};
        const char *ended;
        struct jnode *body = parse_body(p, is_call ? cends : mends, &ended);
        n->kids = body->kids;
        n->n_kids = body->n_kids;
        if (!is_call && cur(p)->type == TK_NAME)
            p->pos++; /* {% endmacro name %} */
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "filter")) {
        p->pos++;
        struct jnode *n = mk(p, N_FILTERBLOCK, begin);
        n->a = parse_filter(p, NULL);
        while (is_op(cur(p), "|")) {
            p->pos++;
            n->a = parse_filter(p, n->a);
        }
        expect_block_end(p);
        static const char *const ends[] = {"endfilter", NULL};
        const char *ended;
        struct jnode *body = parse_body(p, ends, &ended);
        n->kids = body->kids;
        n->n_kids = body->n_kids;
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "generation")) {
        p->pos++;
        expect_block_end(p);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *ended;
        struct jnode *body = parse_body(p, ends, &ended);
        expect_block_end(p);
        return body;
    }
    if (is_name(t, "break") || is_name(t, "continue")) {
        struct jnode *n = mk(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, begin);
        p->pos++;
        expect_block_end(p);
        return n;
    }
    char b[64];
    jp_fail(p, t->line, t->col, "unknown tag %s", tok_desc(t, b, sizeof b));
}

/* Parse nodes until one of `ends` (a block tag name) or EOF when ends is NULL. On return
 * the current token is just after the end tag's name. */
static struct jnode *parse_body(struct jp *p, const char *const *ends, const char **ended)
{
    struct tok *start = cur(p);
    enter(p);
    struct nvec v = {0};
    for (;;) {
        struct tok *t = cur(p);
        if (t->type == TK_EOF) {
            if (ends) {
                jp_fail(p, start->line, start->col, "missing {%% %s %%} before end of template",
                        ends[PV_MAX(0, 0)]);
            }
            break;
        }
        if (t->type == TK_TEXT) {
            struct jnode *n = mk(p, N_TEXT, t);
            struct jstr *js = jp_alloc(p, sizeof *js + t->len + 1);
            js->len = t->len;
            memcpy(js->s, t->s, t->len);
            n->val.t = JV_STR;
            n->val.u.s = js;
            nv_push(p, &v, n);
            p->pos++;
        } else if (t->type == TK_VAR_BEGIN) {
            p->pos++;
            struct jnode *n = mk(p, N_OUT, t);
            n->a = parse_expr(p);
            if (cur(p)->type != TK_VAR_END)
                unexpected(p, "'}}'");
            p->pos++;
            nv_push(p, &v, n);
        } else if (t->type == TK_BLOCK_BEGIN) {
            struct tok *name = peek(p, 1);
            bool is_end = false;
            if (ends && name->type == TK_NAME) {
                for (int k = 0; ends[k]; k++) {
                    if (is_name(name, ends[k])) {
                        *ended = ends[k];
                        is_end = true;
                    }
                }
            }
            if (is_end) {
                p->pos += 2;
                break;
            }
            if (name->type == TK_NAME && (strncmp(name->s, "end", 3) == 0 || is_name(name, "elif") ||
                                          is_name(name, "else"))) {
                char b[64];
                jp_fail(p, name->line, name->col, "unexpected %s", tok_desc(name, b, sizeof b));
            }
            p->pos++;
            nv_push(p, &v, parse_tag(p, t));
        } else {
            char b[64];
            jp_fail(p, t->line, t->col, "unexpected %s", tok_desc(t, b, sizeof b));
        }
    }
    struct jnode *blk = mk(p, N_BLOCK, start);
    blk->kids = v.v;
    blk->n_kids = v.n;
    p->depth--;
    return blk;
}

/* jinja2 refuses, when it compiles a template, filters and tests it does not know
 * (even in branches never taken); so does this parser, with the same names. Those jinja2
 * knows but this interpreter does not implement fail when they run. */
static const char *const jinja2_filters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e",
    "escape", "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "pprint",
    "random", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
    "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
    "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};
static const char *const jinja2_tests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false",
    "filter", "float", "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lower",
    "lessthan", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string",
    "test", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=", NULL};

static bool known(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return true;
    return false;
}

/* `soft`: inside an if statement or a conditional expression of the same frame, where
 * jinja2 defers the check to when the filter runs (frames: loop, macro, call and filter
 * bodies, set blocks). */
static void check_names(struct jp *p, const struct jnode *n, bool soft, int depth)
{
    if (!n || depth > 4 * JP_MAX_DEPTH)
        return;
    if (!soft && n->kind == E_FILTER && !known(jinja2_filters, n->name))
        jp_fail(p, n->line, n->col, "no filter named '%s'", n->name);
    if (!soft && n->kind == E_TEST && !known(jinja2_tests, n->name))
        jp_fail(p, n->line, n->col, "no test named '%s'", n->name);
    bool kids_soft = soft, a_soft = soft, b_soft = soft;
    switch (n->kind) {
    case N_IF: case E_COND: kids_soft = a_soft = b_soft = true; break;
    case N_FOR: kids_soft = b_soft = false; break;
    case N_MACRO: case N_CALLBLOCK: kids_soft = false; break;
    case N_FILTERBLOCK: case N_SETBLOCK: kids_soft = a_soft = false; break;
    case N_BLOCK: kids_soft = false; break; /* the root, or a generation block's body */
    default: break;
    }
    check_names(p, n->a, a_soft, depth + 1);
    check_names(p, n->b, b_soft, depth + 1);
    check_names(p, n->c, n->kind == E_COND ? true : soft, depth + 1);
    check_names(p, n->d, soft, depth + 1);
    for (size_t i = 0; i < n->n_kids; i++)
        check_names(p, n->kids[i], kids_soft, depth + 1);
    for (size_t i = 0; i < n->n_kids2; i++)
        check_names(p, n->kids2[i], kids_soft, depth + 1);
}

enum pv_status jinja_parse(const char *src, size_t len, struct jinja_template **out,
                           struct pv_err *err)
{
    *out = NULL;
    struct jinja_template *t = xcalloc(1, sizeof *t);
    arena_init(&t->arena, 64 * 1024);
    struct jp p = {.t = t, .err = err};
    if (setjmp(p.jb)) {
        jinja_free(t);
        return err ? err->status : PV_ERR_FORMAT;
    }
    /* jinja2 folds "\r\n" and "\r" to "\n" and drops one trailing newline */
    char *norm = jp_alloc(&p, len + 1);
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[w++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            norm[w++] = src[i];
        }
    }
    if (w && norm[w - 1] == '\n')
        w--;
    norm[w] = 0;
    p.src = norm;
    p.len = w;
    lex(&p);
    t->root = parse_body(&p, NULL, NULL);
    check_names(&p, t->root, false, 0);
    *out = t;
    return PV_OK;
}

void jinja_free(struct jinja_template *t)
{
    if (!t)
        return;
    arena_release(&t->arena);
    free(t);
}
