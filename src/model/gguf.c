/*
 * gguf.c - the validating GGUF reader of gguf.h.
 *
 * gguf_open maps the file read-only and walks it once with a bounded cursor: every
 * count, length and size is checked against the bytes that remain (overflow-safe)
 * before anything is allocated from it. Keys and tensor names go into hash indexes
 * (duplicates are errors), string arrays get an offset index, tensor views get
 * NUL-terminated name copies. The gguf_file owns the mapping and all of that.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gguf.h"
#include "util/util.h"

#define GGUF_MAGIC_LE 0x46554747u  /* "GGUF" read as a little-endian u32 */
#define GGUF_MAGIC_BE 0x47475546u  /* the same magic written big-endian */
#define GGUF_MAX_STR ((uint64_t)1 << 30)
#define GGUF_MAX_ARR ((uint64_t)1 << 30)
#define GGUF_MAX_NAME 64           /* tensor name bytes including the NUL */
#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MIN_ALIGNMENT 8 /* smaller would let f32 data and blocks start misaligned */
#define GGUF_MIN_KV_BYTES 14       /* u64 len + 1 key byte + u32 type + 1 value byte */
#define GGUF_MIN_TENSOR_BYTES 24   /* u64 len + u32 n_dims + u32 type + u64 offset */

struct gguf_kv {
    struct gguf_str key;
    enum gguf_vtype type;
    const uint8_t *val;          /* scalar value, string length field, or first array element */
    enum gguf_vtype arr_type;    /* arrays only */
    uint64_t arr_n;              /* arrays only */
    const uint8_t **arr_strs;    /* string arrays: each element's length field; owned */
};

/* Open-addressing hash from a name to index+1 (0 = empty slot). */
struct gguf_index {
    int64_t *slots;
    size_t mask;
};

struct gguf_file {
    char *path;                  /* owned copy of the path, for messages */
    const uint8_t *map;          /* the read-only mapping (or the heap buffer) */
    bool heap;                   /* map is a heap buffer (gguf_open_mem), freed at close */
    size_t size;                 /* file bytes */
    uint32_t version;
    size_t alignment;
    size_t data_start;           /* offset of the tensor data blob */
    int64_t n_kv;
    struct gguf_kv *kvs;         /* [n_kv], owned */
    struct gguf_index kv_index;
    int64_t n_tensors;
    struct pv_tensor *tensors;   /* [n_tensors], owned */
    char *names;                 /* tensor name copies, GGUF_MAX_NAME bytes each, owned */
    struct gguf_index tensor_index;
};

/* A bounded cursor over the mapping. */
struct gguf_cur {
    struct gguf_file *f;
    size_t pos;
    struct pv_err *err;
};

/* ggml type names by id, for messages about types Pensieve does not support. */
static const char *const ggml_type_names[PV_TYPE_GGML_COUNT] = {
    "f32", "f16", "q4_0", "q4_1", NULL, NULL, "q5_0", "q5_1", "q8_0", "q8_1", "q2_K",
    "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s",
    "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m",
    "bf16", NULL, NULL, NULL, "tq1_0", "tq2_0", NULL, NULL, NULL, "mxfp4", "nvfp4",
    "q1_0", "q2_0",
};

static const size_t vtype_bytes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const char *const vtype_names[13] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
    "f64",
};

/* ---- hashing ---------------------------------------------------------------------- */

static uint64_t name_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool index_init(struct gguf_index *ix, int64_t n)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2) {
        if (cap > SIZE_MAX / 4)
            return false;
        cap *= 2;
    }
    ix->slots = try_calloc(cap, sizeof(int64_t));
    ix->mask = cap - 1;
    return ix->slots != NULL;
}

/*
 * Find `name` among the entries already inserted; name_of(i) gives entry i's name.
 * Returns the entry's index, or -1 with *slot set to the empty slot to insert at.
 */
typedef struct gguf_str (*gguf_name_fn)(const struct gguf_file *f, int64_t i);

