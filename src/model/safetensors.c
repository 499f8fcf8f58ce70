/*
 * safetensors.c - the validating safetensors reader (safetensors.h).
 *
 * The file is mapped read-only; the header is parsed by json.c into an arena that the
 * file keeps (tensor names point into it). Every tensor is checked before open returns:
 * dtype, shape, byte size, offsets inside the file; then the tensors are sorted by offset
 * to reject overlaps.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/json.h"
#include "model/safetensors.h"
#include "util/util.h"

struct st_file {
    char *path;
    const uint8_t *map;
    size_t size;
    size_t data_start;          /* 8 + header bytes */
    struct pv_arena arena;      /* the parsed header */
    const struct json *meta;    /* "__metadata__" or NULL */
    size_t n_tensors;
    struct st_tensor *tensors;  /* [n_tensors], owned */
};

static const struct {
    const char *name;
    size_t bytes;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},
    [ST_U16] = {"U16", 2},   [ST_I16] = {"I16", 2},   [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_U32] = {"U32", 4},   [ST_I32] = {"I32", 4},
    [ST_F32] = {"F32", 4},   [ST_U64] = {"U64", 8},   [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(enum st_dtype t)
{
    return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].name : "invalid";
}

size_t st_dtype_bytes(enum st_dtype t)
{
    return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].bytes : 0;
}

/* One header member into *t; `at` is the byte of the header where the tensor is named. */
static enum pv_status read_tensor(struct st_file *f, const char *name, const struct json *v,
                                  struct st_tensor *t, struct pv_err *err)
{
    const char *dt;
    const struct json *shape, *offs;
    uint64_t begin, end;
    t->name = name;
    if (v->type != JSON_OBJECT)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: header entry '%s' is not an object",
                          f->path, name);
    if (!json_get_str(v, "dtype", &dt))
        return pv_err_set(err, PV_ERR_FORMAT, "%s: tensor '%s' has no \"dtype\" string",
                          f->path, name);
    t->dtype = ST_DTYPE_COUNT;
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (strcmp(dt, dtypes[d].name) == 0)
            t->dtype = (enum st_dtype)d;
    if (t->dtype == ST_DTYPE_COUNT)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%.32s'",
                          f->path, name, dt);
    shape = json_get(v, "shape");
    if (!shape || shape->type != JSON_ARRAY)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: tensor '%s' has no \"shape\" array",
                          f->path, name);
    if (shape->n > ST_MAX_DIMS)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: tensor '%s' shape has %zu dims (at most %d)",
                          f->path, name, shape->n, ST_MAX_DIMS);
    t->n_dims = (int)shape->n;
    size_t n_bytes = dtypes[t->dtype].bytes;
    for (int d = 0; d < ST_MAX_DIMS; d++)
        t->shape[d] = 1;
    for (size_t d = 0; d < shape->n; d++) {
        uint64_t x;
        if (!json_u64(&shape->items[d], &x) || x > INT64_MAX ||
            pv_mul_overflow(n_bytes, (size_t)x, &n_bytes))
            return pv_err_set(err, PV_ERR_FORMAT,
                              "%s: tensor '%s' shape dim %zu is not a non-negative integer or the size overflows",
                              f->path, name, d);
        t->shape[d] = (int64_t)x;
    }
    offs = json_get(v, "data_offsets");
    if (!offs || offs->type != JSON_ARRAY || offs->n != 2 || !json_u64(&offs->items[0], &begin) ||
        !json_u64(&offs->items[1], &end) || begin > end)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: tensor '%s' \"data_offsets\" are not two integers [begin, end] with begin <= end",
                          f->path, name);
    if (end - begin != n_bytes)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: tensor '%s' has %llu data bytes but its dtype %s and shape need %zu",
                          f->path, name, (unsigned long long)(end - begin), dtypes[t->dtype].name,
                          n_bytes);
    size_t data_bytes = f->size - f->data_start;
    if (end > data_bytes)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: tensor '%s' data [%llu, %llu) is past the end of the file (%zu data bytes)",
                          f->path, name, (unsigned long long)begin, (unsigned long long)end,
                          data_bytes);
    t->offset = f->data_start + begin;
    t->n_bytes = n_bytes;
    t->data = f->map + t->offset;
    return PV_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static enum pv_status check_unique_and_disjoint(struct st_file *f, struct pv_err *err)
{
    enum pv_status st = PV_OK;
    const struct st_tensor **order = try_calloc(f->n_tensors + 1, sizeof(*order));
    const char **names = try_calloc(f->n_tensors + 1, sizeof(*names));
    if (!order || !names) {
        st = pv_err_set(err, PV_ERR_NOMEM, "%s: no memory to sort %zu tensors", f->path,
                        f->n_tensors);
        goto out;
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        order[i] = &f->tensors[i];
        names[i] = f->tensors[i].name;
    }
    qsort(names, f->n_tensors, sizeof(*names), cmp_name);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            st = pv_err_set(err, PV_ERR_FORMAT, "%s: tensor '%s' is named twice in the header",
                            f->path, names[i]);
            goto out;
        }
    qsort(order, f->n_tensors, sizeof(*order), cmp_offset);
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = order[i];
        if (t->n_bytes == 0)
            continue;
        if (prev && t->offset < prev_end) {
            st = pv_err_set(err, PV_ERR_FORMAT,
                            "%s: tensor '%s' data [offset %llu, %zu bytes] overlaps tensor '%s'",
                            f->path, t->name, (unsigned long long)(t->offset - f->data_start),
                            t->n_bytes, prev);
            goto out;
        }
        prev_end = t->offset + t->n_bytes;
        prev = t->name;
    }
