/*
 * diskcache.h - the persistent prefix cache: full KV blocks of prompt prefixes on disk,
 * shared by every process that serves the same model file, kept across restarts.
 *
 * A block is named by what it holds: the model file's identity (the SHA-256 of its
 * contents: two files that differ in one byte, another quantization included, never share
 * a name), the KV element type, the block size and the block's hash in kv.h's hash chain
 * (which names the whole token prefix up to the block's end). One file per block:
 *
 *   <dir>/<model id, 16 hex>-<f16|f32>-<block size>-<block hash, 16 hex>.kv
 *
 *   offset  bytes
 *   0       8    magic "PVKVBLK\0"
 *   8       4    format version (DCACHE_VERSION)
 *   12      4    0x01020304 (byte order of the writer)
 *   16      32   model identity (SHA-256 of the model file)
 *   48      4    kv type (enum pv_kv_type), 4 block size, 4 n_layer, 4 zero
 *   64      8    row_k_bytes, 8 row_v_bytes (one position of one layer)
 *   80      8    block hash, 8 parent hash (KV_HASH_ROOT for the first block)
 *   96      8    payload bytes
 *   104     4*B  the block's tokens (B = block size): a lookup checks them
 *   ...          K rows [n_layer][B][row_k_bytes], then V rows [n_layer][B][row_v_bytes]
 *   end-8   8    checksum of every byte before it
 *
 * Safety: a file is written whole to a temporary name, fsync'd and renamed into place,
 * so a reader sees a complete file or none, and a crash (kill -9) mid-write leaves only
 * a temporary file (never read; removed at the next start once its writer is gone). A
 * file whose size, header, tokens or checksum do not match is logged, removed and
 * counted as a miss: the request recomputes those positions. Several processes share a
 * directory: writes, the size accounting and eviction run under an flock on <dir>/lock;
 * the total never passes the size limit (least recently used files go first; a hit
 * refreshes a file's mtime).
 *
 * Threads: dcache_put and dcache_extend are called by the engine thread only; the writer
 * thread owns the files it writes. dcache_stats may be called from any thread.
 */
#ifndef PV_ENGINE_DISKCACHE_H
#define PV_ENGINE_DISKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/kv.h"
#include "pensieve.h"

#define DCACHE_VERSION 1u

struct dcache; /* opaque */
struct pv_context;

/*
 * Open the cache in dir (created if missing) for the model and KV layout of ctx, holding
 * at most max_bytes. The writer thread starts at once: it identifies the model file
 * (hashing it once; the result is kept beside the cache, keyed by the file's device,
 * inode, size, mtime and ctime) and cleans the directory; until it is done lookups miss
 * and puts are dropped. *out owned (dcache_close).
 */
enum pv_status dcache_open(const char *dir, uint64_t max_bytes, const struct pv_context *ctx,
                           struct dcache **out, struct pv_err *err);
/* Write what is queued, stop the writer, free. NULL is a no-op. */
void dcache_close(struct dcache *dc);

/* Queue published block `block` of kv for writing (its rows are copied now; the write
 * happens on the writer thread). Dropped when the queue is full or the cache not ready. */
void dcache_put(struct dcache *dc, const struct kv_cache *kv, uint32_t block);

/*
 * Extend sequence seq of kv (its positions a prefix of tokens) with the blocks of
 * tokens[0, n) that the disk holds, loaded into free blocks of the pool and published;
 * stops at the first block missing, invalid or without a free block. A sequence whose
 * length is not a multiple of the block size is first cut back to one when the disk
 * holds the block that length falls in. Returns the sequence's length after.
 */
uint32_t dcache_extend(struct dcache *dc, struct kv_cache *kv, uint32_t seq, const int32_t *tokens,
                       size_t n);

struct dcache_stats {
    bool ready;              /* the model is identified: lookups and writes happen */
    uint64_t hits;           /* blocks loaded */
    uint64_t misses;         /* lookups that found no valid block */
    uint64_t bytes_read;
    uint64_t writes;         /* blocks written */
    uint64_t bytes_written;
    uint64_t evictions;      /* files removed to stay under the limit */
    uint64_t invalid;        /* files found torn, corrupt or foreign (removed) */
    uint64_t dropped;        /* blocks not written (queue full, write error) */
    uint64_t files, bytes;   /* in the directory at the last accounting (all processes) */
    uint64_t max_bytes;
};
void dcache_stats(struct dcache *dc, struct dcache_stats *out);

#endif /* PV_ENGINE_DISKCACHE_H */