static int64_t index_find(const struct gguf_file *f, const struct gguf_index *ix,
                          gguf_name_fn name_of, const char *p, size_t n, size_t *slot)
{
    size_t s = (size_t)name_hash(p, n) & ix->mask;
    for (;;) {
        int64_t v = ix->slots[s];
        if (v == 0) {
            if (slot)
                *slot = s;
            return -1;
        }
        struct gguf_str e = name_of(f, v - 1);
        if (e.n == n && memcmp(e.p, p, n) == 0)
            return v - 1;
        s = (s + 1) & ix->mask;
    }
}

static struct gguf_str kv_name(const struct gguf_file *f, int64_t i)
{
    return f->kvs[i].key;
}

static struct gguf_str tensor_name(const struct gguf_file *f, int64_t i)
{
    struct gguf_str s = {f->tensors[i].name, strlen(f->tensors[i].name)};
    return s;
}

/* ---- cursor reads ----------------------------------------------------------------- */

static size_t cur_left(const struct gguf_cur *c)
{
    return c->f->size - c->pos;
}

/* Check that n more bytes exist; `what` names the field for the message. */
static bool cur_need(struct gguf_cur *c, size_t n, const char *what)
{
    if (n <= cur_left(c))
        return true;
    pv_err_set(c->err, PV_ERR_FORMAT,
               "%s: file is truncated: %s needs %zu bytes at offset %zu but only %zu remain",
               c->f->path, what, n, c->pos, cur_left(c));
    return false;
}

static bool cur_u32(struct gguf_cur *c, uint32_t *out, const char *what)
{
    if (!cur_need(c, 4, what))
        return false;
    memcpy(out, c->f->map + c->pos, 4);
    c->pos += 4;
    return true;
}

static bool cur_u64(struct gguf_cur *c, uint64_t *out, const char *what)
{
    if (!cur_need(c, 8, what))
        return false;
    memcpy(out, c->f->map + c->pos, 8);
    c->pos += 8;
    return true;
}

/* A length-prefixed string, bounded by 1 GiB and by the bytes that remain. */
static bool cur_str(struct gguf_cur *c, struct gguf_str *out, const char *what)
{
    uint64_t n;
    size_t at = c->pos;
    if (!cur_u64(c, &n, what))
        return false;
    if (n > GGUF_MAX_STR || n > cur_left(c)) {
        pv_err_set(c->err, PV_ERR_FORMAT,
                   "%s: %s length %llu at offset %zu exceeds %s (%zu bytes remain)", c->f->path,
                   what, (unsigned long long)n, at, n > GGUF_MAX_STR ? "the 1 GiB limit" : "the file",
                   cur_left(c));
        return false;
    }
    out->p = (const char *)c->f->map + c->pos;
    out->n = n;
    c->pos += (size_t)n;
    return true;
}

/* ---- metadata --------------------------------------------------------------------- */

