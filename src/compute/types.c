/*
 * types.c - the table of tensor element types Pensieve knows (compute.h pv_type_get).
 *
 * Block sizes and bytes per block follow ggml's layouts (reference/engine.md section 2).
 * Types marked `weight` may appear in a model file; Q8_1 and Q8_K are activation types
 * the kernels quantize to, never stored in files. Ids not in the table are unsupported.
 * The MLX affine types (ids from 64) are the repacked groups of an MLX model directory.
 */
#include "compute/compute.h"
#include "compute/quant.h"

enum { MLX_BI_2, MLX_BI_3, MLX_BI_4, MLX_BI_5, MLX_BI_6, MLX_BI_8 };
enum { MLX_GI_32, MLX_GI_64, MLX_GI_128 };

static const struct pv_type_info type_table[PV_TYPE_COUNT] = {
    [PV_TYPE_F32] = {"f32", 1, 4, true},
    [PV_TYPE_F16] = {"f16", 1, 2, true},
    [PV_TYPE_Q4_0] = {"q4_0", 32, 18, true},
    [PV_TYPE_Q4_1] = {"q4_1", 32, 20, true},
    [PV_TYPE_Q5_0] = {"q5_0", 32, 22, true},
    [PV_TYPE_Q5_1] = {"q5_1", 32, 24, true},
    [PV_TYPE_Q8_0] = {"q8_0", 32, 34, true},
    [PV_TYPE_Q8_1] = {"q8_1", 32, 36, false},
    [PV_TYPE_Q2_K] = {"q2_K", 256, 84, true},
    [PV_TYPE_Q3_K] = {"q3_K", 256, 110, true},
    [PV_TYPE_Q4_K] = {"q4_K", 256, 144, true},
    [PV_TYPE_Q5_K] = {"q5_K", 256, 176, true},
    [PV_TYPE_Q6_K] = {"q6_K", 256, 210, true},
    [PV_TYPE_Q8_K] = {"q8_K", 256, 292, false},
    [PV_TYPE_BF16] = {"bf16", 1, 2, true},
#define MLX(b, g) [64 + 3 * MLX_BI_##b + MLX_GI_##g] = {"mlx_q" #b "_g" #g, g, PV_MLX_BLOCK_BYTES(b, g), true}
#define MLX_G(b) MLX(b, 32), MLX(b, 64), MLX(b, 128)
    MLX_G(2), MLX_G(3), MLX_G(4), MLX_G(5), MLX_G(6), MLX_G(8),
#undef MLX_G
#undef MLX
};

static const uint32_t mlx_bits[6] = {2, 3, 4, 5, 6, 8};
static const uint32_t mlx_groups[3] = {32, 64, 128};

uint32_t pv_type_mlx(uint32_t bits, uint32_t group_size)
{
    for (uint32_t b = 0; b < 6; b++)
        for (uint32_t g = 0; g < 3; g++)
            if (mlx_bits[b] == bits && mlx_groups[g] == group_size)
                return PV_TYPE_MLX_FIRST + 3 * b + g;
    return PV_TYPE_COUNT;
}

uint32_t pv_type_mlx_bits(uint32_t type)
{
    return type >= PV_TYPE_MLX_FIRST && type < PV_TYPE_COUNT
               ? mlx_bits[(type - PV_TYPE_MLX_FIRST) / 3] : 0;
}

uint32_t pv_type_mlx_group(uint32_t type)
{
    return type >= PV_TYPE_MLX_FIRST && type < PV_TYPE_COUNT
               ? mlx_groups[(type - PV_TYPE_MLX_FIRST) % 3] : 0;
}

const struct pv_type_info *pv_type_get(uint32_t type)
{
    if (type >= PV_TYPE_COUNT || type_table[type].name == NULL)
        return NULL;
    return &type_table[type];
}
