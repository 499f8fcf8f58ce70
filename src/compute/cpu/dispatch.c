/*
 * dispatch.c - picks the CPU kernels once per process and describes the CPU types.
 *
 * One table per kernel mode the CPU can run: scalar always; AVX2 (AVX2+FMA+F16C) and
 * AVX2+VNNI (with AVX-VNNI), each in llama.cpp's 8-lane and 16-lane float order (both
 * orders are AVX2 code, so any AVX2 CPU runs both). A process uses one: the widest the
 * CPU has in the lane width of a native llama.cpp build on it, or what PENSIEVE_KERNELS
 * names (tests, debugging); PENSIEVE_NO_SIMD, PENSIEVE_NO_VNNI and PENSIEVE_NO_AVX512
 * step down. PENSIEVE_KERNELS=fast is the one mode not in llama.cpp's float order: the
 * default exact table with the fast matmul (fast_avx512.c) over it on a CPU with AVX-512
 * VNNI, else the exact table alone; never the default. Also the per-type facts the CPU code needs (block size, bytes, dot type),
 * kept here so the kernels do not depend on the GGUF type table.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

static const char *const mode_names[CPU_MODE_COUNT] = {
    [CPU_MODE_SCALAR] = "scalar",
    [CPU_MODE_AVX2_8] = "avx2/8",
    [CPU_MODE_AVX2_16] = "avx2/16",
    [CPU_MODE_VNNI_8] = "avx2+vnni/8",
    [CPU_MODE_VNNI_16] = "avx2+vnni/16",
    [CPU_MODE_FAST] = "fast",
};

static struct cpu_kernels k_modes[CPU_MODE_COUNT];
static bool k_can[CPU_MODE_COUNT];
static const struct cpu_kernels *k_used;
static enum cpu_mode k_used_mode, k_proc_mode; /* in use now; the process's own */
static char k_env_error[256];
static char k_available[96]; /* the exact modes k_can says, space-separated */
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

