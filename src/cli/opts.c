/*
 * opts.c - the option parser and help printer shared by every command.
 *
 * Accepts "--name value", "--name=value", "-x value" and flags; values are checked
 * strictly (ranges for integers, finite numbers for floats). The environment fills
 * options that were not given, so `PENSIEVE_PORT=9000 pensieve serve` works like
 * `--port 9000`.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

void cli_die(const char *cmd, int code, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "pensieve%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

struct cli_opt *cli_get(struct cli_opt *opts, const char *long_name)
{
    for (struct cli_opt *o = opts; o->long_name; o++)
        if (strcmp(o->long_name, long_name) == 0)
            return o;
    PV_BUG("no option --%s", long_name);
}

void cli_print_help(const struct cli_command *cmd, const struct cli_opt *opts)
{
    printf("usage: %s\n\n%s\n", cmd->usage, cmd->summary);
    if (cmd->details)
        printf("\n%s\n", cmd->details);
    printf("\noptions:\n");
    for (const struct cli_opt *o = opts; o && o->long_name; o++) {
        char left[64];
        snprintf(left, sizeof(left), "%s%c%s--%s%s%s", o->short_name ? "-" : "",
                 o->short_name ? o->short_name : ' ', o->short_name ? ", " : "  ", o->long_name,
                 o->metavar ? " " : "", o->metavar ? o->metavar : "");
        printf("  %-28s %s", left + (o->short_name ? 0 : 1), o->help);
        if (o->def)
            printf(" (default: %s)", o->def);
        if (o->env)
            printf(" [env %s]", o->env);
        printf("\n");
    }
    printf("  %-28s %s\n", "-h, --help", "show this help");
}

static void set_value(const struct cli_command *cmd, struct cli_opt *o, const char *v,
                      const char *from)
{
    o->str = v;
    if (o->kind == CLI_INT) {
        if (!parse_long(v, o->min, o->max, &o->i))
            cli_die(cmd->name, 2, "%s --%s: expected an integer in [%ld, %ld], got '%s'", from,
                    o->long_name, o->min, o->max, v);
    } else if (o->kind == CLI_FLOAT) {
        if (!parse_double(v, &o->f))
            cli_die(cmd->name, 2, "%s --%s: expected a number, got '%s'", from, o->long_name, v);
    } else if (o->kind == CLI_FLAG) {
        o->i = !(strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
                 *v == '\0');
    }
}

/* ---- the config file: "name = value" lines, the names of the options ---------------- */

struct config_entry {
    char *name, *value;
    int line;
};
static struct config_entry *config;
static size_t n_config;
static char config_path[4096];
static bool config_loaded;

/* $PENSIEVE_CONFIG, else $XDG_CONFIG_HOME/pensieve/config, else ~/.config/pensieve/config. */
static void config_load(void)
{
    const char *env = getenv("PENSIEVE_CONFIG"), *xdg = getenv("XDG_CONFIG_HOME"),
               *home = getenv("HOME");
    char line[4096];

    config_loaded = true;
    if (env && *env)
        snprintf(config_path, sizeof(config_path), "%s", env);
    else if (xdg && *xdg)
        snprintf(config_path, sizeof(config_path), "%s/pensieve/config", xdg);
    else
        snprintf(config_path, sizeof(config_path), "%s/.config/pensieve/config",
                 home && *home ? home : ".");
    FILE *f = fopen(config_path, "r");
    if (!f) {
        if (env && *env)
            cli_die(NULL, 2, "PENSIEVE_CONFIG: cannot read '%s'", env);
        return;
    }
    for (int ln = 1; fgets(line, sizeof(line), f); ln++) {
        char *p = line, *eq, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        eq = strchr(p, '=');
        if (!eq)
            cli_die(NULL, 2, "%s:%d: expected 'name = value'", config_path, ln);
        for (end = eq; end > p && (end[-1] == ' ' || end[-1] == '\t'); end--)
            ;
        *end = '\0';
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        for (end = v + strlen(v); end > v && (end[-1] == '\n' || end[-1] == '\r' ||
                                             end[-1] == ' ' || end[-1] == '\t'); end--)
            ;
        *end = '\0';
        if (strncmp(p, "--", 2) == 0)
            p += 2;
        config = xrealloc(config, (n_config + 1) * sizeof(*config));
        config[n_config++] = (struct config_entry){xstrdup(p), xstrdup(v), ln};
    }
    fclose(f);
}

