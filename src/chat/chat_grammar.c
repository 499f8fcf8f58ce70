/*
 * chat_grammar.c - constrained decoding: a JSON grammar compiled from a JSON schema and a
 * byte-level matcher that masks the logits of tokens that cannot continue it.
 *
 * The schema becomes a table of nodes (object with properties/required, array with items,
 * string, number, integer, boolean, null, enum/const as literal alternatives, anyOf/oneOf/
 * type lists dispatched on the first character, "any JSON"), plus the tool-call node
 * {"name": <tool>, "arguments": <that tool's schema>}. The matcher is a pushdown automaton
 * over bytes whose state is a small stack of frames; a token is allowed when its piece's
 * bytes all step. Tokens are bucketed by first byte (one step rejects a whole bucket) and
 * pieces without quotes/backslashes pass wholesale inside free strings, which keeps a
 * 262144-token mask in the low milliseconds.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

#define G_MAX_DEPTH 48
#define G_MAX_LIT 128
#define G_MAX_WS 1 /* whitespace bytes allowed in a row between tokens */
#define G_MAX_DIGITS 15 /* digits in a row in a number (integer part, fraction, exponent) */
/* Size of a grammar: nodes plus enum/const literals. A schema or tool list that needs more
 * is refused (chat_grammar_for answers PV_ERR_INVALID): the matcher's work per token grows
 * with it, and a request controls it. */
#define G_MAX_NODES 4096

enum gkind { G_ANY, G_OBJECT, G_ARRAY, G_STRING, G_NUMBER, G_INTEGER, G_BOOL, G_NULL, G_LITERALS,
             G_UNION, G_TOOLCALL };

struct gnode {
    enum gkind kind;
    /* G_OBJECT / G_TOOLCALL: property names (JSON-quoted) and value nodes */
    char **keys;
    int *vals;
    int n;
    uint64_t required;
    /* G_ARRAY */
    int item;
    int min_items, max_items; /* max < 0: unbounded */
    /* G_STRING */
    int max_len;              /* characters; < 0: unbounded */
    /* G_LITERALS: JSON texts; G_TOOLCALL: quoted tool names in keys[], schemas in vals[] */
    char **lits;
    int n_lits;
    /* G_UNION: node per first-character class: 0 obj 1 arr 2 str 3 num 4 bool 5 null */
    int by_class[6];
};

struct chat_grammar {
    struct gnode *nodes;
    int n, cap;
    int n_lits;                /* enum/const literals of all nodes */
    bool too_large;            /* G_MAX_NODES reached: compile stopped */
    int root;
    int any, any_obj, any_arr; /* shared nodes for schema-less values */
};

/* ---- compile ----------------------------------------------------------------------- */

/* A new node; past G_MAX_NODES the grammar is marked too large and the shared "any" node
 * stands in, so compiling stops growing and the caller refuses the result. */
static int gnew(struct chat_grammar *g, enum gkind k)
{
    if (g->n + g->n_lits >= G_MAX_NODES) {
        g->too_large = true;
        return g->any;
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 16;
        g->nodes = xrealloc(g->nodes, (size_t)g->cap * sizeof *g->nodes);
    }
    struct gnode *n = &g->nodes[g->n];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->max_items = -1;
    n->max_len = -1;
    for (int i = 0; i < 6; i++)
        n->by_class[i] = -1;
    return g->n++;
}

static char *quoted(const char *s)
{
    json_t *j = json_string(s);
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return out ? out : xstrdup("\"\"");
}

static int compile(struct chat_grammar *g, const json_t *s, int depth);

static struct chat_grammar *grammar_new(void)
{
    struct chat_grammar *g = xcalloc(1, sizeof *g);
    g->any = gnew(g, G_ANY);
    g->any_obj = gnew(g, G_OBJECT);
    g->any_arr = gnew(g, G_ARRAY);
    g->nodes[g->any_arr].item = g->any;
    return g;
}

