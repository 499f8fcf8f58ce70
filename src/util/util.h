/*
 * util.h - the util module: what every other module of Pensieve stands on.
 *
 * Status and error detail live in the public header (pensieve.h); this header adds the
 * internal pieces: assertions for programmer bugs, checked size arithmetic, allocation
 * (x* aborts on the small fixed sizes, try_* returns NULL for sizes that come from input),
 * arenas for request lifetimes, growable byte buffers, leveled logging, clocks and the
 * fork-join thread pool the compute kernels fan out on.
 */
#ifndef PV_UTIL_H
#define PV_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pensieve.h"

/* ---- bugs, not errors ------------------------------------------------------------- */

/* Abort with file and line: for states only a programming error can reach. */
#define PV_ASSERT(x)                                                                       \
    do {                                                                                   \
        if (!(x))                                                                          \
            pv_bug(__FILE__, __LINE__, "assertion failed: %s", #x);                        \
    } while (0)
#define PV_BUG(...) pv_bug(__FILE__, __LINE__, __VA_ARGS__)
#define PV_UNUSED(x) (void)(x)
#define PV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PV_MAX(a, b) ((a) > (b) ? (a) : (b))
#define pv_likely(x) __builtin_expect(!!(x), 1)
#define pv_unlikely(x) __builtin_expect(!!(x), 0)

_Noreturn void pv_bug(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- checked arithmetic: true when the result overflowed -------------------------- */

static inline bool pv_add_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool pv_mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
/* Round `x` up to a multiple of `align` (a power of two); true on overflow. */
static inline bool pv_align_overflow(size_t x, size_t align, size_t *out)
{
    size_t t;
    if (__builtin_add_overflow(x, align - 1, &t))
        return true;
    *out = t & ~(align - 1);
    return false;
}

/* ---- allocation ------------------------------------------------------------------- */

/* Small fixed-size allocations: abort with a message on OOM. Never NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/*
 * Allocations sized by a file or a request: NULL on failure or overflow (the "gently"
 * variants). try_calloc checks count*size for overflow.
 */
void *try_malloc(size_t n);
void *try_calloc(size_t count, size_t size);
void *try_realloc(void *p, size_t n);
/* Fault injection (tests only): the n-th try_* or arena allocation from now returns NULL,
 * once; 0 turns it off. Lets a test walk every allocation failure of a code path. */
void pv_alloc_fail_at(long n);

/* ---- arena: many allocations, one release ------------------------------------------ */

struct pv_arena_chunk;
struct pv_arena {
    struct pv_arena_chunk *head; /* newest chunk first */
    size_t chunk_bytes;          /* default size of a new chunk */
    size_t used_bytes;           /* total handed out, for accounting */
};

/* Initialize a caller-owned arena; nothing is allocated until the first arena_alloc. */
void arena_init(struct pv_arena *a, size_t chunk_bytes);
/* Free every chunk; the arena is empty and reusable. */
void arena_release(struct pv_arena *a);
/*
 * Return `n` bytes aligned to 16, owned by the arena (valid until arena_release).
 * NULL on OOM or overflow (n comes from input).
 */
void *arena_alloc(struct pv_arena *a, size_t n);
void *arena_calloc(struct pv_arena *a, size_t count, size_t size);
/* Copy `n` bytes of `s` plus a NUL into the arena. NULL on OOM. */
char *arena_strndup(struct pv_arena *a, const char *s, size_t n);
char *arena_strdup(struct pv_arena *a, const char *s);

/* ---- byte buffer ------------------------------------------------------------------ */

/*
 * Growable byte buffer. Invariant: `data` is never NULL and data[len] == '\0', so a
 * buffer is always a valid C string (git strbuf). Initialize with PV_BUF_INIT or buf_init.
 */
struct pv_buf {
    char *data;
    size_t len; /* bytes in use, not counting the NUL */
    size_t cap; /* bytes allocated; 0 while data points at the shared empty string */
};
extern char pv_buf_empty[];
#define PV_BUF_INIT {pv_buf_empty, 0, 0}

void buf_init(struct pv_buf *b);
/* Free the contents; the buffer is empty and reusable. */
void buf_release(struct pv_buf *b);
/* Empty the buffer, keeping its capacity. */
void buf_reset(struct pv_buf *b);
/* Ensure room for `extra` more bytes; false on OOM or overflow (contents unchanged). */
bool buf_reserve(struct pv_buf *b, size_t extra);
/* Append; false on OOM (buffer unchanged). */
bool buf_append(struct pv_buf *b, const void *p, size_t n);
bool buf_puts(struct pv_buf *b, const char *s);
bool buf_putc(struct pv_buf *b, char c);
bool buf_printf(struct pv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool buf_vprintf(struct pv_buf *b, const char *fmt, va_list ap);
/* Hand the bytes to the caller (free() them); the buffer is left empty. */
char *buf_detach(struct pv_buf *b, size_t *len);

/* ---- logging ---------------------------------------------------------------------- */

enum pv_log_level { PV_LOG_DEBUG, PV_LOG_INFO, PV_LOG_WARN, PV_LOG_ERROR, PV_LOG_OFF };

/* Messages below `level` are dropped. Default PV_LOG_INFO, or $PENSIEVE_LOG_LEVEL. */
void log_set_level(enum pv_log_level level);
enum pv_log_level log_get_level(void);
/* Parse "debug", "info", "warn", "error", "off"; false if unknown. */
bool log_parse_level(const char *s, enum pv_log_level *out);
/* Emit JSON objects instead of text lines. */
void log_set_json(bool json);
bool log_is_json(void);
/* One line to stderr with a timestamp and the level; thread-safe. Never on hot paths. */
void log_msg(enum pv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(PV_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(PV_LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(PV_LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(PV_LOG_ERROR, __VA_ARGS__)
/* Write one preformatted line (no prefix added), atomically with respect to log_msg. */
void log_raw_line(const char *line);

/* ---- clocks ----------------------------------------------------------------------- */

/* Monotonic nanoseconds. */
uint64_t clock_now_ns(void);
/* Wall-clock seconds since the epoch. */
double clock_wall_s(void);

/* ---- thread pool ------------------------------------------------------------------ */

/*
 * A fork-join pool: pool_run() calls fn(ctx, ith, nth) once for every ith in [0, nth),
 * each part on whichever thread claims it first (the caller included; a part never runs
 * twice), and returns when all have finished. Workers spin briefly between jobs, then
 * sleep. One caller at a time.
 */
struct pv_pool;
typedef void (*pv_pool_fn)(void *ctx, int ith, int nth);

/* A pool of `n_threads` threads in all (the caller counts as one); n_threads >= 1. */
struct pv_pool *pool_new(int n_threads);
void pool_free(struct pv_pool *pool);
int pool_size(const struct pv_pool *pool);
void pool_run(struct pv_pool *pool, pv_pool_fn fn, void *ctx);
/* Split [0, n) in nth nearly equal parts; part ith is [*begin, *end). */
void pool_split(size_t n, int ith, int nth, size_t *begin, size_t *end);

/* Number of online CPU cores, at least 1. */
int cpu_count(void);
/* MemAvailable of /proc/meminfo in bytes; false when it cannot be read. */
bool mem_available_bytes(uint64_t *out);

/* ---- small string helpers --------------------------------------------------------- */

/* Parse a whole string as a base-10 integer in [min, max]; false on anything else. */
bool parse_long(const char *s, long min, long max, long *out);
/* Parse a whole string as a finite double; false on anything else. */
bool parse_double(const char *s, double *out);
/* Human-readable byte size into out ("1.5 GiB"). */
void format_bytes(uint64_t n, char *out, size_t cap);
/* Whether environment variable `name` is set, non-empty and not "0". */
bool env_flag(const char *name);
/*
 * The candidate closest to `word` by edit distance (insert, delete, substitute, swap of
 * neighbours; case-insensitive), or NULL when none is within a third of its length
 * (at least 2), else the one candidate containing `word` (3+ characters): the "did you
 * mean" of error messages. `cands` has n strings.
 */
const char *suggest_closest(const char *word, const char *const *cands, size_t n);

/* ---- SHA-256 (sha256.c) ------------------------------------------------------------ */

struct sha256 {
    uint32_t h[8];
    uint64_t n_bytes;  /* bytes fed so far */
    uint8_t buf[64];   /* a partial block */
    size_t n_buf;
};
void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
/* Finish: the 32-byte digest, or 64 lower-case hex digits and a NUL. */
void sha256_final(struct sha256 *s, uint8_t out[32]);
void sha256_final_hex(struct sha256 *s, char out[65]);

#endif /* PV_UTIL_H */
