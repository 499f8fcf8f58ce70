/*
 * chat.h - the chat module: from an API request to the prompt the model was trained on,
 * and from the model's generated text back to text, thinking and tool-call events.
 *
 * How the server uses it, per request:
 *
 *   0. Once per model: chat_template_new(pv_model_chat_template(model), pv_model_arch(model),
 *      BOS text, EOS text) and, for constrained decoding, chat_token_table_new(vocab).
 *   1. chat_conv_from_anthropic(body) / chat_conv_from_openai(body) -> struct chat_conv
 *      (PV_ERR_INVALID with a message for a 400: images for this text-only model, bad
 *      shapes). Unknown fields are ignored.
 *   2. chat_render(template, conv) -> struct chat_prompt: the prompt text and its segments;
 *      tokenize with pv_tokenize_segments(vocab, p.segs, p.n_segs, p.starts_with_bos ? 0 :
 *      PV_TOKENIZE_ADD_SPECIAL, ...). Also what count_tokens counts.
 *      chat_grammar_for(conv) -> a grammar when the output is forced (tool_choice
 *      any/tool/required/named, response_format): wrap it in chat_matcher_new and hand it
 *      to the engine as its constraint (see "constrained decoding" below).
 *      Template text may hold control tokens; request text (every string of the
 *      conversation) never becomes one, whatever it contains.
 *   3. chat_parser_params_for(template, conv, prompt) + stop sequences -> chat_parser_new;
 *      feed it the detokenized output as it arrives (chat_parser_feed), then
 *      chat_parser_finish. It calls back with struct chat_event, in order; when
 *      chat_parser_stopped() turns true a stop sequence was met: stop generating.
 *      Feed it text from a detokenizer made without PV_DETOK_SKIP_SPECIAL (and do not push
 *      end-of-generation tokens): Mistral's [TOOL_CALLS] and Llama's <|python_tag|> are
 *      control tokens the parser must see.
 *
 * Events and the two wire formats (one event -> one API element):
 *
 *   CHAT_EV_TEXT {text,len}          Anthropic: content_block_start{type:text} on the first
 *                                    delta of a block, then content_block_delta text_delta.
 *                                    OpenAI: delta.content.
 *   CHAT_EV_THINKING {text,len}      Anthropic: thinking block (thinking_delta; an empty
 *                                    signature_delta before its stop). OpenAI:
 *                                    delta.reasoning_content.
 *   CHAT_EV_TOOL_START {tool_id,name} Anthropic: content_block_start{type:tool_use,id,name,
 *                                    input:{}}. OpenAI: delta.tool_calls[{index,id,type,
 *                                    function:{name,arguments:""}}]. tool_id is the model's
 *                                    own id when it wrote one, else NULL: the server makes
 *                                    one (toolu_..., call_...).
 *   CHAT_EV_TOOL_ARGS {text,len}     Anthropic: input_json_delta.partial_json. OpenAI:
 *                                    function.arguments fragment. The fragments of one call
 *                                    concatenate to a JSON object.
 *   CHAT_EV_TOOL_END                 Anthropic: content_block_stop. OpenAI: nothing.
 *   CHAT_EV_STOP {stop,stop_sequence, Anthropic: message_delta{stop_reason,stop_sequence,
 *     n_input,n_output}              usage} + message_stop. OpenAI: finish_reason
 *                                    (end_turn/stop_sequence -> "stop", max_tokens ->
 *                                    "length", tool_use -> "tool_calls") and usage.
 *   A block of another kind (text after thinking, a tool call after text) closes the open
 *   one: content_block_stop, then the next index.
 *
 * Tool-call formats parsed (all tolerant; a call that does not parse is given back as
 * text, never as an error): Hermes/Qwen `<tool_call>{"name":..,"arguments":{..}}
 * </tool_call>` (also used by the fallback below), Qwen3-Coder `<tool_call><function=NAME>
 * <parameter=P>value</parameter></function></tool_call>` (opening tag optional, values
 * typed by the tool's schema), Mistral `[TOOL_CALLS][{"name":..,"arguments":..}]` and
 * `[TOOL_CALLS]NAME[ARGS]{..}`, Llama 3 `{"name":..,"parameters":..}` (optionally after
 * <|python_tag|>), and the generic form: a bare JSON call object (or ```json fenced) as
 * the whole start of a reply. Reasoning in <think>...</think> becomes thinking, also when
 * the prompt already opened <think> (DeepSeek-R1 distills).
 *
 * Templates: the model's tokenizer.chat_template, rendered by the Jinja interpreter of
 * jinja.h exactly as Python's jinja2 renders it in Hugging Face's environment. A model
 * without one gets its family's built-in (Gemma's template for gemma*, ChatML otherwise).
 * Tool fallback, for templates that do not read `tools`: the tool list (one OpenAI
 * function signature per line in <tools>) and an instruction to answer with
 * <tool_call>{"name","arguments"}</tool_call> are appended to the system prompt; earlier
 * calls become that text in the assistant turn, tool results become user turns wrapped in
 * <tool_response>, and same-role neighbours are merged; the Hermes parser reads the reply.
 * Mid-conversation system messages become user text "System: ...". For Mistral templates,
 * which only accept 9-alphanumeric tool-call ids, each id is replaced by a stable 9-character
 * hash of itself (calls and results keep matching; the prompt stays the same across turns).
 */
