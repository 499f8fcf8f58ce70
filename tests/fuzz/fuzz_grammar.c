/*
 * fuzz_grammar.c - the JSON-schema grammar compiler and its byte matcher: input is a
 * schema (JSON), a NUL, and a document fed byte by byte. A schema that is not JSON is
 * used as a tool list for the forced-tool-call grammar instead.
 */
#include <jansson.h>

#include "chat/chat.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *schema_text;
    const uint8_t *doc;
    size_t n_doc;
    fuzz_quiet();
    fuzz_split(data, size, &schema_text, &doc, &n_doc);
    json_t *schema = json_loads(schema_text, JSON_DECODE_ANY, NULL);
    struct chat_grammar *g;
    if (json_is_array(schema))
        g = chat_grammar_tool_call(schema, n_doc & 1 ? NULL : "f");
    else if (schema)
        g = chat_grammar_from_schema(schema);
    else
        g = chat_grammar_json_object();
    if (g) {
        struct chat_matcher *m = chat_matcher_new(g, NULL);
        for (size_t i = 0; m && i < n_doc; i++)
            if (!chat_matcher_feed(m, (const char *)doc + i, 1))
                break;
        if (m)
            (void)chat_matcher_done(m);
        chat_matcher_free(m);
    }
    json_decref(schema);
    free(schema_text);
    return 0;
}
