"""API details other clients rely on, on the default model with the official SDKs and raw HTTP.

- Generated text keeps its leading whitespace in all three APIs (streamed and not): the
  served text equals `pensieve run` on the same prompt tokens (greedy), e.g. the " the" of
  a completion and the "\\n    " that continues an assistant prefill "def add(a, b):".
- logprobs / top_logprobs (chat and completions, streamed too) equal the log-softmax of the
  logits `pensieve run --all-logits` computes for the same tokens.
- n > 1, the routes without /v1, the default max_tokens, the 400s of malformed Anthropic
  blocks / unknown roles / invalid tool arguments, --cors-origin.
"""
import json
import pathlib
import subprocess

import anthropic
import numpy as np
import openai
import pytest
import requests
from pensieve_tests import prompt_tokens

BIN = pathlib.Path(__file__).resolve().parents[2] / "build" / "pensieve"  # as tests/conftest.py

PREFILL = [{"role": "user", "content": "Write a Python function add."},
           {"role": "assistant", "content": "def add(a, b):"}]
COMPLETION_PROMPT = "The capital of France is"
N = 10


@pytest.fixture(scope="module")
def srv(start_server, default_model):
    return start_server(["-m", str(default_model), "--ctx-size", "1024",
                         "--cors-origin", "http://page.test, http://other.test"])


@pytest.fixture(scope="module")
def oa(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def an(srv):
    return anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)


