/*
 * cuda_check.c - the CUDA backend against the CPU, on the GPU machine (built by `make cuda`
 * as build/cuda/cuda_check; bench/gpu/check.sh runs it on every synthetic model).
 *
 *   cuda_check MODEL... [--quiet]      (CUDA_CHECK_SKIP_OPS=1: the models only)
 *
 * Ops: each op of the backend table on fresh random inputs, the CUDA backend
 * against the CPU backend, or, for matmul and get_rows, against a float64 product over
 * the CPU's scalar dequantization of the model's own weights (every weight type the file
 * holds, 1 to 70 tokens: the mat-vec and the GEMM paths). Bounds (relative L2 error,
 * NaN never passes):
 *   matmul mat-vec (<= 8 tokens) 1e-4; matmul GEMM (fp16 operands) 1e-2;
 *   get_rows 1e-6; rmsnorm, rope, SiLU glu, add 1e-5; GELU glu 1e-4 (fp16 grid);
 *   kv_store exact; attention (GQA, sliding window, block tables, decode tokens and a
 *   40-token prompt) 1e-4 with an F32 cache, 1e-3 with F16 (the CPU rounds q and the
 *   probabilities to fp16 there, as llama.cpp does).
 * Model: one 48-token prompt with every position's logits, then 8 greedy decode steps
 * (the CUDA graph path), then 3 sequences decoded in one batch, each on the CPU and on
 * the GPU: the largest relative L2 error of a logits row (bound 3e-2), the largest
 * absolute logit difference, and top-1 agreement (a disagreement passes only where the
 * CPU's top two logits are closer than the rows' largest difference).
 * Prints one line per check and "cuda_check: N passed, N failed"; exit 1 on a failure.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/backend.h"
#include "compute/cpu/cpu.h"
#include "engine/engine.h"
#include "pensieve.h"

static int n_pass, n_fail;
static bool quiet;

static void report(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(bool ok, const char *fmt, ...)
{
    va_list ap;
    if (ok)
        n_pass++;
    else
        n_fail++;
    if (ok && quiet)
        return;
    printf("%s ", ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

/* ||a - b|| / ||b||, +inf when a has a NaN */
static double rel_err(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isinf(a[i]))
            return INFINITY;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double rel_err_f(const float *a, const float *b, size_t n)
{
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        d[i] = b[i];
    double e = rel_err(a, d, n);
    free(d);
    return e;
}

/* device buffer of n floats holding x (or uninitialised) */
static float *dev_put(struct compute_backend *g, const float *x, size_t n)
{
    float *d = g->ops->alloc(g, n * sizeof(float));
    if (!d) {
        fprintf(stderr, "cuda_check: device allocation failed\n");
        exit(1);
    }
    if (x)
        g->ops->upload(g, d, x, n * sizeof(float));
    return d;
}

struct step_arrays {
    int32_t tok[128], pos[128];
    uint32_t cell[128];
    const uint32_t *blocks[128];
};

static void begin(struct compute_backend *g, struct step_arrays *s, int n, uint32_t shift)
{
    const struct compute_step st = {.n = n, .token = s->tok, .pos = s->pos, .cell = s->cell,
                                    .blocks = s->blocks, .block_shift = shift};
    for (int t = 0; t < n; t++)
        if (!s->blocks[t])
            s->blocks[t] = s->cell;
    g->ops->step_begin(g, &st);
}

static bool end(struct compute_backend *g, const char *what)
{
    if (!g->ops->step_end(g)) {
        report(false, "%s: %s", what, g->error);
        return false;
    }
    return true;
}

/* dst = the device buffer d (n floats), poisoned first so unwritten elements show */
static void get(struct compute_backend *g, float *dst, const float *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = NAN;
    g->ops->download(g, dst, d, n * sizeof(float));
}

