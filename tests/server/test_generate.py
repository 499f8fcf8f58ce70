"""Generation through `pensieve serve` on the default model: OpenAI legacy completions
(raw prompt, no chat template), streaming shapes, stop sequences, context limits,
cancellation on disconnect, the bounded queue, concurrency and draining on SIGTERM."""
import json
import signal
import socket
import threading
import time

import openai
import pytest
import requests

def utf8_lines(resp):
    """Lines of a streamed response as text (split on CR/LF only, decoded as UTF-8)."""
    return (line.decode("utf-8") for line in resp.iter_lines())


PROMPT = "The capital of France is"


def sse_data(resp):
    """The data payloads of an SSE response, in order."""
    out = []
    for line in utf8_lines(resp):
        if line.startswith("data: "):
            out.append(line[6:])
    return out


def complete(server, **body):
    body = {"model": "m", "prompt": PROMPT, "max_tokens": 8, "temperature": 0, **body}
    return requests.post(server.url + "/v1/completions", json=body, timeout=300,
                         stream=bool(body.get("stream")))


@pytest.fixture(scope="module")
def gen_server(start_server, default_model):
    return start_server(["-m", str(default_model), "--ctx-size", "512", "--parallel", "2",
                         "--queue", "8"])


@pytest.fixture(scope="module")
def vocab(default_model):
    from llama_cpp import Llama
    return Llama(model_path=str(default_model), vocab_only=True, verbose=False)


def test_completion_shape_and_usage(gen_server, vocab):
    r = complete(gen_server)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "m"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert isinstance(choice["text"], str) and choice["text"]
    # prompt tokens as llama.cpp counts them (BOS included)
    n_prompt = len(vocab.tokenize(PROMPT.encode(), add_bos=True, special=False))
    assert body["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 8,
                             "total_tokens": n_prompt + 8}


def test_stream_matches_non_stream_greedy(gen_server):
    full = complete(gen_server).json()["choices"][0]["text"]
    r = complete(gen_server, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    events = sse_data(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == full


def test_openai_sdk_completion_stream(gen_server):
    client = openai.OpenAI(base_url=gen_server.url + "/v1", api_key="x", max_retries=0)
    text = "".join(c.choices[0].text for c in client.completions.create(
        model="m", prompt=PROMPT, max_tokens=6, temperature=0, stream=True))
    again = client.completions.create(model="m", prompt=PROMPT, max_tokens=6, temperature=0)
    assert text == again.choices[0].text and text


def test_stop_sequence(gen_server):
    full = complete(gen_server, max_tokens=12).json()["choices"][0]["text"]
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    body = complete(gen_server, max_tokens=12, stop=[stop]).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[:full.index(stop)]
    # the same through a stream
    r = complete(gen_server, max_tokens=12, stop=stop, stream=True)
    chunks = [json.loads(e) for e in sse_data(r)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_prompt_too_long_is_an_error_not_truncation(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "32"])
    r = complete(s, prompt="word " * 100)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["type"] == "invalid_request_error"
    assert "maximum context length is 32 tokens" in err["message"]
    # max_tokens beyond what is left is capped to the context, not refused
    r = complete(s, max_tokens=500)
    body = r.json()
    assert r.status_code == 200, body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 32


def _stream_first_chunk_then_close(server, max_tokens):
    """Open a streaming completion, read until the first token, then drop the socket."""
    s = socket.create_connection((server.host, server.port), timeout=60)
    body = json.dumps({"model": "m", "prompt": PROMPT, "max_tokens": max_tokens,
                       "stream": True, "temperature": 0})
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               + body).encode())
    seen = b""
    while b'"text"' not in seen:
        chunk = s.recv(4096)
        assert chunk, "server closed before the first token"
        seen += chunk
    s.close()


def test_client_disconnect_cancels_generation(gen_server):
    _stream_first_chunk_then_close(gen_server, 400)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(gen_server.url + "/health", timeout=10).json()["slots_busy"] == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the slot of a disconnected client stayed busy")
    # the next request is served normally
    r = complete(gen_server, max_tokens=3)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    # the cancelled request was logged as a client abort, with few tokens generated
    time.sleep(0.3)
    lines = [l for l in gen_server.output().splitlines() if "status=499" in l]
    assert lines, gen_server.output()[-2000:]
    n_out = int(lines[-1].split("output_tokens=")[1].split()[0])
    assert n_out < 50