/* The config file's value for option `name`, or NULL; `where` gets "PATH:LINE". */
static const char *config_value(const char *name, char *where, size_t cap)
{
    if (!config_loaded)
        config_load();
    for (size_t i = n_config; i-- > 0;) /* the last line of a name wins */
        if (strcmp(config[i].name, name) == 0) {
            snprintf(where, cap, "%s:%d", config_path, config[i].line);
            return config[i].value;
        }
    return NULL;
}

/* Unknown --NAME: name the closest option (--temp -> --temperature) when there is one. */
_Noreturn static void die_unknown_option(const struct cli_command *cmd,
                                         const struct cli_opt *opts, const char *arg,
                                         size_t len)
{
    const char *names[128];
    size_t n = 0;
    char word[128];
    snprintf(word, sizeof(word), "%.*s", (int)PV_MIN(len, sizeof(word) - 1), arg + 2);
    for (const struct cli_opt *p = opts; p && p->long_name && n < PV_ARRAY_LEN(names); p++)
        names[n++] = p->long_name;
    const char *near = suggest_closest(word, names, n);
    /* a prefix of exactly one option ("--temp", "--ctx") is what was meant */
    const char *prefixed = NULL;
    int n_prefixed = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(word) >= 2 && strncmp(names[i], word, strlen(word)) == 0) {
            prefixed = names[i];
            n_prefixed++;
        }
    if (n_prefixed == 1)
        near = prefixed;
    if (near)
        cli_die(cmd->name, 2, "unknown option '%s'; did you mean '--%s'? (see pensieve %s --help)",
                arg, near, cmd->name);
    cli_die(cmd->name, 2, "unknown option '%s' (see pensieve %s --help)", arg, cmd->name);
}

void cli_parse(const struct cli_command *cmd, struct cli_opt *opts, int argc, char **argv,
               char **pos, int max_pos, int *n_pos)
{
    int np = 0;
    bool only_pos = false;

    for (int a = 1; a < argc; a++) {
        char *arg = argv[a];
        struct cli_opt *o = NULL;
        const char *inline_val = NULL;

        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (!only_pos && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            cli_print_help(cmd, opts);
            exit(0);
        }
        if (!only_pos && arg[0] == '-' && arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (struct cli_opt *p = opts; p && p->long_name; p++)
                if (strlen(p->long_name) == len && strncmp(p->long_name, name, len) == 0)
                    o = p;
            if (!o)
                die_unknown_option(cmd, opts, arg, len);
            if (eq)
                inline_val = eq + 1;
        } else if (!only_pos && arg[0] == '-' && arg[1] && arg[2] == '\0' &&
                   !(arg[1] >= '0' && arg[1] <= '9')) {
            for (struct cli_opt *p = opts; p && p->long_name; p++)
                if (p->short_name == arg[1])
                    o = p;
            if (!o)
                cli_die(cmd->name, 2, "unknown option '%s' (see pensieve %s --help)", arg,
                        cmd->name);
        } else {
            if (np >= max_pos)
                cli_die(cmd->name, 2, "unexpected argument '%s' (see pensieve %s --help)", arg,
                        cmd->name);
            pos[np++] = arg;
            continue;
        }
        o->set = true;
        if (o->kind == CLI_FLAG) {
            set_value(cmd, o, inline_val ? inline_val : "1", "option");
            continue;
        }
        if (!inline_val) {
            if (a + 1 >= argc)
                cli_die(cmd->name, 2, "option --%s needs a value", o->long_name);
            inline_val = argv[++a];
        }
        set_value(cmd, o, inline_val, "option");
    }
    char cfg_where[4200];
    for (struct cli_opt *o = opts; o && o->long_name; o++) {
        if (o->set)
            continue;
        const char *env = o->env ? getenv(o->env) : NULL;
        const char *cfg = config_value(o->long_name, cfg_where, sizeof(cfg_where));
        if (env && *env) {
            o->set = true;
            set_value(cmd, o, env, o->env);
        } else if (cfg) {
            o->set = true;
            set_value(cmd, o, cfg, cfg_where);
        } else if (o->def) {
            set_value(cmd, o, o->def, "default");
        } else {
            o->str = NULL;
            o->i = 0;
            o->f = 0;
        }
    }
    if (n_pos)
        *n_pos = np;
}