#ifndef PV_CHAT_H
#define PV_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* ---- conversation ----------------------------------------------------------------- */

enum chat_tool_choice {
    CHAT_TOOLS_AUTO,     /* model decides (default) */
    CHAT_TOOLS_NONE,     /* tools are not offered */
    CHAT_TOOLS_REQUIRED, /* Anthropic "any", OpenAI "required": some tool must be called */
    CHAT_TOOLS_NAMED     /* that tool must be called (tool_name) */
};

enum chat_format { CHAT_FORMAT_TEXT, CHAT_FORMAT_JSON_OBJECT, CHAT_FORMAT_JSON_SCHEMA };

struct chat_conv {
    json_t *messages;      /* HF shape: [{role, content, tool_calls?, tool_call_id?, name?,
                              reasoning_content?}], owned */
    json_t *tools;         /* [{"type":"function","function":{name,description,parameters}}]
                              or NULL; owned */
    enum chat_tool_choice tool_choice;
    char *tool_name;       /* CHAT_TOOLS_NAMED; owned */
    bool parallel_tool_calls;
    int thinking;          /* -1 not asked, 0 disabled, 1 enabled (passed as enable_thinking) */
    enum chat_format format;
    json_t *schema;        /* CHAT_FORMAT_JSON_SCHEMA: the schema; owned */
};

/*
 * Convert a request body (already parsed JSON; the caller keeps ownership). On success
 * *c is initialized and owned by the caller (chat_conv_release). On failure *c is empty
 * and err holds a message for a 400 (PV_ERR_INVALID) or PV_ERR_NOMEM.
 * Anthropic: system (string or text blocks), messages with roles user/assistant/system
 * (other roles speak as the user), content string or blocks text/image (refused: the
 * models are text-only)/document (plain text only)/tool_use/tool_result (string or
 * blocks, is_error prefixes "Error: ")/thinking/redacted_thinking/mid_conv_system;
 * tools, tool_choice, thinking, output_config.format.
 * OpenAI: messages with roles system/developer/user/assistant (tool_calls, arguments a
 * JSON string)/tool/function; tools, tool_choice, parallel_tool_calls, response_format,
 * reasoning_effort.
 * Thread-safe (no shared state).
 */
enum pv_status chat_conv_from_anthropic(const json_t *body, struct chat_conv *c, struct pv_err *err);
enum pv_status chat_conv_from_openai(const json_t *body, struct chat_conv *c, struct pv_err *err);
void chat_conv_release(struct chat_conv *c);

/* ---- templates and prompts -------------------------------------------------------- */

enum chat_tool_format {
    CHAT_TOOLFMT_NONE,        /* no tools in this request: never parse calls */
    CHAT_TOOLFMT_HERMES,      /* <tool_call>{json}</tool_call> (Qwen2.5, Hermes, fallback) */
    CHAT_TOOLFMT_QWEN3_CODER, /* <tool_call><function=..><parameter=..> */
    CHAT_TOOLFMT_MISTRAL,     /* [TOOL_CALLS] */
    CHAT_TOOLFMT_LLAMA3,      /* {"name":..,"parameters":..} / <|python_tag|> */
    CHAT_TOOLFMT_GENERIC      /* bare JSON call objects */
};

struct chat_template; /* opaque; immutable once made: any thread may render with it */

