/*
 * cmd_run.c - `pensieve run`: continue a prompt as raw text on the CPU engine.
 *
 * Loads the model, evaluates the prompt (text through the tokenizer, BOS as the model's
 * flags say, no chat template; or --prompt-ids), then samples token by token, streaming
 * the generated text (or ids with --print-ids) to stdout. One summary line goes to
 * stderr: prompt tokens, prefill and decode speed, time to first token. --all-logits
 * writes the f32 logits of every prompt position, for the differential tests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static struct cli_opt run_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL", "model file or name in the model directory", NULL},
    {"prompt", 'p', CLI_STRING, NULL, "TEXT", "prompt to continue (raw text, no chat template)", NULL},
    {"prompt-ids", 0, CLI_STRING, NULL, "IDS", "prompt as token ids separated by spaces or commas", NULL},
    {"max-tokens", 'n', CLI_INT, NULL, "N", "tokens to generate at most", "128", 0, 1 << 24},
    {"temperature", 0, CLI_FLOAT, NULL, "T", "sampling temperature; 0 is greedy", "0.8"},
    {"top-k", 0, CLI_INT, NULL, "K", "keep the K most likely tokens; 0 is off", "40", 0, 1 << 24},
    {"top-p", 0, CLI_FLOAT, NULL, "P", "keep the smallest set with probability P; 1 is off", "0.95"},
    {"min-p", 0, CLI_FLOAT, NULL, "P", "drop tokens below P times the best one's probability", "0.05"},
    {"repeat-penalty", 0, CLI_FLOAT, NULL, "R", "penalty on recently seen tokens; 1 is off", "1.0"},
    {"presence-penalty", 0, CLI_FLOAT, NULL, "X", "subtracted once from seen tokens", "0"},
    {"frequency-penalty", 0, CLI_FLOAT, NULL, "X", "subtracted per occurrence", "0"},
    {"repeat-last-n", 0, CLI_INT, NULL, "N", "tokens the penalties look back on", "64", 0, 1 << 24},
    {"seed", 's', CLI_INT, NULL, "N", "random seed; -1 picks one", "-1", -1, INT64_MAX},
    {"ctx-size", 'c', CLI_INT, NULL, "N", "context size in tokens; 0 = min(4096, training)", "0", 0, 1 << 24},
    {"threads", 't', CLI_INT, "PENSIEVE_THREADS", "N", "worker threads; 0 = all cores", "0", 0, 1024},
    {"device", 0, CLI_STRING, "PENSIEVE_DEVICE", "DEV",
     "cpu, cuda or auto (the GPU when this build has CUDA and one is present)", "auto"},
    {"batch-size", 'b', CLI_INT, NULL, "N", "prompt tokens per forward step", "512", 1, 1 << 16},
    {"kv-f32", 0, CLI_FLAG, NULL, NULL, "keep the KV cache in f32 instead of f16", NULL},
    {"ignore-eos", 0, CLI_FLAG, NULL, NULL, "do not stop at end-of-generation tokens", NULL},
    {"print-ids", 0, CLI_FLAG, NULL, NULL, "print generated token ids instead of text", NULL},
    {"all-logits", 0, CLI_STRING, NULL, "FILE", "write f32 logits of every prompt position to FILE", NULL},
    {0},
};

static int run_main(int argc, char **argv);

const struct cli_command cli_cmd_run = {
    "run",
    "continue a prompt as raw text",
    "pensieve run -m MODEL -p PROMPT [options]",
    "Streams only the generated text to stdout and one summary line to stderr. With\n"
    "--temperature 0 decoding is greedy; with --seed the same seed gives the same output.",
    run_main,
};

/* Parse "1 2, 3" into ids (allocated, caller frees). False on anything else. */
static bool parse_ids(const char *s, int32_t **out, size_t *n_out)
{
    size_t n = 0, cap = 16;
    int32_t *ids = xmalloc(cap * sizeof(*ids));
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            free(ids);
            return false;
        }
        if (n == cap)
            ids = xrealloc(ids, (cap *= 2) * sizeof(*ids));
        ids[n++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n_out = n;
    return n > 0;
}

static double ms_since(uint64_t t0)
{
    return (double)(clock_now_ns() - t0) / 1e6;
}

