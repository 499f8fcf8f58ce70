/*
 * model.h - a loaded model: architecture, hyper-parameters and tensor views per layer.
 *
 * model_load opens the GGUF file (gguf.h) or MLX directory (mlx.h), reads the hyper-parameters of its
 * architecture, binds every tensor the architecture needs by name and checks its exact
 * shape, so the engine can index weights without further checks. Weights stay in the
 * read-only mmap; nothing is copied. The vocabulary comes from tok_vocab_load (tok/).
 * Supported architectures: gemma3, llama, qwen2, qwen3, phi3. struct pv_model is the
 * opaque handle of pensieve.h.
 */
#ifndef PV_MODEL_H
#define PV_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/compute.h"
#include "model/gguf.h"
#include "pensieve.h"

enum model_arch { ARCH_GEMMA3, ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3, ARCH_PHI3, ARCH_COUNT };

struct model_hparams {
    uint32_t n_vocab;       /* rows of token_embd */
    uint32_t n_ctx_train;   /* {arch}.context_length */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim_k;    /* attention.key_length, else n_embd / n_head */
    uint32_t head_dim_v;    /* attention.value_length, else n_embd / n_head */
    uint32_t n_ff;
    uint32_t n_rot;         /* rope.dimension_count, else head_dim_k */
    uint32_t n_swa;         /* sliding window in tokens; 0 = none */
    float rms_eps;
    float rope_base;        /* rope.freq_base of global layers */
    float rope_base_swa;    /* gemma3 sliding-window layers: 10000 */
    float rope_freq_scale;  /* 1 / linear scaling factor; 1 when none */
    bool rope_neox;         /* NEOX pairs (x[i], x[i+n_rot/2]); else NORM (x[2i], x[2i+1]) */
    float attn_scale;       /* multiplies q.k: 1/sqrt(head_dim_k) unless the arch says otherwise */
    bool attn_scale_q;      /* the graph applies attn_scale to q itself (Gemma), not to q.k */
    float embd_scale;       /* multiplies token embeddings: sqrt(n_embd) for gemma3, else 1 */
    bool ffn_gelu;          /* GELU-tanh gate (gemma3); else SiLU */
};

/* Tensor views of one layer; NULL where the architecture has no such tensor. */
struct model_layer {
    const struct pv_tensor *attn_norm;      /* [n_embd] */
    const struct pv_tensor *wq, *wk, *wv;   /* [n_embd, n_head*hd_k], [n_embd, n_head_kv*hd_k], [n_embd, n_head_kv*hd_v] */
    const struct pv_tensor *wqkv;           /* phi3 fused: [n_embd, (n_head + 2*n_head_kv)*hd] */
    const struct pv_tensor *bq, *bk, *bv;   /* qwen2 biases, F32 */
    const struct pv_tensor *wo;             /* [n_head*hd_v, n_embd] */
    const struct pv_tensor *q_norm, *k_norm;/* [hd_k] (gemma3, qwen3) */
    const struct pv_tensor *post_attn_norm; /* [n_embd] (gemma3) */
    const struct pv_tensor *ffn_norm;       /* [n_embd] */
    const struct pv_tensor *ffn_gate, *ffn_up; /* [n_embd, n_ff] */
    const struct pv_tensor *ffn_gate_up;    /* phi3 fused: [n_embd, 2*n_ff], gate first */
    const struct pv_tensor *ffn_down;       /* [n_ff, n_embd] */
    const struct pv_tensor *post_ffn_norm;  /* [n_embd] (gemma3) */
    bool is_swa;                            /* sliding-window layer */
    float rope_base;                        /* base for this layer */
    float rope_freq_scale;                  /* freq_scale for this layer (gemma3 SWA: 1) */
};

struct mlx_dir;

struct pv_model {
    struct gguf_file *gguf;                 /* owns the mmap; an MLX directory's translated metadata */
    struct mlx_dir *mlx;                    /* an MLX directory's shards and tensors, else NULL */
    uint64_t file_bytes;                    /* the GGUF file, or the directory's safetensors */
    char mlx_quant[32];                     /* an MLX directory's quantization ("MLX_Q4_G64") */
    enum model_arch arch;
    struct model_hparams hp;
    const struct pv_tensor *tok_embd;       /* [n_embd, n_vocab] */
    const struct pv_tensor *output_norm;    /* [n_embd] */
    const struct pv_tensor *output;         /* [n_embd, n_vocab]; = tok_embd when tied */
    const struct pv_tensor *rope_freqs;     /* [n_rot/2] F32 or NULL (llama3 scaling) */
    struct model_layer *layers;             /* [n_layer], owned */
    struct pv_vocab *vocab;                 /* owned; tokenizer (tok/) */
    char *chat_template;                    /* owned copy of tokenizer.chat_template or NULL */
    char *name;                             /* general.name or the file's base name, owned */
    uint64_t weight_bytes;                  /* sum of all tensors' n_bytes */
};

const char *model_arch_name(enum model_arch arch);
/*
 * Quantization label of a file: llama.cpp's name of general.file_type ("Q4_K_M"), else
 * the upper-cased type holding most bytes among its matrices ("Q8_0"), else "-".
 */
void model_quant_name(const struct gguf_file *f, char *out, size_t cap);

#endif /* PV_MODEL_H */
