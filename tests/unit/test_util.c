/*
 * test_util.c - unit tests of the util module: status table, error detail, checked
 * arithmetic, arenas, buffers, number parsing and the thread pool.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "harness.h"
#include "util/util.h"

static void test_status_table(void)
{
    CHECK_EQ_STR(pv_status_name(PV_OK), "ok");
    CHECK_EQ_STR(pv_status_name(PV_ERR_FORMAT), "format");
    CHECK_EQ_INT(pv_status_http(PV_ERR_NOT_FOUND), 404);
    CHECK_EQ_INT(pv_status_http(PV_ERR_OVERLOADED), 529);
    CHECK_EQ_INT(pv_status_http(PV_ERR_TOO_LARGE), 413);
    CHECK_EQ_STR(pv_status_anthropic_type(PV_ERR_AUTH), "authentication_error");
    CHECK_EQ_STR(pv_status_anthropic_type(PV_ERR_TOO_LARGE), "request_too_large");
    CHECK_EQ_STR(pv_status_name((enum pv_status)-999), "unknown");
    CHECK_EQ_INT(pv_status_http((enum pv_status)-999), 500);
}

static enum pv_status fails_with_detail(struct pv_err *err)
{
    return pv_err_set(err, PV_ERR_FORMAT, "tensor '%s' out of bounds", "blk.0.attn_q.weight");
}

static void test_err_set(void)
{
    struct pv_err err;
    pv_err_clear(&err);
    CHECK_EQ_INT(err.status, PV_OK);
    CHECK_EQ_INT(fails_with_detail(&err), PV_ERR_FORMAT);
    CHECK_EQ_STR(err.msg, "tensor 'blk.0.attn_q.weight' out of bounds");
    CHECK_EQ_INT(fails_with_detail(NULL), PV_ERR_FORMAT);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pv_err_set(&err, PV_ERR_INVALID, "%s", big);
    CHECK_EQ_INT(strlen(err.msg), PV_ERR_MSG_MAX - 1);
}

static void test_checked_arithmetic(void)
{
    size_t r;
    CHECK(!pv_add_overflow(1, 2, &r) && r == 3);
    CHECK(pv_add_overflow(SIZE_MAX, 1, &r));
    CHECK(pv_mul_overflow(SIZE_MAX / 2 + 1, 2, &r));
    CHECK(!pv_align_overflow(33, 32, &r) && r == 64);
    CHECK(!pv_align_overflow(64, 32, &r) && r == 64);
    CHECK(pv_align_overflow(SIZE_MAX - 3, 32, &r));
}

static void test_arena(void)
{
    struct pv_arena a;
    arena_init(&a, 128);
    char *s = arena_strdup(&a, "hello");
    CHECK_EQ_STR(s, "hello");
    for (int i = 0; i < 100; i++) {
        unsigned char *p = arena_alloc(&a, (size_t)i * 7 + 1);
        CHECK(p && ((uintptr_t)p & 15) == 0);
        memset(p, 0xab, (size_t)i * 7 + 1);
    }
    char *big = arena_alloc(&a, 10000);
    CHECK(big != NULL);
    memset(big, 1, 10000);
    CHECK_EQ_STR(s, "hello");
    CHECK(arena_alloc(&a, SIZE_MAX - 4) == NULL);
    CHECK(arena_calloc(&a, SIZE_MAX / 2, 4) == NULL);
    int *z = arena_calloc(&a, 10, sizeof(int));
    CHECK(z && z[9] == 0);
    arena_release(&a);
    CHECK(a.head == NULL && a.used_bytes == 0);
}

static void test_buf(void)
{
    struct pv_buf b = PV_BUF_INIT;
    CHECK_EQ_STR(b.data, "");
    CHECK(buf_puts(&b, "abc"));
    CHECK(buf_printf(&b, "-%d-", 42));
    CHECK_EQ_STR(b.data, "abc-42-");
    CHECK_EQ_INT(b.len, 7);
    char long_text[1000];
    memset(long_text, 'y', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    CHECK(buf_printf(&b, "%s", long_text));
    CHECK_EQ_INT(b.len, 7 + 999);
    CHECK_EQ_INT(b.data[b.len], '\0');
    CHECK(!buf_reserve(&b, SIZE_MAX - 2));
    CHECK_EQ_INT(b.len, 1006);
    buf_reset(&b);
    CHECK_EQ_STR(b.data, "");
    CHECK(buf_putc(&b, 'z'));
    size_t len;
    char *owned = buf_detach(&b, &len);
    CHECK_EQ_STR(owned, "z");
    CHECK_EQ_INT(len, 1);
    CHECK_EQ_STR(b.data, "");
    free(owned);
    buf_release(&b);
}

static void test_parse(void)
{
    long v;
    double d;
    CHECK(parse_long("42", 0, 100, &v) && v == 42);
    CHECK(!parse_long("42x", 0, 100, &v));
    CHECK(!parse_long("", 0, 100, &v));
    CHECK(!parse_long("101", 0, 100, &v));
    CHECK(!parse_long("99999999999999999999999", 0, 100, &v));
    CHECK(parse_double("0.7", &d) && d == 0.7);
    CHECK(!parse_double("nan", &d));
    CHECK(!parse_double("1e999", &d));
    char out[32];
    format_bytes(1536, out, sizeof(out));
    CHECK_EQ_STR(out, "1.5 KiB");
    format_bytes(12, out, sizeof(out));
    CHECK_EQ_STR(out, "12 B");
}

struct pool_job {
    atomic_long sum;
    atomic_int calls;
    size_t n;
};

static void pool_sum(void *ctx, int ith, int nth)
{
    struct pool_job *job = ctx;
    size_t b, e;
    pool_split(job->n, ith, nth, &b, &e);
    long s = 0;
    for (size_t i = b; i < e; i++)
        s += (long)i;
    atomic_fetch_add(&job->sum, s);
    atomic_fetch_add(&job->calls, 1);
}

static void test_pool(void)
{
    for (int threads = 1; threads <= 4; threads++) {
        struct pv_pool *pool = pool_new(threads);
        CHECK_EQ_INT(pool_size(pool), threads);
        for (int round = 0; round < 200; round++) {
            struct pool_job job = {.n = 1000 + (size_t)round};
            pool_run(pool, pool_sum, &job);
            CHECK_EQ_INT(atomic_load(&job.sum), (long)job.n * ((long)job.n - 1) / 2);
            CHECK_EQ_INT(atomic_load(&job.calls), threads);
        }
        pool_free(pool);
    }
    size_t b, e, covered = 0;
    for (int i = 0; i < 3; i++) {
        pool_split(10, i, 3, &b, &e);
        CHECK_EQ_INT(b, covered);
        covered = e;
    }
    CHECK_EQ_INT(covered, 10);
    CHECK(cpu_count() >= 1);
}

static void test_models_dir(void)
{
    char out[256];
    setenv("PENSIEVE_MODELS", "/tmp/pv-models", 1);
    CHECK(pv_models_dir(out, sizeof(out)) == PV_OK);
    CHECK_EQ_STR(out, "/tmp/pv-models");
    unsetenv("PENSIEVE_MODELS");
    setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
    CHECK(pv_models_dir(out, sizeof(out)) == PV_OK);
    CHECK_EQ_STR(out, "/tmp/xdg/pensieve/models");
    CHECK(pv_models_dir(out, 4) == PV_ERR_INVALID);
    unsetenv("XDG_CACHE_HOME");
}

/* FIPS 180-4 example vectors, fed whole and in uneven pieces. */
static void test_sha256(void)
{
    static const struct {
        const char *in;
        const char *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    struct sha256 s;
    for (size_t i = 0; i < PV_ARRAY_LEN(v); i++) {
        sha256_init(&s);
        sha256_update(&s, v[i].in, strlen(v[i].in));
        sha256_final_hex(&s, hex);
        CHECK_EQ_STR(hex, v[i].hex);
        sha256_init(&s);
        for (size_t k = 0, step = 1; k < strlen(v[i].in); k += step, step = step * 2 + 1)
            sha256_update(&s, v[i].in + k, PV_MIN(step, strlen(v[i].in) - k));
        sha256_final_hex(&s, hex);
        CHECK_EQ_STR(hex, v[i].hex);
    }
    /* one million 'a': many blocks */
    static char a[1000];
    memset(a, 'a', sizeof(a));
    sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        sha256_update(&s, a, sizeof(a));
    sha256_final_hex(&s, hex);
    CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_suggest(void)
{
    const char *opts[] = {"temperature", "top-k", "ctx-size", "threads"};
    CHECK_EQ_STR(suggest_closest("tempreature", opts, 4), "temperature"); /* swap */
    CHECK_EQ_STR(suggest_closest("threds", opts, 4), "threads");
    CHECK_EQ_STR(suggest_closest("TOP-K", opts, 4), "top-k");
    CHECK(suggest_closest("frobnicate", opts, 4) == NULL);
    const char *models[] = {"gemma-3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m"};
    CHECK_EQ_STR(suggest_closest("gemma", models, 2), "gemma-3-270m-q4_k_m"); /* a part */
    CHECK(suggest_closest("q4_k_m", models, 2) == NULL);                    /* in both */
    CHECK(suggest_closest("x", models, 0) == NULL);
}

TESTS(TEST_ENTRY(test_status_table), TEST_ENTRY(test_err_set),
      TEST_ENTRY(test_checked_arithmetic), TEST_ENTRY(test_arena), TEST_ENTRY(test_buf),
      TEST_ENTRY(test_parse), TEST_ENTRY(test_pool), TEST_ENTRY(test_models_dir),
      TEST_ENTRY(test_sha256), TEST_ENTRY(test_suggest))