static bool read_kv_value(struct gguf_cur *c, struct gguf_kv *kv)
{
    char what[96];
    snprintf(what, sizeof what, "value of key '%.*s'", (int)PV_MIN(kv->key.n, 48),
             kv->key.p);
    kv->val = c->f->map + c->pos;
    if (kv->type == GGUF_STRING) {
        struct gguf_str s;
        return cur_str(c, &s, what);
    }
    if (kv->type != GGUF_ARRAY) {
        if (!cur_need(c, vtype_bytes[kv->type], what))
            return false;
        c->pos += vtype_bytes[kv->type];
        return true;
    }
    uint32_t et;
    size_t at = c->pos;
    if (!cur_u32(c, &et, what) || !cur_u64(c, &kv->arr_n, what))
        return false;
    if (et > GGUF_F64) {
        pv_err_set(c->err, PV_ERR_FORMAT, "%s: key '%.*s' has array element type %u at offset %zu (valid: 0..12)",
                   c->f->path, (int)PV_MIN(kv->key.n, 48), kv->key.p, et, at);
        return false;
    }
    if (et == GGUF_ARRAY) {
        pv_err_set(c->err, PV_ERR_FORMAT, "%s: key '%.*s' is a nested array at offset %zu (not supported by gguf readers)",
                   c->f->path, (int)PV_MIN(kv->key.n, 48), kv->key.p, at);
        return false;
    }
    kv->arr_type = (enum gguf_vtype)et;
    size_t min_elem = et == GGUF_STRING ? 8 : vtype_bytes[et];
    size_t need;
    if (kv->arr_n > GGUF_MAX_ARR || pv_mul_overflow((size_t)kv->arr_n, min_elem, &need) ||
        need > cur_left(c)) {
        pv_err_set(c->err, PV_ERR_FORMAT,
                   "%s: key '%.*s' array of %llu %s elements at offset %zu exceeds %s (%zu bytes remain)",
                   c->f->path, (int)PV_MIN(kv->key.n, 48), kv->key.p,
                   (unsigned long long)kv->arr_n, vtype_names[et], at,
                   kv->arr_n > GGUF_MAX_ARR ? "the 2^30 element limit" : "the file", cur_left(c));
        return false;
    }
    kv->val = c->f->map + c->pos;
    if (et != GGUF_STRING) {
        c->pos += need;
        return true;
    }
    if (kv->arr_n > 0) {
        kv->arr_strs = try_calloc((size_t)kv->arr_n, sizeof(*kv->arr_strs));
        if (!kv->arr_strs) {
            pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for the index of array '%.*s' (%llu strings)",
                       c->f->path, (int)PV_MIN(kv->key.n, 48), kv->key.p,
                       (unsigned long long)kv->arr_n);
            return false;
        }
    }
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        struct gguf_str s;
        kv->arr_strs[i] = c->f->map + c->pos;
        if (!cur_str(c, &s, what))
            return false;
    }
    return true;
}

static enum pv_status read_kvs(struct gguf_cur *c, uint64_t n_kv)
{
    struct gguf_file *f = c->f;
    f->kvs = try_calloc((size_t)n_kv ? (size_t)n_kv : 1, sizeof(*f->kvs));
    if (!f->kvs || !index_init(&f->kv_index, (int64_t)n_kv))
        return pv_err_set(c->err, PV_ERR_NOMEM, "%s: no memory for %llu metadata keys", f->path,
                          (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kv = &f->kvs[i];
        size_t at = c->pos;
        uint32_t type;
        if (!cur_str(c, &kv->key, "metadata key"))
            return c->err ? c->err->status : PV_ERR_FORMAT;
        if (kv->key.n == 0)
            return pv_err_set(c->err, PV_ERR_FORMAT, "%s: metadata key %llu at offset %zu is empty",
                              f->path, (unsigned long long)i, at);
        size_t slot = 0;
        if (index_find(f, &f->kv_index, kv_name, kv->key.p, kv->key.n, &slot) >= 0)
            return pv_err_set(c->err, PV_ERR_FORMAT, "%s: duplicate metadata key '%.*s' at offset %zu",
                              f->path, (int)PV_MIN(kv->key.n, 128), kv->key.p, at);
        size_t type_at = c->pos;
        if (!cur_u32(c, &type, "metadata value type"))
            return PV_ERR_FORMAT;
        if (type > GGUF_F64)
            return pv_err_set(c->err, PV_ERR_FORMAT,
                              "%s: key '%.*s' has value type %u at offset %zu (valid: 0..12)", f->path,
                              (int)PV_MIN(kv->key.n, 128), kv->key.p, type, type_at);
        kv->type = (enum gguf_vtype)type;
        f->n_kv = (int64_t)i + 1; /* so gguf_close frees this record's index */
        if (!read_kv_value(c, kv))
            return c->err ? c->err->status : PV_ERR_FORMAT;
        f->kv_index.slots[slot] = (int64_t)i + 1;
    }
    f->n_kv = (int64_t)n_kv;
    return PV_OK;
}

/* ---- tensor infos ----------------------------------------------------------------- */

static enum pv_status read_tensor_info(struct gguf_cur *c, int64_t i)
{
    struct gguf_file *f = c->f;
    struct pv_tensor *t = &f->tensors[i];
    char *name = f->names + (size_t)i * GGUF_MAX_NAME;
    struct gguf_str s;
    size_t at = c->pos;
    uint32_t n_dims, type;
    uint64_t offset;

