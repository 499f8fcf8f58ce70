/*
 * engine_check.c - drives the public context API for tests/engine/test_context.py.
 *
 *   engine_check MODEL IDS SPLIT KEEP
 * evaluates the comma-separated ids three ways and prints one JSON line comparing them:
 * whole (one eval with every position's logits); split (ids[0:SPLIT] then ids[SPLIT:]);
 * reuse (after the split run, truncate to KEEP and evaluate ids[KEEP:] again). Also
 * checks the API's error paths. Exit status 1 on a failed API call.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pensieve.h"

static void die(const char *what, const struct pv_err *err)
{
    fprintf(stderr, "engine_check: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

/* max |a - b| over rows of n_vocab, and how many rows have the same argmax */
static void diff_rows(const float *a, const float *b, size_t rows, size_t n_vocab, double *max,
                      size_t *same)
{
    *max = 0;
    *same = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t ia = 0, ib = 0;
        for (size_t i = 0; i < n_vocab; i++) {
            double d = fabs((double)a[r * n_vocab + i] - b[r * n_vocab + i]);
            *max = d > *max ? d : *max;
            ia = a[r * n_vocab + i] > a[r * n_vocab + ia] ? i : ia;
            ib = b[r * n_vocab + i] > b[r * n_vocab + ib] ? i : ib;
        }
        *same += ia == ib;
    }
}

/* copy the logits rows [0, rows) of the last eval */
static float *take(struct pv_context *ctx, size_t rows)
{
    size_t nv = pv_context_n_vocab(ctx);
    float *out = malloc(rows * nv * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        memcpy(out + r * nv, pv_context_logits(ctx, (int64_t)r), nv * sizeof(float));
    return out;
}

int main(int argc, char **argv)
{
    struct pv_err err;
    struct pv_model *model;
    struct pv_context *a, *b;
    struct pv_context_params cp = pv_context_default_params();
    int32_t ids[4096];
    size_t n = 0, split, keep, nv, same;
    double max;
    char *p;

    if (argc != 5)
        return fprintf(stderr, "usage: engine_check MODEL IDS SPLIT KEEP\n"), 2;
    for (p = argv[2]; *p && n < 4096;) {
        ids[n++] = (int32_t)strtol(p, &p, 10);
        while (*p == ',' || *p == ' ')
            p++;
    }
    split = strtoul(argv[3], NULL, 10);
    keep = strtoul(argv[4], NULL, 10);
    if (split == 0 || split >= n || keep > split)
        return fprintf(stderr, "engine_check: need 0 < SPLIT < n and KEEP <= SPLIT\n"), 2;

    if (pv_model_load(argv[1], NULL, &model, &err) != PV_OK)
        die("load", &err);
    cp.n_ctx = 512;
    cp.n_threads = 2;
    if (pv_context_new(model, &cp, &a, &err) != PV_OK || pv_context_new(model, &cp, &b, &err) != PV_OK)
        die("context", &err);
    nv = pv_context_n_vocab(a);

    /* whole */
    if (pv_context_eval(a, ids, n, true, &err) != PV_OK)
        die("eval whole", &err);
    float *whole = take(a, n);

    /* split */
    if (pv_context_eval(b, ids, split, false, &err) != PV_OK ||
        pv_context_eval(b, ids + split, n - split, true, &err) != PV_OK)
        die("eval split", &err);
    float *second = take(b, n - split);
    diff_rows(whole + split * nv, second, n - split, nv, &max, &same);
    printf("{\"split_max_diff\": %g, \"split_same_top1\": %zu, \"split_rows\": %zu", max, same,
           n - split);

    /* reuse after truncate */
    if (pv_context_truncate(b, (uint32_t)keep, &err) != PV_OK)
        die("truncate", &err);
    if (pv_context_n_past(b) != keep || pv_context_logits(b, -1) != NULL)
        die("truncate leaves n_past/logits wrong", NULL);
    if (pv_context_eval(b, ids + keep, n - keep, true, &err) != PV_OK)
        die("eval reuse", &err);
    float *again = take(b, n - keep);
    diff_rows(whole + keep * nv, again, n - keep, nv, &max, &same);
    printf(", \"reuse_max_diff\": %g, \"reuse_same_top1\": %zu, \"reuse_rows\": %zu", max, same,
           n - keep);
    /* the last row is also what -1 gives */
    printf(", \"last_row_ok\": %s", memcmp(pv_context_logits(b, -1), again + (n - keep - 1) * nv,
                                          nv * sizeof(float)) == 0 ? "true" : "false");

    /* error paths: nothing evaluated, past the end, out of the vocabulary, truncate forward */
    int32_t bad = (int32_t)nv;
    uint32_t past = pv_context_n_past(b);
    int errors_ok = pv_context_eval(b, ids, 0, false, &err) == PV_ERR_INVALID &&
                    pv_context_eval(b, &bad, 1, false, &err) == PV_ERR_INVALID &&
                    pv_context_truncate(b, past + 1, &err) == PV_ERR_INVALID &&
                    pv_context_n_past(b) == past;
    int32_t *many = calloc(600, sizeof(int32_t));
    errors_ok = errors_ok && pv_context_eval(b, many, 600, false, &err) == PV_ERR_CONTEXT &&
                pv_context_n_past(b) == past;
    printf(", \"errors_ok\": %s}\n", errors_ok ? "true" : "false");

    free(many);
    free(whole);
    free(second);
    free(again);
    pv_context_free(a);
    pv_context_free(b);
    pv_model_free(model);
    return 0;
}
