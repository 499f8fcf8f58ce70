/*
 * kernels.cuh - the CUDA kernels of the backend (compute/cuda/backend_cuda.cu includes
 * it once): dequantization of every weight type into 32-element chunks, mat-vec for up
 * to 8 tokens with the weights dequantized in registers, dequantize-to-fp16 for the
 * cuBLAS GEMM of prompts, norms, RoPE, activations, the KV store and split-K attention
 * over the block tables.
 *
 * Each kernel states its math in one line; each one's scalar oracle is in compute/cpu/.
 * Block layouts come from compute/quant.h, shared with the CPU.
 */
#ifndef PV_CUDA_KERNELS_CUH
#define PV_CUDA_KERNELS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

extern "C" {
#include "compute/compute.h"
#include "compute/quant.h"
}

/* dynamic shared memory (tests/tools/cuda_emu_check.cpp, which runs these kernels on
   CPU threads, gives each block its own buffer instead) */
#ifndef PV_DYN_SHARED
#define PV_DYN_SHARED(T, name) extern __shared__ T name[]
#endif

#define MV_MAX_TOKENS 8   /* mat-vec handles up to this many tokens per launch */
#define ATT_TILE 32       /* positions per attention tile */
#define ATT_ROWS 64       /* most query rows (tokens x heads of a group) per block */
#define ATT_THREADS 128

/* deq32 and its helpers are host code too: tests/tools/cuda_dequant_check.cu runs them on
   the CPU against the scalar dequantization, no GPU needed */
