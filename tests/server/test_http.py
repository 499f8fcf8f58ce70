"""The HTTP layer of `pensieve serve` over raw HTTP: routing, envelopes, auth, limits,
timeouts, health, metrics, logs and shutdown. Nothing here needs the model to generate."""
import json
import os
import signal
import socket
import subprocess
import time

import anthropic
import openai
import pytest
import requests

MSG = "/v1/messages"
CHAT = "/v1/chat/completions"
GOOD_MSG = {"model": "claude-sonnet-4-6", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}


def post(server, path, body=None, data=None, headers=None):
    h = {"content-type": "application/json"}
    h.update(headers or {})
    if body is not None:
        data = json.dumps(body)
    return requests.post(server.url + path, data=data, headers=h, timeout=30)


def anthropic_error(r, status, etype):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == etype
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == r.headers["request-id"]
    assert r.headers["request-id"].startswith("req_")
    return body["error"]["message"]


def openai_error(r, status, etype):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == etype
    assert r.headers["x-request-id"] == r.headers["request-id"]
    return body["error"]


# ---- probes, health, metrics, models --------------------------------------------------

def test_head_probes_and_root(server):
    for path in ("/", "/api/hello", "/v1/messages"):
        r = requests.head(server.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["request-id"].startswith("req_")
    assert requests.get(server.url + "/", timeout=10).status_code == 200


def test_health_reports_model_and_statistics(server):
    requests.get(server.url + "/v1/models", timeout=10)
    h = requests.get(server.url + "/health", timeout=10)
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok"
    assert body["model"] == "gemma-3-270m-q4_k_m"
    for key in ("uptime_s", "requests_per_s", "tokens_per_s", "latency_mean_ms",
                "latency_p95_ms", "error_rate"):
        assert isinstance(body[key], (int, float)) and body[key] >= 0, key
    assert body["uptime_s"] > 0
    assert body["memory_rss_bytes"] > 1 << 20
    assert body["requests_total"] >= 1
    assert 0 <= body["error_rate"] <= 1


def test_metrics_prometheus_text(server):
    requests.get(server.url + "/nope", timeout=10)
    # a request is counted when it completes, just after its reply is sent: the client can
    # ask for /metrics first, so give the count a moment
    want = 'pensieve_requests_total{endpoint="other",status="404"}'
    deadline = time.monotonic() + 5
    while True:
        r = requests.get(server.url + "/metrics", timeout=10)
        assert r.status_code == 200
        if want in r.text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert want in text
    for name in ("pensieve_prompt_tokens_total", "pensieve_generated_tokens_total",
                 "pensieve_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
                 "pensieve_inter_token_latency_seconds_count", "pensieve_queue_depth",
                 "pensieve_kv_cache_used_tokens", "pensieve_kv_cache_usage_ratio"):
        assert name in text, name
    # every sample line is "name{labels} value" with a numeric value
    for line in text.splitlines():
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_models_list_in_both_shapes(server):
    r = requests.get(server.url + "/v1/models", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["has_more"] is False
    m = body["data"][0]
    assert m["id"] == body["first_id"] == "gemma-3-270m-q4_k_m"
    assert m["type"] == "model" and m["object"] == "model"
    assert isinstance(m["created"], int) and m["created_at"].endswith("Z")
    # without --alias any name is answered by the loaded model
    one = requests.get(server.url + "/v1/models/claude-sonnet-4-6", timeout=10)
    assert one.status_code == 200 and one.json()["id"] == "claude-sonnet-4-6"


def test_sdk_model_listing(server, default_model):
    # the served model first, then the other models of the model directory
    installed = sorted(p.name[:-5] for p in default_model.parent.glob("*.gguf")
                       if p != default_model and not p.name.startswith("."))
    want = ["gemma-3-270m-q4_k_m", *installed]
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    assert [m.id for m in oa.models.list()] == want
    an = anthropic.Anthropic(base_url=server.url, api_key="x")
    assert an.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"
    assert [m.id for m in an.models.list()] == want


# ---- malformed requests -------------------------------------------------------------------

def test_invalid_json(server):
    msg = anthropic_error(post(server, MSG, data="{not json"), 400, "invalid_request_error")
    assert "invalid request body" in msg
    err = openai_error(post(server, CHAT, data="[1,"), 400, "invalid_request_error")
    assert "invalid request body" in err["message"]


def test_body_not_an_object_or_empty(server):
    anthropic_error(post(server, MSG, data="[]"), 400, "invalid_request_error")
    anthropic_error(post(server, MSG, data=""), 400, "invalid_request_error")


def test_invalid_utf8(server):
    raw = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}'
    msg = anthropic_error(post(server, MSG, data=raw), 400, "invalid_request_error")
    assert "utf-8" in msg.lower()


def test_query_string_is_accepted(server):
    r = post(server, MSG + "?beta=true", {"model": "m"})
    assert anthropic_error(r, 400, "invalid_request_error") == "messages: Field required"


@pytest.mark.parametrize("change,expected", [
    ({"model": None}, "model: Field required"),
    ({"model": 7}, "model: Input should be a valid string"),
    ({"messages": None}, "messages: Field required"),
    ({"messages": "hi"}, "messages: Input should be a valid list"),
    ({"messages": [7]}, "messages.0: Input should be a valid dictionary"),
    ({"messages": [{"content": "x"}]}, "messages.0.role: Field required"),
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"max_tokens": "ten"}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": 1.5}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": -3}, "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": 10**9}, "max_tokens: Input should be less than or equal to 1000000"),
    ({"max_tokens": 10**30}, "invalid request body"),
    ({"stream": "yes"}, "stream: Input should be a valid boolean"),
    ({"temperature": 3}, "temperature: Input should be less than or equal to 1"),
    ({"stop_sequences": "x"}, "stop_sequences: Input should be a valid list"),
    ({"system": 5}, "system: Input should be a valid string or list of text blocks"),
])
def test_messages_field_validation(server, change, expected):
    body = dict(GOOD_MSG)
    for k, v in change.items():
        if v is None:
            body.pop(k)
        else:
            body[k] = v
    msg = anthropic_error(post(server, MSG, body), 400, "invalid_request_error")
    assert msg.startswith(expected), msg


