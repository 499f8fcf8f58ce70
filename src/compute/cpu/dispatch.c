/*
 * dispatch.c - picks the CPU kernels once per process and describes the CPU types.
 *
 * The scalar table is always filled; when the CPU reports AVX2, FMA and F16C the AVX2
 * kernels are laid over it, unless PENSIEVE_NO_SIMD (set, non-empty, not "0") asks for
 * the scalar path (tests, debugging). Also the per-type facts the CPU code needs (block size, bytes, dot type),
 * kept here so the kernels do not depend on the GGUF type table.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

static struct cpu_kernels k_ref, k_best;
static const struct cpu_kernels *k_used;
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

static bool cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

int cpu_llama_lanes(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        !env_flag("PENSIEVE_NO_AVX512"))
        return 16;
#endif
    return 8;
}

static void kernels_init(void)
{
    cpu_ref_fill(&k_ref);
    k_best = k_ref;
    if (cpu_has_avx2()) {
#if defined(__x86_64__)
        /* PENSIEVE_NO_VNNI: the plain AVX2 kernels (to compare the two) */
        if (__builtin_cpu_supports("avxvnni") && !env_flag("PENSIEVE_NO_VNNI"))
            cpu_vnni_fill(&k_best);
        else
#endif
            cpu_avx2_fill(&k_best);
        cpu_avx2_ops_fill(&k_best);
    }
    k_used = env_flag("PENSIEVE_NO_SIMD") ? &k_ref : &k_best;
}

const struct cpu_kernels *cpu_kernels_get(void)
{
    pthread_once(&k_once, kernels_init);
    return k_used;
}

const struct cpu_kernels *cpu_kernels_ref(void)
{
    pthread_once(&k_once, kernels_init);
    return &k_ref;
}

const struct cpu_kernels *cpu_kernels_best(void)
{
    pthread_once(&k_once, kernels_init);
    return &k_best;
}

void cpu_kernels_select(bool scalar)
{
    pthread_once(&k_once, kernels_init);
    k_used = scalar ? &k_ref : &k_best;
}

const char *cpu_features(void)
{
    return cpu_kernels_get()->name;
}

uint32_t cpu_dot_type(uint32_t type)
{
    switch (type) {
    case PV_TYPE_F32: return PV_TYPE_F32;
    case PV_TYPE_F16: return PV_TYPE_F16;
    case PV_TYPE_BF16: return PV_TYPE_BF16;
    case PV_TYPE_Q4_0:
    case PV_TYPE_Q5_0:
    case PV_TYPE_Q8_0: return PV_TYPE_Q8_0;
    case PV_TYPE_Q4_1:
    case PV_TYPE_Q5_1: return PV_TYPE_Q8_1;
    case PV_TYPE_Q2_K:
    case PV_TYPE_Q3_K:
    case PV_TYPE_Q4_K:
    case PV_TYPE_Q5_K:
    case PV_TYPE_Q6_K: return PV_TYPE_Q8_K;
    default: return PV_TYPE_COUNT;
    }
}

/* Block geometry comes from the one type table (compute/types.c). */
uint32_t cpu_type_blck(uint32_t type)
{
    const struct pv_type_info *t = pv_type_get(type);
    return t ? t->blck : 0;
}

uint32_t cpu_type_bytes(uint32_t type)
{
    const struct pv_type_info *t = pv_type_get(type);
    return t ? t->type_bytes : 0;
}

size_t cpu_row_bytes(uint32_t type, int64_t n)
{
    return (size_t)(n / cpu_type_blck(type)) * cpu_type_bytes(type);
}
