/*
 * ref.c - scalar reference kernels of the CPU backend: fp16/bf16 conversion, row
 * dequantization of every weight type, the activation quantizers (Q8_0, Q8_1, Q8_K,
 * F16, BF16) and one vec_dot per weight type against its dot type.
 *
 * Dot products keep ggml's integer inner loops (weights and activations both as small
 * integers, scaled once per block), so results are numerically close to llama.cpp's,
 * which quantizes activations the same way. These functions are the oracle for the SIMD
 * kernels and the path used when SIMD is absent or PENSIEVE_NO_SIMD=1.
 */
#include <math.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

/* ---- fp16 / bf16 ------------------------------------------------------------------ */

float pv_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    float f;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7F800000u | (man << 13);
    else
        bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* Round to nearest, ties to even; overflow to inf; nan stays nan (quiet). */
uint16_t pv_f32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7C00 | (ax > 0x7F800000u ? 0x200 | ((ax >> 13) & 0x3FF) : 0));
    if (ax >= 0x477FF000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7C00);
    if (ax >= 0x38800000u) { /* normal half: rebias the exponent, round at bit 13 */
        uint32_t r = ax - 0x38000000u;
        r += 0xFFF + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax < 0x33000000u) /* below half the smallest subnormal */
        return sign;
    /* subnormal half: round(value * 2^24) */
    uint32_t e = ax >> 23, m = (ax & 0x7FFFFF) | 0x800000;
    int shift = 126 - (int)e; /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return (uint16_t)(sign | q);
}

float pv_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t cpu_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) /* nan: keep it a quiet nan */
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

/* fp16 -> f32 by table on the scalar hot paths (filled by cpu_ref_fill, which runs
 * before any kernel is reachable) */
float cpu_fp16_table[1 << 16];
#define FP16(h) cpu_fp16_table[(uint16_t)(h)]

/* byte b of qh_table[x] = 16 when bit b of x is set: the 5th bits of Q5_0 / Q5_1 */
static uint64_t qh_table[256];

/* The 32 high-bit bytes (0 or 16) of a Q5 block's qh, element order. */
static inline void q5_high(const uint8_t *qh, uint8_t out[32])
{
    for (int i = 0; i < 4; i++)
        memcpy(out + 8 * i, &qh_table[qh[i]], 8);
}

/* ---- dequantization: y = the block formulas of quant.h --------------------------- */

static void dequant_f32(const void *x, float *y, int64_t n)
{
    memcpy(y, x, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++)
        y[i] = FP16(x[i]);
}

static void dequant_bf16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++)
        y[i] = pv_bf16_to_f32(x[i]);
}

