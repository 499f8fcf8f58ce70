/*
 * fast_check.c - the fast kernel mode (PENSIEVE_KERNELS=fast) against exact arithmetic,
 * per op, on random inputs; driven by tests/engine/test_fast.py.
 *
 *   fast_check                 error bounds; exit status 0 when every output is within
 *   fast_check --bench [SEC [THREADS]]  matmul time per type and batch, exact mode vs
 *                              fast (THREADS 0, the default: one thread's CPU time)
 *   fast_check --model MODEL IDS_FILE MIN_TOP1 MAX_MEAN_KL [MODE]
 *                              the logits of every position of the ids (spaces apart) in
 *                              the process's exact mode and in the fast one: top-1 agreement
 *                              (share of positions) and mean KL(exact || fast) in nats; exit
 *                              status 0 when top-1 >= MIN_TOP1 and mean KL <= MAX_MEAN_KL
 *                              (MODE: another mode than fast against the exact one)
 *
 * The bound of a matmul output y = W[r] . x (W dequantized exactly, x f32), in double:
 *   |y - exact| <= sum_e |W[r][e]| * amax_B(e) / 254 * (1 + 2^-9)  +  2^-17 * sum_e |W[r][e] x[e]|
 * the first term the rounding of each activation to int8 on a scale of amax / 127 over its
 * block of B elements (the fast mode quantizes as the exact kernels do: B = 32 for the
 * legacy types' Q8_0, 256 for the K-quants' Q8_K), the second the float sums. A NaN or
 * infinity never passes. (Q8_0's fp16 scales flush activations under ~1e-5 to zero, in
 * llama.cpp as here: no tiny rows.)
 * Attention (F16 cache, causal, with and without a sliding window, GQA): against double
 * arithmetic from the same f16 values, |out - exact| <= 5e-6 * max |v| (f32 sums and a
 * polynomial exp of relative error ~1e-7), where the fast kernel runs (4 items, tokens x
 * KV heads, per thread or more; else the exact kernels, which round q and the
 * probabilities to f16 as llama.cpp does: held to 2e-3).
 * Activations: normal values, rows with outliers 1000x the rest, all-zero rows, tiny
 * values; token counts 1..70 (tiles of 4 and their tails); 1 and 3 threads must give the
 * same bits.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compute/cpu/cpu.h"
#include "pensieve.h"
#include "util/util.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static float rng_f(void) /* [-1, 1) */
{
    return (float)rng_u32() / 2147483648.0f - 1.0f;
}

static uint16_t small_fp16(void)
{
    return pv_f32_to_fp16(0.001f + 0.01f * (rng_f() + 1.0f));
}