    if (!cur_str(c, &s, "tensor name"))
        return PV_ERR_FORMAT;
    if (s.n >= GGUF_MAX_NAME)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s: tensor %lld name '%.*s...' at offset %zu is %llu bytes (limit 63)",
                          f->path, (long long)i, 40, s.p, at, (unsigned long long)s.n);
    if (memchr(s.p, '\0', s.n))
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor %lld name at offset %zu contains a NUL byte",
                          f->path, (long long)i, at);
    memcpy(name, s.p, s.n);
    name[s.n] = '\0';
    t->name = name;
    size_t slot = 0;
    if (index_find(f, &f->tensor_index, tensor_name, name, s.n, &slot) >= 0)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: duplicate tensor name '%s' at offset %zu",
                          f->path, name, at);
    f->tensor_index.slots[slot] = i + 1;

    size_t dims_at = c->pos;
    if (!cur_u32(c, &n_dims, "tensor dimension count"))
        return PV_ERR_FORMAT;
    if (n_dims > GGUF_MAX_DIMS)
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' has %u dimensions at offset %zu (limit 4)",
                          f->path, name, n_dims, dims_at);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t v;
        size_t ne_at = c->pos;
        if (!cur_u64(c, &v, "tensor dimension"))
            return PV_ERR_FORMAT;
        if (v > (uint64_t)INT64_MAX)
            return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' dimension %u is negative at offset %zu",
                              f->path, name, d, ne_at);
        t->ne[d] = (int64_t)v;
    }
    /* The element count must be representable (ggml's checks, with ne = 0 allowed). */
    int64_t prod = t->ne[0];
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && prod > INT64_MAX / t->ne[d])
            return pv_err_set(c->err, PV_ERR_FORMAT,
                              "%s: tensor '%s' shape [%lld, %lld, %lld, %lld] overflows (at offset %zu)",
                              f->path, name, (long long)t->ne[0], (long long)t->ne[1],
                              (long long)t->ne[2], (long long)t->ne[3], dims_at);
        prod *= t->ne[d];
    }

    size_t type_at = c->pos;
    if (!cur_u32(c, &type, "tensor type"))
        return PV_ERR_FORMAT;
    /* ids past ggml's are Pensieve's own (MLX groups), never valid in a GGUF file */
    const struct pv_type_info *ti = type < PV_TYPE_GGML_COUNT ? pv_type_get(type) : NULL;
    if (!ti || !ti->weight) {
        const char *tn = type < PV_TYPE_GGML_COUNT ? ggml_type_names[type] : NULL;
        if (tn)
            return pv_err_set(c->err, PV_ERR_UNSUPPORTED,
                              "%s: tensor '%s' has type %s (%u) at offset %zu, which pensieve does not support",
                              f->path, name, tn, type, type_at);
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' has unknown type %u at offset %zu",
                          f->path, name, type, type_at);
    }
    t->type = type;
    if (t->ne[0] % ti->blck != 0)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s: tensor '%s' row length %lld is not a multiple of the %s block size %u",
                          f->path, name, (long long)t->ne[0], ti->name, ti->blck);
    size_t row, total;
    if (pv_mul_overflow((size_t)(t->ne[0] / ti->blck), ti->type_bytes, &row) ||
        pv_mul_overflow(row, (size_t)t->ne[1], &total) ||
        pv_mul_overflow(total, (size_t)t->ne[2], &total) ||
        pv_mul_overflow(total, (size_t)t->ne[3], &total))
        return pv_err_set(c->err, PV_ERR_FORMAT, "%s: tensor '%s' byte size overflows", f->path,
                          name);
    t->row_bytes = row;
    t->n_bytes = total;

    size_t off_at = c->pos;
    if (!cur_u64(c, &offset, "tensor data offset"))
        return PV_ERR_FORMAT;
    if (offset % f->alignment != 0)
        return pv_err_set(c->err, PV_ERR_FORMAT,
                          "%s: tensor '%s' data offset %llu at offset %zu is not a multiple of the alignment %zu",
                          f->path, name, (unsigned long long)offset, off_at, f->alignment);
    t->data = (const void *)(uintptr_t)offset; /* relative until place_tensors */
    return PV_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *arg)
{
    const struct pv_tensor *ts = arg;
    const struct pv_tensor *x = &ts[*(const int64_t *)a], *y = &ts[*(const int64_t *)b];
    uintptr_t ox = (uintptr_t)x->data, oy = (uintptr_t)y->data;
    return ox < oy ? -1 : ox > oy;
}