static void dequant_q4_0(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / PV_QK4_0; i++, y += PV_QK4_0) {
        float d = FP16(x[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((x[i].qs[j] & 0xF) - 8) * d;
            y[j + 16] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / PV_QK4_1; i++, y += PV_QK4_1) {
        float d = FP16(x[i].d), m = FP16(x[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(x[i].qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dequant_q5_0(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / PV_QK5_0; i++, y += PV_QK5_0) {
        float d = FP16(x[i].d);
        uint32_t qh = load_u32(x[i].qh);
        for (int j = 0; j < 16; j++) {
            int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (float)(((x[i].qs[j] & 0xF) | h0) - 16) * d;
            y[j + 16] = (float)(((x[i].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dequant_q5_1(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / PV_QK5_1; i++, y += PV_QK5_1) {
        float d = FP16(x[i].d), m = FP16(x[i].m);
        uint32_t qh = load_u32(x[i].qh);
        for (int j = 0; j < 16; j++) {
            int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (float)((x[i].qs[j] & 0xF) | h0) * d + m;
            y[j + 16] = (float)((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void dequant_q8_0(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / PV_QK8_0; i++, y += PV_QK8_0) {
        float d = FP16(x[i].d);
        for (int j = 0; j < PV_QK8_0; j++)
            y[j] = (float)x[i].qs[j] * d;
    }
}

static void dequant_q2_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q2_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        float d = FP16(x[i].d), dmin = FP16(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int g = 0; g < 2; g++) {
                    uint8_t sc = x[i].scales[is++];
                    float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[16 * g + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* The 16 signed 6-bit scales of a Q3_K block. */
static void q3_K_scales(const uint8_t *s, int8_t *out)
{
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
        int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        out[i] = (int8_t)((lo | hi << 4) - 32);
    }
}

static void dequant_q3_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q3_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        float d = FP16(x[i].d);
        int8_t sc[16];
        q3_K_scales(x[i].scales, sc);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        int is = 0;
        uint8_t bit = 1;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, bit <<= 1) {
                for (int g = 0; g < 2; g++) {
                    float dl = d * (float)sc[is++];
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[16 * g + l] >> shift) & 3) - ((hm[16 * g + l] & bit) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

static void dequant_q4_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q4_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        float d = FP16(x[i].d), dmin = FP16(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int c = 0; c < 4; c++, q += 32) {
            uint8_t sc, m;
            cpu_scale_min_k4(2 * c, x[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            cpu_scale_min_k4(2 * c + 1, x[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q5_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        float d = FP16(x[i].d), dmin = FP16(x[i].dmin);
        const uint8_t *q = x[i].qs, *qh = x[i].qh;
        for (int c = 0; c < 4; c++, q += 32) {
            uint8_t sc, m;
            cpu_scale_min_k4(2 * c, x[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            cpu_scale_min_k4(2 * c + 1, x[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            uint8_t u1 = (uint8_t)(1 << (2 * c)), u2 = (uint8_t)(2 << (2 * c));
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dequant_q6_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q6_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++) {
        float d = FP16(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

static void dequant_q8_K(const void *vx, float *y, int64_t n)
{
    const struct pv_block_q8_K *x = vx;
    for (int64_t i = 0; i < n / PV_QK_K; i++)
        for (int j = 0; j < PV_QK_K; j++)
            *y++ = x[i].d * (float)x[i].qs[j];
}

static cpu_dequant_fn dequant_fn(uint32_t type)
{
    switch (type) {
    case PV_TYPE_F32: return dequant_f32;
    case PV_TYPE_F16: return dequant_f16;
    case PV_TYPE_BF16: return dequant_bf16;
    case PV_TYPE_Q4_0: return dequant_q4_0;
    case PV_TYPE_Q4_1: return dequant_q4_1;
    case PV_TYPE_Q5_0: return dequant_q5_0;
    case PV_TYPE_Q5_1: return dequant_q5_1;
    case PV_TYPE_Q8_0: return dequant_q8_0;
    case PV_TYPE_Q2_K: return dequant_q2_K;
    case PV_TYPE_Q3_K: return dequant_q3_K;
    case PV_TYPE_Q4_K: return dequant_q4_K;
    case PV_TYPE_Q5_K: return dequant_q5_K;
    case PV_TYPE_Q6_K: return dequant_q6_K;
    case PV_TYPE_Q8_K: return dequant_q8_K;
    default: return cpu_mlxq_dequant_fn(type); /* NULL when not an MLX type */
    }
}

void cpu_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    (void)cpu_kernels_ref(); /* the fp16 table is ready */
    cpu_dequant_fn fn = dequant_fn(type);
    PV_ASSERT(fn != NULL && n % cpu_type_blck(type) == 0);
    fn(src, dst, n);
}

/* ---- activation quantizers -------------------------------------------------------- */

/*
 * d = max|x| / 127 (stored as fp16), q = round(x * 127 / max|x|) with ties to even: the
 * way llama.cpp's x86 CPU backend quantizes activations, so that integer dots see the
 * same q as it does.
 */
void cpu_quantize_q8_0_ref(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / PV_QK8_0; i++, x += PV_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < PV_QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = pv_f32_to_fp16(d);
        for (int j = 0; j < PV_QK8_0; j++)
            y[i].qs[j] = (int8_t)rintf(x[j] * id);
    }
}

void cpu_q8_0_widen(const void *src, void *dst, int64_t n)
{
    const uint8_t *in = src;
    struct cpu_block_q8_0x *out = dst;
    (void)cpu_kernels_ref(); /* the fp16 table is ready */
    for (int64_t i = 0; i < n / PV_QK8_0; i++) {
        struct pv_block_q8_0 b;
        memcpy(&b, in + (size_t)i * sizeof(b), sizeof(b));
        out[i].d = FP16(b.d);
        memcpy(out[i].qs, b.qs, sizeof(b.qs));
    }
}

/* Q8_0 plus s = d * sum(q) */
void cpu_quantize_q8_1_ref(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / PV_QK8_1; i++, x += PV_QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < PV_QK8_1; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < PV_QK8_1; j++) {
            y[i].qs[j] = (int8_t)rintf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = pv_f32_to_fp16(d);
        y[i].s = pv_f32_to_fp16((float)sum * d);
    }
}

/* The element of largest magnitude (its sign kept) maps to -127 or 127; ties to even. */
void cpu_quantize_q8_K_ref(const float *x, void *vy, int64_t n)
{
    struct pv_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / PV_QK_K; i++, x += PV_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < PV_QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < PV_QK_K; j++) {
            long v = lrintf(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < PV_QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[16 * g + l];
            y[i].bsums[g] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

static void quantize_f16(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++)
        y[i] = pv_f32_to_fp16(x[i]);
}

static void quantize_bf16(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++)
        y[i] = cpu_f32_to_bf16(x[i]);
}

/* ---- vec_dot: *s = sum_k w[k] * a[k] ---------------------------------------------- */

static void vec_dot_f32(int n, float *s, const void *vw, const void *va)
{
    const float *w = vw, *a = va;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(w[i] * a[i]);
    *s = (float)sum;
}

static void vec_dot_f16(int n, float *s, const void *vw, const void *va)
{
    const uint16_t *w = vw, *a = va;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(FP16(w[i]) * FP16(a[i]));
    *s = (float)sum;
}

static void vec_dot_bf16(int n, float *s, const void *vw, const void *va)
{
    const uint16_t *w = vw, *a = va;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(pv_bf16_to_f32(w[i]) * pv_bf16_to_f32(a[i]));
    *s = (float)sum;
}

static void vec_dot_q4_0(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q4_0 *w = vw;
    const struct pv_block_q8_0 *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += ((w[i].qs[j] & 0xF) - 8) * a[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * a[i].qs[j + 16];
        sum += (float)sumi * (FP16(w[i].d) * FP16(a[i].d));
    }
    *s = sum;
}

static void vec_dot_q4_1(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q4_1 *w = vw;
    const struct pv_block_q8_1 *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK8_1; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += (w[i].qs[j] & 0xF) * a[i].qs[j] + (w[i].qs[j] >> 4) * a[i].qs[j + 16];
        sum += (FP16(w[i].d) * FP16(a[i].d)) * (float)sumi + FP16(w[i].m) * FP16(a[i].s);
    }
    *s = sum;
}

static void vec_dot_q5_0(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q5_0 *w = vw;
    const struct pv_block_q8_0 *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK8_0; i++) {
        uint8_t hb[32];
        q5_high(w[i].qh, hb);
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += (((w[i].qs[j] & 0xF) | hb[j]) - 16) * a[i].qs[j] +
                    (((w[i].qs[j] >> 4) | hb[j + 16]) - 16) * a[i].qs[j + 16];
        sum += (float)sumi * (FP16(w[i].d) * FP16(a[i].d));
    }
    *s = sum;
}

static void vec_dot_q5_1(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q5_1 *w = vw;
    const struct pv_block_q8_1 *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK8_1; i++) {
        uint8_t hb[32];
        q5_high(w[i].qh, hb);
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += ((w[i].qs[j] & 0xF) | hb[j]) * a[i].qs[j] + ((w[i].qs[j] >> 4) | hb[j + 16]) * a[i].qs[j + 16];
        sum += (FP16(w[i].d) * FP16(a[i].d)) * (float)sumi + FP16(w[i].m) * FP16(a[i].s);
    }
    *s = sum;
}

static void vec_dot_q8_0(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q8_0 *w = vw;
    const struct pv_block_q8_0 *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < PV_QK8_0; j++)
            sumi += w[i].qs[j] * a[i].qs[j];
        sum += (float)sumi * (FP16(w[i].d) * FP16(a[i].d));
    }
    *s = sum;
}

/* K-quants: sum = d_a * (d_w * sum_j sc_j * (q . a)_j - dmin_w * sum_j m_j * bsum_j) */
static void vec_dot_q2_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q2_K *w = vw;
    const struct pv_block_q8_K *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK_K; i++) {
        int summs = 0, sumi = 0;
        for (int j = 0; j < 16; j++)
            summs += (w[i].scales[j] >> 4) * a[i].bsums[j];
        const uint8_t *q = w[i].qs;
        const int8_t *q8 = a[i].qs;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int g = 0; g < 2; g++, q8 += 16) {
                    int acc = 0;
                    for (int l = 0; l < 16; l++)
                        acc += ((q[16 * g + l] >> shift) & 3) * q8[l];
                    sumi += (w[i].scales[is++] & 0xF) * acc;
                }
            }
        }
        sum += a[i].d * (FP16(w[i].d) * (float)sumi - FP16(w[i].dmin) * (float)summs);
    }
    *s = sum;
}

static void vec_dot_q3_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q3_K *w = vw;
    const struct pv_block_q8_K *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK_K; i++) {
        int8_t sc[16];
        q3_K_scales(w[i].scales, sc);
        const uint8_t *q = w[i].qs, *hm = w[i].hmask;
        const int8_t *q8 = a[i].qs;
        int sumi = 0, is = 0;
        uint8_t bit = 1;
        for (int h = 0; h < 2; h++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, bit <<= 1) {
                for (int g = 0; g < 2; g++, q8 += 16) {
                    int acc = 0;
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[16 * g + l] >> shift) & 3) - ((hm[16 * g + l] & bit) ? 0 : 4);
                        acc += v * q8[l];
                    }
                    sumi += sc[is++] * acc;
                }
            }
        }
        sum += a[i].d * FP16(w[i].d) * (float)sumi;
    }
    *s = sum;
}

static void vec_dot_q4_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q4_K *w = vw;
    const struct pv_block_q8_K *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK_K; i++) {
        const uint8_t *q = w[i].qs;
        const int8_t *q8 = a[i].qs;
        int sumi = 0, summs = 0;
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            uint8_t sc1, m1, sc2, m2;
            cpu_scale_min_k4(2 * c, w[i].scales, &sc1, &m1);
            cpu_scale_min_k4(2 * c + 1, w[i].scales, &sc2, &m2);
            int acc1 = 0, acc2 = 0;
            for (int l = 0; l < 32; l++) {
                acc1 += (q[l] & 0xF) * q8[l];
                acc2 += (q[l] >> 4) * q8[l + 32];
            }
            sumi += sc1 * acc1 + sc2 * acc2;
            summs += m1 * (a[i].bsums[4 * c] + a[i].bsums[4 * c + 1]) +
                     m2 * (a[i].bsums[4 * c + 2] + a[i].bsums[4 * c + 3]);
        }
        sum += a[i].d * (FP16(w[i].d) * (float)sumi - FP16(w[i].dmin) * (float)summs);
    }
    *s = sum;
}

static void vec_dot_q5_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q5_K *w = vw;
    const struct pv_block_q8_K *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK_K; i++) {
        const uint8_t *q = w[i].qs, *qh = w[i].qh;
        const int8_t *q8 = a[i].qs;
        int sumi = 0, summs = 0;
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            uint8_t sc1, m1, sc2, m2;
            cpu_scale_min_k4(2 * c, w[i].scales, &sc1, &m1);
            cpu_scale_min_k4(2 * c + 1, w[i].scales, &sc2, &m2);
            int acc1 = 0, acc2 = 0;
            for (int l = 0; l < 32; l++) {
                acc1 += ((q[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4)) * q8[l];
                acc2 += ((q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) * q8[l + 32];
            }
            sumi += sc1 * acc1 + sc2 * acc2;
            summs += m1 * (a[i].bsums[4 * c] + a[i].bsums[4 * c + 1]) +
                     m2 * (a[i].bsums[4 * c + 2] + a[i].bsums[4 * c + 3]);
        }
        sum += a[i].d * (FP16(w[i].d) * (float)sumi - FP16(w[i].dmin) * (float)summs);
    }
    *s = sum;
}

static void vec_dot_q6_K(int n, float *s, const void *vw, const void *va)
{
    const struct pv_block_q6_K *w = vw;
    const struct pv_block_q8_K *a = va;
    float sum = 0.0f;
    for (int i = 0; i < n / PV_QK_K; i++) {
        const uint8_t *ql = w[i].ql, *qh = w[i].qh;
        const int8_t *sc = w[i].scales, *q8 = a[i].qs;
        int sumi = 0;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, q8 += 128) {
            for (int half = 0; half < 2; half++) {
                int acc[4] = {0, 0, 0, 0};
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    acc[0] += (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32) * q8[l];
                    acc[1] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * q8[l + 32];
                    acc[2] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * q8[l + 64];
                    acc[3] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * q8[l + 96];
                }
                for (int k = 0; k < 4; k++)
                    sumi += sc[half + 2 * k] * acc[k];
            }
        }
        sum += a[i].d * FP16(w[i].d) * (float)sumi;
    }
    *s = sum;
}

/* ---- f16 attention helpers -------------------------------------------------------- */

static float dot_f32_f16(const float *x, const uint16_t *h, int n)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += x[i] * FP16(h[i]);
    return sum;
}