__host__ __device__ __forceinline__ float h2f(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

__host__ __device__ __forceinline__ float bf2f(uint16_t h)
{
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

/* Elements per block and bytes per block of each weight type. */
__host__ __device__ constexpr int type_blck(int T)
{
    return T == PV_TYPE_F32 || T == PV_TYPE_F16 || T == PV_TYPE_BF16 ? 32
           : T >= PV_TYPE_Q2_K && T <= PV_TYPE_Q6_K                  ? 256
                                                                      : 32;
}

__host__ __device__ constexpr int type_bytes(int T)
{
    return T == PV_TYPE_F32    ? 128
           : T == PV_TYPE_F16  ? 64
           : T == PV_TYPE_BF16 ? 64
           : T == PV_TYPE_Q4_0 ? 18
           : T == PV_TYPE_Q4_1 ? 20
           : T == PV_TYPE_Q5_0 ? 22
           : T == PV_TYPE_Q5_1 ? 24
           : T == PV_TYPE_Q8_0 ? 34
           : T == PV_TYPE_Q2_K ? 84
           : T == PV_TYPE_Q3_K ? 110
           : T == PV_TYPE_Q4_K ? 144
           : T == PV_TYPE_Q5_K ? 176
           : T == PV_TYPE_Q6_K ? 210
                               : 0;
}

/* 6-bit scale and min j of a Q4_K / Q5_K block (cpu_scale_min_k4) */
__host__ __device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, float *sc, float *m)
{
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* y[0..32) = elements [32c, 32c + 32) of a row of type T (the formulas of quant.h) */
template <int T>
__host__ __device__ __forceinline__ void deq32(const uint8_t *row, int c, float *y)
{
    constexpr int cpb = type_blck(T) / 32; /* chunks per block */
    const uint8_t *blk = row + (size_t)(c / cpb) * type_bytes(T);
    const int sub = c % cpb;
    if (T == PV_TYPE_F32) {
        const float4 *p = (const float4 *)blk;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = p[i];
            y[4 * i] = v.x, y[4 * i + 1] = v.y, y[4 * i + 2] = v.z, y[4 * i + 3] = v.w;
        }
    } else if (T == PV_TYPE_F16 || T == PV_TYPE_BF16) {
        const uint4 *p = (const uint4 *)blk;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v = p[i];
            uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint16_t lo = (uint16_t)(w[j] & 0xFFFF), hi = (uint16_t)(w[j] >> 16);
                y[8 * i + 2 * j] = T == PV_TYPE_F16 ? h2f(lo) : bf2f(lo);
                y[8 * i + 2 * j + 1] = T == PV_TYPE_F16 ? h2f(hi) : bf2f(hi);
            }
        }
    } else if (T == PV_TYPE_Q4_0) {
        const pv_block_q4_0 *b = (const pv_block_q4_0 *)blk;
        float d = h2f(b->d);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b->qs[j] & 0xF) - 8) * d;
            y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    } else if (T == PV_TYPE_Q4_1) {
        const pv_block_q4_1 *b = (const pv_block_q4_1 *)blk;
        float d = h2f(b->d), m = h2f(b->m);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b->qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
        }
    } else if (T == PV_TYPE_Q5_0 || T == PV_TYPE_Q5_1) {
        const uint8_t *qh8, *qs;
        float d, m = 0.0f;
        if (T == PV_TYPE_Q5_0) {
            const pv_block_q5_0 *b = (const pv_block_q5_0 *)blk;
            d = h2f(b->d), qh8 = b->qh, qs = b->qs;
        } else {
            const pv_block_q5_1 *b = (const pv_block_q5_1 *)blk;
            d = h2f(b->d), m = h2f(b->m), qh8 = b->qh, qs = b->qs;
        }
        uint32_t qh = qh8[0] | (uint32_t)qh8[1] << 8 | (uint32_t)qh8[2] << 16 |
                      (uint32_t)qh8[3] << 24;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            int q0 = (qs[j] & 0xF) | h0, q1 = (qs[j] >> 4) | h1;
            if (T == PV_TYPE_Q5_0) {
                y[j] = (float)(q0 - 16) * d;
                y[j + 16] = (float)(q1 - 16) * d;
            } else {
                y[j] = (float)q0 * d + m;
                y[j + 16] = (float)q1 * d + m;
            }
        }
    } else if (T == PV_TYPE_Q8_0) {
        const pv_block_q8_0 *b = (const pv_block_q8_0 *)blk;
        float d = h2f(b->d);
#pragma unroll
        for (int j = 0; j < 32; j++)
            y[j] = (float)b->qs[j] * d;
    } else if (T == PV_TYPE_Q2_K) {
        const pv_block_q2_K *b = (const pv_block_q2_K *)blk;
        float d = h2f(b->d), dmin = h2f(b->dmin);
        const int h = sub / 4, shift = 2 * (sub % 4);
        const uint8_t *q = b->qs + 32 * h;
#pragma unroll
        for (int g = 0; g < 2; g++) {
            uint8_t sc = b->scales[2 * sub + g];
            float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int l = 0; l < 16; l++)
                y[16 * g + l] = dl * (float)((q[16 * g + l] >> shift) & 3) - ml;
        }
    } else if (T == PV_TYPE_Q3_K) {
        const pv_block_q3_K *b = (const pv_block_q3_K *)blk;
        float d = h2f(b->d);
        const int h = sub / 4, shift = 2 * (sub % 4);
        const uint8_t bit = (uint8_t)(1u << sub);
        const uint8_t *q = b->qs + 32 * h, *s = b->scales;
#pragma unroll
        for (int g = 0; g < 2; g++) {
            int i = 2 * sub + g;
            int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
            int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
            float dl = d * (float)((lo | hi << 4) - 32);
#pragma unroll
            for (int l = 0; l < 16; l++) {
                int v = ((q[16 * g + l] >> shift) & 3) - ((b->hmask[16 * g + l] & bit) ? 0 : 4);
                y[16 * g + l] = dl * (float)v;
            }
        }
    } else if (T == PV_TYPE_Q4_K || T == PV_TYPE_Q5_K) {
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        if (T == PV_TYPE_Q4_K) {
            const pv_block_q4_K *b = (const pv_block_q4_K *)blk;
            d = h2f(b->d), dmin = h2f(b->dmin), scales = b->scales, qs = b->qs;
        } else {
            const pv_block_q5_K *b = (const pv_block_q5_K *)blk;
            d = h2f(b->d), dmin = h2f(b->dmin), scales = b->scales, qs = b->qs, qh = b->qh;
        }
        float sc, m;
        scale_min_k4(sub, scales, &sc, &m);
        const float d1 = d * sc, m1 = dmin * m;
        const uint8_t *q = qs + 32 * (sub / 2);
        const int shift = 4 * (sub & 1);
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> shift) & 0xF;
            if (T == PV_TYPE_Q5_K)
                v |= ((qh[l] >> sub) & 1) << 4;
            y[l] = d1 * (float)v - m1;
        }
    } else if (T == PV_TYPE_Q6_K) {
        const pv_block_q6_K *b = (const pv_block_q6_K *)blk;
        float d = h2f(b->d);
        const int h = sub / 4, part = sub % 4;
        const uint8_t *ql = b->ql + 64 * h + 32 * (part & 1), *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h + 2 * part;
        const float d0 = d * (float)sc[0], d1 = d * (float)sc[1];
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int lo = part >= 2 ? ql[l] >> 4 : ql[l] & 0xF;
            int q = (lo | ((qh[l] >> (2 * part)) & 3) << 4) - 32;
            y[l] = (l < 16 ? d0 : d1) * (float)q;
        }
    }
}