static void random_weights(uint32_t type, void *buf, int64_t n)
{
    size_t bytes = cpu_row_bytes(type, n);
    uint8_t *p = buf;
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)rng_u32();
    int64_t nb = n / cpu_type_blck(type);
    for (int64_t b = 0; b < nb; b++) {
        switch (type) {
        case PV_TYPE_Q4_0: ((struct pv_block_q4_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q4_1:
            ((struct pv_block_q4_1 *)buf)[b].d = small_fp16();
            ((struct pv_block_q4_1 *)buf)[b].m = pv_f32_to_fp16(-0.1f * rng_f());
            break;
        case PV_TYPE_Q5_0: ((struct pv_block_q5_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q5_1:
            ((struct pv_block_q5_1 *)buf)[b].d = small_fp16();
            ((struct pv_block_q5_1 *)buf)[b].m = pv_f32_to_fp16(-0.1f * rng_f());
            break;
        case PV_TYPE_Q8_0: ((struct pv_block_q8_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q4_K:
            ((struct pv_block_q4_K *)buf)[b].d = small_fp16();
            ((struct pv_block_q4_K *)buf)[b].dmin = small_fp16();
            break;
        case PV_TYPE_Q6_K: ((struct pv_block_q6_K *)buf)[b].d = small_fp16(); break;
        default: break;
        }
    }
}

static const uint32_t k_types[] = {PV_TYPE_Q4_0, PV_TYPE_Q4_1, PV_TYPE_Q5_0, PV_TYPE_Q5_1,
                                   PV_TYPE_Q8_0, PV_TYPE_Q4_K, PV_TYPE_Q6_K};

/* activation rows of one kind: 0 normal, 1 outliers, 2 zero, 3 small (1e-3), 4 mixed per row */
static void fill_x(float *x, int64_t n, int nt, int kind)
{
    for (int t = 0; t < nt; t++) {
        int k = kind == 4 ? t % 4 : kind;
        float *row = x + (size_t)t * (size_t)n;
        for (int64_t i = 0; i < n; i++) {
            float v = rng_f();
            switch (k) {
            case 1: v *= (rng_u32() % 97 == 0) ? 1000.0f : 1.0f; break;
            case 2: v = 0.0f; break;
            case 3: v *= 1e-3f; break;
            default: v *= 3.0f; break;
            }
            row[i] = v;
        }
    }
}

/* outputs of one weight matrix and batch outside the bound (printed); -1 when thread counts
 * disagree */
static int check_one(struct pv_pool *p1, struct pv_pool *p3, uint32_t type, int64_t ne0, int64_t ne1,
                     int nt, int kind, int blk, double *worst)
{
    size_t rb = cpu_row_bytes(type, ne0);
    uint8_t *w = xmalloc(rb * (size_t)ne1);
    float *wf = xmalloc(sizeof(float) * (size_t)(ne0 * ne1));
    float *x = xmalloc(sizeof(float) * (size_t)ne0 * (size_t)nt);
    float *y1 = xmalloc(sizeof(float) * (size_t)ne1 * (size_t)nt);
    float *y3 = xmalloc(sizeof(float) * (size_t)ne1 * (size_t)nt);
    for (int64_t r = 0; r < ne1; r++) {
        random_weights(type, w + (size_t)r * rb, ne0);
        cpu_dequantize_row(type, w + (size_t)r * rb, wf + (size_t)(r * ne0), ne0);
    }
    fill_x(x, ne0, nt, kind);
    struct pv_tensor W = {.name = "w", .type = type, .n_dims = 2, .ne = {ne0, ne1, 1, 1},
                          .row_bytes = rb, .n_bytes = rb * (size_t)ne1, .data = w};
    cpu_matmul(p1, &W, x, y1, nt);
    cpu_matmul(p3, &W, x, y3, nt);
    int bad = memcmp(y1, y3, sizeof(float) * (size_t)ne1 * (size_t)nt) == 0 ? 0 : -1;
    for (int t = 0; t < nt && bad >= 0; t++) {
        const float *xt = x + (size_t)t * (size_t)ne0;
        for (int64_t r = 0; r < ne1; r++) {
            const float *wr = wf + (size_t)(r * ne0);
            double exact = 0.0, mag = 0.0, qerr = 0.0;
            for (int64_t b = 0; b < ne0; b += blk) {
                double amax = 0.0;
                for (int64_t i = b; i < b + blk; i++)
                    amax = fmax(amax, fabs((double)xt[i]));
                for (int64_t i = b; i < b + blk; i++) {
                    exact += (double)wr[i] * xt[i];
                    mag += fabs((double)wr[i] * xt[i]);
                    qerr += fabs((double)wr[i]) * amax / 254.0;
                }
            }
            double bound = qerr * (1.0 + 1.0 / 512) + mag / 131072.0 + 1e-37;
            double err = fabs((double)y1[(size_t)t * (size_t)ne1 + (size_t)r] - exact);
            if (!(err <= bound)) { /* NaN fails */
                if (bad < 3)
                    fprintf(stderr, "  type %u ne0 %lld tokens %d kind %d: row %lld token %d: "
                            "%.9g vs %.9g (bound %.3g)\n", type, (long long)ne0, nt, kind,
                            (long long)r, t, y1[(size_t)t * (size_t)ne1 + (size_t)r], exact, bound);
                bad++;
            } else if (bound > 0.0) {
                *worst = fmax(*worst, err / bound);
            }
        }
    }
    free(w);
    free(wf);
    free(x);
    free(y1);
    free(y3);
    return bad;
}

static int run_checks(void)
{
    struct pv_pool *p1 = pool_new(1), *p3 = pool_new(3);
    const int counts[] = {1, 2, 3, 4, 5, 7, 9, 70};
    int failed = 0;
    for (size_t ti = 0; ti < PV_ARRAY_LEN(k_types); ti++) {
        uint32_t type = k_types[ti];
        bool kq = cpu_type_blck(type) == PV_QK_K;
        const int64_t ne0s[] = {kq ? 256 : 64, kq ? 768 : 896, kq ? 4864 : 640};
        double worst = 0.0;
        int bad = 0, runs = 0;
        for (size_t s = 0; s < PV_ARRAY_LEN(ne0s); s++)
            for (size_t c = 0; c < PV_ARRAY_LEN(counts); c++)
                for (int kind = 0; kind < 5; kind++) {
                    int blk = (int)cpu_type_blck(cpu_dot_type(type));
                    if (ne0s[s] > 1000 && counts[c] > 9 && kind != 4)
                        continue; /* the large ones once */
                    int64_t ne1 = 1 + (int64_t)(rng_u32() % 40);
                    int b = check_one(p1, p3, type, ne0s[s], ne1, counts[c], kind, blk, &worst);
                    runs++;
                    if (b < 0) {
                        fprintf(stderr, "  type %u: 1 and 3 threads differ\n", type);
                        bad++;
                    } else {
                        bad += b;
                    }
                }
        printf("  %-5s %s: %d matmuls, worst error %.3f of the bound%s\n",
               pv_type_get(type)->name, bad ? "FAIL" : "ok  ", runs, worst,
               bad ? " (outputs out of bound above)" : "");
        failed |= bad != 0;
    }
    pool_free(p1);
    pool_free(p3);
    cpu_scratch_release();
    return failed;
}

static clockid_t bench_clock = CLOCK_MONOTONIC;

/* attention of n tokens at positions 0..n-1 of one sequence, n_head query heads over
 * n_kv KV heads of hd dims; outputs off the bound (printed) */
static int check_attention(struct pv_pool *pool, int n, int n_head, int n_kv, int hd, uint32_t n_swa,
                           float q_scale, double tol, double *worst)
{
    const uint32_t shift = 4, n_cells = (uint32_t)((n + 15) & ~15);
    uint32_t *blocks = xmalloc(sizeof(uint32_t) * (n_cells >> shift));
    for (uint32_t b = 0; b < (n_cells >> shift); b++) /* blocks in reverse: a real table */
        blocks[b] = (n_cells >> shift) - 1 - b;
    const uint32_t **bt = xmalloc(sizeof(*bt) * (size_t)n);
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)n);
    size_t row = (size_t)n_kv * (size_t)hd;
    uint16_t *k = xmalloc(sizeof(uint16_t) * row * n_cells), *v = xmalloc(sizeof(uint16_t) * row * n_cells);
    float *q = xmalloc(sizeof(float) * (size_t)n * (size_t)n_head * (size_t)hd);
    float *out = xmalloc(sizeof(float) * (size_t)n * (size_t)n_head * (size_t)hd);
    for (size_t i = 0; i < row * n_cells; i++) {
        k[i] = pv_f32_to_fp16(rng_f());
        v[i] = pv_f32_to_fp16(rng_f());
    }
    for (size_t i = 0; i < (size_t)n * (size_t)n_head * (size_t)hd; i++)
        q[i] = 2.0f * rng_f();
    for (int t = 0; t < n; t++) {
        bt[t] = blocks;
        pos[t] = t;
    }
    struct compute_attn a = {.q = q, .q_stride = (size_t)n_head * (size_t)hd, .out = out, .n = n,
                             .n_one = n == 1 ? 1 : 0, .pos = pos, .blocks = bt, .block_shift = shift,
                             .k = k, .v = v, .k_row_bytes = row * 2, .v_row_bytes = row * 2,
                             .f16 = true, .n_head = n_head, .n_head_kv = n_kv, .hd_k = hd, .hd_v = hd,
                             .n_swa = n_swa, .q_scale = q_scale, .scale = 1.0f / sqrtf((float)hd)};
    int nth = pool ? pool_size(pool) : 1;
    float *scratch = xmalloc(sizeof(float) * cpu_attn_scratch_floats(n_cells, hd, hd) * (size_t)nth);
    cpu_attention(pool, cpu_attend_for(true, (uint32_t)hd), scratch, n_cells, &a);
    int bad = 0;
    double *s = xmalloc(sizeof(double) * (size_t)n);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_head; h++) {
            int g = h / (n_head / n_kv);
            uint32_t j0 = n_swa && (uint32_t)t + 1 > n_swa ? (uint32_t)t + 1 - n_swa : 0;
            const float *qh = q + (size_t)t * a.q_stride + (size_t)h * (size_t)hd;
            double mx = -INFINITY, sum = 0.0, vmax = 0.0;
            for (uint32_t j = j0; j <= (uint32_t)t; j++) {
                size_t cell = ((size_t)blocks[j >> shift] << shift) | (j & 15);
                const uint16_t *kj = k + cell * row + (size_t)g * (size_t)hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++)
                    d += (double)(qh[i] * q_scale) * pv_fp16_to_f32(kj[i]);
                s[j] = d * a.scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (uint32_t j = j0; j <= (uint32_t)t; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (uint32_t j = j0; j <= (uint32_t)t; j++) {
                    size_t cell = ((size_t)blocks[j >> shift] << shift) | (j & 15);
                    double vv = pv_fp16_to_f32(v[cell * row + (size_t)g * (size_t)hd + (size_t)i]);
                    o += s[j] / sum * vv;
                    vmax = fmax(vmax, fabs(vv));
                }
                double err = fabs(out[((size_t)t * (size_t)n_head + (size_t)h) * (size_t)hd + (size_t)i] - o);
                if (!(err <= tol * vmax)) {
                    if (bad++ < 3)
                        fprintf(stderr, "  attention n %d heads %d/%d hd %d swa %u: token %d head %d "
                                "dim %d: err %.3g (bound %.3g)\n", n, n_head, n_kv, hd, n_swa, t, h, i,
                                err, tol * vmax);
                } else if (vmax > 0) {
                    *worst = fmax(*worst, err / (tol * vmax));
                }
            }
        }
    free(s);
    free(scratch);
    free(blocks);
    free(bt);
    free(pos);
    free(k);
    free(v);
    free(q);
    free(out);
    return bad;
}

static int run_attention_checks(void)
{
    struct pv_pool *pool = pool_new(2);
    bool fast = strcmp(cpu_fast_tier(), "fast/avx512-vnni") == 0;
    double worst = 0.0;
    int bad = 0, runs = 0, n_fast = 0;
    const struct { int n, heads, kv, hd; uint32_t swa; float qs; } cases[] = {
        {1, 8, 2, 64, 0, 1.0f}, {9, 8, 2, 64, 0, 1.0f}, {70, 14, 2, 64, 0, 1.0f},
        {200, 4, 1, 256, 0, 0.0625f}, {150, 4, 1, 256, 40, 0.0625f}, {33, 16, 16, 32, 0, 1.0f}};
    for (size_t c = 0; c < PV_ARRAY_LEN(cases); c++, runs++) {
        bool f = fast && cases[c].n * cases[c].kv >= 4 * pool_size(pool);
        n_fast += f;
        bad += check_attention(pool, cases[c].n, cases[c].heads, cases[c].kv, cases[c].hd,
                               cases[c].swa, cases[c].qs, f ? 5e-6 : 2e-3, &worst);
    }
    printf("  attention %s: %d shapes (%d by the fast kernel), worst error %.3f of the bound\n",
           bad ? "FAIL" : "ok  ", runs, n_fast, worst);
    pool_free(pool);
    return bad != 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* median seconds of one matmul over reps */
static double time_matmul(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                          int nt, double budget)
{
    double t[64];
    int n = 0;
    double start = now_s();
    while (n < 64 && (n < 3 || now_s() - start < budget)) {
        double t0 = now_s();
        cpu_matmul(pool, W, x, y, nt);
        t[n++] = now_s() - t0;
    }
    for (int i = 1; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[n / 2];
}

/* threads 0: the calling thread alone, timed by its CPU clock (a busy machine's other
 * processes do not count); else a pool of that many, timed by the wall clock */
static int run_bench(double seconds, int threads)
{
    struct pv_pool *pool = threads > 0 ? pool_new(threads) : NULL;
    if (!pool)
        bench_clock = CLOCK_THREAD_CPUTIME_ID;
    const int counts[] = {1, 64, 512};
    printf("matmul medians, %d threads (0: one, CPU time), 4864 x 896 (and 896 x 4864 for K-quants); exact = %s, fast = %s\n",
           threads, cpu_features(), cpu_fast_tier());
    for (size_t ti = 0; ti < PV_ARRAY_LEN(k_types); ti++) {
        uint32_t type = k_types[ti];
        bool kq = cpu_type_blck(type) == PV_QK_K;
        int64_t ne0 = kq ? 4864 : 896, ne1 = kq ? 896 : 4864;
        size_t rb = cpu_row_bytes(type, ne0);
        uint8_t *w = xmalloc(rb * (size_t)ne1);
        for (int64_t r = 0; r < ne1; r++)
            random_weights(type, w + (size_t)r * rb, ne0);
        struct pv_tensor W = {.name = "w", .type = type, .n_dims = 2, .ne = {ne0, ne1, 1, 1},
                              .row_bytes = rb, .n_bytes = rb * (size_t)ne1, .data = w};
        for (size_t c = 0; c < PV_ARRAY_LEN(counts); c++) {
            int nt = counts[c];
            float *x = xmalloc(sizeof(float) * (size_t)ne0 * (size_t)nt);
            float *y = xmalloc(sizeof(float) * (size_t)ne1 * (size_t)nt);
            fill_x(x, ne0, nt, 0);
            double gop = 2.0 * (double)ne0 * (double)ne1 * nt * 1e-9;
            double te, tf;
            cpu_kernels_select(false);
            te = time_matmul(pool, &W, x, y, nt, seconds);
            cpu_kernels_use(CPU_MODE_FAST);
            tf = time_matmul(pool, &W, x, y, nt, seconds);
            printf("  %-5s tokens %3d: exact %8.3f ms (%6.1f GOP/s)  fast %8.3f ms (%6.1f GOP/s)  x%.2f\n",
                   pv_type_get(type)->name, nt, te * 1e3, gop / te, tf * 1e3, gop / tf, te / tf);
            fflush(stdout);
            free(x);
            free(y);
        }
        free(w);
    }
    /* attention: a causal prefill of n tokens, the default chat model's heads */
    const int an[] = {512, 2048};
    for (size_t c = 0; c < PV_ARRAY_LEN(an); c++) {
        int n = an[c], n_head = 14, n_kv = 2, hd = 64;
        uint32_t n_cells = (uint32_t)n;
        uint32_t *blocks = xmalloc(sizeof(uint32_t) * (n_cells >> 4));
        for (uint32_t b = 0; b < (n_cells >> 4); b++)
            blocks[b] = b;
        const uint32_t **bt = xmalloc(sizeof(*bt) * (size_t)n);
        int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)n);
        size_t row = (size_t)n_kv * (size_t)hd;
        uint16_t *kv = xmalloc(sizeof(uint16_t) * row * n_cells);
        float *q = xmalloc(sizeof(float) * (size_t)n * (size_t)n_head * (size_t)hd);
        float *out = xmalloc(sizeof(float) * (size_t)n * (size_t)n_head * (size_t)hd);
        for (size_t i = 0; i < row * n_cells; i++)
            kv[i] = pv_f32_to_fp16(rng_f());
        for (size_t i = 0; i < (size_t)n * (size_t)n_head * (size_t)hd; i++)
            q[i] = rng_f();
        for (int t = 0; t < n; t++) {
            bt[t] = blocks;
            pos[t] = t;
        }
        struct compute_attn at = {.q = q, .q_stride = (size_t)n_head * (size_t)hd, .out = out, .n = n,
                                  .pos = pos, .blocks = bt, .block_shift = 4, .k = kv, .v = kv,
                                  .k_row_bytes = row * 2, .v_row_bytes = row * 2, .f16 = true,
                                  .n_head = n_head, .n_head_kv = n_kv, .hd_k = hd, .hd_v = hd,
                                  .q_scale = 1.0f, .scale = 0.125f};
        int nth = pool ? pool_size(pool) : 1;
        float *scratch = xmalloc(sizeof(float) * cpu_attn_scratch_floats(n_cells, hd, hd) * (size_t)nth);
        double t_mode[2];
        for (int m = 0; m < 2; m++) {
            if (m == 0)
                cpu_kernels_select(false);
            else
                cpu_kernels_use(CPU_MODE_FAST);
            double best = 1e9;
            for (int r = 0; r < 3; r++) {
                double t0 = now_s();
                cpu_attention(pool, cpu_attend_for(true, (uint32_t)hd), scratch, n_cells, &at);
                best = fmin(best, now_s() - t0);
            }
            t_mode[m] = best;
        }
        double gfl = 4.0 * hd * n_head * ((double)n * (n + 1) / 2) * 1e-9;
        printf("  attention %d tokens (14/2 heads, 64 dims): exact %8.2f ms (%5.1f GFLOP/s)  fast %8.2f ms "
               "(%5.1f GFLOP/s)  x%.2f\n", n, t_mode[0] * 1e3, gfl / t_mode[0], t_mode[1] * 1e3,
               gfl / t_mode[1], t_mode[0] / t_mode[1]);
        free(scratch);
        free(blocks);
        free(bt);
        free(pos);
        free(kv);
        free(q);
        free(out);
    }
    cpu_kernels_select(false);
    if (pool)
        pool_free(pool);
    return 0;
}

/* every position's logits of ids in the kernel mode in use (all cores) */
static float *eval_all(struct pv_model *model, const int32_t *ids, size_t n)
{
    struct pv_err err;
    struct pv_context *ctx;
    struct pv_context_params cp = pv_context_default_params();
    cp.n_ctx = (uint32_t)n + 8;
    if (pv_context_new(model, &cp, &ctx, &err) != PV_OK) {
        fprintf(stderr, "fast_check: context: %s\n", err.msg);
        return NULL;
    }
    size_t nv = pv_context_n_vocab(ctx);
    float *out = malloc(n * nv * sizeof(float));
    if (!out || pv_context_eval(ctx, ids, n, true, &err) != PV_OK) {
        fprintf(stderr, "fast_check: eval: %s\n", out ? err.msg : "out of memory");
        free(out);
        pv_context_free(ctx);
        return NULL;
    }
    for (size_t r = 0; r < n; r++)
        memcpy(out + r * nv, pv_context_logits(ctx, (int64_t)r), nv * sizeof(float));
    pv_context_free(ctx);
    return out;
}

/* KL(softmax(p) || softmax(q)) in nats; argmax of each in *ap, *aq */
static double kl_div(const float *p, const float *q, size_t n, size_t *ap, size_t *aq)
{
    size_t bp = 0, bq = 0;
    for (size_t i = 1; i < n; i++) {
        bp = p[i] > p[bp] ? i : bp;
        bq = q[i] > q[bq] ? i : bq;
    }
    double sp = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        sp += exp((double)p[i] - p[bp]);
        sq += exp((double)q[i] - q[bq]);
    }
    double lp = p[bp] + log(sp), lq = q[bq] + log(sq), kl = 0.0;
    for (size_t i = 0; i < n; i++) {
        double a = (double)p[i] - lp, b = (double)q[i] - lq;
        kl += exp(a) * (a - b);
    }
    *ap = bp;
    *aq = bq;
    return kl;
}

static int run_model(const char *path, const char *ids_path, double min_top1, double max_kl,
                     const char *other)
{
    int other_mode = CPU_MODE_FAST;
    while (other && other_mode >= 0 && strcmp(cpu_mode_name((enum cpu_mode)other_mode), other) != 0)
        other_mode--;
    if (other_mode < 0)
        return fprintf(stderr, "fast_check: no mode '%s'\n", other), 2;
    FILE *f = fopen(ids_path, "r");
    if (!f)
        return fprintf(stderr, "fast_check: cannot open '%s'\n", ids_path), 2;
    size_t n = 0, cap = 1024;
    int32_t *ids = xmalloc(cap * sizeof(int32_t));
    long v;
    while (fscanf(f, "%ld", &v) == 1) {
        if (n == cap)
            ids = xrealloc(ids, (cap *= 2) * sizeof(int32_t));
        ids[n++] = (int32_t)v;
    }
    fclose(f);
    struct pv_err err;
    struct pv_model *model;
    if (n < 2 || pv_model_load(path, NULL, &model, &err) != PV_OK)
        return fprintf(stderr, "fast_check: %s\n", n < 2 ? "fewer than 2 ids" : err.msg), 2;
    size_t nv = pv_model_n_vocab(model);
    const char *exact_name = cpu_features();
    float *ref = eval_all(model, ids, n);
    if (!cpu_kernels_use((enum cpu_mode)other_mode))
        return fprintf(stderr, "fast_check: this CPU cannot run '%s'\n", other), 2;
    const char *other_name = cpu_features();
    float *fast = eval_all(model, ids, n);
    cpu_kernels_select(false);
    if (!ref || !fast)
        return 2;
    size_t agree = 0;
    double kl_sum = 0.0, kl_max = 0.0;
    bool finite = true;
    for (size_t r = 0; r < n; r++) {
        size_t a, b;
        double kl = kl_div(ref + r * nv, fast + r * nv, nv, &a, &b);
        finite &= isfinite(kl);
        agree += a == b;
        kl_sum += kl;
        kl_max = kl > kl_max ? kl : kl_max;
    }
    double top1 = (double)agree / (double)n, mean = kl_sum / (double)n;
    bool ok = finite && top1 >= min_top1 && mean <= max_kl;
    printf("%s: %zu positions, %s vs %s: top-1 agreement %.4f (min %.4f), mean KL %.3g nats "
           "(max %.3g), largest %.3g: %s\n", path, n, other_name, exact_name, top1, min_top1,
           mean, max_kl, kl_max, ok ? "ok" : "FAIL");
    free(ref);
    free(fast);
    free(ids);
    pv_model_free(model);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "--model") == 0)
        return run_model(argv[2], argv[3], atof(argv[4]), atof(argv[5]), argc == 7 ? argv[6] : NULL);
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0)
        return run_bench(argc >= 3 ? atof(argv[2]) : 0.5, argc >= 4 ? atoi(argv[3]) : 0);
    if (argc != 1) {
        fprintf(stderr, "usage: fast_check [--bench [SECONDS]]\n");
        return 2;
    }
    if (!cpu_kernels_use(CPU_MODE_FAST))
        return 2;
    printf("fast_check: tier %s\n", cpu_fast_tier());
    int failed = run_checks();
    failed |= run_attention_checks();
    printf("%s\n", failed ? "fast_check: FAILED" : "fast_check: all within bounds");
    return failed;
}
