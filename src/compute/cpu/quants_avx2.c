/*
 * quants_avx2.c - AVX2 + FMA + F16C kernels of the CPU backend, laid over the scalar
 * table by cpu_avx2_fill() when the CPU has those features (dispatch.c decides).
 */
#include <immintrin.h>

#include "compute/cpu/cpu.h"

void cpu_avx2_fill(struct cpu_kernels *k)
{
    k->name = "avx2";
}
