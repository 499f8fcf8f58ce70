/*
 * kv.c - the block KV cache (layout and rules in kv.h): the block pool with its free
 * list and reference counts, and the per-sequence block tables.
 *
 * Every table is allocated at its full size (max_pos / block_size entries) when the pool
 * is made, so no operation allocates afterwards and none can fail but for want of
 * blocks, which append checks before changing anything.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"
#include "util/util.h"

enum pv_status kv_init(struct kv_cache *kv, uint32_t n_layer, size_t row_k_bytes,
                       size_t row_v_bytes, uint32_t n_blocks, uint32_t block_size,
                       uint32_t n_seq, uint32_t max_pos, struct pv_err *err)
{
    return kv_init_on(kv, NULL, n_layer, row_k_bytes, row_v_bytes, n_blocks, block_size, n_seq,
                      max_pos, err);
}

/* K / V storage: host memory, or the backend's */
static void *store_alloc(struct kv_cache *kv, size_t bytes)
{
    bytes = PV_MAX(bytes, (size_t)1);
    return kv->be ? kv->be->ops->alloc(kv->be, bytes) : try_malloc(bytes);
}

static void store_free(struct kv_cache *kv, void *p)
{
    if (kv->be && p)
        kv->be->ops->free(kv->be, p);
    else if (!kv->be)
        free(p);
}

enum pv_status kv_init_on(struct kv_cache *kv, struct compute_backend *be, uint32_t n_layer,
                          size_t row_k_bytes, size_t row_v_bytes, uint32_t n_blocks,
                          uint32_t block_size, uint32_t n_seq, uint32_t max_pos,
                          struct pv_err *err)
{
    size_t cells, k_bytes, v_bytes;
    uint32_t per_seq;

    PV_ASSERT(block_size > 0 && (block_size & (block_size - 1)) == 0 && n_seq > 0);
    memset(kv, 0, sizeof(*kv));
    kv->be = be;
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

    if (pv_mul_overflow((size_t)n_layer * n_blocks, block_size, &cells) ||
        pv_mul_overflow(cells, row_k_bytes, &k_bytes) ||
        pv_mul_overflow(cells, row_v_bytes, &v_bytes))
        return pv_err_set(err, PV_ERR_INVALID, "kv cache of %u blocks overflows", n_blocks);
    kv->k = store_alloc(kv, k_bytes);
    kv->v = store_alloc(kv, v_bytes);
    kv->refs = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint32_t));
    kv->free_ids = try_calloc(PV_MAX(n_blocks, 1u), sizeof(uint32_t));
    kv->seqs = try_calloc(n_seq, sizeof(struct kv_seq));
    if (!kv->k || !kv->v || !kv->refs || !kv->free_ids || !kv->seqs)
        goto nomem;
    for (uint32_t s = 0; s < n_seq; s++) {
        kv->seqs[s].cap = per_seq;
        kv->seqs[s].blocks = try_calloc(PV_MAX(per_seq, 1u), sizeof(uint32_t));
        if (!kv->seqs[s].blocks)
            goto nomem;
    }
    /* the stack pops low ids first */
    for (uint32_t b = 0; b < n_blocks; b++)
        kv->free_ids[b] = n_blocks - 1 - b;
    kv->n_free = n_blocks;
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
    store_free(kv, kv->k);
    store_free(kv, kv->v);
    free(kv->refs);
    free(kv->free_ids);
    memset(kv, 0, sizeof(*kv));
}

static uint32_t blocks_for(const struct kv_cache *kv, uint32_t n_pos)
{
    return (uint32_t)(((uint64_t)n_pos + kv->block_size - 1) >> kv->block_shift);
}

/* the last block of s is partly filled and shared: the next write must copy it */
static bool needs_copy(const struct kv_cache *kv, const struct kv_seq *s)
{
    return (s->n_pos & (kv->block_size - 1)) != 0 && kv->refs[s->blocks[s->n_blocks - 1]] > 1;
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
        if (!needs_copy(kv, s))
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

static uint32_t block_take(struct kv_cache *kv)
{
    uint32_t b = kv->free_ids[--kv->n_free];
    kv->refs[b] = 1;
    return b;
}

static void block_put(struct kv_cache *kv, uint32_t b)
{
    PV_ASSERT(kv->refs[b] > 0);
    if (--kv->refs[b] == 0)
        kv->free_ids[kv->n_free++] = b;
}

/* the rows [0, n_rows) of block src copied to block dst, in every layer */
static void block_copy(struct kv_cache *kv, uint32_t dst, uint32_t src, uint32_t n_rows)
{
    for (uint32_t il = 0; il < kv->n_layer; il++) {
        char *kd = kv_k_row(kv, il, dst << kv->block_shift);
        char *vd = kv_v_row(kv, il, dst << kv->block_shift);
        const char *ks = kv_k_row(kv, il, src << kv->block_shift);
        const char *vs = kv_v_row(kv, il, src << kv->block_shift);
        if (kv->be) {
            kv->be->ops->copy(kv->be, kd, ks, n_rows * kv->row_k_bytes);
            kv->be->ops->copy(kv->be, vd, vs, n_rows * kv->row_v_bytes);
        } else {
            memcpy(kd, ks, n_rows * kv->row_k_bytes);
            memcpy(vd, vs, n_rows * kv->row_v_bytes);
        }
    }
}

bool kv_seq_append(struct kv_cache *kv, uint32_t seq, uint32_t n)
{
    struct kv_seq *s = &kv->seqs[seq];
    if (n == 0)
        return true;
    if ((uint64_t)s->n_pos + n > kv->max_pos || kv_seq_blocks_needed(kv, seq, n) > kv->n_free)
        return false;
    if (needs_copy(kv, s)) {
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
    d->used = true;
}
