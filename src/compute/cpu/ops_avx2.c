/*
 * ops_avx2.c - AVX2 + FMA versions of the element-wise ops: the gated GELU-tanh (through
 * the fp16 table) and SiLU activations, softmax and the RoPE rotation, laid over the
 * scalar table by cpu_avx2_ops_fill().
 *
 * exp is ggml's vectorized expf (compute/expf_avx2.h), so that SiLU gives llama.cpp's
 * bits; softmax uses it too.
 */
#include <immintrin.h>

#include "compute/cpu/cpu.h"
#include "compute/expf_avx2.h"

/* x = gelu_tanh(x) * g through the fp16 table, exactly as cpu_gelu_mul_ref */
static void gelu_mul(float *x, const float *g, int n)
{
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 y = _mm256_i32gather_ps(cpu_gelu_table, _mm256_cvtepu16_epi32(h), 4);
        y = _mm256_blendv_ps(y, v, _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
        y = _mm256_andnot_ps(_mm256_cmp_ps(v, lo, _CMP_LE_OQ), y);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(y, _mm256_loadu_ps(g + i)));
    }
    if (i < n)
        cpu_gelu_mul_ref(x + i, g + i, n - i);
}

/* x = x / (1 + exp(-x)) * g, as ggml's SwiGLU in a vector width of `lanes` (16 where
 * llama.cpp's build has AVX-512, else 8): the exp of expf_avx2.h, the last n % lanes
 * elements with libm's expf */
static inline void silu_mul_lanes(float *x, const float *g, int n, int lanes)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + lanes <= n; i += lanes)
        for (int h = i; h < i + lanes; h += 8) {
            __m256 v = _mm256_loadu_ps(x + h);
            __m256 y = _mm256_div_ps(v, _mm256_add_ps(one, pv_expf_ps(_mm256_sub_ps(zero, v), lanes)));
            _mm256_storeu_ps(x + h, _mm256_mul_ps(y, _mm256_loadu_ps(g + h)));
        }
    if (i < n)
        cpu_silu_mul_ref(x + i, g + i, n - i);
}

static void silu_mul8(float *x, const float *g, int n)
{
    silu_mul_lanes(x, g, n, 8);
}

static void silu_mul16(float *x, const float *g, int n)
{
    silu_mul_lanes(x, g, n, 16);
}

/* x = exp(x - max) / sum, the sum in double as the scalar version */
static void softmax(float *x, int n)
{
    float max = x[0];
    int i = 0;
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8)
            m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        max = _mm_cvtss_f32(h);
    }
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    __m256 vmax = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = pv_expf_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax), 8);
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; i++) {
        __m256 e = pv_expf_ps(_mm256_set1_ps(x[i] - max), 8);
        x[i] = _mm256_cvtss_f32(e);
        sum += x[i];
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= (float)(1.0 / sum);
}

/* cpu_rope_rotate_ref with 8 pairs at a time for NEOX (the halves are contiguous) */
static void rope_rotate(float *x, int n_heads, int head_dim, int half, const float *cs, bool neox)
{
    if (!neox || half % 8 != 0) {
        cpu_rope_rotate_ref(x, n_heads, head_dim, half, cs, neox);
        return;
    }
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (int i = 0; i < half; i += 8) {
        __m256 c = _mm256_i32gather_ps(cs + 2 * i, even, 4);
        __m256 s = _mm256_i32gather_ps(cs + 2 * i + 1, even, 4);
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * (size_t)head_dim + i;
            __m256 a = _mm256_loadu_ps(v), b = _mm256_loadu_ps(v + half);
            _mm256_storeu_ps(v, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
            _mm256_storeu_ps(v + half, _mm256_fmadd_ps(a, s, _mm256_mul_ps(b, c)));
        }
    }
}

void cpu_avx2_ops_fill(struct cpu_kernels *k, int lanes)
{
    k->rope_rotate = rope_rotate;
    k->gelu_mul = gelu_mul;
    k->silu_mul = lanes == 16 ? silu_mul16 : silu_mul8;
    k->softmax = softmax;
}