static int compile_type(struct chat_grammar *g, const json_t *s, const char *type, int depth)
{
    int id;
    if (!strcmp(type, "object")) {
        json_t *props = json_object_get(s, "properties");
        if (!json_is_object(props) || json_object_size(props) == 0)
            return g->any_obj;
        size_t np = PV_MIN(json_object_size(props), 64);
        char **keys = xcalloc(np, sizeof *keys);
        int *vals = xcalloc(np, sizeof *vals);
        uint64_t req = 0;
        int k = 0;
        const char *name;
        json_t *ps;
        json_object_foreach(props, name, ps) {
            if (k == (int)np || g->too_large)
                break;
            keys[k] = quoted(name);
            vals[k] = compile(g, ps, depth + 1);
            size_t i;
            json_t *r;
            json_array_foreach(json_object_get(s, "required"), i, r)
                if (json_is_string(r) && !strcmp(json_string_value(r), name))
                    req |= (uint64_t)1 << k;
            k++;
        }
        id = gnew(g, G_OBJECT);
        if (g->too_large) {
            for (int i = 0; i < k; i++)
                free(keys[i]);
            free(keys);
            free(vals);
            return g->any;
        }
        struct gnode *n = &g->nodes[id];
        n->keys = keys;
        n->vals = vals;
        n->n = k;
        n->required = req;
        return id;
    }
    if (!strcmp(type, "array")) {
        json_t *items = json_object_get(s, "items");
        int item = json_is_object(items) ? compile(g, items, depth + 1) : g->any;
        id = gnew(g, G_ARRAY);
        g->nodes[id].item = item;
        json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
        if (json_is_integer(mn))
            g->nodes[id].min_items = (int)PV_MIN(json_integer_value(mn), 1000);
        if (json_is_integer(mx))
            g->nodes[id].max_items = (int)PV_MIN(json_integer_value(mx), 1000000);
        return id;
    }
    if (!strcmp(type, "string")) {
        json_t *ml = json_object_get(s, "maxLength");
        if (!json_is_integer(ml))
            return gnew(g, G_STRING);
        id = gnew(g, G_STRING);
        g->nodes[id].max_len = (int)PV_MAX(0, PV_MIN(json_integer_value(ml), 1 << 30));
        return id;
    }
    if (!strcmp(type, "number"))
        return gnew(g, G_NUMBER);
    if (!strcmp(type, "integer"))
        return gnew(g, G_INTEGER);
    if (!strcmp(type, "boolean"))
        return gnew(g, G_BOOL);
    if (!strcmp(type, "null"))
        return gnew(g, G_NULL);
    return g->any;
}

static int value_class(enum gkind k)
{
    switch (k) {
    case G_OBJECT: case G_TOOLCALL: return 0;
    case G_ARRAY: return 1;
    case G_STRING: return 2;
    case G_NUMBER: case G_INTEGER: return 3;
    case G_BOOL: return 4;
    case G_NULL: return 5;
    default: return -1;
    }
}

static int compile(struct chat_grammar *g, const json_t *s, int depth)
{
    if (!json_is_object(s) || depth > 32 || g->too_large)
        return g->any;
    json_t *lit = json_object_get(s, "const");
    json_t *en = json_object_get(s, "enum");
    if (lit || json_is_array(en)) {
        int id = gnew(g, G_LITERALS);
        size_t cnt = lit ? 1 : json_array_size(en);
        if (g->too_large || cnt > (size_t)(G_MAX_NODES - g->n - g->n_lits)) {
            g->too_large = true;
            return g->any;
        }
        g->n_lits += (int)cnt;
        char **lits = xcalloc(cnt + 1, sizeof *lits);
        int k = 0;
        for (size_t i = 0; i < cnt; i++) {
            char *t = json_dumps(lit ? lit : json_array_get(en, i), JSON_ENCODE_ANY | JSON_COMPACT);
            if (t && strlen(t) < G_MAX_LIT)
                lits[k++] = t;
            else
                free(t);
        }
        g->nodes[id].lits = lits;
        g->nodes[id].n_lits = k;
        return id;
    }
    json_t *alts = json_object_get(s, "anyOf");
    if (!alts)
        alts = json_object_get(s, "oneOf");
    json_t *type = json_object_get(s, "type");
    if (json_is_array(alts) || json_is_array(type)) {
        /* a union decided by the first character of the value */
        int id = gnew(g, G_UNION);
        size_t cnt = json_is_array(alts) ? json_array_size(alts) : json_array_size(type);
        for (size_t i = 0; i < cnt && !g->too_large; i++) {
            int c = json_is_array(alts) ? compile(g, json_array_get(alts, i), depth + 1)
                                        : compile_type(g, s, json_string_value(json_array_get(type, i))
                                                                 ? json_string_value(json_array_get(type, i)) : "", depth + 1);
            int cls = value_class(g->nodes[c].kind);
            if (cls < 0)
                return c; /* an alternative that is anything: the union is anything */
            if (g->nodes[id].by_class[cls] < 0)
                g->nodes[id].by_class[cls] = c;
        }
        if (json_is_array(type) && !cnt)
            g->nodes[id].kind = G_ANY;
        return id;
    }
    if (json_is_string(type))
        return compile_type(g, s, json_string_value(type), depth);
    if (json_object_get(s, "properties"))
        return compile_type(g, s, "object", depth);
    return g->any;
}

