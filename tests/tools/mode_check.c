/*
 * mode_check.c - the engine's self-check across CPU kernel modes, with no oracle but its
 * own scalar reference: runs on any x86-64 machine from the engine-only build
 * (`make check-engine`), and from tests/engine/test_modes.py.
 *
 *   mode_check MODEL [N_TOKENS] [TOLERANCE] [DUMP_DIR]
 * evaluates BOS + N_TOKENS (default 60) pseudo-random ids of MODEL in every kernel mode
 * the CPU runs (scalar, avx2/8, avx2/16, avx2+vnni/8, avx2+vnni/16), with one thread and
 * with all cores, and prints one line per mode. Passes when, in every mode:
 *   - all cores give the bits of one thread (the split of work never changes a sum);
 *   - max |logit - scalar| <= TOLERANCE (default 2e-2) of the scalar logits' range;
 *   - the top-1 token equals the scalar one wherever the scalar top two differ by more
 *     than 5% of the position's range;
 * and AVX2+VNNI gives the bits of AVX2 in the same lane order. With DUMP_DIR, also writes
 * the ids (ids.txt) and each mode's logits (MODE.f32, '/' and '+' as '_') there, for
 * tests/tools/oracle_check.py to hold against llama.cpp. Exit status 0 when all pass, 1
 * when one fails, 2 on a usage or load error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "pensieve.h"

/* Logits of every position of ids in the kernel mode in use, with n_threads workers. */
static float *eval_all(struct pv_model *model, const int32_t *ids, size_t n, int n_threads)
{
    struct pv_err err;
    struct pv_context *ctx;
    struct pv_context_params cp = pv_context_default_params();
    cp.n_ctx = (uint32_t)n + 8;
    cp.n_threads = n_threads;
    if (pv_context_new(model, &cp, &ctx, &err) != PV_OK) {
        fprintf(stderr, "mode_check: context: %s\n", err.msg);
        return NULL;
    }
    size_t nv = pv_context_n_vocab(ctx);
    float *out = malloc(n * nv * sizeof(float));
    if (!out || pv_context_eval(ctx, ids, n, true, &err) != PV_OK) {
        fprintf(stderr, "mode_check: eval: %s\n", out ? err.msg : "out of memory");
        free(out);
        pv_context_free(ctx);
        return NULL;
    }
    for (size_t r = 0; r < n; r++)
        memcpy(out + r * nv, pv_context_logits(ctx, (int64_t)r), nv * sizeof(float));
    pv_context_free(ctx);
    return out;
}

static size_t argmax(const float *x, size_t n, float *second)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        best = x[i] > x[best] ? i : best;
    float s = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (i != best && x[i] > s)
            s = x[i];
    *second = s;
    return best;
}

/* rows n of nv: max |a - ref| relative to ref's range, and top-1 disagreements at
 * positions where ref's winner is clear */
static void compare(const float *a, const float *ref, size_t n, size_t nv, double *rel,
                    size_t *bad_top1, size_t *clear)
{
    double max = 0.0, lo = INFINITY, hi = -INFINITY;
    *bad_top1 = *clear = 0;
    for (size_t r = 0; r < n; r++) {
        const float *x = a + r * nv, *y = ref + r * nv;
        float rlo = INFINITY, rhi = -INFINITY, s_ref, s_a;
        for (size_t i = 0; i < nv; i++) {
            double d = fabs((double)x[i] - y[i]);
            max = d > max ? d : max;
            rlo = y[i] < rlo ? y[i] : rlo;
            rhi = y[i] > rhi ? y[i] : rhi;
        }
        lo = rlo < lo ? rlo : lo;
        hi = rhi > hi ? rhi : hi;
        size_t t_ref = argmax(y, nv, &s_ref), t_a = argmax(x, nv, &s_a);
        if (y[t_ref] - s_ref > 0.05f * (rhi - rlo)) {
            (*clear)++;
            *bad_top1 += t_ref != t_a;
        }
    }
    *rel = hi > lo ? max / (hi - lo) : max;
}

static int dump_ids(const char *dir, const int32_t *ids, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/ids.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return fprintf(stderr, "mode_check: cannot write '%s'\n", path), 1;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%d%c", (int)ids[i], i + 1 < n ? ' ' : '\n');
    return fclose(f) != 0;
}

