/*
 * quant.h - byte layouts of ggml's quantized block types, shared by C and CUDA.
 *
 * A row of a quantized tensor is a sequence of these blocks (a block never spans rows).
 * Field order and sizes are exactly ggml's, so the structs can be laid over mmap'd GGUF
 * bytes; fp16 fields are raw IEEE binary16 bits (uint16_t, little-endian). Q8_1 and Q8_K
 * are activation types only: matmuls quantize the f32 input to them, files never hold them.
 * Plain C so a .cu file can include it; the size checks use static_assert there.
 */
#ifndef PV_QUANT_H
#define PV_QUANT_H

#include <stdint.h>

#ifdef __CUDACC__
#define PV_QUANT_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define PV_QUANT_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define PV_QK4_0 32
#define PV_QK4_1 32
#define PV_QK5_0 32
#define PV_QK5_1 32
#define PV_QK8_0 32
#define PV_QK8_1 32
#define PV_QK_K 256          /* elements of a K-quant super-block */
#define PV_K_SCALE_SIZE 12   /* packed 6-bit scales and mins of Q4_K / Q5_K */

/* y[j] = ((qs[j] & 15) - 8) * d, y[j+16] = ((qs[j] >> 4) - 8) * d */
struct pv_block_q4_0 {
    uint16_t d;
    uint8_t qs[PV_QK4_0 / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q4_0) == 18, "q4_0 block size");

/* y = q * d + m, q = nibble as Q4_0 */
struct pv_block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[PV_QK4_1 / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q4_1) == 20, "q4_1 block size");

/* 5-bit q = nibble | bit j of qh (LE u32) << 4; y = (q - 16) * d */
struct pv_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[PV_QK5_0 / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q5_0) == 22, "q5_0 block size");

/* y = q * d + m, 5-bit q as Q5_0 */
struct pv_block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[PV_QK5_1 / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q5_1) == 24, "q5_1 block size");

/* y[j] = qs[j] * d */
struct pv_block_q8_0 {
    uint16_t d;
    int8_t qs[PV_QK8_0];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q8_0) == 34, "q8_0 block size");

/* Q8_0 plus s = d * sum(qs) (activation type for Q4_1 / Q5_1) */
struct pv_block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[PV_QK8_1];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q8_1) == 36, "q8_1 block size");

/* 16 sub-blocks of 16: 2-bit q, 4-bit scale (low nibble) and min (high nibble) */
struct pv_block_q2_K {
    uint8_t scales[PV_QK_K / 16];
    uint8_t qs[PV_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q2_K) == 84, "q2_K block size");

/* 16 sub-blocks of 16: 2 low bits in qs, high bit in hmask, 6-bit signed scales */
struct pv_block_q3_K {
    uint8_t hmask[PV_QK_K / 8];
    uint8_t qs[PV_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q3_K) == 110, "q3_K block size");

/* 8 sub-blocks of 32: 4-bit q, 6-bit scale and min each; y = d*sc*q - dmin*m */
struct pv_block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[PV_K_SCALE_SIZE];
    uint8_t qs[PV_QK_K / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q4_K) == 144, "q4_K block size");

/* Q4_K plus a 5th bit per element in qh */
struct pv_block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[PV_K_SCALE_SIZE];
    uint8_t qh[PV_QK_K / 8];
    uint8_t qs[PV_QK_K / 2];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q5_K) == 176, "q5_K block size");

/* 16 sub-blocks of 16: 6-bit q (4 low bits in ql, 2 high in qh) - 32, int8 scales */
struct pv_block_q6_K {
    uint8_t ql[PV_QK_K / 2];
    uint8_t qh[PV_QK_K / 4];
    int8_t scales[PV_QK_K / 16];
    uint16_t d;
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q6_K) == 210, "q6_K block size");

/* Activation type of the K-quants: f32 d, int8 q, bsums[g] = sum of qs[16g..16g+15] */
struct pv_block_q8_K {
    float d;
    int8_t qs[PV_QK_K];
    int16_t bsums[PV_QK_K / 16];
};
PV_QUANT_ASSERT(sizeof(struct pv_block_q8_K) == 292, "q8_K block size");

/*
 * MLX affine quantization, repacked per group: an MLX checkpoint stores a quantized
 * matrix as three arrays (weight: uint32 words of `bits`-bit values, element j of a row at
 * bits [j*bits, j*bits+bits) of its little-endian bit stream; scales and biases: one per
 * group of group_size elements, f16/bf16/f32). The loader interleaves them into blocks of
 * one group each, so a row is a sequence of blocks like every other type:
 *   f32 scale | f32 bias | qs[group_size * bits / 8]     y[j] = scale * q[j] + bias
 * (f16 and bf16 scales are exact in f32). Bits 2, 3, 4, 5, 6, 8; groups of 32, 64, 128.
 */
struct pv_block_mlx_head {
    float scale;
    float bias;
};
PV_QUANT_ASSERT(sizeof(struct pv_block_mlx_head) == 8, "mlx block head size");
#define PV_MLX_BLOCK_BYTES(bits, group_size) (8 + (group_size) * (bits) / 8)

#endif /* PV_QUANT_H */
