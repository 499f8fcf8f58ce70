/*
 * tok_impl.h - internals of the tok module, shared by its files only: vocab.c (loading,
 * lookup tables), spm.c and bpe.c (the two tokenizers), tokenize.c (special-token
 * partitioning and the public entry points), detok.c (pieces and the streaming
 * detokenizer) and utf8.c. Other modules include tok.h or pensieve.h, never this.
 */
#ifndef PV_TOK_IMPL_H
#define PV_TOK_IMPL_H

#include <string.h>

#include "tok/tok.h"
#include "util/util.h"

enum tok_kind { TOK_KIND_SPM, TOK_KIND_BPE };

/* Pre-tokenizer families of tokenizer.ggml.pre (BPE only). */
enum tok_pre {
    TOK_PRE_NONE, TOK_PRE_DEFAULT, TOK_PRE_GPT2, TOK_PRE_LLAMA3, TOK_PRE_QWEN2,
    TOK_PRE_SMOLLM, /* every digit alone, then GPT-2's split (SmolLM, StarCoder) */
};

/* Token attributes, a bit set (llama.cpp's llama_token_attr). */
enum {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_UNUSED = 1 << 6,
    TOK_ATTR_LSTRIP = 1 << 8,  /* eats whitespace to its left when matched as special */
    TOK_ATTR_RSTRIP = 1 << 9,  /* eats whitespace to its right */
    TOK_ATTR_EOG = 1 << 16,    /* ends generation (engine.md 3.4) */
};
#define TOK_ATTR_SPECIAL (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)
/* Tokens the special-token partition looks for in text. */
#define TOK_ATTR_MATCHED (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN | TOK_ATTR_USER_DEFINED)

struct tok_token {
    uint32_t text_off;  /* text in vocab->text, NUL-terminated */
    uint32_t text_len;
    uint32_t piece_off; /* bytes it stands for in vocab->pieces (specials: their text) */
    uint32_t piece_len;
    float score;        /* SPM merge priority */
    uint32_t attr;      /* TOK_ATTR_* */
};

/* Open-addressing map: token text -> id. slot = hash high 32 bits << 32 | (id + 1). */
struct tok_map {
    uint64_t *slots;
    uint64_t mask;
};

/* BPE merge (left id, right id) -> rank and merged id; key 0 marks an empty slot. */
struct tok_merge {
    uint64_t key;       /* (left + 1) << 32 | right */
    uint32_t rank;      /* index in tokenizer.ggml.merges: lower merges first */
    int32_t result;     /* id of left+right text, -1 if that text is not a token */
};

/* Byte trie of the texts of special tokens (TOK_ATTR_MATCHED). */
struct tok_trie_node {
    int32_t child;      /* first child, -1 none */
    int32_t sibling;    /* next sibling, -1 none */
    int32_t token;      /* token whose text ends here, -1 none */
    uint8_t byte;
};

struct pv_vocab {
    enum tok_kind kind;
    enum tok_pre pre;
    uint32_t n_tokens;
    struct tok_token *tokens;   /* [n_tokens] */
    char *text;                 /* all token texts, owned */
    char *pieces;               /* all decoded pieces, owned */
    struct tok_map map;

    struct tok_merge *merges;   /* BPE: [merges_mask + 1] */
    uint64_t merges_mask;
    int32_t byte_tok[256];      /* SPM: <0xXX> (or the 1-byte token); BPE: token of the
                                   byte's mapped character; -1 none */

    struct tok_trie_node *trie; /* node 0 is the root */
    size_t trie_n, trie_cap;
    int32_t trie_root[256];     /* root's child for each first byte, -1 none */
    uint32_t max_special_len;   /* longest special text, bytes */

