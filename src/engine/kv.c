/*
 * kv.c - the block KV cache (layout and rules in kv.h): the block pool with its free
 * list and reference counts, the per-sequence block tables, and the prefix cache (the
 * hash chain over full blocks and the table from hash to block).
 *
 * Every table is allocated at its full size (max_pos / block_size entries, the hash table
 * twice the pool) when the pool is made, so no operation allocates afterwards and none
 * can fail but for want of blocks, which append checks before changing anything.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"
#include "util/util.h"

enum pv_status kv_init(struct kv_cache *kv, uint32_t n_layer, size_t row_k_bytes,
                       size_t row_v_bytes, uint32_t n_blocks, uint32_t block_size,
                       uint32_t n_seq, uint32_t max_pos, struct pv_err *err)
{
    size_t cells, k_bytes, v_bytes;
    uint32_t per_seq;

    PV_ASSERT(block_size > 0 && (block_size & (block_size - 1)) == 0 && n_seq > 0);
    memset(kv, 0, sizeof(*kv));
    kv->block_size = block_size;
    while ((1u << kv->block_shift) < block_size)
        kv->block_shift++;
    kv->n_blocks = n_blocks;
    kv->n_layer = n_layer;
    kv->max_pos = max_pos;
    kv->row_k_bytes = row_k_bytes;
    kv->row_v_bytes = row_v_bytes;
    kv->n_seq = n_seq;
    per_seq = (max_pos + block_size - 1) / block_size;
    kv->table_cap = 2;
    while (kv->table_cap < 2 * (uint64_t)n_blocks && kv->table_cap < (1u << 31))
        kv->table_cap <<= 1;

    if (pv_mul_overflow((size_t)n_layer * n_blocks, block_size, &cells) ||
        pv_mul_overflow(cells, row_k_bytes, &k_bytes) ||
        pv_mul_overflow(cells, row_v_bytes, &v_bytes) || kv->table_cap < 2 * (uint64_t)n_blocks)
        return pv_err_set(err, PV_ERR_INVALID, "kv cache of %u blocks overflows", n_blocks);
    kv->k = try_malloc(PV_MAX(k_bytes, (size_t)1));
    kv->v = try_malloc(PV_MAX(v_bytes, (size_t)1));
    kv->refs = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint32_t));
    kv->free_next = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint32_t));
    kv->free_prev = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint32_t));
    kv->tokens = try_calloc(PV_MAX((size_t)n_blocks * block_size, (size_t)1), sizeof(int32_t));
    kv->hash = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint64_t));
    kv->parent = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint64_t));
    kv->flags = try_calloc(PV_MAX(n_blocks, 1u), 1);
    kv->table = try_calloc(kv->table_cap, sizeof(uint32_t));
    kv->seqs = try_calloc(n_seq, sizeof(struct kv_seq));
    if (!kv->k || !kv->v || !kv->refs || !kv->free_next || !kv->free_prev || !kv->tokens ||
        !kv->hash || !kv->parent || !kv->flags || !kv->table || !kv->seqs)
        goto nomem;
    for (uint32_t s = 0; s < n_seq; s++) {
        kv->seqs[s].cap = per_seq;
        kv->seqs[s].blocks = try_calloc(PV_MAX(per_seq, 1u), sizeof(uint32_t));
        if (!kv->seqs[s].blocks)
            goto nomem;
    }
    /* the list hands out low ids first */
    for (uint32_t b = 0; b < n_blocks; b++) {
        kv->free_prev[b] = b ? b - 1 : KV_NO_BLOCK;
        kv->free_next[b] = b + 1 < n_blocks ? b + 1 : KV_NO_BLOCK;
    }
    kv->free_head = n_blocks ? 0 : KV_NO_BLOCK;
    kv->free_tail = n_blocks ? n_blocks - 1 : KV_NO_BLOCK;
    kv->n_free = n_blocks;
    memset(kv->tokens, 0xff, (size_t)n_blocks * block_size * sizeof(int32_t));
    return PV_OK;

nomem:
    kv_release(kv);
    return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate a kv cache of %u blocks", n_blocks);
}

void kv_release(struct kv_cache *kv)
{
    if (kv->seqs)
        for (uint32_t s = 0; s < kv->n_seq; s++)
            free(kv->seqs[s].blocks);
    free(kv->seqs);
    free(kv->k);
    free(kv->v);
    free(kv->refs);
    free(kv->free_next);
    free(kv->free_prev);
    free(kv->tokens);
    free(kv->hash);
    free(kv->parent);
    free(kv->flags);
    free(kv->table);
    memset(kv, 0, sizeof(*kv));
}

