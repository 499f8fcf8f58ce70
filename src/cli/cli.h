/*
 * cli.h - the `pensieve` command line: one command per file, a shared option parser.
 *
 * Each command declares a table of options; the parser fills their values from argv, or
 * from the environment variable an option names, and prints --help from the same table
 * so help can never drift from behaviour. Only this module may call exit().
 */
#ifndef PV_CLI_H
#define PV_CLI_H

#include <stdbool.h>

#include "util/util.h"

enum cli_opt_kind { CLI_FLAG, CLI_STRING, CLI_INT, CLI_FLOAT };

struct cli_opt {
    const char *long_name;  /* "ctx-size" for --ctx-size */
    char short_name;        /* 'c' for -c, or 0 */
    enum cli_opt_kind kind;
    const char *env;        /* environment variable read when the option is absent, or NULL */
    const char *metavar;    /* "N" in "--ctx-size N" */
    const char *help;       /* one line; the default is appended when def is set */
    const char *def;        /* default value as text, or NULL */
    long min, max;          /* accepted range for CLI_INT */
    /* filled by cli_parse */
    bool set;               /* given on the command line or in the environment */
    const char *str;        /* value text (points into argv, environ or def) */
    long i;
    double f;
};

struct cli_command {
    const char *name;
    const char *summary;    /* one line for `pensieve --help` */
    const char *usage;      /* "pensieve run -m MODEL -p PROMPT [options]" */
    const char *details;    /* paragraph after the usage line, or NULL */
    int (*main)(int argc, char **argv); /* argv[0] is the command name */
};

/*
 * Parse argv[1..argc) against `opts` (terminated by an entry with long_name NULL).
 * Positional arguments are collected into pos[] (at most max_pos; *n_pos gets the count).
 * "--help"/"-h" prints help for `cmd` and exits 0; a bad option prints an error and
 * exits 2. Options not given take their environment variable, then their default.
 */
void cli_parse(const struct cli_command *cmd, struct cli_opt *opts, int argc, char **argv,
               char **pos, int max_pos, int *n_pos);
/* The option named `long_name`; a bug if there is none. */
struct cli_opt *cli_get(struct cli_opt *opts, const char *long_name);
void cli_print_help(const struct cli_command *cmd, const struct cli_opt *opts);
/* Print "pensieve CMD: MESSAGE" to stderr and exit with `code`. */
_Noreturn void cli_die(const char *cmd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Resolve a model argument: a path, or a name inside the model directory (with or
 * without .gguf). Writes the path into out. False when no such file exists. */
bool cli_resolve_model(const char *arg, char *out, size_t cap);
/*
 * Exit with code 1 after saying why model `arg` was not found: the model directory, the
 * installed names, the closest one ("did you mean"), and `pensieve pull` when `arg` is in
 * the catalogue.
 */
_Noreturn void cli_die_model_not_found(const char *cmd, const char *arg);
/* The .gguf file names in `dir`, sorted; the caller frees each and the array. */
size_t cli_list_models(const char *dir, char ***out);
/* Exit with a message saying what to do unless host:port can be bound (preflight.c). */
void cli_check_port(const char *host, int port);
/*
 * Load the model at `path` once to check it before serving: exit when n_slots contexts of
 * n_ctx tokens (0: the server's default) do not fit in memory, saying what would; warn
 * when n_ctx passes the training context or the model has no chat template.
 */
void cli_check_model(const char *path, int n_ctx, int n_slots);
/* The catalogue names on stderr, with the one closest to `name`. */
void cli_print_catalogue_hint(const char *cmd, const char *name);

extern const struct cli_command cli_cmd_serve, cli_cmd_run, cli_cmd_chat, cli_cmd_bench,
    cli_cmd_info, cli_cmd_tokenize, cli_cmd_detokenize, cli_cmd_models, cli_cmd_stop,
    cli_cmd_pull, cli_cmd_rm, cli_cmd_claude, cli_cmd_ps, cli_cmd_service;

#endif /* PV_CLI_H */
