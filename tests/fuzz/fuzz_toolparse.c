/*
 * fuzz_toolparse.c - the streaming output parser (thinking, stop sequences, every
 * tool-call format): the first byte picks the format and options, the rest is model
 * output fed in pieces whose sizes come from the bytes themselves.
 */
#include <jansson.h>

#include "chat/chat.h"
#include "fuzz.h"

static void on_event(void *ud, const struct chat_event *ev)
{
    size_t *n = ud;
    (*n)++;
    if (ev->text && ev->len)
        (void)((volatile const char *)ev->text)[ev->len - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *tools;
    fuzz_quiet();
    if (!tools)
        tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                           "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
                           "{\"type\":\"string\"},\"days\":{\"type\":\"integer\"},\"on\":"
                           "{\"type\":\"boolean\"},\"xs\":{\"type\":\"array\"}}}}},"
                           "{\"type\":\"function\",\"function\":{\"name\":\"search\"}}]",
                           0, NULL);
    if (size == 0)
        return 0;
    static const char *const stops[] = {"</stop>", "\n\nUser:"};
    struct chat_parser_params pp = {
        .tool_format = (enum chat_tool_format)(data[0] % 6),
        .tools = tools,
        .think_open = (data[0] & 0x40) != 0,
        .stop = stops,
        .n_stop = (data[0] & 0x80) ? 2 : 0,
    };
    size_t n_events = 0;
    struct chat_parser *p = chat_parser_new(&pp, on_event, &n_events);
    if (!p)
        return 0;
    size_t i = 1;
    while (i < size && !chat_parser_stopped(p)) {
        size_t piece = 1 + data[i] % 9;
        if (piece > size - i)
            piece = size - i;
        chat_parser_feed(p, (const char *)data + i, piece);
        i += piece;
    }
    chat_parser_finish(p, (data[0] & 0x20) ? CHAT_STOP_MAX_TOKENS : CHAT_STOP_END_TURN, 10,
                       (int)size);
    chat_parser_free(p);
    return 0;
}
