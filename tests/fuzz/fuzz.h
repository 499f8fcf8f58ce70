/*
 * fuzz.h - what the libFuzzer harnesses of tests/fuzz/ share: the entry point's
 * prototype and a way to hand fuzz bytes to code that opens a file by path.
 *
 * Each fuzz_*.c is one harness over the real library (build/fuzz/libpensieve.a, built
 * with clang, ASan, UBSan and fuzzer coverage); `make fuzz` runs each for FUZZ_SECONDS
 * over a corpus seeded from tests/fuzz/seeds/<harness>/. A crash it finds becomes a unit
 * test in tests/unit/.
 */
#ifndef PV_TESTS_FUZZ_H
#define PV_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Harnesses call this first: the library's log lines would drown libFuzzer's. */
static inline void fuzz_quiet(void)
{
    static bool done;
    if (!done) {
        log_set_level(PV_LOG_OFF);
        done = true;
    }
}

/* A memory file holding data, named by a /proc path the loaders can open; -1 on error.
 * The caller closes fd. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("pv-fuzz", 0);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Split data at its first NUL: the part before into *a (NUL-terminated copy, caller
 * frees), the rest into b and nb (borrowed). */
static inline void fuzz_split(const uint8_t *data, size_t size, char **a, const uint8_t **b,
                              size_t *nb)
{
    const uint8_t *z = memchr(data, 0, size);
    size_t na = z ? (size_t)(z - data) : size;
    *a = malloc(na + 1);
    memcpy(*a, data, na);
    (*a)[na] = '\0';
    *b = z ? z + 1 : data + size;
    *nb = z ? size - na - 1 : 0;
}

/* A vocabulary file: $name if set, else the test cache's copy. */
static inline const char *fuzz_vocab_path(const char *env, const char *fallback)
{
    const char *p = getenv(env);
    return p && *p ? p : fallback;
}

#endif /* PV_TESTS_FUZZ_H */