static int dump_logits(const char *dir, enum cpu_mode m, const float *x, size_t count)
{
    char path[4096], name[32];
    snprintf(name, sizeof(name), "%s", cpu_mode_name(m));
    for (char *c = name; *c; c++)
        *c = *c == '/' || *c == '+' ? '_' : *c;
    snprintf(path, sizeof(path), "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), count, f) != count || fclose(f) != 0)
        return fprintf(stderr, "mode_check: cannot write '%s'\n", path), 1;
    return 0;
}

int main(int argc, char **argv)
{
    struct pv_err err;
    struct pv_model *model;
    if (argc < 2 || argc > 5)
        return fprintf(stderr, "usage: mode_check MODEL [N_TOKENS] [TOLERANCE] [DUMP_DIR]\n"), 2;
    const char *dump = argc > 4 ? argv[4] : NULL;
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) + 1 : 61;
    double tol = argc > 3 ? strtod(argv[3], NULL) : 2e-2;
    if (n < 2 || n > 4096 || !(tol > 0))
        return fprintf(stderr, "mode_check: N_TOKENS in [1, 4095], TOLERANCE > 0\n"), 2;
    if (pv_model_load(argv[1], NULL, &model, &err) != PV_OK)
        return fprintf(stderr, "mode_check: %s\n", err.msg), 2;
    size_t nv = pv_model_n_vocab(model);
    int32_t *ids = malloc(n * sizeof(int32_t));
    uint32_t s = 12345;
    ids[0] = pv_vocab_bos(pv_model_vocab(model)) >= 0 ? pv_vocab_bos(pv_model_vocab(model)) : 1;
    for (size_t i = 1; i < n; i++) { /* a fixed LCG: the same ids on every machine */
        s = s * 1103515245u + 12345u;
        ids[i] = (int32_t)(3 + (s >> 8) % (uint32_t)(nv - 3));
    }

    if (dump && dump_ids(dump, ids, n) != 0)
        return 2;
    float *logits[CPU_MODE_COUNT] = {0};
    int failed = 0;
    printf("%s: %zu positions, kernels of this CPU: %s\n", argv[1], n, pv_cpu_kernels_available());
    for (int m = 0; m < CPU_MODE_COUNT; m++) {
        if (m == CPU_MODE_FAST) /* not an exact mode: tests/engine/test_fast.py */
            continue;
        if (!cpu_kernels_use((enum cpu_mode)m)) {
            printf("  %-13s not runnable on this CPU\n", cpu_mode_name((enum cpu_mode)m));
            continue;
        }
        float *one = eval_all(model, ids, n, 1);
        logits[m] = eval_all(model, ids, n, 0);
        if (!one || !logits[m])
            return 2;
        bool same_threads = memcmp(one, logits[m], n * nv * sizeof(float)) == 0;
        double rel = 0.0;
        size_t bad = 0, clear = n;
        if (m != CPU_MODE_SCALAR)
            compare(logits[m], logits[CPU_MODE_SCALAR], n, nv, &rel, &bad, &clear);
        bool ok = same_threads && rel <= tol && bad == 0 && clear >= n / 4;
        const char *twin = NULL; /* VNNI against AVX2 in the same lane order */
        if (m == CPU_MODE_VNNI_8 || m == CPU_MODE_VNNI_16) {
            int plain = m == CPU_MODE_VNNI_8 ? CPU_MODE_AVX2_8 : CPU_MODE_AVX2_16;
            bool same = logits[plain] && memcmp(logits[plain], logits[m], n * nv * sizeof(float)) == 0;
            twin = same ? ", the bits of AVX2" : ", NOT the bits of AVX2";
            ok = ok && same;
        }
        printf("  %-13s %s: threads 1 vs all %s; vs scalar: max |diff| %.3g of the range "
               "(tolerance %.3g), top-1 differs at %zu of %zu clear positions%s\n",
               cpu_mode_name((enum cpu_mode)m), ok ? "ok  " : "FAIL",
               same_threads ? "same bits" : "DIFFER", rel, tol, bad, clear, twin ? twin : "");
        failed |= !ok;
        free(one);
        if (dump && dump_logits(dump, (enum cpu_mode)m, logits[m], n * nv) != 0)
            return 2;
    }
    printf("%s\n", failed ? "mode_check: FAILED" : "mode_check: all modes agree");
    for (int m = 0; m < CPU_MODE_COUNT; m++)
        free(logits[m]);
    free(ids);
    pv_model_free(model);
    return failed;
}
