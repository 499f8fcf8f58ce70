/*
 * diskcache.c - the persistent prefix cache (diskcache.h): block files named by the
 * model's identity and kv.h's hash chain, written by one writer thread per cache,
 * read by the engine thread when a prompt's prefix is not in the pool.
 *
 * The engine thread copies a published block into a job (the file's bytes but the
 * checksum) and queues it; the writer checksums it, writes it to a temporary file,
 * fsyncs and renames it under the directory lock, evicting least recently used files
 * first when the limit would be passed. A lookup opens the file by name (so blocks
 * written by another process are found), checks every field and the checksum, and only
 * then copies the rows into the pool.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/diskcache.h"
#include "engine/engine.h"
#include "model/gguf.h"

#define MAGIC "PVKVBLK"
#define ENDIAN_MARK 0x01020304u
#define HEADER_BYTES 104u
#define QUEUE_MAX_BYTES ((size_t)256 << 20) /* blocks waiting for the writer */
#define RECENT 1024                         /* hashes queued lately (no second copy) */
#define TMP_STALE_S 3600                    /* a temporary file this old is an orphan */

struct job {
    struct job *next;
    uint64_t hash;
    uint8_t data[];                         /* [file_bytes], the checksum left to fill */
};

struct dcache {
    char *dir;                              /* owned */
    uint64_t max_bytes;
    /* what a block file must match */
    uint32_t kv_type, block_size, n_layer;
    uint64_t row_k_bytes, row_v_bytes;
    size_t payload_bytes, file_bytes;
    uint8_t model_id[32];
    char model_hex[17];                     /* the first 16 hex digits of model_id */
    /* the model file: path borrowed (the model outlives the cache), contents mapped */
    const char *model_path;
    const uint8_t *model_map;
    uint64_t model_bytes;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;                     /* guards the queue and stopping */
    pthread_cond_t cv;
    struct job *head, *tail;
    size_t queued_bytes;
    bool stopping;
    atomic_bool ready;

    /* engine thread */
    uint8_t *buf;                           /* [file_bytes] a block being read */
    uint64_t recent[RECENT];                /* hashes queued lately, a ring */
    uint32_t recent_next;

    /* writer thread: the directory as last counted */
    int lock_fd;                            /* <dir>/lock: flock, and the generation */
    uint64_t gen_seen;                      /* the generation of that count */
    bool counted;
    uint64_t tmp_seq;

    atomic_uint_fast64_t hits, misses, bytes_read, writes, bytes_written, evictions, invalid,
        dropped, files, bytes;
};

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* A 64-bit checksum of n bytes. Each step is a bijection of the state for a given
 * word and of the word for a given state, so any change confined to one 8-byte word
 * always changes the result; other damage is missed with probability about 2^-64. */
static uint64_t checksum(const uint8_t *p, size_t n)
{
    const uint64_t P1 = UINT64_C(0x9e3779b97f4a7c15), P2 = UINT64_C(0xc2b2ae3d27d4eb4f);
    uint64_t h = UINT64_C(0x27d4eb2f165667c5) ^ (uint64_t)n, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = rotl64(h ^ (w * P1), 31) * P2;
    }
    if (i < n) {
        w = 0;
        memcpy(&w, p + i, n - i);
        h = rotl64(h ^ (w * P1), 31) * P2;
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 29;
    return h;
}

static const char *kv_type_name(uint32_t t)
{
    return t == PV_KV_F32 ? "f32" : "f16";
}

static void block_path(const struct dcache *dc, uint64_t hash, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s-%s-%u-%016" PRIx64 ".kv", dc->dir, dc->model_hex,
             kv_type_name(dc->kv_type), dc->block_size, hash);
}

/* mkdir -p */
static bool make_dirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return mkdir(tmp, 0755) == 0 || errno == EEXIST;
}

static bool write_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, void *data, size_t n)
{
    uint8_t *p = data;
    size_t off = 0;
    while (off < n) {
        ssize_t r = pread(fd, p + off, n - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        off += (size_t)r;
    }
    return true;
}

/* Write data to a temporary file in dir, fsync it and rename it to path. */
static bool write_atomic(struct dcache *dc, const char *path, const void *data, size_t n)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%ld-%" PRIu64 ".part", dc->dir, (long)getpid(),
             dc->tmp_seq++);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    bool ok = write_all(fd, data, n) && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    unlink(tmp);
    return false;
}

