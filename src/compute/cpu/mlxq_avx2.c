/*
 * mlxq_avx2.c - AVX2/FMA dot products of the MLX affine types against f32 activations.
 *
 * Eight elements at a time: their q values widened to eight i32 lanes (4 and 8 bits by
 * shifts, 2 bits likewise, 3/5/6 bits from the eight values' `bits` bytes), then
 * acc_q += q * x and acc_x += x per group, and tot += scale * acc_q + bias * acc_x in
 * lanes; one horizontal sum per row. Same math as mlxq.c in another float order. The
 * multi-token version widens each group's q values once for up to four tokens.
 */
#include <immintrin.h>
#include <string.h>

#include "compute/cpu/cpu.h"

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The q values of elements 8i..8i+7 of a group (they fill exactly `bits` bytes at p). */
static inline __m256i q8(const uint8_t *p, uint32_t bits)
{
    if (bits == 8)
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    if (bits == 4 || bits == 2) {
        uint32_t w = 0;
        memcpy(&w, p, bits);
        const __m256i sh = bits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                     : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh),
                                _mm256_set1_epi32((1 << bits) - 1));
    }
    uint64_t w = 0;
    memcpy(&w, p, bits);
    const uint64_t m = (1u << bits) - 1;
    return _mm256_setr_epi32((int)(w & m), (int)(w >> bits & m), (int)(w >> 2 * bits & m),
                             (int)(w >> 3 * bits & m), (int)(w >> 4 * bits & m),
                             (int)(w >> 5 * bits & m), (int)(w >> 6 * bits & m),
                             (int)(w >> 7 * bits & m));
}

static inline void vec_dot_mlx(int n, float *s, const void *vw, const void *va, uint32_t bits,
                               uint32_t gs)
{
    const uint8_t *p = vw;
    const float *x = va;
    const size_t bb = PV_MLX_BLOCK_BYTES(bits, gs);
    __m256 tot = _mm256_setzero_ps();
    for (int g = 0; g < n / (int)gs; g++, p += bb, x += gs) {
        struct pv_block_mlx_head h;
        memcpy(&h, p, sizeof h);
        __m256 aq = _mm256_setzero_ps(), ax = _mm256_setzero_ps();
        for (uint32_t j = 0; j < gs; j += 8) {
            __m256 xv = _mm256_loadu_ps(x + j);
            __m256 qv = _mm256_cvtepi32_ps(q8(p + 8 + j / 8 * bits, bits));
            aq = _mm256_fmadd_ps(qv, xv, aq);
            ax = _mm256_add_ps(ax, xv);
        }
        tot = _mm256_fmadd_ps(_mm256_set1_ps(h.scale), aq, tot);
        tot = _mm256_fmadd_ps(_mm256_set1_ps(h.bias), ax, tot);
    }
    *s = hsum8(tot);
}

/* The same for nt (1..CPU_MULTI_MAX) activation rows a_stride bytes apart: each group's
 * q values are widened once for all of them; every token's sums run in the order of
 * vec_dot_mlx, so a batch gives the bits of single tokens. */
static inline void vec_dot_multi_mlx(int n, float *s, size_t s_stride, const void *vw,
                                     const void *va, size_t a_stride, int nt, uint32_t bits,
                                     uint32_t gs)
{
    const uint8_t *p = vw;
    const size_t bb = PV_MLX_BLOCK_BYTES(bits, gs);
    __m256 tot[CPU_MULTI_MAX];
    for (int t = 0; t < nt; t++)
        tot[t] = _mm256_setzero_ps();
    for (int g = 0; g < n / (int)gs; g++, p += bb) {
        struct pv_block_mlx_head h;
        memcpy(&h, p, sizeof h);
        __m256 aq[CPU_MULTI_MAX], ax[CPU_MULTI_MAX];
        for (int t = 0; t < nt; t++)
            aq[t] = ax[t] = _mm256_setzero_ps();
        for (uint32_t j = 0; j < gs; j += 8) {
            __m256 qv = _mm256_cvtepi32_ps(q8(p + 8 + j / 8 * bits, bits));
            for (int t = 0; t < nt; t++) {
                const float *x = (const float *)(const void *)((const uint8_t *)va + (size_t)t * a_stride);
                __m256 xv = _mm256_loadu_ps(x + (size_t)g * gs + j);
                aq[t] = _mm256_fmadd_ps(qv, xv, aq[t]);
                ax[t] = _mm256_add_ps(ax[t], xv);
            }
        }
        for (int t = 0; t < nt; t++) {
            tot[t] = _mm256_fmadd_ps(_mm256_set1_ps(h.scale), aq[t], tot[t]);
            tot[t] = _mm256_fmadd_ps(_mm256_set1_ps(h.bias), ax[t], tot[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        s[(size_t)t * s_stride] = hsum8(tot[t]);
}

#define MLX_KERNELS(b, g)                                                                  \
    static void vec_dot_mlx_##b##_##g(int n, float *s, const void *w, const void *a)     \
    {                                                                                      \
        vec_dot_mlx(n, s, w, a, b, g);                                                     \
    }                                                                                      \
    static void vec_dot_multi_mlx_##b##_##g(int n, float *s, size_t s_stride, const void *w, \
                                            const void *a, size_t a_stride, int nt)        \
    {                                                                                      \
        vec_dot_multi_mlx(n, s, s_stride, w, a, a_stride, nt, b, g);                       \
    }
#define MLX_KERNELS_G(b) MLX_KERNELS(b, 32) MLX_KERNELS(b, 64) MLX_KERNELS(b, 128)
MLX_KERNELS_G(2)
MLX_KERNELS_G(3)
MLX_KERNELS_G(4)
MLX_KERNELS_G(5)
MLX_KERNELS_G(6)
MLX_KERNELS_G(8)

#define MLX_ENTRY(b, g) {b, g, vec_dot_mlx_##b##_##g, vec_dot_multi_mlx_##b##_##g}
#define MLX_ENTRY_G(b) MLX_ENTRY(b, 32), MLX_ENTRY(b, 64), MLX_ENTRY(b, 128)
static const struct {
    uint32_t bits, gs;
    cpu_vec_dot_fn dot;
    cpu_vec_dot_multi_fn multi;
} mlx_avx2[] = {MLX_ENTRY_G(2), MLX_ENTRY_G(3), MLX_ENTRY_G(4),
                MLX_ENTRY_G(5), MLX_ENTRY_G(6), MLX_ENTRY_G(8)};

void cpu_mlxq_avx2_fill(struct cpu_kernels *k)
{
    for (size_t i = 0; i < sizeof mlx_avx2 / sizeof mlx_avx2[0]; i++) {
        uint32_t type = pv_type_mlx(mlx_avx2[i].bits, mlx_avx2[i].gs);
        k->vec_dot[type] = mlx_avx2[i].dot;
        k->vec_dot_multi[type] = mlx_avx2[i].multi;
    }
}
