/*
 * ops.c - the element-wise and per-row CPU ops of the forward pass: RMSNorm, RoPE,
 * gated activations (GELU-tanh, SiLU), softmax, and the f16 helpers attention uses
 * over an f16 KV cache. Formulas and accumulation precision follow ggml's CPU ops
 * (sum of squares in double, softmax sum in double).
 */
#include <math.h>

#include "compute/cpu/cpu.h"
#include "util/util.h"

/* y = x / sqrt(mean(x^2) + eps) * w */
void cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(sum / n) + eps);
    if (w) {
        for (int i = 0; i < n; i++)
            y[i] = x[i] * scale * w[i];
    } else {
        for (int i = 0; i < n; i++)
            y[i] = x[i] * scale;
    }
}

void cpu_rmsnorm_rows(const float *x, const float *w, float *y, int n_rows, int n, float eps)
{
    for (int r = 0; r < n_rows; r++)
        cpu_rmsnorm(x + (size_t)r * (size_t)n, w, y + (size_t)r * (size_t)n, n, eps);
}

/*
 * (a, b) -> (a cos - b sin, a sin + b cos), theta_i = freq_scale * pos * base^(-2i/n_rot) / ff[i].
 * theta_i is built by repeated multiplication, and the rotation kernel fuses the first
 * product of each pair (fma(a, c, -b s), fma(a, s, b c)): llama.cpp's arithmetic, bit
 * for bit, which matters to a model that amplifies last-bit differences.
 */
void cpu_rope(float *x, int n_heads, int head_dim, int n_rot, int32_t pos, float base,
              float freq_scale, const float *ff, bool neox)
{
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    const int half = n_rot / 2;
    float cs[2 * CPU_ROPE_MAX_HALF];
    float theta_base = (float)pos;
    PV_ASSERT(half <= CPU_ROPE_MAX_HALF);
    for (int i = 0; i < half; i++, theta_base *= theta_scale) {
        float theta = freq_scale * (theta_base / (ff ? ff[i] : 1.0f));
        cs[2 * i] = cosf(theta);
        cs[2 * i + 1] = sinf(theta);
    }
    cpu_kernels_get()->rope_rotate(x, n_heads, head_dim, half, cs, neox);
}

/* rotate pair i of each head by (cs[2i], cs[2i+1]): elements (i, i + half) for NEOX, else
 * (2i, 2i + 1) */
void cpu_rope_rotate_ref(float *x, int n_heads, int head_dim, int half, const float *cs, bool neox)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * (size_t)head_dim;
        for (int i = 0; i < half; i++) {
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float a = v[i0], b = v[i1], c = cs[2 * i], s = cs[2 * i + 1];
            v[i0] = fmaf(a, c, -(b * s));
            v[i1] = fmaf(a, s, b * c);
        }
    }
}

/*
 * GELU is read from a table indexed by x rounded to fp16 and holding fp16 results, the
 * precision llama.cpp's CPU backend computes it in (ggml's GELU_FP16): a model like
 * Gemma 3 amplifies last-bit differences here into visible logit differences.
 */
float cpu_gelu_table[1 << 16];

void cpu_gelu_table_fill(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++) {
        float v = pv_fp16_to_f32((uint16_t)h);
        /* 1 + 0.044715 v^2 fused as llama.cpp's build computes it: the same table */
        float t = tanhf(0.7978845608f * v * fmaf(0.044715f * v, v, 1.0f));
        cpu_gelu_table[h] = pv_fp16_to_f32(pv_f32_to_fp16(0.5f * v * (1.0f + t)));
    }
}

/* x = gelu_tanh(x) * g: 0 for x <= -10, x for x >= 10, else the table at fp16(x) */
void cpu_gelu_mul_ref(float *x, const float *g, int n)
{
    for (int i = 0; i < n; i++) {
        float v = x[i];
        float y = v <= -10.0f ? 0.0f : v >= 10.0f ? v : cpu_gelu_table[pv_f32_to_fp16(v)];
        x[i] = y * g[i];
    }
}

/* x = x / (1 + exp(-x)) * g */
void cpu_silu_mul_ref(float *x, const float *g, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i])) * g[i];
}

/* x = exp(x - max) / sum */
void cpu_softmax_ref(float *x, int n)
{
    if (n <= 0)
        return;
    float max = x[0];
    for (int i = 1; i < n; i++)
        max = fmaxf(max, x[i]);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void cpu_gelu_mul(float *x, const float *g, int n)
{
    cpu_kernels_get()->gelu_mul(x, g, n);
}

void cpu_silu_mul(float *x, const float *g, int n)
{
    cpu_kernels_get()->silu_mul(x, g, n);
}

void cpu_softmax(float *x, int n)
{
    if (n > 0)
        cpu_kernels_get()->softmax(x, n);
}

float cpu_dot_f32_f16(const float *x, const uint16_t *h, int n)
{
    return cpu_kernels_get()->dot_f32_f16(x, h, n);
}

void cpu_axpy_f16(float *y, float a, const uint16_t *h, int n)
{
    cpu_kernels_get()->axpy_f16(y, a, h, n);
}

void cpu_f32_to_f16_row(const float *x, uint16_t *h, int n)
{
    cpu_kernels_get()->quantize[PV_TYPE_F16](x, h, n);
}

void cpu_f16_to_f32_row(const uint16_t *h, float *x, int n)
{
    cpu_kernels_get()->f16_to_f32(h, x, n);
}
