/* fuzz_tok_spm.c - the SentencePiece-style tokenizer (Llama 2 vocabulary by default,
 * $PENSIEVE_FUZZ_SPM_VOCAB to choose another). */
#include "fuzz_tokenize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenize("PENSIEVE_FUZZ_SPM_VOCAB", "tests/.cache/vocab/ggml-vocab-llama-spm.gguf", data,
                  size);
    return 0;
}