void chat_grammar_free(struct chat_grammar *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++) {
        struct gnode *n = &g->nodes[i];
        for (int k = 0; k < n->n; k++)
            free(n->keys[k]);
        for (int k = 0; k < n->n_lits; k++)
            free(n->lits[k]);
        free(n->keys);
        free(n->vals);
        free(n->lits);
    }
    free(g->nodes);
    free(g);
}

struct chat_grammar *chat_grammar_from_schema(const json_t *schema)
{
    struct chat_grammar *g = grammar_new();
    g->root = compile(g, schema, 0);
    if (g->too_large) {
        chat_grammar_free(g);
        return NULL;
    }
    return g;
}

struct chat_grammar *chat_grammar_json_object(void)
{
    struct chat_grammar *g = grammar_new();
    g->root = g->any_obj;
    return g;
}

struct chat_grammar *chat_grammar_tool_call(const json_t *tools, const char *only)
{
    struct chat_grammar *g = grammar_new();
    size_t cnt = json_array_size(tools);
    char **keys = xcalloc(cnt + 1, sizeof *keys);
    int *vals = xcalloc(cnt + 1, sizeof *vals);
    int k = 0;
    for (size_t i = 0; i < cnt && k < 64 && !g->too_large; i++) {
        json_t *fn = json_object_get(json_array_get(tools, i), "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || (only && strcmp(only, name) != 0))
            continue;
        char *q = quoted(name);
        if (strlen(q) >= G_MAX_LIT) {
            free(q);
            continue;
        }
        keys[k] = q;
        json_t *params = json_object_get(fn, "parameters");
        int v = compile(g, params, 1);
        if (g->nodes[v].kind != G_OBJECT) /* arguments are always an object */
            v = g->any_obj;
        vals[k++] = v;
    }
    int id = gnew(g, G_TOOLCALL);
    if (g->too_large) {
        for (int i = 0; i < k; i++)
            free(keys[i]);
        free(keys);
        free(vals);
        chat_grammar_free(g);
        return NULL;
    }
    g->nodes[id].keys = keys;
    g->nodes[id].vals = vals;
    g->nodes[id].n = k;
    g->root = id;
    if (!k) {
        chat_grammar_free(g);
        return NULL;
    }
    return g;
}

/* ---- matcher ------------------------------------------------------------------------ */

enum fkind { F_OBJ, F_ARR, F_STR, F_NUM, F_LIT, F_TOOL };
/* object / tool-call phases */
enum { O_START, O_KEY, O_COLON, O_VALUE, O_AFTER };
/* number phases */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EDIG };
/* array phases */
enum { A_START, A_COMMA, A_ITEM, A_AFTER };

#define FL_KEY_DUE 1 /* object: a ',' was read, a key must follow */
#define FL_COLON 2   /* object: ':' read, the value's first byte is next */

struct gframe {
    uint8_t kind;
    uint8_t phase;
    uint8_t sub;      /* string: escape state; tool call: 0 name due, 1 arguments due, 2 done */
    uint8_t flags;
    int32_t node;     /* grammar node; F_LIT -2: the enclosing tool call's names */
    int32_t cur;      /* object: the key being read/answered; tool call: the tool */
    uint32_t count;   /* array: items so far */
    uint64_t used;    /* object: keys seen */
};

struct gstate {
    int depth;
    bool done;
    uint8_t ws;
    uint8_t lit_len;
    char lit[G_MAX_LIT]; /* bytes of the literal or key being matched */
    struct gframe f[G_MAX_DEPTH];
};