static uint32_t blocks_for(const struct kv_cache *kv, uint32_t n_pos)
{
    return (uint32_t)(((uint64_t)n_pos + kv->block_size - 1) >> kv->block_shift);
}

/* ---- the hash table of published blocks ---- */

/* the finalizer of splitmix64: every input bit reaches every output bit */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* h = parent; for each token t: h = mix64(h + golden * (t + 1)); then mix64(h ^ n) */
uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, uint32_t n)
{
    uint64_t h = parent;
    for (uint32_t i = 0; i < n; i++)
        h = mix64(h + UINT64_C(0x9e3779b97f4a7c15) * ((uint64_t)(uint32_t)tokens[i] + 1));
    return mix64(h ^ n);
}

size_t kv_hash_chain(uint32_t block_size, const int32_t *tokens, size_t n, uint64_t *out)
{
    size_t n_full = n / block_size;
    uint64_t parent = KV_HASH_ROOT;
    for (size_t i = 0; i < n_full; i++)
        parent = out[i] = kv_block_hash(parent, tokens + i * block_size, block_size);
    return n_full;
}

static const int32_t *block_tokens(const struct kv_cache *kv, uint32_t b)
{
    return kv->tokens + ((size_t)b << kv->block_shift);
}

uint32_t kv_lookup(const struct kv_cache *kv, uint64_t parent, uint64_t h, const int32_t *tokens)
{
    const uint32_t mask = kv->table_cap - 1;
    uint32_t found = KV_NO_BLOCK;
    /* twins (two sequences filled the same prefix apart) are all listed: a block in use
       is preferred to a cached free one, which would take memory back from the pool */
    for (uint32_t i = (uint32_t)h & mask; kv->table[i] != 0; i = (i + 1) & mask) {
        uint32_t b = kv->table[i] - 1;
        if (kv->hash[b] == h && kv->parent[b] == parent &&
            memcmp(block_tokens(kv, b), tokens, kv->block_size * sizeof(int32_t)) == 0) {
            if (kv->refs[b] > 0)
                return b;
            if (found == KV_NO_BLOCK)
                found = b;
        }
    }
    return found;
}

static void table_insert(struct kv_cache *kv, uint32_t b)
{
    const uint32_t mask = kv->table_cap - 1;
    uint32_t i = (uint32_t)kv->hash[b] & mask;
    while (kv->table[i] != 0)
        i = (i + 1) & mask;
    kv->table[i] = b + 1;
    kv->flags[b] |= KV_BLOCK_LISTED;
    kv->n_published++;
}

/* take b out of the table: the entries after it that probed past its slot move back */
static void table_remove(struct kv_cache *kv, uint32_t b)
{
    const uint32_t mask = kv->table_cap - 1;
    uint32_t i = (uint32_t)kv->hash[b] & mask;
    while (kv->table[i] != b + 1)
        i = (i + 1) & mask;
    kv->table[i] = 0;
    for (uint32_t j = (i + 1) & mask; kv->table[j] != 0; j = (j + 1) & mask) {
        uint32_t home = (uint32_t)kv->hash[kv->table[j] - 1] & mask;
        /* the entry at j stays only when its home lies cyclically in (i, j] */
        if (((j - home) & mask) < ((j - i) & mask))
            continue;
        kv->table[i] = kv->table[j];
        kv->table[j] = 0;
        i = j;
    }
    kv->flags[b] &= (uint8_t)~KV_BLOCK_LISTED;
    kv->n_published--;
}

/* ---- the free list ---- */

static void free_unlink(struct kv_cache *kv, uint32_t b)
{
    uint32_t p = kv->free_prev[b], n = kv->free_next[b];
    if (p != KV_NO_BLOCK)
        kv->free_next[p] = n;
    else
        kv->free_head = n;
    if (n != KV_NO_BLOCK)
        kv->free_prev[n] = p;
    else
        kv->free_tail = p;
    kv->n_free--;
}

static void free_push(struct kv_cache *kv, uint32_t b, bool at_tail)
{
    if (at_tail) {
        kv->free_prev[b] = kv->free_tail;
        kv->free_next[b] = KV_NO_BLOCK;
        if (kv->free_tail != KV_NO_BLOCK)
            kv->free_next[kv->free_tail] = b;
        else
            kv->free_head = b;
        kv->free_tail = b;
    } else {
        kv->free_prev[b] = KV_NO_BLOCK;
        kv->free_next[b] = kv->free_head;
        if (kv->free_head != KV_NO_BLOCK)
            kv->free_prev[kv->free_head] = b;
        else
            kv->free_tail = b;
        kv->free_head = b;
    }
    kv->n_free++;
}

