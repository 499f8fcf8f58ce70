/*
 * jinja.h - internal interface of the chat module's Jinja2-subset interpreter.
 *
 * Chat templates ship inside model files (GGUF `tokenizer.chat_template`) and are written
 * for Python's jinja2 as Hugging Face runs it: ImmutableSandboxedEnvironment with
 * trim_blocks and lstrip_blocks, the loopcontrols extension, and the globals
 * raise_exception/strftime_now plus a json.dumps-based `tojson`. This interpreter parses
 * such a template once (jinja_parse) and renders it against a JSON context (jinja_render),
 * producing the same bytes Python does. Every byte of output carries a taint bit: 1 when it
 * came from a string of the context (request data), 0 when it came from template text, so
 * the caller can stop user text from ever becoming a control token.
 * Templates are untrusted: errors name the construct and line:column, and recursion,
 * loop iterations, output size and memory are bounded.
 */
#ifndef PV_CHAT_JINJA_H
#define PV_CHAT_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util/util.h"

struct jinja_template; /* opaque: parsed template, owns its AST */

/* Parse `src` (len bytes). On success *out owns the template (jinja_free). */
enum pv_status jinja_parse(const char *src, size_t len, struct jinja_template **out,
                           struct pv_err *err);
void jinja_free(struct jinja_template *t);

struct jinja_render_opts {
    time_t now;               /* what strftime_now formats (local time) */
    size_t max_output_bytes;  /* 0: 64 MiB */
    size_t max_memory_bytes;  /* 0: 512 MiB of interpreter values */
    long max_steps;           /* 0: 50 million loop iterations + calls */
    /* Top-level context variables whose strings are template-trusted (not tainted),
     * e.g. "bos_token"; NULL-terminated list, may be NULL. */
    const char *const *trusted_vars;
};

/*
 * Render `t` with the variables of the JSON object `vars`. Appends the output to `out`
 * and, when `taint` is not NULL, one byte per output byte to `taint` (1 = from context
 * data). Thread-safe: a template may be rendered by several threads at once.
 */
enum pv_status jinja_render(const struct jinja_template *t, const json_t *vars,
                            const struct jinja_render_opts *opts, struct pv_buf *out,
                            struct pv_buf *taint, struct pv_err *err);

#endif /* PV_CHAT_JINJA_H */
