/*
 * cuda_emu_check.cpp - the CUDA backend's kernels (compute/cuda/kernels.cuh) run on CPU
 * threads, against the CPU backend, on a machine without a GPU.
 *
 * A thin emulation of the CUDA execution model: each block of a launch runs on its own
 * std::threads (one per CUDA thread), __syncthreads is a barrier of the block, warp
 * shuffles exchange through a per-warp slot array between two barriers of the warp, and
 * blocks run one after another (so static __shared__ arrays are the block's). It checks
 * the kernels' logic (indexing, tiling, masking, online softmax, split combine,
 * reductions), not their speed or the hardware's memory model. Built by `make cuda`
 * (g++ with CUDA's headers, no nvcc code path); tests/compute/test_cuda.py runs it.
 *
 * Checks (relative L2 error against the CPU, NaN never passes): attention over block
 * tables (GQA, sliding window, decode tokens and a prompt tile, 1 to 3 splits) 1e-4 with
 * an F32 cache, 1e-3 with F16 (the CPU rounds q and the probabilities to fp16 there); mat-vec of 1, 2 and 8 tokens on Q4_K and Q8_0 rows against float64 over
 * the CPU's dequantization 1e-5; rmsnorm 1e-5; RoPE 1e-5; get_rows 1e-6; dequantize to
 * fp16 1e-3; SiLU 1e-5, GELU 1e-4 (the CPU's fp16-grid table); kv_store and add_bias exact.
 */
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <cuda_fp16.h>
#include <vector_types.h>

/* ---- the emulation layer ---- */
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct emu_dim { unsigned x = 0, y = 0, z = 0; };
static thread_local emu_dim threadIdx, blockIdx;
static emu_dim blockDim, gridDim;
static thread_local std::barrier<> *emu_block_bar;
static thread_local std::barrier<> *emu_warp_bar;
static thread_local float *emu_warp_slots;
static float *emu_dyn_smem;
#define PV_DYN_SHARED(T, name) T *name = (T *)emu_dyn_smem
#define __syncthreads() emu_block_bar->arrive_and_wait()
#define __syncwarp() emu_warp_bar->arrive_and_wait()
#define __ldg(p) (*(p))
using std::max;
using std::min;

static float __shfl_xor_sync(unsigned, float v, int o)
{
    const int lane = threadIdx.x & 31;
    emu_warp_slots[lane] = v;
    emu_warp_bar->arrive_and_wait();
    float r = emu_warp_slots[lane ^ o];
    emu_warp_bar->arrive_and_wait();
    return r;
}

#include "compute/cuda/kernels.cuh"

extern "C" {
#include "compute/backend.h"
#include "compute/cpu/cpu.h"
}

/* Run body (the kernel call) for every thread of every block of grid. */
static void launch(emu_dim grid, unsigned threads, size_t smem, const std::function<void()> &body)
{
    std::vector<float> dyn(smem / sizeof(float) + 1);
    gridDim = grid;
    blockDim = {threads, 1, 1};
    emu_dyn_smem = dyn.data();
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                std::barrier<> block_bar((std::ptrdiff_t)threads);
                const unsigned n_warps = (threads + 31) / 32;
                std::vector<std::barrier<> *> warp_bars;
                std::vector<float> slots(32 * n_warps);
                for (unsigned w = 0; w < n_warps; w++)
                    warp_bars.push_back(new std::barrier<>((std::ptrdiff_t)min(32u, threads - 32 * w)));
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; t++)
                    ts.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {bx, by, bz};
                        emu_block_bar = &block_bar;
                        emu_warp_bar = warp_bars[t / 32];
                        emu_warp_slots = slots.data() + 32 * (t / 32);
                        body();
                    });
                for (auto &th : ts)
                    th.join();
                for (auto *b : warp_bars)
                    delete b;
            }
}

/* ---- checks ---- */

