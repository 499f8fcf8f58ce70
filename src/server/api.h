/*
 * api.h - the validated form of a generation request and the driver that serves it
 * (server-internal).
 *
 * Endpoint files check their API's fields into a `struct api_request`; api_gen.c then
 * renders the conversation (chat/), tokenizes it, checks it against the context, queues
 * it on the engine (gen.h) and writes the reply in the endpoint's shape: Anthropic SSE
 * or JSON, OpenAI chunks or JSON.
 */
#ifndef PV_SERVER_API_H
#define PV_SERVER_API_H

#include "server/http.h"

#define API_MAX_STOP 16
/* max_tokens of an OpenAI chat request that names none (capped to the context left) */
#define API_DEFAULT_MAX_TOKENS 4096
#define API_MAX_CHOICES 128     /* OpenAI n */

enum api_kind { API_MESSAGES, API_COUNT_TOKENS, API_CHAT, API_COMPLETIONS };

struct api_request {
    enum api_kind kind;
    const char *model;          /* as the client named it; echoed back */
    int max_tokens;             /* >= 1; capped to what the context leaves after the prompt */
    bool stream;
    bool include_usage;         /* OpenAI stream_options.include_usage */
    double temperature;         /* < 0: default */
    double top_p;               /* < 0: default */
    int top_k;                  /* < 0: default */
    uint64_t seed;
    const char *stop[API_MAX_STOP]; /* borrowed from r->json */
    int n_stop;
    const char *prompt_text;    /* /v1/completions: the raw prompt */
    int n_choices;              /* OpenAI n: independent completions of one prompt (>= 1) */
    int logprobs;               /* OpenAI: < 0 none; else log-probabilities of each token
                                   with this many most likely alternatives */
};

void api_request_init(struct api_request *q, enum api_kind kind);
/* Serve a validated generation request (any reply, success or error, is queued). */
void api_generate(struct http_req *r, struct api_request *q);
/* Serve count_tokens: {"input_tokens": N} of the prompt a real request would have. */
void api_count_tokens(struct http_req *r, struct api_request *q);

#endif /* PV_SERVER_API_H */
