/*
 * gguf.h - a validating GGUF v3 reader over a read-only mmap.
 *
 * File layout (little-endian):
 *   u32 magic "GGUF" | u32 version (3; 2 accepted) | u64 n_tensors | u64 n_kv
 *   n_kv x   { string key | u32 value_type | value }
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   zero padding to general.alignment (default 32) | tensor data
 * string = u64 length + bytes (no NUL). array value = u32 elem_type + u64 count + elems.
 * Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
 * 10 u64, 11 i64, 12 f64.
 *
 * gguf_open validates everything before anything is used (see reference/engine.md
 * section 1.5): every read bounded by the file, counts and sizes overflow-checked,
 * keys and tensor names unique, value types known, alignment a power of two, tensor
 * types supported, shapes representable, data aligned and inside the file. After a
 * successful open every accessor below is safe on any input.
 */
#ifndef PV_GGUF_H
#define PV_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/compute.h"
#include "pensieve.h"

enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12,
};

/* A borrowed string inside the mapped file (not NUL-terminated). */
struct gguf_str {
    const char *p;
    uint64_t n;
};

struct gguf_file; /* opaque; owns the mmap */

/*
 * Map and validate `path`. On success *out owns the mapping (gguf_close frees it); on
 * failure *out is NULL and err names the file, what is wrong and at which offset.
 */
enum pv_status gguf_open(const char *path, struct gguf_file **out, struct pv_err *err);
void gguf_close(struct gguf_file *f);
/*
 * The same over a heap buffer data[0..n) (malloc'd), which the file takes over whatever
 * the outcome; `name` stands for the path in messages. Used for the metadata that an MLX
 * directory's JSON files are translated into (model/mlx.c).
 */
enum pv_status gguf_open_mem(const char *name, void *data, size_t n, struct gguf_file **out,
                             struct pv_err *err);

const char *gguf_path(const struct gguf_file *f);
uint64_t gguf_file_bytes(const struct gguf_file *f);
uint32_t gguf_version(const struct gguf_file *f);

/* Metadata. Keys are looked up by exact name; -1 when absent. */
int64_t gguf_n_kv(const struct gguf_file *f);
int64_t gguf_find_key(const struct gguf_file *f, const char *key);
struct gguf_str gguf_key_name(const struct gguf_file *f, int64_t i);
enum gguf_vtype gguf_kv_type(const struct gguf_file *f, int64_t i);

/*
 * Typed getters by key. Each returns false (leaving *out untouched) when the key is
 * absent or its value cannot be represented in the requested type; integer getters
 * accept any integer type whose value fits, float getters accept f32 and f64.
 */
bool gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out);

/*
 * Arrays: element type and count of the array stored under `key`; false when the key is
 * absent or not an array. Elements are read by index (bounds-checked, false when out of
 * range or of another type). String elements are found through an index built at open.
 */
bool gguf_get_arr_info(const struct gguf_file *f, const char *key, enum gguf_vtype *elem_type,
                       uint64_t *count);
bool gguf_get_arr_str(const struct gguf_file *f, const char *key, uint64_t i,
                      struct gguf_str *out);
/* Numeric element i converted to double (any numeric element type). */
bool gguf_get_arr_num(const struct gguf_file *f, const char *key, uint64_t i, double *out);
/*
 * Raw pointer to a numeric array's elements (little-endian, elem_type-sized), or NULL.
 * The pointer has no alignment guarantee: read elements with memcpy.
 */
const void *gguf_get_arr_data(const struct gguf_file *f, const char *key);

/* Tensors: count, lookup by name (-1 when absent), and views into the mapped data. */
int64_t gguf_n_tensors(const struct gguf_file *f);
int64_t gguf_find_tensor(const struct gguf_file *f, const char *name);
/* View of tensor i; the view and its name borrow the mapping (valid until gguf_close). */
const struct pv_tensor *gguf_tensor(const struct gguf_file *f, int64_t i);

/* general.alignment (default 32) and the file offset where tensor data starts. */
uint32_t gguf_alignment(const struct gguf_file *f);
/* Start of the read-only mapping of the whole file (page-aligned). */
const void *gguf_map(const struct gguf_file *f);
uint64_t gguf_data_offset(const struct gguf_file *f);
/* ggml's name of a tensor type id ("q4_K", "iq2_xxs"), or NULL for ids ggml never had. */
const char *gguf_type_name(uint32_t type);
/* Name of a metadata value type ("u32", "string"), "invalid" when out of range. */
const char *gguf_vtype_name(enum gguf_vtype t);

#endif /* PV_GGUF_H */
