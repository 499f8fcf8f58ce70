/*
 * suggest.c - "did you mean": the closest name to a misspelled one.
 *
 * Optimal-string-alignment distance (Damerau-Levenshtein without repeated edits of one
 * substring) over short names: model names, option names, command names.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

#define SUGGEST_MAX 128

static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t rows[3][SUGGEST_MAX + 1]; /* rows i-2, i-1 and i of the table */

    if (la > SUGGEST_MAX || lb > SUGGEST_MAX)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        rows[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t *prev2 = rows[(i + 1) % 3], *prev = rows[(i - 1) % 3], *cur = rows[i % 3];
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t best = prev[j - 1] + (ca != cb);
            best = PV_MIN(best, prev[j] + 1);
            best = PV_MIN(best, cur[j - 1] + 1);
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb)
                best = PV_MIN(best, prev2[j - 2] + 1);
            cur[j] = best;
        }
    }
    return rows[la % 3][lb];
}

const char *suggest_closest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    size_t limit = PV_MAX((size_t)2, strlen(word) / 3);

    for (size_t i = 0; i < n; i++) {
        size_t dd = distance(word, cands[i]);
        if (dd < best_d) {
            best_d = dd;
            best = cands[i];
        }
    }
    if (best_d <= limit)
        return best;
    /* "gemma" for "gemma-3-270m-q4_k_m": a part of exactly one name */
    const char *part = NULL;
    if (strlen(word) >= 3) {
        for (size_t i = 0; i < n; i++) {
            if (!strcasestr(cands[i], word))
                continue;
            if (part)
                return NULL;
            part = cands[i];
        }
    }
    return part;
}
