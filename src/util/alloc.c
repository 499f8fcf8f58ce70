/*
 * alloc.c - checked allocation and arenas.
 *
 * x* functions are for small fixed sizes and abort on OOM (git xmalloc); try_* are for
 * sizes that come from a model file or a request and return NULL instead. An arena
 * hands out many allocations from large chunks and frees them all at once: the
 * lifetime of one request.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static _Noreturn void die_oom(size_t n)
{
    fprintf(stderr, "pensieve: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die_oom(n);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        die_oom(count * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die_oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Fault injection for tests: the countdown'th fallible allocation from now fails. */
static _Atomic long fail_countdown;

void pv_alloc_fail_at(long n)
{
    atomic_store(&fail_countdown, n > 0 ? n : 0);
}

static bool injected_failure(void)
{
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (c <= 0)
        return false;
    return atomic_fetch_sub(&fail_countdown, 1) == 1;
}

void *try_malloc(size_t n)
{
    if (injected_failure())
        return NULL;
    return malloc(n ? n : 1);
}

void *try_calloc(size_t count, size_t size)
{
    size_t total;
    if (pv_mul_overflow(count, size, &total) || injected_failure())
        return NULL;
    return calloc(total ? total : 1, 1);
}

void *try_realloc(void *p, size_t n)
{
    if (injected_failure())
        return NULL;
    return realloc(p, n ? n : 1);
}

struct pv_arena_chunk {
    struct pv_arena_chunk *next;
    size_t cap;  /* bytes of data[] */
    size_t used; /* bytes of data[] handed out */
    _Alignas(16) unsigned char data[];
};

void arena_init(struct pv_arena *a, size_t chunk_bytes)
{
    a->head = NULL;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : 64 * 1024;
    a->used_bytes = 0;
}

void arena_release(struct pv_arena *a)
{
    struct pv_arena_chunk *c = a->head;
    while (c) {
        struct pv_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_bytes = 0;
}

void *arena_alloc(struct pv_arena *a, size_t n)
{
    struct pv_arena_chunk *c = a->head;
    size_t need, cap, total;

    if (pv_align_overflow(n ? n : 1, 16, &need))
        return NULL;
    if (!c || c->cap - c->used < need) {
        cap = need > a->chunk_bytes ? need : a->chunk_bytes;
        if (pv_add_overflow(cap, sizeof(*c), &total))
            return NULL;
        c = try_malloc(total);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        /* a chunk for one oversized allocation goes behind the current one */
        if (a->head && cap == need && need > a->chunk_bytes) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += need;
    a->used_bytes += need;
    return p;
}

void *arena_calloc(struct pv_arena *a, size_t count, size_t size)
{
    size_t total;
    if (pv_mul_overflow(count, size, &total))
        return NULL;
    void *p = arena_alloc(a, total);
    if (p)
        memset(p, 0, total);
    return p;
}

char *arena_strndup(struct pv_arena *a, const char *s, size_t n)
{
    size_t total;
    if (pv_add_overflow(n, 1, &total))
        return NULL;
    char *p = arena_alloc(a, total);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(struct pv_arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}