/*
 * Parse `source` (the model's tokenizer.chat_template; NULL or "" for the built-in of
 * `arch`). bos/eos are the texts of the vocabulary's BOS/EOS tokens (templates print
 * them; may be NULL). On success *out is owned by the caller (chat_template_free); on a
 * template syntax error PV_ERR_FORMAT with "chat template syntax error at L:C: ...".
 */
enum pv_status chat_template_new(const char *source, const char *arch, const char *bos,
                                 const char *eos, struct chat_template **out, struct pv_err *err);
void chat_template_free(struct chat_template *t);
enum chat_tool_format chat_template_tool_format(const struct chat_template *t);
/* True when the template renders tool definitions itself (reads `tools`). */
bool chat_template_native_tools(const struct chat_template *t);

struct chat_prompt {
    struct pv_buf text;           /* the rendered prompt */
    struct pv_buf taint;          /* one byte per text byte: 1 = from the request */
    struct pv_text_segment *segs; /* [n_segs] over text: template text has parse_special */
    size_t n_segs;
    bool think_open;              /* the prompt ends inside <think>: output starts as thinking */
    bool prefill;                 /* the last assistant message is continued */
    bool starts_with_bos;         /* the template wrote the BOS text itself: tokenize with
                                     flags 0, else with PV_TOKENIZE_ADD_SPECIAL when the
                                     vocabulary adds BOS (never two BOS tokens) */
};

/*
 * Render conversation `c` with template `t`: variables messages, tools (native tool
 * templates only; null otherwise), add_generation_prompt (false when the last message is
 * an assistant message to continue: the prompt then ends right after its text),
 * bos_token, eos_token, enable_thinking (when the request said), and strftime_now /
 * raise_exception. On success *out is owned by the caller (chat_prompt_release). A
 * template that raises or fails gives PV_ERR_INVALID "chat template error at L:C: ...",
 * which the server reports as a 400. Thread-safe.
 */
enum pv_status chat_render(const struct chat_template *t, const struct chat_conv *c,
                           struct chat_prompt *out, struct pv_err *err);
void chat_prompt_release(struct chat_prompt *p);

/* Built-in template by name ("gemma3", "chatml"), or NULL. Static strings. */
const char *chat_builtin_template(const char *name);
/* The template a model without tokenizer.chat_template gets, by GGUF architecture:
   Gemma's for gemma/gemma2/gemma3, ChatML for anything else. Never NULL. */
const char *chat_default_template(const char *arch);

/* ---- output parsing --------------------------------------------------------------- */

enum chat_ev_type {
    CHAT_EV_TEXT, CHAT_EV_THINKING, CHAT_EV_TOOL_START, CHAT_EV_TOOL_ARGS, CHAT_EV_TOOL_END,
    CHAT_EV_STOP
};

enum chat_stop { CHAT_STOP_END_TURN, CHAT_STOP_MAX_TOKENS, CHAT_STOP_SEQUENCE, CHAT_STOP_TOOL_USE };

struct chat_event {
    enum chat_ev_type type;
    const char *text;          /* TEXT, THINKING, TOOL_ARGS: bytes (valid UTF-8), borrowed */
    size_t len;
    const char *tool_id;       /* TOOL_START: the model's id or NULL */
    const char *tool_name;     /* TOOL_START */
    enum chat_stop stop;       /* STOP */
    const char *stop_sequence; /* STOP with CHAT_STOP_SEQUENCE: the one met */
    int n_input, n_output;     /* STOP: usage as given to chat_parser_finish */
};

/* Called for each event; pointers are valid during the call only. */
typedef void (*chat_event_fn)(void *ud, const struct chat_event *ev);

struct chat_parser_params {
    enum chat_tool_format tool_format; /* NONE: tool calls are text */
    const json_t *tools;               /* borrowed: names and schemas (Qwen3-Coder types) */
    bool think_open;                   /* output starts inside <think> */
    const char *const *stop;           /* stop sequences (borrowed during chat_parser_new) */
    size_t n_stop;
};

/* Parser parameters for a rendered request (fill in stop sequences yourself). A request
   whose output a grammar forces (chat_grammar_for) starts outside <think>. */
void chat_parser_params_for(const struct chat_template *t, const struct chat_conv *c,
                            const struct chat_prompt *p, struct chat_parser_params *pp);

