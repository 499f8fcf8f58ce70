"""make_seeds.py - (re)write the seed corpora of the libFuzzer harnesses, tests/fuzz/seeds/.

Seeds come from the tests: tiny synthetic models of tests/tools/gen_model.py (shrunk to
n_embd 32 and one layer so a file stays under libFuzzer's 64 KiB max_len), a byte-level
BPE vocabulary, chat templates of the test cache with a request's context, request bodies
and schemas of the unit and end-to-end tests, model outputs in every tool-call format,
and the tokenizer corpus. The written files are committed; run this after changing what
a harness reads:

    .venv/bin/python tests/fuzz/make_seeds.py
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "fuzz" / "seeds"
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "tok"))

import gguf  # noqa: E402
import gen_model  # noqa: E402


def put(harness, name, data):
    d = SEEDS / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def models():
    gen_model.SHAPES.update(n_embd=32, n_head=2, n_head_kv=1, head_dim=16, n_ff=64)
    out = []
    for arch, wtype in (("llama", "q8_0"), ("gemma3", "q4_0"), ("qwen2", "q8_0"),
                        ("phi3", "q8_0")):
        path = SEEDS / f"{arch}.tmp.gguf"
        gen_model.write_model(path, arch=arch, wtype=wtype, n_layer=1, n_ctx=64)
        data = path.read_bytes()
        path.unlink()
        out.append((f"{arch}-{wtype}.gguf", data))
    return out


def bpe_vocab():
    """A small byte-level BPE vocabulary (qwen2 pre-tokenizer) with merges."""
    byte_chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    extra = [chr(0x100 + i) for i in range(68)]  # the GPT-2 byte map's stand-ins
    toks = byte_chars + extra + ["Ġ", "Ġt", "he", "Ġthe", "in", "Ġa", "er", "on", "Ċ"]
    toks = list(dict.fromkeys(toks)) + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n"]
    path = SEEDS / "bpe.tmp.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(toks)
    w.add_token_types([1] * (len(toks) - 3) + [3, 3, 3])
    w.add_token_merges(merges)
    w.add_bos_token_id(len(toks) - 3)
    w.add_eos_token_id(len(toks) - 1)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    data = path.read_bytes()
    path.unlink()
    return data


TOOLS_OA = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}]
TOOLS_AN = [{"name": "get_weather", "description": "Weather of a city",
             "input_schema": TOOLS_OA[0]["function"]["parameters"]}]
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather",
                                          "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "Thanks <|im_end|> {{ x }}"}]


def main():
    SEEDS.mkdir(parents=True, exist_ok=True)
    for name, data in models():
        put("fuzz_gguf", name, data)
        put("fuzz_vocab", name, data)
    bpe = bpe_vocab()
    put("fuzz_gguf", "bpe-vocab.gguf", bpe)
    put("fuzz_vocab", "bpe-vocab.gguf", bpe)

    # templates with the context a request gives them
    ctx = json.dumps({"messages": MESSAGES, "tools": TOOLS_OA, "add_generation_prompt": True,
                      "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": False})
    tdir = ROOT / "tests" / ".cache" / "templates"
    for t in ("Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.1-8B-Instruct",
              "google-gemma-2-2b-it", "Mistral-Small-3.2-24B-Instruct-2506",
              "NousResearch-Hermes-3-Llama-3.1-8B-tool_use"):
        p = tdir / f"{t}.jinja"
        if p.exists():
            put("fuzz_jinja", t, p.read_bytes() + b"\0" + ctx.encode())
    put("fuzz_jinja", "syntax", "{% for m in messages %}{{ m.role | upper }}{% if loop.last %}!"
        "{% endif %}{% endfor %}{% set ns = namespace(a=1) %}{{ ns.a + 2 * 3 // 2 }}"
        "{{ 'x' ~ [1, 2][1:] | string }}{% macro f(a, b=2) %}{{ a, b }}{% endmacro %}"
        "{{ f(1) }}{{ raise_exception('e') if false }}\0{\"messages\": []}")

    # request bodies of both APIs (the first byte: bit 0 OpenAI, bits 1-2 template)
    bodies = [
        (0, {"model": "m", "max_tokens": 8, "system": [{"type": "text", "text": "s"}],
             "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                          {"role": "assistant", "content": [
                              {"type": "thinking", "thinking": "hm"},
                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                               "input": {"city": "Oslo"}}]},
                          {"role": "user", "content": [
                              {"type": "tool_result", "tool_use_id": "toolu_1",
                               "content": "sunny", "is_error": False}]}],
             "tools": TOOLS_AN, "tool_choice": {"type": "tool", "name": "get_weather"},
             "thinking": {"type": "enabled", "budget_tokens": 100}}),
        (2, {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
             "output_config": {"format": {"type": "json_schema", "schema": {
                 "type": "object", "properties": {"a": {"enum": [1, "b", None]}}}}}}),
        (1, {"model": "m", "messages": MESSAGES, "tools": TOOLS_OA, "tool_choice": "required",
             "parallel_tool_calls": False}),
        (3, {"model": "m", "messages": [{"role": "developer", "content": "d"},
                                        {"role": "user", "content": "hi"}],
             "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                 "anyOf": [{"type": "string", "maxLength": 4}, {"type": "array",
                                                               "items": {"type": "number"},
                                                               "maxItems": 3}]}}},
             "reasoning_effort": "low"}),
        (5, {"model": "m", "messages": [{"role": "user", "content": "hi"}],
             "response_format": {"type": "json_object"}}),
        (6, {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"},
                                                          {"role": "assistant",
                                                           "content": "Once upon"}]}),
    ]
    for i, (sel, body) in enumerate(bodies):
        put("fuzz_request", f"body{i}", bytes([sel]) + json.dumps(body).encode())

    # grammars: schema NUL document
    s = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"},
                                          "unit": {"enum": ["c", "f"]},
                                          "tags": {"type": "array", "items": {"type": "number"},
                                                   "maxItems": 2},
                                          "opt": {"anyOf": [{"type": "string"},
                                                            {"type": "null"}]}},
         "required": ["city", "n"]}
    put("fuzz_grammar", "object", json.dumps(s) + "\0" +
        "{\"n\": -12, \"city\": \"P\\u00e9 \\\"q\\\"\", \"unit\": \"f\", \"tags\": [1.5e3], \"opt\": null}")
    put("fuzz_grammar", "string", "{\"type\":\"string\",\"maxLength\":3}\0\"a\u00e9\u20ac\"")
    put("fuzz_grammar", "enum", "{\"type\":\"array\",\"items\":{\"enum\":[1,12,true]}}\0[12,1,true]")
    put("fuzz_grammar", "tools", json.dumps(TOOLS_OA + [{"type": "function",
                                                         "function": {"name": "f"}}]) +
        "\0{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 2}}")
    put("fuzz_grammar", "any", "not json\0{\"a\":[1,{\"b\":null}],\"c\":\"d\",\"e\":true}")

    # model outputs: format byte (0 none 1 hermes 2 qwen3-coder 3 mistral 4 llama3
    # 5 generic; 0x40 think open, 0x80 stop sequences) then text
    outs = [
        (1, "<think>hm</think>Sure.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
            "{\"city\": \"Oslo\"}}\n</tool_call>"),
        (2, "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n"
            "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>"),
        (3, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]"),
        (3, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}"),
        (4, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"),
        (5, "```json\n{\"name\": \"search\", \"arguments\": {}}\n```"),
        (0x40, "reasoning</think>answer"),
        (0x80, "text then </stop> more"),
    ]
    for i, (b, text) in enumerate(outs):
        put("fuzz_toolparse", f"out{i}", bytes([b]) + text.encode())

    # tokenizer text: flags byte then text
    import corpus
    texts = corpus.PROSE[:8] + corpus.CODE[:2] + ["<s>hi</s> <|im_start|>user\n", "\u00e9\u00e8 \U0001F600 \xff"]
    for i, t in enumerate(texts):
        for h in ("fuzz_tok_spm", "fuzz_tok_bpe"):
            put(h, f"text{i}", bytes([i & 3]) + t.encode("utf-8", "surrogatepass"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
