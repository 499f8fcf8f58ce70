/*
 * kernel_check.c - a test tool over the CPU kernels, driven by the tests in tests/compute/.
 *
 *   kernel_check dequant TYPE N IN OUT           raw blocks of N elements -> f32 file
 *   kernel_check matmul TYPE NE0 NE1 NT THREADS W X Y
 *                                                y[NT][NE1] = W[NE1][NE0] . x[NT][NE0]
 *   kernel_check --bench [SECONDS]               GB/s of weight streamed per GEMV, per
 *                                                type, scalar and SIMD, 1 and 2 threads
 * TYPE is a ggml type id. Files are raw little-endian bytes. Exit status 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

static void *read_file(const char *path, size_t want)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kernel_check: cannot open '%s'\n", path);
        return NULL;
    }
    void *p = xmalloc(want ? want : 1);
    size_t got = fread(p, 1, want, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != want || extra != EOF) {
        fprintf(stderr, "kernel_check: '%s' is not %zu bytes\n", path, want);
        free(p);
        return NULL;
    }
    return p;
}

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "kernel_check: cannot write '%s'\n", path);
        return 1;
    }
    return 0;
}

static bool parse_type(const char *s, int64_t n, uint32_t *type)
{
    long t;
    if (!parse_long(s, 0, PV_TYPE_COUNT - 1, &t) || cpu_type_blck((uint32_t)t) == 0 ||
        cpu_dot_type((uint32_t)t) == PV_TYPE_COUNT) {
        fprintf(stderr, "kernel_check: unsupported type '%s'\n", s);
        return false;
    }
    if (n % cpu_type_blck((uint32_t)t) != 0) {
        fprintf(stderr, "kernel_check: %lld is not a multiple of the block size\n", (long long)n);
        return false;
    }
    *type = (uint32_t)t;
    return true;
}

static int cmd_dequant(char **argv)
{
    long n;
    uint32_t type;
    if (!parse_long(argv[1], 1, 1L << 30, &n) || !parse_type(argv[0], n, &type))
        return 2;
    void *in = read_file(argv[2], cpu_row_bytes(type, n));
    if (!in)
        return 1;
    float *out = xmalloc((size_t)n * sizeof(float));
    cpu_dequantize_row(type, in, out, n);
    int rc = write_file(argv[3], out, (size_t)n * sizeof(float));
    free(in);
    free(out);
    return rc;
}

static int cmd_matmul(char **argv)
{
    long ne0, ne1, nt, nth;
    uint32_t type;
    if (!parse_long(argv[1], 1, 1L << 24, &ne0) || !parse_long(argv[2], 1, 1L << 24, &ne1) ||
        !parse_long(argv[3], 1, 4096, &nt) || !parse_long(argv[4], 1, 64, &nth) ||
        !parse_type(argv[0], ne0, &type))
        return 2;
    size_t row_bytes = cpu_row_bytes(type, ne0);
    void *w = read_file(argv[5], row_bytes * (size_t)ne1);
    float *x = read_file(argv[6], sizeof(float) * (size_t)ne0 * (size_t)nt);
    if (!w || !x)
        return 1;
    float *y = xmalloc(sizeof(float) * (size_t)ne1 * (size_t)nt);
    struct pv_tensor W = {.name = "w", .type = type, .n_dims = 2, .ne = {ne0, ne1, 1, 1},
                          .row_bytes = row_bytes, .n_bytes = row_bytes * (size_t)ne1, .data = w};
    struct pv_pool *pool = pool_new((int)nth);
    cpu_matmul(pool, &W, x, y, (int)nt);
    pool_free(pool);
    int rc = write_file(argv[7], y, sizeof(float) * (size_t)ne1 * (size_t)nt);
    free(w);
    free(x);
    free(y);
    return rc;
}

/* ---- bench -------------------------------------------------------------------------- */

static uint64_t bench_rng = 88172645463325252ull;

static uint32_t rnd(void)
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return (uint32_t)(bench_rng >> 11);
}

