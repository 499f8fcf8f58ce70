/*
 * quants_vnni.c - the kernels of quants_avx2.c built with AVX-VNNI as well: the byte dot
 * products of the legacy types (Q4_0, Q5_0, Q8_0, Q4_1, Q5_1) form their 4-product lane
 * sums with vpdpbusd instead of vpmaddubsw + vpmaddwd. The integers are the same, so the
 * results are the same bits; dispatch.c lays cpu_vnni_fill() over the table when the CPU
 * has AVX-VNNI. Built with -mavx2 -mfma -mf16c -mavxvnni.
 */
#define CPU_QUANTS_VNNI 1
#include "compute/cpu/quants_avx2.c"