/* ---- the model's identity ---------------------------------------------------------- */

static bool parse_hex32(const char *s, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (uint8_t)v;
    }
    return true;
}

/* SHA-256 of the model file's contents (as mapped), read from the side file named by
 * the file's device, inode, size, mtime and ctime when an earlier run left one. Any
 * write to the file changes its ctime (which no user can set back), so a side file never
 * names a changed file; a copy gets another inode and is hashed again. false when
 * stopping cut the hashing short. */
static bool identify_model(struct dcache *dc)
{
    char side[4400] = "", hex[65];
    struct stat st;
    if (stat(dc->model_path, &st) == 0 && (uint64_t)st.st_size == dc->model_bytes) {
        snprintf(side, sizeof(side), "%s/model-%llx-%llx-%llx-%lld.%09ld-%lld.%09ld.id", dc->dir,
                 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                 (unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
        FILE *f = fopen(side, "r");
        if (f) {
            bool ok = fgets(hex, sizeof(hex), f) && strlen(hex) == 64 &&
                      parse_hex32(hex, dc->model_id);
            fclose(f);
            if (ok)
                return true;
        }
    }
    const uint64_t t0 = clock_now_ns();
    struct sha256 h;
    sha256_init(&h);
    for (uint64_t off = 0; off < dc->model_bytes;) {
        size_t n = (size_t)PV_MIN(dc->model_bytes - off, (uint64_t)8 << 20);
        sha256_update(&h, dc->model_map + off, n);
        off += n;
        pthread_mutex_lock(&dc->mu);
        bool stop = dc->stopping;
        pthread_mutex_unlock(&dc->mu);
        if (stop)
            return false;
    }
    sha256_final(&h, dc->model_id);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dc->model_id[i]);
    hex[64] = '\n';
    if (side[0])
        write_atomic(dc, side, hex, 65);
    log_info("disk cache: model file identified in %.1f s (sha256 %.16s...)",
             (double)(clock_now_ns() - t0) / 1e9, hex);
    return true;
}

/* ---- the directory's accounting (writer thread, under the lock) -------------------- */

struct entry {
    char name[128];
    uint64_t bytes;
    struct timespec mtime;
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Count the block files (all models); with list, also collect them; with clean, remove
 * temporary files whose writer is gone. */
static void scan(struct dcache *dc, struct entry **list, size_t *n_list, bool clean)
{
    DIR *d = opendir(dc->dir);
    uint64_t bytes = 0, files = 0;
    size_t cap = 0;
    if (list) {
        *list = NULL;
        *n_list = 0;
    }
    if (!d)
        return;
    const int dfd = dirfd(d);
    const time_t now = time(NULL);
    for (struct dirent *e; (e = readdir(d));) {
        struct stat st;
        if (e->d_name[0] == '.' && strncmp(e->d_name, ".tmp-", 5) == 0 && clean) {
            long pid = strtol(e->d_name + 5, NULL, 10);
            if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                ((pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH) ||
                 now - st.st_mtime > TMP_STALE_S))
                unlinkat(dfd, e->d_name, 0);
            continue;
        }
        if (!ends_with(e->d_name, ".kv") || strlen(e->d_name) >= sizeof((*list)->name) ||
            fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        bytes += (uint64_t)st.st_size;
        files++;
        if (list) {
            if (*n_list == cap) {
                cap = cap ? 2 * cap : 256;
                *list = xrealloc(*list, cap * sizeof(**list));
            }
            struct entry *en = &(*list)[(*n_list)++];
            snprintf(en->name, sizeof(en->name), "%s", e->d_name);
            en->bytes = (uint64_t)st.st_size;
            en->mtime = st.st_mtim;
        }
    }
    closedir(d);
    atomic_store(&dc->bytes, bytes);
    atomic_store(&dc->files, files);
}

static uint64_t gen_read(struct dcache *dc)
{
    uint64_t g = 0;
    if (pread(dc->lock_fd, &g, sizeof(g), 0) != (ssize_t)sizeof(g))
        g = 0;
    return g;
}

/* Another process changed the directory since our count: count again. */
static void account(struct dcache *dc)
{
    uint64_t g = gen_read(dc);
    if (!dc->counted || g != dc->gen_seen) {
        scan(dc, NULL, NULL, false);
        dc->gen_seen = g;
        dc->counted = true;
    }
}

/* Our change to the directory, for the others to see. */
static void gen_bump(struct dcache *dc)
{
    uint64_t g = gen_read(dc) + 1;
    if (pwrite(dc->lock_fd, &g, sizeof(g), 0) == (ssize_t)sizeof(g))
        dc->gen_seen = g;
    else
        dc->counted = false;
}

static int by_mtime(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec)
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    return 0;
}

/* Remove least recently used files until `incoming` more bytes fit under the limit with
 * a tenth of it to spare (so that the next writes do not each evict). */
static void make_room(struct dcache *dc, uint64_t incoming)
{
    if (atomic_load(&dc->bytes) + incoming <= dc->max_bytes)
        return;
    const uint64_t target = dc->max_bytes - dc->max_bytes / 10;
    struct entry *list;
    size_t n;
    char path[4400];
    scan(dc, &list, &n, false);
    uint64_t bytes = atomic_load(&dc->bytes), files = atomic_load(&dc->files);
    qsort(list, n, sizeof(*list), by_mtime);
    for (size_t i = 0; i < n && bytes + incoming > target; i++) {
        snprintf(path, sizeof(path), "%s/%s", dc->dir, list[i].name);
        if (unlink(path) != 0)
            continue;
        bytes -= list[i].bytes;
        files--;
        atomic_fetch_add(&dc->evictions, 1);
    }
    free(list);
    atomic_store(&dc->bytes, bytes);
    atomic_store(&dc->files, files);
}

/* ---- the writer thread ------------------------------------------------------------- */

static void write_job(struct dcache *dc, struct job *j)
{
    char path[4400];
    block_path(dc, j->hash, path, sizeof(path));
    uint64_t sum = checksum(j->data, dc->file_bytes - 8);
    memcpy(j->data + dc->file_bytes - 8, &sum, 8);

    if (flock(dc->lock_fd, LOCK_EX) != 0) {
        atomic_fetch_add(&dc->dropped, 1);
        return;
    }
    account(dc);
    /* a file of this name may be there already (written by another process, or damaged:
       a lookup that stopped at a block before it left it unread): it is replaced */
    struct stat st;
    if (dc->file_bytes > dc->max_bytes) {
        atomic_fetch_add(&dc->dropped, 1);
    } else {
        uint64_t had = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
        make_room(dc, dc->file_bytes > had ? dc->file_bytes - had : 0);
        /* (eviction may have taken it) */
        const bool replace = stat(path, &st) == 0;
        had = replace ? (uint64_t)st.st_size : 0;
        if (write_atomic(dc, path, j->data, dc->file_bytes)) {
            atomic_fetch_add(&dc->writes, 1);
            atomic_fetch_add(&dc->bytes_written, dc->file_bytes);
            if (!replace)
                atomic_fetch_add(&dc->files, 1);
            atomic_fetch_add(&dc->bytes, dc->file_bytes - had);
        } else {
            if (atomic_fetch_add(&dc->dropped, 1) == 0)
                log_warn("disk cache: cannot write '%s': %s", path, strerror(errno));
            dc->counted = false;
        }
        gen_bump(dc);
    }
    flock(dc->lock_fd, LOCK_UN);
}

static void *writer_main(void *arg)
{
    struct dcache *dc = arg;
    if (!identify_model(dc))
        goto drain;
    for (int i = 0; i < 8; i++)
        snprintf(dc->model_hex + 2 * i, 3, "%02x", dc->model_id[i]);
    if (flock(dc->lock_fd, LOCK_EX) == 0) {
        scan(dc, NULL, NULL, true);
        dc->counted = true;
        gen_bump(dc);
        make_room(dc, 0);
        flock(dc->lock_fd, LOCK_UN);
    }
    {
        char used[32], max[32];
        format_bytes(atomic_load(&dc->bytes), used, sizeof(used));
        format_bytes(dc->max_bytes, max, sizeof(max));
        log_info("disk cache %s: %s of %s in %llu blocks", dc->dir, used, max,
                 (unsigned long long)atomic_load(&dc->files));
    }
    atomic_store(&dc->ready, true);
drain:
    for (;;) {
        pthread_mutex_lock(&dc->mu);
        while (!dc->head && !dc->stopping)
            pthread_cond_wait(&dc->cv, &dc->mu);
        struct job *j = dc->head;
        if (j) {
            dc->head = j->next;
            if (!dc->head)
                dc->tail = NULL;
            dc->queued_bytes -= dc->file_bytes;
        }
        pthread_mutex_unlock(&dc->mu);
        if (!j)
            break;
        if (atomic_load(&dc->ready))
            write_job(dc, j);
        free(j);
    }
    return NULL;
}

/* ---- the interface ------------------------------------------------------------------ */

enum pv_status dcache_open(const char *dir, uint64_t max_bytes, const struct pv_context *ctx,
                           struct dcache **out, struct pv_err *err)
{
    const struct kv_cache *kv = &ctx->kv;
    char lock[4400];
    *out = NULL;
    if (!dir || !*dir || strlen(dir) > 4000)
        return pv_err_set(err, PV_ERR_INVALID, "no usable disk cache directory");
    /* an MLX directory's GGUF view is its translated metadata, not its weights: hashing it
       would not tell two directories of the same shape apart */
    if (ctx->model->mlx)
        return pv_err_set(err, PV_ERR_UNSUPPORTED, "the disk cache identifies GGUF files "
                          "only; an MLX directory is served with the memory cache");
    if (!make_dirs(dir))
        return pv_err_set(err, PV_ERR_IO, "cannot create the disk cache directory '%s': %s", dir,
                          strerror(errno));
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return pv_err_set(err, PV_ERR_IO, "cannot open '%s': %s", lock, strerror(errno));

    struct dcache *dc = xcalloc(1, sizeof(*dc));
    dc->dir = xstrdup(dir);
    dc->lock_fd = fd;
    dc->max_bytes = max_bytes;
    dc->kv_type = (uint32_t)ctx->kv_type;
    dc->block_size = kv->block_size;
    dc->n_layer = kv->n_layer;
    dc->row_k_bytes = kv->row_k_bytes;
    dc->row_v_bytes = kv->row_v_bytes;
    dc->payload_bytes = (size_t)kv->n_layer * kv->block_size * (kv->row_k_bytes + kv->row_v_bytes);
    dc->file_bytes = HEADER_BYTES + (size_t)kv->block_size * 4 + dc->payload_bytes + 8;
    dc->model_path = gguf_path(ctx->model->gguf);
    dc->model_map = gguf_map(ctx->model->gguf);
    dc->model_bytes = gguf_file_bytes(ctx->model->gguf);
    dc->buf = xmalloc(dc->file_bytes);
    pthread_mutex_init(&dc->mu, NULL);
    pthread_cond_init(&dc->cv, NULL);
    if (pthread_create(&dc->thread, NULL, writer_main, dc) != 0) {
        dcache_close(dc);
        return pv_err_set(err, PV_ERR_INTERNAL, "cannot start the disk cache writer");
    }
    dc->thread_started = true;
    *out = dc;
    return PV_OK;
}

void dcache_close(struct dcache *dc)
{
    if (!dc)
        return;
    if (dc->thread_started) {
        pthread_mutex_lock(&dc->mu);
        dc->stopping = true;
        pthread_cond_broadcast(&dc->cv);
        pthread_mutex_unlock(&dc->mu);
        pthread_join(dc->thread, NULL);
    }
    while (dc->head) {
        struct job *j = dc->head;
        dc->head = j->next;
        free(j);
    }
    pthread_mutex_destroy(&dc->mu);
    pthread_cond_destroy(&dc->cv);
    close(dc->lock_fd);
    free(dc->buf);
    free(dc->dir);
    free(dc);
}

/* Rows of the pool to host memory and back: the pool may live in a GPU's memory. */
static void rows_out(const struct kv_cache *kv, void *dst, const void *src, size_t bytes)
{
    if (kv->be)
        kv->be->ops->download(kv->be, dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}

static void rows_in(const struct kv_cache *kv, void *dst, const void *src, size_t bytes)
{
    if (kv->be)
        kv->be->ops->upload(kv->be, dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}

/* The header (and tokens) of a block into p[HEADER_BYTES + 4 * block_size]. */
static void put_header(const struct dcache *dc, uint8_t *p, uint64_t hash, uint64_t parent,
                       const int32_t *tokens)
{
    const uint32_t version = DCACHE_VERSION, endian = ENDIAN_MARK, zero = 0;
    const uint64_t payload = dc->payload_bytes;
    memset(p, 0, HEADER_BYTES);
    memcpy(p, MAGIC, 8);
    memcpy(p + 8, &version, 4);
    memcpy(p + 12, &endian, 4);
    memcpy(p + 16, dc->model_id, 32);
    memcpy(p + 48, &dc->kv_type, 4);
    memcpy(p + 52, &dc->block_size, 4);
    memcpy(p + 56, &dc->n_layer, 4);
    memcpy(p + 60, &zero, 4);
    memcpy(p + 64, &dc->row_k_bytes, 8);
    memcpy(p + 72, &dc->row_v_bytes, 8);
    memcpy(p + 80, &hash, 8);
    memcpy(p + 88, &parent, 8);
    memcpy(p + 96, &payload, 8);
    memcpy(p + HEADER_BYTES, tokens, (size_t)dc->block_size * 4);
}

void dcache_put(struct dcache *dc, const struct kv_cache *kv, uint32_t block)
{
    if (!dc || !atomic_load(&dc->ready) || !(kv->flags[block] & KV_BLOCK_HASHED) ||
        (kv->flags[block] & KV_BLOCK_SWA_GONE)) /* its window rows are no longer there */
        return;
    const uint64_t hash = kv->hash[block];
    for (uint32_t i = 0; i < RECENT; i++)
        if (dc->recent[i] == hash)
            return;
    pthread_mutex_lock(&dc->mu);
    bool full = dc->queued_bytes + dc->file_bytes > QUEUE_MAX_BYTES;
    pthread_mutex_unlock(&dc->mu);
    if (full) {
        atomic_fetch_add(&dc->dropped, 1);
        return;
    }
    struct job *j = try_malloc(sizeof(*j) + dc->file_bytes);
    if (!j) {
        atomic_fetch_add(&dc->dropped, 1);
        return;
    }
    j->next = NULL;
    j->hash = hash;
    const uint32_t bs = kv->block_size;
    put_header(dc, j->data, hash, kv->parent[block], kv->tokens + (size_t)block * bs);
    uint8_t *p = j->data + HEADER_BYTES + (size_t)bs * 4;
    for (uint32_t il = 0; il < kv->n_layer; il++, p += bs * kv->row_k_bytes)
        rows_out(kv, p, kv_k_row(kv, il, block * bs), bs * kv->row_k_bytes);
    for (uint32_t il = 0; il < kv->n_layer; il++, p += bs * kv->row_v_bytes)
        rows_out(kv, p, kv_v_row(kv, il, block * bs), bs * kv->row_v_bytes);
    dc->recent[dc->recent_next++ % RECENT] = hash;
    pthread_mutex_lock(&dc->mu);
    if (dc->tail)
        dc->tail->next = j;
    else
        dc->head = j;
    dc->tail = j;
    dc->queued_bytes += dc->file_bytes;
    pthread_cond_signal(&dc->cv);
    pthread_mutex_unlock(&dc->mu);
}

/* What is wrong with the block file read into dc->buf (n bytes) for this hash, parent
 * and tokens, or NULL when it is the block. */
static const char *check_block(struct dcache *dc, size_t n, uint64_t hash, uint64_t parent,
                               const int32_t *tokens)
{
    uint8_t want[HEADER_BYTES];
    uint64_t sum;
    if (n != dc->file_bytes)
        return n < dc->file_bytes ? "truncated" : "too long";
    memcpy(&sum, dc->buf + n - 8, 8);
    if (checksum(dc->buf, n - 8) != sum)
        return "corrupt (checksum mismatch)";
    put_header(dc, want, hash, parent, tokens);
    if (memcmp(dc->buf, want, 16) != 0)
        return "of another format or version";
    if (memcmp(dc->buf + 16, want + 16, 32) != 0)
        return "of another model";
    if (memcmp(dc->buf + 48, want + 48, 80 - 48) != 0 || memcmp(dc->buf + 96, want + 96, 8) != 0)
        return "of another kv layout";
    if (memcmp(dc->buf + 80, want + 80, 16) != 0 ||
        memcmp(dc->buf + HEADER_BYTES, tokens, (size_t)dc->block_size * 4) != 0)
        return "of another prefix";
    return NULL;
}

/* Read and check the block file for hash into dc->buf; false when missing or invalid
 * (an invalid file is removed). */
static bool load_block(struct dcache *dc, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    char path[4400];
    struct stat st;
    const char *why = NULL;
    block_path(dc, hash, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (fstat(fd, &st) != 0)
        why = "unreadable";
    else if ((uint64_t)st.st_size != dc->file_bytes)
        why = (uint64_t)st.st_size < dc->file_bytes ? "truncated" : "too long";
    else if (!read_all(fd, dc->buf, dc->file_bytes))
        why = "unreadable";
    else
        why = check_block(dc, dc->file_bytes, hash, parent, tokens);
    if (!why) {
        /* least recently used goes first: a hit is a use */
        const struct timespec t[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}};
        futimens(fd, t);
    }
    close(fd);
    if (why) {
        log_warn("disk cache: '%s' is %s; removed (its positions are computed again)", path, why);
        unlink(path);
        atomic_fetch_add(&dc->invalid, 1);
        return false;
    }
    atomic_fetch_add(&dc->bytes_read, dc->file_bytes);
    return true;
}

uint32_t dcache_extend(struct dcache *dc, struct kv_cache *kv, uint32_t seq, const int32_t *tokens,
                       size_t n)
{
    struct kv_seq *s = &kv->seqs[seq];
    const uint32_t bs = kv->block_size;
    if (!dc || !atomic_load(&dc->ready))
        return s->n_pos;
    uint32_t b = s->n_pos / bs;
    if ((size_t)(b + 1) * bs > n)
        return s->n_pos;
    uint64_t parent = KV_HASH_ROOT;
    for (uint32_t i = 0; i < b; i++)
        parent = kv_block_hash(parent, tokens + (size_t)i * bs, bs);
    if (s->n_pos % bs) {
        char path[4400];
        block_path(dc, kv_block_hash(parent, tokens + (size_t)b * bs, bs), path, sizeof(path));
        if (access(path, F_OK) != 0)
            return s->n_pos;
        kv_seq_truncate(kv, seq, b * bs);
    }
    for (; (size_t)(b + 1) * bs <= n && s->n_pos + bs <= kv->max_pos; b++) {
        const int32_t *t = tokens + (size_t)b * bs;
        const uint64_t hash = kv_block_hash(parent, t, bs);
        if (kv_seq_blocks_needed(kv, seq, bs) > kv->n_free)
            break;
        if (!load_block(dc, hash, parent, t)) {
            atomic_fetch_add(&dc->misses, 1);
            break;
        }
        if (!kv_seq_append(kv, seq, bs))
            break;
        const uint32_t blk = s->blocks[b];
        const uint8_t *p = dc->buf + HEADER_BYTES + (size_t)bs * 4;
        for (uint32_t il = 0; il < kv->n_layer; il++, p += bs * kv->row_k_bytes)
            rows_in(kv, kv_k_row(kv, il, blk * bs), p, bs * kv->row_k_bytes);
        for (uint32_t il = 0; il < kv->n_layer; il++, p += bs * kv->row_v_bytes)
            rows_in(kv, kv_v_row(kv, il, blk * bs), p, bs * kv->row_v_bytes);
        for (uint32_t i = 0; i < bs; i++)
            kv_seq_set_token(kv, seq, b * bs + i, t[i]);
        kv_seq_publish(kv, seq);
        atomic_fetch_add(&dc->hits, 1);
        parent = hash;
    }
    return s->n_pos;
}

void dcache_stats(struct dcache *dc, struct dcache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!dc)
        return;
    out->ready = atomic_load(&dc->ready);
    out->hits = atomic_load(&dc->hits);
    out->misses = atomic_load(&dc->misses);
    out->bytes_read = atomic_load(&dc->bytes_read);
    out->writes = atomic_load(&dc->writes);
    out->bytes_written = atomic_load(&dc->bytes_written);
    out->evictions = atomic_load(&dc->evictions);
    out->invalid = atomic_load(&dc->invalid);
    out->dropped = atomic_load(&dc->dropped);
    out->files = atomic_load(&dc->files);
    out->bytes = atomic_load(&dc->bytes);
    out->max_bytes = dc->max_bytes;
}
