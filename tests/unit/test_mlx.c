/*
 * test_mlx.c - unit tests of the MLX directory pieces below the model: the affine
 * group kernels (every bits x group size, every kernel mode this CPU runs, against a
 * straightforward dequantize-then-dot written here), the JSON reader and the
 * safetensors reader on good and bad files.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compute/cpu/cpu.h"
#include "harness.h"
#include "model/json.h"
#include "model/safetensors.h"
#include "util/util.h"

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}
static float rndf(void) { return (float)(rnd() % 20001) / 10000.0f - 1.0f; }

/* Write q values as a little-endian bit stream of `bits` each (the MLX packing). */
static void pack_bits(const uint32_t *q, int n, uint32_t bits, uint8_t *out)
{
    memset(out, 0, (size_t)n * bits / 8);
    for (int j = 0; j < n; j++)
        for (uint32_t b = 0; b < bits; b++)
            if (q[j] >> b & 1)
                out[(j * bits + b) / 8] |= (uint8_t)(1u << ((j * bits + b) % 8));
}

static void test_mlx_types(void)
{
    CHECK(pv_type_mlx(4, 64) == PV_TYPE_MLX_Q4_G64 && pv_type_mlx(8, 64) == PV_TYPE_MLX_Q8_G64);
    CHECK(pv_type_mlx(7, 64) == PV_TYPE_COUNT && pv_type_mlx(4, 16) == PV_TYPE_COUNT);
    CHECK(pv_type_mlx_bits(PV_TYPE_MLX_Q4_G64) == 4 && pv_type_mlx_group(PV_TYPE_MLX_Q4_G64) == 64);
    CHECK(pv_type_mlx_bits(PV_TYPE_Q4_0) == 0);
    const struct pv_type_info *t = pv_type_get(pv_type_mlx(3, 128));
    CHECK(t && t->blck == 128 && t->type_bytes == 8 + 48 && strcmp(t->name, "mlx_q3_g128") == 0);
    CHECK(cpu_dot_type(PV_TYPE_MLX_Q4_G64) == PV_TYPE_F32);
}

/* Every (bits, group): dequantization exact, dots of every mode within float rounding
 * of the dequantize-then-dot sum taken in double. */
