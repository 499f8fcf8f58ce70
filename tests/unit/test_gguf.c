/*
 * test_gguf.c - unit tests of the GGUF reader (model/gguf.c) and the type table.
 *
 * Builds a small valid GGUF image in memory (recording where each field sits), checks
 * every accessor on it, then feeds the reader a corpus of malformed variants: every
 * prefix of the file, and byte patches of counts, lengths, types, shapes, offsets and
 * the alignment. Each must fail with FORMAT or UNSUPPORTED and a message naming the
 * file, never crash (ASan/UBSan) or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "model/gguf.h"
#include "util/util.h"

/* ---- a GGUF image builder --------------------------------------------------------- */

struct img {
    uint8_t b[4096];
    size_t n;
    /* offsets of fields the malformed cases patch */
    size_t n_tensors_at, n_kv_at;
    size_t key0_len_at, key_ab_at, type_u8_at, arr_str_count_at, arr_str_etype_at;
    size_t arr_i32_count_at, align_type_at, align_val_at, str_val_len_at;
    size_t t_name_at[2], t_ndims_at[2], t_ne_at[2], t_type_at[2], t_off_at[2];
    size_t data_at;
};

static void put(struct img *m, const void *p, size_t n)
{
    PV_ASSERT(m->n + n <= sizeof m->b);
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
static void put_u32(struct img *m, uint32_t v) { put(m, &v, 4); }
static void put_u64(struct img *m, uint64_t v) { put(m, &v, 8); }
static void put_str(struct img *m, const char *s)
{
    put_u64(m, strlen(s));
    put(m, s, strlen(s));
}
static void patch_u32(struct img *m, size_t at, uint32_t v) { memcpy(m->b + at, &v, 4); }
static void patch_u64(struct img *m, size_t at, uint64_t v) { memcpy(m->b + at, &v, 8); }

/*
 * The valid image: 9 keys of most value types and 2 tensors, f32 [4, 2] at offset 0 and
 * q8_0 [32, 2] at offset 32, ending exactly at the end of the file.
 */
static void build(struct img *m, uint32_t alignment)
{
    memset(m, 0, sizeof *m);
    put(m, "GGUF", 4);
    put_u32(m, 3);
    m->n_tensors_at = m->n;
    put_u64(m, 2);
    m->n_kv_at = m->n;
    put_u64(m, 9);

    m->key0_len_at = m->n;
    put_str(m, "general.architecture");
    put_u32(m, GGUF_STRING);
    m->str_val_len_at = m->n;
    put_str(m, "llama");

    m->align_type_at = m->n + 8 + strlen("general.alignment");
    put_str(m, "general.alignment");
    put_u32(m, GGUF_U32);
    m->align_val_at = m->n;
    put_u32(m, alignment);

    put_str(m, "k.aa");
    m->type_u8_at = m->n;
    put_u32(m, GGUF_U8);
    put(m, "\x07", 1);

    m->key_ab_at = m->n + 8;
    put_str(m, "k.ab");
    put_u32(m, GGUF_I32);
    int32_t neg = -5;
    put(m, &neg, 4);

    put_str(m, "k.f64");
    put_u32(m, GGUF_F64);
    double d = 0.25;
    put(m, &d, 8);

    put_str(m, "k.bool");
    put_u32(m, GGUF_BOOL);
    put(m, "\x01", 1);

    put_str(m, "k.u64");
    put_u32(m, GGUF_U64);
    put_u64(m, 5000000000ull);

    put_str(m, "tokenizer.ggml.tokens");
    put_u32(m, GGUF_ARRAY);
    m->arr_str_etype_at = m->n;
    put_u32(m, GGUF_STRING);
    m->arr_str_count_at = m->n;
    put_u64(m, 3);
    put_str(m, "a");
    put_str(m, "bc");
    put_str(m, "");

    put_str(m, "tokenizer.ggml.token_type");
    put_u32(m, GGUF_ARRAY);
    put_u32(m, GGUF_I32);
    m->arr_i32_count_at = m->n;
    put_u64(m, 3);
    int32_t tt[3] = {1, -2, 6};
    put(m, tt, sizeof tt);

    static const char *const names[2] = {"t.a", "t.b"};
    static const uint32_t types[2] = {PV_TYPE_F32, PV_TYPE_Q8_0};
    static const uint64_t ne[2][2] = {{4, 2}, {32, 2}};
    static const uint64_t offs[2] = {0, 32};
    for (int i = 0; i < 2; i++) {
        m->t_name_at[i] = m->n;
        put_str(m, names[i]);
        m->t_ndims_at[i] = m->n;
        put_u32(m, 2);
        m->t_ne_at[i] = m->n;
        put_u64(m, ne[i][0]);
        put_u64(m, ne[i][1]);
        m->t_type_at[i] = m->n;
        put_u32(m, types[i]);
        m->t_off_at[i] = m->n;
        put_u64(m, offs[i] * (alignment / 32 ? alignment / 32 : 1));
    }
    while (m->n % alignment)
        put(m, "", 1);
    m->data_at = m->n;
    for (int i = 0; i < 8; i++) {
        float v = (float)i + 0.5f;
        put(m, &v, 4);
    }
    while ((m->n - m->data_at) % alignment)
        put(m, "", 1);
    for (int i = 0; i < 68; i++)
        put(m, &(uint8_t){(uint8_t)i}, 1);
}

static char tmp_path[64];

static const char *write_tmp(const uint8_t *p, size_t n)
{
    snprintf(tmp_path, sizeof tmp_path, "%s/pv_test_gguf_%d.gguf",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    FILE *f = fopen(tmp_path, "wb");
    PV_ASSERT(f);
    if (n)
        PV_ASSERT(fwrite(p, 1, n, f) == n);
    fclose(f);
    return tmp_path;
}

/* Open bytes; returns the status, the message in err. Closes on success. */
static enum pv_status open_bytes(const uint8_t *p, size_t n, struct pv_err *err)
{
    struct gguf_file *f = (struct gguf_file *)1;
    pv_err_clear(err);
    enum pv_status st = gguf_open(write_tmp(p, n), &f, err);
    if (st == PV_OK)
        gguf_close(f);
    else
        CHECK(f == NULL);
    return st;
}

/* The patched image must fail with `want` and a message that mentions `needle`. */
static void expect_fail(const struct img *m, enum pv_status want, const char *needle,
                        const char *label)
{
    struct pv_err err;
    enum pv_status st = open_bytes(m->b, m->n, &err);
    if (st != want || !strstr(err.msg, tmp_path) || (needle && !strstr(err.msg, needle))) {
        harness_failed_checks++;
        fprintf(stderr, "  %s: status %s (want %s), message: %s\n", label, pv_status_name(st),
                pv_status_name(want), err.msg);
    }
}

/* ---- the valid file --------------------------------------------------------------- */

static void test_valid_file(void)
{
    struct img m;
    struct gguf_file *f;
    struct pv_err err = {0};
    struct gguf_str s;
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f32;
    bool b;
    double dv;
    enum gguf_vtype et;

    build(&m, 32);
    CHECK_EQ_INT(gguf_open(write_tmp(m.b, m.n), &f, &err), PV_OK);
    if (!f) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_file_bytes(f), m.n);
    CHECK_EQ_INT(gguf_alignment(f), 32);
    CHECK_EQ_INT(gguf_data_offset(f), m.data_at);
    CHECK_EQ_INT(gguf_n_kv(f), 9);
    CHECK_EQ_STR(gguf_path(f), tmp_path);

    CHECK(gguf_get_str(f, "general.architecture", &s) && s.n == 5 && !memcmp(s.p, "llama", 5));
    CHECK_EQ_INT(gguf_find_key(f, "general.architecture"), 0);
    CHECK_EQ_INT(gguf_find_key(f, "missing"), -1);
    CHECK_EQ_INT(gguf_find_key(f, "k.a"), -1);
    s = gguf_key_name(f, 2);
    CHECK(s.n == 4 && !memcmp(s.p, "k.aa", 4));
    CHECK_EQ_INT(gguf_kv_type(f, 2), GGUF_U8);

    /* integer getters convert between integer types when the value fits */
    CHECK(gguf_get_u32(f, "k.aa", &u32) && u32 == 7);
    CHECK(gguf_get_i64(f, "k.aa", &i64) && i64 == 7);
    u32 = 99;
    CHECK(!gguf_get_u32(f, "k.ab", &u32) && u32 == 99); /* -5 does not fit */
    CHECK(!gguf_get_u64(f, "k.ab", &u64));
    CHECK(gguf_get_i64(f, "k.ab", &i64) && i64 == -5);
    CHECK(!gguf_get_u32(f, "k.u64", &u32));
    CHECK(gguf_get_u64(f, "k.u64", &u64) && u64 == 5000000000ull);
    CHECK(!gguf_get_u32(f, "general.architecture", &u32));
    CHECK(!gguf_get_u32(f, "k.bool", &u32));
    CHECK(!gguf_get_u32(f, "k.f64", &u32));
    CHECK(gguf_get_f32(f, "k.f64", &f32) && f32 == 0.25f);
    CHECK(!gguf_get_f32(f, "k.aa", &f32));
    CHECK(gguf_get_bool(f, "k.bool", &b) && b);
    CHECK(!gguf_get_bool(f, "k.aa", &b));
    CHECK(!gguf_get_str(f, "k.aa", &s));

    /* arrays */
    CHECK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &u64) && et == GGUF_STRING &&
          u64 == 3);
    CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &s) && s.n == 2 &&
          !memcmp(s.p, "bc", 2));
    CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 2, &s) && s.n == 0);
    CHECK(!gguf_get_arr_str(f, "tokenizer.ggml.tokens", 3, &s));
    CHECK(!gguf_get_arr_num(f, "tokenizer.ggml.tokens", 0, &dv));
    CHECK(gguf_get_arr_data(f, "tokenizer.ggml.tokens") == NULL);
    CHECK(gguf_get_arr_info(f, "tokenizer.ggml.token_type", &et, &u64) && et == GGUF_I32);
    CHECK(gguf_get_arr_num(f, "tokenizer.ggml.token_type", 1, &dv) && dv == -2);
    CHECK(!gguf_get_arr_num(f, "tokenizer.ggml.token_type", 3, &dv));
    CHECK(!gguf_get_arr_str(f, "tokenizer.ggml.token_type", 0, &s));
    const uint8_t *tt = gguf_get_arr_data(f, "tokenizer.ggml.token_type");
    int32_t t2 = 0;
    if (tt)
        memcpy(&t2, tt + 8, 4); /* unaligned in the file: read with memcpy */
    CHECK(tt && t2 == 6);
    CHECK(!gguf_get_arr_info(f, "k.aa", &et, &u64));

    /* tensors */
    CHECK_EQ_INT(gguf_n_tensors(f), 2);
    CHECK_EQ_INT(gguf_find_tensor(f, "t.b"), 1);
    CHECK_EQ_INT(gguf_find_tensor(f, "t."), -1);
    CHECK(gguf_tensor(f, 2) == NULL && gguf_tensor(f, -1) == NULL);
    const struct pv_tensor *a = gguf_tensor(f, 0), *q = gguf_tensor(f, 1);
    CHECK_EQ_STR(a->name, "t.a");
    CHECK_EQ_INT(a->type, PV_TYPE_F32);
    CHECK_EQ_INT(a->n_dims, 2);
    CHECK(a->ne[0] == 4 && a->ne[1] == 2 && a->ne[2] == 1 && a->ne[3] == 1);
    CHECK_EQ_INT(a->row_bytes, 16);
    CHECK_EQ_INT(a->n_bytes, 32);
    CHECK(((const float *)a->data)[5] == 5.5f);
    CHECK((const uint8_t *)a->data - (const uint8_t *)gguf_map(f) == (ptrdiff_t)m.data_at);
    CHECK_EQ_STR(q->name, "t.b");
    CHECK_EQ_INT(q->row_bytes, 34);
    CHECK_EQ_INT(q->n_bytes, 68);
    CHECK(((const uint8_t *)q->data)[67] == 67);
    gguf_close(f);
}