/* Place every tensor inside the data blob and reject overlaps. */
static enum pv_status place_tensors(struct gguf_file *f, struct pv_err *err)
{
    enum pv_status st = PV_OK;
    int64_t *order = NULL;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        struct pv_tensor *t = &f->tensors[i];
        size_t rel = (uintptr_t)t->data, start, end;
        if (pv_add_overflow(f->data_start, rel, &start) ||
            pv_add_overflow(start, t->n_bytes, &end) || end > f->size)
            return pv_err_set(err, PV_ERR_FORMAT,
                              "%s: tensor '%s' data [offset %zu, %zu bytes] is past the end of the file (%zu bytes)",
                              f->path, t->name, rel, t->n_bytes, f->size);
    }
    if (f->n_tensors > 1) {
        order = try_calloc((size_t)f->n_tensors, sizeof(*order));
        if (!order)
            return pv_err_set(err, PV_ERR_NOMEM, "%s: no memory to sort %lld tensors", f->path,
                              (long long)f->n_tensors);
        for (int64_t i = 0; i < f->n_tensors; i++)
            order[i] = i;
        qsort_r(order, (size_t)f->n_tensors, sizeof(*order), cmp_by_offset, f->tensors);
        size_t prev_end = 0;
        const char *prev = NULL;
        for (int64_t k = 0; k < f->n_tensors; k++) {
            const struct pv_tensor *t = &f->tensors[order[k]];
            size_t rel = (uintptr_t)t->data;
            if (t->n_bytes == 0)
                continue;
            if (prev && rel < prev_end) {
                st = pv_err_set(err, PV_ERR_FORMAT,
                                "%s: tensor '%s' data [offset %zu, %zu bytes] overlaps tensor '%s'",
                                f->path, t->name, rel, t->n_bytes, prev);
                goto out_order;
            }
            prev_end = rel + t->n_bytes;
            prev = t->name;
        }
    }
    for (int64_t i = 0; i < f->n_tensors; i++) {
        struct pv_tensor *t = &f->tensors[i];
        t->data = f->map + f->data_start + (uintptr_t)t->data;
    }
out_order:
    free(order);
    return st;
}

/* ---- open / close ----------------------------------------------------------------- */

static enum pv_status parse(struct gguf_file *f, struct pv_err *err)
{
    struct gguf_cur c = {f, 0, err};
    uint32_t magic, version;
    uint64_t n_tensors, n_kv;
    enum pv_status st;

