/*
 * cmd_models.c - `pensieve models`: the models installed in the model directory and
 * those `pensieve pull` can install.
 *
 * Installed: every .gguf file and MLX model directory (shown with a trailing '/') with its
 * architecture, quantization, size and whether it has a chat template (read from its
 * metadata; one that does not parse shows `invalid: <reason>`). Available: the catalogue entries not installed yet.
 * `--default-path` prints the path of the default model, which `make run` serves.
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
    "list installed models and those `pensieve pull` can install",
    "pensieve models [options]",
    "The model directory is $PENSIEVE_MODELS, else $XDG_CACHE_HOME/pensieve/models,\n"
    "else ~/.cache/pensieve/models. The default model (" PV_DEFAULT_MODEL ", file\n" PV_DEFAULT_MODEL_FILE
    ") is what `pensieve serve` without -m and `make run` serve.",
    models_main,
};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t cli_list_models(const char *dir, char ***out)
{
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    DIR *d = opendir(dir);

    *out = NULL;
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char sub[8192];
        snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.')
            continue;
        if (len > 5 && strcmp(e->d_name + len - 5, ".gguf") == 0) {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = xstrdup(e->d_name);
        } else if (pv_model_is_dir(sub)) {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n] = xmalloc(len + 2);
            snprintf(names[n++], len + 2, "%s/", e->d_name);
        }
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), compare_names);
    *out = names;
    return n;
}

static int models_main(int argc, char **argv)
{
    char dir[4096], path[8192];
    char **names;
    size_t n, n_cat;

    cli_parse(&cli_cmd_models, models_opts, argc, argv, NULL, 0, NULL);
    if (pv_models_dir(dir, sizeof(dir)) != PV_OK)
        cli_die("models", 1, "model directory path is too long");
    if (cli_get(models_opts, "default-path")->i) {
        printf("%s/%s\n", dir, PV_DEFAULT_MODEL_FILE);
        return 0;
    }
    n = cli_list_models(dir, &names);
    struct stat dst;
    if (stat(dir, &dst) != 0)
        printf("no models: %s does not exist (`pensieve pull` installs the default model)\n",
               dir);
    else
        printf("installed in %s\n", dir);
    if (n)
        printf("%-44s %-8s %-8s %10s  %s\n", "FILE", "ARCH", "QUANT", "SIZE", "CHAT");
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        struct pv_model_summary sum;
        struct pv_err err = {0};
        char size[32] = "?";
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        size_t plen0 = strlen(path);
        if (path[plen0 - 1] == '/') /* an MLX directory */
            path[plen0 - 1] = '\0';
        else if (stat(path, &st) == 0)
            format_bytes((uint64_t)st.st_size, size, sizeof(size));
        const char *shown = names[i];
        if (pv_model_probe(path, &sum, &err) == PV_OK) {
            if (strcmp(size, "?") == 0)
                format_bytes(sum.file_bytes, size, sizeof(size));
            printf("%-44s %-8s %-8s %10s  %s%s%s\n", shown, sum.architecture, sum.quant, size,
                   sum.has_chat_template ? "yes" : "no (base model)",
                   strcmp(names[i], PV_DEFAULT_MODEL_FILE) == 0 ? "  [default]" : "",
                   sum.supported ? "" : "  (architecture not supported)");
        } else {
            /* The reason without the path prefix the reader puts first. */
            const char *why = err.msg;
            size_t plen = strlen(path);
            if (strncmp(why, path, plen) == 0 && why[plen] == ':')
                why += plen + 1 + (why[plen + 1] == ' ');
            printf("%-44s invalid: %s\n", shown, why);
        }
        free(names[i]);
    }
    if (n == 0 && stat(dir, &dst) == 0)
        printf("(none: `pensieve pull` installs the default model)\n");
    free(names);

    const struct pv_catalog_entry *cat = pv_catalog(&n_cat);
    bool header = false;
    for (size_t i = 0; i < n_cat; i++) {
        struct stat st;
        char size[32];
        snprintf(path, sizeof(path), "%s/%s", dir, cat[i].file);
        if (stat(path, &st) == 0 && (uint64_t)st.st_size == cat[i].file_bytes)
            continue;
        if (!header) {
            printf("available: (pensieve pull NAME)\n");
            header = true;
        }
        format_bytes(cat[i].file_bytes, size, sizeof(size));
        printf("%-20s %10s  %-20s %s\n", cat[i].name, size, cat[i].license, cat[i].title);
    }
    return 0;
}