def run(model, *args):
    r = subprocess.run([str(BIN), "run", "-m", str(model), "--temperature", "0", *args],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def tokenize(model, text):
    r = subprocess.run([str(BIN), "tokenize", "-m", str(model), text], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [int(t) for t in r.stdout.split()]


@pytest.fixture(scope="module")
def prefill_ids(default_model):
    """PREFILL as the chat layer renders and tokenizes it (Gemma 3's template, the
    assistant turn left open), from the test tool over the same library."""
    inp = {"model": str(default_model), "random": True, "prompt_only": True,
           "requests": [{"messages": PREFILL}]}
    r = subprocess.run([str(BIN.parent / "tools" / "chat_forced")], input=json.dumps(inp).encode(),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout)[0]
    assert res["prompt"].endswith("<start_of_turn>model\ndef add(a, b):")
    return res["ids"]


@pytest.fixture(scope="module")
def prefill_want(default_model, prefill_ids):
    ids = " ".join(map(str, prefill_ids))
    return run(default_model, "--prompt-ids", ids, "-n", str(N)).decode()


@pytest.fixture(scope="module")
def completion_want(default_model):
    return run(default_model, "-p", COMPLETION_PROMPT, "-n", str(N)).decode()


# ---- leading whitespace --------------------------------------------------------------------

def test_reference_texts_start_with_whitespace(prefill_want, completion_want):
    # what makes the tests below able to fail: both continuations start with whitespace
    assert prefill_want[:1] == "\n" and prefill_want.lstrip() != prefill_want
    assert completion_want[:1] == " "


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_keeps_leading_whitespace(an, prefill_ids, prefill_want, stream):
    if stream:
        # this SDK version has no temperature parameter
        with an.messages.stream(model="m", max_tokens=N, messages=PREFILL,
                                extra_body={"temperature": 0}) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
    else:
        final = an.messages.create(model="m", max_tokens=N, messages=PREFILL,
                                   extra_body={"temperature": 0})
        text = final.content[0].text
    assert prompt_tokens(final.usage) == len(prefill_ids)
    assert text == prefill_want


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_keeps_leading_whitespace(oa, prefill_ids, prefill_want, stream):
    if stream:
        chunks = list(oa.chat.completions.create(model="m", max_tokens=N, temperature=0,
                                                 messages=PREFILL, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        c = oa.chat.completions.create(model="m", max_tokens=N, temperature=0, messages=PREFILL)
        assert c.usage.prompt_tokens == len(prefill_ids)
        text = c.choices[0].message.content
    assert text == prefill_want


@pytest.mark.parametrize("stream", [False, True])
def test_completions_keep_leading_whitespace(oa, completion_want, stream):
    if stream:
        chunks = list(oa.completions.create(model="m", prompt=COMPLETION_PROMPT, max_tokens=N,
                                            temperature=0, stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = oa.completions.create(model="m", prompt=COMPLETION_PROMPT, max_tokens=N,
                                     temperature=0).choices[0].text
    assert text == completion_want


# ---- logprobs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def completion_logsoftmax(default_model, tmp_path_factory):
    """log-softmax of pensieve run's logits at the positions that chose the greedy tokens."""
    prompt = tokenize(default_model, COMPLETION_PROMPT)
    gen = [int(t) for t in run(default_model, "-p", COMPLETION_PROMPT, "-n", "5",
                               "--print-ids").split()]
    assert len(gen) == 5
    out = tmp_path_factory.mktemp("lp") / "logits.f32"
    ids = prompt + gen[:-1]
    run(default_model, "--prompt-ids", " ".join(map(str, ids)), "-n", "1",
        "--all-logits", str(out))
    logits = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1).astype(np.float64)
    rows = logits[len(prompt) - 1:]
    mx = rows.max(1, keepdims=True)
    lsm = rows - mx - np.log(np.exp(rows - mx).sum(1, keepdims=True))
    return prompt, gen, lsm


def test_completions_logprobs_match_the_logits(oa, completion_logsoftmax):
    prompt, gen, lsm = completion_logsoftmax
    c = oa.completions.create(model="m", prompt=COMPLETION_PROMPT, max_tokens=5, temperature=0,
                              logprobs=3)
    assert c.usage.prompt_tokens == len(prompt)
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for i, tok in enumerate(gen):
        # the first token comes from the prompt's batch, like run's; later ones from one-token
        # steps, whose matmuls sum in another order than a batch (last-bit noise, amplified)
        tol = 1e-4 if i == 0 else 0.25
        assert lp.token_logprobs[i] == pytest.approx(lsm[i, tok], abs=tol)
        top = lp.top_logprobs[i]
        assert len(top) == 3 and max(top.values()) == pytest.approx(lp.token_logprobs[i])
        best3 = np.sort(lsm[i])[::-1][:3]
        assert sorted(top.values(), reverse=True) == pytest.approx(list(best3), abs=tol)
    # streamed: the same values, spread over the chunks
    chunks = list(oa.completions.create(model="m", prompt=COMPLETION_PROMPT, max_tokens=5,
                                        temperature=0, logprobs=3, stream=True))
    streamed = [v for c in chunks if c.choices and c.choices[0].logprobs
                for v in c.choices[0].logprobs.token_logprobs]
    assert streamed == pytest.approx(lp.token_logprobs, abs=1e-6)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs(oa, stream):
    kw = dict(model="m", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6,
              temperature=0, logprobs=True, top_logprobs=4)
    if stream:
        chunks = list(oa.chat.completions.create(stream=True, **kw))
        entries = [e for c in chunks if c.choices and c.choices[0].logprobs
                   for e in c.choices[0].logprobs.content]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        n_out = len(entries)
    else:
        c = oa.chat.completions.create(**kw)
        entries = c.choices[0].logprobs.content
        text = c.choices[0].message.content
        n_out = c.usage.completion_tokens
    assert 0 < len(entries) == n_out
    assert "".join(e.token for e in entries).startswith(text.rstrip())
    for e in entries:
        assert e.logprob <= 0 and bytes(e.bytes) == e.token.encode()
        assert len(e.top_logprobs) == 4
        vals = [t.logprob for t in e.top_logprobs]
        assert vals == sorted(vals, reverse=True)
        # greedy: the chosen token is the most likely one
        assert e.top_logprobs[0].token == e.token and vals[0] == pytest.approx(e.logprob)


def test_no_logprobs_unless_asked(oa, srv):
    c = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                   max_tokens=2)
    assert c.choices[0].logprobs is None
    r = requests.post(srv.url + "/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2})
    assert r.status_code == 400 and "logprobs" in r.json()["error"]["message"]
    r = requests.post(srv.url + "/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True,
        "top_logprobs": 21})
    assert r.status_code == 400


# ---- n > 1 -----------------------------------------------------------------------------------

def test_n_choices(oa):
    msgs = [{"role": "user", "content": "Say a word."}]
    c = oa.chat.completions.create(model="m", messages=msgs, max_tokens=4, n=3, seed=7,
                                   temperature=1.0)
    assert [ch.index for ch in c.choices] == [0, 1, 2]
    assert all(isinstance(ch.message.content, str) for ch in c.choices)
    assert c.usage.completion_tokens > 0 and c.usage.completion_tokens <= 12
    greedy = oa.chat.completions.create(model="m", messages=msgs, max_tokens=4, n=2,
                                        temperature=0)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    chunks = list(oa.chat.completions.create(model="m", messages=msgs, max_tokens=4, n=2,
                                             temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    finishes = {}
    for ch in chunks:
        for choice in ch.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts[0] == texts[1] == greedy.choices[0].message.content
    assert set(finishes) == {0, 1}
    assert chunks[-1].usage.completion_tokens == greedy.usage.completion_tokens
    cp = oa.completions.create(model="m", prompt=COMPLETION_PROMPT, max_tokens=3, n=2,
                               temperature=0)
    assert [ch.index for ch in cp.choices] == [0, 1] and cp.choices[0].text == cp.choices[1].text


# ---- routes, defaults --------------------------------------------------------------------------

def test_routes_without_v1(srv):
    base = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
    c = base.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                     max_tokens=2)
    assert c.object == "chat.completion"
    assert base.completions.create(model="m", prompt="a", max_tokens=1).object == "text_completion"
    assert [m.id for m in base.models.list()]
    assert requests.get(srv.url + "/models/whatever").status_code == 200
    r = requests.post(srv.url + "/messages", json={"model": "m", "max_tokens": 1,
                                                   "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"
    r = requests.post(srv.url + "/messages/count_tokens",
                      json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.json()["input_tokens"] > 0
    assert requests.post(srv.url + "/v2/chat/completions", json={}).status_code == 404


def test_default_max_tokens_is_bounded(start_server, default_model):
    # without max_tokens a chat gets min(4096, --max-tokens-limit), not the whole context
    s = start_server(["-m", str(default_model), "--ctx-size", "512", "--max-tokens-limit", "3"])
    r = requests.post(s.url + "/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "Tell me a long story."}],
        "temperature": 0})
    assert r.status_code == 200, r.text
    assert 0 < r.json()["usage"]["completion_tokens"] <= 3


# ---- 400s where the official APIs give them ------------------------------------------------

def post_messages(srv, messages):
    return requests.post(srv.url + "/v1/messages", json={"model": "m", "max_tokens": 4,
                                                         "messages": messages})


@pytest.mark.parametrize("block,want", [
    ({"type": "tool_use", "name": "f", "input": {}}, "messages.1.content.0.tool_use.id: Field required"),
    ({"type": "tool_use", "id": "t1", "name": "f"}, "messages.1.content.0.tool_use.input: Field required"),
    ({"type": "tool_use", "id": "t1", "name": "f", "input": "x"},
     "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
    ({"type": "thinking", "signature": ""}, "messages.1.content.0.thinking.thinking: Field required"),
    ({"type": "thinking", "thinking": "", "signature": ""}, "thinking.thinking"),
    ({"type": "text"}, "messages.1.content.0.text.text: Field required"),
])
def test_anthropic_malformed_assistant_blocks(srv, block, want):
    r = post_messages(srv, [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": [block]},
                            {"role": "user", "content": "again"}])
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert want in err["error"]["message"]


def test_anthropic_tool_result_without_id_and_unknown_role(srv, an):
    r = post_messages(srv, [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}])
    assert r.status_code == 400
    assert "messages.0.content.0.tool_result.tool_use_id: Field required" in r.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        an.messages.create(model="m", max_tokens=4, messages=[{"role": "robot", "content": "x"}])
    assert "messages.0.role: Input should be 'user', 'assistant' or 'system'" in str(e.value)
    # what Claude Code sends stays accepted: system turns, empty-signature thinking, tools
    ok = post_messages(srv, [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": [
                                 {"type": "thinking", "thinking": "hm", "signature": ""},
                                 {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                             {"role": "user", "content": [{"type": "tool_result",
                                                           "tool_use_id": "t1", "content": "ok"}]},
                             {"role": "system", "content": "Be brief."}])
    assert ok.status_code == 200, ok.text


def test_openai_unknown_role_and_bad_tool_arguments(oa):
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model="m", max_tokens=2,
                                   messages=[{"role": "robot", "content": "x"}])
    assert "Invalid value: 'robot'" in str(e.value)
    bad = [{"role": "user", "content": "hi"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
           {"role": "tool", "tool_call_id": "c1", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model="m", max_tokens=2, messages=bad)
    assert "messages[1].tool_calls[0].function.arguments" in str(e.value)
    bad[1]["tool_calls"][0]["function"]["arguments"] = '{"a": 1}'
    assert oa.chat.completions.create(model="m", max_tokens=2, messages=bad).choices


# ---- CORS ------------------------------------------------------------------------------------

def test_cors(srv, start_server, default_model):
    pre = requests.options(srv.url + "/v1/messages", headers={
        "Origin": "http://page.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://page.test"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "x-api-key" in pre.headers["access-control-allow-headers"]
    r = requests.post(srv.url + "/v1/messages/count_tokens", headers={"Origin": "http://other.test"},
                      json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.headers["access-control-allow-origin"] == "http://other.test"
    r = requests.get(srv.url + "/v1/models", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in r.headers
    # without --cors-origin no CORS header at all
    plain = start_server(["-m", str(default_model), "--ctx-size", "256"])
    r = requests.get(plain.url + "/v1/models", headers={"Origin": "http://page.test"})
    assert "access-control-allow-origin" not in r.headers


# ---- tool arguments --------------------------------------------------------------------------

TOOL_USER = "Write a Python function that adds two numbers, with the write_code tool."
TOOL_SCHEMA = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}


@pytest.fixture(scope="module")
def forced_call(default_model):
    """The forced call the chat layer generates without the server (greedy, same grammar)."""
    inp = {"model": str(default_model), "random": False, "max_tokens": 40, "requests": [{
        "openai": True, "messages": [{"role": "user", "content": TOOL_USER}],
        "tools": [{"type": "function", "function": {"name": "write_code", "parameters": TOOL_SCHEMA}}],
        "tool_choice": "required"}]}
    r = subprocess.run([str(BIN.parent / "tools" / "chat_forced")], input=json.dumps(inp).encode(),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout)[0]
    assert len(res["calls"]) == 1
    return res["calls"][0]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_arguments_as_generated(start_server, default_model, forced_call, api, stream):
    """Served tool arguments (both APIs, streamed and not) are the generated ones. A fresh
    server each time: a prompt read from the prefix cache ends in a one-token step, whose
    logits differ in the last bits from a batch's, enough to change this small model's
    choice between near-equal tokens."""
    s = start_server(["-m", str(default_model), "--ctx-size", "1024"])
    oa = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
    an = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    tools = [{"type": "function", "function": {"name": "write_code", "parameters": TOOL_SCHEMA}}]
    kw = dict(model="m", max_tokens=40, temperature=0, tools=tools, tool_choice="required",
              messages=[{"role": "user", "content": TOOL_USER}])
    if api == "openai":
        if stream:
            args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                           for c in oa.chat.completions.create(stream=True, **kw)
                           if c.choices and c.choices[0].delta.tool_calls)
        else:
            args = oa.chat.completions.create(**kw).choices[0].message.tool_calls[0].function.arguments
        assert json.loads(args) == forced_call["arguments"]
        return
    akw = dict(model="m", max_tokens=40, extra_body={"temperature": 0},
               tools=[{"name": "write_code", "input_schema": TOOL_SCHEMA}],
               tool_choice={"type": "any"}, messages=[{"role": "user", "content": TOOL_USER}])
    if stream:
        with an.messages.stream(**akw) as s:
            m = s.get_final_message()
    else:
        m = an.messages.create(**akw)
    use = [b for b in m.content if b.type == "tool_use"]
    assert len(use) == 1 and use[0].input == forced_call["arguments"]
