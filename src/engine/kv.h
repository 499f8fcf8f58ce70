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
 * Prefix cache: the pool also records the token of every cell it holds (written by
 * kv_seq_set_token). A full block whose tokens are known can be published: its hash is
 * kv_block_hash(parent, tokens), parent the hash of the block before it in the sequence
 * (KV_HASH_ROOT for the first), so a block's hash names the whole token prefix up to its
 * end (the hash chain). Published blocks go in a table from hash to block, and any
 * sequence can take the longest run of them that matches its tokens (kv_match_prefix,
 * kv_seq_adopt) instead of evaluating those tokens again. A published block is never
 * written: a sequence that appends into one (a partial tail after truncate) copies it
 * first, as for a shared block. A block whose count falls to 0 stays published and
 * cached while it is on the free list: free blocks are handed out unpublished ones
 * first, then published ones least recently freed first, and a cached block leaves the
 * table when it is handed out. A lookup checks the parent hash and every token, so a
 * hash collision costs a miss, never a wrong block. The chain is a pure function of the
 * tokens and the block size (kv_hash_chain), so a cache kept outside the pool (on disk)
 * can name its blocks by the same hashes.
 *
 * Nothing here knows about models: rows are opaque bytes, so tests/unit/test_engine.c
 * drives it with random operation sequences against a plain reference model.
 */
#ifndef PV_ENGINE_KV_H
#define PV_ENGINE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pensieve.h"

/* The parent hash of a sequence's first block. */
#define KV_HASH_ROOT UINT64_C(0x70656e736965766b)
#define KV_NO_BLOCK UINT32_MAX

struct kv_seq {
    bool used;
    uint32_t n_pos;      /* positions filled */
    uint32_t n_blocks;   /* entries of blocks in use: ceil(n_pos / block_size) */
    uint32_t n_hashed;   /* leading blocks that are full and hashed (kv_seq_publish) */
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
    char *k, *v;                  /* [n_layer][n_blocks][block_size][row], owned */
    uint32_t *refs;               /* [n_blocks] tables referencing each block */
    /* free blocks: a list through free_next / free_prev (KV_NO_BLOCK ends it), unpublished
       blocks at the head, published (cached) ones appended at the tail as they free */
    uint32_t *free_next, *free_prev; /* [n_blocks] */
    uint32_t free_head, free_tail;
    uint32_t n_free;
    /* prefix cache */
    int32_t *tokens;              /* [n_blocks][block_size] the token of each cell, or -1 */
    uint64_t *hash, *parent;      /* [n_blocks] a hashed block's hash and its parent's */
    uint8_t *flags;               /* [n_blocks] KV_BLOCK_* */
    uint32_t *table;              /* [table_cap] block id + 1 of published blocks, 0 empty
                                     (open addressing, linear probing) */
    uint32_t table_cap;           /* a power of two >= 2 * n_blocks */
    uint32_t n_published;         /* blocks in the table */
    struct kv_seq *seqs;          /* [n_seq], owned */
    uint32_t n_seq;
};

/* Allocate a pool of n_blocks blocks for n_seq sequences of at most max_pos positions
 * each. PV_ERR_NOMEM when the memory cannot be had; kv is then released. */
enum pv_status kv_init(struct kv_cache *kv, uint32_t n_layer, size_t row_k_bytes,
                       size_t row_v_bytes, uint32_t n_blocks, uint32_t block_size,
                       uint32_t n_seq, uint32_t max_pos, struct pv_err *err);
void kv_release(struct kv_cache *kv);

enum { KV_BLOCK_HASHED = 1, KV_BLOCK_LISTED = 2 };

/* Blocks that appending n positions to seq would take from the free list (a published
 * tail that only seq holds is copied and then freed, still cached: one fewer in the end). */
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

/* ---- prefix cache (the hash chain) ---- */

/* The hash of a block of n tokens whose parent block has hash parent: 64 bits, stable
 * across runs and machines (a cache on disk may keep it). */
uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, uint32_t n);
/* out[i] = the hash of the block of tokens [i * block_size, (i+1) * block_size), chained
 * from KV_HASH_ROOT, for every full block of the n tokens; returns their count. */
size_t kv_hash_chain(uint32_t block_size, const int32_t *tokens, size_t n, uint64_t *out);
/* The published block with hash h, parent hash parent and these block_size tokens (one
 * in use if there is one), or KV_NO_BLOCK. */
uint32_t kv_lookup(const struct kv_cache *kv, uint64_t parent, uint64_t h, const int32_t *tokens);
/* The longest run of published blocks that holds the first full blocks of tokens[0, n):
 * their ids into blocks_out (room for n / block_size), their count returned. */
uint32_t kv_match_prefix(const struct kv_cache *kv, const int32_t *tokens, size_t n,
                         uint32_t *blocks_out);
/* seq (dropped first) becomes the n_blocks published blocks (from kv_match_prefix), n_blocks
 * full blocks of positions; a cached free block leaves the free list. */
void kv_seq_adopt(struct kv_cache *kv, uint32_t seq, const uint32_t *blocks, uint32_t n_blocks);
/* Record the token at position pos (< its length) of seq. */
static inline void kv_seq_set_token(struct kv_cache *kv, uint32_t seq, uint32_t pos, int32_t tok);
/* Hash and publish the full blocks of seq not yet hashed, up to the first whose tokens
 * are not all recorded. Every hashed block is in the table until it is handed out again,
 * twins (the same prefix filled by two sequences apart) included. */
void kv_seq_publish(struct kv_cache *kv, uint32_t seq);
/* Free blocks that hold a published (cached) prefix. */
uint32_t kv_blocks_cached(const struct kv_cache *kv);

/* The cell of position pos of seq (pos < its length). */
static inline uint32_t kv_cell(const struct kv_cache *kv, uint32_t seq, uint32_t pos)
{
    const struct kv_seq *s = &kv->seqs[seq];
    return (s->blocks[pos >> kv->block_shift] << kv->block_shift) | (pos & (kv->block_size - 1));
}

static inline void kv_seq_set_token(struct kv_cache *kv, uint32_t seq, uint32_t pos, int32_t tok)
{
    kv->tokens[kv_cell(kv, seq, pos)] = tok;
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