    if (f->size < 4 || (memcpy(&magic, f->map, 4), magic != GGUF_MAGIC_LE)) {
        if (f->size >= 4 && magic == GGUF_MAGIC_BE)
            return pv_err_set(err, PV_ERR_UNSUPPORTED,
                              "%s: gguf file is big-endian (byte-swapped magic at offset 0); only little-endian files are supported",
                              f->path);
        return pv_err_set(err, PV_ERR_FORMAT, "%s: not a gguf file (bad magic at offset 0)",
                          f->path);
    }
    c.pos = 4;
    if (!cur_u32(&c, &version, "version"))
        return PV_ERR_FORMAT;
    if ((version & 0xFFFF) == 0)
        return pv_err_set(err, PV_ERR_UNSUPPORTED,
                          "%s: gguf version field 0x%08x at offset 4 is byte-swapped (big-endian file); only little-endian files are supported",
                          f->path, version);
    if (version != 2 && version != 3)
        return pv_err_set(err, PV_ERR_UNSUPPORTED,
                          "%s: gguf version %u at offset 4 is not supported (only 2 and 3)", f->path,
                          version);
    f->version = version;
    if (!cur_u64(&c, &n_tensors, "tensor count") || !cur_u64(&c, &n_kv, "metadata key count"))
        return PV_ERR_FORMAT;
    if (n_kv > cur_left(&c) / GGUF_MIN_KV_BYTES)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: metadata key count %llu at offset 16 cannot fit in the %zu bytes that remain",
                          f->path, (unsigned long long)n_kv, cur_left(&c));
    if (n_tensors > cur_left(&c) / GGUF_MIN_TENSOR_BYTES)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: tensor count %llu at offset 8 cannot fit in the %zu bytes that remain",
                          f->path, (unsigned long long)n_tensors, cur_left(&c));

    st = read_kvs(&c, n_kv);
    if (st != PV_OK)
        return st;

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        if (f->kvs[ai].type != GGUF_U32)
            return pv_err_set(err, PV_ERR_FORMAT, "%s: general.alignment has type %s (must be u32)",
                              f->path, vtype_names[f->kvs[ai].type]);
        memcpy(&a, f->kvs[ai].val, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return pv_err_set(err, PV_ERR_FORMAT,
                              "%s: general.alignment %u is not a power of two", f->path, a);
        /* tensors are read in place as floats and blocks: their starts must be aligned */
        if (a < GGUF_MIN_ALIGNMENT)
            return pv_err_set(err, PV_ERR_FORMAT,
                              "%s: general.alignment %u is below %d (tensor data would be "
                              "misaligned)", f->path, a, GGUF_MIN_ALIGNMENT);
        f->alignment = a;
    }

    f->tensors = try_calloc((size_t)n_tensors ? (size_t)n_tensors : 1, sizeof(*f->tensors));
    f->names = try_calloc((size_t)n_tensors ? (size_t)n_tensors : 1, GGUF_MAX_NAME);
    if (!f->tensors || !f->names || !index_init(&f->tensor_index, (int64_t)n_tensors))
        return pv_err_set(err, PV_ERR_NOMEM, "%s: no memory for %llu tensor infos", f->path,
                          (unsigned long long)n_tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors = (int64_t)i + 1;
        st = read_tensor_info(&c, (int64_t)i);
        if (st != PV_OK)
            return st;
    }
    f->n_tensors = (int64_t)n_tensors;

    if (pv_align_overflow(c.pos, f->alignment, &f->data_start))
        return pv_err_set(err, PV_ERR_FORMAT, "%s: data start overflows", f->path);
    if (n_tensors > 0 && f->data_start > f->size)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: tensor data would start at offset %zu, past the end of the file (%zu bytes)",
                          f->path, f->data_start, f->size);
    return place_tensors(f, err);
}

enum pv_status gguf_open(const char *path, struct gguf_file **out, struct pv_err *err)
{
    struct gguf_file *f;
    struct stat stt;
    enum pv_status st;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(err, errno == ENOENT ? PV_ERR_NOT_FOUND : PV_ERR_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &stt) != 0) {
        st = pv_err_set(err, PV_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out_fd;
    }
    if (!S_ISREG(stt.st_mode)) {
        st = pv_err_set(err, PV_ERR_INVALID, "%s: not a regular file", path);
        goto out_fd;
    }
    if (stt.st_size == 0) {
        st = pv_err_set(err, PV_ERR_FORMAT, "%s: file is empty", path);
        goto out_fd;
    }
    if ((uint64_t)stt.st_size > SIZE_MAX) {
        st = pv_err_set(err, PV_ERR_TOO_LARGE, "%s: file is too large to map", path);
        goto out_fd;
    }
    f = xcalloc(1, sizeof(*f));
    f->path = xstrdup(path);
    f->size = (size_t)stt.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        st = pv_err_set(err, PV_ERR_IO, "%s: cannot map %zu bytes: %s", path, f->size,
                        strerror(errno));
        f->map = NULL;
        gguf_close(f);
        goto out_fd;
    }
    f->map = m;
    st = parse(f, err);
    if (st != PV_OK) {
        gguf_close(f);
        goto out_fd;
    }
    *out = f;
out_fd:
    close(fd);
    return st;
}

