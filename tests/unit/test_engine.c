/*
 * test_engine.c - unit tests of the engine module: the sampler chain (greedy, seeds,
 * top-k, top-p, min-p, temperature, penalties) on small and vocabulary-sized logits,
 * parameter validation, the attention kernels (the SIMD ones in both lane orders
 * against the portable one), and the block KV cache under random operations against a
 * reference model. The forward pass is tested against llama.cpp in
 * tests/engine/ (it needs model files).
 */
#include <math.h>
#include <stdlib.h>

#include "compute/cpu/cpu.h"
#include "engine/engine.h"
#include "harness.h"

static struct pv_sampler *make(struct pv_sampler_params p, uint32_t n_vocab)
{
    struct pv_sampler *s = NULL;
    struct pv_err err;
    CHECK_EQ_INT(pv_sampler_new(&p, n_vocab, &s, &err), PV_OK);
    return s;
}

static struct pv_sampler_params plain(float temp, uint64_t seed)
{
    struct pv_sampler_params p = pv_sampler_default_params();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

/* logits whose softmax is exactly probs[] */
static void logits_from_probs(const double *probs, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)log(probs[i]);
}

static void test_greedy_is_first_argmax(void)
{
    float l[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 0.0f};
    struct pv_sampler *s = make(plain(0.0f, 1), 6);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pv_sampler_sample(s, l), 1);
    pv_sampler_free(s);
    /* greedy also when temperature is negative */
    s = make(plain(-1.0f, 1), 6);
    l[4] = 7.0f;
    CHECK_EQ_INT(pv_sampler_sample(s, l), 4);
    pv_sampler_free(s);
}

static void test_seed_reproducible(void)
{
    enum { N = 50, DRAWS = 200 };
    float l[N];
    int a[DRAWS], b[DRAWS], c[DRAWS], differ = 0;
    for (int i = 0; i < N; i++)
        l[i] = (float)((i * 37) % 11) * 0.3f;
    struct pv_sampler *s1 = make(plain(1.0f, 42), N), *s2 = make(plain(1.0f, 42), N),
                      *s3 = make(plain(1.0f, 43), N);
    for (int i = 0; i < DRAWS; i++) {
        a[i] = pv_sampler_sample(s1, l);
        b[i] = pv_sampler_sample(s2, l);
        c[i] = pv_sampler_sample(s3, l);
        CHECK_EQ_INT(a[i], b[i]);
        differ += a[i] != c[i];
    }
    CHECK(differ > DRAWS / 4); /* another seed gives another sequence */
    pv_sampler_reset(s1);      /* reset replays the same draws */
    for (int i = 0; i < DRAWS; i++)
        CHECK_EQ_INT(pv_sampler_sample(s1, l), a[i]);
    CHECK(sampler_seed(s1) == 42);
    pv_sampler_free(s1);
    pv_sampler_free(s2);
    pv_sampler_free(s3);
}

static void test_temperature_distribution(void)
{
    /* p = {0.5, 0.3, 0.2}; at T=1 the draw frequencies follow p; at T=0.5, p^2 renormalized */
    const double probs[3] = {0.5, 0.3, 0.2};
    float l[3];
    int count[3] = {0};
    const int draws = 20000;
    logits_from_probs(probs, 3, l);
    struct pv_sampler *s = make(plain(1.0f, 7), 3);
    for (int i = 0; i < draws; i++)
        count[pv_sampler_sample(s, l)]++;
    for (int i = 0; i < 3; i++)
        CHECK_NEAR((double)count[i] / draws, probs[i], 0.02);
    pv_sampler_free(s);

    s = make(plain(0.5f, 7), 3);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < draws; i++)
        count[pv_sampler_sample(s, l)]++;
    CHECK_NEAR((double)count[0] / draws, 0.25 / 0.38, 0.02);
    CHECK_NEAR((double)count[2] / draws, 0.04 / 0.38, 0.02);
    pv_sampler_free(s);
}

