/*
 * cmd_models.c - `pensieve models`: the .gguf files of the model directory.
 *
 * Lists name, architecture, quantization and size of each file (read from its GGUF
 * metadata; a file that does not parse shows `invalid: <reason>`); `--default-path`
 * prints the path of the default model, which `make run` serves.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

static struct cli_opt models_opts[] = {
    {"default-path", 0, CLI_FLAG, NULL, NULL, "print the default model's path and exit", NULL},
    {0},
};

static int models_main(int argc, char **argv);

const struct cli_command cli_cmd_models = {
    "models",
    "list the models in the model directory",
    "pensieve models [options]",
    "The model directory is $PENSIEVE_MODELS, else $XDG_CACHE_HOME/pensieve/models,\n"
    "else ~/.cache/pensieve/models. `make run` and `scripts/setup` install the default\n"
    "model (" PV_DEFAULT_MODEL_FILE ") there.",
    models_main,
};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int models_main(int argc, char **argv)
{
    char dir[4096], path[8192];
    char **names = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    cli_parse(&cli_cmd_models, models_opts, argc, argv, NULL, 0, NULL);
    if (pv_models_dir(dir, sizeof(dir)) != PV_OK)
        cli_die("models", 1, "model directory path is too long");
    if (cli_get(models_opts, "default-path")->i) {
        printf("%s/%s\n", dir, PV_DEFAULT_MODEL_FILE);
        return 0;
    }
    d = opendir(dir);
    if (!d) {
        printf("no models: %s does not exist (run `make run` or scripts/setup)\n", dir);
        return 0;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".gguf") == 0) {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = xstrdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), compare_names);
    printf("%s\n", dir);
    printf("%-48s %-12s %-10s %10s\n", "NAME", "ARCH", "QUANT", "SIZE");
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        struct pv_model_summary sum;
        struct pv_err err = {0};
        char size[32] = "?";
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0)
            format_bytes((uint64_t)st.st_size, size, sizeof(size));
        if (pv_model_probe(path, &sum, &err) == PV_OK) {
            printf("%-48s %-12s %-10s %10s%s\n", names[i], sum.architecture, sum.quant, size,
                   sum.supported ? "" : "  (architecture not supported)");
        } else {
            /* The reason without the path prefix the reader puts first. */
            const char *why = err.msg;
            size_t plen = strlen(path);
            if (strncmp(why, path, plen) == 0 && why[plen] == ':')
                why += plen + 1 + (why[plen + 1] == ' ');
            printf("%-48s invalid: %s\n", names[i], why);
        }
        free(names[i]);
    }
    if (n == 0)
        printf("(no .gguf files)\n");
    free(names);
    return 0;
}