enum pv_status gguf_open_mem(const char *name, void *data, size_t n, struct gguf_file **out,
                             struct pv_err *err)
{
    struct gguf_file *f = xcalloc(1, sizeof(*f));
    enum pv_status st;
    f->path = xstrdup(name);
    f->map = data;
    f->size = n;
    f->heap = true;
    *out = NULL;
    st = parse(f, err);
    if (st != PV_OK) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return PV_OK;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    if (f->map && f->heap)
        free((void *)f->map);
    else if (f->map)
        munmap((void *)f->map, f->size);
    for (int64_t i = 0; i < f->n_kv && f->kvs; i++)
        free(f->kvs[i].arr_strs);
    free(f->kvs);
    free(f->kv_index.slots);
    free(f->tensors);
    free(f->names);
    free(f->tensor_index.slots);
    free(f->path);
    free(f);
}

/* ---- accessors -------------------------------------------------------------------- */

const char *gguf_path(const struct gguf_file *f) { return f->path; }
uint64_t gguf_file_bytes(const struct gguf_file *f) { return f->size; }
uint32_t gguf_version(const struct gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const struct gguf_file *f) { return (uint32_t)f->alignment; }
uint64_t gguf_data_offset(const struct gguf_file *f) { return f->data_start; }
const void *gguf_map(const struct gguf_file *f) { return f->map; }
int64_t gguf_n_kv(const struct gguf_file *f) { return f->n_kv; }
int64_t gguf_n_tensors(const struct gguf_file *f) { return f->n_tensors; }

int64_t gguf_find_key(const struct gguf_file *f, const char *key)
{
    if (!f->kv_index.slots)
        return -1;
    return index_find(f, &f->kv_index, kv_name, key, strlen(key), NULL);
}

struct gguf_str gguf_key_name(const struct gguf_file *f, int64_t i)
{
    struct gguf_str none = {"", 0};
    if (i < 0 || i >= f->n_kv)
        return none;
    return f->kvs[i].key;
}

enum gguf_vtype gguf_kv_type(const struct gguf_file *f, int64_t i)
{
    PV_ASSERT(i >= 0 && i < f->n_kv);
    return f->kvs[i].type;
}

/* Numeric value of type `t` at p: integers into *iv (with sign in *neg), floats into *dv. */
static bool read_num(enum gguf_vtype t, const uint8_t *p, bool *is_int, int64_t *sv,
                     uint64_t *uv, double *dv)
{
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        float f32; uint64_t u64; int64_t i64; double f64;
    } v;
    if (t > GGUF_F64 || t == GGUF_STRING || t == GGUF_ARRAY)
        return false;
    memcpy(&v, p, vtype_bytes[t]);
    *is_int = true;
    *sv = 0;
    *uv = 0;
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: *uv = v.u8; break;
    case GGUF_U16: *uv = v.u16; break;
    case GGUF_U32: *uv = v.u32; break;
    case GGUF_U64: *uv = v.u64; break;
    case GGUF_I8: *sv = v.i8; break;
    case GGUF_I16: *sv = v.i16; break;
    case GGUF_I32: *sv = v.i32; break;
    case GGUF_I64: *sv = v.i64; break;
    case GGUF_F32: *is_int = false; *dv = v.f32; return true;
    case GGUF_F64: *is_int = false; *dv = v.f64; return true;
    default: return false;
    }
    bool is_signed = t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
    if (is_signed) {
        *dv = (double)*sv;
        if (*sv >= 0)
            *uv = (uint64_t)*sv;
    } else {
        *dv = (double)*uv;
        *sv = *uv <= (uint64_t)INT64_MAX ? (int64_t)*uv : -1;
    }
    return true;
}

static const struct gguf_kv *kv_get(const struct gguf_file *f, const char *key)
{
    int64_t i = gguf_find_key(f, key);
    return i < 0 ? NULL : &f->kvs[i];
}