/* y[t][r] = sum_k W[r][k] x[t][k], NT tokens, one warp per row, dequantized in registers */
template <int T, int NT>
static __global__ void __launch_bounds__(128) k_matvec(const uint8_t *__restrict__ W, size_t row_bytes,
                                                int K, int R, const float *__restrict__ x,
                                                float *__restrict__ y, int ldy)
{
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * 4 + (threadIdx.x >> 5);
    if (r >= R)
        return;
    const uint8_t *row = W + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    const int n_chunks = K / 32;
    for (int c = lane; c < n_chunks; c += 32) {
        float w[32];
        deq32<T>(row, c, w);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 *xp = (const float4 *)(x + (size_t)t * K + 32 * c);
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float4 v = __ldg(xp + i);
                s = fmaf(w[4 * i], v.x, s);
                s = fmaf(w[4 * i + 1], v.y, s);
                s = fmaf(w[4 * i + 2], v.z, s);
                s = fmaf(w[4 * i + 3], v.w, s);
            }
            acc[t] += s;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float s = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            y[(size_t)t * ldy + r] = s;
    }
}

/* Wh[r][k] = fp16(W[r0 + r][k]) for r < R: one thread per 32-element chunk */
template <int T>
static __global__ void k_dequant_f16(const uint8_t *__restrict__ W, size_t row_bytes, int K, int R,
                              __half *__restrict__ out)
{
    const int n_chunks = K / 32;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)R * n_chunks)
        return;
    const int r = (int)(i / n_chunks), c = (int)(i % n_chunks);
    float w[32];
    deq32<T>(W + (size_t)r * row_bytes, c, w);
    __half2 *o = (__half2 *)(out + (size_t)r * K + 32 * c);
#pragma unroll
    for (int j = 0; j < 16; j++)
        o[j] = __floats2half2_rn(w[2 * j], w[2 * j + 1]);
}

/* y[t] = row ids[t] of W * scale, f32 */
template <int T>
static __global__ void k_get_rows(const uint8_t *__restrict__ W, size_t row_bytes, int K,
                           const int32_t *__restrict__ ids, float scale, float *__restrict__ y)
{
    const int t = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= K / 32)
        return;
    float w[32];
    deq32<T>(W + (size_t)ids[t] * row_bytes, c, w);
    float *o = y + (size_t)t * K + 32 * c;
#pragma unroll
    for (int j = 0; j < 32; j++)
        o[j] = w[j] * scale;
}

/* h[i] = fp16(x[i]) */
static __global__ void k_f32_to_f16(const float *__restrict__ x, __half *__restrict__ h, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        h[i] = __float2half_rn(x[i]);
}

__device__ __forceinline__ float block_sum(float v, float *red)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++)
        s += red[i];
    __syncthreads();
    return s;
}