def test_queue_full_answers_503_and_529(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "1",
                      "--queue", "0"])
    holder = complete(s, max_tokens=1000, stream=True)  # greedy: no end before 1000
    it = utf8_lines(holder)
    next(it)  # the first chunk: the slot is busy now
    r = complete(s, max_tokens=2)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "server_error"
    r = requests.post(s.url + "/v1/messages", timeout=60, json={
        "model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 529, r.text
    assert r.json()["error"]["type"] == "overloaded_error"
    holder.close()


def test_eight_simultaneous_streams(gen_server):
    results = [None] * 8

    def run(i):
        r = complete(gen_server, prompt=f"{i} plus {i} equals", max_tokens=4, stream=True,
                     stream_options={"include_usage": True}, temperature=0.7, seed=i)
        results[i] = (r.status_code, sse_data(r))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for status, events in results:
        assert status == 200
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[-1]["usage"]["completion_tokens"] == 4
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_metrics_count_generation(gen_server):
    complete(gen_server, max_tokens=3)
    # a request is counted when it completes, just after its reply is sent
    counted = 'pensieve_requests_total{endpoint="/v1/completions",status="200"}'
    deadline = time.monotonic() + 5
    while True:
        text = requests.get(gen_server.url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, v = line.rsplit(" ", 1)
                values[name] = float(v)
        if values.get(counted, 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert values["pensieve_generated_tokens_total"] >= 3
    assert values["pensieve_prompt_tokens_total"] >= 6
    assert values["pensieve_time_to_first_token_seconds_count"] >= 1
    assert values["pensieve_inter_token_latency_seconds_count"] >= 2
    assert values["pensieve_kv_cache_capacity_tokens"] == 1024
    assert values['pensieve_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    h = requests.get(gen_server.url + "/health", timeout=10).json()
    assert h["generated_tokens_total"] >= 3 and h["latency_mean_ms"] > 0


def test_sigterm_lets_running_request_finish(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "256"])
    r = complete(s, max_tokens=6, stream=True)
    it = utf8_lines(r)
    first = next(l for l in it if l.startswith("data: "))
    s.proc.send_signal(signal.SIGTERM)
    rest = [l[6:] for l in it if l.startswith("data: ")]
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
    assert s.proc.wait(30) == 0
    assert first


def test_waiting_stream_gets_keepalive_pings(start_server, default_model):
    """A stream that cannot start yet (its slot is busy) is kept alive with SSE comments."""
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "1",
                      "--ping-interval", "1"])
    holder = complete(s, max_tokens=1000, stream=True)  # greedy: no end before 1000
    held = utf8_lines(holder)  # keep the iterator: dropping it closes the connection
    next(held)  # generating: the only slot is taken
    waiting = complete(s, max_tokens=2, stream=True)
    lines = utf8_lines(waiting)
    first = next(l for l in lines if l)
    assert first == ": ping"
    holder.close()  # frees the slot: the waiting request runs
    data = [l[6:] for l in lines if l.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "length"


def test_server_wide_stop_sequence(start_server, default_model):
    """--stop applies to every request, besides the request's own stop sequences."""
    s = start_server(["-m", str(default_model), "--ctx-size", "256", "--stop", "\\n"])
    body = complete(s, prompt="Here is a list of fruits:\n1.", max_tokens=40).json()
    choice = body["choices"][0]
    assert "\n" not in choice["text"]
    assert choice["finish_reason"] in ("stop", "length")
    if choice["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 40


def test_slow_non_streamed_generation_outlives_idle_timeout(start_server, default_model):
    """--timeout drops idle clients, not a reply that is silent longer than it: here a
    non-streamed request waits ~2.5 s for the only slot, against a 1 s idle timeout."""
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "1",
                      "--timeout", "1"])
    holder = complete(s, max_tokens=1000, stream=True)
    held = utf8_lines(holder)
    next(held)  # the slot is busy
    result = {}

    def waiting():
        t0 = time.monotonic()
        result["r"] = complete(s, max_tokens=4)
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(2.5)
    holder.close()  # cancels the holder: the waiting request runs
    t.join(120)
    assert result["took"] > 2.0
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()["usage"]["completion_tokens"] >= 1
