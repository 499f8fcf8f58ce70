/*
 * json.h - a small strict JSON reader for the files of a model directory (config.json,
 * tokenizer.json, safetensors headers), internal to model/.
 *
 * RFC 8259 only: no comments, no trailing commas, no NaN; strings must be valid UTF-8
 * and their escapes are decoded (\uXXXX surrogate pairs joined, lone surrogates refused).
 * Nesting is limited to JSON_MAX_DEPTH. Every value lives in the caller's arena, so one
 * arena_release frees a whole document. Numbers keep their text, so 64-bit integers
 * (safetensors offsets) are read exactly.
 */
#ifndef PV_JSON_H
#define PV_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define JSON_MAX_DEPTH 64

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    bool b;                /* JSON_BOOL */
    const char *s;         /* JSON_STRING: decoded bytes, NUL-terminated; JSON_NUMBER: its text */
    size_t n;              /* string bytes, or elements / members */
    struct json *items;    /* JSON_ARRAY: [n] values; JSON_OBJECT: [n] member values */
    const char **keys;     /* JSON_OBJECT: [n] decoded keys, NUL-terminated */
    size_t *key_lens;      /* JSON_OBJECT: [n] key bytes (keys may hold NUL) */
};

/*
 * Parse text[0..n) into *out (allocated in arena). On failure returns false and writes
 * "what failed at byte N" into msg.
 */
bool json_parse(const char *text, size_t n, struct pv_arena *arena, struct json **out,
                char *msg, size_t msg_cap);

/* Member `key` of an object (the first one when duplicated), or NULL. */
const struct json *json_get(const struct json *obj, const char *key);
/* Typed reads of a member; false when absent or of another type (out untouched). */
bool json_get_str(const struct json *obj, const char *key, const char **out);
bool json_get_bool(const struct json *obj, const char *key, bool *out);
bool json_get_num(const struct json *obj, const char *key, double *out);
/* A number value that is an integer in [0, UINT64_MAX] written without fraction/exponent. */
bool json_u64(const struct json *v, uint64_t *out);
double json_num(const struct json *v);
const char *json_type_name(enum json_type t);

#endif /* PV_JSON_H */
