/*
 * types.c - the table of tensor element types Pensieve knows (compute.h pv_type_get).
 *
 * Block sizes and bytes per block follow ggml's layouts (reference/engine.md section 2).
 * Types marked `weight` may appear in a model file; Q8_1 and Q8_K are activation types
 * the kernels quantize to, never stored in files. Ids not in the table are unsupported.
 */
#include "compute/compute.h"

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
};

const struct pv_type_info *pv_type_get(uint32_t type)
{
    if (type >= PV_TYPE_COUNT || type_table[type].name == NULL)
        return NULL;
    return &type_table[type];
}
