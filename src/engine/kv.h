/*
 * kv.h - the block KV cache: one pool of fixed-size blocks shared by many sequences.
 *
 * The pool holds n_blocks blocks of block_size positions. Storage is one K and one V
 * array of [n_layer][n_blocks][block_size][row] bytes, so a block id names the same
 * positions in every layer. A sequence is a block table: position p of sequence s lives
 * in cell blocks[p / block_size] * block_size + p % block_size. Blocks are reference
 * counted: a fork copies the table and shares every block (a common prefix costs its
 * memory once); appending into a shared partial block first copies it (copy on write);
 * truncate and drop return blocks whose count falls to 0 to the free list.
 *
 * Nothing here knows about models: rows are opaque bytes, so tests/unit/test_engine.c
 * drives it with random operation sequences against a plain reference model.
 */
#ifndef PV_ENGINE_KV_H
#define PV_ENGINE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/backend.h"
#include "pensieve.h"

struct kv_seq {
    bool used;
    uint32_t n_pos;      /* positions filled */
    uint32_t n_blocks;   /* entries of blocks in use: ceil(n_pos / block_size) */
    uint32_t cap;        /* entries allocated */
    uint32_t *blocks;    /* [cap] block ids, owned */
};

struct kv_cache {
    uint32_t block_size;          /* positions per block, a power of two */
    uint32_t block_shift;         /* log2(block_size) */
    uint32_t n_blocks;
    uint32_t n_layer;
    uint32_t max_pos;             /* positions one sequence may hold */
    size_t row_k_bytes, row_v_bytes; /* one position of one layer */
    char *k, *v;                  /* [n_layer][n_blocks][block_size][row], owned; in be's
                                     memory when be is set (never read here then) */
    struct compute_backend *be;   /* borrowed, or NULL: k and v are host memory */
    uint32_t *refs;               /* [n_blocks] tables referencing each block */
    uint32_t *free_ids;           /* [n_blocks] stack of free block ids */
    uint32_t n_free;
    struct kv_seq *seqs;          /* [n_seq], owned */
    uint32_t n_seq;
};

/* Allocate a pool of n_blocks blocks for n_seq sequences of at most max_pos positions
 * each. PV_ERR_NOMEM when the memory cannot be had; kv is then released. */
enum pv_status kv_init(struct kv_cache *kv, uint32_t n_layer, size_t row_k_bytes,
                       size_t row_v_bytes, uint32_t n_blocks, uint32_t block_size,
                       uint32_t n_seq, uint32_t max_pos, struct pv_err *err);
/* kv_init with K and V in the memory of backend be (alloc / free / copy through it);
 * be must outlive the cache. */
enum pv_status kv_init_on(struct kv_cache *kv, struct compute_backend *be, uint32_t n_layer,
                          size_t row_k_bytes, size_t row_v_bytes, uint32_t n_blocks,
                          uint32_t block_size, uint32_t n_seq, uint32_t max_pos,
                          struct pv_err *err);
void kv_release(struct kv_cache *kv);

/* Blocks that appending n positions to seq would take from the free list. */
uint32_t kv_seq_blocks_needed(const struct kv_cache *kv, uint32_t seq, uint32_t n);
/* Blocks that appending n[s] positions to every sequence s (in order of s) would take. */
uint64_t kv_batch_blocks_needed(const struct kv_cache *kv, const uint32_t *n);
/* Make room for positions [n_pos, n_pos + n) of seq and count them as filled (the
 * caller writes their rows). false, with nothing changed, when the pool lacks blocks. */
bool kv_seq_append(struct kv_cache *kv, uint32_t seq, uint32_t n);
/* Keep the first n_keep positions of seq (n_keep <= its length). */
void kv_seq_truncate(struct kv_cache *kv, uint32_t seq, uint32_t n_keep);
/* Forget seq entirely. */
void kv_seq_drop(struct kv_cache *kv, uint32_t seq);
/* dst (dropped first) becomes a copy of src that shares all of its blocks. */
void kv_seq_fork(struct kv_cache *kv, uint32_t src, uint32_t dst);

/* The cell of position pos of seq (pos < its length). */
static inline uint32_t kv_cell(const struct kv_cache *kv, uint32_t seq, uint32_t pos)
{
    const struct kv_seq *s = &kv->seqs[seq];
    return (s->blocks[pos >> kv->block_shift] << kv->block_shift) | (pos & (kv->block_size - 1));
}

/* K and V rows of one cell in layer il. */
static inline char *kv_k_row(const struct kv_cache *kv, uint32_t il, uint32_t cell)
{
    return kv->k + ((size_t)il * kv->n_blocks * kv->block_size + cell) * kv->row_k_bytes;
}
static inline char *kv_v_row(const struct kv_cache *kv, uint32_t il, uint32_t cell)
{
    return kv->v + ((size_t)il * kv->n_blocks * kv->block_size + cell) * kv->row_v_bytes;
}

/* Blocks in use (referenced by some sequence). */
static inline uint32_t kv_blocks_used(const struct kv_cache *kv)
{
    return kv->n_blocks - kv->n_free;
}

#endif /* PV_ENGINE_KV_H */
