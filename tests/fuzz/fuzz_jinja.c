/*
 * fuzz_jinja.c - the Jinja interpreter: input is a template, a NUL, and a JSON context
 * (the data a request puts into it). Parse, then render under tight step, output and
 * memory limits, the way chat templates are rendered.
 */
#include <jansson.h>

#include "chat/jinja.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src;
    const uint8_t *rest;
    size_t n_rest;
    fuzz_quiet();
    fuzz_split(data, size, &src, &rest, &n_rest);
    struct pv_err err = {0};
    struct jinja_template *t = NULL;
    if (jinja_parse(src, strlen(src), &t, &err) == PV_OK) {
        json_t *vars = json_loadb((const char *)rest, n_rest, 0, NULL);
        if (!json_is_object(vars)) {
            json_decref(vars);
            vars = json_pack("{s:[{s:s,s:s}],s:s,s:b}", "messages", "role", "user", "content",
                             "hi", "bos_token", "<s>", "add_generation_prompt", 1);
        }
        struct jinja_render_opts o = {.now = 0,
                                      .max_output_bytes = 1 << 20,
                                      .max_memory_bytes = 64u << 20,
                                      .max_steps = 200000};
        struct pv_buf out = PV_BUF_INIT, taint = PV_BUF_INIT;
        (void)jinja_render(t, vars, &o, &out, &taint, &err);
        buf_release(&out);
        buf_release(&taint);
        json_decref(vars);
        jinja_free(t);
    }
    free(src);
    return 0;
}
