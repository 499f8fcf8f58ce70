/*
 * mlxq.c - scalar reference kernels of the MLX affine types (compute/quant.h): row
 * dequantization and the dot product against f32 activations, one function per
 * (bits, group size), entered into the kernel tables by cpu_mlxq_ref_fill.
 *
 * Reference order: per group, sq = sum_j q[j] * x[j] and sx = sum_j x[j] in index order,
 * then s += scale * sq + bias * sx, groups in order. The AVX2 versions (mlxq_avx2.c) sum
 * in lanes and agree within float rounding, not bit for bit.
 */
#include <string.h>

#include "compute/cpu/cpu.h"

/* q[j] of a group: bits [j*bits, j*bits+bits) of qs, little-endian */
static inline uint32_t mlx_q(const uint8_t *qs, uint32_t bits, uint32_t j)
{
    uint32_t bit = j * bits, at = bit >> 3, sh = bit & 7;
    uint32_t v = qs[at];
    if (sh + bits > 8)
        v |= (uint32_t)qs[at + 1] << 8;
    return (v >> sh) & ((1u << bits) - 1);
}

static inline void dequant_mlx(const void *vx, float *y, int64_t n, uint32_t bits, uint32_t gs)
{
    const uint8_t *p = vx;
    const size_t bb = PV_MLX_BLOCK_BYTES(bits, gs);
    for (int64_t g = 0; g < n / gs; g++, p += bb, y += gs) {
        struct pv_block_mlx_head h;
        memcpy(&h, p, sizeof h);
        for (uint32_t j = 0; j < gs; j++)
            y[j] = h.scale * (float)mlx_q(p + 8, bits, j) + h.bias;
    }
}

/* s = sum_g scale_g * sum_j q[j] x[j] + bias_g * sum_j x[j] */
static inline void vec_dot_mlx(int n, float *s, const void *vw, const void *va, uint32_t bits,
                               uint32_t gs)
{
    const uint8_t *p = vw;
    const float *x = va;
    const size_t bb = PV_MLX_BLOCK_BYTES(bits, gs);
    float sum = 0;
    for (int g = 0; g < n / (int)gs; g++, p += bb, x += gs) {
        struct pv_block_mlx_head h;
        memcpy(&h, p, sizeof h);
        float sq = 0, sx = 0;
        for (uint32_t j = 0; j < gs; j++) {
            sq += (float)mlx_q(p + 8, bits, j) * x[j];
            sx += x[j];
        }
        sum += h.scale * sq + h.bias * sx;
    }
    *s = sum;
}

#define MLX_KERNELS(b, g)                                                                  \
    static void dequant_mlx_##b##_##g(const void *x, float *y, int64_t n)                \
    {                                                                                      \
        dequant_mlx(x, y, n, b, g);                                                        \
    }                                                                                      \
    static void vec_dot_mlx_##b##_##g(int n, float *s, const void *w, const void *a)     \
    {                                                                                      \
        vec_dot_mlx(n, s, w, a, b, g);                                                     \
    }
#define MLX_KERNELS_G(b) MLX_KERNELS(b, 32) MLX_KERNELS(b, 64) MLX_KERNELS(b, 128)
MLX_KERNELS_G(2)
MLX_KERNELS_G(3)
MLX_KERNELS_G(4)
MLX_KERNELS_G(5)
MLX_KERNELS_G(6)
MLX_KERNELS_G(8)

#define MLX_ENTRY(b, g) {b, g, dequant_mlx_##b##_##g, vec_dot_mlx_##b##_##g}
#define MLX_ENTRY_G(b) MLX_ENTRY(b, 32), MLX_ENTRY(b, 64), MLX_ENTRY(b, 128)
static const struct {
    uint32_t bits, gs;
    cpu_dequant_fn dequant;
    cpu_vec_dot_fn dot;
} mlx_ref[] = {MLX_ENTRY_G(2), MLX_ENTRY_G(3), MLX_ENTRY_G(4),
               MLX_ENTRY_G(5), MLX_ENTRY_G(6), MLX_ENTRY_G(8)};

cpu_dequant_fn cpu_mlxq_dequant_fn(uint32_t type)
{
    for (size_t i = 0; i < sizeof mlx_ref / sizeof mlx_ref[0]; i++)
        if (pv_type_mlx(mlx_ref[i].bits, mlx_ref[i].gs) == type)
            return mlx_ref[i].dequant;
    return NULL;
}

void cpu_mlxq_ref_fill(struct cpu_kernels *k)
{
    for (size_t i = 0; i < sizeof mlx_ref / sizeof mlx_ref[0]; i++)
        k->vec_dot[pv_type_mlx(mlx_ref[i].bits, mlx_ref[i].gs)] = mlx_ref[i].dot;
}