static void test_top_k_top_p_min_p(void)
{
    const double probs[6] = {0.05, 0.4, 0.25, 0.15, 0.1, 0.05};
    float l[6];
    logits_from_probs(probs, 6, l);
    struct pv_sampler_params p;
    int seen[6];

    /* top-k 2: only ids 1 and 2 */
    p = plain(1.0f, 3);
    p.top_k = 2;
    struct pv_sampler *s = make(p, 6);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 2000; i++)
        seen[pv_sampler_sample(s, l)]++;
    CHECK(seen[1] > 0 && seen[2] > 0);
    CHECK_EQ_INT(seen[0] + seen[3] + seen[4] + seen[5], 0);
    pv_sampler_free(s);

    /* top-k 1 is greedy whatever the temperature */
    p = plain(5.0f, 3);
    p.top_k = 1;
    s = make(p, 6);
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(pv_sampler_sample(s, l), 1);
    pv_sampler_free(s);

    /* top-p 0.7: 0.4 + 0.25 = 0.65 < 0.7, so the nucleus is {1, 2, 3} */
    p = plain(1.0f, 5);
    p.top_p = 0.7f;
    s = make(p, 6);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 3000; i++)
        seen[pv_sampler_sample(s, l)]++;
    CHECK(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    CHECK_EQ_INT(seen[0] + seen[4] + seen[5], 0);
    pv_sampler_free(s);

    /* min-p 0.3: keep p >= 0.12, i.e. {1, 2, 3} */
    p = plain(1.0f, 5);
    p.min_p = 0.3f;
    s = make(p, 6);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 3000; i++)
        seen[pv_sampler_sample(s, l)]++;
    CHECK(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    CHECK_EQ_INT(seen[0] + seen[4] + seen[5], 0);
    pv_sampler_free(s);

    /* truncation happens before temperature: a high temperature cannot revive id 4 */
    p = plain(100.0f, 5);
    p.top_p = 0.7f;
    s = make(p, 6);
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 3000; i++)
        seen[pv_sampler_sample(s, l)]++;
    CHECK_EQ_INT(seen[0] + seen[4] + seen[5], 0);
    CHECK_NEAR(seen[3] / 3000.0, 1.0 / 3.0, 0.04); /* flat over the 3 survivors */
    pv_sampler_free(s);
}

/* On a vocabulary-sized vector, every draw lies in the brute-force top-k / nucleus. */
static void test_large_vocab_truncation(void)
{
    enum { N = 262144 };
    float *l = malloc(N * sizeof(float));
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((x >> 40) % 20000) / 1000.0f - 10.0f; /* many ties */
    }
    l[777] = 20.0f;
    l[778] = 19.5f;
    l[90000] = 19.0f;

    struct pv_sampler_params p = plain(1.0f, 9);
    p.top_k = 40;
    struct pv_sampler *s = make(p, N);
    /* the 40th largest logit, by counting */
    for (int d = 0; d < 50; d++) {
        int id = pv_sampler_sample(s, l);
        int above = 0;
        for (int i = 0; i < N; i++)
            above += l[i] > l[id] || (l[i] == l[id] && i < id);
        CHECK(above < 40);
    }
    pv_sampler_free(s);

    /* top-p alone: the nucleus of 0.9 is {777, 778, 90000} plus enough of the rest */
    p = plain(1.0f, 9);
    p.top_p = 0.5f;
    s = make(p, N);
    for (int d = 0; d < 50; d++) {
        int id = pv_sampler_sample(s, l);
        CHECK(id == 777 || id == 778 || id == 90000);
    }
    pv_sampler_free(s);

    /* greedy over the large vector */
    s = make(plain(0.0f, 1), N);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 777);
    pv_sampler_free(s);
    free(l);
}

