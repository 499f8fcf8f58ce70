/*
 * pensieve.h - the public C API of Pensieve, a local LLM inference engine and server.
 *
 * This is the one header that cli/, server/ and any program embedding the engine use.
 * Objects are opaque handles; options come as `struct pv_x_params` filled by
 * `pv_x_default_params()`. Every action returns `enum pv_status` (0 ok, negative error)
 * and, when given one, fills a caller-owned `struct pv_err` with a readable message.
 * Unless a function says otherwise it is not thread-safe on the same handle.
 */
#ifndef PENSIEVE_H
#define PENSIEVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PV_API __attribute__((visibility("default")))
#else
#define PV_API
#endif

#define PV_VERSION "0.1.0"

/* ---------------------------------------------------------------------------------------
 * Status codes and error detail
 * -------------------------------------------------------------------------------------*/

/*
 * X(name, value, short name, message, HTTP status, Anthropic error type, OpenAI error type)
 * Append only; values are never renumbered.
 */
#define PV_STATUS_MAP(X)                                                                   \
    X(PV_OK, 0, "ok", "success", 200, "", "")                                              \
    X(PV_ERR_INVALID, -1, "invalid", "invalid argument", 400, "invalid_request_error",     \
      "invalid_request_error")                                                             \
    X(PV_ERR_NOMEM, -2, "nomem", "out of memory", 500, "api_error", "server_error")        \
    X(PV_ERR_IO, -3, "io", "input/output error", 500, "api_error", "server_error")         \
    X(PV_ERR_FORMAT, -4, "format", "malformed input", 400, "invalid_request_error",        \
      "invalid_request_error")                                                             \
    X(PV_ERR_UNSUPPORTED, -5, "unsupported", "not supported", 400,                         \
      "invalid_request_error", "invalid_request_error")                                    \
    X(PV_ERR_NOT_FOUND, -6, "not_found", "not found", 404, "not_found_error",              \
      "not_found_error")                                                                   \
    X(PV_ERR_AUTH, -7, "auth", "authentication failed", 401, "authentication_error",       \
      "authentication_error")                                                              \
    X(PV_ERR_PERMISSION, -8, "permission", "permission denied", 403, "permission_error",   \
      "permission_error")                                                                  \
    X(PV_ERR_TOO_LARGE, -9, "too_large", "request too large", 413, "request_too_large",    \
      "invalid_request_error")                                                             \
    X(PV_ERR_OVERLOADED, -10, "overloaded", "server overloaded", 529, "overloaded_error",  \
      "server_error")                                                                      \
    X(PV_ERR_RATE_LIMIT, -11, "rate_limit", "rate limited", 429, "rate_limit_error",       \
      "rate_limit_error")                                                                  \
    X(PV_ERR_CANCELLED, -12, "cancelled", "cancelled", 499, "api_error", "server_error")   \
    X(PV_ERR_TIMEOUT, -13, "timeout", "timed out", 504, "api_error", "server_error")       \
    X(PV_ERR_CONTEXT, -14, "context", "context window exceeded", 400,                      \
      "invalid_request_error", "invalid_request_error")                                    \
    X(PV_ERR_INTERNAL, -15, "internal", "internal error", 500, "api_error", "server_error") \
    X(PV_ERR_DEVICE, -16, "device", "device error", 500, "api_error", "server_error")

enum pv_status {
#define PV_STATUS_ENUM(name, value, s, m, h, a, o) name = value,
    PV_STATUS_MAP(PV_STATUS_ENUM)
#undef PV_STATUS_ENUM
};

#define PV_ERR_MSG_MAX 512

/* Detail of a failure, owned by the caller (like curl's CURLOPT_ERRORBUFFER). */
struct pv_err {
    enum pv_status status;
    char msg[PV_ERR_MSG_MAX]; /* NUL-terminated, lower case, what failed first */
};

/* Short name of a status ("format"); never NULL, "unknown" for values not in the map. */
PV_API const char *pv_status_name(enum pv_status s);
/* Default message of a status ("malformed input"); never NULL. */
PV_API const char *pv_status_str(enum pv_status s);
/* HTTP status that an API response for this status uses (400, 404, 529...). */
PV_API int pv_status_http(enum pv_status s);
/* Anthropic error "type" for this status ("invalid_request_error"); "" for PV_OK. */
PV_API const char *pv_status_anthropic_type(enum pv_status s);
/* OpenAI error "type" for this status; "" for PV_OK. */
PV_API const char *pv_status_openai_type(enum pv_status s);

/*
 * Record a failure in `err` (which may be NULL) and return `status`, so that callers
 * can write `return pv_err_set(err, PV_ERR_FORMAT, "tensor '%s' out of bounds", name);`.
 */
PV_API enum pv_status pv_err_set(struct pv_err *err, enum pv_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reset `err` to PV_OK with an empty message. */
PV_API void pv_err_clear(struct pv_err *err);

/* ---------------------------------------------------------------------------------------
 * Library-wide
 * -------------------------------------------------------------------------------------*/

/* Version string of the library, "0.1.0". */
PV_API const char *pv_version(void);

/*
 * Directory that holds models: $PENSIEVE_MODELS, else $XDG_CACHE_HOME/pensieve/models,
 * else $HOME/.cache/pensieve/models. Writes a NUL-terminated path into `out`.
 * Returns PV_ERR_INVALID when it does not fit in `cap` bytes.
 */
PV_API enum pv_status pv_models_dir(char *out, size_t cap);

/* The file name of the default model inside pv_models_dir(). */
#define PV_DEFAULT_MODEL_FILE "gemma-3-270m-q4_k_m.gguf"

#ifdef __cplusplus
}
#endif

#endif /* PENSIEVE_H */
