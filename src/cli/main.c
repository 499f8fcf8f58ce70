/*
 * main.c - `pensieve <command> [options]`: dispatch to the command's file.
 *
 * The table below is the list of commands, in the order `pensieve --help` shows them.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct cli_command *const commands[] = {
    &cli_cmd_serve, &cli_cmd_run,        &cli_cmd_chat,   &cli_cmd_bench, &cli_cmd_info,
    &cli_cmd_tokenize, &cli_cmd_detokenize, &cli_cmd_models, &cli_cmd_pull, &cli_cmd_rm,
    &cli_cmd_ps, &cli_cmd_claude, &cli_cmd_service, &cli_cmd_stop,
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: pensieve <command> [options]\n\n"
            "Pensieve %s - a local LLM inference server: GGUF models on the CPU or an NVIDIA\n"
            "GPU, behind the Anthropic Messages and OpenAI Chat Completions APIs.\n\n"
            "commands:\n",
            PV_VERSION);
    for (size_t i = 0; i < PV_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out, "\n`pensieve <command> --help` describes each command's options.\n"
                 "  %-12s %s\n  %-12s %s\n",
            "--version", "print the version and exit", "--help", "print this help and exit");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("pensieve %s\nkernels %s (this CPU runs: %s)\nfast kernels %s (PENSIEVE_KERNELS=fast)\n",
               pv_version(), pv_cpu_kernels(), pv_cpu_kernels_available(), pv_cpu_kernels_fast());
        return 0;
    }
    for (size_t i = 0; i < PV_ARRAY_LEN(commands); i++)
        if (strcmp(argv[1], commands[i]->name) == 0)
            return commands[i]->main(argc - 1, argv + 1);
    const char *names[PV_ARRAY_LEN(commands)];
    for (size_t i = 0; i < PV_ARRAY_LEN(commands); i++)
        names[i] = commands[i]->name;
    const char *near = suggest_closest(argv[1], names, PV_ARRAY_LEN(commands));
    if (near)
        fprintf(stderr, "pensieve: unknown command '%s'; did you mean '%s'? (see pensieve --help)\n",
                argv[1], near);
    else
        fprintf(stderr, "pensieve: unknown command '%s' (see pensieve --help)\n", argv[1]);
    return 2;
}