out:
    free(order);
    free(names);
    return st;
}

static enum pv_status parse(struct st_file *f, struct pv_err *err)
{
    uint64_t n;
    char msg[160];
    struct json *root;
    if (f->size < 8)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: file is %zu bytes, too short for the 8-byte header length",
                          f->path, f->size);
    memcpy(&n, f->map, 8);
    if (n > ST_MAX_HEADER_BYTES || n > f->size - 8)
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: header length %llu does not fit the file (%zu bytes, header at most %u)",
                          f->path, (unsigned long long)n, f->size, ST_MAX_HEADER_BYTES);
    if (n < 2)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: header length %llu is too short for JSON",
                          f->path, (unsigned long long)n);
    f->data_start = 8 + (size_t)n;
    arena_init(&f->arena, 64 * 1024);
    if (!json_parse((const char *)f->map + 8, (size_t)n, &f->arena, &root, msg, sizeof msg))
        return pv_err_set(err, PV_ERR_FORMAT, "%s: header is not valid JSON: %s (from offset 8)",
                          f->path, msg);
    if (root->type != JSON_OBJECT)
        return pv_err_set(err, PV_ERR_FORMAT, "%s: header is a JSON %s, not an object", f->path,
                          json_type_name(root->type));
    f->tensors = try_calloc(root->n + 1, sizeof(*f->tensors));
    if (!f->tensors)
        return pv_err_set(err, PV_ERR_NOMEM, "%s: no memory for %zu tensors", f->path, root->n);
    for (size_t i = 0; i < root->n; i++) {
        const char *name = root->keys[i];
        if (strlen(name) != root->key_lens[i])
            return pv_err_set(err, PV_ERR_FORMAT, "%s: a tensor name holds a NUL byte", f->path);
        if (strcmp(name, "__metadata__") == 0) {
            const struct json *m = &root->items[i];
            if (m->type != JSON_OBJECT)
                return pv_err_set(err, PV_ERR_FORMAT, "%s: \"__metadata__\" is not an object",
                                  f->path);
            for (size_t k = 0; k < m->n; k++)
                if (m->items[k].type != JSON_STRING)
                    return pv_err_set(err, PV_ERR_FORMAT,
                                      "%s: \"__metadata__\" value '%s' is not a string", f->path,
                                      m->keys[k]);
            f->meta = m;
            continue;
        }
        enum pv_status st = read_tensor(f, name, &root->items[i], &f->tensors[f->n_tensors], err);
        if (st != PV_OK)
            return st;
        f->n_tensors++;
    }
    return check_unique_and_disjoint(f, err);
}

enum pv_status st_open(const char *path, struct st_file **out, struct pv_err *err)
{
    struct st_file *f;
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
        st_close(f);
        goto out_fd;
    }
    f->map = m;
    st = parse(f, err);
    if (st != PV_OK) {
        st_close(f);
        goto out_fd;
    }
    *out = f;
out_fd:
    close(fd);
    return st;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->size);
    arena_release(&f->arena);
    free(f->tensors);
    free(f->path);
    free(f);
}

const char *st_path(const struct st_file *f) { return f->path; }
uint64_t st_file_bytes(const struct st_file *f) { return f->size; }
size_t st_n_tensors(const struct st_file *f) { return f->n_tensors; }

const struct st_tensor *st_tensor(const struct st_file *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void st_release(const struct st_tensor *t)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)t->data + t->n_bytes) & ~(page - 1);
    if (e > a)
        madvise((void *)a, e - a, MADV_DONTNEED);
}

bool st_metadata(const struct st_file *f, const char *key, const char **out)
{
    return json_get_str(f->meta, key, out);
}