static void test_mlx_kernels(void)
{
    static const uint32_t bitss[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    enum { N = 512 };
    for (size_t bi = 0; bi < PV_ARRAY_LEN(bitss); bi++)
        for (size_t gi = 0; gi < PV_ARRAY_LEN(groups); gi++) {
            uint32_t bits = bitss[bi], gs = groups[gi], type = pv_type_mlx(bits, gs);
            size_t bb = PV_MLX_BLOCK_BYTES(bits, gs);
            uint8_t *row = xmalloc(N / gs * bb);
            uint32_t q[N];
            float want[N], x[N], got[N];
            for (uint32_t g = 0; g < N / gs; g++) {
                struct pv_block_mlx_head h = {rndf() * 0.1f, rndf()};
                for (uint32_t j = 0; j < gs; j++) {
                    q[g * gs + j] = rnd() & ((1u << bits) - 1);
                    want[g * gs + j] = h.scale * (float)q[g * gs + j] + h.bias;
                }
                memcpy(row + g * bb, &h, sizeof h);
                pack_bits(q + g * gs, (int)gs, bits, row + g * bb + 8);
            }
            cpu_dequantize_row(type, row, got, N);
            CHECK(memcmp(got, want, sizeof want) == 0);
            double ref = 0, mag = 0;
            for (int i = 0; i < N; i++) {
                x[i] = rndf();
                ref += (double)want[i] * x[i];
                mag += fabs((double)want[i] * x[i]);
            }
            for (int m = 0; m < CPU_MODE_COUNT; m++) {
                const struct cpu_kernels *k = cpu_kernels_mode((enum cpu_mode)m);
                if (!k)
                    continue;
                float s = NAN;
                CHECK(k->vec_dot[type] != NULL);
                k->vec_dot[type](N, &s, row, x);
                /* f32 sums of N terms: error below N * 2^-24 of the magnitudes */
                CHECK_NEAR(s, ref, mag * N * 6e-8 + 1e-6);
                if (k->vec_dot_multi[type]) { /* a batch: the bits of single tokens */
                    static float xs[3][N];
                    float one[3], multi[3 * 2];
                    for (int t = 0; t < 3; t++) {
                        for (int i = 0; i < N; i++)
                            xs[t][i] = rndf();
                        k->vec_dot[type](N, &one[t], row, xs[t]);
                    }
                    k->vec_dot_multi[type](N, multi, 2, row, xs, sizeof xs[0], 3);
                    for (int t = 0; t < 3; t++)
                        CHECK(memcmp(&multi[2 * t], &one[t], sizeof(float)) == 0);
                }
            }
            free(row);
        }
}

/* cpu_matmul over an MLX tensor: rows x tokens against the dequantized reference. */
static void test_mlx_matmul(void)
{
    enum { K = 256, R = 24, T = 5 };
    uint32_t type = pv_type_mlx(4, 32);
    size_t row_bytes = cpu_row_bytes(type, K);
    uint8_t *w = xmalloc(row_bytes * R);
    for (size_t i = 0; i < row_bytes * R; i++)
        w[i] = (uint8_t)rnd();
    for (int r = 0; r < R; r++) /* sane scales and biases */
        for (int g = 0; g < K / 32; g++) {
            struct pv_block_mlx_head h = {rndf() * 0.1f, rndf()};
            memcpy(w + r * row_bytes + g * PV_MLX_BLOCK_BYTES(4, 32), &h, sizeof h);
        }
    struct pv_tensor W = {.name = "w", .type = type, .n_dims = 2, .ne = {K, R, 1, 1},
                          .row_bytes = row_bytes, .n_bytes = row_bytes * R, .data = w};
    float x[T * K], y[T * R], deq[K];
    for (int i = 0; i < T * K; i++)
        x[i] = rndf();
    struct pv_pool *pool = pool_new(2);
    cpu_matmul(pool, &W, x, y, T);
    for (int r = 0; r < R; r++) {
        cpu_dequantize_row(type, w + r * row_bytes, deq, K);
        for (int t = 0; t < T; t++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                ref += (double)deq[k] * x[t * K + k];
                mag += fabs((double)deq[k] * x[t * K + k]);
            }
            CHECK_NEAR(y[t * R + r], ref, mag * K * 6e-8 + 1e-6);
        }
    }
    pool_free(pool);
    free(w);
}

static bool parse(const char *text, struct pv_arena *a, struct json **out, char *msg)
{
    return json_parse(text, strlen(text), a, out, msg, 128);
}

static void test_json(void)
{
    struct pv_arena a;
    struct json *v;
    char msg[128];
    arena_init(&a, 4096);
    CHECK(parse("{\"a\": [1, 2.5e1, -3], \"b\": {\"c\": \"x\\u00e9\\ud83d\\ude00\\n\"}, "
                "\"t\": true, \"n\": null, \"big\": 18446744073709551615}", &a, &v, msg));
    const struct json *arr = json_get(v, "a");
    CHECK(arr && arr->type == JSON_ARRAY && arr->n == 3 && json_num(&arr->items[1]) == 25.0);
    const char *s = NULL;
    CHECK(json_get_str(json_get(v, "b"), "c", &s) && strcmp(s, "x\xc3\xa9\xf0\x9f\x98\x80\n") == 0);
    bool b = false;
    CHECK(json_get_bool(v, "t", &b) && b);
    uint64_t u = 0;
    CHECK(json_u64(json_get(v, "big"), &u) && u == UINT64_MAX);
    CHECK(!json_u64(&arr->items[2], &u) && !json_u64(&arr->items[1], &u));
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "\"\\x\"", "\"\\ud800\"",
        "\"a\x01\"", "\"\xff\"", "nul", "[1] 2", "{\"a\":\"\\udc00\"}", "-", "\"abc",
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(bad); i++) {
        msg[0] = 0;
        CHECK(!parse(bad[i], &a, &v, msg) && msg[0] != 0);
    }
    char deep[200];
    memset(deep, '[', sizeof deep);
    CHECK(!json_parse(deep, sizeof deep, &a, &v, msg, sizeof msg) && strstr(msg, "deep"));
    arena_release(&a);
}