static int run_main(int argc, char **argv)
{
    char path[4096];
    struct pv_err err = {0};
    struct pv_model *model = NULL;
    struct pv_context *ctx = NULL;
    struct pv_sampler *smp = NULL;
    struct pv_detok *detok = NULL;
    const struct pv_vocab *vocab;
    struct pv_context_params cp = pv_context_default_params();
    struct pv_sampler_params sp = pv_sampler_default_params();
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    uint64_t t_start, t_load, t_prefill0;
    double load_ms, prefill_ms, decode_ms = 0, ttft_ms;
    long n_gen = 0, max_tokens;
    bool print_ids, ignore_eos;
    const char *logits_file;

    cli_parse(&cli_cmd_run, run_opts, argc, argv, NULL, 0, NULL);
    if (!cli_get(run_opts, "model")->set)
        cli_die("run", 2, "no model: give -m MODEL");
    if (!cli_resolve_model(cli_get(run_opts, "model")->str, path, sizeof(path)))
        cli_die_model_not_found("run", cli_get(run_opts, "model")->str);
    max_tokens = cli_get(run_opts, "max-tokens")->i;
    print_ids = cli_get(run_opts, "print-ids")->i;
    ignore_eos = cli_get(run_opts, "ignore-eos")->i;
    logits_file = cli_get(run_opts, "all-logits")->set ? cli_get(run_opts, "all-logits")->str : NULL;

    if (cli_get(run_opts, "prompt-ids")->set) {
        if (!parse_ids(cli_get(run_opts, "prompt-ids")->str, &prompt, &n_prompt))
            cli_die("run", 2, "--prompt-ids: expected token ids separated by spaces or commas");
    } else if (!cli_get(run_opts, "prompt")->set) {
        cli_die("run", 2, "no prompt: give -p PROMPT or --prompt-ids IDS");
    }

    sp.temperature = (float)cli_get(run_opts, "temperature")->f;
    sp.top_k = (int32_t)cli_get(run_opts, "top-k")->i;
    sp.top_p = (float)cli_get(run_opts, "top-p")->f;
    sp.min_p = (float)cli_get(run_opts, "min-p")->f;
    sp.repeat_penalty = (float)cli_get(run_opts, "repeat-penalty")->f;
    sp.presence_penalty = (float)cli_get(run_opts, "presence-penalty")->f;
    sp.frequency_penalty = (float)cli_get(run_opts, "frequency-penalty")->f;
    sp.penalty_last_n = (int32_t)cli_get(run_opts, "repeat-last-n")->i;
    sp.seed = cli_get(run_opts, "seed")->i < 0 ? PV_SEED_RANDOM : (uint64_t)cli_get(run_opts, "seed")->i;
    cp.n_ctx = (uint32_t)cli_get(run_opts, "ctx-size")->i;
    cp.n_threads = (int)cli_get(run_opts, "threads")->i;
    cp.n_batch = (uint32_t)cli_get(run_opts, "batch-size")->i;
    cp.kv_type = cli_get(run_opts, "kv-f32")->i ? PV_KV_F32 : PV_KV_F16;
    if (!pv_device_parse(cli_get(run_opts, "device")->str, &cp.device))
        cli_die("run", 2, "--device: expected cpu, cuda or auto, got '%s'",
                cli_get(run_opts, "device")->str);

    t_start = clock_now_ns();
    if (pv_model_load(path, NULL, &model, &err) != PV_OK)
        cli_die("run", 1, "%s", err.msg);
    load_ms = ms_since(t_start);
    vocab = pv_model_vocab(model);
    if (!prompt) {
        const char *text = cli_get(run_opts, "prompt")->str;
        size_t cap = strlen(text) + 16;
        prompt = xmalloc(cap * sizeof(*prompt));
        if (!vocab)
            cli_die("run", 1, "model has no vocabulary to tokenize the prompt: use --prompt-ids");
        enum pv_status st = pv_tokenize(vocab, text, strlen(text), PV_TOKENIZE_ADD_SPECIAL, prompt,
                                        cap, &n_prompt, &err);
        if (st == PV_ERR_TOO_LARGE && n_prompt > cap) {
            prompt = xrealloc(prompt, (cap = n_prompt) * sizeof(*prompt));
            st = pv_tokenize(vocab, text, strlen(text), PV_TOKENIZE_ADD_SPECIAL, prompt, cap,
                             &n_prompt, &err);
        }
        if (st != PV_OK)
            cli_die("run", 1, "%s", err.msg);
        if (n_prompt == 0)
            cli_die("run", 2, "the prompt gives no tokens");
    }
    if (!print_ids && !(detok = vocab ? pv_detok_new(vocab, PV_DETOK_SKIP_SPECIAL) : NULL))
        cli_die("run", 1, "model has no vocabulary to print text: use --print-ids");
    if (pv_context_new(model, &cp, &ctx, &err) != PV_OK)
        cli_die("run", 1, "%s", err.msg);
    if (pv_sampler_new(&sp, pv_context_n_vocab(ctx), &smp, &err) != PV_OK)
        cli_die("run", 2, "%s", err.msg);
    t_load = clock_now_ns();

    /* prefill */
    t_prefill0 = clock_now_ns();
    if (pv_context_eval(ctx, prompt, n_prompt, logits_file != NULL, &err) != PV_OK)
        cli_die("run", 1, "%s", err.msg);
    prefill_ms = ms_since(t_prefill0);
    if (logits_file) {
        FILE *f = fopen(logits_file, "wb");
        if (!f)
            cli_die("run", 1, "cannot write '%s': %s", logits_file, strerror(errno));
        for (size_t i = 0; i < n_prompt; i++)
            if (fwrite(pv_context_logits(ctx, (int64_t)i), sizeof(float), pv_context_n_vocab(ctx),
                       f) != pv_context_n_vocab(ctx))
                cli_die("run", 1, "cannot write '%s': %s", logits_file, strerror(errno));
        if (fclose(f) != 0)
            cli_die("run", 1, "cannot write '%s': %s", logits_file, strerror(errno));
    }
    for (size_t i = 0; i < n_prompt; i++)
        pv_sampler_accept(smp, prompt[i]);

    /* decode: sample from the last logits, feed the token back */
    ttft_ms = 0;
    {
        uint64_t t_dec0 = clock_now_ns();
        while (n_gen < max_tokens) {
            int32_t tok = pv_sampler_sample(smp, pv_context_logits(ctx, -1));
            pv_sampler_accept(smp, tok);
            n_gen++;
            if (n_gen == 1)
                ttft_ms = ms_since(t_load);
            if (!ignore_eos && pv_context_is_eog(ctx, tok))
                break;
            if (print_ids) {
                printf("%s%d", n_gen > 1 ? " " : "", tok);
            } else {
                const char *piece;
                size_t len;
                if (pv_detok_push(detok, tok, &piece, &len, &err) != PV_OK)
                    cli_die("run", 1, "%s", err.msg);
                fwrite(piece, 1, len, stdout);
            }
            fflush(stdout);
            if (n_gen == max_tokens || pv_context_n_past(ctx) >= pv_context_n_ctx(ctx))
                break;
            if (pv_context_eval(ctx, &tok, 1, false, &err) != PV_OK)
                cli_die("run", 1, "%s", err.msg);
        }
        decode_ms = ms_since(t_dec0);
    }
    if (print_ids) {
        printf("\n");
    } else {
        const char *piece;
        size_t len;
        pv_detok_flush(detok, &piece, &len);
        fwrite(piece, 1, len, stdout);
    }
    fflush(stdout);

    fprintf(stderr,
            "prompt %zu tokens, prefill %.1f tok/s, generated %ld tokens, decode %.1f tok/s, "
            "time to first token %.0f ms, load %.0f ms, %d threads, kernels %s, device %s\n",
            n_prompt, n_prompt / (prefill_ms / 1e3), n_gen,
            n_gen > 1 ? (n_gen - 1) / (decode_ms / 1e3) : 0.0, ttft_ms, load_ms,
            pv_context_n_threads(ctx), pv_cpu_kernels(), pv_context_device(ctx));

    pv_detok_free(detok);
    pv_sampler_free(smp);
    pv_context_free(ctx);
    pv_model_free(model);
    free(prompt);
    return 0;
}
