/*
 * fuzz_vocab.c - the vocabulary loader on arbitrary GGUF bytes (tokens, scores, types,
 * merges, special ids, pre-tokenizer names), then a tokenize/detokenize round over every
 * token of what loaded.
 */
#include "fuzz.h"
#include "model/gguf.h"
#include "pensieve.h"
#include "tok/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    fuzz_quiet();
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    struct pv_err err = {0};
    struct gguf_file *f = NULL;
    if (gguf_open(path, &f, &err) == PV_OK) {
        struct pv_vocab *v = NULL;
        if (tok_vocab_load(f, &v, &err) == PV_OK) {
            static const char text[] = " Hello, wörld! <s>\n\n 123 ";
            int32_t ids[256];
            size_t n = 0;
            if (pv_tokenize(v, text, sizeof(text) - 1,
                            PV_TOKENIZE_ADD_SPECIAL | PV_TOKENIZE_PARSE_SPECIAL, ids, 256, &n,
                            &err) != PV_OK)
                n = 0;
            struct pv_detok *dt = pv_detok_new(v, 0);
            const size_t n_tok = pv_vocab_n_tokens(v);
            for (size_t i = 0; dt && i < n_tok && i < 4096; i++) {
                const char *s;
                size_t len;
                (void)pv_detok_push(dt, (int32_t)i, &s, &len, NULL);
            }
            for (size_t i = 0; dt && i < n; i++) {
                const char *s;
                size_t len;
                (void)pv_detok_push(dt, ids[i], &s, &len, NULL);
            }
            pv_detok_free(dt);
            tok_vocab_free(v);
        }
        gguf_close(f);
    }
    close(fd);
    return 0;
}
