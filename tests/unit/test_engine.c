/*
 * test_engine.c - unit tests of the engine module: the sampler chain (greedy, seeds,
 * top-k, top-p, min-p, temperature, penalties) on small and vocabulary-sized logits,
 * parameter validation, and the attention kernels (the SIMD ones in both lane orders
 * against the portable one). The forward pass is tested against llama.cpp in
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

/* the kernel engine_attend_for picks in kernel mode m, or NULL when this CPU cannot run m */
static engine_attend_fn kernel_in(enum cpu_mode m, uint32_t hd)
{
    if (!cpu_kernels_use(m))
        return NULL;
    engine_attend_fn f = engine_attend_for(PV_KV_F16, hd);
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
        for (size_t i = 0; i < (size_t)N_CTX * hd; i++) {
            k[i] = pv_f32_to_fp16((float)rand() / RAND_MAX * 2.0f - 1.0f);
            v[i] = pv_f32_to_fp16((float)rand() / RAND_MAX * 2.0f - 1.0f);
        }
        for (uint32_t i = 0; i < hd; i++)
            q[i] = ((float)rand() / RAND_MAX * 2.0f - 1.0f) * 4.0f;
        engine_attend_fn portable = kernel_in(CPU_MODE_SCALAR, hd);
        /* both lane orders run on any AVX2 CPU; without AVX2 the portable one twice */
        engine_attend_fn kernels[2] = {kernel_in(CPU_MODE_AVX2_16, hd), kernel_in(CPU_MODE_AVX2_8, hd)};
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
                    struct engine_attn_item it = {
                        .q = q, .k = k, .v = v,
                        .k_stride = hd * sizeof(uint16_t), .v_stride = hd * sizeof(uint16_t),
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

TESTS(TEST_ENTRY(test_greedy_is_first_argmax), TEST_ENTRY(test_seed_reproducible),
      TEST_ENTRY(test_temperature_distribution), TEST_ENTRY(test_top_k_top_p_min_p),
      TEST_ENTRY(test_large_vocab_truncation), TEST_ENTRY(test_top_k_with_penalties),
      TEST_ENTRY(test_penalties),
      TEST_ENTRY(test_invalid_params), TEST_ENTRY(test_attention_kernels))