static bool cpu_has(const char *feature)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (strcmp(feature, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (strcmp(feature, "avxvnni") == 0)
        return __builtin_cpu_supports("avxvnni");
    if (strcmp(feature, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    if (strcmp(feature, "avx512vnni") == 0) /* what fast_avx512.c is built for */
        return cpu_has("avx2") && cpu_has("avx512") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    (void)feature;
    return false;
}

static enum cpu_mode k_fast_base; /* the exact mode under the fast one */

static bool mode_lanes16(enum cpu_mode m)
{
    if (m == CPU_MODE_FAST)
        m = k_fast_base;
    return m == CPU_MODE_AVX2_16 || m == CPU_MODE_VNNI_16;
}

/* The mode a process picks by itself: the widest kernels the CPU runs, in the lane width
 * of a native llama.cpp build on it; PENSIEVE_NO_SIMD, PENSIEVE_NO_VNNI and
 * PENSIEVE_NO_AVX512 step down. */
static bool native_lanes16(void) /* a native llama.cpp build here sums in 16 lanes */
{
    return cpu_has("avx512") && !env_flag("PENSIEVE_NO_AVX512");
}

static enum cpu_mode default_mode(void)
{
    if (env_flag("PENSIEVE_NO_SIMD") || !k_can[CPU_MODE_AVX2_8])
        return CPU_MODE_SCALAR;
    bool l16 = native_lanes16();
    if (k_can[CPU_MODE_VNNI_8] && !env_flag("PENSIEVE_NO_VNNI"))
        return l16 ? CPU_MODE_VNNI_16 : CPU_MODE_VNNI_8;
    return l16 ? CPU_MODE_AVX2_16 : CPU_MODE_AVX2_8;
}

static void kernels_init(void)
{
    cpu_ref_fill(&k_modes[CPU_MODE_SCALAR]);
    k_can[CPU_MODE_SCALAR] = true;
    for (int m = CPU_MODE_AVX2_8; m <= CPU_MODE_VNNI_16; m++) {
        bool vnni = m == CPU_MODE_VNNI_8 || m == CPU_MODE_VNNI_16;
        if (!cpu_has("avx2") || (vnni && !cpu_has("avxvnni")))
            continue;
        struct cpu_kernels *k = &k_modes[m];
        *k = k_modes[CPU_MODE_SCALAR];
        int lanes = mode_lanes16((enum cpu_mode)m) ? 16 : 8;
        if (vnni)
            cpu_vnni_fill(k, lanes);
        else
            cpu_avx2_fill(k, lanes);
        cpu_avx2_ops_fill(k, lanes);
        cpu_mlxq_avx2_fill(k);
        k_can[m] = true;
    }
    /* fast: the default exact table, with the fast matmul where the CPU runs it */
    k_fast_base = default_mode();
    k_modes[CPU_MODE_FAST] = k_modes[k_fast_base];
    if (cpu_has("avx512vnni") && !env_flag("PENSIEVE_NO_AVX512")) {
        /* set here, not in the AVX-512 files: no AVX-512 code runs on a CPU without it */
        k_modes[CPU_MODE_FAST].name = "fast/avx512-vnni";
        k_modes[CPU_MODE_FAST].matmul = cpu_fast_matmul_avx512;
        k_modes[CPU_MODE_FAST].attention = cpu_fast_attention_avx512;
    } else
        k_modes[CPU_MODE_FAST].name = k_fast_base == CPU_MODE_SCALAR ? "fast/scalar" : "fast/avx2";
    k_can[CPU_MODE_FAST] = true;
    for (int m = 0; m < CPU_MODE_COUNT; m++) {
        size_t len = strlen(k_available);
        if (k_can[m] && m != CPU_MODE_FAST)
            snprintf(k_available + len, sizeof(k_available) - len, "%s%s", len ? " " : "",
                     mode_names[m]);
    }
    k_used_mode = default_mode();
    /* PENSIEVE_KERNELS names one mode outright (tests run every mode the CPU can) */
    const char *want = getenv("PENSIEVE_KERNELS");
    if (want && *want) {
        int m = 0;
        while (m < CPU_MODE_COUNT && strcmp(want, mode_names[m]) != 0)
            m++;
        if (m == CPU_MODE_COUNT)
            snprintf(k_env_error, sizeof(k_env_error),
                     "PENSIEVE_KERNELS='%s' is not a kernel mode (scalar, avx2/8, avx2/16, "
                     "avx2+vnni/8, avx2+vnni/16, fast)", want);
        else if (!k_can[m])
            snprintf(k_env_error, sizeof(k_env_error),
                     "PENSIEVE_KERNELS='%s': this CPU cannot run it (it lacks %s)", want,
                     m >= CPU_MODE_VNNI_8 && cpu_has("avx2") ? "AVX-VNNI" : "AVX2, FMA or F16C");
        else
            k_used_mode = (enum cpu_mode)m;
    }
    k_proc_mode = k_used_mode;
    k_used = &k_modes[k_used_mode];
}

const struct cpu_kernels *cpu_kernels_get(void)
{
    pthread_once(&k_once, kernels_init);
    return k_used;
}

const struct cpu_kernels *cpu_kernels_ref(void)
{
    pthread_once(&k_once, kernels_init);
    return &k_modes[CPU_MODE_SCALAR];
}

const struct cpu_kernels *cpu_kernels_best(void)
{
    pthread_once(&k_once, kernels_init);
    enum cpu_mode m = default_mode();
    if (m == CPU_MODE_SCALAR && k_can[CPU_MODE_AVX2_8]) /* ignoring PENSIEVE_NO_SIMD */
        m = k_can[CPU_MODE_VNNI_8] ? CPU_MODE_VNNI_8 : CPU_MODE_AVX2_8;
    return &k_modes[m];
}

const struct cpu_kernels *cpu_kernels_mode(enum cpu_mode m)
{
    pthread_once(&k_once, kernels_init);
    return m < CPU_MODE_COUNT && k_can[m] ? &k_modes[m] : NULL;
}

const char *cpu_mode_name(enum cpu_mode m)
{
    return m < CPU_MODE_COUNT ? mode_names[m] : "?";
}

const char *cpu_modes_available(void)
{
    pthread_once(&k_once, kernels_init);
    return k_available;
}

const char *cpu_kernels_env_error(void)
{
    pthread_once(&k_once, kernels_init);
    return k_env_error[0] ? k_env_error : NULL;
}

void cpu_kernels_select(bool scalar)
{
    pthread_once(&k_once, kernels_init);
    k_used_mode = scalar ? CPU_MODE_SCALAR : k_proc_mode;
    k_used = &k_modes[k_used_mode];
}

bool cpu_kernels_use(enum cpu_mode m)
{
    pthread_once(&k_once, kernels_init);
    if (m >= CPU_MODE_COUNT || !k_can[m])
        return false;
    k_used_mode = m;
    k_used = &k_modes[m];
    return true;
}

int cpu_llama_lanes(void)
{
    pthread_once(&k_once, kernels_init);
    if (k_used_mode == CPU_MODE_SCALAR)
        return native_lanes16() ? 16 : 8;
    return mode_lanes16(k_used_mode) ? 16 : 8;
}

bool cpu_simd_active(void)
{
    return cpu_kernels_get() != &k_modes[CPU_MODE_SCALAR];
}

const char *cpu_features(void)
{
    pthread_once(&k_once, kernels_init);
    return k_used_mode == CPU_MODE_FAST ? k_used->name : mode_names[k_used_mode];
}

const char *cpu_fast_tier(void)
{
    pthread_once(&k_once, kernels_init);
    return k_modes[CPU_MODE_FAST].name;
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
    default: return pv_type_mlx_bits(type) ? PV_TYPE_F32 : PV_TYPE_COUNT;
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
