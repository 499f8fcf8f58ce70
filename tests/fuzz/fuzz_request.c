/*
 * fuzz_request.c - the request mapping of both APIs: a JSON body (the first byte picks
 * Anthropic or OpenAI and the chat template) into a conversation, rendered into a prompt,
 * with the grammar a forced tool call or response_format asks for.
 */
#include <jansson.h>

#include "chat/chat.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct chat_template *tmpl[4];
    static int n_tmpl;
    struct pv_err err = {0};
    fuzz_quiet();
    if (!tmpl[0]) {
        /* the built-in templates: Gemma's, ChatML, and the Llama-family fallback */
        if (chat_template_new(NULL, "gemma3", "<bos>", "<eos>", &tmpl[0], &err) != PV_OK ||
            chat_template_new(NULL, "qwen2", "", "<|im_end|>", &tmpl[1], &err) != PV_OK ||
            chat_template_new(NULL, "llama", "<s>", "</s>", &tmpl[2], &err) != PV_OK) {
            fprintf(stderr, "fuzz: %s\n", err.msg);
            abort();
        }
        n_tmpl = 3;
        /* a real template with tool support, when the test cache has it */
        FILE *f = fopen("tests/.cache/templates/Qwen-Qwen2.5-7B-Instruct.jinja", "rb");
        if (f) {
            static char src[1 << 16];
            size_t n = fread(src, 1, sizeof(src) - 1, f);
            src[n] = '\0';
            fclose(f);
            if (chat_template_new(src, "qwen2", "", "<|im_end|>", &tmpl[3], &err) == PV_OK)
                n_tmpl = 4;
        }
    }
    if (size == 0)
        return 0;
    json_t *body = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    struct chat_conv c;
    enum pv_status st = (data[0] & 1) ? chat_conv_from_openai(body, &c, &err)
                                      : chat_conv_from_anthropic(body, &c, &err);
    if (st == PV_OK) {
        struct chat_prompt p;
        if (chat_render(tmpl[(data[0] >> 1) % n_tmpl], &c, &p, &err) == PV_OK) {
            struct chat_parser_params pp;
            chat_parser_params_for(tmpl[(data[0] >> 1) % n_tmpl], &c, &p, &pp);
            chat_prompt_release(&p);
        }
        struct chat_grammar *g = NULL;
        if (chat_grammar_for(&c, &g, &err) == PV_OK && g) {
            struct chat_matcher *m = chat_matcher_new(g, NULL);
            static const char doc[] = "{\"name\": \"f\", \"arguments\": {\"a\": [1, \"x\"]}}";
            if (m)
                (void)chat_matcher_feed(m, doc, sizeof(doc) - 1);
            chat_matcher_free(m);
        }
        chat_conv_release(&c);
    }
    json_decref(body);
    return 0;
}
