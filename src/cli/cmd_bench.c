/*
 * cmd_bench.c - `pensieve bench`: prefill and decode speed of the CPU engine.
 *
 * Loads the model once, then R times: clears the context, evaluates a P-token prompt in
 * batches (prefill), and decodes N tokens one at a time, greedy through the sampler (decode).
 * With --parallel S the prompt is forked into S sequences that decode together, one
 * token each per step (the aggregate rate). --device picks the CPU or the GPU.
 * Prints one line of JSON with the medians and every repetition's numbers, so bench/compare.py can put
 * them next to llama.cpp's on the same file, prompt tokens and threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"

static struct cli_opt bench_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL", "model file or name in the model directory", NULL},
    {"prompt-tokens", 'p', CLI_INT, NULL, "P", "prompt length in tokens", "128", 1, 1 << 20},
    {"gen-tokens", 'n', CLI_INT, NULL, "N", "tokens to decode", "64", 0, 1 << 20},
    {"repetitions", 'r', CLI_INT, NULL, "R", "runs; medians are reported", "3", 1, 1000},
    {"prompt-ids", 0, CLI_STRING, NULL, "IDS", "prompt token ids (else BOS and ids from a fixed sequence)", NULL},
    {"threads", 't', CLI_INT, "PENSIEVE_THREADS", "N", "worker threads; 0 = all cores", "0", 0, 1024},
    {"device", 0, CLI_STRING, "PENSIEVE_DEVICE", "DEV",
     "cpu, cuda or auto (the GPU when this build has CUDA and one is present)", "auto"},
    {"batch-size", 'b', CLI_INT, NULL, "N", "prompt tokens per forward step", "512", 1, 1 << 16},
    {"parallel", 0, CLI_INT, NULL, "S", "decode S sequences at once (forks of the prompt); "
     "decode tok/s is then their sum", "1", 1, 1024},
    {0},
};

static int bench_main(int argc, char **argv);

const struct cli_command cli_cmd_bench = {
    "bench",
    "measure prefill and decode speed",
    "pensieve bench -m MODEL [options]",
    "Prints one JSON line: medians of prefill and decode tokens/s, time to first token,\n"
    "load time and peak RSS. `make bench` compares them with llama.cpp.",
    bench_main,
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double *s = xmalloc((size_t)n * sizeof(*s));
    memcpy(s, v, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

static void print_list(const char *name, const double *v, int n)
{
    printf(", \"%s\": [", name);
    for (int i = 0; i < n; i++)
        printf("%s%.2f", i ? ", " : "", v[i]);
    printf("]");
}

/* s as a JSON string literal */
static void print_json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int bench_main(int argc, char **argv)
{
    char path[4096];
    struct pv_err err = {0};
    struct pv_model *model = NULL;
    struct pv_context *ctx = NULL;
    struct pv_sampler *greedy = NULL;
    struct pv_sampler_params sp = pv_sampler_default_params();
    struct pv_context_params cp = pv_context_default_params();
    int32_t *prompt;
    size_t n_prompt;
    long n_gen, reps;
    int n_par;
    struct pv_batch batch;
    double load_ms, context_ms, *prefill, *decode, *ttft;
    uint64_t t0;
    struct rusage ru;

    cli_parse(&cli_cmd_bench, bench_opts, argc, argv, NULL, 0, NULL);
    if (!cli_get(bench_opts, "model")->set)
        cli_die("bench", 2, "no model: give -m MODEL");
    if (!cli_resolve_model(cli_get(bench_opts, "model")->str, path, sizeof(path)))
        cli_die_model_not_found("bench", cli_get(bench_opts, "model")->str);
    n_gen = cli_get(bench_opts, "gen-tokens")->i;
    reps = cli_get(bench_opts, "repetitions")->i;

    t0 = clock_now_ns();
    if (pv_model_load(path, NULL, &model, &err) != PV_OK)
        cli_die("bench", 1, "%s", err.msg);
    load_ms = (double)(clock_now_ns() - t0) / 1e6;

    if (cli_get(bench_opts, "prompt-ids")->set) {
        const char *s = cli_get(bench_opts, "prompt-ids")->str;
        size_t cap = strlen(s) / 2 + 1;
        char *end;
        prompt = xmalloc(cap * sizeof(*prompt));
        n_prompt = 0;
        while (*s) {
            while (*s == ' ' || *s == ',')
                s++;
            if (!*s)
                break;
            errno = 0;
            long v = strtol(s, &end, 10);
            if (end == s || errno || v < 0 || v > INT32_MAX || n_prompt == cap)
                cli_die("bench", 2, "--prompt-ids: expected token ids separated by spaces");
            prompt[n_prompt++] = (int32_t)v;
            s = end;
        }
        if (n_prompt == 0)
            cli_die("bench", 2, "--prompt-ids: no ids");
    } else {
        /* BOS (when the model has one), then ids of a fixed sequence over the vocabulary */
        const struct pv_vocab *vocab = pv_model_vocab(model);
        uint32_t n_vocab = pv_model_n_vocab(model);
        uint64_t x = 1;
        n_prompt = (size_t)cli_get(bench_opts, "prompt-tokens")->i;
        prompt = xmalloc(n_prompt * sizeof(*prompt));
        for (size_t i = 0; i < n_prompt; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            prompt[i] = (int32_t)((x >> 33) % (n_vocab > 1000 ? 1000 + (n_vocab - 1000) / 8 : n_vocab));
        }
        if (vocab && pv_vocab_bos(vocab) >= 0)
            prompt[0] = pv_vocab_bos(vocab);
    }

    n_par = (int)cli_get(bench_opts, "parallel")->i;
    cp.n_ctx = (uint32_t)(n_prompt + (size_t)n_gen + 1);
    cp.n_threads = (int)cli_get(bench_opts, "threads")->i;
    cp.n_batch = (uint32_t)cli_get(bench_opts, "batch-size")->i;
    if (cp.n_batch < (uint32_t)n_par)
        cp.n_batch = (uint32_t)n_par;
    cp.n_seq_max = (uint32_t)n_par;
    /* the prompt's blocks are shared by the forks: each adds its decoded tokens */
    cp.kv_size = (uint32_t)(n_prompt + (size_t)n_par * ((size_t)n_gen + 64) + 64);
    if (!pv_device_parse(cli_get(bench_opts, "device")->str, &cp.device))
        cli_die("bench", 2, "--device: expected cpu, cuda or auto, got '%s'",
                cli_get(bench_opts, "device")->str);
    t0 = clock_now_ns();
    if (pv_context_new(model, &cp, &ctx, &err) != PV_OK)
        cli_die("bench", 1, "%s", err.msg);
    context_ms = (double)(clock_now_ns() - t0) / 1e6; /* on a GPU: the weights' upload */
    sp.temperature = 0.0f;
    if (pv_sampler_new(&sp, pv_context_n_vocab(ctx), &greedy, &err) != PV_OK)
        cli_die("bench", 1, "%s", err.msg);

    prefill = xcalloc((size_t)reps, sizeof(double));
    decode = xcalloc((size_t)reps, sizeof(double));
    ttft = xcalloc((size_t)reps, sizeof(double));
    if (pv_batch_init(&batch, (size_t)n_par, &err) != PV_OK)
        cli_die("bench", 1, "%s", err.msg);
    for (long r = 0; r < reps; r++) {
        uint64_t t_start, t_prefill, t_end;
        int32_t tok;
        for (int s = 0; s < n_par; s++)
            pv_context_seq_drop(ctx, s);
        t_start = clock_now_ns();
        if (pv_context_eval(ctx, prompt, n_prompt, false, &err) != PV_OK)
            cli_die("bench", 1, "%s", err.msg);
        tok = pv_sampler_sample(greedy, pv_context_logits(ctx, -1));
        t_prefill = clock_now_ns();
        if (n_par == 1) {
            for (long i = 0; i < n_gen; i++) {
                if (pv_context_eval(ctx, &tok, 1, false, &err) != PV_OK)
                    cli_die("bench", 1, "%s", err.msg);
                tok = pv_sampler_sample(greedy, pv_context_logits(ctx, -1));
            }
        } else {
            for (int s = 1; s < n_par; s++)
                if (pv_context_seq_fork(ctx, 0, s, &err) != PV_OK)
                    cli_die("bench", 1, "%s", err.msg);
            t_prefill = clock_now_ns();
            for (long i = 0; i < n_gen; i++) {
                pv_batch_clear(&batch);
                for (int s = 0; s < n_par; s++)
                    pv_batch_add(&batch, tok, (int32_t)(n_prompt + (size_t)i), s, true);
                if (pv_context_decode(ctx, &batch, &err) != PV_OK)
                    cli_die("bench", 1, "%s", err.msg);
                tok = pv_sampler_sample(greedy, pv_context_logits(ctx, 0));
            }
        }
        t_end = clock_now_ns();
        ttft[r] = (double)(t_prefill - t_start) / 1e6;
        prefill[r] = (double)n_prompt / ((double)(t_prefill - t_start) / 1e9);
        decode[r] = n_gen ? (double)n_gen * n_par / ((double)(t_end - t_prefill) / 1e9) : 0.0;
    }
    pv_batch_release(&batch);
    getrusage(RUSAGE_SELF, &ru);

    printf("{\"engine\": \"pensieve\", \"model\": ");
    print_json_str(pv_model_name(model));
    printf(", \"device\": ");
    print_json_str(pv_context_device(ctx));
    printf(", \"parallel\": %d", n_par);
    printf(", \"threads\": %d, \"prompt_tokens\": %zu, "
           "\"gen_tokens\": %ld, \"repetitions\": %ld, \"load_ms\": %.1f, \"context_ms\": %.1f, "
           "\"prefill_tok_s\": %.2f, "
           "\"decode_tok_s\": %.2f, \"ttft_ms\": %.1f, \"peak_rss_mib\": %.1f",
           pv_context_n_threads(ctx), n_prompt, n_gen, reps, load_ms, context_ms,
           median(prefill, (int)reps), median(decode, (int)reps), median(ttft, (int)reps),
           (double)ru.ru_maxrss / 1024.0);
    print_list("prefill_tok_s_all", prefill, (int)reps);
    print_list("decode_tok_s_all", decode, (int)reps);
    printf("}\n");

    free(prefill);
    free(decode);
    free(ttft);
    free(prompt);
    pv_sampler_free(greedy);
    pv_context_free(ctx);
    pv_model_free(model);
    return 0;
}