static int n_pass, n_fail;
static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand()
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double rel_err(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (std::isnan(a[i]) || std::isinf(a[i]))
            return INFINITY;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

static double rel_err_f(const float *a, const float *b, size_t n)
{
    std::vector<double> d(b, b + n);
    return rel_err(a, d.data(), n);
}

static void report(bool ok, const char *what, double e, double bound)
{
    (ok ? n_pass : n_fail)++;
    printf("%s %-58s rel err %.2e (bound %.0e)\n", ok ? "PASS" : "FAIL", what, e, bound);
}

static void check_attention(int n_head, int n_head_kv, int hd, bool f16, uint32_t n_swa,
                            int n_split)
{
    const uint32_t shift = 4, bs = 1u << shift, n_blocks = 96;
    const size_t cells = (size_t)n_blocks * bs, kvd = (size_t)n_head_kv * hd;
    const size_t elt = f16 ? 2 : 4, row = kvd * elt;
    const int n_one = 3, n = n_one + 40, G = n_head / n_head_kv;
    uint32_t tables[4][32], perm[96];
    int32_t pos[64];
    const uint32_t *blocks[64];
    for (uint32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (uint32_t i = n_blocks - 1; i > 0; i--) {
        uint32_t j = (uint32_t)((frand() * 0.5f + 0.5f) * (float)i);
        std::swap(perm[i], perm[j]);
    }
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < 24; b++)
            tables[s][b] = perm[s * 24 + b];
    const int32_t dpos[3] = {37, 200, 5};
    for (int t = 0; t < n; t++) {
        pos[t] = t < n_one ? dpos[t] : 300 + (t - n_one);
        blocks[t] = tables[t < n_one ? t : 3];
    }
    std::vector<unsigned char> kh(cells * row), vh(cells * row);
    for (size_t i = 0; i < cells * kvd; i++) {
        float a = frand(), b = frand();
        if (f16) {
            ((uint16_t *)kh.data())[i] = pv_f32_to_fp16(a);
            ((uint16_t *)vh.data())[i] = pv_f32_to_fp16(b);
        } else {
            ((float *)kh.data())[i] = a;
            ((float *)vh.data())[i] = b;
        }
    }
    const size_t qn = (size_t)n * n_head * hd;
    std::vector<float> q(qn), oc(qn), og(qn, NAN);
    for (auto &v : q)
        v = frand();
    struct compute_attn a = {};
    a.q = q.data(), a.q_stride = (size_t)n_head * hd, a.out = oc.data(), a.n = n;
    a.n_one = n_one, a.pos = pos, a.blocks = blocks, a.block_shift = shift;
    a.k = kh.data(), a.v = vh.data(), a.k_row_bytes = row, a.v_row_bytes = row, a.f16 = f16;
    a.n_head = n_head, a.n_head_kv = n_head_kv, a.hd_k = hd, a.hd_v = hd, a.n_swa = n_swa;
    a.q_scale = 1.0f, a.scale = 1.0f / std::sqrt((float)hd);
    struct compute_backend *c = compute_cpu_new(4, 512, hd, hd, f16);
    c->ops->attention(c, &a);
    compute_cpu_free(c);

    /* what step_begin packs: tables, each token's table offset, query tiles */
    std::vector<uint32_t> tab;
    std::vector<int32_t> tab_off(n);
    for (int s = 0; s < 4; s++) {
        for (int t = 0; t < n; t++)
            if (blocks[t] == tables[s])
                tab_off[t] = (int32_t)tab.size();
        tab.insert(tab.end(), tables[s], tables[s] + 24);
    }
    const int tq_max = std::min(16, ATT_ROWS / G);
    std::vector<att_tile> tiles;
    for (int t = 0; t < n; t++) {
        if (!tiles.empty()) {
            att_tile &p = tiles.back();
            int last = p.t0 + p.n - 1;
            if (p.n < tq_max && blocks[t] == blocks[last] && pos[t] == pos[last] + 1) {
                p.n++;
                continue;
            }
        }
        tiles.push_back({t, 1});
    }
    std::vector<float> part((size_t)n_split * n * n_head * (2 + hd), NAN);
    att_args g = {};
    g.q = q.data(), g.q_stride = a.q_stride, g.pos = pos, g.tab = tab.data();
    g.tab_off = tab_off.data(), g.tiles = tiles.data(), g.block_shift = shift;
    g.k = (const char *)kh.data(), g.v = (const char *)vh.data(), g.k_row_bytes = row;
    g.v_row_bytes = row, g.n = n, g.n_head = n_head, g.n_head_kv = n_head_kv, g.hd_k = hd;
    g.hd_v = hd, g.group = G, g.n_swa = n_swa, g.q_scale = 1.0f, g.scale = a.scale;
    g.n_split = n_split, g.part = part.data();
    const size_t smem = sizeof(float) * ((size_t)ATT_ROWS * hd + ATT_TILE * (hd + 1) +
                                         ATT_TILE * (hd + 1) + ATT_ROWS * 33 + 3 * ATT_ROWS);
    launch({(unsigned)tiles.size(), (unsigned)n_head_kv, (unsigned)n_split}, ATT_THREADS, smem,
           [&] {
               if (f16)
                   hd <= ATT_THREADS ? k_attention<true, 1>(g) : k_attention<true, 2>(g);
               else
                   hd <= ATT_THREADS ? k_attention<false, 1>(g) : k_attention<false, 2>(g);
           });
    launch({(unsigned)(n * n_head), 1, 1}, 32, 0, /* the kernel strides d by blockDim */
           [&] { k_att_combine(part.data(), n_split, n, n_head, hd, og.data()); });
    char what[128];
    snprintf(what, sizeof what, "attention %d/%d heads hd %d %s swa %u, %d tokens, %d splits",
             n_head, n_head_kv, hd, f16 ? "f16" : "f32", n_swa, n, n_split);
    /* the CPU rounds q and the probabilities to fp16 with an F16 cache (as llama.cpp's
       graph converts them to the cache type): 2^-11 relative per product */
    const double bound = f16 ? 1e-3 : 1e-4;
    double e = rel_err_f(og.data(), oc.data(), qn);
    report(e <= bound, what, e, bound);
}

template <int T>
static void check_matvec(const char *name, int nt)
{
    const int K = 512, R = 8;
    const size_t row_bytes = (size_t)K / type_blck(T) * type_bytes(T);
    std::vector<uint8_t> w(row_bytes * R);
    for (auto &b : w)
        b = (uint8_t)(frand() * 127.5f + 127.5f);
    for (size_t blk = 0; blk < w.size() / type_bytes(T); blk++) { /* finite scales */
        uint16_t *d = (uint16_t *)(w.data() + blk * type_bytes(T));
        d[0] &= 0x3BFF;
        if (T == PV_TYPE_Q4_K)
            d[1] &= 0x3BFF;
    }
    std::vector<float> x((size_t)nt * K), y((size_t)nt * R, NAN), row(K);
    std::vector<double> ref((size_t)nt * R);
    for (auto &v : x)
        v = frand();
    for (int r = 0; r < R; r++) {
        cpu_dequantize_row(T, w.data() + r * row_bytes, row.data(), K);
        for (int t = 0; t < nt; t++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)row[k] * x[(size_t)t * K + k];
            ref[(size_t)t * R + r] = s;
        }
    }
    launch({(unsigned)((R + 3) / 4), 1, 1}, 128, 0, [&] {
        switch (nt) {
        case 8: k_matvec<T, 8>(w.data(), row_bytes, K, R, x.data(), y.data(), R); break;
        case 4: k_matvec<T, 4>(w.data(), row_bytes, K, R, x.data(), y.data(), R); break;
        case 2: k_matvec<T, 2>(w.data(), row_bytes, K, R, x.data(), y.data(), R); break;
        default: k_matvec<T, 1>(w.data(), row_bytes, K, R, x.data(), y.data(), R); break;
        }
    });
    char what[64];
    snprintf(what, sizeof what, "matvec %s %d tokens", name, nt);
    double e = rel_err(y.data(), ref.data(), y.size());
    report(e <= 1e-5, what, e, 1e-5);
}

