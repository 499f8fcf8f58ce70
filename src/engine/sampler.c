/*
 * sampler.c - next-token selection from a logits vector (public pv_sampler_*).
 *
 * The chain follows llama.cpp's order: repetition/presence/frequency penalties over the
 * last N accepted tokens -> top-k -> top-p -> min-p -> temperature -> a seeded draw.
 * Truncation comes before temperature, so top-p and min-p see untempered logits.
 * Vocabularies reach 262144 entries, so nothing sorts the whole vocabulary: top-k and
 * top-p use quickselect on a candidate array, then sort only the survivors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine/engine.h"
#include "util/util.h"

struct cand {
    int32_t id;
    float logit;
};

struct pv_sampler {
    struct pv_sampler_params p;
    uint32_t n_vocab;
    struct cand *cand;     /* [n_vocab] working candidates, owned */
    int32_t *hist;         /* [penalty_last_n] ring of accepted tokens, owned */
    uint8_t *in_hist;      /* [n_vocab / 8 + 1] bitmap of the ring's tokens while sampling */
    uint32_t n_hist;       /* tokens in the ring (<= penalty_last_n) */
    uint32_t hist_head;    /* next slot to write */
    uint64_t seed_used;    /* the resolved seed (random when PV_SEED_RANDOM) */
    uint64_t rng[4];       /* xoshiro256** state */
};

/* ---- random numbers: splitmix64 seeds xoshiro256** -------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void rng_seed(struct pv_sampler *s)
{
    uint64_t x = s->seed_used;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

/* ---- candidate ordering: logit descending, then id ascending (a total order) ------ */

static inline bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static inline void cand_swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/*
 * Rearrange c[0..n) so that its first m entries are the m best (in cand order), sorted.
 * Quickselect with a median-of-three pivot, then a sort of the m survivors.
 */
static void select_top(struct cand *c, size_t n, size_t m)
{
    size_t lo = 0, hi = n; /* the m-th boundary lies in [lo, hi) */
    if (m >= n) {
        qsort(c, n, sizeof(*c), cand_cmp);
        return;
    }
    while (hi - lo > 16) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (cand_before(&c[mid], &c[lo]))
            cand_swap(&c[mid], &c[lo]);
        if (cand_before(&c[last], &c[lo]))
            cand_swap(&c[last], &c[lo]);
        if (cand_before(&c[last], &c[mid]))
            cand_swap(&c[last], &c[mid]);
        /* pivot = median, moved to last-1; lo <= pivot <= last already hold */
        cand_swap(&c[mid], &c[last - 1]);
        struct cand pivot = c[last - 1];
        size_t i = lo, j = last - 1;
        for (;;) {
            while (cand_before(&c[++i], &pivot))
                ;
            while (cand_before(&pivot, &c[--j]))
                ;
            if (i >= j)
                break;
            cand_swap(&c[i], &c[j]);
        }
        cand_swap(&c[i], &c[last - 1]); /* pivot at its final index i */
        if (i == m || i + 1 == m)
            break;
        if (i < m)
            lo = i + 1;
        else
            hi = i;
    }
    if (hi - lo <= 16) /* finish the small range by insertion sort */
        for (size_t a = lo + 1; a < hi; a++)
            for (size_t b = a; b > lo && cand_before(&c[b], &c[b - 1]); b--)
                cand_swap(&c[b], &c[b - 1]);
    qsort(c, m, sizeof(*c), cand_cmp);
}

/* Index of the first largest of x[0..n): the max over 8 independent lanes (so the loop
   pipelines and vectorizes), then the first index holding it. */
static size_t argmax(const float *x, size_t n)
{
    float lane[8];
    size_t i = 0;
    for (int l = 0; l < 8; l++)
        lane[l] = x[0];
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
    float max = lane[0];
    for (int l = 1; l < 8; l++)
        max = lane[l] > max ? lane[l] : max;
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    for (i = 0; i < n; i++)
        if (x[i] == max)
            return i;
    return 0; /* every value NaN */
}

/* Min-heap (by cand order) of the best candidates seen so far: h[0] is the worst kept. */
static void heap_sift_down(struct cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(&h[w], &h[l]))
            w = l;
        if (r < n && cand_before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand_swap(&h[i], &h[w]);
        i = w;
    }
}

static void heap_offer(struct cand *h, size_t *n, size_t k, struct cand c)
{
    if (*n < k) { /* sift up */
        size_t i = (*n)++;
        h[i] = c;
        while (i > 0 && cand_before(&h[(i - 1) / 2], &h[i])) {
            cand_swap(&h[i], &h[(i - 1) / 2]);
            i = (i - 1) / 2;
        }
    } else if (cand_before(&c, &h[0])) {
        h[0] = c;
        heap_sift_down(h, k, 0);
    }
}