/* y = x / sqrt(mean(x^2) + eps) * w, one block per row (t, h) */
static __global__ void k_rmsnorm(const float *__restrict__ x, const float *__restrict__ w, float *y,
                          int n_sub, size_t tok_stride, size_t sub_stride, int dim, float eps)
{
    __shared__ float red[32];
    const int t = blockIdx.x / n_sub, h = blockIdx.x % n_sub;
    const float *xr = x + (size_t)t * tok_stride + (size_t)h * sub_stride;
    float *yr = y + (size_t)t * tok_stride + (size_t)h * sub_stride;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    const float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = xr[i] * scale * (w ? w[i] : 1.0f);
}

/* rotate pair i of head h of row t by theta = fs * pos * base^(-2i/n_rot) / ff[i] */
static __global__ void k_rope(float *x, size_t stride, const int32_t *__restrict__ pos, int n_heads,
                       int head_dim, int n_rot, float theta_scale, float freq_scale,
                       const float *__restrict__ ff, bool neox)
{
    const int t = blockIdx.y, half = n_rot / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_heads * half)
        return;
    const int h = idx / half, i = idx % half;
    float tb = (float)pos[t];
    for (int k = 0; k < i; k++)
        tb *= theta_scale;
    const float theta = freq_scale * (tb / (ff ? ff[i] : 1.0f));
    const float c = cosf(theta), s = sinf(theta);
    float *v = x + (size_t)t * stride + (size_t)h * head_dim;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float a = v[i0], b = v[i1];
    v[i0] = fmaf(a, c, -(b * s));
    v[i1] = fmaf(a, s, b * c);
}

/* gate[i] = act(gate[i]) * up[i]: GELU-tanh at the fp16 grid (as the CPU's table) or SiLU */
static __global__ void k_glu(float *gate, const float *__restrict__ up, size_t n, bool gelu)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float v = gate[i], a;
    if (gelu) {
        if (v <= -10.0f) {
            a = 0.0f;
        } else if (v >= 10.0f) {
            a = v;
        } else {
            float u = __half2float(__float2half_rn(v));
            float th = tanhf(0.7978845608f * u * fmaf(0.044715f * u, u, 1.0f));
            a = __half2float(__float2half_rn(0.5f * u * (1.0f + th)));
        }
    } else {
        a = v / (1.0f + expf(-v));
    }
    gate[i] = a * up[i];
}

/* x[i] += y[i] */
static __global__ void k_add(float *x, const float *__restrict__ y, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] += y[i];
}

/* x[t][i] += b[i] */
static __global__ void k_add_bias(float *x, size_t stride, const float *__restrict__ b, int dim)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < dim)
        x[(size_t)blockIdx.y * stride + i] += b[i];
}

/* cell cells[t] of base = row t of src, F16 or F32 */
static __global__ void k_kv_store(const float *__restrict__ src, size_t stride, int dim, char *base,
                           size_t row_bytes, const uint32_t *__restrict__ cells, bool f16)
{
    const int t = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim)
        return;
    char *row = base + (size_t)cells[t] * row_bytes;
    float v = src[(size_t)t * stride + i];
    if (f16)
        ((__half *)row)[i] = __float2half_rn(v);
    else
        ((float *)row)[i] = v;
}

/*
 * A tile of query tokens that attend over the same sequence: tokens [t0, t0 + n) of the
 * step, consecutive positions, one block table (the first token's).
 */
struct att_tile {
    int t0, n;
};

struct att_args {
    const float *q;
    size_t q_stride;
    const int32_t *pos;
    const uint32_t *tab;     /* block ids of all tables, concatenated */
    const int32_t *tab_off;  /* [n] each token's table in tab */
    const att_tile *tiles;
    uint32_t block_shift;
    const char *k, *v;
    size_t k_row_bytes, v_row_bytes;
    int n, n_head, n_head_kv, hd_k, hd_v, group;
    uint32_t n_swa;
    float q_scale, scale;
    int n_split;
    float *part;             /* [n_split][n][n_head][2 + hd_v]: m, l, o */
};

