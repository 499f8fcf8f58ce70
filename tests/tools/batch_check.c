/*
 * batch_check.c - mixed batches against sequences alone, for tests/engine/test_batch.py.
 *
 *   batch_check MODEL SEED N_SEQ STEPS [KV_BLOCK]
 * runs a random schedule on one context of N_SEQ sequences: every step one batch mixes
 * prompt chunks of some sequences with single decode tokens of others (interleaved in a
 * random order, random logits flags), and between steps sequences are forked (sharing
 * their blocks), truncated and dropped. Each sequence's history is then replayed alone
 * on a one-sequence context, the same chunks in the same steps, and every logits row
 * must be bit-identical (rows are compared by a 64-bit hash of their bytes). Prints one
 * JSON line; exit status 1 on a mismatch or a failed API call.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pensieve.h"

#define N_CTX 160
#define N_BATCH 48
#define MAX_SEQ 8
#define MAX_CHUNK 12

struct entry {
    int keep;                  /* >= 0: a truncation to keep positions; else a chunk */
    int n;
    int32_t tok[MAX_CHUNK];
    int8_t lg[MAX_CHUNK];
    uint64_t hash[MAX_CHUNK];  /* of the logits row of tok[i] when lg[i] */
};

struct history {
    struct entry *e;
    int n, cap;
};

static struct history hist[MAX_SEQ];
static long rows_checked, rows_identical, mixed_steps, forks, truncates, drops;
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