/* top-k with penalties on a vocabulary-sized vector: draws stay in the penalized top k */
static void test_top_k_with_penalties(void)
{
    enum { N = 262144, K = 5 };
    float *l = malloc(N * sizeof(float)), *pen = malloc(N * sizeof(float));
    uint64_t x = 99;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((x >> 40) % 100000) / 10000.0f;
    }
    l[10] = 30.0f, l[11] = 29.0f, l[12] = 28.0f, l[13] = -5.0f;
    struct pv_sampler_params p = plain(1.0f, 5);
    p.top_k = K;
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 1.0f;
    struct pv_sampler *s = make(p, N);
    int32_t hist[] = {10, 10, 11, 13, 99999};
    for (size_t i = 0; i < PV_ARRAY_LEN(hist); i++)
        pv_sampler_accept(s, hist[i]);
    /* brute force: penalize, then the K-th best value */
    memcpy(pen, l, N * sizeof(float));
    pen[10] = 30.0f / 2 - 2, pen[11] = 29.0f / 2 - 1, pen[13] = -5.0f * 2 - 1;
    pen[99999] = (l[99999] <= 0 ? l[99999] * 2 : l[99999] / 2) - 1;
    for (int d = 0; d < 200; d++) {
        int id = pv_sampler_sample(s, l);
        int above = 0;
        for (int i = 0; i < N; i++)
            above += pen[i] > pen[id] || (pen[i] == pen[id] && i < id);
        CHECK(above < K);
    }
    /* with top-k 1 the winner is the best penalized token: 12 (28.0) */
    pv_sampler_free(s);
    p.top_k = 1;
    s = make(p, N);
    for (size_t i = 0; i < PV_ARRAY_LEN(hist); i++)
        pv_sampler_accept(s, hist[i]);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 12);
    pv_sampler_free(s);
    free(l);
    free(pen);
}

static void test_penalties(void)
{
    float l[4] = {2.0f, 1.9f, -1.0f, 0.5f};
    struct pv_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.1f; /* 2.0 / 1.1 = 1.818 < 1.9 */
    struct pv_sampler *s = make(p, 4);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 0);
    pv_sampler_accept(s, 0);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 1);
    pv_sampler_free(s);

    /* presence: once per seen token; frequency: per occurrence */
    p = plain(0.0f, 1);
    p.presence_penalty = 0.15f;
    s = make(p, 4);
    pv_sampler_accept(s, 0);
    pv_sampler_accept(s, 0);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 1); /* 2.0 - 0.15 = 1.85 < 1.9 */
    pv_sampler_free(s);

    p = plain(0.0f, 1);
    p.frequency_penalty = 0.04f;
    s = make(p, 4);
    pv_sampler_accept(s, 0);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 0); /* 1.96 */
    pv_sampler_accept(s, 0);
    pv_sampler_accept(s, 0);
    CHECK_EQ_INT(pv_sampler_sample(s, l), 1); /* 1.88 */
    pv_sampler_free(s);

    /* a negative logit is multiplied, and the window forgets old tokens */
    float m[3] = {-1.0f, -1.05f, -3.0f};
    p = plain(0.0f, 1);
    p.repeat_penalty = 1.2f;
    p.penalty_last_n = 2;
    s = make(p, 3);
    pv_sampler_accept(s, 0); /* -1.2 < -1.05 */
    CHECK_EQ_INT(pv_sampler_sample(s, m), 1);
    pv_sampler_accept(s, 2);
    pv_sampler_accept(s, 2); /* token 0 has left the window of 2 */
    CHECK_EQ_INT(pv_sampler_sample(s, m), 0);
    pv_sampler_free(s);
}

static void test_invalid_params(void)
{
    struct pv_sampler *s = (struct pv_sampler *)1;
    struct pv_err err;
    struct pv_sampler_params p = pv_sampler_default_params();
    CHECK_EQ_INT(pv_sampler_new(&p, 0, &s, &err), PV_ERR_INVALID);
    CHECK(s == NULL);
    p.repeat_penalty = 0.0f;
    CHECK_EQ_INT(pv_sampler_new(&p, 10, &s, &err), PV_ERR_INVALID);
    p = pv_sampler_default_params();
    p.top_p = NAN;
    CHECK_EQ_INT(pv_sampler_new(&p, 10, &s, &err), PV_ERR_INVALID);
    p = pv_sampler_default_params();
    p.penalty_last_n = -1;
    CHECK_EQ_INT(pv_sampler_new(&p, 10, &s, &err), PV_ERR_INVALID);
    CHECK(strstr(err.msg, "penalty_last_n") != NULL);
    pv_sampler_free(NULL);
}

/* the kernel cpu_attend_for picks in kernel mode m, or NULL when this CPU cannot run m */
static cpu_attend_fn kernel_in(enum cpu_mode m, uint32_t hd)
{
    if (!cpu_kernels_use(m))
        return NULL;
    cpu_attend_fn f = cpu_attend_for(true, hd);
    cpu_kernels_use(CPU_MODE_SCALAR);
    return f;
}