/* Random weights: random bits with every fp16 scale field small and finite. */
static void *bench_weights(uint32_t type, int64_t ne0, int64_t ne1)
{
    size_t row_bytes = cpu_row_bytes(type, ne0), n = row_bytes * (size_t)ne1;
    uint8_t *p = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
    if (type == PV_TYPE_F32 || type == PV_TYPE_F16 || type == PV_TYPE_BF16) {
        for (size_t i = 0; i < n / 2; i++)
            ((uint16_t *)p)[i] = (uint16_t)(0x3000 + (rnd() & 0x7FF)); /* finite f16/bf16/f32 */
        return p;
    }
    /* fp16 fields: the first two bytes of legacy blocks, the last 2 (4 for Q2_K) of K ones */
    size_t bb = cpu_type_bytes(type), nb = n / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = p + b * bb;
        uint16_t h = pv_f32_to_fp16(0.01f);
        if (cpu_type_blck(type) == 32) {
            memcpy(blk, &h, 2);
            if (type == PV_TYPE_Q4_1 || type == PV_TYPE_Q5_1)
                memcpy(blk + 2, &h, 2);
        } else if (type == PV_TYPE_Q4_K || type == PV_TYPE_Q5_K) {
            memcpy(blk, &h, 2);
            memcpy(blk + 2, &h, 2);
        } else {
            memcpy(blk + bb - 2, &h, 2);
            if (type == PV_TYPE_Q2_K)
                memcpy(blk + bb - 4, &h, 2);
        }
    }
    return p;
}

/* tokens of the prefill column: its GB/s counts the weight bytes once per token */
#define BENCH_BATCH 32
#define PV_STR_(x) #x
#define PV_STR(x) PV_STR_(x)

struct bench_case {
    uint32_t type;
    int64_t ne0, ne1;
    const char *what;
};

static double bench_one(struct pv_pool *pool, const struct pv_tensor *W, const float *x, float *y,
                        int n_tokens, double seconds)
{
    cpu_matmul(pool, W, x, y, n_tokens); /* warm up */
    double best = 1e30;
    uint64_t start = clock_now_ns();
    int runs = 0;
    while (runs < 3 || (double)(clock_now_ns() - start) * 1e-9 < seconds) {
        uint64_t t0 = clock_now_ns();
        cpu_matmul(pool, W, x, y, n_tokens);
        double dt = (double)(clock_now_ns() - t0) * 1e-9;
        best = dt < best ? dt : best;
        runs++;
    }
    return best;
}