static bool gpush(struct gstate *s, uint8_t kind, int node)
{
    if (s->depth >= G_MAX_DEPTH)
        return false;
    struct gframe *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->node = (int32_t)node;
    f->cur = -1;
    return true;
}

/* one space between tokens, as json.dumps writes: no newlines, so no runaway indentation */
static bool g_ws(uint8_t c) { return c == ' '; }

/* Does some candidate (not in `skip`) start with lit+c? */
static bool lit_extends(const struct gstate *s, char *const *cands, int n, uint64_t skip, uint8_t c)
{
    for (int i = 0; i < n; i++) {
        if (i < 64 && ((skip >> i) & 1))
            continue;
        size_t l = strlen(cands[i]);
        if (l > s->lit_len && !memcmp(cands[i], s->lit, s->lit_len) && (uint8_t)cands[i][s->lit_len] == c)
            return true;
    }
    return false;
}

/* Index of the candidate equal to lit, or -1; *longer: some candidate extends lit. */
static int lit_match(const struct gstate *s, char *const *cands, int n, uint64_t skip, bool *longer)
{
    int hit = -1;
    *longer = false;
    for (int i = 0; i < n; i++) {
        if (i < 64 && ((skip >> i) & 1))
            continue;
        size_t l = strlen(cands[i]);
        if (l < s->lit_len || memcmp(cands[i], s->lit, s->lit_len))
            continue;
        if (l == s->lit_len)
            hit = i;
        else
            *longer = true;
    }
    return hit;
}

static char *const g_bools[] = {"true", "false"};
static char *const g_nulls[] = {"null"};
static char *const g_anylits[] = {"true", "false", "null"};

static void lit_cands(const struct chat_grammar *g, const struct gstate *s, const struct gframe *f,
                      char *const **cands, int *cnt)
{
    if (f->node == -1) {
        *cands = g_anylits;
        *cnt = 3;
    } else if (f->node == -2) {
        const struct gnode *t = &g->nodes[s->f[s->depth - 2].node];
        *cands = t->keys;
        *cnt = t->n;
    } else {
        const struct gnode *n = &g->nodes[f->node];
        *cands = n->kind == G_BOOL ? g_bools : n->kind == G_NULL ? g_nulls : n->lits;
        *cnt = n->kind == G_BOOL ? 2 : n->kind == G_NULL ? 1 : n->n_lits;
    }
}

/* The value on top finished: pop it and advance the parent. */
static void value_done(struct gstate *s)
{
    s->depth--;
    if (s->depth == 0) {
        s->done = true;
        return;
    }
    struct gframe *p = &s->f[s->depth - 1];
    if (p->kind == F_OBJ) {
        p->phase = p->phase == O_KEY ? O_COLON : O_AFTER;
    } else if (p->kind == F_TOOL) {
        p->phase = O_AFTER;
        p->sub++;
    } else if (p->kind == F_ARR) {
        p->count++;
        p->phase = A_AFTER;
    }
}

static bool start_value(const struct chat_grammar *g, struct gstate *s, int nd, uint8_t c);

static bool start_number(struct gstate *s, int nd, uint8_t c)
{
    if (!(c == '-' || (c >= '0' && c <= '9')) || !gpush(s, F_NUM, nd))
        return false;
    s->f[s->depth - 1].phase = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
    s->f[s->depth - 1].count = c != '-';
    return true;
}

static bool start_lit(struct gstate *s, int nd, char *const *cands, int cnt, uint8_t c)
{
    s->lit_len = 0;
    if (!lit_extends(s, cands, cnt, 0, c) || !gpush(s, F_LIT, nd))
        return false;
    s->lit[0] = (char)c;
    s->lit_len = 1;
    return true;
}