/* ---- public API ------------------------------------------------------------------- */

struct pv_sampler_params pv_sampler_default_params(void)
{
    struct pv_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = PV_SEED_RANDOM,
    };
    return p;
}

enum pv_status pv_sampler_new(const struct pv_sampler_params *params, uint32_t n_vocab,
                              struct pv_sampler **out, struct pv_err *err)
{
    struct pv_sampler_params p = params ? *params : pv_sampler_default_params();
    struct pv_sampler *s;

    *out = NULL;
    if (n_vocab == 0)
        return pv_err_set(err, PV_ERR_INVALID, "sampler needs a vocabulary of at least 1 token");
    if (!isfinite(p.temperature) || !isfinite(p.top_p) || !isfinite(p.min_p))
        return pv_err_set(err, PV_ERR_INVALID, "temperature, top_p and min_p must be finite");
    if (!isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f)
        return pv_err_set(err, PV_ERR_INVALID, "repeat penalty must be positive, got %g",
                          (double)p.repeat_penalty);
    if (!isfinite(p.presence_penalty) || !isfinite(p.frequency_penalty))
        return pv_err_set(err, PV_ERR_INVALID, "presence and frequency penalties must be finite");
    if (p.penalty_last_n < 0)
        return pv_err_set(err, PV_ERR_INVALID, "penalty_last_n must be >= 0, got %d",
                          (int)p.penalty_last_n);

    s = try_calloc(1, sizeof(*s));
    if (!s)
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate a sampler");
    s->p = p;
    s->n_vocab = n_vocab;
    s->cand = try_calloc(n_vocab, sizeof(*s->cand));
    s->hist = try_calloc(p.penalty_last_n ? (size_t)p.penalty_last_n : 1, sizeof(*s->hist));
    s->in_hist = try_calloc(n_vocab / 8 + 1, 1);
    if (!s->cand || !s->hist || !s->in_hist) {
        pv_sampler_free(s);
        return pv_err_set(err, PV_ERR_NOMEM, "cannot allocate sampler buffers for %u tokens",
                          n_vocab);
    }
    s->seed_used = p.seed;
    if (p.seed == PV_SEED_RANDOM) {
        uint64_t r;
        if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
            r = clock_now_ns() ^ (uint64_t)time(NULL);
        s->seed_used = r;
    }
    rng_seed(s);
    *out = s;
    return PV_OK;
}

void pv_sampler_free(struct pv_sampler *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->hist);
    free(s->in_hist);
    free(s);
}

void pv_sampler_reset(struct pv_sampler *s)
{
    s->n_hist = 0;
    s->hist_head = 0;
    rng_seed(s);
}

void pv_sampler_accept(struct pv_sampler *s, int32_t token)
{
    if (s->p.penalty_last_n == 0)
        return;
    s->hist[s->hist_head] = token;
    s->hist_head = (s->hist_head + 1) % (uint32_t)s->p.penalty_last_n;
    if (s->n_hist < (uint32_t)s->p.penalty_last_n)
        s->n_hist++;
}

uint64_t sampler_seed(const struct pv_sampler *s)
{
    return s->seed_used;
}

static bool penalties_on(const struct pv_sampler_params *p)
{
    return p->penalty_last_n > 0 &&
           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
            p->frequency_penalty != 0.0f);
}

/* The penalized logit of token t, which occurs `count` > 0 times in the history. */
static float penalize(const struct pv_sampler_params *p, float l, uint32_t count)
{
    l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
    return l - ((float)count * p->frequency_penalty + p->presence_penalty);
}

/* Occurrences of hist[i] in the history, or 0 when an earlier slot holds the same token. */
static uint32_t first_count(const struct pv_sampler *s, uint32_t i)
{
    uint32_t count = 0;
    for (uint32_t j = 0; j < s->n_hist; j++) {
        if (s->hist[j] != s->hist[i])
            continue;
        if (j < i)
            return 0;
        count++;
    }
    return count;
}

/*
 * Apply the penalties to c[], which holds every token in id order (c[i].id == i):
 * logit = logit <= 0 ? logit * repeat : logit / repeat;  logit -= count*freq + present.
 */
static void apply_penalties(struct pv_sampler *s, struct cand *c)
{
    for (uint32_t i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        uint32_t count;
        if (t < 0 || (uint32_t)t >= s->n_vocab || !(count = first_count(s, i)))
            continue;
        c[t].logit = penalize(&s->p, c[t].logit, count);
    }
}

