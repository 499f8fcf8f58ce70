/*
 * fuzz_tokenize.h - body of the two tokenizer harnesses: one real vocabulary loaded once,
 * then arbitrary text tokenized (the first byte picks the flags), as one text and as
 * segments split at NUL bytes, and detokenized again.
 */
#include "fuzz.h"
#include "pensieve.h"

static struct pv_vocab *fuzz_vocab;

static void fuzz_tokenize(const char *env, const char *fallback, const uint8_t *data, size_t size)
{
    struct pv_err err = {0};
    fuzz_quiet();
    if (!fuzz_vocab) {
        const char *path = fuzz_vocab_path(env, fallback);
        if (pv_vocab_load_file(path, &fuzz_vocab, &err) != PV_OK) {
            fprintf(stderr, "fuzz: cannot load vocabulary %s: %s (set %s)\n", path, err.msg, env);
            abort();
        }
    }
    if (size == 0)
        return;
    const unsigned flags = data[0] & 3u;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    size_t n = 0;
    int32_t small[64];
    int32_t *ids = small;
    enum pv_status st = pv_tokenize(fuzz_vocab, text, len, flags, ids, 64, &n, &err);
    if (st == PV_ERR_TOO_LARGE && n) {
        ids = malloc(n * sizeof(*ids));
        st = pv_tokenize(fuzz_vocab, text, len, flags, ids, n, &n, &err);
    }
    if (st == PV_OK) {
        struct pv_detok *dt = pv_detok_new(fuzz_vocab, (data[0] & 4u) ? PV_DETOK_SKIP_SPECIAL : 0);
        for (size_t i = 0; dt && i < n; i++) {
            const char *s;
            size_t l;
            (void)pv_detok_push(dt, ids[i], &s, &l, NULL);
        }
        if (dt) {
            const char *s;
            size_t l;
            pv_detok_flush(dt, &s, &l);
        }
        pv_detok_free(dt);
    }
    if (ids != small)
        free(ids);
    /* segments: split at NUL, every other one trusted */
    struct pv_text_segment segs[16];
    size_t n_segs = 0, start = 0;
    for (size_t i = 0; i <= len && n_segs < 16; i++) {
        if (i == len || text[i] == '\0') {
            segs[n_segs] = (struct pv_text_segment){text + start, i - start, (n_segs & 1) != 0};
            n_segs++;
            start = i + 1;
        }
    }
    int32_t *seg_ids = NULL;
    size_t n_seg_ids = 0;
    if (pv_tokenize_segments(fuzz_vocab, segs, n_segs, flags & PV_TOKENIZE_ADD_SPECIAL, &seg_ids,
                             &n_seg_ids, &err) == PV_OK)
        free(seg_ids);
}
