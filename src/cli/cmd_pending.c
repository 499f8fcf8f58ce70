/*
 * cmd_pending.c - commands whose module has not landed yet.
 *
 * Each says plainly that it is not available in this build rather than pretending; a
 * command moves to its own cmd_<name>.c when its module lands.
 */
#include <stdio.h>

#include "cli/cli.h"

static struct cli_opt no_opts[] = {{0}};

#define PENDING(cname, summary_text, usage_text, what)                                     \
    static int cname##_main(int argc, char **argv);                                        \
    const struct cli_command cli_cmd_##cname = {#cname, summary_text, usage_text,          \
                                                "Not available yet: " what ".",            \
                                                cname##_main};                             \
    static int cname##_main(int argc, char **argv)                                         \
    {                                                                                      \
        cli_parse(&cli_cmd_##cname, no_opts, argc, argv, NULL, 0, NULL);                   \
        cli_die(#cname, 1, "not available in this build yet: %s", what);                   \
    }

PENDING(chat, "chat with a model in the terminal", "pensieve chat -m MODEL [options]",
        "the conversation layer has not landed")