static bool start_value(const struct chat_grammar *g, struct gstate *s, int nd, uint8_t c)
{
    const struct gnode *n = &g->nodes[nd];
    switch (n->kind) {
    case G_ANY:
        if (c == '{')
            return gpush(s, F_OBJ, g->any_obj);
        if (c == '[')
            return gpush(s, F_ARR, g->any_arr);
        if (c == '"')
            return gpush(s, F_STR, -1);
        if (c == 't' || c == 'f' || c == 'n')
            return start_lit(s, -1, g_anylits, 3, c);
        return start_number(s, -1, c);
    case G_OBJECT: return c == '{' && gpush(s, F_OBJ, nd);
    case G_TOOLCALL: return c == '{' && gpush(s, F_TOOL, nd);
    case G_ARRAY: return c == '[' && gpush(s, F_ARR, nd);
    case G_STRING: return c == '"' && gpush(s, F_STR, nd);
    case G_NUMBER: case G_INTEGER: return start_number(s, nd, c);
    case G_BOOL: return start_lit(s, nd, g_bools, 2, c);
    case G_NULL: return start_lit(s, nd, g_nulls, 1, c);
    case G_LITERALS: return start_lit(s, nd, n->lits, n->n_lits, c);
    case G_UNION: {
        int cls = c == '{' ? 0 : c == '[' ? 1 : c == '"' ? 2 : (c == '-' || (c >= '0' && c <= '9')) ? 3
                : (c == 't' || c == 'f') ? 4 : c == 'n' ? 5 : -1;
        return cls >= 0 && n->by_class[cls] >= 0 && start_value(g, s, n->by_class[cls], c);
    }
    }
    return false;
}

static bool num_accepting(uint8_t ph)
{
    return ph == N_ZERO || ph == N_INT || ph == N_FRAC || ph == N_EDIG;
}

/* Whitespace between tokens: allowed, a few bytes in a row. */
static bool take_ws(struct gstate *s, uint8_t c, bool *ok)
{
    if (!g_ws(c)) {
        s->ws = 0;
        return false;
    }
    *ok = ++s->ws <= G_MAX_WS;
    return true;
}

