/*
 * test_compute.c - unit tests of the compute module's CPU kernels: fp16/bf16 conversion,
 * every SIMD vec_dot and quantizer against the scalar reference, the scalar dots against
 * float dots of dequantized blocks, cpu_matmul (1 and 3 threads, several batch sizes)
 * against a naive dequantize-then-dot, and RoPE / RMSNorm / softmax / activations against
 * their formulas evaluated in double.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "harness.h"
#include "util/util.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* uniform in [-1, 1) */
static float rng_f(void)
{
    return (float)(rng_u32() & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static void fill_f32(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++)
        x[i] = rng_f() * scale;
}

static const uint32_t weight_types[] = {
    PV_TYPE_F32,  PV_TYPE_F16,  PV_TYPE_BF16, PV_TYPE_Q4_0, PV_TYPE_Q4_1,
    PV_TYPE_Q5_0, PV_TYPE_Q5_1, PV_TYPE_Q8_0, PV_TYPE_Q2_K, PV_TYPE_Q3_K,
    PV_TYPE_Q4_K, PV_TYPE_Q5_K, PV_TYPE_Q6_K,
};

static uint16_t small_fp16(void)
{
    return pv_f32_to_fp16(0.001f + 0.02f * (rng_f() + 1.0f));
}

/* Random blocks of `type`: random bits, with scale fields set to small finite values. */
static void random_weights(uint32_t type, void *buf, int64_t n)
{
    size_t bytes = cpu_row_bytes(type, n);
    uint8_t *p = buf;
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)rng_u32();
    int64_t nb = n / cpu_type_blck(type);
    for (int64_t b = 0; b < nb; b++) {
        switch (type) {
        case PV_TYPE_F32: ((float *)buf)[b] = rng_f(); break;
        case PV_TYPE_F16: ((uint16_t *)buf)[b] = pv_f32_to_fp16(rng_f()); break;
        case PV_TYPE_BF16: ((uint16_t *)buf)[b] = cpu_f32_to_bf16(rng_f()); break;
        case PV_TYPE_Q4_0: ((struct pv_block_q4_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q4_1:
            ((struct pv_block_q4_1 *)buf)[b].d = small_fp16();
            ((struct pv_block_q4_1 *)buf)[b].m = pv_f32_to_fp16(-0.1f * rng_f());
            break;
        case PV_TYPE_Q5_0: ((struct pv_block_q5_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q5_1:
            ((struct pv_block_q5_1 *)buf)[b].d = small_fp16();
            ((struct pv_block_q5_1 *)buf)[b].m = pv_f32_to_fp16(-0.1f * rng_f());
            break;
        case PV_TYPE_Q8_0: ((struct pv_block_q8_0 *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q2_K:
            ((struct pv_block_q2_K *)buf)[b].d = small_fp16();
            ((struct pv_block_q2_K *)buf)[b].dmin = small_fp16();
            break;
        case PV_TYPE_Q3_K: ((struct pv_block_q3_K *)buf)[b].d = small_fp16(); break;
        case PV_TYPE_Q4_K:
            ((struct pv_block_q4_K *)buf)[b].d = small_fp16();
            ((struct pv_block_q4_K *)buf)[b].dmin = small_fp16();
            break;
        case PV_TYPE_Q5_K:
            ((struct pv_block_q5_K *)buf)[b].d = small_fp16();
            ((struct pv_block_q5_K *)buf)[b].dmin = small_fp16();
            break;
        case PV_TYPE_Q6_K: ((struct pv_block_q6_K *)buf)[b].d = small_fp16(); break;
        default: CHECK(!"unexpected type");
        }
    }
}

/* ---- fp16 / bf16 ------------------------------------------------------------------ */

static void test_fp16_values(void)
{
    CHECK(pv_fp16_to_f32(0x3C00) == 1.0f);
    CHECK(pv_fp16_to_f32(0xC000) == -2.0f);
    CHECK(pv_fp16_to_f32(0x7BFF) == 65504.0f);
    CHECK(pv_fp16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(pv_fp16_to_f32(0x03FF) == ldexpf(1023.0f, -24));
    CHECK(pv_fp16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(pv_fp16_to_f32(0x8000) == 0.0f && signbit(pv_fp16_to_f32(0x8000)));
    CHECK(isinf(pv_fp16_to_f32(0x7C00)) && pv_fp16_to_f32(0x7C00) > 0);
    CHECK(isinf(pv_fp16_to_f32(0xFC00)) && pv_fp16_to_f32(0xFC00) < 0);
    CHECK(isnan(pv_fp16_to_f32(0x7E00)) && isnan(pv_fp16_to_f32(0x7C01)));

    CHECK_EQ_INT(pv_f32_to_fp16(1.0f), 0x3C00);
    CHECK_EQ_INT(pv_f32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(pv_f32_to_fp16(65504.0f), 0x7BFF);
    CHECK_EQ_INT(pv_f32_to_fp16(65519.0f), 0x7BFF);
    CHECK_EQ_INT(pv_f32_to_fp16(65520.0f), 0x7C00);
    CHECK_EQ_INT(pv_f32_to_fp16(1e10f), 0x7C00);
    CHECK_EQ_INT(pv_f32_to_fp16(-INFINITY), 0xFC00);
    CHECK((pv_f32_to_fp16(NAN) & 0x7C00) == 0x7C00 && (pv_f32_to_fp16(NAN) & 0x3FF) != 0);
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    CHECK_EQ_INT(pv_f32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3C00);
    CHECK_EQ_INT(pv_f32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3C02);
    CHECK_EQ_INT(pv_f32_to_fp16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3C01);
    /* subnormals */
    CHECK_EQ_INT(pv_f32_to_fp16(ldexpf(1.0f, -24)), 0x0001);
    CHECK_EQ_INT(pv_f32_to_fp16(ldexpf(1.0f, -25)), 0x0000);
    CHECK_EQ_INT(pv_f32_to_fp16(ldexpf(1.5f, -25)), 0x0001);
    CHECK_EQ_INT(pv_f32_to_fp16(ldexpf(3.0f, -25)), 0x0002);
    CHECK_EQ_INT(pv_f32_to_fp16(ldexpf(1023.5f, -24)), 0x0400);
    CHECK_EQ_INT(pv_f32_to_fp16(-ldexpf(5.0f, -24)), 0x8005);

    /* every non-nan half survives a round trip */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pv_fp16_to_f32((uint16_t)h);
        if (isnan(f))
            bad += !isnan(pv_fp16_to_f32(pv_f32_to_fp16(f)));
        else
            bad += pv_f32_to_fp16(f) != h;
    }
    CHECK_EQ_INT(bad, 0);

    /* random floats round to a nearest half */
    bad = 0;
    for (int i = 0; i < 20000; i++) {
        float f = ldexpf(rng_f(), (int)(rng_u32() % 40) - 26);
        uint16_t h = pv_f32_to_fp16(f);
        double e = fabs((double)f - pv_fp16_to_f32(h));
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            uint16_t n = (uint16_t)(h + dlt);
            if ((n & 0x7FFF) < 0x7C00 && ((n ^ h) & 0x8000) == 0)
                bad += fabs((double)f - pv_fp16_to_f32(n)) < e;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_bf16(void)
{
    CHECK(pv_bf16_to_f32(0x3F80) == 1.0f);
    CHECK(pv_bf16_to_f32(0xC040) == -3.0f);
    CHECK_EQ_INT(cpu_f32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(cpu_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3F80);     /* tie, even */
    CHECK_EQ_INT(cpu_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3F82); /* tie, even */
    CHECK(isnan(pv_bf16_to_f32(cpu_f32_to_bf16(NAN))));
}

/* ---- kernel modes ----------------------------------------------------------------- */

/* Run check(k) on the table of every SIMD kernel mode this CPU can run (both lane orders
 * of AVX2, and of AVX2+VNNI where the CPU has AVX-VNNI). */
static void each_simd_mode(void (*check)(const struct cpu_kernels *k))
{
    for (int m = CPU_MODE_AVX2_8; m <= CPU_MODE_VNNI_16; m++) {
        const struct cpu_kernels *k = cpu_kernels_mode((enum cpu_mode)m);
        if (k)
            check(k);
    }
}

/* F32 dots in llama.cpp's float orders, written out one lane at a time with fmaf: the
 * batch order (tinyBLAS: element e in lane e % W, then the lanes summed as an AVX-512 or
 * AVX2 reduction does) and the one-token order (ggml's vec_dot: 4 accumulators of W lanes
 * over blocks of 4W, (a0 + a2) + (a1 + a3), the same reduction, the tail in order). */
static float lanes_reduce(float *l, int w)
{
    if (w == 16)
        for (int j = 0; j < 8; j++)
            l[j] += l[j + 8];
    for (int j = 0; j < 4; j++)
        l[j] += l[j + 4];
    return (l[0] + l[2]) + (l[1] + l[3]);
}

static float emulate_batch_f32(const float *w, const float *a, int n, int lanes)
{
    float l[16] = {0};
    int i = 0;
    for (; i + lanes <= n; i += lanes)
        for (int j = 0; j < lanes; j++)
            l[j] = fmaf(w[i + j], a[i + j], l[j]);
    float sum = lanes_reduce(l, lanes);
    for (; i < n; i++)
        sum = fmaf(w[i], a[i], sum);
    return sum;
}

static float emulate_one_f32(const float *w, const float *a, int n, int lanes)
{
    float acc[4][16] = {{0}}, l[16];
    int i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < lanes; j++)
                acc[k][j] = fmaf(w[i + lanes * k + j], a[i + lanes * k + j], acc[k][j]);
    for (int j = 0; j < lanes; j++)
        l[j] = (acc[0][j] + acc[2][j]) + (acc[1][j] + acc[3][j]);
    float sum;
    if (lanes == 16) {
        sum = lanes_reduce(l, 16);
    } else { /* two horizontal adds: (0 + 1) + (2 + 3) of l[j] + l[j + 4] */
        for (int j = 0; j < 4; j++)
            l[j] += l[j + 4];
        sum = (l[0] + l[1]) + (l[2] + l[3]);
    }
    for (; i < n; i++)
        sum = fmaf(w[i], a[i], sum);
    return sum;
}

/* Each SIMD mode's F32 dots keep their lane order exactly: the same bits as the lane-by-
 * lane emulation above, for lengths that fill the lanes and lengths with a tail. */
static void check_lane_order(const struct cpu_kernels *k)
{
    enum { N = 301 };
    float w[N], a[N];
    fill_f32(w, N, 1.0f);
    fill_f32(a, N, 3.0f);
    const int lanes = k->f_lanes;
    CHECK(lanes == 8 || lanes == 16);
    for (int n = 1; n <= N; n += 1 + n / 3) {
        float s_batch, s_one;
        k->vec_dot[PV_TYPE_F32](n, &s_batch, w, a);
        k->vec_dot_one[PV_TYPE_F32](n, &s_one, w, a);
        CHECK(s_batch == emulate_batch_f32(w, a, n, lanes));
        CHECK(s_one == emulate_one_f32(w, a, n, lanes));
    }
}

static void test_lane_orders(void)
{
    each_simd_mode(check_lane_order);
    if (cpu_kernels_mode(CPU_MODE_AVX2_8)) /* the two orders are different tables */
        CHECK(cpu_kernels_mode(CPU_MODE_AVX2_8)->f_lanes == 8 &&
              cpu_kernels_mode(CPU_MODE_AVX2_16)->f_lanes == 16);
}

/* ---- quantizers ------------------------------------------------------------------- */

static void check_quantizers_match_reference(const struct cpu_kernels *best)
{
    const struct cpu_kernels *ref = cpu_kernels_ref();
    const uint32_t dot_types[] = {PV_TYPE_Q8_0, PV_TYPE_Q8_1, PV_TYPE_Q8_K, PV_TYPE_F16,
                                  PV_TYPE_BF16};
    enum { N = 1024 };
    float *x = xmalloc(N * sizeof(float));
    float *back = xmalloc(N * sizeof(float));
    uint8_t *a = xmalloc(N * 4), *b = xmalloc(N * 4);
    for (int rep = 0; rep < 4; rep++) {
        fill_f32(x, N, rep == 3 ? 1e-3f : 3.0f);
        if (rep == 1)
            memset(x, 0, 256 * sizeof(float)); /* all-zero blocks */
        if (rep == 2)
            for (int i = 0; i < N; i += 7)
                x[i] = -x[i] * 4.0f; /* negative maxima */
        for (size_t t = 0; t < PV_ARRAY_LEN(dot_types); t++) {
            uint32_t dt = dot_types[t];
            size_t bytes = cpu_row_bytes(dt, N);
            memset(a, 0, bytes);
            memset(b, 0xAA, bytes);
            ref->quantize[dt](x, a, N);
            best->quantize[dt](x, b, N);
            /* bit-exact: the SIMD quantizers round exactly as the scalar ones */
            if (memcmp(a, b, bytes) != 0) {
                fprintf(stderr, "  quantizer for type %u differs from the reference\n", dt);
                CHECK(!"quantizer mismatch");
            }
            /* and the quantized values are within half a step of x, plus the rounding
             * of d to fp16 (127 * half an fp16 ulp, absolute where d is subnormal) */
            if (dt == PV_TYPE_Q8_1)
                continue; /* same values as Q8_0 plus s */
            cpu_dequantize_row(dt == PV_TYPE_Q8_K ? PV_TYPE_Q8_K : dt, a, back, N);
            int blck = (int)cpu_type_blck(dt);
            for (int i0 = 0; i0 < N; i0 += blck) {
                float amax = 0.0f;
                for (int i = i0; i < i0 + blck; i++)
                    amax = fmaxf(amax, fabsf(x[i]));
                float step = dt == PV_TYPE_F16 ? amax * 1e-3f : dt == PV_TYPE_BF16 ? amax * 8e-3f
                                                                                   : amax / 127.0f;
                for (int i = i0; i < i0 + blck; i++)
                    CHECK_NEAR(back[i], x[i], 0.6 * step + (dt == PV_TYPE_Q8_K ? 0.0 : 4e-6));
            }
        }
        /* Q8_1: s = d * sum(q) */
        ref->quantize[PV_TYPE_Q8_1](x, a, N);
        const struct pv_block_q8_1 *q = (const void *)a;
        for (int i = 0; i < N / 32; i++) {
            int sum = 0;
            for (int j = 0; j < 32; j++)
                sum += q[i].qs[j];
            CHECK_NEAR(pv_fp16_to_f32(q[i].s), (float)sum * pv_fp16_to_f32(q[i].d),
                       fabs((double)sum) * (1e-3 * pv_fp16_to_f32(q[i].d) + 3e-8) + 1e-7);
        }
        /* Q8_K: bsums are the sums of 16 */
        ref->quantize[PV_TYPE_Q8_K](x, a, N);
        const struct pv_block_q8_K *k = (const void *)a;
        for (int i = 0; i < N / 256; i++)
            for (int g = 0; g < 16; g++) {
                int sum = 0;
                for (int j = 0; j < 16; j++)
                    sum += k[i].qs[16 * g + j];
                CHECK_EQ_INT(k[i].bsums[g], sum);
            }
    }
    free(x);
    free(back);
    free(a);
    free(b);
}

static void test_quantizers_match_reference(void)
{
    each_simd_mode(check_quantizers_match_reference);
}

/* ---- vec_dot ---------------------------------------------------------------------- */

/*
 * For each weight type: the scalar dot equals a double dot of the dequantized weight and
 * the dequantized activation blocks (up to f32 rounding, 2e-6 of sum|w*a|), and the SIMD
 * dot equals the scalar one to 1e-5 of sum|w*a| (same integer sums, other float order).
 */
static void check_vec_dot_all_types(const struct cpu_kernels *best)
{
    const struct cpu_kernels *ref = cpu_kernels_ref();
    enum { N = 1024 };
    float *x = xmalloc(N * sizeof(float)), *wf = xmalloc(N * sizeof(float));
    float *af = xmalloc(N * sizeof(float));
    void *w = xmalloc(N * 4), *a = xmalloc(N * 4 + 64), *aw = xmalloc(N * 4 + 64);
    for (size_t t = 0; t < PV_ARRAY_LEN(weight_types); t++) {
        uint32_t type = weight_types[t], dt = cpu_dot_type(type);
        for (int n = (int)cpu_type_blck(type) == 1 ? 37 : (int)cpu_type_blck(type); n <= N;
             n = n * 2 + (cpu_type_blck(type) == 1 ? 3 : 0)) {
            if (n % (int)cpu_type_blck(type) != 0 || n % (int)cpu_type_blck(dt) != 0)
                continue;
            for (int rep = 0; rep < 3; rep++) {
                random_weights(type, w, n);
                fill_f32(x, n, 2.0f);
                if (dt == PV_TYPE_F32) {
                    memcpy(a, x, (size_t)n * sizeof(float));
                    memcpy(af, x, (size_t)n * sizeof(float));
                } else {
                    ref->quantize[dt](x, a, n);
                    if (dt == PV_TYPE_Q8_1) { /* Q8_1 dequantizes like Q8_0 without s */
                        const struct pv_block_q8_1 *q = a;
                        for (int i = 0; i < n; i++)
                            af[i] = pv_fp16_to_f32(q[i / 32].d) * (float)q[i / 32].qs[i % 32];
                    } else {
                        cpu_dequantize_row(dt, a, af, n);
                    }
                }
                cpu_dequantize_row(type, w, wf, n);
                double exact = 0.0, mag = 0.0;
                for (int i = 0; i < n; i++) {
                    exact += (double)wf[i] * af[i];
                    mag += fabs((double)wf[i] * af[i]);
                }
                float s_ref = NAN, s_best = NAN;
                ref->vec_dot[type](n, &s_ref, w, a);
                if (best->widen_q8_0 && dt == PV_TYPE_Q8_0) { /* the layout the SIMD dot reads */
                    cpu_q8_0_widen(a, aw, n);
                    best->vec_dot[type](n, &s_best, w, aw);
                } else {
                    best->vec_dot[type](n, &s_best, w, a);
                }
                /* Q4_1/Q5_1 use s = d*sum(q) stored as fp16: allow its rounding */
                double tol_ref = 2e-6 * mag + 1e-30;
                if (dt == PV_TYPE_Q8_1)
                    tol_ref += 1e-3 * mag;
                if (!(fabs(s_ref - exact) <= tol_ref) || !(fabs(s_best - s_ref) <= 1e-5 * mag + 1e-30)) {
                    fprintf(stderr, "  type %u n %d: exact %.9g ref %.9g best %.9g (mag %g)\n", type,
                            n, exact, s_ref, s_best, mag);
                    CHECK(!"vec_dot mismatch");
                }
            }
        }
    }
    free(x);
    free(wf);
    free(af);
    free(w);
    free(a);
    free(aw);
}

static void test_vec_dot_all_types(void)
{
    each_simd_mode(check_vec_dot_all_types);
}

/* The AVX-VNNI kernels give the AVX2 kernels' bits (the same integer lane sums), one
 * token and several, for every type both have. */
static void vnni_same_bits(const struct cpu_kernels *plain_k, const struct cpu_kernels *vnni_k)
{
    const struct cpu_kernels plain = *plain_k, vnni = *vnni_k;
    enum { N = 512 };
    float x[N];
    void *w = xmalloc(N * 4);
    uint8_t *a = xmalloc(CPU_MULTI_MAX * (N * 4 + 64)), *m = xmalloc(CPU_MULTI_MAX * (N * 4 + 64));
    int checked = 0;
    for (size_t t = 0; t < PV_ARRAY_LEN(weight_types); t++) {
        uint32_t type = weight_types[t], dt = cpu_dot_type(type);
        if (!plain.vec_dot[type] || !vnni.vec_dot[type] || dt == PV_TYPE_F32)
            continue;
        size_t a_row = cpu_row_bytes(dt, N);
        bool widen = plain.widen_q8_0 && dt == PV_TYPE_Q8_0;
        size_t m_row = widen ? N / 32 * sizeof(struct cpu_block_q8_0x) : a_row;
        random_weights(type, w, N);
        for (int r = 0; r < CPU_MULTI_MAX; r++) {
            fill_f32(x, N, 1.0f + (float)r);
            cpu_kernels_ref()->quantize[dt](x, a + (size_t)r * a_row, N);
            if (widen)
                cpu_q8_0_widen(a + (size_t)r * a_row, m + (size_t)r * m_row, N);
            else
                memcpy(m + (size_t)r * m_row, a + (size_t)r * a_row, a_row);
        }
        float s1, s2, mp[CPU_MULTI_MAX], mv[CPU_MULTI_MAX];
        plain.vec_dot[type](N, &s1, w, m);
        vnni.vec_dot[type](N, &s2, w, m);
        CHECK(s1 == s2);
        if (plain.vec_dot_multi[type]) {
            plain.vec_dot_multi[type](N, mp, 1, w, m, m_row, CPU_MULTI_MAX);
            vnni.vec_dot_multi[type](N, mv, 1, w, m, m_row, CPU_MULTI_MAX);
            for (int r = 0; r < CPU_MULTI_MAX; r++)
                CHECK(mp[r] == mv[r]);
        }
        checked++;
    }
    CHECK(checked >= 11);
    free(w);
    free(a);
    free(m);
}

static void test_vnni_same_bits(void)
{
    if (!cpu_kernels_mode(CPU_MODE_VNNI_8)) {
        printf("  NOTE no AVX-VNNI on this CPU: avx2+vnni/8 and avx2+vnni/16 not run\n");
        return;
    }
    for (int lanes = 8; lanes <= 16; lanes += 8) {
        const struct cpu_kernels *p = cpu_kernels_mode(lanes == 8 ? CPU_MODE_AVX2_8 : CPU_MODE_AVX2_16);
        const struct cpu_kernels *v = cpu_kernels_mode(lanes == 8 ? CPU_MODE_VNNI_8 : CPU_MODE_VNNI_16);
        vnni_same_bits(p, v);
    }
}

/* Each multi-token SIMD dot equals the one-token SIMD dot bit for bit, and the scalar
 * dot of every token to 1e-5 of sum|w*a|. */
static void check_vec_dot_multi(const struct cpu_kernels *best)
{
    const struct cpu_kernels *ref = cpu_kernels_ref();
    enum { N = 512 };
    float x[N];
    void *w = xmalloc(N * 4);
    uint8_t *a = xmalloc(CPU_MULTI_MAX * (N * 4 + 64));
    int checked = 0;
    for (size_t t = 0; t < PV_ARRAY_LEN(weight_types); t++) {
        uint32_t type = weight_types[t], dt = cpu_dot_type(type);
        if (!best->vec_dot_multi[type])
            continue;
        /* the reference sees plain dot-type rows, the multi dot widened Q8_0 rows */
        size_t a_row = cpu_row_bytes(dt, N);
        bool widen = best->widen_q8_0 && dt == PV_TYPE_Q8_0;
        size_t m_row = widen ? N / 32 * sizeof(struct cpu_block_q8_0x) : a_row;
        uint8_t *m = xmalloc(CPU_MULTI_MAX * m_row);
        random_weights(type, w, N);
        for (int r = 0; r < CPU_MULTI_MAX; r++) {
            fill_f32(x, N, 1.0f + (float)r);
            ref->quantize[dt](x, a + (size_t)r * a_row, N);
            if (widen)
                cpu_q8_0_widen(a + (size_t)r * a_row, m + (size_t)r * m_row, N);
            else
                memcpy(m + (size_t)r * m_row, a + (size_t)r * a_row, a_row);
        }
        float wf[N], af[N];
        cpu_dequantize_row(type, w, wf, N);
        for (int nt = 1; nt <= CPU_MULTI_MAX; nt++) {
            float s[2 * CPU_MULTI_MAX];
            for (int i = 0; i < 2 * CPU_MULTI_MAX; i++)
                s[i] = -1.0f;
            best->vec_dot_multi[type](N, s, 2, w, m, m_row, nt);
            if (best->unpack[type]) { /* the batch path: unpacked weights, same results */
                struct cpu_block_s8 u[N / 32];
                float su[CPU_MULTI_MAX];
                best->unpack[type](w, u, N);
                best->vec_dot_s8(N, su, 1, u, m, m_row, nt);
                for (int r = 0; r < nt; r++)
                    CHECK(su[r] == s[2 * r]); /* the same float order: the same bits */
            }
            for (int r = 0; r < nt; r++) {
                float s_ref, s_one;
                /* a batch gives the bits of one token at a time */
                best->vec_dot[type](N, &s_one, w, m + (size_t)r * m_row);
                CHECK(s_one == s[2 * r]);
                ref->vec_dot[type](N, &s_ref, w, a + (size_t)r * a_row);
                cpu_dequantize_row(dt, a + (size_t)r * a_row, af, N);
                double mag = 0.0;
                for (int i = 0; i < N; i++)
                    mag += fabs((double)wf[i] * af[i]);
                CHECK_NEAR(s[2 * r], s_ref, 1e-5 * mag);
                CHECK(s[2 * r + 1] == -1.0f); /* the stride is honoured */
                checked++;
            }
            CHECK(nt == CPU_MULTI_MAX || s[2 * nt] == -1.0f); /* no token past nt */
        }
        free(m);
    }
    if (strcmp(best->name, "scalar") != 0)
        CHECK(checked > 0);
    free(w);
    free(a);
}

static void test_vec_dot_multi(void)
{
    each_simd_mode(check_vec_dot_multi);
}

static void check_f16_helpers(const struct cpu_kernels *best)
{
    const struct cpu_kernels *ref = cpu_kernels_ref();
    enum { N = 259 };
    float x[N], y1[N], y2[N], back[N];
    uint16_t h[N];
    fill_f32(x, N, 3.0f);
    best->quantize[PV_TYPE_F16](x, h, N);
    best->f16_to_f32(h, back, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(h[i], pv_f32_to_fp16(x[i]));
        CHECK(back[i] == pv_fp16_to_f32(h[i]));
    }
    for (int n = 1; n <= N; n += 37) {
        double exact = 0.0, mag = 0.0;
        for (int i = 0; i < n; i++) {
            exact += (double)x[i] * pv_fp16_to_f32(h[i]);
            mag += fabs((double)x[i] * pv_fp16_to_f32(h[i]));
        }
        CHECK_NEAR(ref->dot_f32_f16(x, h, n), exact, 1e-6 * mag);
        CHECK_NEAR(best->dot_f32_f16(x, h, n), exact, 1e-6 * mag);
        memcpy(y1, x, sizeof(y1));
        memcpy(y2, x, sizeof(y2));
        ref->axpy_f16(y1, 0.37f, h, n);
        best->axpy_f16(y2, 0.37f, h, n);
        for (int i = 0; i < N; i++)
            CHECK_NEAR(y1[i], y2[i], 1e-6 * (fabsf(y1[i]) + 1.0f));
    }
}

static void test_f16_helpers(void)
{
    each_simd_mode(check_f16_helpers);
}

/* ---- matmul ----------------------------------------------------------------------- */

/*
 * cpu_matmul against a naive dequantize-then-dot in double on the same quantized
 * activations (tolerance 1e-5 of sum|w*a|, plus the fp16 rounding of Q8_1's s), and
 * the 3-thread result equal to the 1-thread one bit for bit.
 */
/* cpu_matmul in every kernel mode this CPU can run (the scalar reference included). */
static void check_matmul(void)
{
    const struct cpu_kernels *k = cpu_kernels_get();
    struct pv_pool *pools[2] = {pool_new(1), pool_new(3)};
    const int ne1 = 37;
    const int token_counts[] = {1, 3, 6, 9};
    for (size_t t = 0; t < PV_ARRAY_LEN(weight_types); t++) {
        uint32_t type = weight_types[t], dt = cpu_dot_type(type);
        int ne0 = cpu_type_blck(type) == PV_QK_K || cpu_type_blck(dt) == PV_QK_K ? 512 : 96;
        size_t row_bytes = cpu_row_bytes(type, ne0);
        uint8_t *wdata = xmalloc(row_bytes * ne1);
        for (int r = 0; r < ne1; r++)
            random_weights(type, wdata + (size_t)r * row_bytes, ne0);
        struct pv_tensor W = {.name = "w", .type = type, .n_dims = 2, .ne = {ne0, ne1, 1, 1},
                              .row_bytes = row_bytes, .n_bytes = row_bytes * ne1, .data = wdata};
        float *wf = xmalloc(sizeof(float) * ne0 * ne1);
        for (int r = 0; r < ne1; r++)
            cpu_dequantize_row(type, wdata + (size_t)r * row_bytes, wf + (size_t)r * ne0, ne0);
        for (size_t c = 0; c < PV_ARRAY_LEN(token_counts); c++) {
            int nt = token_counts[c];
            float *x = xmalloc(sizeof(float) * ne0 * nt), *af = xmalloc(sizeof(float) * ne0);
            float *y1 = xmalloc(sizeof(float) * ne1 * nt), *y3 = xmalloc(sizeof(float) * ne1 * nt);
            void *a = xmalloc(ne0 * 4 + 64);
            fill_f32(x, ne0 * nt, 1.5f);
            cpu_matmul(pools[0], &W, x, y1, nt);
            cpu_matmul(pools[1], &W, x, y3, nt);
            CHECK(memcmp(y1, y3, sizeof(float) * ne1 * nt) == 0);
            int bad = 0;
            for (int tok = 0; tok < nt; tok++) {
                const float *xt = x + (size_t)tok * ne0;
                if (dt == PV_TYPE_F32) {
                    memcpy(af, xt, sizeof(float) * ne0);
                } else if (dt == PV_TYPE_Q8_1) {
                    k->quantize[PV_TYPE_Q8_0](xt, a, ne0);
                    cpu_dequantize_row(PV_TYPE_Q8_0, a, af, ne0);
                } else {
                    k->quantize[dt](xt, a, ne0);
                    cpu_dequantize_row(dt, a, af, ne0);
                }
                for (int r = 0; r < ne1; r++) {
                    double exact = 0.0, mag = 0.0;
                    for (int i = 0; i < ne0; i++) {
                        exact += (double)wf[(size_t)r * ne0 + i] * af[i];
                        mag += fabs((double)wf[(size_t)r * ne0 + i] * af[i]);
                    }
                    double tol = (dt == PV_TYPE_Q8_1 ? 1e-3 : 1e-5) * mag + 1e-30;
                    bad += !(fabs(y1[(size_t)tok * ne1 + r] - exact) <= tol);
                }
            }
            if (bad)
                fprintf(stderr, "  matmul type %u n_tokens %d: %d rows off\n", type, nt, bad);
            CHECK_EQ_INT(bad, 0);
            free(x);
            free(af);
            free(y1);
            free(y3);
            free(a);
        }
        free(wdata);
        free(wf);
    }
    pool_free(pools[0]);
    pool_free(pools[1]);
    cpu_scratch_release();
}

static void test_matmul(void)
{
    for (int m = 0; m < CPU_MODE_COUNT; m++) /* the exact modes (fast: tests/tools/fast_check) */
        if (m != CPU_MODE_FAST && cpu_kernels_use((enum cpu_mode)m))
            check_matmul();
    cpu_kernels_select(false);
}

/* ---- element-wise ops ------------------------------------------------------------- */

static void test_rmsnorm(void)
{
    enum { N = 640 };
    float x[N], w[N], y[N];
    fill_f32(x, N, 4.0f);
    fill_f32(w, N, 2.0f);
    double ss = 0.0;
    for (int i = 0; i < N; i++)
        ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / N + 1e-6);
    cpu_rmsnorm(x, w, y, N, 1e-6f);
    for (int i = 0; i < N; i++)
        CHECK_NEAR(y[i], x[i] * scale * w[i], 1e-5 * fabs(x[i] * scale * w[i]) + 1e-6);
    cpu_rmsnorm(x, NULL, x, N, 1e-6f); /* in place, no weight */
    for (int i = 0; i < N; i++)
        CHECK_NEAR(x[i], y[i] / w[i], 1e-4 * fabs(y[i] / w[i]) + 1e-5);
    float rows[3 * 8], out[3 * 8];
    fill_f32(rows, 3 * 8, 1.0f);
    cpu_rmsnorm_rows(rows, NULL, out, 3, 8, 1e-5f);
    for (int r = 0; r < 3; r++) {
        double s2 = 0.0;
        for (int i = 0; i < 8; i++)
            s2 += (double)out[r * 8 + i] * out[r * 8 + i];
        CHECK_NEAR(s2 / 8, 1.0, 1e-3);
    }
}

static void test_rope(void)
{
    enum { HD = 64, NH = 3 };
    const int n_rot = 48;
    float x[NH * HD], y[NH * HD], ff[HD / 2];
    for (int i = 0; i < HD / 2; i++)
        ff[i] = 1.0f + (float)i / 8.0f;
    for (int mode = 0; mode < 4; mode++) {
        bool neox = mode & 1;
        const float *f = mode & 2 ? ff : NULL;
        float freq_scale = mode & 2 ? 0.25f : 1.0f;
        int32_t pos = 37;
        fill_f32(x, NH * HD, 1.0f);
        memcpy(y, x, sizeof(x));
        cpu_rope(y, NH, HD, n_rot, pos, 10000.0f, freq_scale, f, neox);
        for (int h = 0; h < NH; h++) {
            const float *xs = x + h * HD, *ys = y + h * HD;
            for (int i = 0; i < n_rot / 2; i++) {
                double theta = freq_scale * pos * pow(10000.0, -2.0 * i / n_rot) / (f ? f[i] : 1.0);
                int i0 = neox ? i : 2 * i, i1 = neox ? i + n_rot / 2 : 2 * i + 1;
                CHECK_NEAR(ys[i0], xs[i0] * cos(theta) - xs[i1] * sin(theta), 2e-5);
                CHECK_NEAR(ys[i1], xs[i0] * sin(theta) + xs[i1] * cos(theta), 2e-5);
            }
            for (int i = n_rot; i < HD; i++)
                CHECK(ys[i] == xs[i]);
        }
    }
}

static void test_activations_softmax(void)
{
    enum { N = 300 };
    float x[N], g[N], y[N];
    fill_f32(x, N, 6.0f);
    fill_f32(g, N, 2.0f);
    memcpy(y, x, sizeof(x));
    cpu_gelu_mul(y, g, N);
    for (int i = 0; i < N; i++) {
        /* GELU is computed in fp16 precision (x and the result rounded to fp16, as
         * llama.cpp does): within fp16 rounding of x (slope <= 1.13) and of the result */
        double v = x[i];
        double e = 0.5 * v * (1.0 + tanh(0.7978845608 * v * (1.0 + 0.044715 * v * v))) * g[i];
        CHECK_NEAR(y[i], e, (1.2 * fabs(v) + fabs(e / g[i])) * fabs(g[i]) / 1024.0 + 1e-6);
    }
    memcpy(y, x, sizeof(x));
    cpu_silu_mul(y, g, N);
    for (int i = 0; i < N; i++) {
        double v = x[i], e = v / (1.0 + exp(-v)) * g[i];
        CHECK_NEAR(y[i], e, 1e-5 * fabs(e) + 1e-6);
    }
    fill_f32(x, N, 30.0f);
    x[5] = 100.0f; /* large values must not overflow */
    memcpy(y, x, sizeof(x));
    cpu_softmax(y, N);
    double z = 0.0, total = 0.0;
    for (int i = 0; i < N; i++)
        z += exp((double)x[i] - 100.0);
    for (int i = 0; i < N; i++) {
        double e = exp((double)x[i] - 100.0) / z;
        CHECK_NEAR(y[i], e, 1e-5 * e + 1e-9);
        total += y[i];
    }
    CHECK_NEAR(total, 1.0, 1e-5);
}

/* SIMD activations and softmax against the scalar ones, over a wide range of inputs
 * (tolerance 1e-5 relative, plus 1e-6 |x g| for the cancellation in 1 + tanh(z) that
 * the scalar GELU suffers near z = -1). */
static void check_simd_activations(const struct cpu_kernels *best)
{
    const struct cpu_kernels *ref = cpu_kernels_ref();
    enum { N = 1003 };
    static float x[N], g[N], a[N], b[N];
    for (int i = 0; i < N; i++) {
        x[i] = -60.0f + 120.0f * (float)i / N;
        g[i] = rng_f() * 2.0f;
    }
    x[7] = 0.0f;
    x[8] = -0.0f;
    x[9] = 1e-30f;
    for (int op = 0; op < 2; op++) {
        memcpy(a, x, sizeof(x));
        memcpy(b, x, sizeof(x));
        if (op == 0) {
            ref->gelu_mul(a, g, N);
            best->gelu_mul(b, g, N);
        } else {
            ref->silu_mul(a, g, N);
            best->silu_mul(b, g, N);
        }
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += !(fabsf(a[i] - b[i]) <= 1e-5f * fabsf(a[i]) + 1e-6f * fabsf(x[i] * g[i]) + 1e-30f);
        if (bad)
            fprintf(stderr, "  activation %d: %d values off\n", op, bad);
        CHECK_EQ_INT(bad, 0);
    }
    for (int n = 1; n <= N; n = n * 3 + 1) {
        for (int i = 0; i < n; i++)
            a[i] = b[i] = rng_f() * 40.0f;
        ref->softmax(a, n);
        best->softmax(b, n);
        for (int i = 0; i < n; i++)
            CHECK_NEAR(b[i], a[i], 2e-6 * a[i] + 1e-12);
    }
}

static void test_simd_activations(void)
{
    each_simd_mode(check_simd_activations);
}

/* A thread that runs matmuls and exits leaves nothing behind (LeakSanitizer checks). */
static void *matmul_thread(void *arg)
{
    const struct pv_tensor *W = arg;
    float x[64], y[3];
    fill_f32(x, 64, 1.0f);
    cpu_matmul(NULL, W, x, y, 1);
    return NULL;
}

static void test_matmul_thread_exit(void)
{
    uint8_t w[3 * 68];
    random_weights(PV_TYPE_Q8_0, w, 3 * 64);
    struct pv_tensor W = {.name = "w", .type = PV_TYPE_Q8_0, .n_dims = 2, .ne = {64, 3, 1, 1},
                          .row_bytes = 68, .n_bytes = sizeof(w), .data = w};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, matmul_thread, &W) == 0);
    CHECK(pthread_join(th, NULL) == 0);
}

static void test_dispatch(void)
{
    CHECK_EQ_STR(cpu_kernels_ref()->name, "scalar");
    const char *f = cpu_features();
    bool known = false;
    for (int m = 0; m < CPU_MODE_COUNT; m++)
        known |= strcmp(f, cpu_mode_name((enum cpu_mode)m)) == 0;
    CHECK(known);
    CHECK(cpu_kernels_mode(CPU_MODE_SCALAR) == cpu_kernels_ref());
    CHECK(cpu_kernels_mode(CPU_MODE_COUNT) == NULL);
    for (size_t t = 0; t < PV_ARRAY_LEN(weight_types); t++) {
        CHECK(cpu_kernels_best()->vec_dot[weight_types[t]] != NULL);
        CHECK_EQ_INT(cpu_row_bytes(weight_types[t], 256) % cpu_type_bytes(weight_types[t]), 0);
    }
    /* say which kernel modes these tests ran and which this CPU cannot run */
    char ran[128] = "", skipped[128] = "";
    for (int m = 0; m < CPU_MODE_COUNT; m++) {
        char *dst = cpu_kernels_mode((enum cpu_mode)m) ? ran : skipped;
        size_t len = strlen(dst);
        snprintf(dst + len, 128 - len, "%s%s", len ? " " : "", cpu_mode_name((enum cpu_mode)m));
    }
    printf("  NOTE kernel modes tested: %s; not runnable on this CPU: %s\n", ran,
           skipped[0] ? skipped : "none");
}

TESTS(TEST_ENTRY(test_fp16_values), TEST_ENTRY(test_bf16), TEST_ENTRY(test_lane_orders),
      TEST_ENTRY(test_quantizers_match_reference), TEST_ENTRY(test_vec_dot_all_types),
      TEST_ENTRY(test_vec_dot_multi), TEST_ENTRY(test_vnni_same_bits), TEST_ENTRY(test_f16_helpers), TEST_ENTRY(test_matmul), TEST_ENTRY(test_rmsnorm),
      TEST_ENTRY(test_rope), TEST_ENTRY(test_activations_softmax), TEST_ENTRY(test_simd_activations),
      TEST_ENTRY(test_matmul_thread_exit), TEST_ENTRY(test_dispatch))
