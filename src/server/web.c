/*
 * web.c - GET /: the web chat page, served from the binary.
 *
 * The page is src/server/web_page.html, assembled into this object file as it is
 * (.incbin; the Makefile rebuilds web.o when the page changes): no external file, no
 * CDN. It streams replies through POST /v1/messages, so it needs nothing else of the
 * server; the route is public (the page asks for the API key when the server wants one).
 */
#include <string.h>

#include "server/http.h"

/* The page's bytes, NUL-terminated. */
__asm__(".section .rodata\n"
        ".balign 16\n"
        "pv_web_page:\n"
        ".incbin \"src/server/web_page.html\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char pv_web_page[] __asm__("pv_web_page");

void http_handle_web(struct http_req *r)
{
    http_reply_text(r, 200, "text/html; charset=utf-8", pv_web_page);
}