static void check_weights(struct pv_model *m, struct compute_backend *g)
{
    uint32_t seen[64];
    int n_seen = 0;
    const int toks[] = {1, 3, 8, 13, 70};
    for (int64_t ti = 0; ti < gguf_n_tensors(m->gguf); ti++) {
        const struct pv_tensor *w = gguf_tensor(m->gguf, ti);
        bool dup = false;
        if (w->n_dims != 2 || w->ne[0] % 32 != 0)
            continue;
        for (int i = 0; i < n_seen; i++)
            dup |= seen[i] == w->type;
        if (dup || n_seen == 64)
            continue;
        seen[n_seen++] = w->type;
        const int K = (int)w->ne[0];
        const int R = (int)(w->ne[1] < 384 ? w->ne[1] : 384); /* the first rows */
        struct pv_tensor wr = *w;
        wr.ne[1] = R;
        double *wd = malloc((size_t)R * K * sizeof(double));
        float *row = malloc((size_t)K * sizeof(float));
        for (int r = 0; r < R; r++) {
            cpu_dequantize_row(w->type, (const char *)w->data + (size_t)r * w->row_bytes, row, K);
            for (int k = 0; k < K; k++)
                wd[(size_t)r * K + k] = row[k];
        }
        /* matmul: y = W x against float64 over the scalar dequantization */
        for (size_t ni = 0; ni < sizeof toks / sizeof *toks; ni++) {
            const int n = toks[ni];
            float *x = malloc((size_t)n * K * sizeof(float));
            float *y = malloc((size_t)n * R * sizeof(float));
            double *ref = malloc((size_t)n * R * sizeof(double));
            struct step_arrays sa = {0};
            fill(x, (size_t)n * K, 1.0f);
            for (int t = 0; t < n; t++)
                for (int r = 0; r < R; r++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += wd[(size_t)r * K + k] * x[(size_t)t * K + k];
                    ref[(size_t)t * R + r] = acc;
                }
            float *dx = dev_put(g, x, (size_t)n * K), *dy = dev_put(g, NULL, (size_t)n * R);
            begin(g, &sa, n, 0);
            g->ops->matmul(g, &wr, dx, dy, n, n);
            if (end(g, "matmul")) {
                get(g, y, dy, (size_t)n * R);
                double e = rel_err(y, ref, (size_t)n * R);
                double bound = n <= 8 ? 1e-4 : 1e-2;
                report(e <= bound, "matmul   %-5s %4d x %-5d n=%-3d rel err %.2e (bound %.0e)",
                       pv_type_get(w->type)->name, R, K, n, e, bound);
            }
            g->ops->free(g, dx);
            g->ops->free(g, dy);
            free(x), free(y), free(ref);
        }
        /* get_rows: rows 3, 0, 2, 1 times 0.5 */
        {
            struct step_arrays sa = {.tok = {3, 0, 2, 1}};
            float *dy = dev_put(g, NULL, 4 * (size_t)K);
            float *y = malloc(4 * (size_t)K * sizeof(float));
            double *ref = malloc(4 * (size_t)K * sizeof(double));
            for (int t = 0; t < 4; t++)
                for (int k = 0; k < K; k++)
                    ref[(size_t)t * K + k] = wd[(size_t)sa.tok[t] * K + k] * 0.5;
            begin(g, &sa, 4, 0);
            g->ops->get_rows(g, &wr, sa.tok, 4, 0.5f, dy);
            if (end(g, "get_rows")) {
                get(g, y, dy, 4 * (size_t)K);
                double e = rel_err(y, ref, 4 * (size_t)K);
                report(e <= 1e-6, "get_rows %-5s K=%-5d rel err %.2e (bound 1e-06)",
                       pv_type_get(w->type)->name, K, e);
            }
            g->ops->free(g, dy);
            free(y), free(ref);
        }
        free(wd);
        free(row);
    }
}