/* a free block, fresh: out of the table, no hash, no tokens */
static uint32_t block_take(struct kv_cache *kv)
{
    uint32_t b = kv->free_head;
    PV_ASSERT(b != KV_NO_BLOCK);
    free_unlink(kv, b);
    if (kv->flags[b] & KV_BLOCK_LISTED)
        table_remove(kv, b);
    kv->flags[b] = 0;
    memset(kv->tokens + ((size_t)b << kv->block_shift), 0xff, kv->block_size * sizeof(int32_t));
    kv->refs[b] = 1;
    return b;
}

/* a block no table refers to stays cached when published (handed out last) */
static void block_put(struct kv_cache *kv, uint32_t b)
{
    PV_ASSERT(kv->refs[b] > 0);
    if (--kv->refs[b] == 0)
        free_push(kv, b, (kv->flags[b] & KV_BLOCK_LISTED) != 0);
}

/* one more table refers to b (a cached free block leaves the free list) */
static void block_ref(struct kv_cache *kv, uint32_t b)
{
    if (kv->refs[b]++ == 0)
        free_unlink(kv, b);
}

/* ---- sequences ---- */

/* the last block of s is partly filled and shared or published: the next write must
   copy it */
static bool needs_copy(const struct kv_cache *kv, const struct kv_seq *s)
{
    if ((s->n_pos & (kv->block_size - 1)) == 0)
        return false;
    uint32_t b = s->blocks[s->n_blocks - 1];
    return kv->refs[b] > 1 || (kv->flags[b] & KV_BLOCK_HASHED);
}

uint32_t kv_seq_blocks_needed(const struct kv_cache *kv, uint32_t seq, uint32_t n)
{
    const struct kv_seq *s = &kv->seqs[seq];
    if (n == 0)
        return 0;
    return blocks_for(kv, s->n_pos + n) - s->n_blocks + (needs_copy(kv, s) ? 1 : 0);
}

uint64_t kv_batch_blocks_needed(const struct kv_cache *kv, const uint32_t *n)
{
    uint64_t need = 0;
    for (uint32_t i = 0; i < kv->n_seq; i++) {
        const struct kv_seq *s = &kv->seqs[i];
        if (n[i] == 0)
            continue;
        need += kv_seq_blocks_needed(kv, i, n[i]);
        if (!needs_copy(kv, s) || (kv->flags[s->blocks[s->n_blocks - 1]] & KV_BLOCK_HASHED))
            continue;
        /* when every sequence sharing this partial block appends, the last one to do so
           finds it no longer shared and writes in place: one copy fewer */
        uint32_t b = s->blocks[s->n_blocks - 1], sharers = 0;
        bool first = true;
        for (uint32_t j = 0; j < kv->n_seq; j++) {
            const struct kv_seq *o = &kv->seqs[j];
            if (n[j] == 0 || o->n_blocks == 0 || o->blocks[o->n_blocks - 1] != b ||
                (o->n_pos & (kv->block_size - 1)) == 0)
                continue;
            sharers++;
            first &= j >= i;
        }
        if (first && sharers == kv->refs[b])
            need--;
    }
    return need;
}

/* the rows [0, n_rows) of block src copied to block dst, in every layer, with their
   tokens */
static void block_copy(struct kv_cache *kv, uint32_t dst, uint32_t src, uint32_t n_rows)
{
    for (uint32_t il = 0; il < kv->n_layer; il++) {
        memcpy(kv_k_row(kv, il, dst << kv->block_shift), kv_k_row(kv, il, src << kv->block_shift),
               n_rows * kv->row_k_bytes);
        memcpy(kv_v_row(kv, il, dst << kv->block_shift), kv_v_row(kv, il, src << kv->block_shift),
               n_rows * kv->row_v_bytes);
    }
    memcpy(kv->tokens + ((size_t)dst << kv->block_shift), block_tokens(kv, src),
           n_rows * sizeof(int32_t));
}

bool kv_seq_append(struct kv_cache *kv, uint32_t seq, uint32_t n)
{
    struct kv_seq *s = &kv->seqs[seq];
    if (n == 0)
        return true;
    if ((uint64_t)s->n_pos + n > kv->max_pos || kv_seq_blocks_needed(kv, seq, n) > kv->n_free)
        return false;
    if (needs_copy(kv, s)) {
        /* old is referenced by s, so not on the free list: fresh is another block */
        uint32_t old = s->blocks[s->n_blocks - 1], fresh = block_take(kv);
        block_copy(kv, fresh, old, s->n_pos & (kv->block_size - 1));
        block_put(kv, old);
        s->blocks[s->n_blocks - 1] = fresh;
    }
    s->n_pos += n;
    while (s->n_blocks < blocks_for(kv, s->n_pos))
        s->blocks[s->n_blocks++] = block_take(kv);
    s->used = true;
    return true;
}

