/*
 * cmd_info.c - `pensieve info MODEL`: what a model file is and what it needs to run.
 *
 * Loads the model the way serving does (full GGUF validation and tensor binding), then
 * prints architecture, hyper-parameters, tokenizer, chat template, the mix of tensor
 * types and the memory it needs at a context size. A file that does not load prints the
 * loader's message and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/mlx.h"
#include "model/model.h"

static struct cli_opt info_opts[] = {
    {"ctx-size", 'c', CLI_INT, NULL, "N", "context size the memory estimate is for", "4096", 1,
     1L << 24},
    {0},
};

static int info_main(int argc, char **argv);

const struct cli_command cli_cmd_info = {
    "info",
    "describe a model file",
    "pensieve info MODEL [options]",
    "MODEL is a path or a name in the model directory. Prints the architecture,\n"
    "hyper-parameters, tokenizer, tensor types and the memory a context of --ctx-size\n"
    "positions needs (weights + F16 KV cache + compute scratch).",
    info_main,
};

static void print_gguf_str(const struct gguf_file *f, const char *key, const char *none)
{
    struct gguf_str s;
    if (gguf_get_str(f, key, &s))
        printf("%.*s", (int)PV_MIN(s.n, 200), s.p);
    else
        printf("%s", none);
}

static void print_type_mix(const struct pv_model *m)
{
    int64_t counts[PV_TYPE_COUNT] = {0};
    bool first = true;
    int64_t n = m->mlx ? mlx_n_tensors(m->mlx) : gguf_n_tensors(m->gguf);
    for (int64_t i = 0; i < n; i++)
        counts[(m->mlx ? mlx_tensor(m->mlx, i) : gguf_tensor(m->gguf, i))->type]++;
    printf("%-16s %lld (", "tensors:", (long long)n);
    for (int t = 0; t < PV_TYPE_COUNT; t++) {
        if (!counts[t])
            continue;
        printf("%s%s %lld", first ? "" : ", ", pv_type_get((uint32_t)t)->name,
               (long long)counts[t]);
        first = false;
    }
    printf(")\n");
}

static int info_main(int argc, char **argv)
{
    char *pos[1];
    int n_pos = 0;
    char path[8192], quant[32], b1[32], b2[32], b3[32];
    struct pv_model *m;
    struct pv_err err = {0};

    cli_parse(&cli_cmd_info, info_opts, argc, argv, pos, 1, &n_pos);
    if (n_pos != 1)
        cli_die("info", 2, "expected one MODEL argument (see pensieve info --help)");
    if (!cli_resolve_model(pos[0], path, sizeof path))
        cli_die_model_not_found("info", pos[0]);
    uint32_t n_ctx = (uint32_t)cli_get(info_opts, "ctx-size")->i;
    if (pv_model_load(path, NULL, &m, &err) != PV_OK)
        cli_die("info", 1, "%s", err.msg);

    const struct model_hparams *hp = &m->hp;
    const struct gguf_file *f = m->gguf;
    uint32_t n_swa_layers = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        n_swa_layers += m->layers[il].is_swa;

    format_bytes(pv_model_file_bytes(m), b1, sizeof b1);
    printf("%-16s %s\n", "file:", path);
    printf("%-16s %s (%llu bytes)\n", "file size:", b1,
           (unsigned long long)pv_model_file_bytes(m));
    if (m->mlx)
        printf("%-16s MLX directory (safetensors)\n", "format:");
    else
        printf("%-16s %u\n", "gguf version:", gguf_version(f));
    printf("%-16s %s\n", "architecture:", pv_model_arch(m));
    printf("%-16s %s\n", "name:", pv_model_name(m));
    if (m->mlx)
        snprintf(quant, sizeof quant, "%s", m->mlx_quant);
    else
        model_quant_name(f, quant, sizeof quant);
    printf("%-16s %s\n", "quantization:", quant);
    printf("%-16s %u\n", "context length:", hp->n_ctx_train);
    printf("%-16s %u\n", "vocabulary:", hp->n_vocab);
    printf("%-16s %u\n", "embedding:", hp->n_embd);
    printf("%-16s %u\n", "layers:", hp->n_layer);
    printf("%-16s %u\n", "heads:", hp->n_head);
    printf("%-16s %u\n", "kv heads:", hp->n_head_kv);
    printf("%-16s %u / %u\n", "head size k/v:", hp->head_dim_k, hp->head_dim_v);
    printf("%-16s %u\n", "feed-forward:", hp->n_ff);
    if (hp->n_swa)
        printf("%-16s %u tokens on %u of %u layers\n", "sliding window:", hp->n_swa,
               n_swa_layers, hp->n_layer);
    else
        printf("%-16s none\n", "sliding window:");
    printf("%-16s %s, %u dims, base %g", "rope:", hp->rope_neox ? "neox" : "norm", hp->n_rot,
           (double)hp->rope_base);
    if (n_swa_layers)
        printf(" (sliding layers %g)", (double)hp->rope_base_swa);
    if (hp->rope_freq_scale != 1.0f)
        printf(", freq scale %g", (double)hp->rope_freq_scale);
    if (m->rope_freqs)
        printf(", frequency factors");
    printf("\n");
    printf("%-16s %g\n", "rms epsilon:", (double)hp->rms_eps);
    printf("%-16s %s\n", "output:", m->output == m->tok_embd ? "tied to token_embd" : "output.weight");
    printf("%-16s ", "tokenizer:");
    print_gguf_str(f, "tokenizer.ggml.model", "none");
    printf(" (pre: ");
    print_gguf_str(f, "tokenizer.ggml.pre", "none");
    printf(")\n");
    if (pv_model_chat_template(m))
        printf("%-16s present (%zu bytes)\n", "chat template:", strlen(pv_model_chat_template(m)));
    else
        printf("%-16s absent: a base model that continues text and cannot chat\n",
               "chat template:");
    print_type_mix(m);
    /* What a context of n_ctx positions allocates, then the least a windowed cache needs. */
    struct pv_context_params cp = pv_context_default_params();
    struct pv_memory_estimate est;
    cp.n_ctx = n_ctx;
    cp.n_threads = 1;
    if (pv_context_estimate(m, &cp, &est, &err) != PV_OK) {
        pv_model_free(m);
        cli_die("info", 1, "%s", err.msg);
    }
    char b4[32];
    format_bytes(est.total_bytes, b1, sizeof b1);
    format_bytes(est.weights_bytes, b2, sizeof b2);
    format_bytes(est.kv_bytes, b3, sizeof b3);
    format_bytes(est.compute_bytes, b4, sizeof b4);
    printf("%-16s %s at context %u (weights %s + f16 kv cache %s + compute %s)\n", "memory:", b1,
           n_ctx, b2, b3, b4);
    printf("%-16s %llu\n", "memory bytes:", (unsigned long long)est.total_bytes);
    /* The least any cache needs: sliding layers keeping only their window. */
    printf("%-16s %llu%s\n", "weights + kv:",
           (unsigned long long)pv_model_memory_bytes(m, n_ctx, 2.0),
           n_swa_layers ? " (sliding layers holding only their window)" : "");
    pv_model_free(m);
    return 0;
}