static void check_rows()
{
    const int n = 3, heads = 4, hd = 64, dim = heads * hd;
    std::vector<float> x((size_t)n * dim), w(dim), cpu, gpu;
    int32_t pos[3] = {0, 300, 17000};
    for (auto &v : x)
        v = frand() * 3.0f;
    for (auto &v : w)
        v = frand();
    /* rmsnorm over heads with a weight */
    cpu = x, gpu = x;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++)
            cpu_rmsnorm(&cpu[(size_t)t * dim + h * hd], w.data(), &cpu[(size_t)t * dim + h * hd], hd,
                        1e-6f);
    launch({(unsigned)(n * heads), 1, 1}, 256, 0,
           [&] { k_rmsnorm(gpu.data(), w.data(), gpu.data(), heads, dim, hd, hd, 1e-6f); });
    double e = rel_err_f(gpu.data(), cpu.data(), gpu.size());
    report(e <= 1e-5, "rmsnorm heads", e, 1e-5);
    /* rope, neox */
    cpu = x, gpu = x;
    for (int t = 0; t < n; t++)
        cpu_rope(&cpu[(size_t)t * dim], heads, hd, hd, pos[t], 1e6f, 1.0f, nullptr, true);
    const float theta_scale = std::pow(1e6f, -2.0f / (float)hd);
    launch({(unsigned)((heads * hd / 2 + 127) / 128), (unsigned)n, 1}, 128, 0, [&] {
        k_rope(gpu.data(), dim, pos, heads, hd, hd, theta_scale, 1.0f, nullptr, true);
    });
    /* gridDim.y carries the token: the emulation's blockIdx.y */
    e = rel_err_f(gpu.data(), cpu.data(), gpu.size());
    report(e <= 1e-5, "rope neox", e, 1e-5);
}