static bool gstep(const struct chat_grammar *g, struct gstate *s, uint8_t c)
{
    bool ok;
    if (s->done)
        return false;
    if (s->depth == 0)
        return start_value(g, s, g->root, c);
    struct gframe *f = &s->f[s->depth - 1];
    switch (f->kind) {
    case F_STR:
        if (f->sub == 1) {
            if (c == 'u') {
                f->sub = 2;
                return true;
            }
            if (!c || !strchr("\"\\/bfnrt", c))
                return false;
            f->sub = 0;
            return true;
        }
        if (f->sub >= 2) {
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                return false;
            f->sub = f->sub == 5 ? 0 : f->sub + 1;
            return true;
        }
        if (c == '"') {
            value_done(s);
            return true;
        }
        if (c < 0x20)
            return false;
        if ((c & 0xC0) != 0x80 && f->node >= 0) {
            /* a new character (continuation bytes are part of the previous one) */
            int max = g->nodes[f->node].max_len;
            if (max >= 0 && (int)f->count >= max)
                return false;
            f->count++;
        }
        if (c == '\\')
            f->sub = 1;
        return true;
    case F_NUM: {
        bool integer = f->node >= 0 && g->nodes[f->node].kind == G_INTEGER;
        bool digit = c >= '0' && c <= '9';
        /* bounded digit runs: a model stuck repeating a digit must still close the value */
        if (digit && ++f->count > G_MAX_DIGITS)
            return false;
        if (!digit)
            f->count = 0;
        switch (f->phase) {
        case N_MINUS:
            if (!digit)
                return false;
            f->phase = c == '0' ? N_ZERO : N_INT;
            return true;
        case N_ZERO: case N_INT:
            if (digit && f->phase == N_INT)
                return true;
            if (c == '.' && !integer) {
                f->phase = N_DOT;
                return true;
            }
            if ((c == 'e' || c == 'E') && !integer) {
                f->phase = N_E;
                return true;
            }
            break;
        case N_DOT:
            if (!digit)
                return false;
            f->phase = N_FRAC;
            return true;
        case N_FRAC:
            if (digit)
                return true;
            if (c == 'e' || c == 'E') {
                f->phase = N_E;
                return true;
            }
            break;
        case N_E:
            if (c == '+' || c == '-') {
                f->phase = N_ESIGN;
                return true;
            }
            if (!digit)
                return false;
            f->phase = N_EDIG;
            return true;
        case N_ESIGN:
            if (!digit)
                return false;
            f->phase = N_EDIG;
            return true;
        case N_EDIG:
            if (digit)
                return true;
            break;
        }
        if (!num_accepting(f->phase) || s->depth == 1)
            return false;
        value_done(s);
        return gstep(g, s, c);
    }
    case F_LIT: {
        char *const *cands;
        int cnt;
        bool longer;
        lit_cands(g, s, f, &cands, &cnt);
        if (s->lit_len < G_MAX_LIT - 1 && lit_extends(s, cands, cnt, 0, c)) {
            s->lit[s->lit_len++] = (char)c;
            int k = lit_match(s, cands, cnt, 0, &longer);
            if (k >= 0 && !longer) {
                if (f->node == -2)
                    s->f[s->depth - 2].cur = (int32_t)k;
                s->lit_len = 0;
                value_done(s);
            }
            return true;
        }
        /* a complete literal another candidate extends (numbers): ends here */
        int k = lit_match(s, cands, cnt, 0, &longer);
        if (k < 0 || s->depth == 1)
            return false;
        if (f->node == -2)
            s->f[s->depth - 2].cur = (int32_t)k;
        s->lit_len = 0;
        value_done(s);
        return gstep(g, s, c);
    }
    case F_ARR: {
        const struct gnode *n = &g->nodes[f->node];
        if (take_ws(s, c, &ok))
            return ok;
        if (f->phase == A_START || f->phase == A_COMMA) {
            if (c == ']' && f->phase == A_START && n->min_items == 0) {
                value_done(s);
                return true;
            }
            if (n->max_items >= 0 && (int)f->count >= n->max_items)
                return false;
            f->phase = A_ITEM;
            return start_value(g, s, n->item, c);
        }
        if (c == ',' && (n->max_items < 0 || (int)f->count < n->max_items)) {
            f->phase = A_COMMA;
            return true;
        }
        if (c == ']' && (int)f->count >= n->min_items) {
            value_done(s);
            return true;
        }
        return false;
    }
    case F_OBJ: case F_TOOL: {
        const struct gnode *n = &g->nodes[f->node];
        bool tool = f->kind == F_TOOL;
        static char *const k_name[] = {"\"name\""};
        static char *const k_args[] = {"\"arguments\""};
        switch (f->phase) {
        case O_START: case O_AFTER:
            if (take_ws(s, c, &ok))
                return ok;
            if (f->phase == O_AFTER && c == ',') {
                if (tool ? f->sub != 1 : (n->n && __builtin_popcountll(f->used) >= n->n))
                    return false;
                f->phase = O_START;
                f->flags |= FL_KEY_DUE;
                return true;
            }
            if (c == '}' && !(f->flags & FL_KEY_DUE)) {
                if (tool ? f->sub != 2 : (f->used & n->required) != n->required)
                    return false;
                value_done(s);
                return true;
            }
            if (c != '"' || f->phase != O_START)
                return false;
            if (tool && f->sub > 1)
                return false;
            f->flags &= (uint8_t)~FL_KEY_DUE;
            f->phase = O_KEY;
            if (!tool && n->n == 0) {
                f->cur = -1;
                return gpush(s, F_STR, -1); /* a free key */
            }
            s->lit[0] = '"';
            s->lit_len = 1;
            return true;
        case O_KEY: {
            char *const *cands = tool ? (f->sub == 0 ? k_name : k_args) : n->keys;
            int cnt = tool ? 1 : n->n;
            uint64_t skip = tool ? 0 : f->used;
            bool longer;
            if (s->lit_len >= G_MAX_LIT - 1 || !lit_extends(s, cands, cnt, skip, c))
                return false;
            s->lit[s->lit_len++] = (char)c;
            int k = lit_match(s, cands, cnt, skip, &longer);
            if (k >= 0) {
                if (!tool) {
                    f->cur = (int32_t)k;
                    f->used |= (uint64_t)1 << k;
                }
                f->phase = O_COLON;
                s->lit_len = 0;
            }
            return true;
        }
        case O_COLON:
            if (take_ws(s, c, &ok))
                return ok;
            if (!(f->flags & FL_COLON)) {
                if (c != ':')
                    return false;
                f->flags |= FL_COLON;
                return true;
            }
            f->flags &= (uint8_t)~FL_COLON;
            f->phase = O_VALUE;
            if (tool) {
                if (f->sub == 0)
                    return start_lit(s, -2, n->keys, n->n, c);
                return f->cur >= 0 && start_value(g, s, n->vals[f->cur], c);
            }
            return start_value(g, s, f->cur >= 0 ? n->vals[f->cur] : g->any, c);
        default:
            return false;
        }
    }
    }
    return false;
}

