/*
 * mlx.h - MLX model directories (as mlx-lm writes them), translated for model.c.
 *
 * A directory holds config.json (architecture and hyper-parameters, Hugging Face names;
 * "quantization": {"group_size", "bits"} with optional per-module entries),
 * model.safetensors or shards listed by model.safetensors.index.json, tokenizer.json
 * (Hugging Face byte-level BPE) and tokenizer_config.json (special tokens, chat
 * template; chat_template.jinja wins where present).
 *
 * mlx_open reads them into what the GGUF path already consumes: an in-memory GGUF of
 * metadata only (the keys convert_hf_to_gguf would write: {arch}.* hyper-parameters and
 * tokenizer.*), opened with gguf_open_mem, and a table of tensor views under GGUF names
 * (blk.N.attn_q.weight ...). Float matrices are views into the safetensors mappings;
 * quantized matrices are repacked into MLX affine blocks (compute/quant.h) and vectors
 * (norms, biases) converted to f32, in buffers the directory owns. A few settings that
 * GGUF metadata cannot say (MLX's RoPE pairing for llama, Gemma 3's query scale) come
 * back in struct mlx_hparams for model.c to apply.
 */
#ifndef PV_MLX_H
#define PV_MLX_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/compute.h"
#include "model/gguf.h"
#include "pensieve.h"

struct mlx_dir; /* opaque; owns the shards and converted tensors */

/* Settings model.c applies over what the translated metadata says. */
struct mlx_hparams {
    bool rope_neox;         /* MLX nn.RoPE traditional=False pairs (x[i], x[i+d/2]) */
    float attn_scale;       /* 0: keep the architecture's default */
    float embd_scale;       /* 0: keep the default */
    float rope_base_swa;    /* 0: keep the default */
    uint32_t bits, group_size; /* the checkpoint's quantization, 0 when float */
    uint64_t file_bytes;    /* sum of the shards' sizes */
    char quant[32];         /* "MLX_Q4_G64", "BF16", ... */
};

/* Whether `path` is a directory holding config.json. */
bool mlx_is_dir(const char *path);

/*
 * Open the directory: *out owns the shards and converted tensors (mlx_close), *meta the
 * translated metadata (gguf_close), *hp the settings above. On failure both are NULL and
 * err names the file and what is wrong.
 */
enum pv_status mlx_open(const char *dir, struct mlx_dir **out, struct gguf_file **meta,
                        struct mlx_hparams *hp, struct pv_err *err);
/* Cheap summary for `pensieve models`: the metadata and the shards' headers, no tensors
 * converted; with n_params and n_tensors NULL, the metadata alone (a vocabulary). */
enum pv_status mlx_probe(const char *dir, struct gguf_file **meta, struct mlx_hparams *hp,
                         uint64_t *n_params, uint64_t *n_tensors, struct pv_err *err);
void mlx_close(struct mlx_dir *d);

int64_t mlx_n_tensors(const struct mlx_dir *d);
/* Tensor i (GGUF name), or -1 / the index of the tensor named `name`. */
const struct pv_tensor *mlx_tensor(const struct mlx_dir *d, int64_t i);
int64_t mlx_find_tensor(const struct mlx_dir *d, const char *name);

#endif /* PV_MLX_H */