/* ---- safetensors ------------------------------------------------------------------ */

static char st_tmp_path[64];

/* Write a safetensors file: 8-byte header length, header, then `data_bytes` of data. */
static void write_st(const char *header, size_t data_bytes, int64_t len_override)
{
    FILE *f = fopen(st_tmp_path, "wb");
    uint64_t n = len_override >= 0 ? (uint64_t)len_override : strlen(header);
    fwrite(&n, 8, 1, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_bytes; i++)
        fputc((int)(i & 0xff), f);
    fclose(f);
}

static enum pv_status open_st(struct st_file **f, struct pv_err *err)
{
    memset(err, 0, sizeof *err);
    return st_open(st_tmp_path, f, err);
}

static void test_safetensors(void)
{
    struct st_file *f;
    struct pv_err err;
    snprintf(st_tmp_path, sizeof st_tmp_path, "/tmp/pv-test-st-%d.safetensors", (int)getpid());

    write_st("{\"__metadata__\": {\"format\": \"mlx\"}, "
             "\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}, "
             "\"b\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [24, 32]}, "
             "\"c\": {\"dtype\": \"U32\", \"shape\": [2, 1], \"data_offsets\": [32, 40]}}",
             40, -1);
    CHECK(open_st(&f, &err) == PV_OK);
    if (f) {
        CHECK_EQ_INT(st_n_tensors(f), 3);
        const struct st_tensor *t = st_find(f, "a");
        CHECK(t && t->dtype == ST_F32 && t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
              t->n_bytes == 24);
        t = st_find(f, "c");
        CHECK(t && t->dtype == ST_U32 && ((const uint8_t *)t->data)[0] == 32);
        CHECK(st_find(f, "zz") == NULL);
        const char *fmt = NULL;
        CHECK(st_metadata(f, "format", &fmt) && strcmp(fmt, "mlx") == 0);
        st_close(f);
    }

    static const struct {
        const char *header;
        size_t data;
        int64_t len;
        const char *msg;
    } bad[] = {
        {"{}", 0, 1000, "header length"},
        {"{\"a\": 1}", 0, -1, "not an object"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", 8, -1, "header"},
        {"{\"a\": {\"dtype\": \"Q9\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, -1, "dtype"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, -1, "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, -1, "end of the file"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, -1, "overlap"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, -1, "offsets"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, -1, "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16, -1, "twice"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
         "\"data_offsets\": [0, 8]}}", 8, -1, "shape"},
        {"{\"a\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, -1, "dtype"},
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(bad); i++) {
        write_st(bad[i].header, bad[i].data, bad[i].len);
        f = NULL;
        enum pv_status st = open_st(&f, &err);
        CHECK(st != PV_OK && f == NULL);
        if (!strstr(err.msg, bad[i].msg)) {
            fprintf(stderr, "  case %zu: '%s' not in: %s\n", i, bad[i].msg, err.msg);
            CHECK(false);
        }
    }
    /* every truncation of a good file fails cleanly */
    write_st("{\"a\": {\"dtype\": \"F16\", \"shape\": [2, 2], \"data_offsets\": [0, 8]}}", 8, -1);
    FILE *fp = fopen(st_tmp_path, "rb");
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    for (size_t cut = 0; cut < n; cut++) {
        fp = fopen(st_tmp_path, "wb");
        fwrite(buf, 1, cut, fp);
        fclose(fp);
        f = NULL;
        CHECK(open_st(&f, &err) != PV_OK && f == NULL && err.msg[0]);
    }
    unlink(st_tmp_path);
}

TESTS(TEST_ENTRY(test_mlx_types), TEST_ENTRY(test_mlx_kernels), TEST_ENTRY(test_mlx_matmul),
      TEST_ENTRY(test_json), TEST_ENTRY(test_safetensors))