static void test_custom_alignment(void)
{
    struct img m;
    struct gguf_file *f;
    struct pv_err err = {0};
    build(&m, 64);
    CHECK_EQ_INT(gguf_open(write_tmp(m.b, m.n), &f, &err), PV_OK);
    if (f) {
        CHECK_EQ_INT(gguf_alignment(f), 64);
        CHECK_EQ_INT(gguf_data_offset(f) % 64, 0);
        CHECK(((const uint8_t *)gguf_tensor(f, 1)->data)[1] == 1);
        gguf_close(f);
    }
    /* an offset aligned to 32 but not to 64 */
    patch_u64(&m, m.t_off_at[1], 32);
    expect_fail(&m, PV_ERR_FORMAT, "not a multiple of the alignment 64", "offset vs alignment");
}

/* ---- malformed files -------------------------------------------------------------- */

static void test_every_prefix_fails(void)
{
    struct img m;
    build(&m, 32);
    int bad = 0;
    for (size_t n = 0; n < m.n; n++) {
        struct pv_err err;
        enum pv_status st = open_bytes(m.b, n, &err);
        if (st != PV_ERR_FORMAT || err.msg[0] == '\0' || !strstr(err.msg, tmp_path)) {
            if (bad++ < 5)
                fprintf(stderr, "  prefix %zu: status %s, message: %s\n", n, pv_status_name(st),
                        err.msg);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_header_errors(void)
{
    struct img m;
    build(&m, 32);
    memcpy(m.b, "GGUG", 4);
    expect_fail(&m, PV_ERR_FORMAT, "bad magic", "bad magic");
    build(&m, 32);
    memcpy(m.b, "FUGG", 4);
    expect_fail(&m, PV_ERR_UNSUPPORTED, "big-endian", "byte-swapped magic");
    build(&m, 32);
    patch_u32(&m, 4, 1);
    expect_fail(&m, PV_ERR_UNSUPPORTED, "version 1", "version 1");
    build(&m, 32);
    patch_u32(&m, 4, 0x03000000u);
    expect_fail(&m, PV_ERR_UNSUPPORTED, "byte-swapped", "byte-swapped version");
    build(&m, 32);
    patch_u32(&m, 4, 4);
    expect_fail(&m, PV_ERR_UNSUPPORTED, "version 4", "version 4");
    build(&m, 32);
    patch_u64(&m, m.n_kv_at, UINT64_MAX);
    expect_fail(&m, PV_ERR_FORMAT, "key count", "huge n_kv");
    build(&m, 32);
    patch_u64(&m, m.n_kv_at, 1000);
    expect_fail(&m, PV_ERR_FORMAT, "key count", "n_kv past the file");
    build(&m, 32);
    patch_u64(&m, m.n_tensors_at, (uint64_t)1 << 62);
    expect_fail(&m, PV_ERR_FORMAT, "tensor count", "huge n_tensors");
    build(&m, 32);
    patch_u64(&m, m.n_tensors_at, 3); /* fits the byte bound, but there are only 2 infos */
    expect_fail(&m, PV_ERR_FORMAT, NULL, "one tensor info too many");
}

static void test_metadata_errors(void)
{
    struct img m;
    static const uint64_t lens[] = {UINT64_MAX, (uint64_t)1 << 40, ((uint64_t)1 << 30) + 1,
                                    2000};
    for (size_t i = 0; i < PV_ARRAY_LEN(lens); i++) {
        build(&m, 32);
        patch_u64(&m, m.key0_len_at, lens[i]);
        expect_fail(&m, PV_ERR_FORMAT, "length", "huge key length");
        build(&m, 32);
        patch_u64(&m, m.str_val_len_at, lens[i]);
        expect_fail(&m, PV_ERR_FORMAT, "length", "huge string value length");
    }
    build(&m, 32);
    patch_u64(&m, m.key0_len_at, 0);
    expect_fail(&m, PV_ERR_FORMAT, NULL, "empty key shifts the parse");

    static const uint64_t counts[] = {UINT64_MAX, (uint64_t)1 << 61, ((uint64_t)1 << 30) + 1,
                                      1u << 29, 400};
    for (size_t i = 0; i < PV_ARRAY_LEN(counts); i++) {
        build(&m, 32);
        patch_u64(&m, m.arr_str_count_at, counts[i]);
        expect_fail(&m, PV_ERR_FORMAT, NULL, "huge string array count");
        build(&m, 32);
        patch_u64(&m, m.arr_i32_count_at, counts[i]);
        expect_fail(&m, PV_ERR_FORMAT, "array", "huge i32 array count");
    }
    build(&m, 32);
    patch_u32(&m, m.type_u8_at, 13);
    expect_fail(&m, PV_ERR_FORMAT, "value type 13", "value type 13");
    build(&m, 32);
    patch_u32(&m, m.type_u8_at, 0xFFFFFFFFu);
    expect_fail(&m, PV_ERR_FORMAT, "value type", "value type -1");
    build(&m, 32);
    patch_u32(&m, m.arr_str_etype_at, GGUF_ARRAY);
    expect_fail(&m, PV_ERR_FORMAT, "nested array", "nested array");
    build(&m, 32);
    patch_u32(&m, m.arr_str_etype_at, 77);
    expect_fail(&m, PV_ERR_FORMAT, "element type 77", "array element type 77");
    build(&m, 32);
    memcpy(m.b + m.key_ab_at, "k.aa", 4);
    expect_fail(&m, PV_ERR_FORMAT, "duplicate metadata key 'k.aa'", "duplicate key");

    static const uint32_t aligns[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < PV_ARRAY_LEN(aligns); i++) {
        build(&m, 32);
        patch_u32(&m, m.align_val_at, aligns[i]);
        expect_fail(&m, PV_ERR_FORMAT, "power of two", "bad alignment value");
    }
    build(&m, 32);
    patch_u32(&m, m.align_type_at, GGUF_I32);
    expect_fail(&m, PV_ERR_FORMAT, "must be u32", "alignment not u32");
    /* powers of two below 8 would let tensor data start misaligned (UBSan in the kernels) */
    static const uint32_t small[] = {1, 2, 4};
    for (size_t i = 0; i < PV_ARRAY_LEN(small); i++) {
        build(&m, 32);
        patch_u32(&m, m.align_val_at, small[i]);
        expect_fail(&m, PV_ERR_FORMAT, "below 8", "alignment below 8");
    }
}

static void test_tensor_errors(void)
{
    struct img m;
    build(&m, 32);
    memcpy(m.b + m.t_name_at[1] + 8, "t.a", 3);
    expect_fail(&m, PV_ERR_FORMAT, "duplicate tensor name 't.a'", "duplicate tensor name");
    build(&m, 32);
    patch_u32(&m, m.t_ndims_at[0], 5);
    expect_fail(&m, PV_ERR_FORMAT, "5 dimensions", "n_dims 5");
    build(&m, 32);
    patch_u32(&m, m.t_ndims_at[0], 0xFFFFFFFFu);
    expect_fail(&m, PV_ERR_FORMAT, "dimensions", "n_dims -1");
    build(&m, 32);
    patch_u64(&m, m.t_ne_at[0], (uint64_t)-4);
    expect_fail(&m, PV_ERR_FORMAT, "negative", "negative ne");
    build(&m, 32);
    patch_u64(&m, m.t_ne_at[0], (uint64_t)1 << 40);
    patch_u64(&m, m.t_ne_at[0] + 8, (uint64_t)1 << 40);
    expect_fail(&m, PV_ERR_FORMAT, "overflows", "ne product overflow");
    build(&m, 32);
    patch_u64(&m, m.t_ne_at[0], (uint64_t)1 << 61); /* element count fits, bytes do not */
    expect_fail(&m, PV_ERR_FORMAT, "overflows", "byte size overflow");
    build(&m, 32);
    patch_u64(&m, m.t_ne_at[0], (uint64_t)1 << 30);
    expect_fail(&m, PV_ERR_FORMAT, "past the end of the file", "tensor bigger than the file");

    static const uint32_t removed[] = {4, 5, 31, 33, 36, 38, 43, 1000, 0xFFFFFFFFu};
    for (size_t i = 0; i < PV_ARRAY_LEN(removed); i++) {
        build(&m, 32);
        patch_u32(&m, m.t_type_at[0], removed[i]);
        expect_fail(&m, PV_ERR_FORMAT, "unknown type", "unknown/removed type");
    }
    static const uint32_t unsupported[] = {PV_TYPE_Q8_1, PV_TYPE_Q8_K, 16, 23, 26, 28};
    for (size_t i = 0; i < PV_ARRAY_LEN(unsupported); i++) {
        build(&m, 32);
        patch_u32(&m, m.t_type_at[0], unsupported[i]);
        expect_fail(&m, PV_ERR_UNSUPPORTED, "does not support", "unsupported type");
    }
    build(&m, 32);
    patch_u64(&m, m.t_ne_at[1], 33);
    expect_fail(&m, PV_ERR_FORMAT, "not a multiple of the q8_0 block size 32", "ne0 vs block");
    build(&m, 32);
    patch_u32(&m, m.t_type_at[1], PV_TYPE_Q4_K);
    expect_fail(&m, PV_ERR_FORMAT, "block size 256", "ne0 vs k-quant block");

    build(&m, 32);
    patch_u64(&m, m.t_off_at[1], 8);
    expect_fail(&m, PV_ERR_FORMAT, "not a multiple of the alignment", "misaligned offset");
    build(&m, 32);
    patch_u64(&m, m.t_off_at[1], 4096);
    expect_fail(&m, PV_ERR_FORMAT, "past the end of the file", "offset past the end");
    build(&m, 32);
    patch_u64(&m, m.t_off_at[1], UINT64_MAX - 31);
    expect_fail(&m, PV_ERR_FORMAT, "past the end of the file", "offset wraps");
    build(&m, 32);
    patch_u64(&m, m.t_off_at[1], 0);
    expect_fail(&m, PV_ERR_FORMAT, "overlaps", "overlapping tensors");
    build(&m, 32);
    patch_u64(&m, m.t_name_at[0], 64);
    expect_fail(&m, PV_ERR_FORMAT, NULL, "tensor name of 64 bytes");
}

/* A file with no keys and one f32 [8] tensor whose name is name_len bytes of 'x'. */
static void build_one_tensor(struct img *m, size_t name_len)
{
    char name[128];
    memset(m, 0, sizeof *m);
    memset(name, 'x', name_len);
    name[name_len] = '\0';
    put(m, "GGUF", 4);
    put_u32(m, 3);
    put_u64(m, 1);
    put_u64(m, 0);
    put_str(m, name);
    put_u32(m, 1);
    put_u64(m, 8);
    put_u32(m, PV_TYPE_F32);
    put_u64(m, 0);
    while (m->n % 32)
        put(m, "", 1);
    for (int i = 0; i < 32; i++)
        put(m, "", 1);
}

static void test_tensor_name_length(void)
{
    struct img m;
    struct pv_err err;
    build_one_tensor(&m, 64);
    expect_fail(&m, PV_ERR_FORMAT, "limit 63", "64-byte tensor name");
    build_one_tensor(&m, 63);
    CHECK_EQ_INT(open_bytes(m.b, m.n, &err), PV_OK);
    build_one_tensor(&m, 8);
    memcpy(m.b + 24 + 8 + 3, "\0", 1);
    expect_fail(&m, PV_ERR_FORMAT, "NUL", "NUL inside a tensor name");
}

static void test_missing_file_and_empty(void)
{
    struct gguf_file *f = (struct gguf_file *)1;
    struct pv_err err;
    CHECK_EQ_INT(gguf_open("/nonexistent/dir/m.gguf", &f, &err), PV_ERR_NOT_FOUND);
    CHECK(f == NULL && strstr(err.msg, "/nonexistent/dir/m.gguf"));
    CHECK_EQ_INT(gguf_open("/tmp", &f, &err), PV_ERR_INVALID);
    CHECK_EQ_INT(open_bytes((const uint8_t *)"", 0, &err), PV_ERR_FORMAT);
    CHECK(strstr(err.msg, "empty") != NULL);
}

static void test_type_table(void)
{
    static const struct {
        uint32_t id;
        const char *name;
        uint32_t blck, bytes;
    } want[] = {
        {PV_TYPE_F32, "f32", 1, 4},       {PV_TYPE_F16, "f16", 1, 2},
        {PV_TYPE_BF16, "bf16", 1, 2},     {PV_TYPE_Q4_0, "q4_0", 32, 18},
        {PV_TYPE_Q4_1, "q4_1", 32, 20},   {PV_TYPE_Q5_0, "q5_0", 32, 22},
        {PV_TYPE_Q5_1, "q5_1", 32, 24},   {PV_TYPE_Q8_0, "q8_0", 32, 34},
        {PV_TYPE_Q2_K, "q2_K", 256, 84},  {PV_TYPE_Q3_K, "q3_K", 256, 110},
        {PV_TYPE_Q4_K, "q4_K", 256, 144}, {PV_TYPE_Q5_K, "q5_K", 256, 176},
        {PV_TYPE_Q6_K, "q6_K", 256, 210},
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(want); i++) {
        const struct pv_type_info *t = pv_type_get(want[i].id);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_EQ_STR(t->name, want[i].name);
        CHECK_EQ_INT(t->blck, want[i].blck);
        CHECK_EQ_INT(t->type_bytes, want[i].bytes);
        CHECK(t->weight);
    }
    CHECK(pv_type_get(PV_TYPE_Q8_K) && !pv_type_get(PV_TYPE_Q8_K)->weight);
    CHECK(pv_type_get(4) == NULL && pv_type_get(16) == NULL && pv_type_get(PV_TYPE_COUNT) == NULL);
    CHECK_EQ_STR(gguf_type_name(16), "iq2_xxs");
    CHECK(gguf_type_name(4) == NULL && gguf_type_name(99) == NULL);
}

/* Touch every accessor of an opened file, as a consumer would. */
static void walk(const struct gguf_file *f)
{
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        struct gguf_str k = gguf_key_name(f, i), s;
        char key[256];
        enum gguf_vtype et;
        uint64_t n, u64;
        double dv;
        float f32;
        bool b;
        snprintf(key, sizeof key, "%.*s", (int)PV_MIN(k.n, 255), k.p);
        (void)gguf_get_u64(f, key, &u64);
        (void)gguf_get_f32(f, key, &f32);
        (void)gguf_get_bool(f, key, &b);
        if (gguf_get_str(f, key, &s) && s.n)
            (void)((volatile const char *)s.p)[s.n - 1];
        if (gguf_get_arr_info(f, key, &et, &n))
            for (uint64_t j = 0; j < n; j++) {
                if (!gguf_get_arr_str(f, key, j, &s))
                    (void)gguf_get_arr_num(f, key, j, &dv);
                else if (s.n)
                    (void)((volatile const char *)s.p)[s.n - 1];
            }
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct pv_tensor *t = gguf_tensor(f, i);
        if (t->n_bytes)
            (void)((volatile const uint8_t *)t->data)[t->n_bytes - 1];
        CHECK_EQ_INT(gguf_find_tensor(f, t->name), i);
    }
}

/* Random byte, u32 and u64 patches anywhere before the data: fail cleanly or open fine. */
static void test_random_mutations(void)
{
    struct img m, v;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int opened = 0, failed = 0, bad = 0;
    build(&v, 32);
    for (int iter = 0; iter < 2000; iter++) {
        m = v;
        int n_patch = 1 + iter % 3;
        for (int k = 0; k < n_patch; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % v.data_at;
            uint64_t val = rng ^ (rng >> 29);
            static const uint64_t specials[] = {0, 1, 3, 4, 8, 12, 13, 64, 0xFFFFFFFFull,
                                                UINT64_MAX, (uint64_t)1 << 31, (uint64_t)1 << 62};
            if ((rng >> 20) % 2)
                val = specials[(rng >> 40) % PV_ARRAY_LEN(specials)];
            size_t w = (rng >> 8) % 3 == 0 ? 1 : (rng >> 8) % 3 == 1 ? 4 : 8;
            if (at + w > m.n)
                w = 1;
            memcpy(m.b + at, &val, w);
        }
        struct gguf_file *f;
        struct pv_err err;
        pv_err_clear(&err);
        enum pv_status st = gguf_open(write_tmp(m.b, m.n), &f, &err);
        if (st == PV_OK) {
            opened++;
            walk(f);
            gguf_close(f);
        } else {
            failed++;
            if ((st != PV_ERR_FORMAT && st != PV_ERR_UNSUPPORTED && st != PV_ERR_NOMEM) ||
                !strstr(err.msg, tmp_path)) {
                if (bad++ < 5)
                    fprintf(stderr, "  mutation %d: %s: %s\n", iter, pv_status_name(st), err.msg);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(failed > 500);  /* the corpus does reach the checks */
    CHECK(opened > 0);    /* and some patches (values, not structure) stay valid */
}

static void cleanup(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
}

static void test_cleanup(void) { cleanup(); }

TESTS(TEST_ENTRY(test_valid_file), TEST_ENTRY(test_custom_alignment),
      TEST_ENTRY(test_every_prefix_fails), TEST_ENTRY(test_header_errors),
      TEST_ENTRY(test_metadata_errors), TEST_ENTRY(test_tensor_errors),
      TEST_ENTRY(test_tensor_name_length), TEST_ENTRY(test_missing_file_and_empty),
      TEST_ENTRY(test_type_table), TEST_ENTRY(test_random_mutations),
      TEST_ENTRY(test_cleanup))
