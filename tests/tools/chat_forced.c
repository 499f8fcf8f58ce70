/*
 * chat_forced.c - test tool: constrained generation through the whole chat layer.
 *
 * Reads {"model": gguf path, "random": bool, "seed": n, "max_tokens": n, "requests":
 * [Anthropic or OpenAI bodies ({"openai": true, ...})]} on stdin. Each request is
 * converted, rendered with the model's template (or its built-in), tokenized with the
 * taint segments, and generated greedily with the grammar chat_grammar_for() gives (tool
 * choice any/tool, response_format) masking the logits; the text goes through the output
 * parser. With "random": true no forward pass runs: logits are seeded random numbers (pieces
 * holding '"', '}', ']' or ',' get +0.5 so values end in a few tokens), so the grammar and
 * the mask alone decide (a test of the matcher over the real vocabulary).
 * Writes one JSON object per request: {"raw", "text", "calls": [{"name","arguments"}],
 * "stop", "n_tokens", "mask_ms"}; with "prompt_only": true only {"prompt", "ids"}.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "model/gguf.h"

struct out {
    struct pv_buf text, args;
    json_t *calls;
    const char *name;
    char stop[32];
};

static void on_event(void *ud, const struct chat_event *e)
{
    struct out *o = ud;
    static const char *const reasons[] = {"end_turn", "max_tokens", "stop_sequence", "tool_use"};
    switch (e->type) {
    case CHAT_EV_TEXT: buf_append(&o->text, e->text, e->len); break;
    case CHAT_EV_TOOL_START:
        buf_reset(&o->args);
        json_array_append_new(o->calls, json_pack("{s:s}", "name", e->tool_name));
        break;
    case CHAT_EV_TOOL_ARGS: buf_append(&o->args, e->text, e->len); break;
    case CHAT_EV_TOOL_END: {
        json_t *a = json_loads(o->args.data, 0, NULL);
        json_object_set_new(json_array_get(o->calls, json_array_size(o->calls) - 1), "arguments",
                            a ? a : json_null());
        break;
    }
    case CHAT_EV_STOP: snprintf(o->stop, sizeof o->stop, "%s", reasons[e->stop]); break;
    default: break;
    }
}

static uint64_t rng_state;
static float rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / (float)(1 << 24);
}

static int die(const char *what, const struct pv_err *err)
{
    fprintf(stderr, "chat_forced: %s: %s\n", what, err ? err->msg : "");
    return 1;
}

int main(void)
{
    json_error_t jerr;
    json_t *in = json_loadf(stdin, 0, &jerr);
    if (!in)
        return die("bad input json", NULL);
    const char *path = json_string_value(json_object_get(in, "model"));
    bool random = json_is_true(json_object_get(in, "random"));
    int max_tokens = (int)json_integer_value(json_object_get(in, "max_tokens"));
    rng_state = (uint64_t)json_integer_value(json_object_get(in, "seed")) * 2654435761u + 88172645463325252ull;
    struct pv_err err = {0};
    struct pv_model *model = NULL;
    struct pv_vocab *own_vocab = NULL;
    struct pv_context *ctx = NULL;
    const struct pv_vocab *vocab;
    const char *tmpl_src = NULL, *arch = NULL;
    if (random) {
        if (pv_vocab_load_file(path, &own_vocab, &err))
            return die("vocab", &err);
        vocab = own_vocab;
    } else {
        if (pv_model_load(path, NULL, &model, &err))
            return die("model", &err);
        struct pv_context_params cp = pv_context_default_params();
        cp.n_ctx = 2048;
        cp.n_threads = 2;
        if (pv_context_new(model, &cp, &ctx, &err))
            return die("context", &err);
        vocab = pv_model_vocab(model);
        tmpl_src = pv_model_chat_template(model);
        arch = pv_model_arch(model);
    }
    char *file_tmpl = NULL, *file_arch = NULL;
    if (random) {
        /* the vocabulary file's own template and architecture, as a model would give */
        struct gguf_file *gf;
        struct gguf_str gs;
        if (gguf_open(path, &gf, &err) == PV_OK) {
            if (gguf_get_str(gf, "tokenizer.chat_template", &gs))
                tmpl_src = file_tmpl = xstrndup(gs.p, (size_t)gs.n);
            if (gguf_get_str(gf, "general.architecture", &gs))
                arch = file_arch = xstrndup(gs.p, (size_t)gs.n);
            gguf_close(gf);
        }
    }
    if (!tmpl_src) {
        const char *t = json_string_value(json_object_get(in, "template"));
        tmpl_src = t;
        if (!arch)
            arch = json_string_value(json_object_get(in, "arch"));
    }
    size_t blen = 0, elen = 0;
    const char *bos = pv_vocab_bos(vocab) >= 0 ? pv_token_to_piece(vocab, pv_vocab_bos(vocab), true, &blen) : "";
    const char *eos = pv_vocab_eos(vocab) >= 0 ? pv_token_to_piece(vocab, pv_vocab_eos(vocab), true, &elen) : "";
    char *bos_s = xstrndup(bos, blen), *eos_s = xstrndup(eos, elen);
    struct chat_template *tmpl;
    if (chat_template_new(tmpl_src, arch, bos_s, eos_s, &tmpl, &err))
        return die("template", &err);
    struct chat_token_table *table = chat_token_table_new(vocab);
    size_t n_vocab = pv_vocab_n_tokens(vocab);
    float *logits = xmalloc(n_vocab * sizeof *logits);
    /* random mode: pieces with a closing character get a head start, so that random
     * choices end strings and containers within a few tokens instead of thousands */
    float *bias = xcalloc(n_vocab, sizeof *bias);
    for (size_t i = 0; i < n_vocab; i++) {
        size_t len;
        const char *p = pv_token_to_piece(vocab, (int32_t)i, false, &len);
        for (size_t k = 0; p && k < len; k++)
            if (p[k] == '"' || p[k] == '}' || p[k] == ']' || p[k] == ',')
                bias[i] = 0.5f;
    }
    json_t *results = json_array(), *req;
    size_t ri;
    json_array_foreach(json_object_get(in, "requests"), ri, req) {
        struct chat_conv conv;
        bool openai = json_is_true(json_object_get(req, "openai"));
        if ((openai ? chat_conv_from_openai(req, &conv, &err) : chat_conv_from_anthropic(req, &conv, &err))) {
            json_array_append_new(results, json_pack("{s:s}", "error", err.msg));
            continue;
        }
        struct chat_prompt prompt;
        if (chat_render(tmpl, &conv, &prompt, &err))
            return die("render", &err);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (pv_tokenize_segments(vocab, prompt.segs, prompt.n_segs, 0, &ids, &n_ids, &err))
            return die("tokenize", &err);
        if (json_is_true(json_object_get(in, "prompt_only"))) {
            json_t *ja = json_array();
            for (size_t k = 0; k < n_ids; k++)
                json_array_append_new(ja, json_integer(ids[k]));
            json_array_append_new(results, json_pack("{s:s%,s:o,s:b}", "prompt", prompt.text.data,
                                                     prompt.text.len, "ids", ja, "starts_with_bos",
                                                     prompt.starts_with_bos));
            free(ids);
            chat_prompt_release(&prompt);
            chat_conv_release(&conv);
            continue;
        }
        struct chat_grammar *g = NULL;
        if (chat_grammar_for(&conv, &g, &err))
            return die("grammar", &err);
        struct chat_matcher *m = g ? chat_matcher_new(g, table) : NULL;
        struct chat_parser_params pp;
        chat_parser_params_for(tmpl, &conv, &prompt, &pp);
        struct out o = {PV_BUF_INIT, PV_BUF_INIT, json_array(), NULL, ""};
        struct chat_parser *parser = chat_parser_new(&pp, on_event, &o);
        struct pv_detok *dt = pv_detok_new(vocab, PV_DETOK_SKIP_SPECIAL);
        struct pv_buf raw = PV_BUF_INIT;
        if (ctx) {
            pv_context_truncate(ctx, 0, &err);
            if (pv_context_eval(ctx, ids, n_ids, false, &err))
                return die("eval", &err);
        }
        int n = 0;
        bool eog = false;
        double mask_ms = 0;
        for (; n < max_tokens; n++) {
            if (ctx)
                memcpy(logits, pv_context_logits(ctx, -1), n_vocab * sizeof *logits);
            else
                for (size_t i = 0; i < n_vocab; i++)
                    logits[i] = rnd() + bias[i];
            uint64_t t0 = clock_now_ns();
            if (m)
                chat_matcher_mask(m, logits, n_vocab);
            mask_ms += (double)(clock_now_ns() - t0) / 1e6;
            int32_t best = 0;
            for (size_t i = 1; i < n_vocab; i++)
                if (logits[i] > logits[best])
                    best = (int32_t)i;
            if (pv_token_is_eog(vocab, best)) {
                eog = true;
                break;
            }
            if (m)
                chat_matcher_accept(m, best);
            const char *piece;
            size_t plen;
            pv_detok_push(dt, best, &piece, &plen, &err);
            buf_append(&raw, piece, plen);
            chat_parser_feed(parser, piece, plen);
            if (chat_parser_stopped(parser))
                break;
            if (ctx && pv_context_eval(ctx, &best, 1, false, &err))
                return die("eval", &err);
        }
        const char *piece;
        size_t plen;
        pv_detok_flush(dt, &piece, &plen);
        buf_append(&raw, piece, plen);
        chat_parser_feed(parser, piece, plen);
        chat_parser_finish(parser, eog ? CHAT_STOP_END_TURN : CHAT_STOP_MAX_TOKENS, (int)n_ids, n);
        json_array_append_new(results, json_pack("{s:s%,s:s%,s:O,s:s,s:i,s:f,s:b}", "raw", raw.data, raw.len,
                                                 "text", o.text.data, o.text.len, "calls", o.calls,
                                                 "stop", o.stop, "n_tokens", n, "mask_ms", mask_ms,
                                                 "constrained", m != NULL));
        json_decref(o.calls);
        buf_release(&o.text);
        buf_release(&o.args);
        buf_release(&raw);
        pv_detok_free(dt);
        chat_parser_free(parser);
        chat_matcher_free(m);
        free(ids);
        chat_prompt_release(&prompt);
        chat_conv_release(&conv);
    }
    char *s = json_dumps(results, 0);
    puts(s);
    free(s);
    json_decref(results);
    free(logits);
    free(bias);
    chat_token_table_free(table);
    chat_template_free(tmpl);
    free(bos_s);
    free(eos_s);
    free(file_tmpl);
    free(file_arch);
    pv_context_free(ctx);
    pv_model_free(model);
    pv_vocab_free(own_vocab);
    json_decref(in);
    return 0;
}