static bool g_accepting(const struct gstate *s)
{
    return s->done || (s->depth == 1 && s->f[0].kind == F_NUM && num_accepting(s->f[0].phase));
}

/* ---- token tables and the logits mask ------------------------------------------------- */

struct chat_token_table {
    size_t n;
    uint32_t *off;      /* [n+1] offsets into bytes */
    char *bytes;
    uint8_t *plain;     /* [n] 1: non-empty piece without '"', '\\' or control bytes */
    uint8_t *eog;       /* [n] 1: ends generation */
    uint32_t *bucket;   /* token ids sorted by first byte */
    uint32_t bstart[257];
};

struct chat_token_table *chat_token_table_new(const struct pv_vocab *v)
{
    struct chat_token_table *t = xcalloc(1, sizeof *t);
    size_t n = pv_vocab_n_tokens(v);
    t->n = n;
    t->off = xcalloc(n + 1, sizeof *t->off);
    t->plain = xcalloc(n + 1, 1);
    t->eog = xcalloc(n + 1, 1);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        pv_token_to_piece(v, (int32_t)i, false, &len);
        if (pv_token_is_control(v, (int32_t)i))
            len = 0;
        total += len;
    }
    t->bytes = xmalloc(total + 1);
    size_t at = 0;
    uint32_t counts[257] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = pv_token_to_piece(v, (int32_t)i, false, &len);
        if (pv_token_is_control(v, (int32_t)i) || !p)
            len = 0;
        t->off[i] = (uint32_t)at;
        memcpy(t->bytes + at, p, len);
        at += len;
        bool plain = len > 0;
        for (size_t k = 0; k < len && plain; k++) {
            uint8_t c = (uint8_t)p[k];
            plain = c >= 0x20 && c != '"' && c != '\\';
        }
        t->plain[i] = plain;
        t->eog[i] = pv_token_is_eog(v, (int32_t)i);
        counts[len ? (uint8_t)p[0] : 256]++;
    }
    t->off[n] = (uint32_t)at;
    t->bucket = xcalloc(n + 1, sizeof *t->bucket);
    uint32_t pos[257];
    uint32_t acc = 0;
    for (int b = 0; b < 257; b++) {
        t->bstart[b] = acc;
        pos[b] = acc;
        acc += counts[b];
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = t->off[i + 1] - t->off[i];
        int b = len ? (uint8_t)t->bytes[t->off[i]] : 256;
        t->bucket[pos[b]++] = (uint32_t)i;
    }
    return t;
}

void chat_token_table_free(struct chat_token_table *t)
{
    if (!t)
        return;
    free(t->off);
    free(t->bytes);
    free(t->plain);
    free(t->eog);
    free(t->bucket);
    free(t);
}

struct chat_matcher {
    struct chat_grammar *g;           /* owned */
    const struct chat_token_table *t; /* borrowed (the model's) */
    struct gstate s;
    bool dead;                        /* a token was accepted that the grammar refused */
};

struct chat_matcher *chat_matcher_new(struct chat_grammar *g, const struct chat_token_table *t)
{
    struct chat_matcher *m = xcalloc(1, sizeof *m);
    m->g = g;
    m->t = t;
    return m;
}

void chat_matcher_free(struct chat_matcher *m)
{
    if (!m)
        return;
    chat_grammar_free(m->g);
    free(m);
}

/* Copy only the live part of a state. */
static void gcopy(struct gstate *dst, const struct gstate *src)
{
    dst->depth = src->depth;
    dst->done = src->done;
    dst->ws = src->ws;
    dst->lit_len = src->lit_len;
    memcpy(dst->lit, src->lit, src->lit_len);
    memcpy(dst->f, src->f, (size_t)src->depth * sizeof src->f[0]);
}

bool chat_matcher_feed(struct chat_matcher *m, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!gstep(m->g, &m->s, (uint8_t)s[i]))
            return false;
    return true;
}

