/*
 * buf.c - growable byte buffers that are always valid C strings.
 *
 * Used for everything built piece by piece: JSON bodies, SSE events, prompts, log lines.
 * Appends return false on OOM and leave the buffer as it was, so a failed request can
 * still be answered.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

char pv_buf_empty[1];

void buf_init(struct pv_buf *b)
{
    b->data = pv_buf_empty;
    b->len = 0;
    b->cap = 0;
}

void buf_release(struct pv_buf *b)
{
    if (b->cap)
        free(b->data);
    buf_init(b);
}

void buf_reset(struct pv_buf *b)
{
    b->len = 0;
    if (b->cap)
        b->data[0] = '\0';
}

bool buf_reserve(struct pv_buf *b, size_t extra)
{
    size_t need, cap;
    if (pv_add_overflow(b->len, extra, &need) || pv_add_overflow(need, 1, &need))
        return false;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (pv_mul_overflow(cap, 2, &cap))
            return false;
    }
    char *p = realloc(b->cap ? b->data : NULL, cap);
    if (!p)
        return false;
    if (!b->cap)
        p[0] = '\0';
    b->data = p;
    b->cap = cap;
    return true;
}

bool buf_append(struct pv_buf *b, const void *p, size_t n)
{
    if (!buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool buf_puts(struct pv_buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

bool buf_putc(struct pv_buf *b, char c)
{
    return buf_append(b, &c, 1);
}

bool buf_vprintf(struct pv_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    char small[256];
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return false;
    if ((size_t)n < sizeof(small))
        return buf_append(b, small, (size_t)n);
    if (!buf_reserve(b, (size_t)n))
        return false;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return true;
}

bool buf_printf(struct pv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return ok;
}

char *buf_detach(struct pv_buf *b, size_t *len)
{
    char *p = b->cap ? b->data : xstrdup("");
    if (len)
        *len = b->len;
    buf_init(b);
    return p;
}
