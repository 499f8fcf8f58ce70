/*
 * compute.h - the compute module: tensor element types, tensor views and backend ops.
 *
 * Type ids are ggml's (they are what GGUF files store). Block layouts of the quantized
 * types live in compute/quant.h, shared by C and CUDA. Every op has a scalar reference
 * in compute/cpu/ that is the oracle for its SIMD and CUDA versions.
 */
#ifndef PV_COMPUTE_H
#define PV_COMPUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids, as stored in GGUF tensor infos. Append only. */
enum pv_type {
    PV_TYPE_F32 = 0,
    PV_TYPE_F16 = 1,
    PV_TYPE_Q4_0 = 2,
    PV_TYPE_Q4_1 = 3,
    PV_TYPE_Q5_0 = 6,
    PV_TYPE_Q5_1 = 7,
    PV_TYPE_Q8_0 = 8,
    PV_TYPE_Q8_1 = 9,
    PV_TYPE_Q2_K = 10,
    PV_TYPE_Q3_K = 11,
    PV_TYPE_Q4_K = 12,
    PV_TYPE_Q5_K = 13,
    PV_TYPE_Q6_K = 14,
    PV_TYPE_Q8_K = 15,
    PV_TYPE_BF16 = 30,
    PV_TYPE_COUNT = 43 /* ids below this exist in ggml; not all are supported */
};

struct pv_type_info {
    const char *name;    /* "q4_K" */
    uint32_t blck;       /* elements per block */
    uint32_t type_bytes; /* bytes per block */
    bool weight;         /* supported as a model weight type */
};

/* Traits of a type id, or NULL when the id is unknown or unsupported by Pensieve. */
const struct pv_type_info *pv_type_get(uint32_t type);

/*
 * A view of a tensor: shape and type, data borrowed from whoever owns the bytes (the
 * model's mmap for weights). ne[0] is the contiguous row length; unused ne are 1.
 */
struct pv_tensor {
    const char *name;   /* borrowed, NUL-terminated */
    uint32_t type;      /* enum pv_type */
    int n_dims;
    int64_t ne[4];      /* elements per dimension */
    size_t row_bytes;   /* bytes of one row of ne[0] elements */
    size_t n_bytes;     /* bytes of the whole tensor */
    const void *data;
};

#endif /* PV_COMPUTE_H */