bool chat_matcher_done(const struct chat_matcher *m) { return g_accepting(&m->s); }

void chat_matcher_mask(struct chat_matcher *m, float *logits, size_t n_vocab)
{
    const struct chat_token_table *t = m->t;
    size_t n = PV_MIN(n_vocab, t->n);
    uint8_t *allow = xcalloc(n_vocab + 1, 1);
    bool any = false;
    if (!m->dead) {
        bool accepting = g_accepting(&m->s);
        const struct gframe *top = m->s.depth ? &m->s.f[m->s.depth - 1] : NULL;
        bool free_string = top && top->kind == F_STR && top->sub == 0 &&
                           (top->node < 0 || m->g->nodes[top->node].max_len < 0);
        struct gstate first, tmp;
        for (int b = 0; b < 256; b++) {
            uint32_t lo = t->bstart[b], hi = t->bstart[b + 1];
            if (lo == hi)
                continue;
            gcopy(&first, &m->s);
            if (!gstep(m->g, &first, (uint8_t)b))
                continue;
            for (uint32_t k = lo; k < hi; k++) {
                uint32_t id = t->bucket[k];
                if (id >= n)
                    continue;
                if (free_string && t->plain[id]) {
                    allow[id] = 1;
                    continue;
                }
                gcopy(&tmp, &first);
                bool ok = true;
                for (uint32_t q = t->off[id] + 1; q < t->off[id + 1] && ok; q++)
                    ok = gstep(m->g, &tmp, (uint8_t)t->bytes[q]);
                allow[id] = ok;
            }
        }
        for (size_t i = 0; i < n; i++)
            if (t->eog[i] && accepting)
                allow[i] = 1;
        for (size_t i = 0; i < n && !any; i++)
            any = allow[i];
    }
    if (!any) /* nothing fits (or the state is dead): only ending is left */
        for (size_t i = 0; i < n; i++)
            allow[i] = t->eog[i];
    for (size_t i = 0; i < n_vocab; i++)
        if (i >= n || !allow[i])
            logits[i] = -INFINITY;
    free(allow);
}

void chat_matcher_accept(struct chat_matcher *m, int32_t token)
{
    if (token < 0 || (size_t)token >= m->t->n || m->dead)
        return;
    const struct chat_token_table *t = m->t;
    if (t->eog[token])
        return;
    for (uint32_t q = t->off[token]; q < t->off[token + 1]; q++) {
        if (!gstep(m->g, &m->s, (uint8_t)t->bytes[q])) {
            m->dead = true;
            return;
        }
    }
}

void chat_constraint_mask(void *state, float *logits, size_t n_vocab)
{
    chat_matcher_mask(state, logits, n_vocab);
}

void chat_constraint_accept(void *state, int32_t token)
{
    chat_matcher_accept(state, token);
}

void chat_constraint_release(void *state)
{
    chat_matcher_free(state);
}

enum pv_status chat_grammar_for(const struct chat_conv *c, struct chat_grammar **out,
                                struct pv_err *err)
{
    *out = NULL;
    if (json_array_size(c->tools) &&
        (c->tool_choice == CHAT_TOOLS_REQUIRED || c->tool_choice == CHAT_TOOLS_NAMED)) {
        const char *only = c->tool_choice == CHAT_TOOLS_NAMED ? c->tool_name : NULL;
        *out = chat_grammar_tool_call(c->tools, only);
        if (!*out)
            return pv_err_set(err, PV_ERR_INVALID,
                              "tools: the forced tool call needs a grammar larger than %d "
                              "nodes (simplify the tool's input_schema/parameters)",
                              G_MAX_NODES);
        return PV_OK;
    }
    if (c->format == CHAT_FORMAT_JSON_SCHEMA) {
        *out = chat_grammar_from_schema(c->schema);
        if (!*out)
            return pv_err_set(err, PV_ERR_INVALID,
                              "response_format: the JSON schema needs a grammar larger than %d "
                              "nodes (fewer alternatives, enum values or properties)",
                              G_MAX_NODES);
        return PV_OK;
    }
    if (c->format == CHAT_FORMAT_JSON_OBJECT)
        *out = chat_grammar_json_object();
    return PV_OK;
}