/* Both SIMD lane orders agree with the portable kernel (which keeps q and the
 * probabilities in f32) to f16 precision, over windows that start past 0, fewer and more
 * cells than the lane slots, batch and one-token orders and head sizes not a multiple
 * of 16; under ASan this also checks that no slot is read out of bounds. */
static void test_attention_kernels(void)
{
    enum { N_CTX = 300 };
    const uint32_t hds[] = {256, 64, 72};
    const uint32_t windows[][2] = {{0, 0}, {0, 5}, {0, 70}, {3, 20}, {40, 200}, {0, 299}};
    int checked = 0;
    srand(7);
    for (size_t h = 0; h < PV_ARRAY_LEN(hds); h++) {
        const uint32_t hd = hds[h];
        uint16_t *k = xmalloc((size_t)N_CTX * hd * sizeof(uint16_t));
        uint16_t *v = xmalloc((size_t)N_CTX * hd * sizeof(uint16_t));
        float *q = xmalloc(hd * sizeof(float));
        float *scratch = xmalloc(((size_t)N_CTX + hd + 64 * (size_t)hd) * sizeof(float));
        float *want = xmalloc(hd * sizeof(float)), *got = xmalloc(hd * sizeof(float));
        uint32_t *blocks = xmalloc(N_CTX * sizeof(uint32_t)); /* blocks of one cell, in order */
        for (uint32_t i = 0; i < N_CTX; i++)
            blocks[i] = i;
        for (size_t i = 0; i < (size_t)N_CTX * hd; i++) {
            k[i] = pv_f32_to_fp16((float)rand() / RAND_MAX * 2.0f - 1.0f);
            v[i] = pv_f32_to_fp16((float)rand() / RAND_MAX * 2.0f - 1.0f);
        }
        for (uint32_t i = 0; i < hd; i++)
            q[i] = ((float)rand() / RAND_MAX * 2.0f - 1.0f) * 4.0f;
        cpu_attend_fn portable = kernel_in(CPU_MODE_SCALAR, hd);
        /* both lane orders run on any AVX2 CPU; without AVX2 the portable one twice */
        cpu_attend_fn kernels[2] = {kernel_in(CPU_MODE_AVX2_16, hd), kernel_in(CPU_MODE_AVX2_8, hd)};
        if (!kernels[0]) {
            if (h == 0)
                printf("  NOTE no AVX2 on this CPU: the SIMD attention orders not run\n");
            kernels[0] = kernels[1] = portable;
        } else if (hd % 8 == 0) { /* three different kernels */
            CHECK(kernels[0] != portable && kernels[1] != portable && kernels[0] != kernels[1]);
        }
        for (size_t w = 0; w < PV_ARRAY_LEN(windows); w++)
            for (int batch = 0; batch < 2; batch++)
                for (int scale_q = 0; scale_q < 2; scale_q++) {
                    struct cpu_attn_item it = {
                        .q = q, .k = k, .v = v,
                        .k_stride = hd * sizeof(uint16_t), .v_stride = hd * sizeof(uint16_t),
                        .blocks = blocks, .block_shift = 0,
                        .j0 = windows[w][0], .pos = windows[w][1],
                        .hd_k = (int)hd, .hd_v = (int)hd,
                        .q_scale = scale_q ? 0.0625f : 1.0f,
                        .scale = scale_q ? 1.0f : 0.0625f,
                        .batch = batch,
                        .scores = scratch, .qbuf = scratch + N_CTX, .lanes = scratch + N_CTX + hd,
                    };
                    it.out = want;
                    portable(&it);
                    for (int kk = 0; kk < 2; kk++) {
                        it.out = got;
                        kernels[kk](&it);
                        for (uint32_t d = 0; d < hd; d++)
                            CHECK_NEAR(got[d], want[d], 5e-3);
                        checked++;
                    }
                }
        free(blocks);
        free(k);
        free(v);
        free(q);
        free(scratch);
        free(want);
        free(got);
    }
    CHECK(checked == 3 * 6 * 2 * 2 * 2);
    cpu_kernels_select(false);
}

