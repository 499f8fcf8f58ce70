/* fuzz_tok_bpe.c - the byte-level BPE tokenizer and its pre-tokenizer regexes (Qwen2
 * vocabulary by default, $PENSIEVE_FUZZ_BPE_VOCAB to choose another). */
#include "fuzz_tokenize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenize("PENSIEVE_FUZZ_BPE_VOCAB", "tests/.cache/vocab/ggml-vocab-qwen2.gguf", data,
                  size);
    return 0;
}