/* The elementwise ops on both backends: rmsnorm (rows and heads), rope, glu, add, bias. */
static void check_small_ops(struct compute_backend *c, struct compute_backend *g)
{
    const int n = 5, heads = 4, hd = 64, dim = heads * hd;
    const size_t N = (size_t)n * dim;
    float *x = malloc(N * sizeof(float)), *x2 = malloc(N * sizeof(float));
    float *w = malloc(dim * sizeof(float)), *y = malloc(N * sizeof(float));
    float *ff = malloc(hd / 2 * sizeof(float));
    struct step_arrays sa = {.pos = {0, 7, 300, 4095, 17000}};
    /* weights-like inputs (norm weight, bias, rope factors) must be in the upload range:
       the check uses the ones of the model through check_model; here they are NULL or
       device buffers the backend owns, which it accepts as device pointers */
    fill(x, N, 3.0f);
    fill(x2, N, 1.0f);
    fill(w, dim, 1.0f);
    for (int i = 0; i < hd / 2; i++)
        ff[i] = 1.0f + 0.1f * (float)i;
    struct { const char *name; int kind; } cases[] = {
        {"rmsnorm rows", 0}, {"rmsnorm heads", 1}, {"rope neox", 2}, {"rope norm", 3},
        {"glu silu", 4}, {"glu gelu", 5}, {"add", 6},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        float *hx = malloc(N * sizeof(float));
        memcpy(hx, x, N * sizeof(float));
        float *dx = dev_put(g, x, N), *dx2 = dev_put(g, x2, N);
        for (int t = 0; t < n; t++)
            sa.blocks[t] = NULL;
        begin(g, &sa, n, 31); /* tables of one entry: these ops read none */
        switch (cases[ci].kind) {
        case 0:
            c->ops->rmsnorm(c, hx, NULL, hx, n, 1, dim, 0, dim, 1e-6f);
            g->ops->rmsnorm(g, dx, NULL, dx, n, 1, dim, 0, dim, 1e-6f);
            break;
        case 1:
            c->ops->rmsnorm(c, hx, NULL, hx, n, heads, dim, hd, hd, 1e-5f);
            g->ops->rmsnorm(g, dx, NULL, dx, n, heads, dim, hd, hd, 1e-5f);
            break;
        case 2:
        case 3:
            c->ops->rope(c, hx, dim, n, sa.pos, heads, hd, hd, 1e6f, 1.0f, NULL, ci == 2);
            g->ops->rope(g, dx, dim, n, sa.pos, heads, hd, hd, 1e6f, 1.0f, NULL, ci == 2);
            break;
        case 4:
        case 5:
            c->ops->glu(c, hx, x2, N, ci == 5);
            g->ops->glu(g, dx, dx2, N, ci == 5);
            break;
        case 6:
            c->ops->add(c, hx, x2, N);
            g->ops->add(g, dx, dx2, N);
            break;
        }
        if (end(g, cases[ci].name)) {
            get(g, y, dx, N);
            double e = rel_err_f(y, hx, N), bound = ci == 5 ? 1e-4 : 1e-5;
            report(e <= bound, "%-14s rel err %.2e (bound %.0e)", cases[ci].name, e, bound);
        }
        g->ops->free(g, dx);
        g->ops->free(g, dx2);
        free(hx);
    }
    free(x), free(x2), free(w), free(y), free(ff);
}