/* A simple reference model of the KV cache: each sequence is an array of the stamps
 * written at its positions. The cache must read back the same stamps through its block
 * tables after any sequence of appends, forks, truncations and drops; and its counts
 * must add up (every block's references = the tables naming it, free + used = all). */
enum { KV_SEQ = 5, KV_MAX_POS = 40, KV_LAYERS = 2 };
struct kv_ref {
    uint32_t n;
    uint32_t stamp[KV_MAX_POS];
};

static uint32_t kv_read(const struct kv_cache *kv, uint32_t il, uint32_t seq, uint32_t pos,
                        bool k)
{
    uint32_t cell = kv_cell(kv, seq, pos), x;
    memcpy(&x, k ? kv_k_row(kv, il, cell) : kv_v_row(kv, il, cell), sizeof(x));
    return x;
}

static bool kv_consistent(const struct kv_cache *kv, const struct kv_ref *ref)
{
    uint32_t refs[96] = {0}, used = 0;
    bool ok = true;
    for (uint32_t s = 0; s < KV_SEQ; s++) {
        const struct kv_seq *q = &kv->seqs[s];
        ok &= q->n_pos == ref[s].n;
        ok &= q->n_blocks == (q->n_pos + kv->block_size - 1) / kv->block_size;
        for (uint32_t b = 0; b < q->n_blocks; b++)
            refs[q->blocks[b]]++;
        for (uint32_t p = 0; p < q->n_pos && ok; p++)
            for (uint32_t il = 0; il < KV_LAYERS; il++) {
                ok &= kv_read(kv, il, s, p, true) == ref[s].stamp[p] + il;
                ok &= kv_read(kv, il, s, p, false) == ~(ref[s].stamp[p] + il);
            }
    }
    for (uint32_t b = 0; b < kv->n_blocks; b++) {
        ok &= refs[b] == kv->refs[b];
        used += refs[b] > 0;
    }
    ok &= used + kv->n_free == kv->n_blocks;
    return ok;
}

/* write stamps into the rows of the n positions just appended to s */
static void kv_fill(struct kv_cache *kv, struct kv_ref *ref, uint32_t s, uint32_t n,
                   uint32_t *next_stamp)
{
    for (uint32_t p = ref[s].n; p < ref[s].n + n; p++) {
        uint32_t cell = kv_cell(kv, s, p);
        ref[s].stamp[p] = (*next_stamp)++;
        for (uint32_t il = 0; il < KV_LAYERS; il++) {
            uint32_t x = ref[s].stamp[p] + il, y = ~x;
            memcpy(kv_k_row(kv, il, cell), &x, 4);
            memcpy(kv_k_row(kv, il, cell) + 4, &y, 4);
            memcpy(kv_v_row(kv, il, cell), &y, 4);
        }
    }
    ref[s].n += n;
}

