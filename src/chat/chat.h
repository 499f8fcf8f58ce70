/*
 * chat.h - the chat module: from API requests to the prompt, and from generated text back
 * to text, thinking and tool-call events.
 */
#ifndef PV_CHAT_H
#define PV_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* Built-in template by name ("gemma3", "chatml"), or NULL. Static strings. */
const char *chat_builtin_template(const char *name);
/* The template a model without tokenizer.chat_template gets, by GGUF architecture:
   Gemma's for gemma/gemma2/gemma3, ChatML for anything else. Never NULL. */
const char *chat_default_template(const char *arch);

#endif /* PV_CHAT_H */
