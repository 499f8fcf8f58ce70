"""POST /v1/chat/completions with the official openai SDK and raw SSE on the default model:
shapes, streaming with usage, roles, errors. The model's words are not checked."""
import json

import openai
import pytest
import requests

def utf8_lines(resp):
    """Lines of a streamed response as text (split on CR/LF only, decoded as UTF-8)."""
    return (line.decode("utf-8") for line in resp.iter_lines())


USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def srv(start_server, default_model):
    return start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "2"])


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)


def test_chat_create(client):
    c = client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=8)
    assert c.id.startswith("chatcmpl-") and c.object == "chat.completion"
    assert c.model == "gpt-4o"
    ch = c.choices[0]
    assert ch.index == 0 and ch.message.role == "assistant"
    assert ch.finish_reason in ("stop", "length")
    assert isinstance(ch.message.content, str)
    assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 8
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens


def test_chat_stream_with_usage(client):
    full = client.chat.completions.create(model="m", messages=USER, max_tokens=8,
                                          temperature=0)
    chunks = list(client.chat.completions.create(
        model="m", messages=USER, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == full.usage.completion_tokens
    assert usage.usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-2].choices[0].finish_reason == full.choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content


def test_raw_stream_ends_with_done(srv):
    r = requests.post(srv.url + "/v1/chat/completions", stream=True, timeout=300, json={
        "model": "m", "messages": USER, "max_tokens": 4, "stream": True})
    assert r.headers["content-type"] == "text/event-stream"
    data = [l[6:] for l in utf8_lines(r) if l.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "usage" not in chunks[0]  # only with stream_options.include_usage


def test_roles_system_developer_and_history(client):
    c = client.chat.completions.create(model="m", max_tokens=4, messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Again"}]}])
    assert c.usage.prompt_tokens > 10


def test_context_overflow_error(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "48"])
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi " * 100}])
    assert e.value.code == "context_length_exceeded"


FN = {"type": "function", "function": {
    "name": "lookup", "description": "Look up a word",
    "parameters": {"type": "object", "properties": {"word": {"type": "string", "maxLength": 16},
                                                    "lang": {"type": "string",
                                                             "enum": ["en", "fr"]}},
                   "required": ["word", "lang"]}}}


def test_tools_required(client):
    import jsonschema
    c = client.chat.completions.create(model="m", max_tokens=120, tools=[FN],
                                       tool_choice="required",
                                       messages=[{"role": "user", "content": "Define 'cat'."}])
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    call = ch.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "lookup"
    jsonschema.validate(json.loads(call.function.arguments), FN["function"]["parameters"])
    # streamed: fragments of the arguments join into the same kind of object
    chunks = list(client.chat.completions.create(
        model="m", max_tokens=120, tools=[FN], stream=True,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        messages=[{"role": "user", "content": "Define 'dog'."}]))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []))
    jsonschema.validate(json.loads(args), FN["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_output(client):
    import jsonschema
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    c = client.chat.completions.create(
        model="m", max_tokens=120, temperature=0,
        messages=[{"role": "user", "content": "A person, as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema}})
    assert c.choices[0].finish_reason == "stop", c.choices[0].message.content
    jsonschema.validate(json.loads(c.choices[0].message.content), schema)
    # free-form JSON has no length bound: a reply cut by max_tokens is an object's start
    c = client.chat.completions.create(
        model="m", max_tokens=200, temperature=0,
        messages=[{"role": "user", "content": "Any JSON object."}],
        response_format={"type": "json_object"})
    content = c.choices[0].message.content
    if c.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert c.choices[0].finish_reason == "length" and content.lstrip().startswith("{")