static void axpy_f16(float *y, float a, const uint16_t *h, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * FP16(h[i]);
}

static void f16_to_f32(const uint16_t *h, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = FP16(h[i]);
}

void cpu_ref_fill(struct cpu_kernels *k)
{
    for (uint32_t h = 0; h < (1u << 16); h++)
        cpu_fp16_table[h] = pv_fp16_to_f32((uint16_t)h);
    cpu_gelu_table_fill();
    for (uint32_t x = 0; x < 256; x++) {
        uint8_t b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (x >> i) & 1 ? 16 : 0;
        memcpy(&qh_table[x], b, 8);
    }
    memset(k, 0, sizeof(*k));
    k->name = "scalar";
    k->vec_dot[PV_TYPE_F32] = vec_dot_f32;
    k->vec_dot[PV_TYPE_F16] = vec_dot_f16;
    k->vec_dot[PV_TYPE_BF16] = vec_dot_bf16;
    k->vec_dot[PV_TYPE_Q4_0] = vec_dot_q4_0;
    k->vec_dot[PV_TYPE_Q4_1] = vec_dot_q4_1;
    k->vec_dot[PV_TYPE_Q5_0] = vec_dot_q5_0;
    k->vec_dot[PV_TYPE_Q5_1] = vec_dot_q5_1;
    k->vec_dot[PV_TYPE_Q8_0] = vec_dot_q8_0;
    k->vec_dot[PV_TYPE_Q2_K] = vec_dot_q2_K;
    k->vec_dot[PV_TYPE_Q3_K] = vec_dot_q3_K;
    k->vec_dot[PV_TYPE_Q4_K] = vec_dot_q4_K;
    k->vec_dot[PV_TYPE_Q5_K] = vec_dot_q5_K;
    k->vec_dot[PV_TYPE_Q6_K] = vec_dot_q6_K;
    cpu_mlxq_ref_fill(k);
    k->quantize[PV_TYPE_F16] = quantize_f16;
    k->quantize[PV_TYPE_BF16] = quantize_bf16;
    k->quantize[PV_TYPE_Q8_0] = cpu_quantize_q8_0_ref;
    k->quantize[PV_TYPE_Q8_1] = cpu_quantize_q8_1_ref;
    k->quantize[PV_TYPE_Q8_K] = cpu_quantize_q8_K_ref;
    k->dot_f32_f16 = dot_f32_f16;
    k->axpy_f16 = axpy_f16;
    k->f16_to_f32 = f16_to_f32;
    k->gelu_mul = cpu_gelu_mul_ref;
    k->silu_mul = cpu_silu_mul_ref;
    k->softmax = cpu_softmax_ref;
    k->rope_rotate = cpu_rope_rotate_ref;
}