template <bool F16>
__device__ __forceinline__ float kv_elt(const char *row, int i)
{
    return F16 ? __half2float(((const __half *)row)[i]) : ((const float *)row)[i];
}

/*
 * Split-K attention: block (tile, kv head, split) takes its share of the tile's
 * positions in tiles of 32: s = (q . k) * scale, online softmax, o += p v; the partial
 * (m, l, o) of each row goes to part, and k_att_combine sums the splits.
 */
template <bool F16, int NCOL>
static __global__ void __launch_bounds__(ATT_THREADS) k_attention(att_args a)
{
    PV_DYN_SHARED(float, sm);
    const att_tile tile = a.tiles[blockIdx.x];
    const int hkv = blockIdx.y, split = blockIdx.z;
    const int G = a.group, R = tile.n * G;
    const int hdk = a.hd_k, hdv = a.hd_v, kst = hdk + 1, vst = hdv + 1;
    float *Qs = sm;                          /* [R][hdk] */
    float *Ks = Qs + ATT_ROWS * hdk;         /* [32][hdk + 1] */
    float *Vs = Ks + ATT_TILE * kst;         /* [32][hdv + 1] */
    float *S = Vs + ATT_TILE * vst;          /* [R][33] */
    float *Mr = S + ATT_ROWS * 33;           /* [R] running max */
    float *Lr = Mr + ATT_ROWS;               /* [R] running sum */
    float *Al = Lr + ATT_ROWS;               /* [R] rescale of this tile */
    const int tid = threadIdx.x;

    /* range of the tile: [lo, hi], per token [lo_t, pos_t] */
    const int pos_last = a.pos[tile.t0 + tile.n - 1];
    int lo = 0;
    if (a.n_swa) {
        int l0 = a.pos[tile.t0] + 1 - (int)a.n_swa;
        lo = l0 > 0 ? l0 : 0;
    }
    const int len = pos_last + 1 - lo;
    int per = (len + a.n_split - 1) / a.n_split;
    per = (per + ATT_TILE - 1) / ATT_TILE * ATT_TILE;
    const int j_begin = lo + split * per;
    const int j_end = min(pos_last + 1, j_begin + per);

    for (int i = tid; i < R * hdk; i += ATT_THREADS) {
        int r = i / hdk, d = i % hdk;
        int tq = r / G, g = r % G;
        int h = hkv * G + g;
        Qs[i] = a.q[(size_t)(tile.t0 + tq) * a.q_stride + (size_t)h * hdk + d] * a.q_scale;
    }
    for (int r = tid; r < R; r += ATT_THREADS) {
        Mr[r] = -1e30f;
        Lr[r] = 0.0f;
    }
    float acc[ATT_ROWS][NCOL];
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++)
#pragma unroll
        for (int c = 0; c < NCOL; c++)
            acc[r][c] = 0.0f;
    const uint32_t *tab = a.tab + a.tab_off[tile.t0];
    const uint32_t mask = (1u << a.block_shift) - 1;
    __syncthreads();

    for (int j0 = j_begin; j0 < j_end; j0 += ATT_TILE) {
        const int nj = min(ATT_TILE, j_end - j0);
        /* K and V rows of positions j0.. into shared memory */
        for (int i = tid; i < ATT_TILE * hdk; i += ATT_THREADS) {
            int jj = i / hdk, d = i % hdk;
            float kv = 0.0f;
            if (jj < nj) {
                uint32_t j = (uint32_t)(j0 + jj);
                size_t cell = ((size_t)tab[j >> a.block_shift] << a.block_shift) | (j & mask);
                kv = kv_elt<F16>(a.k + cell * a.k_row_bytes, hkv * hdk + d);
            }
            Ks[jj * kst + d] = kv;
        }
        for (int i = tid; i < ATT_TILE * hdv; i += ATT_THREADS) {
            int jj = i / hdv, d = i % hdv;
            float vv = 0.0f;
            if (jj < nj) {
                uint32_t j = (uint32_t)(j0 + jj);
                size_t cell = ((size_t)tab[j >> a.block_shift] << a.block_shift) | (j & mask);
                vv = kv_elt<F16>(a.v + cell * a.v_row_bytes, hkv * hdv + d);
            }
            Vs[jj * vst + d] = vv;
        }
        __syncthreads();
        /* scores, masked outside [lo_t, pos_t] */
        for (int i = tid; i < R * ATT_TILE; i += ATT_THREADS) {
            int r = i / ATT_TILE, jj = i % ATT_TILE;
            int tq = r / G;
            int pt = a.pos[tile.t0 + tq];
            int lt = a.n_swa ? pt + 1 - (int)a.n_swa : 0;
            int j = j0 + jj;
            float s = -INFINITY;
            if (jj < nj && j <= pt && j >= lt) {
                const float *qr = Qs + r * hdk, *kr = Ks + jj * kst;
                float d0 = 0.0f;
                for (int d = 0; d < hdk; d++)
                    d0 = fmaf(qr[d], kr[d], d0);
                s = d0 * a.scale;
            }
            S[r * 33 + jj] = s;
        }
        __syncthreads();
        /* online softmax: one warp per row */
        {
            const int w = tid >> 5, lane = tid & 31;
            for (int r = w; r < R; r += ATT_THREADS / 32) {
                float s = S[r * 33 + lane];
                float mx = s;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                float m_old = Mr[r], m_new = fmaxf(m_old, mx);
                float p = expf(s - m_new);
                float sum = p;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    sum += __shfl_xor_sync(0xffffffffu, sum, o);
                S[r * 33 + lane] = p;
                __syncwarp();
                if (lane == 0) {
                    float al = expf(m_old - m_new);
                    Al[r] = al;
                    Lr[r] = Lr[r] * al + sum;
                    Mr[r] = m_new;
                }
            }
        }
        __syncthreads();
        /* o[r][d] = o[r][d] * alpha[r] + sum_j p[r][j] v[j][d] */
#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            if (r < R) {
                const float al = Al[r];
#pragma unroll
                for (int c = 0; c < NCOL; c++) {
                    const int d = tid + c * ATT_THREADS;
                    float o = acc[r][c] * al;
                    if (d < hdv)
                        for (int jj = 0; jj < nj; jj++)
                            o = fmaf(S[r * 33 + jj], Vs[jj * vst + d], o);
                    acc[r][c] = o;
                }
            }
        }
        __syncthreads();
    }
    /* partial results of this split */