static void test_kv_random_operations(void)
{
    const uint32_t block_sizes[] = {1, 4, 8};
    uint32_t next_stamp = 1;
    int ops = 0, refused = 0, cows = 0, batches = 0;
    srand(11);
    for (size_t bs = 0; bs < PV_ARRAY_LEN(block_sizes); bs++) {
        struct kv_cache kv;
        struct kv_ref ref[KV_SEQ] = {0};
        struct pv_err err;
        const uint32_t B = block_sizes[bs];
        /* 96 positions, less than KV_SEQ full sequences: appends run out and must refuse */
        CHECK_EQ_INT(kv_init(&kv, KV_LAYERS, 8, 4, 96 / B, B, KV_SEQ, KV_MAX_POS, &err), PV_OK);
        for (int step = 0; step < 4000; step++) {
            uint32_t s = (uint32_t)rand() % KV_SEQ, d = (uint32_t)rand() % KV_SEQ;
            int op = rand() % 10;
            if (op < 4) { /* append 1..9 positions and write their rows */
                uint32_t n = 1 + (uint32_t)rand() % 9, free_before = kv.n_free;
                uint32_t need = kv_seq_blocks_needed(&kv, s, n);
                bool shared = ref[s].n % B && kv.refs[kv.seqs[s].blocks[kv.seqs[s].n_blocks - 1]] > 1;
                if (!kv_seq_append(&kv, s, n)) {
                    CHECK(ref[s].n + n > KV_MAX_POS || need > free_before);
                    CHECK_EQ_INT(kv.n_free, free_before);
                    refused++;
                } else {
                    CHECK(ref[s].n + n <= KV_MAX_POS && need <= free_before);
                    CHECK_EQ_INT(free_before - kv.n_free, need);
                    cows += shared;
                    kv_fill(&kv, ref, s, n, &next_stamp);
                }
            } else if (op < 5) { /* a batch: 0..4 positions to every sequence, in order */
                uint32_t n[KV_SEQ], free_before = kv.n_free;
                bool fits = true;
                for (uint32_t q = 0; q < KV_SEQ; q++) {
                    n[q] = (uint32_t)rand() % 5;
                    fits &= ref[q].n + n[q] <= KV_MAX_POS;
                }
                uint64_t need = kv_batch_blocks_needed(&kv, n);
                if (fits && need <= kv.n_free) {
                    for (uint32_t q = 0; q < KV_SEQ; q++) {
                        CHECK(kv_seq_append(&kv, q, n[q]));
                        kv_fill(&kv, ref, q, n[q], &next_stamp);
                    }
                    CHECK_EQ_INT(free_before - kv.n_free, need);
                    batches++;
                }
            } else if (op < 7) { /* truncate to a random shorter length */
                uint32_t keep = ref[s].n ? (uint32_t)rand() % (ref[s].n + 1) : 0;
                kv_seq_truncate(&kv, s, keep);
                ref[s].n = keep;
            } else if (op < 9) { /* fork s into d */
                kv_seq_fork(&kv, s, d);
                if (s != d)
                    ref[d] = ref[s];
            } else {
                kv_seq_drop(&kv, s);
                ref[s].n = 0;
            }
            ops++;
            if (!kv_consistent(&kv, ref)) {
                CHECK(!"kv cache differs from the reference model");
                fprintf(stderr, "  block size %u, step %d, op %d\n", B, step, op);
                break;
            }
        }
        for (uint32_t s = 0; s < KV_SEQ; s++)
            kv_seq_drop(&kv, s);
        CHECK_EQ_INT(kv.n_free, kv.n_blocks);
        kv_release(&kv);
    }
    CHECK_EQ_INT(ops, 3 * 4000);
    CHECK(refused > 50); /* the pool ran out, and appends refused cleanly */
    CHECK(cows > 50);    /* shared partial blocks were copied on write */
    CHECK(batches > 50); /* batch needs were exact (tested above) */
}


/* The prefix cache against a reference model. Rows hold a stamp derived from the token
 * prefix they end (as a model's K/V would), so a sequence that takes published blocks
 * must read back exactly what evaluating its tokens would have written. Sequences follow
 * three fixed documents, with random detours, so their prefixes meet often. Checked after
 * every operation: the table lists every hashed block and finds it again, every sequence
 * finds at least its own full blocks, counts add up, and a free published block is kept
 * (cached) as long as unpublished free blocks remain to hand out. */
enum { PC_DOCS = 3, PC_VOCAB = 1000 };
struct pc_ref {
    uint32_t n;
    int32_t tok[KV_MAX_POS];
};

static uint32_t pc_stamp(const int32_t *tok, uint32_t n_through)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n_through; i++)
        h = (h ^ (uint32_t)tok[i]) * 16777619u;
    return h;
}

static void pc_write(struct kv_cache *kv, uint32_t s, const struct pc_ref *r, uint32_t p0)
{
    for (uint32_t p = p0; p < r->n; p++) {
        uint32_t cell = kv_cell(kv, s, p), x0 = pc_stamp(r->tok, p + 1);
        kv_seq_set_token(kv, s, p, r->tok[p]);
        for (uint32_t il = 0; il < KV_LAYERS; il++) {
            uint32_t x = x0 + il, y = ~x;
            memcpy(kv_k_row(kv, il, cell), &x, 4);
            memcpy(kv_k_row(kv, il, cell) + 4, &y, 4);
            memcpy(kv_v_row(kv, il, cell), &y, 4);
        }
    }
}