/*
 * The k best tokens (penalties applied), sorted, into c[0..k): one pass over the logits
 * with a heap of k, never copying the vocabulary.
 */
static void top_k_pass(struct pv_sampler *s, const float *logits, size_t k)
{
    struct cand *h = s->cand;
    size_t n_heap = 0;
    const bool pen = penalties_on(&s->p);

    if (pen)
        for (uint32_t i = 0; i < s->n_hist; i++)
            if (s->hist[i] >= 0 && (uint32_t)s->hist[i] < s->n_vocab)
                s->in_hist[s->hist[i] >> 3] |= (uint8_t)(1u << (s->hist[i] & 7));
    for (size_t i = 0; i < s->n_vocab; i++) {
        struct cand c = {(int32_t)i, logits[i]};
        if (pen && (s->in_hist[i >> 3] >> (i & 7) & 1))
            continue; /* offered below, penalized */
        if (n_heap == k && !(c.logit > h[0].logit || (c.logit == h[0].logit && c.id < h[0].id)))
            continue;
        heap_offer(h, &n_heap, k, c);
    }
    if (pen)
        for (uint32_t i = 0; i < s->n_hist; i++) {
            int32_t t = s->hist[i];
            uint32_t count;
            if (t < 0 || (uint32_t)t >= s->n_vocab)
                continue;
            s->in_hist[t >> 3] = 0;
            if ((count = first_count(s, i))) {
                struct cand c = {t, penalize(&s->p, logits[t], count)};
                heap_offer(h, &n_heap, k, c);
            }
        }
    qsort(h, n_heap, sizeof(*h), cand_cmp);
}

/* Keep the shortest best-first prefix of c[0..n) whose probability reaches top_p. */
static size_t truncate_top_p(struct cand *c, size_t n, bool *sorted, float top_p)
{
    float max = -INFINITY;
    double sum = 0.0, cum = 0.0, target;
    size_t m = 64;

    for (size_t i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    for (size_t i = 0; i < n; i++)
        sum += exp((double)(c[i].logit - max));
    target = (double)top_p * sum;
    for (;;) {
        if (m >= n || *sorted)
            m = n;
        if (!*sorted)
            select_top(c, n, m);
        if (m == n)
            *sorted = true;
        cum = 0.0;
        for (size_t i = 0; i < m; i++) {
            cum += exp((double)(c[i].logit - max));
            if (cum >= target)
                return i + 1;
        }
        if (m == n)
            return n;
        m *= 8;
    }
}

int32_t pv_sampler_sample(struct pv_sampler *s, const float *logits)
{
    const struct pv_sampler_params *p = &s->p;
    struct cand *c = s->cand;
    size_t n = s->n_vocab;
    bool sorted = false;

    /* Greedy without penalties: plain argmax, first on ties. */
    if (p->temperature <= 0.0f && !penalties_on(p))
        return (int32_t)argmax(logits, n);

    /* top-k first when it truncates: one pass, no copy of the vocabulary */
    if (p->temperature > 0.0f && p->top_k > 0 && (size_t)p->top_k < n) {
        top_k_pass(s, logits, (size_t)p->top_k);
        n = (size_t)p->top_k;
        sorted = true;
        goto truncated;
    }

    for (size_t i = 0; i < n; i++) {
        c[i].id = (int32_t)i;
        c[i].logit = logits[i];
    }
    if (penalties_on(p))
        apply_penalties(s, c);

    if (p->temperature <= 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit)
                best = i;
        return c[best].id;
    }

truncated:
    /* top-p */
    if (p->top_p < 1.0f)
        n = truncate_top_p(c, n, &sorted, p->top_p > 0.0f ? p->top_p : 0.0f);
    /* min-p: keep logit >= max + ln(min_p), preserving order */
    if (p->min_p > 0.0f && n > 1) {
        float max = -INFINITY;
        for (size_t i = 0; i < n; i++)
            max = c[i].logit > max ? c[i].logit : max;
        float floor_l = max + logf(p->min_p);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= floor_l)
                c[k++] = c[i];
        n = k;
    }

    /* temperature, then draw: p_i = exp((l_i - max) / T) */
    {
        float max = -INFINITY;
        double sum = 0.0, u, run = 0.0;
        for (size_t i = 0; i < n; i++)
            max = c[i].logit > max ? c[i].logit : max;
        for (size_t i = 0; i < n; i++)
            sum += exp((double)((c[i].logit - max) / p->temperature));
        u = rng_uniform(s->rng) * sum;
        for (size_t i = 0; i < n; i++) {
            run += exp((double)((c[i].logit - max) / p->temperature));
            if (run >= u)
                return c[i].id;
        }
        return c[n - 1].id;
    }
}
