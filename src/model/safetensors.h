/*
 * safetensors.h - a validating reader of safetensors files over a read-only mmap.
 *
 * File layout:
 *   u64 N (little-endian) | N bytes of UTF-8 JSON header | data
 * The header is one object: for each tensor name
 *   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * with begin/end relative to the start of the data; an optional "__metadata__" object
 * maps strings to strings. Dims are row-major: shape[n_dims - 1] is contiguous.
 *
 * st_open validates everything before anything is used, as gguf_open does: the header
 * length inside the file, a strict JSON object, known dtypes, shapes whose byte size
 * fits and equals end - begin, offsets inside the file, no two tensors overlapping,
 * names unique. After a successful open every accessor is safe on any input.
 */
#ifndef PV_SAFETENSORS_H
#define PV_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pensieve.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES (100u << 20) /* the reference implementation's limit */

enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32, ST_U64,
    ST_I64, ST_F64, ST_F8_E4M3, ST_F8_E5M2, ST_DTYPE_COUNT
};

struct st_tensor {
    const char *name;           /* NUL-terminated, owned by the file */
    enum st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS]; /* row-major; unused dims are 1 */
    uint64_t offset;            /* of the data, from the start of the file */
    size_t n_bytes;
    const void *data;           /* into the mapping; no alignment guarantee */
};

struct st_file; /* opaque; owns the mmap */

/* Map and validate `path`. On success *out owns the mapping (st_close frees it); on
 * failure *out is NULL and err names the file, what is wrong and where. */
enum pv_status st_open(const char *path, struct st_file **out, struct pv_err *err);
void st_close(struct st_file *f);

const char *st_path(const struct st_file *f);
uint64_t st_file_bytes(const struct st_file *f);
size_t st_n_tensors(const struct st_file *f);
/* Tensor i (in header order) or by name (NULL when absent); valid until st_close. */
const struct st_tensor *st_tensor(const struct st_file *f, size_t i);
const struct st_tensor *st_find(const struct st_file *f, const char *name);
/* Drop the mapped pages that lie wholly inside t's data (read again from the file if
 * touched later): for data that was copied out and is not needed in place. */
void st_release(const struct st_tensor *t);
/* String `key` of "__metadata__"; false when absent. */
bool st_metadata(const struct st_file *f, const char *key, const char **out);

const char *st_dtype_name(enum st_dtype t);
size_t st_dtype_bytes(enum st_dtype t);

#endif /* PV_SAFETENSORS_H */