/* Attention over a block cache, both backends, the same random cache and tables. */
static void check_attention(struct compute_backend *g, int n_head, int n_head_kv, int hd,
                            bool f16, uint32_t n_swa)
{
    /* a CPU backend with scratch for these heads and this cache type */
    struct compute_backend *c = compute_cpu_new(4, 512, hd, hd, f16);
    const uint32_t shift = 4, bs = 1u << shift, n_blocks = 96;
    const size_t cells = (size_t)n_blocks * bs, kvd = (size_t)n_head_kv * hd;
    const size_t elt = f16 ? 2 : 4, row = kvd * elt;
    /* 3 decode tokens of sequences 0..2, then 40 prompt tokens of sequence 3 */
    const int n_one = 3, n = n_one + 40;
    uint32_t tables[4][32];
    uint32_t perm[96];
    struct step_arrays sa = {0};
    for (uint32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (uint32_t i = n_blocks - 1; i > 0; i--) {
        uint32_t j = (uint32_t)((frand() * 0.5f + 0.5f) * (float)i);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < 24; b++)
            tables[s][b] = perm[s * 24 + b];
    const int32_t dpos[3] = {37, 200, 5};
    for (int t = 0; t < n; t++) {
        int s = t < n_one ? t : 3;
        sa.pos[t] = t < n_one ? dpos[t] : 300 + (t - n_one);
        sa.blocks[t] = tables[s];
        sa.cell[t] = tables[s][sa.pos[t] >> shift] << shift | ((uint32_t)sa.pos[t] & (bs - 1));
    }
    unsigned char *kh = malloc(cells * row), *vh = malloc(cells * row);
    for (size_t i = 0; i < cells * kvd; i++) {
        float a = frand(), b = frand();
        if (f16) {
            ((uint16_t *)kh)[i] = pv_f32_to_fp16(a);
            ((uint16_t *)vh)[i] = pv_f32_to_fp16(b);
        } else {
            ((float *)kh)[i] = a;
            ((float *)vh)[i] = b;
        }
    }
    const size_t qn = (size_t)n * n_head * hd;
    float *q = malloc(qn * sizeof(float)), *oc = malloc(qn * sizeof(float));
    float *og = malloc(qn * sizeof(float));
    fill(q, qn, 1.0f);
    void *kd = g->ops->alloc(g, cells * row), *vd = g->ops->alloc(g, cells * row);
    g->ops->upload(g, kd, kh, cells * row);
    g->ops->upload(g, vd, vh, cells * row);
    float *qd = dev_put(g, q, qn), *od = dev_put(g, NULL, qn);
    struct compute_attn a = {
        .q = q, .q_stride = (size_t)n_head * hd, .out = oc, .n = n, .n_one = n_one,
        .pos = sa.pos, .blocks = sa.blocks, .block_shift = shift, .k = kh, .v = vh,
        .k_row_bytes = row, .v_row_bytes = row, .f16 = f16, .n_head = n_head,
        .n_head_kv = n_head_kv, .hd_k = hd, .hd_v = hd, .n_swa = n_swa, .q_scale = 1.0f,
        .scale = 1.0f / sqrtf((float)hd),
    };
    c->ops->attention(c, &a);
    a.q = qd, a.out = od, a.k = kd, a.v = vd;
    begin(g, &sa, n, shift);
    g->ops->attention(g, &a);
    if (end(g, "attention")) {
        get(g, og, od, qn);
        /* the CPU rounds q and the probabilities to fp16 with an F16 cache */
        double e = rel_err_f(og, oc, qn), bound = f16 ? 1e-3 : 1e-4;
        report(e <= bound, "attention %d/%d heads hd %d %s swa %u, %d tokens: rel err %.2e "
               "(bound %.0e)", n_head, n_head_kv, hd, f16 ? "f16" : "f32", n_swa, n, e, bound);
    }
    g->ops->free(g, kd);
    g->ops->free(g, vd);
    g->ops->free(g, qd);
    g->ops->free(g, od);
    free(kh), free(vh), free(q), free(oc), free(og);
    compute_cpu_free(c);
}

static void check_kv_store(struct compute_backend *g)
{
    const int n = 6, dim = 128;
    const size_t cells = 64;
    float *src = malloc((size_t)n * dim * sizeof(float));
    float *back = malloc(cells * dim * sizeof(float));
    struct step_arrays sa = {.cell = {5, 63, 0, 17, 18, 40}};
    fill(src, (size_t)n * dim, 2.0f);
    float *ds = dev_put(g, src, (size_t)n * dim), *dc = dev_put(g, NULL, cells * dim);
    begin(g, &sa, n, 0);
    g->ops->kv_store(g, ds, dim, n, dim, dc, dim * sizeof(float), sa.cell, false);
    if (end(g, "kv_store")) {
        get(g, back, dc, cells * dim);
        double worst = 0;
        for (int t = 0; t < n; t++)
            for (int i = 0; i < dim; i++) {
                double d = fabs((double)back[sa.cell[t] * dim + i] - src[t * dim + i]);
                worst = isnan(back[sa.cell[t] * dim + i]) ? INFINITY : d > worst ? d : worst;
            }
        report(worst == 0, "kv_store f32: max diff %.2e (bound 0)", worst);
    }
    g->ops->free(g, ds);
    g->ops->free(g, dc);
    free(src), free(back);
}

/* ---- the whole model ---- */

static void die(const char *what, const struct pv_err *err)
{
    fprintf(stderr, "cuda_check: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

/* compare rows of logits: worst relative L2 error, worst abs diff, top-1 agreement */
static void compare_logits(const char *what, const float *gpu, const float *cpu, size_t rows,
                           size_t n_vocab)
{
    double worst_rel = 0, worst_abs = 0;
    size_t agree = 0, bad_top1 = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *a = gpu + r * n_vocab, *b = cpu + r * n_vocab;
        double e = rel_err_f(a, b, n_vocab), mabs = 0;
        size_t ia = 0, ib = 0, ib2 = (size_t)-1;
        for (size_t i = 0; i < n_vocab; i++) {
            double d = isnan(a[i]) ? INFINITY : fabs((double)a[i] - b[i]);
            mabs = d > mabs ? d : mabs;
            ia = a[i] > a[ia] ? i : ia;
            ib = b[i] > b[ib] ? i : ib;
        }
        for (size_t i = 0; i < n_vocab; i++)
            if (i != ib && (ib2 == (size_t)-1 || b[i] > b[ib2]))
                ib2 = i;
        worst_rel = e > worst_rel ? e : worst_rel;
        worst_abs = mabs > worst_abs ? mabs : worst_abs;
        if (ia == ib)
            agree++;
        else if (ib2 != (size_t)-1 && (double)b[ib] - b[ib2] >= mabs)
            bad_top1++;
    }
    report(worst_rel <= 3e-2 && bad_top1 == 0,
           "model %-22s %3zu rows: rel err %.2e (bound 3e-02), max |diff| %.4f, top-1 %zu/%zu",
           what, rows, worst_rel, worst_abs, agree, rows);
}

static void check_model(const char *path)
{
    struct pv_err err = {0};
    struct pv_model *model = NULL;
    struct pv_context *cc = NULL, *gc = NULL;
    struct pv_context_params cp = pv_context_default_params();
    const int n_prompt = 48, n_dec = 8;
    int32_t toks[64];

    if (pv_model_load(path, NULL, &model, &err) != PV_OK)
        die("load", &err);
    const size_t n_vocab = pv_model_n_vocab(model);
    for (int i = 0; i < n_prompt; i++)
        toks[i] = (int32_t)((i * 7919u + 13u) % n_vocab);
    cp.n_ctx = 512;
    cp.n_seq_max = 4;
    cp.n_threads = 4;
    cp.device = PV_DEVICE_CPU;
    if (pv_context_new(model, &cp, &cc, &err) != PV_OK)
        die("cpu context", &err);
    cp.device = PV_DEVICE_CUDA;
    if (pv_context_new(model, &cp, &gc, &err) != PV_OK)
        die("cuda context", &err);

    /* prompt, every position's logits (the GEMM path) */
    float *lc = malloc((size_t)n_prompt * n_vocab * sizeof(float));
    float *lg = malloc((size_t)n_prompt * n_vocab * sizeof(float));
    if (pv_context_eval(cc, toks, n_prompt, true, &err) != PV_OK)
        die("cpu eval", &err);
    if (pv_context_eval(gc, toks, n_prompt, true, &err) != PV_OK)
        die("cuda eval", &err);
    for (int i = 0; i < n_prompt; i++) {
        memcpy(lc + (size_t)i * n_vocab, pv_context_logits(cc, i), n_vocab * sizeof(float));
        memcpy(lg + (size_t)i * n_vocab, pv_context_logits(gc, i), n_vocab * sizeof(float));
    }
    compare_logits("prompt (48 tokens)", lg, lc, n_prompt, n_vocab);

    /* greedy decode on the CPU's tokens, one at a time (mat-vec, graph) */
    int32_t tok = 0;
    {
        const float *l = pv_context_logits(cc, -1);
        for (size_t i = 1; i < n_vocab; i++)
            tok = l[i] > l[tok] ? (int32_t)i : tok;
    }
    for (int s = 0; s < n_dec; s++) {
        if (pv_context_eval(cc, &tok, 1, false, &err) != PV_OK)
            die("cpu decode", &err);
        if (pv_context_eval(gc, &tok, 1, false, &err) != PV_OK)
            die("cuda decode", &err);
        memcpy(lc + (size_t)s * n_vocab, pv_context_logits(cc, -1), n_vocab * sizeof(float));
        memcpy(lg + (size_t)s * n_vocab, pv_context_logits(gc, -1), n_vocab * sizeof(float));
        const float *l = pv_context_logits(cc, -1);
        tok = 0;
        for (size_t i = 1; i < n_vocab; i++)
            tok = l[i] > l[tok] ? (int32_t)i : tok;
    }
    compare_logits("decode (8 steps)", lg, lc, n_dec, n_vocab);

    /* 3 sequences forked from the prompt, decoded in one batch per step */
    struct pv_batch b;
    if (pv_batch_init(&b, 4, &err) != PV_OK)
        die("batch", &err);
    for (int s = 1; s < 4; s++) {
        pv_context_seq_fork(cc, 0, s, &err);
        pv_context_seq_fork(gc, 0, s, &err);
    }
    for (int step = 0; step < 4; step++) {
        pv_batch_clear(&b);
        for (int s = 1; s < 4; s++)
            pv_batch_add(&b, (int32_t)((s * 31 + step * 7) % n_vocab),
                         (int32_t)(n_prompt + n_dec + step), s, true);
        if (pv_context_decode(cc, &b, &err) != PV_OK)
            die("cpu batch", &err);
        if (pv_context_decode(gc, &b, &err) != PV_OK)
            die("cuda batch", &err);
        for (int i = 0; i < 3; i++) {
            memcpy(lc + (size_t)(step * 3 + i) * n_vocab, pv_context_logits(cc, i),
                   n_vocab * sizeof(float));
            memcpy(lg + (size_t)(step * 3 + i) * n_vocab, pv_context_logits(gc, i),
                   n_vocab * sizeof(float));
        }
    }
    compare_logits("batch (3 seqs x 4)", lg, lc, 12, n_vocab);
    pv_batch_release(&b);
    free(lc);
    free(lg);

    if (!getenv("CUDA_CHECK_SKIP_OPS")) {
        struct compute_backend *c = cc->be, *g = gc->be;
        check_weights(model, g);
        check_small_ops(c, g);
        check_kv_store(g);
        check_attention(g, 8, 2, 64, true, 0);
        check_attention(g, 28, 4, 128, true, 0);
        check_attention(g, 8, 2, 64, false, 0);
        check_attention(g, 4, 1, 256, true, 24);
    }
    pv_context_free(gc);
    pv_context_free(cc);
    pv_model_free(model);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cuda_check MODEL... [--quiet]\n");
        return 2;
    }
    if (!pv_cuda_available()) {
        printf("SKIP cuda_check: no CUDA GPU here (or this build has no CUDA backend)\n");
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
            continue;
        }
        printf("== %s\n", argv[i]);
        check_model(argv[i]);
    }
    printf("cuda_check: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