struct chat_parser;
/* A parser for one generation; owned by one thread at a time. NULL only on OOM. */
struct chat_parser *chat_parser_new(const struct chat_parser_params *pp, chat_event_fn fn, void *ud);
void chat_parser_free(struct chat_parser *p);
/* Feed generated text (any split, even inside a UTF-8 character or a marker). Text
   that may be the start of a stop sequence or a marker is held until it is decided. */
void chat_parser_feed(struct chat_parser *p, const char *text, size_t len);
/* True once a stop sequence was met: further text is ignored; stop generating. */
bool chat_parser_stopped(const struct chat_parser *p);
/* End of generation: flush what is held (an unfinished call is parsed if it can be, else
   given back as text) and send CHAT_EV_STOP. `reason` is END_TURN (end-of-generation
   token) or MAX_TOKENS; a met stop sequence gives STOP_SEQUENCE, and END_TURN after a
   tool call becomes TOOL_USE. */
void chat_parser_finish(struct chat_parser *p, enum chat_stop reason, int n_input, int n_output);
/* Number of tool calls emitted so far. */
int chat_parser_n_tool_calls(const struct chat_parser *p);

/* ---- constrained decoding -------------------------------------------------------- */

/*
 * A JSON grammar: from a JSON schema (type object with properties/required (keys in any
 * order, each at most once, only the listed ones), array with items/minItems/maxItems,
 * string (maxLength), number, integer, boolean, null, enum/const, anyOf/oneOf/type lists whose
 * alternatives differ in their first character, $ref and the rest: any JSON), "any JSON
 * object", or a tool call {"name": <one of the tools>, "arguments": <its schema>}.
 * Between tokens one space is allowed (json.dumps style: fewer tokens, no runaway
 * indentation); digit runs in numbers are at most 15 long. Owned by the caller
 * until given to a matcher.
 */
struct chat_grammar;
/* NULL when the schema needs more than 4096 nodes (nodes plus enum/const values). */
struct chat_grammar *chat_grammar_from_schema(const json_t *schema);
struct chat_grammar *chat_grammar_json_object(void);
/* Tool call for `tools` (OpenAI function shape); only the tool `only` when not NULL.
   NULL when no tool matches or the schemas need more than 4096 nodes. */
struct chat_grammar *chat_grammar_tool_call(const json_t *tools, const char *only);
/* The grammar a request needs into *out: a tool call for tool_choice required/named (the
   output is then the generic JSON call form, which the parser reads for every format),
   response_format json_schema/json_object; *out NULL when output is free.
   PV_ERR_INVALID (a 400) when the schema is over the grammar's size limit. */
enum pv_status chat_grammar_for(const struct chat_conv *c, struct chat_grammar **out,
                                struct pv_err *err);
void chat_grammar_free(struct chat_grammar *g);

/* Piece bytes of every token of a vocabulary, grouped by first byte: make once per
   model (about 10 ms for 262144 tokens), share between requests (read-only). */
struct chat_token_table;
struct chat_token_table *chat_token_table_new(const struct pv_vocab *v);
void chat_token_table_free(struct chat_token_table *t);

/*
 * A matcher: grammar state for one generation (takes ownership of g; t is borrowed and
 * must outlive it). mask() sets the logits of tokens that cannot continue the grammar to
 * -INFINITY (end-of-generation tokens are allowed only once the JSON is complete; if no
 * token fits, only they are); accept() advances by the sampled token. For the engine
 * hook (server gen.h struct gen_constraint): state = matcher, mask =
 * chat_constraint_mask, accept = chat_constraint_accept, release = chat_constraint_release.
 */
struct chat_matcher;
struct chat_matcher *chat_matcher_new(struct chat_grammar *g, const struct chat_token_table *t);
void chat_matcher_free(struct chat_matcher *m);
void chat_matcher_mask(struct chat_matcher *m, float *logits, size_t n_vocab);
void chat_matcher_accept(struct chat_matcher *m, int32_t token);
/* Advance by raw bytes (tests); false at the first byte the grammar refuses. */
bool chat_matcher_feed(struct chat_matcher *m, const char *s, size_t n);
/* True when the text so far is a complete value. */
bool chat_matcher_done(const struct chat_matcher *m);
void chat_constraint_mask(void *state, float *logits, size_t n_vocab);
void chat_constraint_accept(void *state, int32_t token);
void chat_constraint_release(void *state);

#endif /* PV_CHAT_H */