/* get_rows and dequantize-to-fp16 (Q6_K, 2 rows of 512), glu, kv_store, add_bias */
static void check_small()
{
    const int K = 512, R = 4;
    const size_t rb = (size_t)K / 256 * 210;
    std::vector<uint8_t> w(rb * R);
    for (auto &b : w)
        b = (uint8_t)(frand() * 127.5f + 127.5f);
    for (size_t blk = 0; blk < w.size() / 210; blk++)
        *(uint16_t *)(w.data() + blk * 210 + 208) &= 0x3BFF;
    std::vector<float> ref((size_t)R * K), got((size_t)2 * K, NAN);
    for (int r = 0; r < R; r++)
        cpu_dequantize_row(PV_TYPE_Q6_K, w.data() + r * rb, ref.data() + (size_t)r * K, K);
    int32_t ids[2] = {3, 1};
    launch({(unsigned)((K / 32 + 63) / 64), 2, 1}, 64, 0, [&] {
        k_get_rows<PV_TYPE_Q6_K>(w.data(), rb, K, ids, 0.5f, got.data());
    });
    std::vector<double> want((size_t)2 * K);
    for (int k = 0; k < K; k++) {
        want[k] = ref[(size_t)3 * K + k] * 0.5;
        want[K + k] = ref[(size_t)1 * K + k] * 0.5;
    }
    double e = rel_err(got.data(), want.data(), want.size());
    report(e <= 1e-6, "get_rows q6_K", e, 1e-6);

    std::vector<__half> h((size_t)R * K);
    launch({(unsigned)((R * K / 32 + 127) / 128), 1, 1}, 128, 0,
           [&] { k_dequant_f16<PV_TYPE_Q6_K>(w.data(), rb, K, R, h.data()); });
    std::vector<float> hf(h.size());
    std::vector<double> rd(ref.begin(), ref.end());
    for (size_t i = 0; i < h.size(); i++)
        hf[i] = __half2float(h[i]);
    e = rel_err(hf.data(), rd.data(), rd.size());
    report(e <= 1e-3, "dequantize to fp16 q6_K", e, 1e-3);

    for (int gelu = 0; gelu < 2; gelu++) {
        const size_t n = 1000;
        std::vector<float> g(n), u(n), cpu, gpu;
        for (size_t i = 0; i < n; i++)
            g[i] = frand() * 12.0f, u[i] = frand();
        cpu = g, gpu = g;
        if (gelu)
            cpu_gelu_mul(cpu.data(), u.data(), (int)n);
        else
            cpu_silu_mul(cpu.data(), u.data(), (int)n);
        launch({(unsigned)((n + 255) / 256), 1, 1}, 256, 0,
               [&] { k_glu(gpu.data(), u.data(), n, gelu); });
        e = rel_err_f(gpu.data(), cpu.data(), n);
        report(e <= (gelu ? 1e-4 : 1e-5), gelu ? "glu gelu" : "glu silu", e, gelu ? 1e-4 : 1e-5);
    }

    const int n = 3, dim = 96;
    std::vector<float> src((size_t)n * 128), b(dim), xb, cb;
    for (auto &v : src)
        v = frand();
    for (auto &v : b)
        v = frand();
    uint32_t cells[3] = {7, 0, 30};
    std::vector<__half> cache(32 * dim, __float2half_rn(NAN));
    launch({1, (unsigned)n, 1}, 128, 0, [&] {
        k_kv_store(src.data(), 128, dim, (char *)cache.data(), dim * sizeof(__half), cells, true);
    });
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++) {
            float v = __half2float(cache[cells[t] * dim + i]);
            float r = pv_fp16_to_f32(pv_f32_to_fp16(src[(size_t)t * 128 + i]));
            worst = std::isnan(v) ? INFINITY : std::max(worst, (double)std::fabs(v - r));
        }
    report(worst == 0, "kv_store f16 (max abs diff)", worst, 0);
    xb = src;
    cb = src;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++)
            cb[(size_t)t * 128 + i] += b[i];
    launch({1, (unsigned)n, 1}, 128, 0, [&] { k_add_bias(xb.data(), 128, b.data(), dim); });
    e = rel_err_f(xb.data(), cb.data(), xb.size());
    report(e == 0, "add_bias", e, 0);
}

int main()
{
    cpu_features(); /* fills the CPU's tables */
    check_attention(8, 2, 64, true, 0, 1);
    check_attention(8, 2, 64, true, 0, 3);
    check_attention(28, 4, 128, true, 0, 2);
    check_attention(8, 2, 64, false, 0, 1);
    check_attention(4, 1, 256, true, 24, 2);
    for (int nt : {1, 2, 8}) {
        check_matvec<PV_TYPE_Q4_K>("q4_K", nt);
        check_matvec<PV_TYPE_Q8_0>("q8_0", nt);
    }
    check_rows();
    check_small();
    printf("cuda_emu_check: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