/* An integer scalar (not bool) as signed and unsigned views; false when not an integer. */
static bool kv_int(const struct gguf_file *f, const char *key, int64_t *sv, uint64_t *uv,
                   bool *neg)
{
    const struct gguf_kv *kv = kv_get(f, key);
    bool is_int;
    double dv;
    if (!kv || kv->type == GGUF_BOOL || !read_num(kv->type, kv->val, &is_int, sv, uv, &dv) ||
        !is_int)
        return false;
    bool is_signed = kv->type == GGUF_I8 || kv->type == GGUF_I16 || kv->type == GGUF_I32 ||
                     kv->type == GGUF_I64;
    *neg = is_signed && *sv < 0;
    return true;
}

bool gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
    int64_t sv;
    uint64_t uv;
    bool neg;
    if (!kv_int(f, key, &sv, &uv, &neg) || neg || uv > UINT32_MAX)
        return false;
    *out = (uint32_t)uv;
    return true;
}

bool gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out)
{
    int64_t sv;
    uint64_t uv;
    bool neg;
    if (!kv_int(f, key, &sv, &uv, &neg) || neg)
        return false;
    *out = uv;
    return true;
}

bool gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out)
{
    int64_t sv;
    uint64_t uv;
    bool neg;
    if (!kv_int(f, key, &sv, &uv, &neg))
        return false;
    if (!neg && uv > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? sv : (int64_t)uv;
    return true;
}

bool gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
    const struct gguf_kv *kv = kv_get(f, key);
    if (!kv)
        return false;
    if (kv->type == GGUF_F32) {
        memcpy(out, kv->val, 4);
        return true;
    }
    if (kv->type == GGUF_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_kv *kv = kv_get(f, key);
    if (!kv || kv->type != GGUF_BOOL)
        return false;
    *out = kv->val[0] != 0;
    return true;
}

bool gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv = kv_get(f, key);
    uint64_t n;
    if (!kv || kv->type != GGUF_STRING)
        return false;
    memcpy(&n, kv->val, 8);
    out->p = (const char *)kv->val + 8;
    out->n = n;
    return true;
}

bool gguf_get_arr_info(const struct gguf_file *f, const char *key, enum gguf_vtype *elem_type,
                       uint64_t *count)
{
    const struct gguf_kv *kv = kv_get(f, key);
    if (!kv || kv->type != GGUF_ARRAY)
        return false;
    *elem_type = kv->arr_type;
    *count = kv->arr_n;
    return true;
}

bool gguf_get_arr_str(const struct gguf_file *f, const char *key, uint64_t i,
                      struct gguf_str *out)
{
    const struct gguf_kv *kv = kv_get(f, key);
    uint64_t n;
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || i >= kv->arr_n)
        return false;
    memcpy(&n, kv->arr_strs[i], 8);
    out->p = (const char *)kv->arr_strs[i] + 8;
    out->n = n;
    return true;
}

bool gguf_get_arr_num(const struct gguf_file *f, const char *key, uint64_t i, double *out)
{
    const struct gguf_kv *kv = kv_get(f, key);
    bool is_int;
    int64_t sv;
    uint64_t uv;
    double dv;
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n || kv->arr_type == GGUF_STRING)
        return false;
    if (!read_num(kv->arr_type, kv->val + i * vtype_bytes[kv->arr_type], &is_int, &sv, &uv, &dv))
        return false;
    *out = dv;
    return true;
}

const void *gguf_get_arr_data(const struct gguf_file *f, const char *key)
{
    const struct gguf_kv *kv = kv_get(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type == GGUF_STRING)
        return NULL;
    return kv->val;
}

int64_t gguf_find_tensor(const struct gguf_file *f, const char *name)
{
    if (!f->tensor_index.slots)
        return -1;
    return index_find(f, &f->tensor_index, tensor_name, name, strlen(name), NULL);
}

const struct pv_tensor *gguf_tensor(const struct gguf_file *f, int64_t i)
{
    if (i < 0 || i >= f->n_tensors)
        return NULL;
    return &f->tensors[i];
}

const char *gguf_type_name(uint32_t type)
{
    return type < PV_TYPE_GGML_COUNT ? ggml_type_names[type] : NULL;
}

const char *gguf_vtype_name(enum gguf_vtype t)
{
    return (unsigned)t <= GGUF_F64 ? vtype_names[t] : "invalid";
}