static int cmd_bench(double seconds)
{
    static const struct bench_case cases[] = {
        {PV_TYPE_Q8_0, 640, 262144, "gemma LM head"}, {PV_TYPE_Q5_0, 640, 131072, "rows of 640"},
        {PV_TYPE_Q4_K, 1024, 65536, "rows of 1024"},  {PV_TYPE_Q6_K, 2048, 32768, "rows of 2048"},
        {PV_TYPE_F32, 14336, 4096, "4096x14336"},     {PV_TYPE_F16, 14336, 4096, "4096x14336"},
        {PV_TYPE_BF16, 14336, 4096, "4096x14336"},    {PV_TYPE_Q4_0, 14336, 4096, "4096x14336"},
        {PV_TYPE_Q4_1, 14336, 4096, "4096x14336"},    {PV_TYPE_Q5_0, 14336, 4096, "4096x14336"},
        {PV_TYPE_Q5_1, 14336, 4096, "4096x14336"},    {PV_TYPE_Q8_0, 14336, 4096, "4096x14336"},
        {PV_TYPE_Q2_K, 14336, 4096, "4096x14336"},    {PV_TYPE_Q3_K, 14336, 4096, "4096x14336"},
        {PV_TYPE_Q4_K, 14336, 4096, "4096x14336"},    {PV_TYPE_Q5_K, 14336, 4096, "4096x14336"},
        {PV_TYPE_Q6_K, 14336, 4096, "4096x14336"},
    };
    const char *names[PV_TYPE_COUNT] = {0};
    names[PV_TYPE_F32] = "f32", names[PV_TYPE_F16] = "f16", names[PV_TYPE_BF16] = "bf16";
    names[PV_TYPE_Q4_0] = "q4_0", names[PV_TYPE_Q4_1] = "q4_1", names[PV_TYPE_Q5_0] = "q5_0";
    names[PV_TYPE_Q5_1] = "q5_1", names[PV_TYPE_Q8_0] = "q8_0", names[PV_TYPE_Q2_K] = "q2_K";
    names[PV_TYPE_Q3_K] = "q3_K", names[PV_TYPE_Q4_K] = "q4_K", names[PV_TYPE_Q5_K] = "q5_K";
    names[PV_TYPE_Q6_K] = "q6_K";
    const bool simd = strcmp(cpu_kernels_best()->name, "scalar") != 0;
    struct pv_pool *pools[2] = {pool_new(1), pool_new(2)};
    printf("GEMV, one token, GB/s of weight bytes (best of runs over %.2fs); simd = %s;\n"
           "last column: a batch of %d tokens, weight bytes x tokens per second\n",
           seconds, cpu_kernels_best()->name, BENCH_BATCH);
    printf("%-6s %-14s %8s %9s %9s %9s %9s %10s\n", "type", "shape", "MB", "scalar/1", "scalar/2",
           "simd/1", "simd/2", "simd/2x" PV_STR(BENCH_BATCH));
    for (size_t c = 0; c < PV_ARRAY_LEN(cases); c++) {
        const struct bench_case *bc = &cases[c];
        size_t row_bytes = cpu_row_bytes(bc->type, bc->ne0);
        size_t bytes = row_bytes * (size_t)bc->ne1;
        void *w = bench_weights(bc->type, bc->ne0, bc->ne1);
        float *x = xmalloc(sizeof(float) * (size_t)bc->ne0 * BENCH_BATCH);
        float *y = xmalloc(sizeof(float) * (size_t)bc->ne1 * BENCH_BATCH);
        for (int64_t i = 0; i < bc->ne0 * BENCH_BATCH; i++)
            x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
        struct pv_tensor W = {.name = "w", .type = bc->type, .n_dims = 2, .ne = {bc->ne0, bc->ne1, 1, 1},
                              .row_bytes = row_bytes, .n_bytes = bytes, .data = w};
        double gbs[4];
        for (int mode = 0; mode < 4; mode++) {
            bool use_simd = mode >= 2;
            if (use_simd && !simd) {
                gbs[mode] = 0.0;
                continue;
            }
            cpu_kernels_select(!use_simd);
            gbs[mode] = (double)bytes / bench_one(pools[mode & 1], &W, x, y, 1, seconds) * 1e-9;
        }
        /* a prefill batch: weight bytes times tokens per second */
        double batch = 0.0;
        if (simd) {
            cpu_kernels_select(false);
            batch = (double)bytes * BENCH_BATCH /
                    bench_one(pools[1], &W, x, y, BENCH_BATCH, seconds) * 1e-9;
        }
        char shape[32];
        snprintf(shape, sizeof(shape), "%lldx%lld", (long long)bc->ne1, (long long)bc->ne0);
        printf("%-6s %-14s %8.1f %9.1f %9.1f %9.1f %9.1f %10.1f   %s\n", names[bc->type], shape,
               (double)bytes / 1e6, gbs[0], gbs[1], gbs[2], gbs[3], batch, bc->what);
        fflush(stdout);
        free(w);
        free(x);
        free(y);
    }
    cpu_kernels_select(false);
    pool_free(pools[0]);
    pool_free(pools[1]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
        double seconds = 0.5;
        if (argc >= 3 && (!parse_double(argv[2], &seconds) || seconds <= 0)) {
            fprintf(stderr, "kernel_check: bad seconds '%s'\n", argv[2]);
            return 2;
        }
        return cmd_bench(seconds);
    }
    if (argc == 6 && strcmp(argv[1], "dequant") == 0)
        return cmd_dequant(argv + 2);
    if (argc == 10 && strcmp(argv[1], "matmul") == 0)
        return cmd_matmul(argv + 2);
    fprintf(stderr, "usage: kernel_check dequant TYPE N IN OUT\n"
                    "       kernel_check matmul TYPE NE0 NE1 N_TOKENS THREADS W X Y\n"
                    "       kernel_check --bench [SECONDS]\n");
    return 2;
}