static void die(const char *what, const struct pv_err *err)
{
    fprintf(stderr, "batch_check: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static uint64_t hash_row(const float *row, uint32_t n)
{
    const unsigned char *p = (const unsigned char *)row;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < (size_t)n * sizeof(float); i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static struct entry *push(struct history *h)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->e = realloc(h->e, (size_t)h->cap * sizeof(struct entry));
        if (!h->e)
            die("out of memory", NULL);
    }
    memset(&h->e[h->n], 0, sizeof(struct entry));
    return &h->e[h->n++];
}

/* Replay seq's history alone on `alone` (one sequence) and compare its rows. */
static void verify(struct pv_context *alone, int seq)
{
    struct pv_err err;
    struct pv_batch b;
    uint32_t nv = pv_context_n_vocab(alone);
    if (pv_batch_init(&b, MAX_CHUNK, &err) != PV_OK)
        die("batch", &err);
    pv_context_seq_drop(alone, 0);
    for (int i = 0; i < hist[seq].n; i++) {
        struct entry *e = &hist[seq].e[i];
        if (e->keep >= 0) {
            if (pv_context_seq_truncate(alone, 0, (uint32_t)e->keep, &err) != PV_OK)
                die("alone truncate", &err);
            continue;
        }
        uint32_t len = pv_context_seq_len(alone, 0);
        pv_batch_clear(&b);
        for (int t = 0; t < e->n; t++)
            pv_batch_add(&b, e->tok[t], (int32_t)(len + (uint32_t)t), 0, e->lg[t]);
        if (pv_context_decode(alone, &b, &err) != PV_OK)
            die("alone decode", &err);
        for (int t = 0; t < e->n; t++) {
            if (!e->lg[t])
                continue;
            const float *row = pv_context_logits(alone, t);
            rows_checked++;
            if (row && hash_row(row, nv) == e->hash[t])
                rows_identical++;
            else if (rows_checked - rows_identical == 1)
                fprintf(stderr, "batch_check: sequence %d, entry %d, token %d differs\n", seq, i, t);
        }
    }
    pv_batch_release(&b);
}

int main(int argc, char **argv)
{
    struct pv_err err;
    struct pv_model *model;
    struct pv_context *mixed, *alone;
    struct pv_context_params cp = pv_context_default_params();
    struct pv_batch b;
    int n_seq, steps;

    if (argc < 5 || argc > 6)
        return fprintf(stderr, "usage: batch_check MODEL SEED N_SEQ STEPS [KV_BLOCK]\n"), 2;
    rng_state = strtoull(argv[2], NULL, 10) * 2654435761ull + 1;
    n_seq = atoi(argv[3]);
    steps = atoi(argv[4]);
    if (n_seq < 1 || n_seq > MAX_SEQ || steps < 1)
        return fprintf(stderr, "batch_check: N_SEQ is 1..%d, STEPS at least 1\n", MAX_SEQ), 2;

    if (pv_model_load(argv[1], NULL, &model, &err) != PV_OK)
        die("load", &err);
    cp.n_ctx = N_CTX;
    cp.n_batch = N_BATCH;
    cp.n_threads = 2;
    cp.kv_block = argc == 6 ? (uint32_t)atoi(argv[5]) : 8;
    cp.n_seq_max = (uint32_t)n_seq;
    /* room for every sequence at full length, in whole blocks */
    cp.kv_size = (uint32_t)n_seq * ((N_CTX + cp.kv_block - 1) / cp.kv_block * cp.kv_block);
    if (pv_context_new(model, &cp, &mixed, &err) != PV_OK)
        die("context", &err);
    cp.n_seq_max = 1;
    cp.kv_size = 0;
    if (pv_context_new(model, &cp, &alone, &err) != PV_OK)
        die("context", &err);
    if (pv_batch_init(&b, N_BATCH, &err) != PV_OK)
        die("batch", &err);
    const uint32_t nv = pv_context_n_vocab(mixed), id_max = nv < 1000 ? nv : 1000;

    for (int step = 0; step < steps; step++) {
        /* this step's chunk of each sequence: none, one decode token, or a prompt chunk */
        int want[MAX_SEQ], left[MAX_SEQ], room = N_BATCH, n_single = 0, n_multi = 0;
        struct entry *cur[MAX_SEQ];
        for (int s = 0; s < n_seq; s++) {
            uint32_t len = pv_context_seq_len(mixed, s);
            int r = (int)rnd(10), n = r < 2 ? 0 : r < 6 ? 1 : 2 + (int)rnd(MAX_CHUNK - 1);
            if (n > room)
                n = room;
            if (len + (uint32_t)n > N_CTX - 1)
                n = 0;
            want[s] = left[s] = n;
            room -= n;
            n_single += n == 1;
            n_multi += n > 1;
            cur[s] = NULL;
            if (n > 0) {
                cur[s] = push(&hist[s]);
                cur[s]->keep = -1;
                cur[s]->n = n;
                for (int t = 0; t < n; t++) {
                    cur[s]->tok[t] = 3 + (int32_t)rnd(id_max - 3);
                    cur[s]->lg[t] = rnd(3) != 0 || t == n - 1;
                }
            }
        }
        mixed_steps += n_single > 0 && n_multi > 0;
        /* interleave the sequences' tokens in a random order, each in its own order */
        pv_batch_clear(&b);
        int slot_seq[N_BATCH], slot_tok[N_BATCH], total = N_BATCH - room;
        for (int k = 0; k < total; k++) {
            int pick = (int)rnd((uint32_t)(total - k)), s = 0;
            for (; s < n_seq; s++) {
                if (pick < left[s])
                    break;
                pick -= left[s];
            }
            int t = want[s] - left[s]--;
            slot_seq[k] = s;
            slot_tok[k] = t;
            pv_batch_add(&b, cur[s]->tok[t], (int32_t)(pv_context_seq_len(mixed, s) + (uint32_t)t), s,
                         cur[s]->lg[t]);
        }
        if (total > 0) {
            if (pv_context_decode(mixed, &b, &err) != PV_OK)
                die("mixed decode", &err);
            for (int k = 0; k < total; k++)
                if (b.logits[k])
                    cur[slot_seq[k]]->hash[slot_tok[k]] = hash_row(pv_context_logits(mixed, k), nv);
        }

        /* between steps: fork, truncate, drop (checking a history before it is lost) */
        int s = (int)rnd((uint32_t)n_seq), d = (int)rnd((uint32_t)n_seq), op = (int)rnd(20);
        uint32_t len = pv_context_seq_len(mixed, s);
        if (op < 3 && s != d && len > 0) {
            verify(alone, d);
            if (pv_context_seq_fork(mixed, s, d, &err) != PV_OK)
                die("fork", &err);
            hist[d].n = 0;
            for (int i = 0; i < hist[s].n; i++)
                *push(&hist[d]) = hist[s].e[i];
            forks++;
        } else if (op < 5 && len > 0) {
            uint32_t keep = rnd(len + 1);
            if (pv_context_seq_truncate(mixed, s, keep, &err) != PV_OK)
                die("truncate", &err);
            push(&hist[s])->keep = (int)keep;
            truncates++;
        } else if (op == 5 && len > 0) {
            verify(alone, s);
            pv_context_seq_drop(mixed, s);
            hist[s].n = 0;
            drops++;
        }
    }
    for (int s = 0; s < n_seq; s++)
        verify(alone, s);

    /* error paths leave the cache as it was: a position that does not continue the
       sequence, a sequence id out of range, a pool without room */
    struct pv_kv_usage before, after;
    pv_context_kv_usage(mixed, &before);
    pv_batch_clear(&b);
    pv_batch_add(&b, 5, (int32_t)pv_context_seq_len(mixed, 0) + 1, 0, true);
    int errors_ok = pv_context_decode(mixed, &b, &err) == PV_ERR_INVALID;
    pv_batch_clear(&b);
    pv_batch_add(&b, 5, 0, n_seq, true);
    errors_ok &= pv_context_decode(mixed, &b, &err) == PV_ERR_INVALID;
    pv_context_kv_usage(mixed, &after);
    errors_ok &= before.n_blocks_used == after.n_blocks_used;
    struct pv_context *tiny;
    cp.kv_size = 16;
    cp.kv_block = 8;
    if (pv_context_new(model, &cp, &tiny, &err) != PV_OK)
        die("context", &err);
    pv_batch_clear(&b);
    for (int t = 0; t < 17; t++)
        pv_batch_add(&b, 5, t, 0, t == 16);
    errors_ok &= pv_context_decode(tiny, &b, &err) == PV_ERR_CONTEXT &&
                 strstr(err.msg, "kv cache is full") != NULL && pv_context_seq_len(tiny, 0) == 0;
    pv_context_free(tiny);

    printf("{\"rows\": %ld, \"identical\": %ld, \"mixed_steps\": %ld, \"forks\": %ld, "
           "\"truncates\": %ld, \"drops\": %ld, \"errors_ok\": %s}\n",
           rows_checked, rows_identical, mixed_steps, forks, truncates, drops,
           errors_ok ? "true" : "false");
    for (int s = 0; s < MAX_SEQ; s++)
        free(hist[s].e);
    pv_batch_release(&b);
    pv_context_free(mixed);
    pv_context_free(alone);
    pv_model_free(model);
    return rows_checked == rows_identical ? 0 : 1;
}