@pytest.mark.parametrize("change,param", [
    ({"messages": None}, "messages"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": "x"}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"temperature": 2.5}, "temperature"),
    ({"stop": 5}, "stop"),
])
def test_chat_field_validation(server, change, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for k, v in change.items():
        if v is None:
            body.pop(k)
        else:
            body[k] = v
    err = openai_error(post(server, CHAT, body), 400, "invalid_request_error")
    assert err["param"] == param


def test_unknown_path_and_wrong_method(server):
    anthropic_error(requests.get(server.url + "/v2/nothing", timeout=10), 404, "not_found_error")
    openai_error(requests.post(server.url + "/v1/chat/nothing", timeout=10), 404,
                 "not_found_error")
    r = requests.get(server.url + MSG, timeout=10)
    assert "not allowed" in anthropic_error(r, 405, "invalid_request_error")
    r = requests.delete(server.url + CHAT, timeout=10)
    openai_error(r, 405, "invalid_request_error")
    r = requests.options(server.url + MSG, timeout=10)
    assert r.status_code == 204 and "POST" in r.headers["allow"]


def test_conflicting_content_length(server):
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                  b"Content-Length: 3\r\n\r\n{}")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 400")


def test_foreign_host_header_refused(server):
    r = requests.get(server.url + "/v1/models", headers={"host": "evil.example.com"}, timeout=10)
    assert r.status_code == 403
    r = requests.get(server.url + "/v1/models", headers={"host": f"localhost:{server.port}"},
                     timeout=10)
    assert r.status_code == 200


# ---- limits -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(start_server, default_model):
    return start_server(["-m", str(default_model), "--max-body-bytes", "4096",
                         "--max-header-bytes", "2048", "--timeout", "2"])


def test_oversized_body_content_length(small_server):
    body = dict(GOOD_MSG, messages=[{"role": "user", "content": "x" * 5000}])
    msg = anthropic_error(post(small_server, MSG, body), 413, "request_too_large")
    assert "4096" in msg
    # the server keeps serving
    assert requests.get(small_server.url + "/health", timeout=10).status_code == 200


def test_oversized_body_chunked(small_server):
    def gen():
        for _ in range(10):
            yield b"x" * 1000
    r = requests.post(small_server.url + MSG, data=gen(), timeout=30,
                      headers={"content-type": "application/json"})
    anthropic_error(r, 413, "request_too_large")


def test_oversized_headers(small_server):
    r = post(small_server, MSG, GOOD_MSG, headers={"x-big": "a" * 3000})
    anthropic_error(r, 431, "request_too_large")
    r = post(small_server, CHAT, {}, headers={"x-big": "a" * 3000})
    openai_error(r, 431, "invalid_request_error")


def test_slow_client_is_disconnected(small_server):
    """A client that sends part of its headers and stalls is dropped after --timeout."""
    with socket.create_connection((small_server.host, small_server.port), timeout=15) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        t0 = time.monotonic()
        data = s.recv(4096)
        waited = time.monotonic() - t0
    assert data == b""  # closed by the server without a response
    assert 1.0 <= waited < 12
    assert requests.get(small_server.url + "/health", timeout=10).status_code == 200


def test_slow_body_is_disconnected(small_server):
    with socket.create_connection((small_server.host, small_server.port), timeout=15) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        assert s.recv(4096) == b""


# ---- auth ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key_server(start_server, default_model):
    return start_server(["-m", str(default_model)], env={"PENSIEVE_API_KEY": "sk-test-123"})


def test_auth_required_and_checked(key_server):
    s = key_server
    assert "required" in anthropic_error(post(s, MSG, GOOD_MSG), 401, "authentication_error")
    anthropic_error(post(s, MSG, GOOD_MSG, headers={"x-api-key": "sk-test-12"}), 401,
                    "authentication_error")
    anthropic_error(post(s, MSG, GOOD_MSG, headers={"x-api-key": "sk-test-1234"}), 401,
                    "authentication_error")
    openai_error(post(s, CHAT, {}, headers={"authorization": "Bearer nope"}), 401,
                 "authentication_error")
    # the right key in either header gets past auth (to validation here)
    ok = {"model": "m"}
    anthropic_error(post(s, MSG, ok, headers={"x-api-key": "sk-test-123"}), 400,
                    "invalid_request_error")
    anthropic_error(post(s, MSG, ok, headers={"authorization": "Bearer sk-test-123"}), 400,
                    "invalid_request_error")
    assert requests.get(s.url + "/v1/models", headers={"x-api-key": "sk-test-123"},
                        timeout=10).status_code == 200
    assert requests.get(s.url + "/v1/models", timeout=10).status_code == 401
    assert requests.get(s.url + "/metrics", timeout=10).status_code == 401
    # exempt: /health and HEAD probes
    assert requests.get(s.url + "/health", timeout=10).status_code == 200
    assert requests.head(s.url + "/", timeout=10).status_code == 200


def test_auth_errors_as_sdk_exceptions(key_server):
    bad = anthropic.Anthropic(base_url=key_server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(**GOOD_MSG)
    good = anthropic.Anthropic(base_url=key_server.url, api_key="sk-test-123", max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        good.messages.create(model="m", max_tokens=0,
                             messages=[{"role": "user", "content": "hi"}])
    oa = openai.OpenAI(base_url=key_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        oa.models.list()


@pytest.fixture(scope="module")
def alias_server(start_server, default_model):
    return start_server(["-m", str(default_model), "--alias", "claude-x", "--alias", "a1,a2"])


def test_alias_makes_model_names_strict(alias_server):
    s = alias_server
    ids = [m["id"] for m in requests.get(s.url + "/v1/models", timeout=10).json()["data"]]
    assert ids[:4] == ["gemma-3-270m-q4_k_m", "claude-x", "a1", "a2"]
    assert requests.get(s.url + "/v1/models/a2", timeout=10).status_code == 200
    anthropic_error(requests.get(s.url + "/v1/models/other", headers={"anthropic-version":
                                 "2023-06-01"}, timeout=10), 404, "not_found_error")
    msg = anthropic_error(post(s, MSG, dict(GOOD_MSG, model="gpt-4")), 404, "not_found_error")
    assert msg == "model: gpt-4"
    client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(**dict(GOOD_MSG, model="gpt-4"))


# ---- process lifecycle ------------------------------------------------------------------

def test_help_documents_every_option(pensieve_bin):
    out = subprocess.run([str(pensieve_bin), "serve", "--help"], capture_output=True,
                         text=True, timeout=10).stdout
    for opt in ("--model", "--host", "--port", "--api-key", "--ctx-size", "--parallel",
                "--threads", "--alias", "--log-format", "--max-body-bytes", "--max-header-bytes",
                "--queue", "--timeout", "--grace", "--max-tokens-limit", "--pid-file"):
        line = next(l for l in out.splitlines() if l.lstrip().startswith("-") and opt + " " in l)
        assert "[env PENSIEVE_" in line, line
    assert "(default: 127.0.0.1)" in out and "(default: 33554432)" in out


def test_json_log_and_sigterm_exit(start_server, default_model):
    s = start_server(["-m", str(default_model), "--log-format", "json"])
    r = requests.get(s.url + "/v1/models/xyz", timeout=10)
    rid = r.headers["request-id"]
    assert s.stop(signal.SIGTERM) == 0
    lines = [json.loads(l) for l in s.log_path.read_text().splitlines() if l.startswith("{")]
    req = [l for l in lines if l.get("id") == rid]
    assert len(req) == 1
    assert req[0]["endpoint"] == "/v1/models/xyz" and req[0]["status"] == 200
    assert req[0]["model"] == "xyz"
    for key in ("prompt_tokens", "output_tokens", "ttft_ms", "tokens_per_s", "duration_ms"):
        assert key in req[0]


def test_pensieve_stop(start_server, default_model, pensieve_bin, tmp_path):
    pid_file = tmp_path / "srv.pid"
    s = start_server(["-m", str(default_model), "--pid-file", str(pid_file)])
    # written right after the listening socket opens, so /health can answer first on a
    # busy machine: give it a moment
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(pid_file.read_text()) == s.proc.pid
    r = subprocess.run([str(pensieve_bin), "stop", "--pid-file", str(pid_file)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert s.proc.wait(10) == 0
    assert not pid_file.exists()
    r = subprocess.run([str(pensieve_bin), "stop", "--pid-file", str(pid_file)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no server found" in r.stderr


def test_non_loopback_without_key_warns(pensieve_bin, default_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = subprocess.Popen([str(pensieve_bin), "serve", "-m", str(default_model), "--host",
                          "0.0.0.0", "--port", str(port)], stderr=subprocess.PIPE)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0
    assert b"WITHOUT an API key" in err