static bool pc_consistent(const struct kv_cache *kv, const struct pc_ref *ref)
{
    uint32_t refs[96] = {0}, used = 0, listed = 0, n_list = 0, blocks[KV_MAX_POS];
    bool ok = true;
    for (uint32_t s = 0; s < KV_SEQ; s++) {
        const struct kv_seq *q = &kv->seqs[s];
        ok &= q->n_pos == ref[s].n && q->n_hashed == q->n_pos / kv->block_size;
        for (uint32_t b = 0; b < q->n_blocks; b++)
            refs[q->blocks[b]]++;
        for (uint32_t p = 0; p < q->n_pos && ok; p++) {
            uint32_t x0 = pc_stamp(ref[s].tok, p + 1);
            for (uint32_t il = 0; il < KV_LAYERS; il++) {
                ok &= kv_read(kv, il, s, p, true) == x0 + il;
                ok &= kv_read(kv, il, s, p, false) == ~(x0 + il);
            }
        }
        /* its full blocks are found again, under the hashes the chain gives */
        uint64_t chain[KV_MAX_POS];
        size_t n_full = kv_hash_chain(kv->block_size, ref[s].tok, ref[s].n, chain);
        ok &= kv_match_prefix(kv, ref[s].tok, ref[s].n, blocks) >= q->n_hashed;
        for (uint32_t i = 0; i < q->n_hashed && i < n_full; i++)
            ok &= kv->hash[q->blocks[i]] == chain[i];
    }
    for (uint32_t b = 0; b < kv->n_blocks; b++) {
        ok &= refs[b] == kv->refs[b];
        used += refs[b] > 0;
        if (kv->flags[b] & KV_BLOCK_LISTED) {
            listed++;
            ok &= (kv->flags[b] & KV_BLOCK_HASHED) != 0;
            /* a published block was never written since: its tokens still hash to it */
            ok &= kv_block_hash(kv->parent[b], kv->tokens + b * kv->block_size,
                                kv->block_size) == kv->hash[b];
            ok &= kv_lookup(kv, kv->parent[b], kv->hash[b], kv->tokens + b * kv->block_size) !=
                  KV_NO_BLOCK;
        } else {
            ok &= !(kv->flags[b] & KV_BLOCK_HASHED);
        }
    }
    for (uint32_t b = kv->free_head; b != KV_NO_BLOCK && n_list <= kv->n_blocks; b = kv->free_next[b])
        n_list++, ok &= kv->refs[b] == 0;
    ok &= used + kv->n_free == kv->n_blocks && n_list == kv->n_free;
    ok &= listed == kv->n_published;
    return ok;
}