bool cli_resolve_model(const char *arg, char *out, size_t cap)
{
    struct stat st;
    char dir[4096];

    if (!arg || !*arg)
        return false;
    if (stat(arg, &st) == 0 && (S_ISREG(st.st_mode) || pv_model_is_dir(arg))) {
        snprintf(out, cap, "%s", arg);
        size_t n = strlen(out); /* a directory's name is its last component */
        while (n > 1 && out[n - 1] == '/')
            out[--n] = '\0';
        return true;
    }
    if (strchr(arg, '/') || pv_models_dir(dir, sizeof(dir)) != PV_OK)
        return false;
    /* an MLX directory of the model directory, by name */
    int nd = snprintf(out, cap, "%s/%s", dir, arg);
    if (nd > 0 && (size_t)nd < cap && pv_model_is_dir(out))
        return true;
    const size_t len = strlen(arg);
    const bool has_ext = len > 5 && strcmp(arg + len - 5, ".gguf") == 0;
    int n = snprintf(out, cap, "%s/%s%s", dir, arg, has_ext ? "" : ".gguf");
    if (n < 0 || (size_t)n >= cap)
        return false;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode);
}

void cli_die_model_not_found(const char *cmd, const char *arg)
{
    char dir[4096];
    char **names = NULL;
    size_t n = 0;
    const struct pv_catalog_entry *e = pv_catalog_find(arg);

    if (pv_models_dir(dir, sizeof(dir)) == PV_OK)
        n = cli_list_models(dir, &names);
    else
        snprintf(dir, sizeof(dir), "?");
    fprintf(stderr, "pensieve %s: model '%s' not found", cmd, arg);
    if (e) {
        fprintf(stderr, ": it is not installed; `pensieve pull %s` downloads it (%s)\n",
                e->name, e->title);
    } else {
        /* names as -m takes them: without .gguf, directories without their '/' */
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(names[i]);
            names[i][names[i][len - 1] == '/' ? len - 1 : len - 5] = '\0';
        }
        const char *near = suggest_closest(arg, (const char *const *)names, n);
        if (near)
            fprintf(stderr, "; did you mean '%s'?", near);
        fprintf(stderr, "\nmodel directory %s holds:", dir);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %s", names[i]);
        fprintf(stderr, "%s\n", n ? "" : " no .gguf files");
        size_t n_cat;
        const struct pv_catalog_entry *cat = pv_catalog(&n_cat);
        const char *cnames[64];
        for (size_t i = 0; i < n_cat && i < 64; i++)
            cnames[i] = cat[i].name;
        const char *cnear = suggest_closest(arg, cnames, PV_MIN(n_cat, (size_t)64));
        if (cnear && !near)
            fprintf(stderr, "did you mean '%s'? `pensieve pull %s` installs it\n", cnear, cnear);
        else
            fprintf(stderr, "`pensieve models` lists what `pensieve pull` can install\n");
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    exit(1);
}