void kv_seq_truncate(struct kv_cache *kv, uint32_t seq, uint32_t n_keep)
{
    struct kv_seq *s = &kv->seqs[seq];
    PV_ASSERT(n_keep <= s->n_pos);
    uint32_t keep_blocks = blocks_for(kv, n_keep);
    while (s->n_blocks > keep_blocks)
        block_put(kv, s->blocks[--s->n_blocks]);
    s->n_pos = n_keep;
    s->n_hashed = PV_MIN(s->n_hashed, n_keep >> kv->block_shift);
}

void kv_seq_drop(struct kv_cache *kv, uint32_t seq)
{
    kv_seq_truncate(kv, seq, 0);
    kv->seqs[seq].used = false;
}

void kv_seq_fork(struct kv_cache *kv, uint32_t src, uint32_t dst)
{
    if (src == dst)
        return;
    kv_seq_drop(kv, dst);
    struct kv_seq *s = &kv->seqs[src], *d = &kv->seqs[dst];
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        d->blocks[i] = s->blocks[i];
        kv->refs[s->blocks[i]]++;
    }
    d->n_blocks = s->n_blocks;
    d->n_pos = s->n_pos;
    d->n_hashed = s->n_hashed;
    d->used = true;
}

/* ---- the prefix cache ---- */

uint32_t kv_match_prefix(const struct kv_cache *kv, const int32_t *tokens, size_t n,
                         uint32_t *blocks_out)
{
    size_t n_full = PV_MIN(n, (size_t)kv->max_pos) >> kv->block_shift;
    uint64_t parent = KV_HASH_ROOT;
    uint32_t m = 0;
    if (kv->n_published == 0)
        return 0;
    for (; m < n_full; m++) {
        const int32_t *t = tokens + ((size_t)m << kv->block_shift);
        uint64_t h = kv_block_hash(parent, t, kv->block_size);
        uint32_t b = kv_lookup(kv, parent, h, t);
        if (b == KV_NO_BLOCK)
            break;
        blocks_out[m] = b;
        parent = h;
    }
    return m;
}

void kv_seq_adopt(struct kv_cache *kv, uint32_t seq, const uint32_t *blocks, uint32_t n_blocks)
{
    struct kv_seq *s = &kv->seqs[seq];
    PV_ASSERT(n_blocks <= s->cap);
    /* take the new references first: dropping seq may free some of these very blocks */
    for (uint32_t i = 0; i < n_blocks; i++) {
        PV_ASSERT(kv->flags[blocks[i]] & KV_BLOCK_HASHED);
        block_ref(kv, blocks[i]);
    }
    kv_seq_drop(kv, seq);
    memcpy(s->blocks, blocks, n_blocks * sizeof(uint32_t));
    s->n_blocks = s->n_hashed = n_blocks;
    s->n_pos = n_blocks << kv->block_shift;
    s->used = true;
}

void kv_seq_publish(struct kv_cache *kv, uint32_t seq)
{
    struct kv_seq *s = &kv->seqs[seq];
    uint32_t n_full = s->n_pos >> kv->block_shift;
    for (; s->n_hashed < n_full; s->n_hashed++) {
        uint32_t b = s->blocks[s->n_hashed];
        if (kv->flags[b] & KV_BLOCK_HASHED)
            continue; /* shared with the sequence that hashed it */
        const int32_t *t = block_tokens(kv, b);
        for (uint32_t i = 0; i < kv->block_size; i++)
            if (t[i] < 0)
                return; /* a token was not recorded: the chain stops here */
        uint64_t parent = s->n_hashed ? kv->hash[s->blocks[s->n_hashed - 1]] : KV_HASH_ROOT;
        kv->parent[b] = parent;
        kv->hash[b] = kv_block_hash(parent, t, kv->block_size);
        kv->flags[b] |= KV_BLOCK_HASHED;
        table_insert(kv, b);
    }
}

uint32_t kv_blocks_cached(const struct kv_cache *kv)
{
    uint32_t n = 0;
    for (uint32_t b = kv->free_tail; b != KV_NO_BLOCK && (kv->flags[b] & KV_BLOCK_LISTED);
         b = kv->free_prev[b])
        n++;
    return n;
}