static void test_kv_prefix_cache(void)
{
    const uint32_t block_sizes[] = {1, 4, 8};
    int32_t doc[PC_DOCS][KV_MAX_POS];
    int hits = 0, revived = 0, kept = 0, ops = 0;
    srand(14);
    for (int d = 0; d < PC_DOCS; d++)
        for (int p = 0; p < KV_MAX_POS; p++)
            doc[d][p] = rand() % PC_VOCAB;
    for (size_t bs = 0; bs < PV_ARRAY_LEN(block_sizes); bs++) {
        struct kv_cache kv;
        struct pc_ref ref[KV_SEQ] = {0};
        int follow[KV_SEQ] = {0};
        struct pv_err err;
        const uint32_t B = block_sizes[bs];
        CHECK_EQ_INT(kv_init(&kv, KV_LAYERS, 8, 4, 96 / B, B, KV_SEQ, KV_MAX_POS, &err), PV_OK);
        for (int step = 0; step < 4000; step++) {
            uint32_t s = (uint32_t)rand() % KV_SEQ, d = (uint32_t)rand() % KV_SEQ;
            int op = rand() % 20;
            if (op < 8) { /* append 1..9 tokens, mostly the document's */
                uint32_t n = 1 + (uint32_t)rand() % 9, p0 = ref[s].n;
                uint32_t need = kv_seq_blocks_needed(&kv, s, n), cached = kv_blocks_cached(&kv);
                uint32_t free_before = kv.n_free;
                if (kv_seq_append(&kv, s, n)) {
                    for (uint32_t p = p0; p < p0 + n; p++)
                        ref[s].tok[p] = rand() % 8 ? doc[follow[s]][p] : rand() % PC_VOCAB;
                    ref[s].n += n;
                    pc_write(&kv, s, &ref[s], p0);
                    kv_seq_publish(&kv, s);
                    if (need + cached <= free_before) { /* unpublished blocks sufficed */
                        CHECK(kv_blocks_cached(&kv) >= cached);
                        kept++;
                    }
                }
            } else if (op < 11) {
                uint32_t keep = ref[s].n ? (uint32_t)rand() % (ref[s].n + 1) : 0;
                kv_seq_truncate(&kv, s, keep);
                ref[s].n = keep;
            } else if (op < 13) {
                kv_seq_fork(&kv, s, d);
                if (s != d)
                    ref[d] = ref[s], follow[d] = follow[s];
            } else if (op < 15) {
                kv_seq_drop(&kv, s);
                ref[s].n = 0;
                follow[s] = rand() % PC_DOCS;
            } else { /* s takes the cached prefix of a document or of another sequence */
                struct pc_ref q = {0};
                uint32_t blocks[KV_MAX_POS];
                if (op < 18) {
                    q.n = (uint32_t)rand() % (KV_MAX_POS + 1);
                    memcpy(q.tok, doc[d % PC_DOCS], q.n * sizeof(int32_t));
                } else {
                    q = ref[d];
                }
                uint32_t m = kv_match_prefix(&kv, q.tok, q.n, blocks);
                for (uint32_t i = 0; i < m; i++)
                    revived += kv.refs[blocks[i]] == 0;
                hits += m > 0;
                kv_seq_adopt(&kv, s, blocks, m);
                ref[s] = q;
                ref[s].n = m * B;
                follow[s] = op < 18 ? (int)(d % PC_DOCS) : follow[d];
            }
            ops++;
            if (!pc_consistent(&kv, ref)) {
                CHECK(!"prefix cache differs from the reference model");
                fprintf(stderr, "  block size %u, step %d, op %d\n", B, step, op);
                break;
            }
        }
        for (uint32_t s = 0; s < KV_SEQ; s++)
            kv_seq_drop(&kv, s);
        CHECK_EQ_INT(kv.n_free, kv.n_blocks);
        CHECK_EQ_INT(kv_blocks_cached(&kv), kv.n_published);
        kv_release(&kv);
    }
    CHECK_EQ_INT(ops, 3 * 4000);
    fprintf(stderr, "  prefix cache: %d hits, %d cached blocks revived, %d appends kept the cache\n",
            hits, revived, kept);
    CHECK(hits > 300);    /* prefixes were found and taken */
    CHECK(revived > 50);  /* among them blocks no sequence held any more */
    CHECK(kept > 300);
}

/* The hash chain is part of what a cache on disk names its blocks by: it must not change
 * by accident. */
static void test_kv_hash_chain_stable(void)
{
    int32_t tok[8] = {1, 2, 3, 4, 151643, 0, 7, 9};
    uint64_t chain[2];
    CHECK_EQ_INT(kv_hash_chain(4, tok, 8, chain), 2);
    CHECK(chain[0] == kv_block_hash(KV_HASH_ROOT, tok, 4));
    CHECK(chain[1] == kv_block_hash(chain[0], tok + 4, 4));
    CHECK(chain[0] != kv_block_hash(KV_HASH_ROOT, tok + 4, 4));
    CHECK(kv_block_hash(KV_HASH_ROOT, tok, 3) != kv_block_hash(KV_HASH_ROOT, tok, 4));
    CHECK(chain[0] == UINT64_C(0x5f520b2d482260f5));
    CHECK(chain[1] == UINT64_C(0x4092789eaf640552));
}

TESTS(TEST_ENTRY(test_greedy_is_first_argmax), TEST_ENTRY(test_seed_reproducible),
      TEST_ENTRY(test_temperature_distribution), TEST_ENTRY(test_top_k_top_p_min_p),
      TEST_ENTRY(test_large_vocab_truncation), TEST_ENTRY(test_top_k_with_penalties),
      TEST_ENTRY(test_penalties),
      TEST_ENTRY(test_invalid_params), TEST_ENTRY(test_attention_kernels),
      TEST_ENTRY(test_kv_random_operations), TEST_ENTRY(test_kv_prefix_cache),
      TEST_ENTRY(test_kv_hash_chain_stable))