#pragma unroll
    for (int r = 0; r < ATT_ROWS; r++) {
        if (r < R) {
            const int tq = r / G, g = r % G;
            const int t = tile.t0 + tq, h = hkv * G + g;
            float *p = a.part + (((size_t)split * a.n + t) * a.n_head + h) * (2 + hdv);
            if (tid == 0) {
                p[0] = Mr[r];
                p[1] = Lr[r];
            }
#pragma unroll
            for (int c = 0; c < NCOL; c++) {
                const int d = tid + c * ATT_THREADS;
                if (d < hdv)
                    p[2 + d] = acc[r][c];
            }
        }
    }
}

/* out[t][h] = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M): one block per (t, h) */
static __global__ void k_att_combine(const float *__restrict__ part, int n_split, int n, int n_head,
                              int hd_v, float *out)
{
    const int t = blockIdx.x / n_head, h = blockIdx.x % n_head;
    const size_t st = (size_t)n * n_head * (2 + hd_v);
    const float *p0 = part + ((size_t)t * n_head + h) * (2 + hd_v);
    float M = -1e30f;
    for (int s = 0; s < n_split; s++)
        M = fmaxf(M, p0[s * st]);
    float L = 0.0f;
    for (int s = 0; s < n_split; s++)
        L += p0[s * st + 1] * expf(p0[s * st] - M);
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < hd_v; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; s++)
            o += p0[s * st + 2 + d] * expf(p0[s * st] - M);
        out[(size_t)t * n_head * hd_v + (size_t)h * hd_v + d] = o * inv;
    }
}

#endif /* PV_CUDA_KERNELS_CUH */
