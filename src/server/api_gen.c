/*
 * api_gen.c - serves a validated generation request (see api.h).
 *
 * Generation has not landed in this build yet: requests that pass validation are
 * answered with an api_error saying so, never with made-up output.
 */
#include <string.h>

#include "server/api.h"
#include "server/gen.h"

void api_request_init(struct api_request *q, enum api_kind kind)
{
    memset(q, 0, sizeof(*q));
    q->kind = kind;
    q->temperature = -1;
    q->top_p = -1;
    q->top_k = -1;
    q->seed = UINT64_MAX; /* random */
}

void api_generate(struct http_req *r, struct api_request *q)
{
    PV_UNUSED(q);
    http_reply_error(r, PV_ERR_INTERNAL, NULL, "generation is not available in this build yet");
}

void api_count_tokens(struct http_req *r, struct api_request *q)
{
    PV_UNUSED(q);
    http_reply_error(r, PV_ERR_INTERNAL, NULL, "token counting is not available in this build yet");
}
