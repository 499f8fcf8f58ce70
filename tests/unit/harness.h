/*
 * harness.h - the C unit-test harness: one file per module, one binary per file.
 *
 * A test is a function registered in the TESTS(...) list at the end of its file; CHECK*
 * macros record a failure with file and line and let the test go on. main() runs every
 * test (or those named on the command line) and ends with the line "N passed, N failed";
 * the exit status is non-zero when any test failed.
 */
#ifndef PV_TEST_HARNESS_H
#define PV_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int harness_failed_checks;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            harness_failed_checks++;                                                       \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long va_ = (long long)(a), vb_ = (long long)(b);                              \
        if (va_ != vb_) {                                                                  \
            harness_failed_checks++;                                                       \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, va_, vb_);                                                     \
        }                                                                                  \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                 \
    do {                                                                                   \
        const char *sa_ = (a), *sb_ = (b);                                                 \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                       \
            harness_failed_checks++;                                                       \
            fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,       \
                    __LINE__, #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");         \
        }                                                                                  \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                              \
    do {                                                                                   \
        double da_ = (double)(a), db_ = (double)(b);                                       \
        if (!(fabs(da_ - db_) <= (tol))) {                                                 \
            harness_failed_checks++;                                                       \
            fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %g vs %g\n", __FILE__,        \
                    __LINE__, #a, #b, (double)(tol), da_, db_);                            \
        }                                                                                  \
    } while (0)

struct harness_test {
    const char *name;
    void (*fn)(void);
};

#define TEST_ENTRY(fn) {#fn, fn}

#define TESTS(...)                                                                         \
    static const struct harness_test harness_tests[] = {__VA_ARGS__};                      \
    int main(int argc, char **argv)                                                        \
    {                                                                                      \
        int passed = 0, failed = 0;                                                        \
        size_t n = sizeof(harness_tests) / sizeof(harness_tests[0]);                       \
        for (size_t i = 0; i < n; i++) {                                                   \
            if (argc > 1) {                                                                \
                int want = 0;                                                              \
                for (int a = 1; a < argc; a++)                                             \
                    want |= strcmp(argv[a], harness_tests[i].name) == 0;                   \
                if (!want)                                                                 \
                    continue;                                                              \
            }                                                                              \
            int before = harness_failed_checks;                                            \
            harness_tests[i].fn();                                                         \
            if (harness_failed_checks == before) {                                         \
                passed++;                                                                  \
            } else {                                                                       \
                failed++;                                                                  \
                fprintf(stderr, "FAIL %s\n", harness_tests[i].name);                       \
            }                                                                              \
        }                                                                                  \
        printf("%s: %d passed, %d failed\n", argv[0], passed, failed);                     \
        return failed != 0;                                                                \
    }

#endif /* PV_TEST_HARNESS_H */