    void *re[4];                /* pcre2_code_8 *: pre-tokenizer regexes, applied in turn */
    int n_re;
    bool ignore_merges;         /* llama3: a whole pre-token that is a token is emitted */
    bool spm_ranked;            /* SPM text, merges by rank of tokenizer.ggml.merges (Hugging
                                   Face BPE with byte_fallback), not by score */
    bool prefix_first_only;     /* the space prefix only for text at offset 0 */
    bool prefix_unless_space;   /* no space prefix on text that starts with a space
                                   or U+2581 (Metaspace) */
    bool keep_types;            /* token types as the file says (tokenizer.json): none is
                                   made a control token by its name */

    int32_t bos, eos, eot, eom, unk, pad; /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
};

/* ---- vocab.c ------------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n);
/* Id of the token whose text is p[0..n), or -1. */
int32_t tok_lookup(const struct pv_vocab *v, const char *p, size_t n);
static inline const char *tok_text(const struct pv_vocab *v, int32_t id)
{
    return v->text + v->tokens[id].text_off;
}
/* BPE merge of (a, b); NULL when there is none. */
static inline const struct tok_merge *tok_merge_find(const struct pv_vocab *v, int32_t a,
                                                     int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; i++) {
        const struct tok_merge *m = &v->merges[i & v->merges_mask];
        if (m->key == key)
            return m;
        if (m->key == 0)
            return NULL;
    }
}

/* ---- growable outputs and scratch (tokenize.c) ------------------------------------ */

struct tok_ids {
    int32_t *ids;
    size_t n, cap;
};
bool tok_ids_grow(struct tok_ids *o, size_t extra);
static inline bool tok_ids_push(struct tok_ids *o, int32_t id)
{
    if (pv_unlikely(o->n == o->cap) && !tok_ids_grow(o, 1))
        return false;
    o->ids[o->n++] = id;
    return true;
}

/* A symbol of the merge loop: bytes [start, start+n) of the text being merged. */
struct tok_sym {
    uint32_t start, n;
    int32_t prev, next;
    int32_t id;         /* token of the symbol's text when known, else -1 */
};
/* A candidate merge of symbols left and right; higher prio first, then lower left. */
struct tok_pair {
    float prio;
    uint32_t left, right;
    uint32_t size;      /* bytes of left+right when it was pushed (staleness check) */
    int32_t id;         /* token the merge makes */
};

/* Scratch memory reused across the fragments and words of one tokenize call. */
struct tok_scratch {
    struct tok_sym *syms;
    size_t syms_cap;
    struct tok_pair *heap;
    size_t heap_n, heap_cap;
    char *buf;          /* escaped or re-encoded text */
    size_t buf_cap;
    uint32_t *segs;     /* BPE pre-token boundaries: pairs (start, len) */
    size_t segs_n, segs_cap;
    uint32_t *segs2;
    size_t segs2_cap;
    void *match;        /* pcre2_match_data_8 * */
    void *mctx;         /* pcre2_match_context_8 * */
    void *jit_stack;    /* pcre2_jit_stack_8 * */
};
void tok_scratch_release(struct tok_scratch *s);
bool tok_scratch_syms(struct tok_scratch *s, size_t n);
bool tok_scratch_buf(struct tok_scratch *s, size_t n);
bool tok_heap_push(struct tok_scratch *s, struct tok_pair p);
struct tok_pair tok_heap_pop(struct tok_scratch *s);

/* ---- the two tokenizers ------------------------------------------------------------ */

/* SPM: tokenize one raw fragment; add_prefix puts a space in front first. */
enum pv_status tok_spm_encode(const struct pv_vocab *v, const char *text, size_t n,
                              bool add_prefix, struct tok_ids *out, struct tok_scratch *s,
                              struct pv_err *err);
/* BPE: pre-tokenize one raw fragment (valid UTF-8) and tokenize each pre-token. */
enum pv_status tok_bpe_encode(const struct pv_vocab *v, const char *text, size_t n,
                              struct tok_ids *out, struct tok_scratch *s, struct pv_err *err);
/* BPE: compile the regexes of v->pre into v->re. */
enum pv_status tok_bpe_init_regex(struct pv_vocab *v, struct pv_err *err);
void tok_bpe_free_regex(struct pv_vocab *v);

#endif /* PV_TOK_IMPL_H */
