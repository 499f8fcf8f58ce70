"""The engine scheduler behind `pensieve serve`: requests generating at once share one
batched forward pass per step, yet each gets exactly the tokens it gets alone (greedy);
a request reuses the longest cached prefix of any sequence, even one still generating,
and the usage of both APIs says how many prompt tokens came from the cache; the full
blocks of a prompt stay findable by their hash chain after the sequence that held them
was given to another request; a long
prompt is fed in chunks, so a short request started during its prefill gets its first
token first; --kv-size bounds the shared KV pool with a clear error, and requests that
outgrow it together take turns (the one admitted last gives its blocks back and is fed
again later) rather than failing."""
import json
import threading
import time

import requests
from pensieve_tests import prompt_tokens

LONG = " ".join(f"item {i} is {i * 7 % 13}." for i in range(400))  # about 3000 tokens


def complete(server, **body):
    body = {"model": "m", "prompt": "The capital of France is", "max_tokens": 8,
            "temperature": 0, **body}
    return requests.post(server.url + "/v1/completions", json=body, timeout=600,
                         stream=bool(body.get("stream")))


def first_token_time(server, prompt, max_tokens, out, key):
    r = complete(server, prompt=prompt, max_tokens=max_tokens, stream=True)
    for line in r.iter_lines():
        if line.startswith(b"data: ") and b'"text"' in line:
            out[key] = time.monotonic()
            break
    r.close()


def test_concurrent_streams_match_each_alone(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "512", "--parallel", "4"])
    prompts = [f"Question {i}: what is {i} plus {i}? Answer:" for i in range(4)]
    alone = [complete(s, prompt=p, max_tokens=12).json()["choices"][0]["text"] for p in prompts]
    together = [None] * 4

    def run(i):
        together[i] = complete(s, prompt=prompts[i], max_tokens=12).json()["choices"][0]["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert together == alone


def test_prefix_of_a_running_request_is_reused(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--parallel", "2"])
    base = "A long shared preamble. " * 30
    holder = complete(s, prompt=base + "First:", max_tokens=200, stream=True)
    lines = holder.iter_lines()
    for line in lines:  # its prompt is in the cache once tokens flow
        if line.startswith(b"data: "):
            break
    r = complete(s, prompt=base + "Second:", max_tokens=2).json()
    holder.close()
    usage = r["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 150, usage
    assert usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]
    # Anthropic: the same prefix again, read from the cache
    body = {"model": "m", "max_tokens": 2,
            "messages": [{"role": "user", "content": base + "Third"}]}
    requests.post(s.url + "/v1/messages", json=body, timeout=300).json()
    m = requests.post(s.url + "/v1/messages", json=body, timeout=300).json()
    assert m["usage"]["cache_read_input_tokens"] >= prompt_tokens(m["usage"]) - 1 > 100, m


def test_prefix_outlives_its_sequence(start_server, default_model):
    # --parallel 1 keeps two sequences: the third prompt takes over the one that held
    # the first, yet the first prompt's full blocks are still cached by hash
    s = start_server(["-m", str(default_model), "--ctx-size", "2048", "--parallel", "1"])
    base = "Notes on the harbour lighthouse and its keeper. " * 30
    first = complete(s, prompt=base + "One:", max_tokens=2).json()["usage"]
    complete(s, prompt="Something else entirely, number two.", max_tokens=2)
    complete(s, prompt="And a third unrelated prompt, number three.", max_tokens=2)
    again = complete(s, prompt=base + "Two:", max_tokens=2).json()["usage"]
    cached = again["prompt_tokens_details"]["cached_tokens"]
    assert first.get("prompt_tokens_details", {}).get("cached_tokens", 0) == 0, first
    # whole blocks of 32 positions: all of the shared preamble but its last partial block
    assert cached % 32 == 0 and first["prompt_tokens"] - 40 <= cached < again["prompt_tokens"], again
    h = requests.get(s.url + "/health", timeout=10).json()
    assert h["kv_cache_used_tokens"] <= h["kv_cache_capacity_tokens"]


def test_short_request_is_served_during_a_long_prefill(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "4096", "--parallel", "2"])
    times = {}
    long = threading.Thread(target=first_token_time, args=(s, LONG, 4, times, "long"))
    long.start()
    time.sleep(1.0)  # the long prompt is being fed, chunk by chunk
    t0 = time.monotonic()
    first_token_time(s, "Hi", 4, times, "short")
    long.join(600)
    assert "short" in times and "long" in times, times
    assert times["short"] < times["long"], (times["short"] - t0, times["long"] - t0)


def test_kv_size_bounds_the_pool(start_server, default_model):
    s = start_server(["-m", str(default_model), "--ctx-size", "1024", "--kv-size", "64"])
    h = requests.get(s.url + "/health", timeout=10).json()
    assert h["kv_cache_capacity_tokens"] == 64
    r = complete(s, prompt="word " * 100, max_tokens=4)
    assert r.status_code == 400, r.text
    assert "kv cache" in r.json()["error"]["message"]
    assert complete(s, max_tokens=4).status_code == 200


def test_requests_outgrowing_the_pool_take_turns(start_server, default_model):
    # a pool of 256 positions; two requests of about 190 positions each cannot both hold
    # theirs: the later one gives its blocks back when the pool runs dry, and goes on
    # once the first is done. Both get every token they asked for.
    s = start_server(["-m", str(default_model), "--ctx-size", "512", "--kv-size", "256",
                      "--parallel", "2"])
    prompts = [f"Counting, list {i}: " + ", ".join(str(k) for k in range(i, i + 12)) + ","
               for i in range(2)]
    out = [None, None]

    def run(i):
        out[i] = complete(s, prompt=prompts[i], max_tokens=150).json()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for r in out:
        assert r is not None and "error" not in r, r
        assert r["usage"]["completion_tokens"] == 150, json.dumps(r)
        assert r["choices"][0]["finish_reason"] == "length", r["choices"][0]
    h = requests.get(s.url + "/health", timeout=10).json()
    assert h["kv_cache_preemptions"] >= 1, h
    assert h["kv_cache_used_tokens"] <= 256, h
    # one that cannot fit even alone (prompt + output past the pool) ends with a clear error
    r = complete(s, prompt=prompts[0], max_tokens=400, stream=True)
    body = r.text
    assert "kv cache is full" in body, body[-400:]
    assert complete(s, max_tokens=4).status_code == 200


def test_sliding_window_layers_give_back_what_no_window_sees(start_server, default_model):
    # Gemma 3: most layers see only the last 512 positions. By default their rows before
    # that go back to the system; --swa-full keeps them. The output is the same bit for
    # bit (logprobs equal), the memory is not.
    body = {"prompt": LONG, "max_tokens": 8, "logprobs": 3}
    runs = {}
    for mode, extra in (("release", []), ("full", ["--swa-full"])):
        s = start_server(["-m", str(default_model), "--ctx-size", "4096"] + extra)
        r = complete(s, **body).json()
        assert r["usage"]["prompt_tokens"] > 2000, r["usage"]
        runs[mode] = (r["choices"][0], requests.get(s.url + "/health", timeout=10).json())
        s.stop()
    (rel, h_rel), (full, h_full) = runs["release"], runs["full"]
    assert rel["text"] == full["text"] and rel["logprobs"] == full["logprobs"]
    # 15 of 18 layers x ~2000 positions out of the window x 1 KiB: about 30 MB
    assert h_full["memory_rss_bytes"] - h_rel["memory_rss_bytes"] > 20e6, (h_rel, h_full)
