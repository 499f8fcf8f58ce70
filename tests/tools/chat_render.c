/*
 * chat_render.c - test tool: render a chat template with the C Jinja interpreter.
 *
 * Reads one JSON object on stdin: {"template": str, "now": epoch seconds, "contexts":
 * [ {variables...}, ... ]} and writes a JSON array with one result per context:
 * {"text": str, "taint": "0101..." (one digit per output byte)} or {"error": str}.
 * `chat_render --builtin NAME` prints a built-in template instead; `chat_render --gguf
 * FILE` prints the tokenizer.chat_template of a GGUF file (exit 3 when it has none).
 * tests/chat/test_templates.py compares the texts with Python jinja2's.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/jinja.h"
#include "model/gguf.h"

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--builtin") == 0) {
        const char *src = chat_builtin_template(argv[2]);
        if (!src) {
            fprintf(stderr, "chat_render: no built-in template '%s'\n", argv[2]);
            return 2;
        }
        fputs(src, stdout);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--gguf") == 0) {
        struct gguf_file *f;
        struct pv_err e = {0};
        struct gguf_str str;
        if (gguf_open(argv[2], &f, &e) != PV_OK) {
            fprintf(stderr, "chat_render: %s\n", e.msg);
            return 2;
        }
        int rc = 3;
        if (gguf_get_str(f, "tokenizer.chat_template", &str)) {
            fwrite(str.p, 1, (size_t)str.n, stdout);
            rc = 0;
        }
        gguf_close(f);
        return rc;
    }
    json_error_t jerr;
    json_t *in = json_loadf(stdin, 0, &jerr);
    if (!in) {
        fprintf(stderr, "chat_render: bad input json: %s\n", jerr.text);
        return 2;
    }
    const char *src = json_string_value(json_object_get(in, "template"));
    if (!src) {
        fprintf(stderr, "chat_render: missing template\n");
        return 2;
    }
    json_t *results = json_array();
    struct pv_err err = {0};
    struct jinja_template *t = NULL;
    if (jinja_parse(src, strlen(src), &t, &err) != PV_OK) {
        json_array_append_new(results, json_pack("{s:s}", "error", err.msg));
    } else {
        static const char *const trusted[] = {"bos_token", "eos_token", NULL};
        struct jinja_render_opts opts = {.now = (time_t)json_integer_value(json_object_get(in, "now")),
                                         .trusted_vars = trusted};
        json_t *ctx;
        size_t i;
        json_array_foreach(json_object_get(in, "contexts"), i, ctx) {
            struct pv_buf out = PV_BUF_INIT, taint = PV_BUF_INIT;
            if (jinja_render(t, ctx, &opts, &out, &taint, &err) != PV_OK) {
                json_array_append_new(results, json_pack("{s:s}", "error", err.msg));
            } else {
                for (size_t k = 0; k < taint.len; k++)
                    taint.data[k] = taint.data[k] ? '1' : '0';
                json_array_append_new(results, json_pack("{s:s%,s:s%}", "text", out.data, out.len,
                                                         "taint", taint.data, taint.len));
            }
            buf_release(&out);
            buf_release(&taint);
        }
    }
    jinja_free(t);
    char *s = json_dumps(results, JSON_ENSURE_ASCII);
    puts(s);
    free(s);
    json_decref(results);
    json_decref(in);
    return 0;
}
