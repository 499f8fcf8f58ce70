"""POST /v1/messages and /v1/messages/count_tokens with the official anthropic SDK and raw
SSE, on the default model. The model is tiny: these tests check the protocol (shapes,
event order, usage, ids, errors), never what the model says."""
import json
import signal
import threading

import anthropic
import pytest
import requests
from pensieve_tests import prompt_tokens

def utf8_lines(resp):
    """Lines of a streamed response as text (split on CR/LF only, decoded as UTF-8)."""
    return (line.decode("utf-8") for line in resp.iter_lines())


USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def srv(start_server, default_model):
    return start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "2",
                         "--queue", "8", "--ping-interval", "1"])


@pytest.fixture(scope="module")
def client(srv):
    return anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)


def raw_events(srv, body):
    """(event name, data) pairs of a raw streaming request; checks the SSE framing."""
    r = requests.post(srv.url + "/v1/messages?beta=true", json=body, stream=True, timeout=300,
                      headers={"anthropic-version": "2023-06-01", "x-api-key": "x"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["request-id"].startswith("req_")
    events, name = [], None
    for line in utf8_lines(r):
        if line.startswith("event: "):
            assert name is None, "two event lines without data"
            name = line[7:]
        elif line.startswith("data: "):
            assert name is not None, "data without an event line"
            data = json.loads(line[6:])
            assert data["type"] == name
            events.append((name, data))
            name = None
        else:
            assert line == "", line
    return events


def check_grammar(events):
    """The documented order: message_start, (blocks with sequential indexes), message_delta,
    message_stop; pings anywhere. Returns the text of the text blocks."""
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant"
    assert start["content"] == [] and start["stop_reason"] is None
    assert isinstance(start["usage"]["input_tokens"], int) and start["usage"]["input_tokens"] > 0
    open_index, next_index, text = None, 0, ""
    for name, data in events[1:]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
            block = data["content_block"]
            if block["type"] == "text":
                assert block["text"] == ""
            elif block["type"] == "tool_use":
                assert block["id"].startswith("toolu_") and block["input"] == {}
            elif block["type"] == "thinking":
                assert block["thinking"] == "" and "signature" in block
        elif name == "content_block_delta":
            assert data["index"] == open_index
            if data["delta"]["type"] == "text_delta":
                text += data["delta"]["text"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, next_index = None, next_index + 1
        elif name == "message_delta":
            assert open_index is None
            assert data["delta"]["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence",
                                                    "tool_use")
            assert isinstance(data["usage"]["output_tokens"], int)
    return text


def test_create(client):
    m = client.messages.create(model="claude-sonnet-4-6", max_tokens=12, messages=USER)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "claude-sonnet-4-6"
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 12
    assert all(b.type == "text" for b in m.content)
    if m.stop_reason == "max_tokens":
        assert m.usage.output_tokens == 12


def test_stream_helper_and_final_message(client):
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.usage.output_tokens > 0
    assert "".join(b.text for b in final.content if b.type == "text") == text


def test_raw_stream_grammar(srv):
    events = raw_events(srv, {"model": "m", "max_tokens": 10, "stream": True, "messages": USER})
    check_grammar(events)
    delta = [d for n, d in events if n == "message_delta"][-1]
    assert delta["usage"]["output_tokens"] <= 10


def test_greedy_stream_equals_non_stream(srv, client):
    body = {"model": "m", "max_tokens": 8, "temperature": 0, "messages": USER}
    text = check_grammar(raw_events(srv, dict(body, stream=True)))
    body.pop("temperature")  # this SDK version has no temperature parameter
    m = client.messages.create(**body, extra_body={"temperature": 0})
    assert "".join(b.text for b in m.content) == text


def test_count_tokens_matches_real_request(client):
    cases = [
        dict(messages=USER),
        dict(system="You are terse.", messages=USER),
        dict(system=[{"type": "text", "text": "You are terse."},
                     {"type": "text", "text": "Answer in French.",
                      "cache_control": {"type": "ephemeral"}}],
             messages=USER + [{"role": "assistant", "content": "Bonjour."},
                              {"role": "user", "content": [{"type": "text", "text": "Encore"}]}]),
        dict(tools=[{"name": "get_weather", "description": "Weather of a city",
                     "input_schema": {"type": "object",
                                      "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}],
             messages=USER),
    ]
    for kw in cases:
        n = client.messages.count_tokens(model="claude-sonnet-4-6", **kw).input_tokens
        m = client.messages.create(model="claude-sonnet-4-6", max_tokens=1, **kw)
        assert n == prompt_tokens(m.usage) > 0, kw


def test_system_as_string_and_blocks(client):
    a = client.messages.count_tokens(model="m", system="Be brief.", messages=USER).input_tokens
    b = client.messages.count_tokens(model="m", system=[{"type": "text", "text": "Be brief."}],
                                     messages=USER).input_tokens
    none = client.messages.count_tokens(model="m", messages=USER).input_tokens
    assert a == b > none


def test_tolerates_claude_code_fields(srv):
    body = {"model": "claude-opus-4-8", "max_tokens": 4, "stream": False, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                     {"type": "text", "text": "hi",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "Extra instructions."},
        {"role": "user", "content": "again"}],
        "metadata": {"user_id": "user_x"}, "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"}, "service_tier": "auto", "speed": "fast"}
    r = requests.post(srv.url + "/v1/messages?beta=true", json=body, timeout=300, headers={
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,unknown-2099"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"


def test_prompt_too_long_and_max_tokens_capped(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "64"])
    c = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    long = [{"role": "user", "content": "word " * 200}]
    n = c.messages.count_tokens(model="m", messages=long).input_tokens
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="m", max_tokens=5, messages=long)
    assert e.value.body["error"]["message"] == f"prompt is too long: {n} tokens > 63 maximum"
    m = c.messages.create(model="m", max_tokens=20000, messages=USER)
    assert prompt_tokens(m.usage) + m.usage.output_tokens <= 64
    assert m.stop_reason in ("max_tokens", "end_turn")


def test_eight_simultaneous_streams(srv):
    out = [None] * 8

    def run(i):
        out[i] = raw_events(srv, {"model": "m", "max_tokens": 4, "stream": True,
                                  "messages": [{"role": "user", "content": f"Count to {i}."}]})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ids = set()
    for events in out:
        assert events is not None
        check_grammar(events)
        ids.add(events[0][1]["message"]["id"])
    assert len(ids) == 8


def test_mid_stream_failure_is_an_error_event(start_server, default_model):
    """A stream already answered with 200 that cannot finish (here: shutdown with no grace
    while it waits behind a long generation) ends with an `error` event."""
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--grace", "0",
                      "--parallel", "1"])
    holder = requests.post(s.url + "/v1/completions", stream=True, timeout=300, json={
        "model": "m", "prompt": "Once upon a time", "max_tokens": 1000, "stream": True})
    held = utf8_lines(holder)  # keep the iterator: dropping it closes the connection
    next(held)
    r = requests.post(s.url + "/v1/messages", stream=True, timeout=300, json={
        "model": "m", "max_tokens": 400, "stream": True, "messages": USER})
    lines = utf8_lines(r)
    assert next(lines) == "event: message_start"
    s.proc.send_signal(signal.SIGTERM)
    rest = list(lines)
    assert "event: error" in rest
    err = json.loads(rest[rest.index("event: error") + 1][6:])
    assert err == {"type": "error", "error": {"type": "overloaded_error",
                                              "message": "server is shutting down"}}
    assert "event: message_stop" not in rest
    assert s.proc.wait(30) == 0


WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "input_schema": {"type": "object",
                            "properties": {"city": {"type": "string", "maxLength": 20},
                                           "unit": {"type": "string", "enum": ["c", "f"]}},
                            "required": ["city", "unit"]}}


def test_forced_tool_round_trip(client):
    import jsonschema
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    m = client.messages.create(model="m", max_tokens=120, tools=[WEATHER], messages=ask,
                               tool_choice={"type": "tool", "name": "get_weather"})
    assert m.stop_reason == "tool_use", m
    calls = [b for b in m.content if b.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])
    # the tool result goes back; the model answers (any text, or another call)
    follow = ask + [{"role": "assistant", "content": [b.model_dump() for b in m.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                  "content": "18 degrees, sunny"}]}]
    final = client.messages.create(model="m", max_tokens=16, tools=[WEATHER], messages=follow)
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert prompt_tokens(final.usage) > prompt_tokens(m.usage)


def test_forced_tool_call_streamed(client, srv):
    import jsonschema
    body = {"model": "m", "max_tokens": 120, "stream": True, "tools": [WEATHER],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "Weather in Oslo, in celsius?"}]}
    events = raw_events(srv, body)
    check_grammar(events)
    starts = [d for n, d in events if n == "content_block_start"
              and d["content_block"]["type"] == "tool_use"]
    assert len(starts) == 1
    idx = starts[0]["index"]
    args = "".join(d["delta"]["partial_json"] for n, d in events
                   if n == "content_block_delta" and d["index"] == idx)
    jsonschema.validate(json.loads(args), WEATHER["input_schema"])
    assert [d for n, d in events if n == "message_delta"][-1]["delta"]["stop_reason"] == "tool_use"
    with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
        final = s.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"][0]
    jsonschema.validate(tool.input, WEATHER["input_schema"])
