/*
 * jinja_int.h - types shared by the files of the Jinja interpreter (jinja_parse.c,
 * jinja_value.c, jinja_eval.c): the AST the parser builds, the values the evaluator
 * computes with, and the render context. Nothing outside src/chat/jinja_*.c includes it.
 * Values live in the render's arena and die with it; errors unwind with longjmp to
 * jinja_render, which is safe because every allocation of a render is in that arena.
 */
#ifndef PV_CHAT_JINJA_INT_H
#define PV_CHAT_JINJA_INT_H

#include <setjmp.h>

#include "chat/jinja.h"

/* ---- values ---------------------------------------------------------------------- */

enum jv_type { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC };

struct jstr {
    size_t len;
    const uint8_t *taint; /* per byte, 1 = from request data; NULL = all template text */
    bool markup;          /* markupsafe.Markup (from |safe, |escape): `+` escapes a plain operand */
    char s[];             /* len bytes + NUL */
};

struct jval;
struct jlist {
    size_t n, cap;
    struct jval *v;
    bool is_tuple; /* printed as (a, b) */
    bool is_gen;   /* result of map/select...: a Python generator (no len, no JSON) */
};

struct jdict {
    size_t n, cap;
    struct jval *k, *v; /* insertion order, like a Python dict */
    bool is_ns;         /* namespace(): attributes assignable by {% set ns.x = %} */
    bool is_loop;       /* the `loop` object of a for statement */
};

struct jnode;
struct jscope;
enum jf_kind { JF_BUILTIN, JF_METHOD, JF_MACRO };
struct jfunc {
    enum jf_kind kind;
    const char *name;           /* builtin or method name */
    struct jval *self;          /* receiver of a method */
    const struct jnode *macro;  /* JF_MACRO: its node */
    struct jscope *closure;     /* JF_MACRO: scope it was defined in */
    const struct jnode *caller; /* JF_MACRO made by {% call %}: body */
};

struct jval {
    uint8_t t; /* enum jv_type */
    union {
        bool b;
        int64_t i;
        double f;
        struct jstr *s;
        struct jlist *l;
        struct jdict *d;
        struct jfunc *fn;
        const char *uname; /* JV_UNDEF: the name that was missing, for messages */
    } u;
};

/* ---- AST ------------------------------------------------------------------------- */

enum jn_kind {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK,
    N_BREAK, N_CONTINUE, N_BLOCK,
    /* expressions */
    E_CONST, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NEG,
    E_POS, E_NOT, E_AND, E_OR, E_CMP, E_COND, E_LIST, E_TUPLE, E_DICT
};

enum jcmp_op { JC_EQ, JC_NE, JC_LT, JC_LE, JC_GT, JC_GE, JC_IN, JC_NOTIN };

struct jnode {
    uint8_t kind;      /* enum jn_kind */
    int op;            /* E_BIN operator char ('F' = //, 'P' = **), N_SET attr flag, E_TEST negated */
    int line, col;     /* 1-based position in the template */
    struct jnode *a, *b, *c, *d;
    struct jnode **kids;  /* body / items / positional args / compare operands */
    size_t n_kids;
    struct jnode **kids2; /* else body / dict values / keyword arg values / macro defaults */
    size_t n_kids2;
    const char **names;   /* targets / keyword names / macro params */
    size_t n_names;
    int *ops;             /* E_CMP: n_kids operators */
    const char *name;     /* variable, attribute, filter, test, macro name */
    struct jval val;      /* E_CONST; N_TEXT's text */
};

struct jinja_template {
    struct pv_arena arena; /* owns every node and constant */
    struct jnode *root;    /* N_BLOCK */
};

/* ---- render context -------------------------------------------------------------- */

struct jscope {
    struct jscope *parent;
    struct jdict vars;
};

struct jsink {
    char *buf;
    uint8_t *taint;
    size_t len, cap;
};

struct jctx {
    struct pv_arena arena;
    jmp_buf jb;
    struct pv_err *err;
    enum pv_status status;
    const struct jinja_render_opts *opts;
    size_t max_output, max_mem;
    long steps, max_steps;
    int depth;
    int loop_ctl; /* 0, 1 break, 2 continue pending */
    struct jsink *sink;
    struct jscope *globals;
    struct jval *filter_input; /* value a {% filter %} / {% set x | f %} block feeds its filters */
};

/* Abort the render with a message that names the node's position. */
_Noreturn void jx_fail(struct jctx *c, const struct jnode *n, enum pv_status st, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
void *jx_alloc(struct jctx *c, size_t n);

/* value constructors and helpers (jinja_value.c) */
struct jval jv_undef(const char *name);
struct jval jv_none(void);
struct jval jv_bool(bool b);
struct jval jv_int(int64_t i);
struct jval jv_float(double f);
struct jval jv_str(struct jctx *c, const char *s, size_t len, const uint8_t *taint);
struct jval jv_str_tainted(struct jctx *c, const char *s, size_t len, bool tainted);
struct jval jv_list(struct jctx *c, size_t cap);
struct jval jv_dict(struct jctx *c, size_t cap);
void jl_push(struct jctx *c, struct jlist *l, struct jval v);
void jd_set(struct jctx *c, struct jdict *d, struct jval k, struct jval v);
struct jval *jd_get(const struct jdict *d, const char *key, size_t len);
struct jval *jd_getv(const struct jdict *d, struct jval k);
bool jv_truthy(struct jval v);
bool jv_equal(struct jval a, struct jval b);
/* <0, 0, >0; false when the types cannot be ordered */
bool jv_compare(struct jval a, struct jval b, int *out);
const char *jv_type_name(struct jval v);
/* str(v) as Python prints it; taint follows the source strings */
struct jval jv_to_str(struct jctx *c, struct jval v);
/* json.dumps(v, ensure_ascii, indent (<0 none), separators (NULL: default), sort_keys);
 * false when v holds a value JSON cannot represent */
bool jv_to_json(struct jctx *c, struct jval v, int indent, bool sort_keys, bool ensure_ascii,
                const struct jstr *item_sep, const struct jstr *key_sep, struct jsink *out);
struct jval jv_from_json(struct jctx *c, const json_t *j, bool tainted);
void jsink_put(struct jctx *c, struct jsink *s, const char *p, size_t n, const uint8_t *taint,
               bool all_tainted);
struct jval jsink_str(struct jctx *c, struct jsink *s);
/* number of code points; byte offset of code point `i` */
size_t ju_cplen(const char *s, size_t len);
size_t ju_cpoff(const char *s, size_t len, size_t i);
/* Python float repr */
void ju_float_repr(double f, char *out, size_t cap);

/* parse (jinja_parse.c) and evaluate (jinja_eval.c) */
void jeval_block(struct jctx *c, const struct jnode *n, struct jscope *sc);

#endif /* PV_CHAT_JINJA_INT_H */
