/*
 * tok.h - the tok module: a model's vocabulary and its tokenizer, as llama.cpp runs it.
 *
 * tok_vocab_load reads the tokenizer.* keys of a GGUF file (tokens, scores, types,
 * merges, special ids, flags) into a struct pv_vocab that owns copies of everything, so
 * the GGUF file may be closed afterwards. Two tokenizers: SentencePiece-style BPE
 * (tokenizer.ggml.model "llama": Gemma 3, Llama 2, Phi-3, Mistral) and GPT-2 byte-level
 * BPE ("gpt2": Llama 3, Qwen2/3, DeepSeek-R1-Distill) with the pre-tokenizer regexes of
 * tokenizer.ggml.pre through PCRE2. Tokenizing, detokenizing and the streaming
 * detokenizer are public (pensieve.h, section "Tokens"); the rules on special tokens and
 * invalid UTF-8 are documented there.
 */
#ifndef PV_TOK_H
#define PV_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"
#include "pensieve.h"

/*
 * Build the vocabulary of an open GGUF file. On success *out is owned by the caller
 * (tok_vocab_free); on failure *out is NULL and err says which key is missing or
 * malformed, or which tokenizer or pre-tokenizer is not supported.
 */
enum pv_status tok_vocab_load(const struct gguf_file *f, struct pv_vocab **out,
                              struct pv_err *err);
void tok_vocab_free(struct pv_vocab *v);

/* ---- pieces exposed for the unit tests ------------------------------------------ */

/*
 * Length of the well-formed UTF-8 sequence that starts s[0..n): 1..4 when complete;
 * 0 when s[0..n) is a proper prefix of some well-formed sequence (more bytes may
 * complete it); -1 when s[0] cannot start one (stray continuation byte, bad lead byte,
 * overlong form, surrogate, above U+10FFFF). n must be >= 1.
 */
int tok_utf8_check(const unsigned char *s, size_t n);
/* Encode code point cp (< 0x110000) as UTF-8 into out[4]; returns the length. */
int tok_utf8_encode(uint32_t cp, char *out);
/* GPT-2 byte-to-unicode table: the code point that stands for byte b in BPE tokens. */
uint32_t tok_byte_to_cp(uint8_t b);
/* Inverse of tok_byte_to_cp: the byte, or -1 when cp stands for no byte. */
int tok_cp_to_byte(uint32_t cp);

#endif /* PV_TOK_H */
