/*
 * cuda_dequant_check.cu - the CUDA backend's dequantization (deq32 of kernels.cuh, the
 * code every mat-vec, GEMM and get_rows kernel reads weights through) run as host code
 * against the CPU's scalar dequantization, on random blocks of every weight type. Needs
 * nvcc to build, no GPU to run: `make cuda` builds it, tests/compute/test_cuda.py runs it.
 * Every element must match exactly (same formulas in f32); prints one line per type and
 * "N passed, N failed".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cuda/kernels.cuh"

extern "C" {
#include "compute/compute.h"
}

template <int T>
static bool check(const char *name, int *worst_out)
{
    const int n_chunks = 64; /* 2048 elements: 8 super-blocks, 64 small blocks */
    const int n = 32 * n_chunks;
    const size_t bytes = (size_t)n / type_blck(T) * type_bytes(T);
    uint8_t *buf = (uint8_t *)malloc(bytes);
    float *ref = (float *)malloc(n * sizeof(float)), *got = (float *)malloc(n * sizeof(float));
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)T;
    for (size_t i = 0; i < bytes; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    /* scales: finite fp16 / bf16 / f32 values (random bits can be nan or inf) */
    if (T == PV_TYPE_F32)
        for (int i = 0; i < n; i++)
            ((float *)buf)[i] = (float)((int)(i * 7919 % 2001) - 1000) / 300.0f;
    if (T == PV_TYPE_F16 || T == PV_TYPE_BF16)
        for (int i = 0; i < n; i++)
            ((uint16_t *)buf)[i] &= 0x3FFF; /* exponent below the inf/nan range */
    const int bb = type_bytes(T);
    for (size_t b = 0; T != PV_TYPE_F32 && T != PV_TYPE_F16 && T != PV_TYPE_BF16 &&
                       b < bytes / bb; b++) {
        uint8_t *blk = buf + b * bb;
        /* the d (and m / dmin) fields: where quant.h puts them */
        uint16_t *d;
        switch (T) {
        case PV_TYPE_Q2_K: d = (uint16_t *)(blk + 80); d[0] &= 0x3BFF; d[1] &= 0x3BFF; break;
        case PV_TYPE_Q3_K: d = (uint16_t *)(blk + 108); d[0] &= 0x3BFF; break;
        case PV_TYPE_Q6_K: d = (uint16_t *)(blk + 208); d[0] &= 0x3BFF; break;
        default: /* d first, then m / dmin for the types that have one */
            d = (uint16_t *)blk; d[0] &= 0x3BFF;
            if (T == PV_TYPE_Q4_1 || T == PV_TYPE_Q5_1 || T == PV_TYPE_Q4_K || T == PV_TYPE_Q5_K)
                d[1] &= 0x3BFF;
        }
    }
    cpu_dequantize_row(T, buf, ref, n);
    for (int c = 0; c < n_chunks; c++)
        deq32<T>(buf, c, got + 32 * c);
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (!(got[i] == ref[i]) && !(isnan(got[i]) && isnan(ref[i])))
            bad++;
    printf("%s dequant %-5s %d of %d elements differ\n", bad ? "FAIL" : "PASS", name, bad, n);
    free(buf), free(ref), free(got);
    *worst_out += bad;
    return bad == 0;
}

int main(void)
{
    int pass = 0, fail = 0, worst = 0;
#define C(T, name) (check<T>(name, &worst) ? pass++ : fail++);
    C(PV_TYPE_F32, "f32") C(PV_TYPE_F16, "f16") C(PV_TYPE_BF16, "bf16") C(PV_TYPE_Q4_0, "q4_0")
    C(PV_TYPE_Q4_1, "q4_1") C(PV_TYPE_Q5_0, "q5_0") C(PV_TYPE_Q5_1, "q5_1")
    C(PV_TYPE_Q8_0, "q8_0") C(PV_TYPE_Q2_K, "q2_K") C(PV_TYPE_Q3_K, "q3_K")
    C(PV_TYPE_Q4_K, "q4_K") C(PV_TYPE_Q5_K, "q5_K") C(PV_TYPE_Q6_K, "q6_K")
#undef C
    printf("cuda_dequant_check: %d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
