/*
 * tok_batch.c - the tokenizer over many texts in one process, for the differential tests.
 *
 *   tok_batch MODEL info   one line each: "n_tokens bos eos eot add_bos add_eos", then
 *                          "eog ID...", "control ID..."
 *   tok_batch MODEL        reads records from stdin: "FLAGS NSEG\n" then NSEG times
 *                          "PARSE_SPECIAL LEN\n" + LEN bytes; FLAGS bit 0 = add special.
 *                          Writes two lines per record: the ids (or "error: ..."), and
 *                          the hex of the text a pv_detok (SKIP_SPECIAL | STRIP_SPACE)
 *                          hands out for them, or "split" if one of its pieces was not
 *                          whole UTF-8.
 *   tok_batch MODEL bench FILE REPS [special]
 *                          tokenizes FILE (with BOS) REPS times; prints "n_tokens
 *                          best_seconds" (bench/tokenize.py)
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pensieve.h"
#include "tok/tok.h"

static void die(const char *msg)
{
    fprintf(stderr, "tok_batch: %s\n", msg);
    exit(1);
}

int main(int argc, char **argv)
{
    struct pv_vocab *v;
    struct pv_err err;

    if (argc < 2)
        die("usage: tok_batch MODEL [info]");
    if (pv_vocab_load_file(argv[1], &v, &err) != PV_OK)
        die(err.msg);
    if (argc > 2 && strcmp(argv[2], "info") == 0) {
        size_t n = pv_vocab_n_tokens(v);
        printf("%zu %d %d %d %d %d\n", n, pv_vocab_bos(v), pv_vocab_eos(v), pv_vocab_eot(v),
               pv_vocab_adds_bos(v), pv_vocab_adds_eos(v));
        printf("eog");
        for (size_t i = 0; i < n; i++)
            if (pv_token_is_eog(v, (int32_t)i))
                printf(" %zu", i);
        printf("\ncontrol");
        for (size_t i = 0; i < n; i++)
            if (pv_token_is_control(v, (int32_t)i))
                printf(" %zu", i);
        printf("\n");
        pv_vocab_free(v);
        return 0;
    }
    if (argc > 4 && strcmp(argv[2], "bench") == 0) {
        FILE *f = fopen(argv[3], "rb");
        if (!f)
            die("cannot open the bench text");
        static char text[1 << 24];
        size_t len = fread(text, 1, sizeof(text), f);
        fclose(f);
        unsigned flags = PV_TOKENIZE_ADD_SPECIAL;
        if (argc > 5 && strcmp(argv[5], "special") == 0)
            flags |= PV_TOKENIZE_PARSE_SPECIAL;
        size_t cap = len + 16, n_ids = 0;
        int32_t *ids = malloc(cap * sizeof(int32_t));
        double best = 1e30;
        for (int r = 0; r < atoi(argv[4]); r++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (pv_tokenize(v, text, len, flags, ids, cap, &n_ids, &err) != PV_OK)
                die(err.msg);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
            if (s < best)
                best = s;
        }
        printf("%zu %.6f\n", n_ids, best);
        free(ids);
        pv_vocab_free(v);
        return 0;
    }
    unsigned flags;
    size_t n_seg;
    while (scanf("%u %zu", &flags, &n_seg) == 2) {
        struct pv_text_segment *segs = calloc(n_seg ? n_seg : 1, sizeof(*segs));
        for (size_t i = 0; i < n_seg; i++) {
            unsigned ps;
            size_t len;
            if (scanf("%u %zu", &ps, &len) != 2 || getchar() != '\n')
                die("bad segment header");
            char *t = malloc(len ? len : 1);
            if (len && fread(t, 1, len, stdin) != len)
                die("short segment");
            segs[i] = (struct pv_text_segment){t, len, ps != 0};
        }
        int32_t *ids;
        size_t n_ids;
        if (pv_tokenize_segments(v, segs, n_seg, flags & 1 ? PV_TOKENIZE_ADD_SPECIAL : 0, &ids,
                                 &n_ids, &err) != PV_OK) {
            printf("error: %s\n\n", err.msg);
        } else {
            for (size_t i = 0; i < n_ids; i++)
                printf(i ? " %d" : "%d", ids[i]);
            printf("\n");
            struct pv_detok *d = pv_detok_new(v, PV_DETOK_SKIP_SPECIAL | PV_DETOK_STRIP_SPACE);
            bool whole = true;
            for (size_t i = 0; i <= n_ids; i++) {
                const char *t;
                size_t len;
                if (i == n_ids)
                    pv_detok_flush(d, &t, &len);
                else if (pv_detok_push(d, ids[i], &t, &len, &err) != PV_OK)
                    die(err.msg);
                for (size_t k = 0; k < len;) {
                    int c = tok_utf8_check((const unsigned char *)t + k, len - k);
                    if (c <= 0) {
                        whole = false;
                        break;
                    }
                    k += (size_t)c;
                }
                for (size_t k = 0; k < len; k++)
                    printf("%02x", (unsigned char)t[k]);
            }
            printf(whole ? "\n" : "split\n");
            pv_detok_free(d);
            free(ids);
        }
        for (size_t i = 0; i < n_seg; i++)
            free((void *)segs[i].text);
        free(segs);
        fflush(stdout);
    }
    pv_vocab_free(v);
    return 0;
}
