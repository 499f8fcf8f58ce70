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

/* ---------------------------------------------------------------------------------------
 * Models
 *
 * A model is a GGUF file mapped read-only and validated: its architecture (gemma3,
 * llama, qwen2, qwen3, phi3), hyper-parameters and every weight bound by name and exact
 * shape. Loading copies no weights. A loaded model is immutable: any thread may call the
 * accessors below concurrently; pv_model_free must come after every user is done.
 * -------------------------------------------------------------------------------------*/

struct pv_model; /* opaque */

struct pv_model_params {
    bool prefetch; /* ask the kernel to read the weights ahead (madvise WILLNEED); default false */
    bool mlock;    /* lock the weights in RAM; the load fails if that is refused; default false */
};

/* Defaults: no prefetch, no mlock. */
PV_API struct pv_model_params pv_model_default_params(void);

/*
 * Map, validate and bind the model at `path` (`params` may be NULL for the defaults).
 * On success *out is owned by the caller (pv_model_free); on failure it is NULL and err
 * says what is wrong: PV_ERR_NOT_FOUND / PV_ERR_IO for the file, PV_ERR_FORMAT for a
 * malformed file (with the byte offset or the tensor/key at fault), PV_ERR_UNSUPPORTED
 * for a valid file Pensieve cannot run (the message lists the supported architectures
 * when that is the reason).
 */
PV_API enum pv_status pv_model_load(const char *path, const struct pv_model_params *params,
                                    struct pv_model **out, struct pv_err *err);
/* Unmap and free a model; NULL is a no-op. */
PV_API void pv_model_free(struct pv_model *model);

/* general.architecture ("gemma3"); static string. */
PV_API const char *pv_model_arch(const struct pv_model *model);
/* general.name, else the file's base name; owned by the model. */
PV_API const char *pv_model_name(const struct pv_model *model);
/* Training context length ({arch}.context_length). */
PV_API uint32_t pv_model_n_ctx_train(const struct pv_model *model);
/* Vocabulary size (rows of token_embd.weight). */
PV_API uint32_t pv_model_n_vocab(const struct pv_model *model);
PV_API uint32_t pv_model_n_embd(const struct pv_model *model);
PV_API uint32_t pv_model_n_layer(const struct pv_model *model);
/* tokenizer.chat_template (Jinja source), owned by the model, or NULL when absent. */
PV_API const char *pv_model_chat_template(const struct pv_model *model);
/* Size of the model file, and the bytes of its tensor data. */
PV_API uint64_t pv_model_file_bytes(const struct pv_model *model);
PV_API uint64_t pv_model_weight_bytes(const struct pv_model *model);
/*
 * KV cache bytes for n_ctx positions at kv_bytes_per_elem bytes per element (2 for
 * F16): per layer 2 x n_head_kv x head_dim x positions; sliding-window layers count
 * min(n_ctx, window) positions (the least a cache needs; a cache that keeps all n_ctx
 * positions for every layer uses pv_context_estimate's figure instead).
 */
PV_API uint64_t pv_model_kv_bytes(const struct pv_model *model, uint32_t n_ctx,
                                  double kv_bytes_per_elem);
/* Weights + pv_model_kv_bytes: the memory the model needs at context size n_ctx. */
PV_API uint64_t pv_model_memory_bytes(const struct pv_model *model, uint32_t n_ctx,
                                      double kv_bytes_per_elem);

/* What `pensieve models` lists about a file, read from its metadata alone. */
struct pv_model_summary {
    char architecture[64]; /* general.architecture, "?" when absent */
    char name[256];        /* general.name or "" */
    char quant[32];        /* "Q4_K_M" (general.file_type), else the dominant weight type */
    bool supported;        /* the architecture is one Pensieve runs */
    uint64_t file_bytes;
    uint64_t n_tensors;
    uint64_t n_params;     /* elements over all tensors */
};

/*
 * Open and validate the GGUF file at `path` (no tensor binding) and fill *out. Errors as
 * pv_model_load's gguf part; an unsupported architecture is not an error here.
 */
PV_API enum pv_status pv_model_probe(const char *path, struct pv_model_summary *out,
                                     struct pv_err *err);

#ifdef __cplusplus
}
#endif

#endif /* PENSIEVE_H */
